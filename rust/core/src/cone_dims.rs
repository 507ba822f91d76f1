//! The SCS cone dimensions (`z`, `l`, `q`, `s`, `ep`, `p`, SCS row order) and their checks;
//! laid out by [`crate::cones::ProductCone`] and mapped to POUNCE by
//! [`crate::cone_layout`].
use crate::error::{value_error, Result};

/// Cone dimensions in SCS order.
#[derive(Debug, Clone, Default)]
pub struct ConeDims {
    pub z: usize,
    pub l: usize,
    pub q: Vec<usize>,
    pub s: Vec<usize>,
    pub ep: usize,
    pub p: Vec<f64>,
}

impl ConeDims {
    /// Every power-cone alpha lies in (0, 1).
    fn check_alphas(&self) -> Result<()> {
        match self.p.iter().find(|a| !(**a > 0.0 && **a < 1.0)) {
            Some(a) => Err(value_error(format!(
                "power cone alpha must lie in (0, 1), got {a}"
            ))),
            None => Ok(()),
        }
    }

    /// Every SOC size and PSD order at least 1, every alpha in (0, 1), and a combination
    /// POUNCE solves (no PSD cone with exp / power cones).
    pub fn check(&self) -> Result<()> {
        if self.q.contains(&0) {
            return Err(value_error(format!(
                "SOC sizes must be >= 1: q={:?}",
                self.q
            )));
        }
        if self.s.contains(&0) {
            return Err(value_error(format!(
                "PSD orders must be >= 1: s={:?}",
                self.s
            )));
        }
        self.check_alphas()?;
        let has_psd = self.s.iter().any(|&k| k > 0);
        if has_psd && (self.ep > 0 || !self.p.is_empty()) {
            return Err(value_error(
                "POUNCE limit: PSD cones cannot be combined with exponential or power cones in \
                 one problem (pounce-convex 0.14 solves PSD on its symmetric-cone driver and \
                 exp/power on its non-symmetric one)",
            ));
        }
        Ok(())
    }
}
