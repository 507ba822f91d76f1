//! One NLP solved by POUNCE's filter interior-point method (pounce-algorithm, Ipopt's
//! TNLP interface), with every function evaluation delegated to a Python object.
//!
//! The Python object (`pounce_theseus`' block-diagonal batch problem) provides
//!
//! - `objective(x) -> float`, `gradient(x) -> (n,)`,
//! - `constraints(x) -> (m,)`, `jacobian(x) -> (nnz_jac,)` (values on `jac_rows/jac_cols`),
//! - `hessian(x, obj_factor, lam) -> (nnz_hess,)`: the lower triangle of
//!   `obj_factor * hess f + sum_i lam_i hess g_i` on `hess_rows/hess_cols`,
//! - `iteration(iter, obj, inf_pr, inf_du, mu, x_or_None) -> bool` (False stops the solve).
//!
//! Index patterns are 0-based (C style). The solve runs with the GIL released; each
//! callback re-attaches to the interpreter for exactly its own duration. A Python
//! exception inside a callback (`KeyboardInterrupt` from Ctrl-C included) aborts the solve:
//! that evaluation fails, every later one fails without calling Python, the next
//! intermediate callback stops the solver, and `nlp_solve` re-raises the exception. The
//! intermediate callback also runs Python's pending signal handlers, so Ctrl-C lands within
//! one iteration even when no callback runs Python code. A non-finite value returned by a
//! callback is an evaluation error as in Ipopt (the line search cuts the step).
//!
//! The application (options, the restoration phase, the inner-serial FERAL backend, the
//! per-thread reuse) is the core's `nlp` module; this file is the TNLP over Python.
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArrayMethods};
use pounce_layers_core::nlp::{solve_tnlp, status_name, with_current_user_iterate, OptValue};
use pounce_layers_core::pattern::MAX_DIM;
use pounce_nlp::return_codes::ApplicationReturnStatus;
use pounce_nlp::tnlp::{
    BoundsInfo, IndexStyle, IpoptCq, IpoptData, IterStats, NlpInfo, Solution, SparsityRequest,
    StartingPoint, TNLP,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::cell::RefCell;
use std::rc::Rc;

/// Problem data that does not change during a solve (plain data, `Send`).
struct NlpData {
    x0: Vec<f64>,
    x_l: Vec<f64>,
    x_u: Vec<f64>,
    g_l: Vec<f64>,
    g_u: Vec<f64>,
    jac_rows: Vec<i32>,
    jac_cols: Vec<i32>,
    hess_rows: Vec<i32>,
    hess_cols: Vec<i32>,
}

/// The final iterate as `finalize_solution` reports it (unscaled multipliers:
/// `grad f + J' lambda - z_l + z_u = 0`).
#[derive(Default)]
struct Finalized {
    x: Vec<f64>,
    z_l: Vec<f64>,
    z_u: Vec<f64>,
    lambda: Vec<f64>,
    g: Vec<f64>,
    obj: f64,
}

/// Outcome of a solve, carried back across the GIL boundary.
struct SolveOutcome {
    status: ApplicationReturnStatus,
    solution: Option<Finalized>,
    iterations: i32,
    kkt_error: f64,
    /// The exception that aborted the solve, re-raised by `nlp_solve`.
    callback_error: Option<PyErr>,
    option_error: Option<String>,
}

struct PyTnlp {
    problem: Py<PyAny>,
    data: NlpData,
    track_iterates: bool,
    error: Option<PyErr>,
    solution: Option<Finalized>,
}

impl PyTnlp {
    /// Run one Python callback with the GIL held; on an exception remember it (which
    /// aborts the solve) and return `None`. After an exception no callback runs.
    fn call<T>(
        &mut self,
        f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T>,
    ) -> Option<T> {
        if self.error.is_some() {
            return None;
        }
        let problem = &self.problem;
        let result = Python::attach(|py| f(py, problem.bind(py)));
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
                None
            }
        }
    }

    /// Call `name(x, *extra)` and copy the returned float64 vector into `out`.
    fn call_into(&mut self, name: &str, x: &[f64], out: &mut [f64]) -> bool {
        let expected = out.len();
        let values = self.call(|py, p| {
            let arr = PyArray1::from_slice(py, x);
            let r = p.call_method1(name, (arr,))?;
            read_vector(&r, name, expected)
        });
        match values {
            Some(v) => {
                out.copy_from_slice(&v);
                true
            }
            None => false,
        }
    }
}

/// Extract a finite float64 vector of the expected length from a callback's return value.
fn read_vector(obj: &Bound<'_, PyAny>, name: &str, expected: usize) -> PyResult<Vec<f64>> {
    let arr: PyReadonlyArray1<f64> = obj.extract().map_err(|_| {
        PyValueError::new_err(format!("{name}: expected a 1-D float64 numpy array"))
    })?;
    let v = arr.as_slice()?.to_vec();
    if v.len() != expected {
        return Err(PyValueError::new_err(format!(
            "{name}: returned {} values, expected {expected}",
            v.len()
        )));
    }
    Ok(v)
}

impl TNLP for PyTnlp {
    fn get_nlp_info(&mut self) -> Option<NlpInfo> {
        Some(NlpInfo {
            n: self.data.x0.len() as i32,
            m: self.data.g_l.len() as i32,
            nnz_jac_g: self.data.jac_rows.len() as i32,
            nnz_h_lag: self.data.hess_rows.len() as i32,
            index_style: IndexStyle::C,
        })
    }

    fn get_bounds_info(&mut self, b: BoundsInfo<'_>) -> bool {
        b.x_l.copy_from_slice(&self.data.x_l);
        b.x_u.copy_from_slice(&self.data.x_u);
        b.g_l.copy_from_slice(&self.data.g_l);
        b.g_u.copy_from_slice(&self.data.g_u);
        true
    }

    fn get_starting_point(&mut self, sp: StartingPoint<'_>) -> bool {
        if sp.init_x {
            sp.x.copy_from_slice(&self.data.x0);
        }
        // No dual warm start: the initializer computes its own multipliers.
        !sp.init_z && !sp.init_lambda
    }

    fn eval_f(&mut self, x: &[f64], _new_x: bool) -> Option<f64> {
        let v = self.call(|py, p| {
            let arr = PyArray1::from_slice(py, x);
            p.call_method1("objective", (arr,))?.extract::<f64>()
        })?;
        v.is_finite().then_some(v)
    }

    fn eval_grad_f(&mut self, x: &[f64], _new_x: bool, grad_f: &mut [f64]) -> bool {
        self.call_into("gradient", x, grad_f) && grad_f.iter().all(|v| v.is_finite())
    }

    fn eval_g(&mut self, x: &[f64], _new_x: bool, g: &mut [f64]) -> bool {
        if g.is_empty() {
            return true;
        }
        self.call_into("constraints", x, g) && g.iter().all(|v| v.is_finite())
    }

    fn eval_jac_g(&mut self, x: Option<&[f64]>, _new_x: bool, mode: SparsityRequest<'_>) -> bool {
        match mode {
            SparsityRequest::Structure { irow, jcol } => {
                irow.copy_from_slice(&self.data.jac_rows);
                jcol.copy_from_slice(&self.data.jac_cols);
                true
            }
            SparsityRequest::Values { values } => {
                if values.is_empty() {
                    return true;
                }
                match x {
                    Some(x) => {
                        self.call_into("jacobian", x, values)
                            && values.iter().all(|v| v.is_finite())
                    }
                    None => false,
                }
            }
        }
    }

    fn eval_h(
        &mut self,
        x: Option<&[f64]>,
        _new_x: bool,
        obj_factor: f64,
        lambda: Option<&[f64]>,
        _new_lambda: bool,
        mode: SparsityRequest<'_>,
    ) -> bool {
        match mode {
            SparsityRequest::Structure { irow, jcol } => {
                irow.copy_from_slice(&self.data.hess_rows);
                jcol.copy_from_slice(&self.data.hess_cols);
                true
            }
            SparsityRequest::Values { values } => {
                let Some(x) = x else { return false };
                let m = self.data.g_l.len();
                let lam: Vec<f64> = lambda.map_or_else(|| vec![0.0; m], <[f64]>::to_vec);
                let expected = values.len();
                let got = self.call(|py, p| {
                    let xa = PyArray1::from_slice(py, x);
                    let la = PyArray1::from_vec(py, lam);
                    let r = p.call_method1("hessian", (xa, obj_factor, la))?;
                    read_vector(&r, "hessian", expected)
                });
                match got {
                    Some(v) => {
                        values.copy_from_slice(&v);
                        values.iter().all(|v| v.is_finite())
                    }
                    None => false,
                }
            }
        }
    }

    fn finalize_solution(&mut self, sol: Solution<'_>, _ip_data: &IpoptData, _ip_cq: &IpoptCq) {
        self.solution = Some(Finalized {
            x: sol.x.to_vec(),
            z_l: sol.z_l.to_vec(),
            z_u: sol.z_u.to_vec(),
            lambda: sol.lambda.to_vec(),
            g: sol.g.to_vec(),
            obj: sol.obj_value,
        });
    }

    fn wants_current_iterate(&self) -> bool {
        self.track_iterates
    }

    fn intermediate_callback(
        &mut self,
        stats: IterStats,
        _ip_data: &IpoptData,
        _ip_cq: &IpoptCq,
    ) -> bool {
        let x: Option<Vec<f64>> = if self.track_iterates {
            with_current_user_iterate(|it| it.x.clone())
        } else {
            None
        };
        let restoration = stats.mode as i32 != 0;
        self.call(|py, p| {
            // Ctrl-C (or any signal handler's exception) stops the solve here.
            py.check_signals()?;
            let xa = x.map(|v| PyArray1::from_vec(py, v));
            p.call_method1(
                "iteration",
                (
                    stats.iter,
                    stats.obj_value,
                    stats.inf_pr,
                    stats.inf_du,
                    stats.mu,
                    restoration,
                    xa,
                ),
            )?
            .extract::<bool>()
        })
        .unwrap_or(false)
    }
}

fn read_options(options: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, OptValue)>> {
    let mut out = Vec::new();
    let Some(d) = options else { return Ok(out) };
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        let val = if let Ok(s) = v.extract::<String>() {
            OptValue::Str(s)
        } else if v.is_instance_of::<pyo3::types::PyBool>() {
            OptValue::Str(if v.extract::<bool>()? { "yes" } else { "no" }.to_string())
        } else if v.is_instance_of::<pyo3::types::PyInt>() {
            OptValue::Int(v.extract::<i32>()?)
        } else if let Ok(x) = v.extract::<f64>() {
            OptValue::Num(x)
        } else {
            return Err(PyValueError::new_err(format!(
                "options[{key:?}]: expected str, bool, int or float"
            )));
        };
        out.push((key, val));
    }
    Ok(out)
}

fn run_solve(
    problem: Py<PyAny>,
    data: NlpData,
    options: Vec<(String, OptValue)>,
    track_iterates: bool,
) -> SolveOutcome {
    let tnlp = Rc::new(RefCell::new(PyTnlp {
        problem,
        data,
        track_iterates,
        error: None,
        solution: None,
    }));
    let run = solve_tnlp(tnlp.clone(), &options);
    let mut t = tnlp.borrow_mut();
    SolveOutcome {
        status: run.status,
        solution: t.solution.take(),
        iterations: run.iterations,
        kkt_error: run.kkt_error,
        callback_error: t.error.take(),
        option_error: run.option_error,
    }
}

fn index_vec(a: &PyReadonlyArray1<'_, i64>, name: &str, bound: usize) -> PyResult<Vec<i32>> {
    let s = a.as_slice()?;
    s.iter()
        .map(|&v| {
            if v < 0 || v as usize >= bound {
                Err(PyValueError::new_err(format!(
                    "{name}: index {v} out of range [0, {bound})"
                )))
            } else {
                Ok(v as i32)
            }
        })
        .collect()
}

/// Bounds may be +-inf (no bound) but not NaN.
fn bounds_vec(a: &PyReadonlyArray1<'_, f64>, name: &str) -> PyResult<Vec<f64>> {
    let v = a.as_slice()?.to_vec();
    if let Some(i) = v.iter().position(|x| x.is_nan()) {
        return Err(PyValueError::new_err(format!(
            "{name}: NaN at index {i} (use -inf / inf for a missing bound)"
        )));
    }
    Ok(v)
}

/// Solve `min f(x) s.t. g_l <= g(x) <= g_u, x_l <= x <= x_u` with POUNCE's NLP
/// interior-point method; `problem` supplies the functions (see the module docs).
///
/// Bounds are float64 (+-inf for none; NaN raises `ValueError` naming the array and the
/// index); `jac_rows` lie in `[0, m)`, the other patterns in `[0, n)`.
///
/// Returns a dict with `x`, `z_l`, `z_u`, `lambda`, `g` (numpy arrays, or None when the
/// solve ended before `finalize_solution`), `obj`, `status` (str), `iterations`,
/// `kkt_error` and `callback_error` (always None: an exception raised by a callback,
/// `KeyboardInterrupt` included, aborts the solve and is re-raised from here). A Rust
/// panic raises `RuntimeError`.
#[pyfunction]
#[pyo3(signature = (problem, x0, x_l, x_u, g_l, g_u, jac_rows, jac_cols, hess_rows, hess_cols,
                    options=None, track_iterates=false))]
#[allow(clippy::too_many_arguments)]
pub fn nlp_solve<'py>(
    py: Python<'py>,
    problem: Py<PyAny>,
    x0: PyReadonlyArray1<'py, f64>,
    x_l: PyReadonlyArray1<'py, f64>,
    x_u: PyReadonlyArray1<'py, f64>,
    g_l: PyReadonlyArray1<'py, f64>,
    g_u: PyReadonlyArray1<'py, f64>,
    jac_rows: PyReadonlyArray1<'py, i64>,
    jac_cols: PyReadonlyArray1<'py, i64>,
    hess_rows: PyReadonlyArray1<'py, i64>,
    hess_cols: PyReadonlyArray1<'py, i64>,
    options: Option<&Bound<'py, PyDict>>,
    track_iterates: bool,
) -> PyResult<Bound<'py, PyDict>> {
    crate::panic_guard::guard("nlp_solve", move || {
        crate::panic_guard::test_panic_from_env().at_call("nlp_solve");
        let arrays = NlpArrays {
            x0,
            x_l,
            x_u,
            g_l,
            g_u,
            jac_rows,
            jac_cols,
            hess_rows,
            hess_cols,
        };
        nlp_solve_impl(py, problem, arrays, options, track_iterates)
    })
}

/// The array arguments of `nlp_solve`.
struct NlpArrays<'py> {
    x0: PyReadonlyArray1<'py, f64>,
    x_l: PyReadonlyArray1<'py, f64>,
    x_u: PyReadonlyArray1<'py, f64>,
    g_l: PyReadonlyArray1<'py, f64>,
    g_u: PyReadonlyArray1<'py, f64>,
    jac_rows: PyReadonlyArray1<'py, i64>,
    jac_cols: PyReadonlyArray1<'py, i64>,
    hess_rows: PyReadonlyArray1<'py, i64>,
    hess_cols: PyReadonlyArray1<'py, i64>,
}

fn nlp_solve_impl<'py>(
    py: Python<'py>,
    problem: Py<PyAny>,
    arrays: NlpArrays<'py>,
    options: Option<&Bound<'py, PyDict>>,
    track_iterates: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let NlpArrays {
        x0,
        x_l,
        x_u,
        g_l,
        g_u,
        jac_rows,
        jac_cols,
        hess_rows,
        hess_cols,
    } = arrays;
    let n = x0.len();
    let m = g_l.len();
    for (name, len, want) in [
        ("x_l", x_l.len(), n),
        ("x_u", x_u.len(), n),
        ("g_u", g_u.len(), m),
        ("jac_cols", jac_cols.len(), jac_rows.len()),
        ("hess_cols", hess_cols.len(), hess_rows.len()),
    ] {
        if len != want {
            return Err(PyValueError::new_err(format!(
                "{name}: length {len}, expected {want}"
            )));
        }
    }
    for (name, len) in [
        ("x0", n),
        ("g_l", m),
        ("jac_rows", jac_rows.len()),
        ("hess_rows", hess_rows.len()),
    ] {
        if len > MAX_DIM {
            return Err(PyValueError::new_err(format!(
                "{name}: length {len} exceeds the solver's 32-bit index range"
            )));
        }
    }
    let x0v = x0.as_slice()?.to_vec();
    if let Some(i) = x0v.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "x0: non-finite value at index {i}"
        )));
    }
    let data = NlpData {
        x0: x0v,
        x_l: bounds_vec(&x_l, "x_l")?,
        x_u: bounds_vec(&x_u, "x_u")?,
        g_l: bounds_vec(&g_l, "g_l")?,
        g_u: bounds_vec(&g_u, "g_u")?,
        jac_rows: index_vec(&jac_rows, "jac_rows", m)?,
        jac_cols: index_vec(&jac_cols, "jac_cols", n)?,
        hess_rows: index_vec(&hess_rows, "hess_rows", n)?,
        hess_cols: index_vec(&hess_cols, "hess_cols", n)?,
    };
    if data
        .hess_rows
        .iter()
        .zip(&data.hess_cols)
        .any(|(r, c)| c > r)
    {
        return Err(PyValueError::new_err(
            "hess_rows/hess_cols: entries must lie in the lower triangle (row >= col)",
        ));
    }
    let opts = read_options(options)?;
    let outcome = py.detach(move || run_solve(problem, data, opts, track_iterates));
    if let Some(msg) = outcome.option_error {
        return Err(PyValueError::new_err(msg));
    }
    if let Some(e) = outcome.callback_error {
        return Err(e);
    }
    let out = PyDict::new(py);
    match outcome.solution {
        Some(s) => {
            out.set_item("x", PyArray1::from_vec(py, s.x))?;
            out.set_item("z_l", PyArray1::from_vec(py, s.z_l))?;
            out.set_item("z_u", PyArray1::from_vec(py, s.z_u))?;
            out.set_item("lambda", PyArray1::from_vec(py, s.lambda))?;
            out.set_item("g", PyArray1::from_vec(py, s.g))?;
            out.set_item("obj", s.obj)?;
        }
        None => {
            for k in ["x", "z_l", "z_u", "lambda", "g", "obj"] {
                out.set_item(k, py.None())?;
            }
        }
    }
    out.set_item("status", status_name(outcome.status))?;
    out.set_item("iterations", outcome.iterations)?;
    out.set_item("kkt_error", outcome.kkt_error)?;
    out.set_item("callback_error", py.None())?;
    Ok(out)
}
