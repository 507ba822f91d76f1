//! The zero cone `{0}` (`z` rows): `A x + s = b` with `s = 0`, i.e. equality rows. POUNCE
//! has no zero cone; its rows become the equality block `(A_eq, b_eq)`, their dual is
//! POUNCE's `y` (free), their slack exactly 0, and their `H` is 0 (in `h_diag`).
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Zero(pub usize);

impl Cone for Zero {
    fn key(&self) -> &'static str {
        "z"
    }

    fn rows(&self) -> Option<usize> {
        Some(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        None
    }

    fn dense_h(&self) -> bool {
        false
    }

    /// The dual of `{0}` is the whole space: no restriction.
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        Vec::new()
    }
}
