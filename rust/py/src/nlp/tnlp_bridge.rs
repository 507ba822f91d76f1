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
//! The restoration phase is pounce-restoration's default (`MinC1Norm`) provider, the same
//! wiring `pounce-py` uses; the linear solver is an inner-serial FERAL backend.
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArrayMethods};
use pounce_algorithm::application::{
    default_backend_factory, feral_config_from_options, ma57_config_from_options,
};
use pounce_algorithm::batch::install_serial_feral_backend;
use pounce_algorithm::IpoptApplication;
use pounce_layers_core::pattern::MAX_DIM;
use pounce_nlp::return_codes::ApplicationReturnStatus;
use pounce_nlp::tnlp::{
    BoundsInfo, IndexStyle, IpoptCq, IpoptData, IterStats, NlpInfo, Solution, SparsityRequest,
    StartingPoint, TNLP,
};
use pounce_restoration::resto_alg_builder::RestoAlgorithmBuilder;
use pounce_restoration::resto_inner_solver::{
    make_default_restoration_factory_provider, InnerBackendFactoryFactory,
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
            pounce_algorithm::intermediate::with_current_user_iterate(|it| it.x.clone())
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

/// Ipopt-style name of an application status (what the Python side maps to Theseus).
fn status_name(s: ApplicationReturnStatus) -> &'static str {
    use ApplicationReturnStatus as S;
    match s {
        S::SolveSucceeded => "solve_succeeded",
        S::SolvedToAcceptableLevel => "solved_to_acceptable_level",
        S::InfeasibleProblemDetected => "infeasible_problem_detected",
        S::SearchDirectionBecomesTooSmall => "search_direction_becomes_too_small",
        S::DivergingIterates => "diverging_iterates",
        S::UserRequestedStop => "user_requested_stop",
        S::FeasiblePointFound => "feasible_point_found",
        S::MaximumIterationsExceeded => "maximum_iterations_exceeded",
        S::RestorationFailed => "restoration_failed",
        S::ErrorInStepComputation => "error_in_step_computation",
        S::MaximumCpuTimeExceeded => "maximum_cpu_time_exceeded",
        S::MaximumWallTimeExceeded => "maximum_wall_time_exceeded",
        S::NotEnoughDegreesOfFreedom => "not_enough_degrees_of_freedom",
        S::InvalidProblemDefinition => "invalid_problem_definition",
        S::InvalidOption => "invalid_option",
        S::InvalidNumberDetected => "invalid_number_detected",
        S::UnrecoverableException => "unrecoverable_exception",
        S::NonIpoptExceptionThrown => "non_ipopt_exception_thrown",
        S::InsufficientMemory => "insufficient_memory",
        S::InternalError => "internal_error",
    }
}

/// A solver option value as passed from Python.
#[derive(Debug)]
enum OptValue {
    Str(String),
    Int(i32),
    Num(f64),
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

fn configure(app: &mut IpoptApplication, options: &[(String, OptValue)]) -> Result<(), String> {
    for (k, v) in options {
        let r = match v {
            OptValue::Str(s) => app.options_mut().set_string_value(k, s, true, false),
            OptValue::Int(i) => app.options_mut().set_integer_value(k, *i, true, false),
            OptValue::Num(x) => app.options_mut().set_numeric_value(k, *x, true, false),
        };
        match r {
            Ok(true) => {}
            Ok(false) => return Err(format!("option {k} was rejected")),
            Err(e) => return Err(format!("option {k}: {e}")),
        }
    }
    app.initialize().map_err(|e| format!("initialize: {e}"))?;
    install_serial_feral_backend(app);
    // Restoration phase (and the linear solvers of its inner solves).
    let mut feral_cfg = feral_config_from_options(app.options());
    feral_cfg.parallel = Some(false);
    let opts = app.options().clone();
    let bff_mint = move || -> InnerBackendFactoryFactory {
        let feral_cfg = feral_cfg.clone();
        let opts = opts.clone();
        Box::new(move || {
            default_backend_factory(feral_cfg.clone(), ma57_config_from_options(&opts, ""))
        })
    };
    let provider = make_default_restoration_factory_provider(
        RestoAlgorithmBuilder::new(),
        app.algorithm_builder_from_options(),
        bff_mint,
    );
    app.set_restoration_factory_provider(provider);
    Ok(())
}

thread_local! {
    /// The last configured application of this thread with the options it was configured
    /// with. pounce-algorithm supports solving again on one application (each solve
    /// resets its own state), and building one (registering every option, wiring the
    /// restoration phase) costs about 0.5 ms, a tenth of a small batch's whole solve.
    static APP_CACHE: RefCell<Option<(String, IpoptApplication)>> = const { RefCell::new(None) };
}

fn run_solve(
    problem: Py<PyAny>,
    data: NlpData,
    options: Vec<(String, OptValue)>,
    track_iterates: bool,
) -> SolveOutcome {
    let key = format!("{options:?}");
    // Taken out while in use, so a solve started from inside a callback builds its own.
    let cached = APP_CACHE.with(|c| c.borrow_mut().take());
    let mut app = match cached {
        Some((k, app)) if k == key => app,
        _ => {
            let mut app = IpoptApplication::new();
            if let Err(msg) = configure(&mut app, &options) {
                return SolveOutcome {
                    status: ApplicationReturnStatus::InvalidOption,
                    solution: None,
                    iterations: 0,
                    kkt_error: f64::NAN,
                    callback_error: None,
                    option_error: Some(msg),
                };
            }
            app
        }
    };
    let tnlp = Rc::new(RefCell::new(PyTnlp {
        problem,
        data,
        track_iterates,
        error: None,
        solution: None,
    }));
    let status = app.optimize_tnlp(tnlp.clone());
    let stats = app.statistics();
    APP_CACHE.with(|c| *c.borrow_mut() = Some((key, app)));
    let mut t = tnlp.borrow_mut();
    SolveOutcome {
        status,
        solution: t.solution.take(),
        iterations: stats.iteration_count,
        kkt_error: stats.final_kkt_error,
        callback_error: t.error.take(),
        option_error: None,
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
