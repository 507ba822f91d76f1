//! The KKT solves' regularisation and refinement constants, shared by the sparse adjoint
//! (kkt_adjoint.rs), the kept-active-set solve (kept_active_set.rs) and, through the
//! binding (`pounce_kkt._native.KKT_*`), the Torch KKT solve (pounce_kkt/kkt_solve.py).

/// Static regularisation of the factored K (relative to the data scale): `+delta` on the
/// x block, `-delta` on the y block keeps K quasi-definite whatever P and H are. Iterative
/// refinement against the unregularised K removes its effect.
pub const REG_REL: f64 = 1e-10;
/// Most steps of iterative refinement against the unregularised K.
pub const REFINE_STEPS: usize = 10;
/// Refinement stops once the residual is below this fraction of the right-hand side.
pub const REFINE_TOL: f64 = 1e-14;
