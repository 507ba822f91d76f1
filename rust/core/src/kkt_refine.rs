//! The KKT solves' regularisation and iterative refinement: the constants, shared by the
//! sparse adjoint (kkt_adjoint.rs), the kept-active-set solve (kept_active_set.rs) and,
//! through the binding (`pounce_kkt._native.KKT_*`), the Torch KKT solve
//! (pounce_kkt/kkt_solve.py); and the refinement loop of the two Rust solves.

/// Static regularisation of the factored K (relative to the data scale): `+delta` on the
/// x block, `-delta` on the y block keeps K quasi-definite whatever P and H are. Iterative
/// refinement against the unregularised K removes its effect.
pub const REG_REL: f64 = 1e-10;
/// Most steps of iterative refinement against the unregularised K.
pub const REFINE_STEPS: usize = 10;
/// Refinement stops once the residual is below this fraction of the right-hand side.
pub const REFINE_TOL: f64 = 1e-14;

/// Iterative refinement of `sol`, a factor's solve of `K sol = rhs`, against the exact K:
/// corrections `sol += solve(rhs - K sol)` while the residual's max norm is above
/// [`REFINE_TOL`] of the right-hand side's and still halving, at most [`REFINE_STEPS`].
/// `matvec(x, out)` writes `K x`; `solve(v)` overwrites `v` with the factor's solve and
/// returns false when it fails. `res` and `corr` are scratch of `rhs`'s length. Returns
/// whether every solve succeeded and `sol` is finite.
pub fn refine(
    sol: &mut [f64],
    rhs: &[f64],
    res: &mut [f64],
    corr: &mut [f64],
    mut matvec: impl FnMut(&[f64], &mut [f64]),
    mut solve: impl FnMut(&mut [f64]) -> bool,
) -> bool {
    let rhs_norm = rhs
        .iter()
        .fold(0.0_f64, |a, v| a.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let mut last = f64::INFINITY;
    for _ in 0..REFINE_STEPS {
        matvec(sol, res);
        let mut rn = 0.0_f64;
        for (r, &b) in res.iter_mut().zip(rhs) {
            *r = b - *r;
            rn = rn.max(r.abs());
        }
        if rn <= REFINE_TOL * rhs_norm || rn >= 0.5 * last {
            break;
        }
        last = rn;
        corr.copy_from_slice(res);
        if !solve(corr) {
            return false;
        }
        for (s, c) in sol.iter_mut().zip(corr.iter()) {
            *s += c;
        }
    }
    sol.iter().all(|v| v.is_finite())
}
