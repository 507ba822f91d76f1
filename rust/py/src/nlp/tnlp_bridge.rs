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
//! `NlpProblem` is the problem handle: sizes, bounds, the Jacobian and Hessian patterns and
//! the options, checked once (the options by configuring this thread's application with
//! them), then solved any number of times from a starting point. `nlp_solve` builds one
//! for a single call. The application (options, the restoration phase, the inner-serial
//! FERAL backend, the per-thread reuse) is the core's `nlp` module; this file is the TNLP
//! over Python.
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArrayMethods};
use pounce_layers_core::nlp::{
    prepare, solve_tnlp, status_name, with_current_user_iterate, NlpOptions, OptValue,
};
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
use std::sync::Arc;

/// What an `NlpProblem` holds, checked once (plain data, shared with its solves).
struct NlpLayout {
    n: usize,
    m: usize,
    x_l: Vec<f64>,
    x_u: Vec<f64>,
    g_l: Vec<f64>,
    g_u: Vec<f64>,
    jac_rows: Vec<i32>,
    jac_cols: Vec<i32>,
    hess_rows: Vec<i32>,
    hess_cols: Vec<i32>,
    options: NlpOptions,
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
    data: Arc<NlpLayout>,
    x0: Vec<f64>,
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
            n: self.data.n as i32,
            m: self.data.m as i32,
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
            sp.x.copy_from_slice(&self.x0);
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
                let m = self.data.m;
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

fn run_solve(
    problem: Py<PyAny>,
    data: Arc<NlpLayout>,
    x0: Vec<f64>,
    options: NlpOptions,
    track_iterates: bool,
) -> SolveOutcome {
    let tnlp = Rc::new(RefCell::new(PyTnlp {
        problem,
        data,
        x0,
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

/// A lower bound above its upper bound, named.
fn check_ordered(lo: &[f64], hi: &[f64], names: (&str, &str)) -> PyResult<()> {
    match lo.iter().zip(hi).position(|(l, u)| l > u) {
        Some(i) => Err(PyValueError::new_err(format!(
            "{}[{i}] = {} exceeds {}[{i}] = {}",
            names.0, lo[i], names.1, hi[i]
        ))),
        None => Ok(()),
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

/// The pattern and bound arrays of a problem.
struct LayoutArrays<'py> {
    x_l: PyReadonlyArray1<'py, f64>,
    x_u: PyReadonlyArray1<'py, f64>,
    g_l: PyReadonlyArray1<'py, f64>,
    g_u: PyReadonlyArray1<'py, f64>,
    jac_rows: PyReadonlyArray1<'py, i64>,
    jac_cols: PyReadonlyArray1<'py, i64>,
    hess_rows: PyReadonlyArray1<'py, i64>,
    hess_cols: PyReadonlyArray1<'py, i64>,
}

impl NlpLayout {
    /// Check sizes, bounds, patterns and options (the latter by configuring this thread's
    /// application with them).
    fn new(
        n: usize,
        m: usize,
        a: LayoutArrays<'_>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        for (name, len) in [
            ("n", n),
            ("m", m),
            ("jac_rows", a.jac_rows.len()),
            ("hess_rows", a.hess_rows.len()),
        ] {
            if len > MAX_DIM {
                return Err(PyValueError::new_err(format!(
                    "{name}: {len} exceeds the solver's 32-bit index range"
                )));
            }
        }
        for (name, len, want) in [
            ("x_l", a.x_l.len(), n),
            ("x_u", a.x_u.len(), n),
            ("g_l", a.g_l.len(), m),
            ("g_u", a.g_u.len(), m),
            ("jac_cols", a.jac_cols.len(), a.jac_rows.len()),
            ("hess_cols", a.hess_cols.len(), a.hess_rows.len()),
        ] {
            if len != want {
                return Err(PyValueError::new_err(format!(
                    "{name}: length {len}, expected {want}"
                )));
            }
        }
        let layout = NlpLayout {
            n,
            m,
            x_l: bounds_vec(&a.x_l, "x_l")?,
            x_u: bounds_vec(&a.x_u, "x_u")?,
            g_l: bounds_vec(&a.g_l, "g_l")?,
            g_u: bounds_vec(&a.g_u, "g_u")?,
            jac_rows: index_vec(&a.jac_rows, "jac_rows", m)?,
            jac_cols: index_vec(&a.jac_cols, "jac_cols", n)?,
            hess_rows: index_vec(&a.hess_rows, "hess_rows", n)?,
            hess_cols: index_vec(&a.hess_cols, "hess_cols", n)?,
            options: NlpOptions::new(read_options(options)?),
        };
        check_ordered(&layout.x_l, &layout.x_u, ("x_l", "x_u"))?;
        check_ordered(&layout.g_l, &layout.g_u, ("g_l", "g_u"))?;
        if layout
            .hess_rows
            .iter()
            .zip(&layout.hess_cols)
            .any(|(r, c)| c > r)
        {
            return Err(PyValueError::new_err(
                "hess_rows/hess_cols: entries must lie in the lower triangle (row >= col)",
            ));
        }
        prepare(&layout.options).map_err(PyValueError::new_err)?;
        Ok(layout)
    }
}

/// One solve of `layout` from `x0` (see `NlpProblem.solve`).
fn solve_layout<'py>(
    py: Python<'py>,
    layout: &Arc<NlpLayout>,
    problem: Py<PyAny>,
    x0: PyReadonlyArray1<'py, f64>,
    overrides: Option<&Bound<'py, PyDict>>,
    track_iterates: bool,
) -> PyResult<Bound<'py, PyDict>> {
    if x0.len() != layout.n {
        return Err(PyValueError::new_err(format!(
            "x0: length {}, expected n = {}",
            x0.len(),
            layout.n
        )));
    }
    let x0v = x0.as_slice()?.to_vec();
    if let Some(i) = x0v.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "x0: non-finite value at index {i}"
        )));
    }
    let options = match overrides {
        None => layout.options.clone(),
        Some(d) => layout.options.with_overrides(&read_options(Some(d))?),
    };
    let data = layout.clone();
    let outcome = py.detach(move || run_solve(problem, data, x0v, options, track_iterates));
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

/// An NLP layout, checked once: `NlpProblem(n, m, x_l, x_u, g_l, g_u, jac_rows, jac_cols,
/// hess_rows, hess_cols, options=None)`, for `min f(x) s.t. g_l <= g(x) <= g_u,
/// x_l <= x <= x_u` solved by POUNCE's NLP interior-point method.
///
/// Bounds are float64 of lengths n, m (+-inf for none; NaN, or a lower bound above its
/// upper bound, raises `ValueError` naming the array and the index). Patterns are int64,
/// 0-based: the Jacobian's `jac_rows` in `[0, m)`, `jac_cols` in `[0, n)`; the Hessian of
/// the Lagrangian's lower triangle `hess_rows >= hess_cols`, both in `[0, n)`. `options`:
/// POUNCE (Ipopt) options as a dict of str, bool ("yes"/"no"), int or float; an option
/// POUNCE rejects raises `ValueError` here. Immutable; one handle may be solved from
/// several threads at once (each thread keeps its own configured application).
#[pyclass(name = "NlpProblem", module = "pounce_kkt._native", frozen)]
pub struct NlpProblem {
    inner: Arc<NlpLayout>,
}

#[pymethods]
impl NlpProblem {
    #[new]
    #[pyo3(signature = (n, m, x_l, x_u, g_l, g_u, jac_rows, jac_cols, hess_rows, hess_cols,
                        options=None))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        n: usize,
        m: usize,
        x_l: PyReadonlyArray1<'py, f64>,
        x_u: PyReadonlyArray1<'py, f64>,
        g_l: PyReadonlyArray1<'py, f64>,
        g_u: PyReadonlyArray1<'py, f64>,
        jac_rows: PyReadonlyArray1<'py, i64>,
        jac_cols: PyReadonlyArray1<'py, i64>,
        hess_rows: PyReadonlyArray1<'py, i64>,
        hess_cols: PyReadonlyArray1<'py, i64>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Self> {
        crate::panic_guard::guard("NlpProblem", move || {
            crate::panic_guard::test_panic_from_env().at_call("NlpProblem");
            let arrays = LayoutArrays {
                x_l,
                x_u,
                g_l,
                g_u,
                jac_rows,
                jac_cols,
                hess_rows,
                hess_cols,
            };
            let layout = NlpLayout::new(n, m, arrays, options)?;
            Ok(NlpProblem {
                inner: Arc::new(layout),
            })
        })
    }

    #[getter]
    fn n(&self) -> usize {
        self.inner.n
    }

    #[getter]
    fn m(&self) -> usize {
        self.inner.m
    }

    /// Solve from `x0` (n,), float64 and finite; `problem` supplies the functions (see the
    /// module docs). `track_iterates`: pass each iterate's x to `problem.iteration`.
    /// `options`: None, or options for this solve only, set over the handle's (e.g. a
    /// `max_iter` that changes per call; an option POUNCE rejects raises `ValueError`).
    ///
    /// Returns a dict with `x`, `z_l`, `z_u`, `lambda`, `g` (numpy arrays, or None when the
    /// solve ended before `finalize_solution`), `obj`, `status` (str), `iterations`,
    /// `kkt_error` and `callback_error` (always None: an exception raised by a callback,
    /// `KeyboardInterrupt` included, aborts the solve and is re-raised from here). The
    /// multipliers are unscaled: `grad f + J' lambda - z_l + z_u = 0`. A Rust panic raises
    /// `RuntimeError`.
    #[pyo3(signature = (problem, x0, track_iterates=false, options=None))]
    fn solve<'py>(
        &self,
        py: Python<'py>,
        problem: Py<PyAny>,
        x0: PyReadonlyArray1<'py, f64>,
        track_iterates: bool,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::panic_guard::guard("NlpProblem.solve", move || {
            crate::panic_guard::test_panic_from_env().at_call("NlpProblem.solve");
            solve_layout(py, &self.inner, problem, x0, options, track_iterates)
        })
    }

    fn __repr__(&self) -> String {
        let l = &self.inner;
        format!(
            "NlpProblem(n={}, m={}, nnz_jac={}, nnz_hess={})",
            l.n,
            l.m,
            l.jac_rows.len(),
            l.hess_rows.len()
        )
    }
}

/// Solve one NLP: an `NlpProblem` of these arrays built for this call (n = len(x0),
/// m = len(g_l)), then its `solve(problem, x0, track_iterates)`; see `NlpProblem` for the
/// arguments, the checks and the result. A caller solving one layout repeatedly holds an
/// `NlpProblem` instead.
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
        let (n, m) = (x0.len(), g_l.len());
        let arrays = LayoutArrays {
            x_l,
            x_u,
            g_l,
            g_u,
            jac_rows,
            jac_cols,
            hess_rows,
            hess_cols,
        };
        let layout = Arc::new(NlpLayout::new(n, m, arrays, options)?);
        solve_layout(py, &layout, problem, x0, None, track_iterates)
    })
}
