//! Engine options per problem class, and the per-item linear-solver backends.
//!
//! One place decides how POUNCE is driven. The measurements behind each choice are in
//! docs/native-core.md ("Engines per problem class"), with the commands that made them.
//!
//! QP class (zero + nonneg rows only): a FAST path, then a ROBUST fallback.
//! - Fast: pounce-convex's `QpFactorization` (the direct infeasible-start Mehrotra IPM on a
//!   KKT whose symbolic analysis is built once per worker and reused for every item, which
//!   shares one structure). Its linear solver is the dense Bunch-Kaufman backend
//!   (dense_backend.rs) when the KKT is small and filled, otherwise feral without matrix
//!   scaling or its own refinement pass ([`kkt_backend`]). Accepted only when it ends
//!   `Optimal`; its convergence test is on the caller's own (unequilibrated) residuals.
//! - Robust: `solve_qp_ipm` with POUNCE's defaults (homogeneous self-dual embedding, feral's
//!   adaptive scaling, Ruiz retry), which certifies infeasibility / unboundedness. Any item
//!   the fast path does not finish `Optimal` is re-solved here; its status is the one
//!   reported.
//!
//! QP class, the engine ([`QpEngine`]): the IPM above, or the active set, from the item's
//! previous answer on the same problem handle (qp_sessions.rs): first its active rows kept
//! (one KKT solve, kept_active_set.rs), then pounce-convex's parametric active-set engine
//! through the item's `ActiveSetSession`, warm from its previous solve. An active-set
//! answer is kept only when it is `Optimal` and meets the caller's tol on its own residuals
//! ([`meets_tol`]); anything else is solved again by the IPM (fast, then robust), whose
//! status is reported. `Auto`, when the KKT is at most [`AUTO_ACTIVE_SET_MAX_DIM`], tries
//! the kept rows for an item whose values moved by at most [`AUTO_ACTIVE_SET_REL`] since its
//! previous solve, and for one that moved more unless its recent kept checks failed
//! (qp_sessions.rs, `KEPT_BACKOFF_MAX_EXP`), and for an item with no previous answer the
//! same active-set steps from no rows (kept_active_set.rs `solve_steps`, on the Schur
//! complement of P where P is positive definite, schur_steps.rs); it runs the session only
//! near and warm; the IPM otherwise.
//!
//! Conic class (any SOC / PSD / exp / power row): POUNCE's defaults (HSDE) through
//! `solve_socp_ipm`: HSDE is the only driver for exp/power and the one that certifies
//! infeasibility; the direct driver lost accuracy there. Its linear solver is chosen per
//! KKT matrix when POUNCE builds it ([`conic_backend`]): the dense LBL' for a small or
//! filled KKT ([`use_dense_conic`]) without PSD blocks (with them it left items short of a
//! tight tol: batch.rs `solve_conic`), otherwise feral with POUNCE's defaults (adaptive
//! scaling, refinement), whose per-factorization cost at these sizes is 2-3x the dense
//! one's (docs/exp-socp-profile.md). The dense LBL' is pivoted (not the quasi-definite-first
//! variant): the same backend also factors the exp/power active-set polish's KKT.
//!
//! Exp / power cones: a staged solve. pounce-convex's non-symmetric driver computes its
//! per-cone scaling by a damped Newton iteration whose Armijo test cannot pass below a
//! Newton decrement of ~1e-15 (rounding), so late iterations run its 200-step cap and the
//! IPM stalls, while its final active-set polish lands at machine precision from a much
//! looser IPM point. So an item with exp / power cones is first solved at
//! [`NONSYM_STAGE_TOL`]; that solve is kept only if it is `Optimal` and its own
//! scale-relative residuals ([`meets_tol`]) are within the caller's tol, otherwise the item
//! is solved again at the caller's tol (iterations added).
//!
//! Configuration is explicit: [`BackendOptions`] (the KKT backend override and feral's
//! scaling / refinement overrides, for comparisons) is passed in by the caller; nothing
//! here reads the environment.
use crate::condensed_backend::{use_condensed, CondensedBackend};
use crate::dense_backend::{use_dense, DenseLbltBackend, DENSE_ALWAYS_DIM, DENSE_MAX_DIM};
use pounce_convex::{ConeSpec, QpOptions, QpProblem, QpSolution, QpStatus};
pub use pounce_feral::parse_scaling_strategy;
use pounce_feral::{FeralConfig, FeralSolverInterface, ScalingStrategy};
use pounce_linsol::{EMatrixFormat, ESymSolverStatus, SparseSymLinearSolverInterface};
use std::time::Duration;

/// User-facing solve options (the native API's `tol`, `max_iter`, `time_limit`, `engine`).
#[derive(Debug, Clone, Copy)]
pub struct SolveOptions {
    pub tol: f64,
    pub max_iter: usize,
    /// For the whole call (batch.rs keeps one deadline for the batch; pounce-convex's own
    /// batch entry points give each item the full limit instead).
    pub time_limit: Option<Duration>,
    /// The QP class's engine (ignored for the conic class).
    pub engine: QpEngine,
    /// The conic class's first interior-point pass only ([`Stage`]); `None` in normal use.
    pub stage: Option<Stage>,
}

/// A conic-class solve stopped early, for a caller that finishes the point itself
/// (pounce_kkt/staged_newton.py: Newton steps through the backward's KKT solve, then the full
/// solve for the items they leave short). One IPM solve at `max(tol, caller's tol)` with at
/// most `max_iter` iterations (POUNCE's exp/power polish included), nothing after it: no
/// second, full solve and no certificate search. Its status is `Optimal` only when the point
/// meets the caller's tol ([`meets_tol`]); a usable point short of it (POUNCE's `Optimal`,
/// `OptimalInaccurate` or `IterationLimit`) is `OptimalInaccurate`; any other status is
/// POUNCE's. The QP class ignores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub tol: f64,
    pub max_iter: usize,
}

impl Stage {
    /// The stage's options: `opts` with the looser tol and the smaller iteration cap.
    pub fn options(&self, opts: &QpOptions) -> QpOptions {
        QpOptions {
            tol: self.tol.max(opts.tol),
            max_iter: self.max_iter.min(opts.max_iter).max(1),
            ..*opts
        }
    }

    /// The status a stage point is reported with (see [`Stage`]).
    pub fn status(prob: &QpProblem, specs: &[ConeSpec], sol: &QpSolution, tol: f64) -> QpStatus {
        if meets_tol(prob, specs, sol, tol) {
            return QpStatus::Optimal;
        }
        match sol.status {
            QpStatus::Optimal | QpStatus::OptimalInaccurate | QpStatus::IterationLimit => {
                QpStatus::OptimalInaccurate
            }
            s => s,
        }
    }
}

/// The QP class's engine (module docs; measurements in docs/native-core.md, "The active-set
/// engine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QpEngine {
    /// With the KKT at most [`AUTO_ACTIVE_SET_MAX_DIM`]: the item's previous active rows
    /// kept (near, or far unless its recent kept checks failed), or active-set steps from no
    /// rows for an item with no previous answer, its session when warm and the values moved
    /// little ([`AUTO_ACTIVE_SET_REL`]); the IPM otherwise.
    #[default]
    Auto,
    /// The IPM for every item.
    Ipm,
    /// The active set for every item (warm from its previous solve when there is one),
    /// the IPM where it fails.
    ActiveSet,
}

impl QpEngine {
    /// `"auto"`, `"ipm"` or `"active_set"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(QpEngine::Auto),
            "ipm" => Some(QpEngine::Ipm),
            "active_set" => Some(QpEngine::ActiveSet),
            _ => None,
        }
    }
}

/// `Auto` takes the active set for an item whose values (P, A, q, b) moved by at most this
/// fraction of their largest magnitude since the item's previous solve. Measured on dense
/// QPs (n = m = 50 and 10, docs/native-core.md): a warm session beat the IPM 2.5x at
/// perturbations of 1e-2 (relative), broke even near 1e-1 at n = 50, and lost up to 25x on
/// unrelated problems (its homotopy then crosses many working-set changes).
pub const AUTO_ACTIVE_SET_REL: f64 = 2e-2;

/// `Auto` uses the active set only when the QP's KKT dimension `n + m` is at most this.
pub const AUTO_ACTIVE_SET_MAX_DIM: usize = 400;

/// POUNCE's defaults with the caller's tolerance and limits: the robust engine.
pub fn robust_options(o: &SolveOptions) -> QpOptions {
    QpOptions {
        tol: o.tol,
        max_iter: o.max_iter,
        time_limit: o.time_limit,
        ..QpOptions::default()
    }
}

/// The fast QP engine: the direct driver (`QpFactorization` requires it).
pub fn fast_qp_options(o: &SolveOptions) -> QpOptions {
    QpOptions {
        use_hsde: false,
        ..robust_options(o)
    }
}

/// Which linear solver factors the KKT systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KktBackend {
    /// The size and fill policy of [`use_dense`].
    #[default]
    Auto,
    /// The dense LBL' whatever the size (for comparisons).
    Dense,
    /// feral whatever the size (for comparisons).
    Feral,
    /// The IPM's KKT through the condensed backend (condensed_backend.rs) whatever the size,
    /// the dense LBL' where it does not condense (for comparisons; other KKTs as `Dense`).
    Condensed,
}

/// The backend choices a caller may override (all `None` / `Auto` in normal use).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendOptions {
    pub kkt_backend: KktBackend,
    /// feral's matrix scaling for every engine, in place of each engine's own choice.
    pub feral_scaling: Option<ScalingStrategy>,
    /// feral's own refinement pass for every engine, in place of each engine's choice.
    pub feral_refine: Option<bool>,
    /// feral's `min_par_flops` (the work above which a parallel feral factorization starts
    /// threads; every backend here is serial, so it only matters to tests of that).
    pub feral_min_par_flops: Option<u64>,
    /// Whether the adjoint's K with cone blocks is condensed on its x block
    /// (block_condensed.rs) under `KktBackend::Auto`; `None`: [`block_condense_adjoint`]'s
    /// default.
    pub block_condense: Option<bool>,
}

impl BackendOptions {
    /// The robust engines' backend (and the conic class's): feral with POUNCE's defaults
    /// and its internal parallelism OFF. The batch is parallel across items on the pool
    /// (pool.rs), so every factorization runs single-threaded on the worker that owns the
    /// item (outer-parallel, inner-serial); a parallel feral solver would build its own
    /// thread pool per `Solver`, i.e. new OS threads per solve.
    pub fn feral_robust(&self) -> FeralConfig {
        self.feral(ScalingStrategy::Auto, true)
    }

    /// The fast QP path's backend: serial, no matrix scaling and no feral-side refinement
    /// pass (the IPM tests convergence on its own true residuals and hands anything short
    /// of `Optimal` to the robust path).
    pub fn feral_fast(&self) -> FeralConfig {
        self.feral(ScalingStrategy::Identity, false)
    }

    /// The adjoint's backend: serial, with feral's infinity-norm equilibration rather than
    /// its adaptive default (which picks MC64 matching for KKT-shaped matrices, ~3.5x
    /// slower there for no accuracy gain once the adjoint's own refinement runs); feral's
    /// refinement pass is off because the adjoint refines against the unregularised K.
    pub fn feral_adjoint(&self) -> FeralConfig {
        self.feral(ScalingStrategy::InfNorm, false)
    }

    fn feral(&self, scaling: ScalingStrategy, refine: bool) -> FeralConfig {
        FeralConfig {
            parallel: Some(false),
            scaling: self.feral_scaling.clone().unwrap_or(scaling),
            refine: self.feral_refine.unwrap_or(refine),
            min_par_flops: self.feral_min_par_flops,
            ..FeralConfig::default()
        }
    }

    /// Whether a KKT system of dimension `dim` with about `nnz_lower` lower-triangle
    /// entries goes to the dense backend: the one dense/sparse policy ([`use_dense`]),
    /// unless overridden.
    pub fn dense_kkt(&self, dim: usize, nnz_lower: usize) -> bool {
        match self.kkt_backend {
            KktBackend::Auto => use_dense(dim, nnz_lower),
            KktBackend::Dense | KktBackend::Condensed => true,
            KktBackend::Feral => false,
        }
    }
}

pub fn backend(cfg: &FeralConfig) -> Box<dyn SparseSymLinearSolverInterface> {
    Box::new(FeralSolverInterface::with_config(cfg.clone()))
}

/// The backend for a KKT system of dimension `dim` with about `nnz_lower` lower-triangle
/// entries: the dense backend when [`BackendOptions::dense_kkt`] says so, otherwise feral
/// with `cfg`. `quasi_definite`: the matrices are an IPM's KKT systems, for which the
/// dense backend first tries an unpivoted LDL' (about half the cost of the pivoted LBL');
/// the adjoint's K, whose H block spans 1/mu..mu, fails that attempt's checks too often to
/// gain from it. The IPM's systems go to the condensed backend (condensed_backend.rs, the
/// Schur complement on the x block) when [`use_condensed`] says so, with the choice above
/// as its fallback.
pub fn kkt_backend(
    opts: &BackendOptions,
    dim: usize,
    nnz_lower: usize,
    cfg: &FeralConfig,
    quasi_definite: bool,
) -> Box<dyn SparseSymLinearSolverInterface> {
    let dense = opts.dense_kkt(dim, nnz_lower);
    let full: Box<dyn SparseSymLinearSolverInterface> = match (dense, quasi_definite) {
        (true, true) => Box::new(DenseLbltBackend::quasi_definite_first()),
        (true, false) => Box::new(DenseLbltBackend::new()),
        (false, _) => backend(cfg),
    };
    let condensed = quasi_definite
        && match opts.kkt_backend {
            KktBackend::Auto => use_condensed(dense, dim, nnz_lower),
            KktBackend::Condensed => true,
            KktBackend::Dense | KktBackend::Feral => false,
        };
    if condensed {
        Box::new(CondensedBackend::new(full))
    } else {
        full
    }
}

/// Whether the adjoint's K (`[[P + d, A'], [A, -H - d]]` with a diagonal H: zero and nonneg
/// rows only) of dimension `dim` with `nnz_lower` entries is factored through its x block's
/// Schur complement (condensed_backend.rs), with [`kkt_backend`]'s choice as the fallback:
/// the policy [`use_condensed`] of the IPM's KKT, unless overridden. Its solves are refined
/// against the unregularised K by the adjoint itself (kkt_refine.rs).
pub fn condense_adjoint(opts: &BackendOptions, dim: usize, nnz_lower: usize) -> bool {
    match opts.kkt_backend {
        KktBackend::Auto => use_condensed(opts.dense_kkt(dim, nnz_lower), dim, nnz_lower),
        KktBackend::Condensed => true,
        KktBackend::Dense | KktBackend::Feral => false,
    }
}

/// Whether the adjoint's K whose H has cone blocks (SOC, PSD, exp, power) is factored
/// through its x block's Schur complement over those blocks (block_condensed.rs), with
/// [`kkt_backend`]'s choice as the fallback: under `Auto` unless `block_condense` says
/// otherwise; never under a forced `Dense` or `Feral`. Its solves are refined against the
/// unregularised K by the adjoint itself.
pub fn block_condense_adjoint(opts: &BackendOptions) -> bool {
    match opts.kkt_backend {
        KktBackend::Auto => opts.block_condense.unwrap_or(true),
        KktBackend::Condensed => true,
        KktBackend::Dense | KktBackend::Feral => false,
    }
}

/// Smallest fill of a conic-class KKT's lower triangle (nnz / (dim (dim + 1) / 2)) for the
/// dense backend above `DENSE_ALWAYS_DIM` (up to `DENSE_MAX_DIM`). Lower than the QP fast
/// path's `DENSE_MIN_FILL` because the conic class's feral runs with adaptive scaling and
/// refinement: the SOCP KKTs of docs/exp-socp-profile.md (fill 0.22-0.28, dim 22-247)
/// solved 1.7-2.8x faster dense; the exp-cone KKTs above dim 64 (fill 0.03-0.05) were as
/// fast or faster on feral.
pub const CONIC_DENSE_MIN_FILL: f64 = 0.1;

/// Whether a conic-class KKT of dimension `dim` with `nnz_lower` stored lower-triangle
/// entries goes to the dense backend.
pub fn use_dense_conic(dim: usize, nnz_lower: usize) -> bool {
    if dim <= DENSE_ALWAYS_DIM {
        return true;
    }
    let full = dim * (dim + 1) / 2;
    dim <= DENSE_MAX_DIM && nnz_lower as f64 >= CONIC_DENSE_MIN_FILL * full as f64
}

impl BackendOptions {
    /// Whether a conic-class KKT goes to the dense backend: [`use_dense_conic`] unless
    /// overridden.
    pub fn dense_conic_kkt(&self, dim: usize, nnz_lower: usize) -> bool {
        match self.kkt_backend {
            KktBackend::Auto => use_dense_conic(dim, nnz_lower),
            KktBackend::Dense | KktBackend::Condensed => true,
            KktBackend::Feral => false,
        }
    }
}

/// The conic class's linear solver: feral with `cfg` until POUNCE hands it the KKT pattern
/// (`initialize_structure`), which it then keeps or replaces by the dense LBL' when
/// [`BackendOptions::dense_conic_kkt`] says so for that pattern's dimension and entry count.
/// pounce-convex builds its conic KKT (cone blocks, auxiliary SOC variables) internally,
/// so the choice is made on the matrix it actually factors; the exp/power polish's KKT gets
/// its own choice (each `Factorization` asks for a new backend).
pub fn conic_backend(
    opts: &BackendOptions,
    cfg: &FeralConfig,
) -> Box<dyn SparseSymLinearSolverInterface> {
    Box::new(ConicKktBackend {
        opts: opts.clone(),
        inner: backend(cfg),
    })
}

struct ConicKktBackend {
    opts: BackendOptions,
    inner: Box<dyn SparseSymLinearSolverInterface>,
}

impl SparseSymLinearSolverInterface for ConicKktBackend {
    fn initialize_structure(
        &mut self,
        dim: i32,
        nonzeros: i32,
        ia: &[i32],
        ja: &[i32],
    ) -> ESymSolverStatus {
        if self
            .opts
            .dense_conic_kkt(dim.max(0) as usize, nonzeros.max(0) as usize)
        {
            self.inner = Box::new(DenseLbltBackend::new());
        }
        self.inner.initialize_structure(dim, nonzeros, ia, ja)
    }
    fn values_array_mut(&mut self) -> &mut [f64] {
        self.inner.values_array_mut()
    }
    fn multi_solve(
        &mut self,
        new_matrix: bool,
        ia: &[i32],
        ja: &[i32],
        nrhs: i32,
        rhs_vals: &mut [f64],
        check_neg_evals: bool,
        number_of_neg_evals: i32,
    ) -> ESymSolverStatus {
        self.inner.multi_solve(
            new_matrix,
            ia,
            ja,
            nrhs,
            rhs_vals,
            check_neg_evals,
            number_of_neg_evals,
        )
    }
    fn number_of_neg_evals(&self) -> i32 {
        self.inner.number_of_neg_evals()
    }
    fn increase_quality(&mut self) -> bool {
        self.inner.increase_quality()
    }
    fn provides_inertia(&self) -> bool {
        self.inner.provides_inertia()
    }
    fn matrix_format(&self) -> EMatrixFormat {
        // feral and the dense backend both take 1-based triplets (the choice is made after
        // the caller has read this).
        EMatrixFormat::TripletFormat
    }
    fn singularity_certified(&self) -> bool {
        self.inner.singularity_certified()
    }
    fn set_reused_scaling_zero_pivot_recheck(&mut self, on: bool) {
        self.inner.set_reused_scaling_zero_pivot_recheck(on)
    }
    fn multi_solve_matches_single_solve(&self, nrhs: usize) -> bool {
        self.inner.multi_solve_matches_single_solve(nrhs)
    }
    fn provides_degeneracy_detection(&self) -> bool {
        self.inner.provides_degeneracy_detection()
    }
    fn determine_dependent_rows(
        &mut self,
        n_rows: i32,
        n_cols: i32,
        irn: &[i32],
        jcn: &[i32],
        vals: &[f64],
        c_deps: &mut Vec<i32>,
    ) -> ESymSolverStatus {
        self.inner
            .determine_dependent_rows(n_rows, n_cols, irn, jcn, vals, c_deps)
    }
}

/// The IPM tolerance of the first, staged solve of a problem with exponential or power cones
/// (see the module docs, "Exp / power cones"). A staged solve is kept only when
/// [`meets_tol`] holds at the caller's tol; otherwise the item is solved again at that tol.
pub const NONSYM_STAGE_TOL: f64 = 1e-3;

/// Whether pounce-convex routes the problem to its non-symmetric HSDE driver (any exp or
/// power cone; `solve_socp_ipm`).
pub fn has_nonsym(specs: &[ConeSpec]) -> bool {
    specs
        .iter()
        .any(|c| matches!(c, ConeSpec::Exponential | ConeSpec::Power(_)))
}

/// The staged solve's options for a problem with exp / power cones: `opts` at
/// [`NONSYM_STAGE_TOL`], or `None` when the problem has none or the caller's tol is not
/// tighter.
pub fn staged_nonsym_options(opts: &QpOptions, specs: &[ConeSpec]) -> Option<QpOptions> {
    (has_nonsym(specs) && opts.tol < NONSYM_STAGE_TOL).then_some(QpOptions {
        tol: NONSYM_STAGE_TOL,
        ..*opts
    })
}

/// Whether a solution of `prob` is `Optimal` with its scale-relative conic KKT residuals
/// (pounce-convex `kkt_residuals_conic`: primal residual with the slack's cone violation,
/// stationarity, per-block complementarity |s'z|) within `tol`: the primal residual over
/// 1 + max(|b|, |h|), stationarity over 1 + |c|, complementarity over 1 + |objective|
/// (infinity norms). The dual's cone membership is not re-tested: POUNCE returns `Optimal`
/// only for an interior iterate or for a point whose z it has checked against cl(K*).
pub fn meets_tol(prob: &QpProblem, specs: &[ConeSpec], sol: &QpSolution, tol: f64) -> bool {
    if sol.status != QpStatus::Optimal {
        return false;
    }
    let inf = |v: &[f64]| v.iter().fold(0.0_f64, |m, &a| m.max(a.abs()));
    let r = sol.kkt_residuals_conic(prob, specs);
    let primal = r.primal_infeasibility / (1.0 + inf(&prob.b).max(inf(&prob.h)));
    let dual = r.dual_infeasibility / (1.0 + inf(&prob.c));
    let gap = r.complementarity / (1.0 + sol.obj.abs());
    primal.max(dual).max(gap) <= tol
}
