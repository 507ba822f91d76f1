//! The PSD cone of order `k` (`s` entries) on `k (k + 1) / 2` svec rows. SCS and POUNCE
//! (`pounce_convex::cones::psd::svec`) use the same svec: lower triangle, column-major,
//! off-diagonals x sqrt(2); so [`svec_to_pounce`] is the identity, kept as a named function
//! with a test so a convention change in either crate has one place to land. Self-dual; the
//! adjoint's `H` is a dense block over the svec rows.
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Psd(pub usize);

/// svec rows of an order-`k` PSD cone, `k (k + 1) / 2`, or `None` on overflow.
pub fn svec_rows(k: usize) -> Option<usize> {
    let (a, b) = if k.is_multiple_of(2) {
        (k / 2, k + 1)
    } else {
        (k, k.div_ceil(2))
    };
    a.checked_mul(b)
}

/// POUNCE svec position `i` is SCS svec position `svec_to_pounce(k)[i]`.
pub fn svec_to_pounce(order: usize) -> Vec<usize> {
    (0..svec_rows(order).unwrap_or(0)).collect()
}

impl Cone for Psd {
    fn key(&self) -> &'static str {
        "s"
    }

    fn rows(&self) -> Option<usize> {
        svec_rows(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Psd(self.0))
    }

    fn pounce_order(&self) -> Vec<usize> {
        svec_to_pounce(self.0)
    }
}
