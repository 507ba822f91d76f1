//! The exponential cone (`ep` counts them): `(x, y, z)` with `y exp(x/y) <= z`, `y > 0`,
//! the same orientation in SCS and POUNCE (`ConeSpec::Exponential`): identity. The
//! adjoint's `H` is a dense 3 x 3 block.
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Exp;

impl Cone for Exp {
    fn key(&self) -> &'static str {
        "ep"
    }

    fn rows(&self) -> Option<usize> {
        Some(3)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Exponential)
    }

    fn nonsymmetric(&self) -> bool {
        true
    }

    /// `K_exp* = {(u, v, w): u < 0, -u exp(v/u) <= e w}` (closure), i.e.
    /// `(-v, -u, e w) in K_exp`.
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        vec![(0, 1, -1.0), (1, 0, -1.0), (2, 2, std::f64::consts::E)]
    }
}
