//! Engine options per problem class, and the per-item linear-solver backends.
//!
//! One place decides how POUNCE is driven, so the choice and its measurements live here.
//!
//! QP class (zero + nonneg rows only): a FAST path, then a ROBUST fallback.
//! - Fast: pounce-convex's `QpFactorization` (the direct infeasible-start Mehrotra IPM on a
//!   KKT whose symbolic analysis is built once per rayon worker and reused for every item of
//!   the batch, which shares one structure). Its linear solver is the dense Bunch-Kaufman
//!   backend (dense_backend.rs) when the KKT is small and filled, otherwise feral with
//!   `ScalingStrategy::Identity` ([`kkt_backend`]). Accepted only when it ends `Optimal`; its convergence test is on the caller's own
//!   (unequilibrated) residuals.
//! - Robust: `solve_qp_ipm` with POUNCE's defaults (homogeneous self-dual embedding, feral's
//!   adaptive scaling, Ruiz retry), which certifies infeasibility / unboundedness. Any item the
//!   fast path does not finish `Optimal` is re-solved here; its status is the one reported.
//!
//! Measured on 64 dense QPs, n = m = 50, one core (median per item): POUNCE defaults
//! 4.6 ms (~10 iterations); feral scaling off 2.9 ms; + direct driver 1.9 ms (8.3
//! iterations); + `QpFactorization` 1.7 ms; + feral refinement pass off ~1.5 ms. The MC64
//! matching of feral's adaptive scaling alone was ~11% of the default profile, and
//! pounce-convex's per-solve KKT pattern build ~11% (paid inside `QpFactorization::solve` as
//! its structure check, so not avoidable from here). The dense backend then took it to
//! 1.0 ms (0.105 ms per iteration, the same 9.5 iterations): feral's factorization was ~46%
//! of the profile and faer's dense rook-pivoted LBL' is about twice as fast at this size; an
//! unpivoted LDL' tried first on these quasi-definite systems took it to ~0.83 ms.
//!
//! Conic class (any SOC / PSD / exp / power row): POUNCE's defaults through
//! `solve_socp_ipm`: HSDE is the only driver for exp/power and the one that certifies
//! infeasibility; the direct driver took more iterations (14.2 vs 10.6) and lost accuracy
//! (1.4e-5 vs 3.2e-6 in x at tol 1e-8) on 32 SOCPs (n = 52, 20 nonneg rows, 6 SOC(5)), and
//! dropping feral's scaling there gained only ~6% (3.40 -> 3.20 ms per item), not worth
//! its robustness. The dense backend gained nothing measurable on the SOCP and exp-cone
//! layers of benchmarks/bench_cvxpylayers.py (c) and moved the SOC + exp + power fixture
//! past its 5e-5 accuracy, so the conic class keeps feral.
//!
//! Exp / power cones: a staged solve. pounce-convex sends any exp or power cone to its
//! non-symmetric HSDE driver, whose per-iteration scaling solves, per cone, for the
//! conjugate-barrier point by a damped Newton iteration that stops at a Newton decrement
//! lambda^2 <= 1e-24 or after 200 steps. Its Armijo test compares barrier values whose
//! rounding (~1e-16 |G|) exceeds the decrease it asks for once lambda^2 < ~1e-15, so a cone
//! whose iteration lands in between runs all 200 steps with ~20 step halvings each: ~30% of
//! the cones from the first iterations, nearly all of them once mu < ~1e-5, where the
//! inexact scaling also stalls the IPM. Measured (scratch profile of one B=64
//! logistic-regression item, 40 exp cones, one core): 90% of the time in that scaling (libm
//! `log`), the linear solver 4%; 88 iterations (Clarabel: 21), 10.9 ms per iteration; the
//! IPM reached a residual of 7e-7 in 7 iterations and spent 80 more below 4e-7. The driver
//! ends with an active-set polish (Newton on the KKT equations of the identified active
//! set) that lands at machine precision from a much looser IPM point. So with exp / power
//! cones the item is first solved at [`NONSYM_STAGE_TOL`] and that solve is kept only if it
//! is `Optimal` and its own scale-relative residuals ([`meets_tol`]) are within the
//! caller's tol; otherwise it is solved again at the caller's tol (iterations added).
//! Measured on 64 + 64 items of the bench_peers logreg / softmax cases, one core, serial:
//! 25.6 -> 0.87 s (29x) and 5.2 -> 0.47 s (11x), no re-solve, x within 2e-16 of the 1e-8
//! solve, residuals <= 9e-16; on 40 other exp / SOC + exp items (scaled logistic with l1
//! and a box, log-sum-exp, KL, entropy, exp sums over an SOC ball) 6.5 -> 2.5 s, 11
//! re-solved (those whose polish does not reach 1e-8 at either tol, up to 1.25x their old
//! time). 1e-2 re-solved 14 of the 40 and was no faster on logreg / softmax; 1e-4 1.5x
//! slower there.
use crate::dense_backend::{use_dense, DenseLbltBackend};
use pounce_convex::{ConeSpec, QpOptions, QpProblem, QpSolution, QpStatus};
use pounce_feral::{FeralConfig, FeralSolverInterface, ScalingStrategy};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::time::Duration;

/// User-facing solve options (the native API's `tol`, `max_iter`, `time_limit`).
#[derive(Debug, Clone, Copy)]
pub struct SolveOptions {
    pub tol: f64,
    pub max_iter: usize,
    /// For the whole call (batch.rs keeps one deadline for the batch; pounce-convex's own
    /// batch entry points give each item the full limit instead).
    pub time_limit: Option<Duration>,
}

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

/// The linear-solver backend configuration for one item: feral with its internal
/// parallelism OFF. The batch is parallel across items on the module's pool (pool.rs), so every
/// factorization runs single-threaded on the worker that owns the item (outer-parallel,
/// inner-serial; pounce-convex `batch.rs`). A parallel feral solver builds its own rayon
/// pool per `Solver`, i.e. new OS threads per solve, which this avoids.
pub fn feral_config() -> FeralConfig {
    FeralConfig {
        parallel: Some(false),
        ..FeralConfig::from_env()
    }
}

/// The fast path's backend: serial, no matrix scaling and no feral-side refinement pass
/// (its residual check was ~8% of the profile; the IPM tests convergence on its own true
/// residuals and hands anything short of `Optimal` to the robust path).
pub fn feral_config_fast() -> FeralConfig {
    feral_config_unrefined(ScalingStrategy::Identity)
}

/// The adjoint's backend: serial, with feral's infinity-norm equilibration rather than its
/// adaptive default (which picks MC64 matching for KKT-shaped matrices: 3.5x slower on the
/// n = m = 50 QP adjoint, 1.0 vs 0.28 ms per item, for no accuracy gain once our own
/// refinement runs). The adjoint refines against the unregularised K itself, so feral's
/// extra pass is off.
pub fn feral_config_adjoint() -> FeralConfig {
    feral_config_unrefined(ScalingStrategy::InfNorm)
}

/// Serial feral with `scaling` and without its own refinement pass, for callers that
/// refine (or test residuals) themselves. `POUNCE_FERAL_SCALING` / `POUNCE_FERAL_REFINE`
/// environment settings still win.
fn feral_config_unrefined(scaling: ScalingStrategy) -> FeralConfig {
    let mut cfg = feral_config();
    if std::env::var_os("POUNCE_FERAL_SCALING").is_none() {
        cfg.scaling = scaling;
    }
    if std::env::var_os("POUNCE_FERAL_REFINE").is_none() {
        cfg.refine = false;
    }
    cfg
}

pub fn backend(cfg: &FeralConfig) -> Box<dyn SparseSymLinearSolverInterface> {
    Box::new(FeralSolverInterface::with_config(cfg.clone()))
}

/// The backend for a KKT system of dimension `dim` with about `nnz_lower` lower-triangle
/// entries: the dense backend when [`use_dense`] says the system is small and filled enough
/// (measured on 64 dense QPs, n = m = 50, one core: 1.54 -> 1.0 ms per item with the
/// rook-pivoted LBL', same iterations), otherwise feral with `cfg`. `quasi_definite`: the
/// matrices are an IPM's KKT systems, for which the dense backend first tries an unpivoted
/// LDL' (a further ~15%: 0.85 ms per item); the adjoint's K, whose H block spans 1/mu..mu,
/// fails that attempt's checks too often to gain from it. The environment variable
/// `POUNCE_LAYERS_KKT_BACKEND=dense|feral` overrides the choice (for comparisons).
pub fn kkt_backend(
    dim: usize,
    nnz_lower: usize,
    cfg: &FeralConfig,
    quasi_definite: bool,
) -> Box<dyn SparseSymLinearSolverInterface> {
    let dense = match std::env::var("POUNCE_LAYERS_KKT_BACKEND").as_deref() {
        Ok("dense") => true,
        Ok("feral") => false,
        _ => use_dense(dim, nnz_lower),
    };
    match (dense, quasi_definite) {
        (true, true) => Box::new(DenseLbltBackend::quasi_definite_first()),
        (true, false) => Box::new(DenseLbltBackend::new()),
        (false, _) => backend(cfg),
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
