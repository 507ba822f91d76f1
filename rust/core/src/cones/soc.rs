//! The second-order cone of dimension `d` (`q` entries): `(t, x)` with `|x| <= t`, `t`
//! first in SCS and POUNCE (`ConeSpec::SecondOrder`): identity. Self-dual; the adjoint's
//! `H` is a dense `d x d` block.
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Soc(pub usize);

impl Cone for Soc {
    fn key(&self) -> &'static str {
        "q"
    }

    fn rows(&self) -> Option<usize> {
        Some(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::SecondOrder(self.0))
    }
}
