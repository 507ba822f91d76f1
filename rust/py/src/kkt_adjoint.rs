//! The adjoint's solve constants, for the dense Torch path.
use pounce_layers_core::kkt_refine::{REFINE_STEPS, REFINE_TOL, REG_REL};
use pyo3::prelude::*;

/// Registers the sparse adjoint's solve constants, so the dense Torch path
/// (pounce_kkt/dense_kkt.py) regularises and refines with the very same numbers:
/// `KKT_REG_REL`, `KKT_REFINE_STEPS`, `KKT_REFINE_TOL`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KKT_REG_REL", REG_REL)?;
    m.add("KKT_REFINE_STEPS", REFINE_STEPS)?;
    m.add("KKT_REFINE_TOL", REFINE_TOL)?;
    Ok(())
}
