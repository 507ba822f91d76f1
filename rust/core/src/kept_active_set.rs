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
//! else (a singular restricted KKT) returns `None` and the caller runs the active-set
//! session or the IPM. [`solve_from`] first moves a changed active set to the new one by
//! primal-dual active-set steps (rows whose multiplier turned negative leave, violated rows
//! enter, one restricted KKT solve each, at most [`KEPT_MAX_SOLVES`]), then checks as
//! above: a training step that changes a few rows costs a few KKT solves, not an IPM.
//! [`solve_cold`] takes the same steps from no rows, for an item with no previous answer
//! (a first call, or new data in every batch).
//!
//! The answer's factor is kept ([`KeptFactor`]: this LBL', or the Schur-complement factor
//! when the steps of schur_steps.rs gave the answer) for the backward: at the active set
//! the adjoint's `K = [[P, A'], [A, -H]]` has `H = 0` on the active rows and `H = inf` on
//! the others (pounce_kkt/active_set.py `limit_scaling`), and its solve reduces to this
//! same matrix ([`KeptFactor::adjoint_solve`]); kkt_adjoint.rs takes it when the adjoint's
//! P, A and active set are the forward's.
use crate::cone_layout::ConeLayout;
use crate::kkt_refine::refine;
use crate::options::meets_tol;
use crate::schur_steps::{add_p_lower, SchurFactor, SchurSteps};
use faer::linalg::solvers::{Lblt, Solve};
use faer::{Mat, Side};
use pounce_convex::{ConeSpec, QpProblem, QpSolution, QpStatus};

/// An `H` entry at least this large marks an inactive row (pounce_kkt/active_set.py writes
/// 1e20 there); any other nonzero entry is not an active-set `H`.
const INACTIVE_H_MIN: f64 = 1e15;

/// Largest restricted KKT whose factor is kept for the backward: it holds two dense
/// `dim x dim` matrices per batch item (160: 410 KB per item).
pub const KEEP_FACTOR_MAX_DIM: usize = 160;

/// The factored restricted KKT of a kept solve, in its row order: x (n), the equality
/// rows (SCS zero rows, in order), the active inequality rows `active` (POUNCE rows).
pub struct KeptFactor {
    n: usize,
    me: usize,
    active: Vec<usize>,
    solver: RestrictedSolver,
    /// The item's P and A values (SCS layout, P first) the KKT was built from, once known
    /// ([`Self::set_values`]).
    values: Vec<f64>,
}

/// How a kept restricted KKT is factored: the Bunch-Kaufman LBL' of the whole matrix, or
/// through the Schur complement of a positive definite P (schur_steps.rs).
enum RestrictedSolver {
    Lblt(Lblt<f64>),
    Schur(SchurFactor),
}

impl RestrictedSolver {
    /// Overwrite `v` with the restricted KKT's solve; false when it is not finite.
    fn solve(&self, v: &mut [f64]) -> bool {
        match self {
            RestrictedSolver::Lblt(f) => {
                let mut col = Mat::<f64>::from_fn(v.len(), 1, |i, _| v[i]);
                f.solve_in_place(col.as_mut());
                for (i, x) in v.iter_mut().enumerate() {
                    *x = col[(i, 0)];
                }
                v.iter().all(|a| a.is_finite())
            }
            RestrictedSolver::Schur(f) => f.solve(v),
        }
    }
}

impl KeptFactor {
    /// The restricted KKT's dimension.
    pub fn dim(&self) -> usize {
        self.n + self.me + self.active.len()
    }

    /// Solve the restricted KKT in place (`v` in its row order); false when the result is
    /// not finite.
    pub fn solve(&self, v: &mut [f64]) -> bool {
        self.solver.solve(v)
    }

    /// Whether the factor is the Schur complement's (the steps' own answer) rather than the
    /// full restricted LBL' (for tests).
    pub fn by_schur(&self) -> bool {
        matches!(self.solver, RestrictedSolver::Schur(_))
    }

    /// Record the item's P (None without a P pattern) and A values this factor is of.
    pub fn set_values(&mut self, p: Option<&[f64]>, a: &[f64]) {
        self.values.clear();
        self.values.extend_from_slice(p.unwrap_or(&[]));
        self.values.extend_from_slice(a);
    }

    /// Whether this factor is of these P and A values (compared exactly).
    pub fn built_from(&self, p: Option<&[f64]>, a: &[f64]) -> bool {
        let np = p.map_or(0, <[f64]>::len);
        self.values.len() == np + a.len()
            && p.unwrap_or(&[]) == &self.values[..np]
            && a == &self.values[np..]
    }

    /// The adjoint's solve `K [u; w] = rhs` (`rhs` and the result in the SCS layout: x
    /// block, then the m rows) at this factor's active set, when `h_diag` (zero and nonneg
    /// rows, the whole of H for a QP) is that active set's limit: 0 exactly on the
    /// equality rows and the active rows, at least `INACTIVE_H_MIN` on the others. Then
    /// `w` is 0 on the inactive rows, and the active block solves the restricted KKT
    /// (refined as the general solve is, against `k_matvec`, which writes `K v` for the
    /// whole (n + m)-vector `v`: the item's own K, whose product with a vector that is zero
    /// on the inactive rows is the restricted KKT's on the others). `None` when H is not
    /// that.
    pub fn adjoint_solve(
        &self,
        layout: &ConeLayout,
        h_diag: &[f64],
        rhs: &[f64],
        mut k_matvec: impl FnMut(&[f64], &mut [f64]),
    ) -> Option<Vec<f64>> {
        let (n, me) = (self.n, self.me);
        let m = layout.m;
        if h_diag.len() != m || rhs.len() != n + m || layout.n != n || layout.m_eq() != me {
            return None;
        }
        let mut active_scs = vec![false; m];
        for &r in &self.active {
            active_scs[layout.scs_row_of_ineq[r]] = true;
        }
        for (r, &h) in h_diag.iter().enumerate() {
            let ok = if r < me || active_scs[r] {
                h == 0.0
            } else {
                h >= INACTIVE_H_MIN
            };
            if !ok {
                return None;
            }
        }
        let rows: Vec<usize> = (0..me)
            .chain(self.active.iter().map(|&r| layout.scs_row_of_ineq[r]))
            .collect();
        let d = n + rows.len();
        let mut red = Vec::with_capacity(d);
        red.extend_from_slice(&rhs[..n]);
        red.extend(rows.iter().map(|&r| rhs[n + r]));
        let mut sol = red.clone();
        if !self.solver.solve(&mut sol) {
            return None;
        }
        let (mut res, mut corr) = (vec![0.0; d], vec![0.0; d]);
        let (mut full, mut kfull) = (vec![0.0; n + m], vec![0.0; n + m]);
        let matvec = |x: &[f64], out: &mut [f64]| {
            full[..n].copy_from_slice(&x[..n]);
            full[n..].iter_mut().for_each(|v| *v = 0.0);
            for (k, &r) in rows.iter().enumerate() {
                full[n + r] = x[n + k];
            }
            k_matvec(&full, &mut kfull);
            out[..n].copy_from_slice(&kfull[..n]);
            for (k, &r) in rows.iter().enumerate() {
                out[n + k] = kfull[n + r];
            }
        };
        let finite = refine(&mut sol, &red, &mut res, &mut corr, matvec, |v| {
            self.solver.solve(v)
        });
        if !finite {
            return None;
        }
        let mut out = vec![0.0; n + m];
        out[..n].copy_from_slice(&sol[..n]);
        for (k, &r) in rows.iter().enumerate() {
            out[n + r] = sol[n + k];
        }
        Some(out)
    }
}

/// The inequality rows of `prob` active at `sol`: those whose multiplier exceeds the slack
/// `h - G x` (the side of `w = s - z` that the backward's active set also reads).
pub fn active_rows(prob: &QpProblem, sol: &QpSolution) -> Vec<usize> {
    let mut s = prob.h.clone();
    for t in &prob.g {
        s[t.row] -= t.val * sol.x[t.col];
    }
    (0..prob.h.len()).filter(|&i| sol.z[i] > s[i]).collect()
}

/// At most this many restricted KKT solves in [`solve_from`] and [`solve_cold`] (one per
/// active-set update). From no rows, or from another item's active rows, random dense QPs
/// (q, G, h per item; n = m = 50 and 10) took a median of 5 and 3-4 solves, at most 7
/// (docs/native-core.md, "New data on every call: active-set steps from no rows").
pub const KEPT_MAX_SOLVES: usize = 10;

/// The restricted KKT on `active` (inequality rows, increasing), solved: its factor and
/// solution `[x; y; z_W]`; `None` when the solution is not finite.
struct Restricted {
    lblt: Lblt<f64>,
    v: Vec<f64>,
}

fn solve_restricted(prob: &QpProblem, active: &[usize]) -> Option<Restricted> {
    let (n, me, k) = (prob.n, prob.b.len(), active.len());
    let dim = n + me + k;
    let mut pos = vec![usize::MAX; prob.h.len()];
    for (j, &r) in active.iter().enumerate() {
        pos[r] = j;
    }
    // The lower triangle of the KKT (duplicates summed, as in the problem's triplets).
    let mut kkt = Mat::<f64>::zeros(dim, dim);
    add_p_lower(prob, &mut kkt);
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
    lblt.solve_in_place(rhs.as_mut());
    let v: Vec<f64> = (0..dim).map(|i| rhs[(i, 0)]).collect();
    v.iter()
        .all(|a| a.is_finite())
        .then_some(Restricted { lblt, v })
}

/// The scale of the multipliers `z_W` in the dual-feasibility test.
fn z_scale(z_w: &[f64]) -> f64 {
    z_w.iter().fold(1.0_f64, |m, a| m.max(a.abs()))
}

/// The solution of `prob` on the active set `active` (inequality rows, increasing), if it
/// is optimal within `tol` (module docs), with its factor; `specs` is the problem's cone
/// list (nonneg rows). One restricted KKT solve: [`solve_from`] without steps.
pub fn solve_on(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    tol: f64,
) -> Option<(QpSolution, KeptFactor)> {
    solve_steps(prob, specs, active, tol, 1, true)
}

/// The multipliers of the active rows and every inequality row's slack `h - G x` at the
/// restricted solution `r`.
fn multipliers_and_slack<'a>(prob: &QpProblem, r: &'a Restricted) -> (&'a [f64], Vec<f64>) {
    let mut slack = prob.h.clone();
    for t in &prob.g {
        slack[t.row] -= t.val * r.v[t.col];
    }
    (&r.v[prob.n + prob.b.len()..], slack)
}

/// The active-set update of a primal-dual active-set step (Hintermueller, Ito and
/// Kunisch's semismooth Newton on the complementarity `min(z, h - G x) = 0`) from the
/// restricted solution on `active`, given by its multipliers `z_w` and the slacks: the rows
/// of `active` whose multiplier stays at least `-tol` of the multipliers' scale, and the
/// other rows whose slack is below `-tol (1 + |h_i|)`, increasing.
fn next_active(
    prob: &QpProblem,
    active: &[usize],
    z_w: &[f64],
    slack: &[f64],
    tol: f64,
) -> Vec<usize> {
    let floor = -tol * z_scale(z_w);
    let mut was = vec![false; prob.h.len()];
    for &i in active {
        was[i] = true;
    }
    let mut stays = vec![false; prob.h.len()];
    for (j, &i) in active.iter().enumerate() {
        stays[i] = z_w[j] >= floor;
    }
    (0..prob.h.len())
        .filter(|&i| stays[i] || (!was[i] && slack[i] < -tol * (1.0 + prob.h[i].abs())))
        .collect()
}

/// The solution of `prob` from the active set `active`: primal-dual active-set steps
/// ([`next_active`]), each one restricted KKT solve, until the set repeats, then the
/// optimality check of [`solve_on`] on it; `None` after [`KEPT_MAX_SOLVES`] solves, on a
/// cycle, on a singular or non-finite restricted KKT, or when the set has more rows than
/// `x` has entries. With the previous call's active rows a training step that moves the
/// values a little takes one solve; one that changes a few rows takes a few.
pub fn solve_from(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    tol: f64,
) -> Option<(QpSolution, KeptFactor)> {
    solve_steps(prob, specs, active, tol, KEPT_MAX_SOLVES, true)
}

/// The solution of `prob` with no previous answer: [`solve_from`] starting from no
/// inequality rows (its first solve is the equality-constrained minimiser; the rows it
/// violates enter), at most [`KEPT_MAX_SOLVES`] solves. `None` as for [`solve_from`], and
/// at once when the first restricted KKT is singular (no P, or P singular on the
/// equalities' null space: an LP needs a vertex, not steps from nothing).
pub fn solve_cold(
    prob: &QpProblem,
    specs: &[ConeSpec],
    tol: f64,
) -> Option<(QpSolution, KeptFactor)> {
    solve_steps(prob, specs, &[], tol, KEPT_MAX_SOLVES, false)
}

/// [`solve_from`] with at most `max_solves` restricted KKT solves (the batch passes
/// [`KEPT_MAX_SOLVES`] or the caller's `max_iter`, the smaller; each solve counts as one
/// iteration of the answer). With `full_first` (an item that moved little: its kept rows
/// likely hold) the first solve is the full restricted KKT on `active` (its answer when
/// they still hold); the steps after it, and every step without `full_first` (from no rows,
/// or from the kept rows of an item that moved far, whose set likely changes), run on the
/// Schur complement of P where P is positive definite (schur_steps.rs). On the set they
/// stop on, the last step's solve is the answer, checked as any other, with the Schur
/// factor kept for the backward; when the check fails (P ill-conditioned) the full
/// restricted solve (not counted) confirms the set and its answer is checked. Without a
/// positive definite P every step is the full restricted solve.
pub fn solve_steps(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    tol: f64,
    max_solves: usize,
    full_first: bool,
) -> Option<(QpSolution, KeptFactor)> {
    if !prob.lb.is_empty() || !prob.ub.is_empty() {
        return None;
    }
    let me = prob.b.len();
    let mut walk = Walk {
        set: active.to_vec(),
        seen: Vec::new(),
        solves: 0,
    };
    if full_first && !active.is_empty() && max_solves > 0 {
        if let Some(r) = walk.full_step(prob, tol)? {
            return accept(prob, specs, &walk.set, r, tol, walk.solves);
        }
    }
    if let Some(sc) = SchurSteps::new(prob) {
        let mut stop = None;
        while walk.solves < max_solves {
            if !walk.fits(prob) {
                return None;
            }
            let Some(step) = sc.step_on(&walk.set) else {
                break;
            };
            walk.solves += 1;
            let next = next_active(prob, &walk.set, step.z_w(me), &step.slack, tol);
            if next == walk.set {
                stop = Some(step);
                break;
            }
            walk.advance(next)?;
        }
        if let Some(step) = stop {
            // This step's solve is the answer when it passes the check; otherwise the full
            // restricted solve confirms the set, as if it were this step's.
            let x = sc.answer(&step);
            let (factor, lam) = sc.into_factor(step);
            let answer = Answer {
                x,
                lam: &lam,
                solver: RestrictedSolver::Schur(factor),
            };
            if let Some(out) = accept_answer(prob, specs, &walk.set, answer, tol, walk.solves) {
                return Some(out);
            }
            walk.solves -= 1;
        }
    }
    while walk.solves < max_solves {
        if let Some(r) = walk.full_step(prob, tol)? {
            return accept(prob, specs, &walk.set, r, tol, walk.solves);
        }
    }
    None
}

/// The active set of [`solve_steps`] on its way, the sets it has left and the steps taken.
struct Walk {
    set: Vec<usize>,
    seen: Vec<Vec<usize>>,
    solves: usize,
}

impl Walk {
    /// Whether the set's rows (with the equalities) are at most x's entries, as a
    /// nonsingular restricted KKT needs.
    fn fits(&self, prob: &QpProblem) -> bool {
        self.set.len() + prob.b.len() <= prob.n
    }

    /// Move to `next`; `None` when it is a set already left (a cycle).
    fn advance(&mut self, next: Vec<usize>) -> Option<()> {
        if self.seen.contains(&next) {
            return None;
        }
        self.seen.push(std::mem::replace(&mut self.set, next));
        Some(())
    }

    /// One full restricted KKT solve on the set: `Some(Some(r))` when the step keeps the
    /// set (its answer to check), `Some(None)` after moving to the next set, `None` when the
    /// set has more rows than `x` has entries, the solve fails or the steps cycle.
    fn full_step(&mut self, prob: &QpProblem, tol: f64) -> Option<Option<Restricted>> {
        if !self.fits(prob) {
            return None;
        }
        let r = solve_restricted(prob, &self.set)?;
        self.solves += 1;
        let (z_w, slack) = multipliers_and_slack(prob, &r);
        let next = next_active(prob, &self.set, z_w, &slack, tol);
        if next == self.set {
            return Some(Some(r));
        }
        self.advance(next)?;
        Some(None)
    }
}

/// The restricted solution `r` on `active` as the QP's answer, when it is dual feasible and
/// meets `tol` (module docs), with its factor; its `iters` is `solves`, the restricted KKT
/// solves that reached it.
fn accept(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    r: Restricted,
    tol: f64,
    solves: usize,
) -> Option<(QpSolution, KeptFactor)> {
    let n = prob.n;
    let Restricted { lblt, v } = r;
    let answer = Answer {
        x: v[..n].to_vec(),
        lam: &v[n..],
        solver: RestrictedSolver::Lblt(lblt),
    };
    accept_answer(prob, specs, active, answer, tol, solves)
}

/// A restricted solve's answer: `x`, the multipliers `lam` of the equalities and then of
/// the active rows, and the restricted KKT's factor.
struct Answer<'a> {
    x: Vec<f64>,
    lam: &'a [f64],
    solver: RestrictedSolver,
}

/// [`accept`] of an answer however it was solved (the full LBL' or the Schur complement).
fn accept_answer(
    prob: &QpProblem,
    specs: &[ConeSpec],
    active: &[usize],
    answer: Answer<'_>,
    tol: f64,
    solves: usize,
) -> Option<(QpSolution, KeptFactor)> {
    let (n, me) = (prob.n, prob.b.len());
    let Answer { x, lam, solver } = answer;
    let y = lam[..me].to_vec();
    let z_w = &lam[me..];
    // Dual feasibility on the kept rows: a negative multiplier means the row should leave.
    let z_scale = z_scale(z_w);
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
        iters: solves,
        iterates: Vec::new(),
    };
    let factor = KeptFactor {
        n,
        me,
        active: active.to_vec(),
        solver,
        values: Vec::new(),
    };
    meets_tol(prob, specs, &sol, tol).then_some((sol, factor))
}
