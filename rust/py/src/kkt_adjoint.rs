//! `kkt_adjoint_batch`: the batched sparse KKT adjoint of one structure, as a free
//! function, and the adjoint's solve constants.
use crate::panic_guard::{guard, test_panic_from_env};
use crate::problem::{self, Problem};
use pounce_layers_core::kkt_adjoint::{REFINE_STEPS, REFINE_TOL, REG_REL};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;

/// Gradients of a loss through `conic_solve_batch`, by implicit differentiation of the KKT
/// conditions, for a batch sharing one structure.
///
/// Backward: for upstream `(gx, gy, gs)` solve `K [u; v] = [gx; gy - H gs]` with
/// `K = [[P_eff, A'], [A, -H]]`, then `dq = -u`, `db = v`, `dA[i, j] = -(y_i u_j + v_i x_j)`
/// on A's pattern and `dP[i, j] = -(u_i x_j + u_j x_i)/2` on P's full pattern (the method,
/// the regularisation and the refinement: the core's kkt_adjoint.rs, docs/design.md). A
/// `ConicProblem` (problem.rs) built for this one call runs it; a caller that differentiates
/// one structure repeatedly holds a `ConicProblem` and calls its `adjoint`. The batch runs
/// on the module's fork-safe pool with the GIL released; Ctrl-C raises `KeyboardInterrupt`
/// within about 0.2 s (interrupt.rs); a Rust panic in an item leaves that item unsolved,
/// anywhere else it raises `RuntimeError`.
///
/// Arrays (float64, C-contiguous, batch-first): `h_diag (B, z + l)`, `h_blocks (B, sum d_k^2)`
/// with each SOC, PSD, exp and power block dense row-major in cone order, `x (B, n)`,
/// `y (B, m)`, `gx (B, n)`, `gy (B, m)`, `gs (B, m)`; `statuses_ok (B,)` bool. Items whose
/// `statuses_ok` is False get zero gradients, and only ok rows must be finite.
///
/// Returns `{"dP" (B, nnzP) or None, "dq" (B, n), "dA" (B, nnzA), "db" (B, m), "solved"
/// list[bool]}`. `backend`: None or a dict of backend overrides (problem.rs
/// `backend_options`).
#[pyfunction]
#[pyo3(signature = (n, m, p_indptr, p_indices, p_values, a_indptr, a_indices, a_values, cones,
                    h_diag, h_blocks, x, y, gx, gy, gs, statuses_ok, backend=None))]
#[allow(clippy::too_many_arguments)]
pub fn kkt_adjoint_batch<'py>(
    py: Python<'py>,
    n: usize,
    m: usize,
    p_indptr: Option<Bound<'py, PyAny>>,
    p_indices: Option<Bound<'py, PyAny>>,
    p_values: Option<Bound<'py, PyAny>>,
    a_indptr: Bound<'py, PyAny>,
    a_indices: Bound<'py, PyAny>,
    a_values: Bound<'py, PyAny>,
    cones: Bound<'py, PyAny>,
    h_diag: Bound<'py, PyAny>,
    h_blocks: Bound<'py, PyAny>,
    x: Bound<'py, PyAny>,
    y: Bound<'py, PyAny>,
    gx: Bound<'py, PyAny>,
    gy: Bound<'py, PyAny>,
    gs: Bound<'py, PyAny>,
    statuses_ok: Bound<'py, PyAny>,
    backend: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("kkt_adjoint_batch", || {
        let test_panic = test_panic_from_env();
        test_panic.at_call("kkt_adjoint_batch");
        let prob = Problem::from_py(
            n,
            m,
            p_indptr.as_ref(),
            p_indices.as_ref(),
            &a_indptr,
            &a_indices,
            &cones,
        )?;
        problem::adjoint(
            py,
            &Arc::new(prob),
            test_panic,
            p_values.as_ref(),
            &a_values,
            &h_diag,
            &h_blocks,
            &x,
            &y,
            &gx,
            &gy,
            &gs,
            &statuses_ok,
            backend.as_ref(),
        )
    })
}
/// Registers `kkt_adjoint_batch` and the solve's constants, so the dense Torch path
/// (pounce_kkt/dense_kkt.py) regularises and refines with the very same numbers:
/// `KKT_REG_REL`, `KKT_REFINE_STEPS`, `KKT_REFINE_TOL`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kkt_adjoint_batch, m)?)?;
    m.add("KKT_REG_REL", REG_REL)?;
    m.add("KKT_REFINE_STEPS", REFINE_STEPS)?;
    m.add("KKT_REFINE_TOL", REFINE_TOL)?;
    Ok(())
}
