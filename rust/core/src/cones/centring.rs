//! The recentred central pair behind the symmetric cones' (SOC, PSD) limit scaling H
//! (pounce_kkt/cones/centring.py states the construction and the constants).

/// centring.py `TAU_FLOOR` and `TAU_REL_MIXED`.
pub(crate) const TAU_FLOOR: f64 = 1e-20;
pub(crate) const TAU_REL_MIXED: f64 = 1e-8;

/// centring.py `tau` with `tau_rel`: `<s, y> / rank`, but at least `rel |w|^2 / rank`
/// (`rel` TAU_REL_MIXED when the extreme eigenvalues of w differ in sign, else TAU_FLOOR),
/// plus TAU_FLOOR.
pub(crate) fn tau(inner: f64, w_sq: f64, rank: f64, lam_min: f64, lam_max: f64) -> f64 {
    let rel = if lam_min < 0.0 && lam_max > 0.0 {
        TAU_REL_MIXED
    } else {
        TAU_FLOOR
    };
    (inner / rank).max(rel * w_sq / rank) + TAU_FLOOR
}

/// centring.py `log_nt_ratio`: log(s~/y~) of the scalar central pair with s~ - y~ = lam,
/// s~ y~ = tau.
pub(crate) fn log_nt_ratio(lam: f64, tau: f64) -> f64 {
    2.0 * (lam / (2.0 * tau.sqrt())).asinh()
}
