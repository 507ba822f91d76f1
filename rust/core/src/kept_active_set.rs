//! The cheapest warm start of the QP class: the item's previous active set, kept.
//!
//! When a call moves an item's values little, the rows that bound at its previous solution
//! usually bind again. The QP restricted to them, `min 1/2 x'Px + c'x` subject to
//! `A x = b` and `G_W x = h_W` (W: the previous active inequality rows), is one symmetric
//! indefinite KKT solve,
//!
//! ```text
//!     [ P    A'  G_W' ] [ x   ]   [ -c  ]
//!     [ A    0   0    ] [ y   ] = [  b  ]
//!     [ G_W  0   0    ] [ z_W ]   [ h_W ]
//! ```
//!
//! (faer's dense Bunch-Kaufman LBL'). Its solution is the QP's when it is primal feasible
//! (`G x <= h` on the other rows) and dual feasible (`z_W >= 0`): the KKT conditions of a
//! convex QP are sufficient. It is accepted only then, and only when it meets the caller's
//! tol on the same residuals as every other engine's answer (options.rs `meets_tol`); the
//! multipliers of the other rows are exactly zero, so complementarity is exact. Anything
//! else (a changed active set, a singular restricted KKT) returns `None` and the caller
//! runs the active-set session or the IPM.
use crate::options::meets_tol;
use faer::{Mat, Side};
use pounce_convex::{ConeSpec, QpProblem, QpSolution, QpStatus};

/// The inequality rows of `prob` active at `sol`: those whose multiplier exceeds the slack
/// `h - G x` (the side of `w = s - z` that the backward's active set also reads).
pub fn active_rows(prob: &QpProblem, sol: &QpSolution) -> Vec<usize> {
    let mut s = prob.h.clone();
    for t in &prob.g {
        s[t.row] -= t.val * sol.x[t.col];
    }
    (0..prob.h.len()).filter(|&i| sol.z[i] > s[i]).collect()
}

/// The solution of `prob` on the active set `active` (inequality rows, increasing), if it
/// is optimal within `tol` (module docs); `specs` is the problem's cone list (nonneg rows).
pub fn solve_on(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    tol: f64,
) -> Option<QpSolution> {
    if !prob.lb.is_empty() || !prob.ub.is_empty() {
        return None;
    }
    let (n, me, k) = (prob.n, prob.b.len(), active.len());
    let dim = n + me + k;
    let mut pos = vec![usize::MAX; prob.h.len()];
    for (j, &r) in active.iter().enumerate() {
        pos[r] = j;
    }
    // The lower triangle of the KKT (duplicates summed, as in the problem's triplets).
    let mut kkt = Mat::<f64>::zeros(dim, dim);
    for t in &prob.p_lower {
        let (r, c) = if t.row >= t.col {
            (t.row, t.col)
        } else {
            (t.col, t.row)
        };
        kkt[(r, c)] += t.val;
    }
    for t in &prob.a {
        kkt[(n + t.row, t.col)] += t.val;
    }
    for t in &prob.g {
        if pos[t.row] != usize::MAX {
            kkt[(n + me + pos[t.row], t.col)] += t.val;
        }
    }
    let mut rhs = Mat::<f64>::zeros(dim, 1);
    for i in 0..n {
        rhs[(i, 0)] = -prob.c[i];
    }
    for i in 0..me {
        rhs[(n + i, 0)] = prob.b[i];
    }
    for (j, &r) in active.iter().enumerate() {
        rhs[(n + me + j, 0)] = prob.h[r];
    }
    let lblt = kkt.lblt(Side::Lower);
    faer::linalg::solvers::Solve::solve_in_place(&lblt, rhs.as_mut());
    let v: Vec<f64> = (0..dim).map(|i| rhs[(i, 0)]).collect();
    if !v.iter().all(|a| a.is_finite()) {
        return None;
    }
    let x = v[..n].to_vec();
    let y = v[n..n + me].to_vec();
    let z_w = &v[n + me..];
    // Dual feasibility on the kept rows: a negative multiplier means the row should leave.
    let z_scale = z_w.iter().fold(1.0_f64, |m, a| m.max(a.abs()));
    if z_w.iter().any(|&a| a < -tol * z_scale) {
        return None;
    }
    let mut z = vec![0.0; prob.h.len()];
    for (j, &r) in active.iter().enumerate() {
        z[r] = z_w[j].max(0.0);
    }
    let mut px = vec![0.0; n];
    for t in &prob.p_lower {
        px[t.row] += t.val * x[t.col];
        if t.row != t.col {
            px[t.col] += t.val * x[t.row];
        }
    }
    let obj = (0..n).map(|i| x[i] * (0.5 * px[i] + prob.c[i])).sum();
    let sol = QpSolution {
        status: QpStatus::Optimal,
        x,
        y,
        z,
        // Length n (no bounds here): pounce-convex's residuals zip c with these.
        z_lb: vec![0.0; n],
        z_ub: vec![0.0; n],
        obj,
        iters: 0,
        iterates: Vec::new(),
    };
    meets_tol(prob, specs, &sol, tol).then_some(sol)
}
