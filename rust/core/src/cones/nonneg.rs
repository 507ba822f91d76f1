//! The nonnegative orthant (`l` rows): identical in SCS and POUNCE (`ConeSpec::Nonneg`),
//! self-dual; the adjoint's `H` is diagonal (`s / y`, in `h_diag`).
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Nonneg(pub usize);

impl Cone for Nonneg {
    fn key(&self) -> &'static str {
        "l"
    }

    fn rows(&self) -> Option<usize> {
        Some(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Nonneg(self.0))
    }

    fn dense_h(&self) -> bool {
        false
    }
}
