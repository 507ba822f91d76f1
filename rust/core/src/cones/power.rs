//! The 3-d power cone with exponent `a` in (0, 1) (`p` lists the exponents). SCS writes
//! `(x, y, z)` with `x^a y^(1-a) >= |z|` (abs entry last); POUNCE's `ConeSpec::Power(a)` is
//! `|u| <= v^a w^(1-a)` on `(u, v, w)` (abs entry first). So POUNCE `(u, v, w)` = SCS
//! `(z, x, y)` with the same `a`. The adjoint's `H` is a dense 3 x 3 block.
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Power(pub f64);

impl Cone for Power {
    fn key(&self) -> &'static str {
        "p"
    }

    fn rows(&self) -> Option<usize> {
        Some(3)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Power(self.0))
    }

    /// POUNCE `(u, v, w)` reads SCS offsets `(2, 0, 1)`.
    fn pounce_order(&self) -> Vec<usize> {
        vec![2, 0, 1]
    }

    fn nonsymmetric(&self) -> bool {
        true
    }

    /// `K_a* = {(u/a)^a (v/(1-a))^(1-a) >= |w|}`, i.e. `(u/a, v/(1-a), w) in K_a`.
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        let a = self.0;
        vec![(0, 0, 1.0 / a), (1, 1, 1.0 / (1.0 - a)), (2, 2, 1.0)]
    }
}
