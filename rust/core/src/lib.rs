//! Pure-Rust core of pounce-layers: batched POUNCE conic solves in the SCS convention and
//! their sparse KKT adjoints (no PyO3; the binding crate `pounce-layers-native` wraps it as
//! `pounce_kkt._native`).
//!
//! - `cones`: one file per cone (its POUNCE cone, row order, H shape, dual) and the product
//!   cone that lays them out once; `cone_layout`: the mapping of the data to POUNCE.
//! - `pattern`, `structure`: checked sizes and CSC patterns; one problem structure.
//! - `batch`: batched conic forward solves (items in parallel, each serial).
//! - `kkt_adjoint`: batched sparse KKT adjoint solves.
//! - `newton_steps`: batched semismooth Newton steps (solution refinement) through the
//!   adjoint's KKT solve (`cone_snap`: the product cone's projection and limit scaling H,
//!   from each cone's own in `cones`).
//! - `options`: the engine per problem class and the linear-solver backends.
//! - `dense_backend`: the dense LBL' linear solver for small, filled KKT systems.
//! - `condensed_backend`: the Schur complement on the x block of an IPM's KKT (dense
//!   Cholesky) when the trailing block is diagonal.
//! - `exp_shear`: the exp-cone shear (an equivalent, faster-solving form for warm items).
//! - `certificates`: infeasibility / unboundedness certificates for exp/power problems.
//! - `convexity`: the check that each item's P is positive semidefinite.
//! - `nlp` (feature `nlp`): POUNCE's NLP IPM configured from options, for the binding's
//!   TNLP over Python callbacks.
//! - `kept_active_set`: the QP solved on an item's previous active set (one KKT solve).
//! - `qp_sessions`: the QP class's per-item active-set sessions, kept across calls.
//! - `pool`: the fork-safe rayon pool every batch runs on.
//! - `cancel`: cancel flags and per-item panic isolation; `workspaces`: per-worker state
//!   kept across the calls of one problem handle.
pub mod batch;
pub mod block_condensed;
pub mod cancel;
pub mod certificates;
pub mod condensed_backend;
pub mod condensing;
pub mod cone_dims;
pub mod cone_layout;
pub mod cone_snap;
pub mod cones;
pub mod convexity;
pub mod dense_backend;
pub mod error;
pub mod exp_shear;
pub mod kept_active_set;
pub mod kkt_adjoint;
pub mod kkt_refine;
pub mod newton_steps;
#[cfg(feature = "nlp")]
pub mod nlp;
pub mod options;
pub mod pattern;
pub mod pool;
pub mod qp_sessions;
pub mod schur_steps;
pub mod structure;
pub mod workspaces;

pub use error::{Error, Result};
