//! Batched conic forward solves: one structure, many value sets, items in parallel on the
//! pool (pool.rs), each solved single-threaded.
use crate::cancel::{catch, Cancel, TestPanic};
use crate::certificates::{self, Certificate};
use crate::cone_layout::{dual_to_scs, empty_problem, slack_scs, warm_to_pounce, ProblemClass};
use crate::convexity::PsdCheck;
use crate::dense_backend::DenseLbltBackend;
use crate::exp_shear::ExpShear;
use crate::kept_active_set::{solve_steps, KEPT_MAX_SOLVES};
use crate::options::{
    backend, conic_backend, fast_qp_options, kkt_backend, meets_tol, robust_options,
    staged_nonsym_options, BackendOptions, QpEngine, SolveOptions, Stage, AUTO_ACTIVE_SET_MAX_DIM,
};
use crate::pool::threads;
use crate::qp_sessions::{ItemState, SessionStore};
use crate::structure::ConicStructure;
use crate::workspaces::Workspaces;
use pounce_convex::{
    solve_qp_ipm, solve_socp_ipm, solve_socp_ipm_warm, ConeSpec, QpFactorization, QpOptions,
    QpProblem, QpSolution, QpStatus, QpWarmStart,
};
use pounce_feral::FeralConfig;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// The status names of the native API (docs/design.md).
pub fn status_name(s: QpStatus) -> &'static str {
    match s {
        QpStatus::Optimal => "optimal",
        QpStatus::OptimalInaccurate => "optimal_inaccurate",
        QpStatus::PrimalInfeasible => "primal_infeasible",
        QpStatus::DualInfeasible => "dual_infeasible",
        QpStatus::IterationLimit => "iteration_limit",
        QpStatus::TimeLimit => "time_limit",
        QpStatus::NumericalFailure => "numerical_failure",
    }
}

/// The status of an item whose `P_eff` is not positive semidefinite (convexity.rs); it is
/// not solved.
pub const NONCONVEX: &str = "nonconvex";

/// Which engine produced an item's answer: the IPM (every conic item, and a QP item whose
/// active-set solve was not taken or failed), the active set solved cold, or warm from the
/// item's previous solve; `ENGINE_NONE` for an item not solved.
pub const ENGINE_IPM: &str = "ipm";
pub const ENGINE_ACTIVE_SET: &str = "active_set";
pub const ENGINE_ACTIVE_SET_WARM: &str = "active_set_warm";
/// The item's previous active set, kept: one KKT solve (kept_active_set.rs).
pub const ENGINE_ACTIVE_SET_KEPT: &str = "active_set_kept";
/// Primal-dual active-set steps from no rows, for an item with no previous answer
/// (kept_active_set.rs `solve_steps` from an empty set).
pub const ENGINE_ACTIVE_SET_STEPS: &str = "active_set_steps";
pub const ENGINE_NONE: &str = "none";

/// Where the `auto` engine's active-set steps start (kept_active_set.rs).
#[derive(Clone, Copy)]
enum StepsFrom {
    /// The active rows of the item's previous answer; `full_first`: first the full
    /// restricted solve on them (the item moved little, so they likely hold), otherwise
    /// straight to the Schur-complement steps (kept_active_set.rs `solve_steps`).
    Kept { full_first: bool },
    /// No rows: the item has no previous answer.
    NoRows,
}

/// One item's outcome.
#[derive(Debug, Clone, Copy)]
pub struct ItemOut {
    pub status: &'static str,
    pub iters: usize,
    pub secs: f64,
    /// One of the `ENGINE_*` names.
    pub engine: &'static str,
}

impl ItemOut {
    /// An item that was not solved (its outputs stay zero).
    pub fn skipped(status: &'static str) -> Self {
        ItemOut {
            status,
            iters: 0,
            secs: 0.0,
            engine: ENGINE_NONE,
        }
    }
}

/// The values of one item, borrowed from the batch arrays.
struct ItemData<'a> {
    p: Option<&'a [f64]>,
    a: &'a [f64],
    q: &'a [f64],
    b: &'a [f64],
    warm: Option<(&'a [f64], &'a [f64])>,
}

/// Everything an item solve needs that is shared by the batch.
struct Engine<'a> {
    st: &'a ConicStructure,
    robust: QpOptions,
    fast: QpOptions,
    backends: BackendOptions,
    cfg: FeralConfig,
    cfg_fast: FeralConfig,
    /// The QP engine's KKT dimension and approximate lower-triangle nnz (`qp_kkt_size`).
    kkt_size: (usize, usize),
    /// The QP class's engine.
    engine: QpEngine,
    /// The conic class's first pass only (options.rs, [`Stage`]).
    stage: Option<Stage>,
    /// The end of the call's `time_limit` (one deadline for the whole batch).
    deadline: Option<Instant>,
    /// How far a worker's reusable factorization's own time limit may exceed what is left
    /// before the deadline (see `Engine::solve_qp`).
    slack: Duration,
}

/// A rayon worker's reusable QP factorization (symbolic analysis kept across its items).
enum WorkerFactor {
    Untried,
    Failed,
    /// With the time limit it was built with (`QpFactorization` keeps its options).
    Ready(Box<QpFactorization>, Option<Duration>),
}

/// What one worker keeps across the items of its chunk (and, through [`Workspaces`],
/// across the calls of one problem handle).
pub struct Worker {
    factor: WorkerFactor,
    psd: Option<PsdCheck>,
    /// The problem each item is assembled into (its vectors reused).
    prob: QpProblem,
    /// How long the worker's last item took.
    last_item: Duration,
}

// SAFETY: a worker's only non-`Send` parts are pounce-linsol's boxed `dyn` linear solver
// and scaling (inside `QpFactorization`), whose concrete types here are all `Send`
// (workspaces.rs checks them at compile time); a worker is used by one thread at a time
// (taken out of its `Workspaces` or owned by one chunk).
unsafe impl Send for Worker {}

impl Worker {
    pub fn new(st: &ConicStructure) -> Self {
        Worker {
            factor: WorkerFactor::Untried,
            psd: st
                .p
                .as_ref()
                .map(|_| PsdCheck::new(st.n(), st.map.p_slots())),
            prob: empty_problem(st.n()),
            last_item: Duration::ZERO,
        }
    }
}

impl Engine<'_> {
    /// Time left before the batch's deadline; `None` = no limit.
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// QP class: the fast reusable-factor direct IPM, then the robust HSDE solve for any item
    /// it does not finish `Optimal` (see options.rs).
    ///
    /// Under a time limit, the reusable factorization carries the time left when it was
    /// built (pounce-convex fixes a `QpFactorization`'s options at build). An item can
    /// overshoot the batch deadline by no more than its own length, nor by more than that
    /// stale limit exceeds what is left; so the factorization is rebuilt (a symbolic
    /// analysis) only when both exceed `slack`, i.e. for items long enough to matter: an
    /// item then overshoots by at most about `slack` plus one IPM iteration.
    fn solve_qp(
        &self,
        prob: &QpProblem,
        warm: Option<&QpWarmStart>,
        wk: &mut Worker,
    ) -> QpSolution {
        let left = self.remaining();
        if let (WorkerFactor::Ready(_, built), Some(left)) = (&wk.factor, left) {
            if wk.last_item > self.slack && built.is_none_or(|b| b > left + self.slack) {
                wk.factor = WorkerFactor::Untried;
            }
        }
        if matches!(wk.factor, WorkerFactor::Untried) {
            let fast = QpOptions {
                time_limit: left,
                ..self.fast
            };
            wk.factor = match QpFactorization::build(prob, &fast, || {
                kkt_backend(
                    &self.backends,
                    self.kkt_size.0,
                    self.kkt_size.1,
                    &self.cfg_fast,
                    true,
                )
            }) {
                Some(f) => WorkerFactor::Ready(Box::new(f), left),
                None => WorkerFactor::Failed,
            };
            // The build (symbolic analysis and a first factorization) cannot be interrupted;
            // past the deadline nothing more is started.
            if self.expired() {
                return not_started(prob);
            }
        }
        let mut spent_iters = 0;
        if let WorkerFactor::Ready(f, _) = &mut wk.factor {
            let sol = match warm {
                Some(w) => f.solve_warm(prob, w),
                None => f.solve(prob),
            };
            // Past the deadline the robust engine would only spend its setup (equilibration,
            // a first factorization) before it stops.
            if sol.status == QpStatus::Optimal || self.expired() {
                return sol;
            }
            spent_iters = sol.iters;
        }
        let opts = QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        };
        let mut sol = solve_qp_ipm(prob, &opts, || backend(&self.cfg));
        sol.iters += spent_iters;
        sol
    }

    /// QP class, the engine of `self.engine` (options.rs, `QpEngine`). When the rule takes
    /// the active set: first active-set steps from the item's previous active rows, kept
    /// (one KKT solve when they still hold, kept_active_set.rs), or under `Auto` from no
    /// rows when the item has no previous answer; then its session (warm when it has an
    /// accepted solve, cold otherwise; under `Auto` a cold session is not started, the IPM
    /// being cheaper, see docs/native-core.md); an answer is kept when `Optimal` within
    /// tol, and the IPM ([`Self::solve_qp`]) solves what is left, its iterations added.
    /// Returns the solution and the `ENGINE_*` name of what produced it. `state` is `None`
    /// when the call keeps no per-item state (engine `Ipm`).
    fn solve_qp_engine(
        &self,
        prob: &QpProblem,
        d: &ItemData<'_>,
        warm: Option<&QpWarmStart>,
        wk: &mut Worker,
        state: Option<&mut ItemState>,
    ) -> (QpSolution, &'static str) {
        let Some(state) = state else {
            return (self.solve_qp(prob, warm, wk), ENGINE_IPM);
        };
        let values = (d.p, d.a, d.q, d.b);
        let small = self.kkt_size.0 <= AUTO_ACTIVE_SET_MAX_DIM;
        let (steps, session) = match self.engine {
            QpEngine::Ipm => (None, false),
            QpEngine::ActiveSet => (
                state
                    .has_active()
                    .then_some(StepsFrom::Kept { full_first: true }),
                true,
            ),
            QpEngine::Auto => {
                // Active-set steps cost one KKT solve each (an IPM takes ~10 larger ones)
                // and accept only a feasible, optimal answer: from the kept rows for every
                // item that moved little, and from the kept rows (or from no rows, for an
                // item with no previous answer) for one that moved far unless its recent
                // tries failed (back-off, qp_sessions.rs); the session only near (a far
                // item pivots longer than the IPM takes).
                let near = small && state.moved_little(d.p, d.a, d.q, d.b);
                let from = if state.has_active() {
                    StepsFrom::Kept { full_first: near }
                } else {
                    StepsFrom::NoRows
                };
                let due = small && (near || state.kept_due());
                (due.then_some(from), near && state.session_ready())
            }
        };
        let specs = &self.st.layout.specs;
        let tol = self.robust.tol;
        if let Some(from) = steps {
            // Each restricted KKT solve counts as an iteration of the caller's budget.
            let max_solves = KEPT_MAX_SOLVES.min(self.robust.max_iter);
            let (out, name) = match from {
                StepsFrom::Kept { full_first } => (
                    state.solve_kept(prob, specs, tol, max_solves, full_first),
                    ENGINE_ACTIVE_SET_KEPT,
                ),
                StepsFrom::NoRows => (
                    solve_steps(prob, specs, &[], tol, max_solves, false),
                    ENGINE_ACTIVE_SET_STEPS,
                ),
            };
            state.kept_outcome(out.is_some());
            if let Some((sol, factor)) = out {
                state.remember(values, prob, &sol);
                state.keep_factor(factor, d.p, d.a);
                return (sol, name);
            }
        }
        let mut spent_iters = 0;
        if session {
            let opts = QpOptions {
                time_limit: self.remaining(),
                ..self.robust
            };
            // The active-set KKT systems are not quasi-definite: the pivoted dense LBL'.
            let dense = self.backends.dense_kkt(self.kkt_size.0, self.kkt_size.1);
            let cfg = self.cfg_fast.clone();
            let out = state.solve(prob, opts, move || {
                if dense {
                    Box::new(DenseLbltBackend::new())
                } else {
                    backend(&cfg)
                }
            });
            if meets_tol(prob, specs, &out.sol, tol) {
                state.remember(values, prob, &out.sol);
                let name = if out.warm {
                    ENGINE_ACTIVE_SET_WARM
                } else {
                    ENGINE_ACTIVE_SET
                };
                return (out.sol, name);
            }
            if self.expired() {
                state.forget();
                return (out.sol, ENGINE_ACTIVE_SET);
            }
            spent_iters = out.sol.iters;
        }
        let mut sol = self.solve_qp(prob, warm, wk);
        sol.iters += spent_iters;
        // An IPM answer: the item's previous active-set solve is of other values (or failed)
        // and is not traced from; its active rows and values are kept for the next call.
        state.forget();
        if small && sol.status == QpStatus::Optimal {
            state.remember(values, prob, &sol);
        }
        (sol, ENGINE_IPM)
    }

    /// Conic class: `solve_socp_ipm` (`_warm` with a warm start) with POUNCE's defaults at
    /// the caller's tol. With exp or power cones, first the staged solve at
    /// `NONSYM_STAGE_TOL`, kept when it meets the caller's tol on its own residuals
    /// (options.rs, "Exp / power cones"); otherwise the solve at the caller's tol, its
    /// iterations added to the staged ones. When the deadline leaves no time for that
    /// solve, the staged point is returned, as `optimal_inaccurate` if it was `Optimal`.
    /// Under a [`Stage`]: that one solve under the stage's options, nothing after it.
    fn solve_conic(
        &self,
        prob: &QpProblem,
        specs: &[ConeSpec],
        warm: Option<&QpWarmStart>,
    ) -> QpSolution {
        // Exp cones with a warm start: the sheared equivalent (exp_shear.rs), mapped back.
        let shear = warm.and_then(|w| ExpShear::from_primal(prob, specs, &w.x));
        let sheared = shear
            .as_ref()
            .map(|sh| (sh.problem(prob), warm.map(|w| sh.warm(w))));
        // PSD blocks keep feral: the dense LBL' left PSD items short of a tight tol
        // (tests/test_native_adjoint.py, psd at 1e-10: iteration limit).
        let psd = specs.iter().any(|s| matches!(s, ConeSpec::Psd(_)));
        let solve = |opts: &QpOptions| {
            let mk = || {
                if psd {
                    backend(&self.cfg)
                } else {
                    conic_backend(&self.backends, &self.cfg)
                }
            };
            let (p, w) = match &sheared {
                Some((q, w)) => (q, w.as_ref()),
                None => (prob, warm),
            };
            let mut sol = match w {
                None => solve_socp_ipm(p, specs, opts, mk),
                Some(w) => solve_socp_ipm_warm(p, specs, w, opts, mk),
            };
            if let Some(sh) = &shear {
                sh.unshear(&mut sol);
            }
            sol
        };
        let robust = QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        };
        if let Some(stage) = &self.stage {
            let sol = solve(&stage.options(&robust));
            let status = Stage::status(prob, specs, &sol, robust.tol);
            return QpSolution { status, ..sol };
        }
        let Some(staged) = staged_nonsym_options(&robust, specs) else {
            return solve(&robust);
        };
        let first = solve(&staged);
        if meets_tol(prob, specs, &first, robust.tol) {
            return first;
        }
        if self.expired() {
            let status = match first.status {
                QpStatus::Optimal => QpStatus::OptimalInaccurate,
                s => s,
            };
            return QpSolution { status, ..first };
        }
        let mut sol = solve(&QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        });
        sol.iters += first.iters;
        sol
    }

    /// Solve one item and write its `(x, y, s)` in SCS convention into `out`.
    fn solve_item(
        &self,
        d: &ItemData<'_>,
        wk: &mut Worker,
        state: Option<&mut ItemState>,
        out: ScsPoint<'_>,
    ) -> ItemOut {
        let t0 = Instant::now();
        let st = self.st;
        let lay = &st.layout;
        let p_low = st.map.p_lower_values(d.p);
        if let Some(chk) = wk.psd.as_mut() {
            if !chk.is_psd(&p_low) {
                return ItemOut {
                    secs: t0.elapsed().as_secs_f64(),
                    ..ItemOut::skipped(NONCONVEX)
                };
            }
        }
        // The worker's problem, refilled for this item (no new vectors per item).
        let mut prob = std::mem::replace(&mut wk.prob, empty_problem(0));
        st.map.problem_into(&mut prob, lay, &p_low, d.a, d.q, d.b);
        let done = self.solve_problem(&prob, d, wk, state, out, t0);
        wk.prob = prob;
        done
    }

    /// [`Self::solve_item`] once the item's POUNCE problem `prob` is assembled.
    fn solve_problem(
        &self,
        prob: &QpProblem,
        d: &ItemData<'_>,
        wk: &mut Worker,
        state: Option<&mut ItemState>,
        ScsPoint { x, y, s }: ScsPoint<'_>,
        t0: Instant,
    ) -> ItemOut {
        let st = self.st;
        let lay = &st.layout;
        if self.expired() {
            return ItemOut {
                secs: t0.elapsed().as_secs_f64(),
                ..ItemOut::skipped(status_name(QpStatus::TimeLimit))
            };
        }
        let warm = d.warm.map(|(wx, wy)| warm_to_pounce(lay, wx, wy));
        let mk = || backend(&self.cfg);
        let (sol, engine) = match lay.class {
            ProblemClass::Qp => self.solve_qp_engine(prob, d, warm.as_ref(), wk, state),
            ProblemClass::Conic => (
                self.solve_conic(prob, &lay.specs, warm.as_ref()),
                ENGINE_IPM,
            ),
        };
        x.copy_from_slice(&sol.x);
        dual_to_scs(lay, &sol.y, &sol.z, y);
        slack_scs(lay, &st.a, d.a, d.b, x, s);
        let (mut status, mut iters) = (sol.status, sol.iters);
        // A stage leaves the verdict to the full solve its caller runs next.
        let staged = self.stage.is_some() && lay.class == ProblemClass::Conic;
        if !staged && certificates::wanted(st, status) {
            let opts = QpOptions {
                time_limit: self.remaining(),
                ..self.robust
            };
            match certificates::find(st, d.p, d.a, d.q, d.b, &opts, mk) {
                Some(Certificate::PrimalInfeasible { y: cert, iters: k }) => {
                    (status, iters) = (QpStatus::PrimalInfeasible, iters + k);
                    y.copy_from_slice(&cert);
                }
                Some(Certificate::DualInfeasible { x: cert, iters: k }) => {
                    (status, iters) = (QpStatus::DualInfeasible, iters + k);
                    x.copy_from_slice(&cert);
                }
                None => {}
            }
        }
        certificates::normalize(st, status, d.a, d.q, d.b, x, y, s);
        ItemOut {
            status: status_name(status),
            iters,
            secs: t0.elapsed().as_secs_f64(),
            engine,
        }
    }
}

/// Where one item's answer is written: its `x`, `y` and `s` (SCS convention).
struct ScsPoint<'a> {
    x: &'a mut [f64],
    y: &'a mut [f64],
    s: &'a mut [f64],
}

/// The solution of an item the deadline stopped before its first iteration.
fn not_started(prob: &QpProblem) -> QpSolution {
    QpSolution {
        status: QpStatus::TimeLimit,
        x: vec![0.0; prob.n],
        y: vec![0.0; prob.b.len()],
        z: vec![0.0; prob.h.len()],
        z_lb: Vec::new(),
        z_ub: Vec::new(),
        obj: 0.0,
        iters: 0,
        iterates: Vec::new(),
    }
}

/// The QP-class KKT `[[P + reg, A'], [A, -W]]`, for the backend choice: its dimension n + m
/// and about how many lower-triangle entries it holds (P's lower half, the x diagonal, A and
/// the (z, z) diagonal).
fn qp_kkt_size(st: &ConicStructure) -> (usize, usize) {
    let (n, m) = (st.n(), st.m());
    let p_lower = st.p.as_ref().map_or(0, |p| p.nnz().div_ceil(2));
    (n + m, p_lower + n + st.a.nnz() + m)
}

/// The options a worker's reusable QP factorization was built with: workers are reused
/// across calls only under the same ones (and never under a time limit, which a
/// factorization keeps from its build).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerKey {
    tol_bits: u64,
    max_iter: usize,
    backends: BackendOptions,
}

impl WorkerKey {
    fn new(so: &SolveOptions, b: &BackendOptions) -> Self {
        WorkerKey {
            tol_bits: so.tol.to_bits(),
            max_iter: so.max_iter,
            backends: b.clone(),
        }
    }
}

/// What a problem handle keeps across its forward calls: the workers (QP factorizations,
/// the P check), and the QP class's per-item active-set states (qp_sessions.rs).
#[derive(Default)]
pub struct ForwardWorkspaces {
    workers: Workspaces<WorkerKey, Worker>,
    pub sessions: SessionStore,
}

impl ForwardWorkspaces {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many workers are held (for tests).
    pub fn held(&self) -> usize {
        self.workers.held()
    }
}

/// The value arrays of a batch of `bsz` items, batch-first and row-major: `p (B, nnzP)`
/// (None without a P pattern), `a (B, nnzA)`, `q (B, n)`, `b (B, m)`, and an optional warm
/// start `(x (B, n), y (B, m))` in SCS convention.
pub struct BatchInput<'a> {
    pub bsz: usize,
    pub p: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub q: &'a [f64],
    pub b: &'a [f64],
    pub warm: Option<(&'a [f64], &'a [f64])>,
}

/// The solutions of a batch: `xs (B, n)`, `ys (B, m)`, `ss (B, m)` row-major, one
/// [`ItemOut`] per item.
pub struct BatchOutput {
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub ss: Vec<f64>,
    pub outs: Vec<ItemOut>,
}

/// How a batch runs: its deadline (one for the whole call), its cancel flag, the test hook.
#[derive(Clone, Default)]
pub struct RunControl {
    pub deadline: Option<Instant>,
    pub cancel: Cancel,
    pub test_panic: TestPanic,
}

/// Solve a batch of conic programs sharing the structure `st` (SCS form, see
/// cone_layout.rs). Items run in contiguous chunks, a few per pool thread, each chunk in
/// order on one worker (a batch of one chunk, e.g. one item, runs on the calling thread and
/// never touches a rayon pool, so any thread may call it) whose reusable QP factorization (symbolic analysis ~2x the cost of a
/// small solve) is paid per chunk, or taken from `workspaces` when an earlier call left one.
/// Items not started when `ctl.cancel` is set get "numerical_failure", items not started
/// before the deadline "time_limit"; an item that panics fails ("numerical_failure") with
/// zero outputs and its worker is rebuilt.
pub fn solve_batch(
    st: &ConicStructure,
    so: &SolveOptions,
    backends: &BackendOptions,
    inp: &BatchInput<'_>,
    ctl: &RunControl,
    workspaces: &ForwardWorkspaces,
) -> BatchOutput {
    let (n, m, bsz) = (st.n(), st.m(), inp.bsz);
    let slack = so.time_limit.map_or(Duration::ZERO, |t| {
        (t / 20).clamp(Duration::from_millis(1), Duration::from_millis(250))
    });
    let engine = Engine {
        st,
        robust: robust_options(so),
        fast: fast_qp_options(so),
        backends: backends.clone(),
        cfg: backends.feral_robust(),
        cfg_fast: backends.feral_fast(),
        kkt_size: qp_kkt_size(st),
        engine: so.engine,
        stage: so.stage,
        deadline: ctl.deadline,
        slack,
    };
    // Workers built under a time limit keep it: they are neither taken nor handed back.
    let key = so
        .time_limit
        .is_none()
        .then(|| WorkerKey::new(so, backends));
    let nnz_a = st.a.nnz();
    let nnz_p = st.nnz_p();

    // Chunks are at least 1 wide so that n = 0 or m = 0 still yields B items.
    let (nw, mw) = (n.max(1), m.max(1));
    let mut xs = vec![0.0; bsz * nw];
    let mut ys = vec![0.0; bsz * mw];
    let mut ss = vec![0.0; bsz * mw];
    let chunks_per_thread = 2;
    let per = bsz.div_ceil(threads() * chunks_per_thread).max(1);
    // The per-item active-set states, for a QP structure whose engine may use them.
    let keep_states = so.engine != QpEngine::Ipm && st.layout.class == ProblemClass::Qp;
    let mut states = if keep_states {
        workspaces.sessions.take(backends, bsz)
    } else {
        Vec::new()
    };
    let chunk =
        |c: usize, xc: &mut [f64], yc: &mut [f64], sc: &mut [f64], sts: &mut [ItemState]| {
            let mut wk = key
                .as_ref()
                .and_then(|k| workspaces.workers.take(k))
                .unwrap_or_else(|| Worker::new(st));
            let count = xc.len() / nw;
            let mut outs = Vec::with_capacity(count);
            for j in 0..count {
                if ctl.cancel.is_set() {
                    outs.push(ItemOut::skipped(status_name(QpStatus::NumericalFailure)));
                    continue;
                }
                if engine.expired() {
                    outs.push(ItemOut::skipped(status_name(QpStatus::TimeLimit)));
                    continue;
                }
                let i = c * per + j;
                let d = ItemData {
                    p: inp.p.map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
                    a: &inp.a[i * nnz_a..(i + 1) * nnz_a],
                    q: &inp.q[i * n..(i + 1) * n],
                    b: &inp.b[i * m..(i + 1) * m],
                    warm: inp
                        .warm
                        .map(|(wx, wy)| (&wx[i * n..(i + 1) * n], &wy[i * m..(i + 1) * m])),
                };
                let (x, y, s) = (
                    &mut xc[j * nw..j * nw + n],
                    &mut yc[j * mw..j * mw + m],
                    &mut sc[j * mw..j * mw + m],
                );
                let t0 = Instant::now();
                let mut state = sts.get_mut(j);
                let solved = catch(|| {
                    ctl.test_panic.at_item(i);
                    let out = ScsPoint {
                        x: &mut *x,
                        y: &mut *y,
                        s: &mut *s,
                    };
                    engine.solve_item(&d, &mut wk, state.as_deref_mut(), out)
                });
                match solved {
                    Ok(o) => {
                        wk.last_item = t0.elapsed();
                        outs.push(o)
                    }
                    Err(_) => {
                        // The panic message went to stderr (the panic hook); the item
                        // fails, its outputs are zeroed and the worker's state rebuilt.
                        wk = Worker::new(st);
                        if let Some(state) = state {
                            *state = ItemState::default();
                        }
                        for v in x.iter_mut().chain(y.iter_mut()).chain(s.iter_mut()) {
                            *v = 0.0;
                        }
                        outs.push(ItemOut {
                            secs: t0.elapsed().as_secs_f64(),
                            ..ItemOut::skipped(status_name(QpStatus::NumericalFailure))
                        });
                    }
                }
            }
            if let Some(k) = &key {
                workspaces.workers.put(k.clone(), wk);
            }
            outs
        };
    let outs: Vec<ItemOut> = if bsz == 0 {
        Vec::new()
    } else if bsz <= per {
        // One chunk: it runs here, without the pool.
        chunk(0, &mut xs, &mut ys, &mut ss, &mut states)
    } else if keep_states {
        xs.par_chunks_mut(per * nw)
            .zip(ys.par_chunks_mut(per * mw))
            .zip(ss.par_chunks_mut(per * mw))
            .zip(states.par_chunks_mut(per))
            .enumerate()
            .flat_map_iter(|(c, (((xc, yc), sc), sts))| chunk(c, xc, yc, sc, sts))
            .collect()
    } else {
        xs.par_chunks_mut(per * nw)
            .zip(ys.par_chunks_mut(per * mw))
            .zip(ss.par_chunks_mut(per * mw))
            .enumerate()
            .flat_map_iter(|(c, ((xc, yc), sc))| chunk(c, xc, yc, sc, &mut []))
            .collect()
    };
    if keep_states {
        workspaces.sessions.put(backends.clone(), states);
    }
    xs.truncate(bsz * n);
    ys.truncate(bsz * m);
    ss.truncate(bsz * m);
    BatchOutput { xs, ys, ss, outs }
}
