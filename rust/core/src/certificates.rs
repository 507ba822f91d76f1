//! Infeasibility and unboundedness certificates for problems with exp/power cones.
//!
//! POUNCE 0.14's non-symmetric (exp/power) driver certifies unboundedness on some problems
//! but ends a primal-infeasible one in `numerical_failure` (or `iteration_limit`) after its
//! full iteration budget. For such items we pose the two certificate problems explicitly, in
//! SCS form, and solve them with the same driver; both are feasible and bounded, which is
//! the regime it handles well:
//!
//! ```text
//!   primal infeasible:  min b'y  s.t.  A'y = 0,  y in K*,  b'y >= -1   (optimum -1)
//!   dual infeasible:    min q'x  s.t.  P_eff x = 0,  -A x in K,  q'x >= -1
//! ```
//!
//! A certificate is accepted when the optimum reaches -1 and its defining equations hold to
//! `CERT_TOL` relative to its own size; it is returned scaled to `b'y = -1` / `q'x = -1`.
//! The dual cone `K*` is written as a linear image of `K`: each cone's `dual_map` (cones/:
//! nonneg, SOC and PSD are self-dual; exp and power map onto themselves).
use crate::cone_dims::ConeDims;
use crate::cone_layout::{linear_problem_from_triplets, ConeLayout};
use crate::structure::ConicStructure;
use pounce_convex::{solve_socp_ipm, QpOptions, QpSolution, QpStatus};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::collections::HashMap;

/// Residual of a certificate's defining equations, relative to its own size.
const CERT_TOL: f64 = 1e-6;
/// The certificate problems' optimum must come within this of -1.
const OBJ_TOL: f64 = 1e-3;

pub enum Certificate {
    /// `y` with `A'y = 0`, `y in K*`, `b'y = -1`.
    PrimalInfeasible { y: Vec<f64>, iters: usize },
    /// `x` with `P x = 0`, `-A x in K`, `q'x = -1`.
    DualInfeasible { x: Vec<f64>, iters: usize },
}

/// Worth looking for a certificate: an exp/power problem that ended without a verdict.
pub fn wanted(st: &ConicStructure, status: QpStatus) -> bool {
    st.layout.product.has_nonsymmetric()
        && matches!(
            status,
            QpStatus::NumericalFailure | QpStatus::IterationLimit
        )
}

fn inf_norm(v: &[f64]) -> f64 {
    v.iter().fold(0.0_f64, |a, x| a.max(x.abs()))
}

fn usable(sol: &QpSolution) -> bool {
    matches!(sol.status, QpStatus::Optimal | QpStatus::OptimalInaccurate)
}

/// Rows that restrict the cone rows (all but the zero rows) of the original problem to
/// their dual cone, for the primal certificate: `s = M y_cone in K` with `M` each cone's
/// dual map, i.e. `A_cert = -M`, on rows from `first_row` (the variables are `y`'s SCS
/// rows).
fn dual_cone_rows(st: &ConicStructure, first_row: usize) -> Vec<(usize, usize, f64)> {
    let z = st.layout.m_eq();
    let mut t = Vec::new();
    for r in &st.layout.product.ranges {
        if r.cone.pounce().is_none() {
            continue; // zero rows: y free
        }
        let row = first_row + r.start - z;
        t.extend(
            r.cone
                .dual_map()
                .into_iter()
                .map(|(i, j, v)| (row + i, r.start + j, -v)),
        );
    }
    t
}

/// The row `row` of `-c`'s nonzeros: with right-hand side 1 and a nonneg slack it reads
/// `c'v >= -1`, the normalisation of a certificate problem.
fn normalising_row(c: &[f64], row: usize) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
    c.iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(move |(j, &v)| (row, j, -v))
}

/// Minimise `c'v` over `v` subject to the SCS-form rows `t` (`rows` of them, in the cones of
/// `dims`; right-hand side 1 on the normalising row `c_row`, 0 elsewhere). The solution and
/// `c'v` when the solve is usable and reaches `c'v <= -1` (to `OBJ_TOL`), else `None`.
fn solve_normalised<F>(
    t: &[(usize, usize, f64)],
    c: &[f64],
    c_row: usize,
    rows: usize,
    dims: ConeDims,
    opts: &QpOptions,
    make_backend: F,
) -> Option<(QpSolution, f64)>
where
    F: FnMut() -> Box<dyn SparseSymLinearSolverInterface>,
{
    let mut rhs = vec![0.0; rows];
    rhs[c_row] = 1.0;
    let layout = ConeLayout::new(c.len(), rows, dims).ok()?;
    let prob = linear_problem_from_triplets(&layout, t, c.to_vec(), &rhs);
    let sol = solve_socp_ipm(&prob, &layout.specs, opts, make_backend);
    let cv: f64 = c.iter().zip(&sol.x).map(|(u, v)| u * v).sum();
    if !usable(&sol) || cv > -1.0 + OBJ_TOL {
        return None;
    }
    Some((sol, cv))
}

fn primal_certificate<F>(
    st: &ConicStructure,
    a_values: &[f64],
    b: &[f64],
    opts: &QpOptions,
    make_backend: F,
) -> Option<(Vec<f64>, usize)>
where
    F: FnMut() -> Box<dyn SparseSymLinearSolverInterface>,
{
    let (n, m) = (st.n(), st.m());
    let d = &st.layout.dims;
    // Rows: n zero rows (A'y = 0), then nonneg [b'y >= -1, y_l >= 0], SOC, PSD, exp, power.
    let mut t: Vec<(usize, usize, f64)> =
        st.a.entries()
            .map(|(k, r, c)| (c, r, a_values[k]))
            .collect();
    t.extend(normalising_row(b, n));
    t.extend(dual_cone_rows(st, n + 1));
    let dims = ConeDims {
        z: n,
        l: d.l + 1,
        ..d.clone()
    };
    let (sol, by) = solve_normalised(&t, b, n, n + 1 + (m - d.z), dims, opts, make_backend)?;
    let y = &sol.x;
    let mut aty = vec![0.0; n];
    for (k, r, c) in st.a.entries() {
        aty[c] += a_values[k] * y[r];
    }
    let scale = inf_norm(y).max(1.0)
        * st.a
            .entries()
            .map(|(k, ..)| a_values[k].abs())
            .fold(1.0, f64::max);
    if inf_norm(&aty) > CERT_TOL * scale {
        return None;
    }
    Some((y.iter().map(|v| v / -by).collect(), sol.iters))
}

fn dual_certificate<F>(
    st: &ConicStructure,
    p_values: Option<&[f64]>,
    a_values: &[f64],
    q: &[f64],
    opts: &QpOptions,
    make_backend: F,
) -> Option<(Vec<f64>, usize)>
where
    F: FnMut() -> Box<dyn SparseSymLinearSolverInterface>,
{
    let (n, m) = (st.n(), st.m());
    let d = &st.layout.dims;
    // P_eff rows that hold a nonzero, as zero rows (P x = 0), aggregated (no duplicates).
    let mut p_eff: HashMap<(usize, usize), f64> = HashMap::new();
    if let (Some(p), Some(pv)) = (&st.p, p_values) {
        for (k, r, c) in p.entries() {
            *p_eff.entry((r, c)).or_default() += 0.5 * pv[k];
            *p_eff.entry((c, r)).or_default() += 0.5 * pv[k];
        }
    }
    let mut p_rows: Vec<usize> = p_eff
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(&(r, _), _)| r)
        .collect();
    p_rows.sort_unstable();
    p_rows.dedup();
    let row_of: HashMap<usize, usize> = p_rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let np = p_rows.len();
    let mut t: Vec<(usize, usize, f64)> = p_eff
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(&(r, c), &v)| (row_of[&r], c, v))
        .collect();
    // Original zero rows (A_z x = 0), the new row q'x >= -1, then -A x in K for the rest.
    let z = d.z;
    for (k, r, c) in st.a.entries() {
        let row = if r < z { np + r } else { np + r + 1 };
        t.push((row, c, a_values[k]));
    }
    t.extend(normalising_row(q, np + z));
    let dims = ConeDims {
        z: np + z,
        l: d.l + 1,
        ..d.clone()
    };
    let (sol, qx) = solve_normalised(&t, q, np + z, np + m + 1, dims, opts, make_backend)?;
    let x = &sol.x;
    // P x = 0 and A_z x = 0 to CERT_TOL.
    let mut px = vec![0.0; n];
    for (&(r, c), &v) in &p_eff {
        px[r] += v * x[c];
    }
    let mut azx = vec![0.0; z];
    for (k, r, c) in st.a.entries() {
        if r < z {
            azx[r] += a_values[k] * x[c];
        }
    }
    let scale = inf_norm(x).max(1.0);
    if inf_norm(&px).max(inf_norm(&azx)) > CERT_TOL * scale {
        return None;
    }
    Some((x.iter().map(|v| v / -qx).collect(), sol.iters))
}

/// Look for a primal, then a dual infeasibility certificate of one item.
pub fn find<F>(
    st: &ConicStructure,
    p_values: Option<&[f64]>,
    a_values: &[f64],
    q: &[f64],
    b: &[f64],
    opts: &QpOptions,
    mut make_backend: F,
) -> Option<Certificate>
where
    F: FnMut() -> Box<dyn SparseSymLinearSolverInterface>,
{
    if let Some((y, iters)) = primal_certificate(st, a_values, b, opts, &mut make_backend) {
        return Some(Certificate::PrimalInfeasible { y, iters });
    }
    dual_certificate(st, p_values, a_values, q, opts, &mut make_backend)
        .map(|(x, iters)| Certificate::DualInfeasible { x, iters })
}

/// Put a certificate in the SCS convention, whoever found it: primal infeasible -> `y` scaled
/// to `b'y = -1`, `x = s = 0`; dual infeasible -> `x` scaled to `q'x = -1`, `s = -A x`
/// (0 on zero rows), `y = 0`. POUNCE's own certificates come unnormalised (rays of norm
/// ~1e20); a vector that does not have the certificate's sign is left as it is.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    st: &ConicStructure,
    status: QpStatus,
    a_values: &[f64],
    q: &[f64],
    b: &[f64],
    x: &mut [f64],
    y: &mut [f64],
    s: &mut [f64],
) {
    match status {
        QpStatus::PrimalInfeasible => {
            let by: f64 = b.iter().zip(y.iter()).map(|(u, v)| u * v).sum();
            if by < 0.0 && by.is_finite() {
                y.iter_mut().for_each(|v| *v /= -by);
                x.fill(0.0);
                s.fill(0.0);
            }
        }
        QpStatus::DualInfeasible => {
            let qx: f64 = q.iter().zip(x.iter()).map(|(u, v)| u * v).sum();
            if qx < 0.0 && qx.is_finite() {
                x.iter_mut().for_each(|v| *v /= -qx);
                y.fill(0.0);
                s.fill(0.0);
                for (k, r, c) in st.a.entries() {
                    s[r] -= a_values[k] * x[c];
                }
                s[..st.layout.m_eq()].fill(0.0);
            }
        }
        _ => {}
    }
}
