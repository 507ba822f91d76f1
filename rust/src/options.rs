//! Engine options per problem class, and the per-item linear-solver backend.
//!
//! One place decides how POUNCE is driven, so the choice (and its measurements) is documented
//! once. See `ProblemClass` in `cone_layout.rs`.
use crate::cone_layout::ProblemClass;
use pounce_convex::QpOptions;
use pounce_feral::{FeralConfig, FeralSolverInterface};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::time::Duration;

/// User-facing solve options (the native API's `tol`, `max_iter`, `time_limit`).
#[derive(Debug, Clone, Copy)]
pub struct SolveOptions {
    pub tol: f64,
    pub max_iter: usize,
    /// Per item, like pounce-convex's own batch entry points.
    pub time_limit: Option<Duration>,
}

/// `QpOptions` for one problem class.
///
/// Both classes keep POUNCE's homogeneous self-dual embedding (`use_hsde = true`, the
/// default): it certifies infeasibility / unboundedness natively, which the batch reports per
/// item, and it is the only driver for exp/power cones.
pub fn qp_options(_class: ProblemClass, o: &SolveOptions) -> QpOptions {
    QpOptions {
        tol: o.tol,
        max_iter: o.max_iter,
        time_limit: o.time_limit,
        ..QpOptions::default()
    }
}

/// The linear-solver backend configuration for one item: feral with its internal
/// parallelism OFF. The batch is parallel across items on rayon's global pool, so every
/// factorization runs single-threaded on the worker that owns the item (outer-parallel,
/// inner-serial; pounce-convex `batch.rs`). A parallel feral solver builds its own rayon
/// pool per `Solver`, i.e. new OS threads per solve, which this avoids.
pub fn feral_config() -> FeralConfig {
    FeralConfig {
        parallel: Some(false),
        ..FeralConfig::from_env()
    }
}

pub fn backend(cfg: &FeralConfig) -> Box<dyn SparseSymLinearSolverInterface> {
    Box::new(FeralSolverInterface::with_config(cfg.clone()))
}
