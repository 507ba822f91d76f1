//! `conic_solve_batch`: the batched conic forward of one structure, as a free function.
use crate::panic_guard::{guard, test_panic_from_env};
use crate::problem::{self, Problem};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::Instant;

/// Solve a batch of conic programs sharing one sparsity structure: a `ConicProblem`
/// (problem.rs) built for this one call, then its `solve`. A caller that solves one
/// structure repeatedly holds a `ConicProblem` instead (pounce_kkt's `ConicStructure` does),
/// which checks and maps the structure once and keeps its workers' factorizations.
///
/// Problem (SCS form): minimize 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K, with
/// P_eff = (P + P')/2 from the values of P's FULL symmetric CSC pattern. Cones `K` in SCS
/// order: `{"z", "l", "q", "s", "ep", "p"}` (see the core's cones/ and cone_layout.rs for the mapping to POUNCE);
/// counts and sizes are ints (a float raises `TypeError`).
///
/// Arrays: `p_values (B, nnzP)` or None with `p_indptr = p_indices = None`; `a_values
/// (B, nnzA)`, `q (B, n)`, `b (B, m)`, all float64 C-contiguous; int64 index arrays.
/// Options: `tol`, `max_iter`, `time_limit` (seconds for the WHOLE call, None = none: one
/// deadline for the batch; an item started before it stops at it, within about one IPM
/// iteration plus `min(time_limit / 20, 0.25 s)` (see `Engine::solve_qp`), with status
/// "time_limit" unless it finished; an item not started before it is not solved and gets
/// "time_limit" with 0 iterations). Optional warm start `warm_x (B, n)`,
/// `warm_y (B, m)`; `warm_s (B, m)` is accepted for API symmetry and only validated (POUNCE
/// re-derives the slack from `x` and recentres it).
///
/// Returns `{"x" (B, n), "y" (B, m), "s" (B, m), "status" list[str], "iterations" (B,),
/// "solve_time" (B,) seconds}` with `y` in K* and `s = b - A x` (0 on zero rows).
///
/// Engines (the core's options.rs): zero + nonneg problems run a direct IPM on a KKT factorization
/// whose symbolic analysis each worker reuses across its items, and fall back to POUNCE's
/// homogeneous self-dual embedding for any item that does not end optimal (so infeasible /
/// unbounded items are certified by the latter); conic problems run the embedding directly.
/// `iterations` counts every IPM iteration an item spent, over both legs.
///
/// Convexity: an item whose `P_eff` is not positive semidefinite (to within
/// `1e-9 * max|P_eff|`, convexity.rs) is not solved and gets the status "nonconvex".
///
/// The batch runs on the module's own fork-safe rayon pool (the core's pool.rs) with the GIL released;
/// each item is solved single-threaded (feral's serial backend), so no OS threads are
/// created per solve. Ctrl-C raises `KeyboardInterrupt` within about 0.2 s (interrupt.rs).
/// A Rust panic in an item fails that item ("numerical_failure"); anywhere else it raises
/// `RuntimeError`. Statuses: optimal, optimal_inaccurate, primal_infeasible,
/// dual_infeasible, iteration_limit, time_limit, numerical_failure, nonconvex.
#[pyfunction]
#[pyo3(signature = (n, m, p_indptr, p_indices, p_values, a_indptr, a_indices, a_values, q, b,
                    cones, tol=1e-8, max_iter=200, time_limit=None, warm_x=None, warm_y=None,
                    warm_s=None, backend=None))]
#[allow(clippy::too_many_arguments)]
pub fn conic_solve_batch<'py>(
    py: Python<'py>,
    n: usize,
    m: usize,
    p_indptr: Option<Bound<'py, PyAny>>,
    p_indices: Option<Bound<'py, PyAny>>,
    p_values: Option<Bound<'py, PyAny>>,
    a_indptr: Bound<'py, PyAny>,
    a_indices: Bound<'py, PyAny>,
    a_values: Bound<'py, PyAny>,
    q: Bound<'py, PyAny>,
    b: Bound<'py, PyAny>,
    cones: Bound<'py, PyAny>,
    tol: f64,
    max_iter: usize,
    time_limit: Option<f64>,
    warm_x: Option<Bound<'py, PyAny>>,
    warm_y: Option<Bound<'py, PyAny>>,
    warm_s: Option<Bound<'py, PyAny>>,
    backend: Option<Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let started = Instant::now();
    guard("conic_solve_batch", || {
        let test_panic = test_panic_from_env();
        test_panic.at_call("conic_solve_batch");
        let prob = Problem::from_py(
            n,
            m,
            p_indptr.as_ref(),
            p_indices.as_ref(),
            &a_indptr,
            &a_indices,
            &cones,
        )?;
        problem::solve(
            py,
            &Arc::new(prob),
            started,
            test_panic,
            p_values.as_ref(),
            &a_values,
            &q,
            &b,
            tol,
            max_iter,
            time_limit,
            [warm_x.as_ref(), warm_y.as_ref(), warm_s.as_ref()],
            backend.as_ref(),
        )
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(conic_solve_batch, m)?)
}
