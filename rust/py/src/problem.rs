//! The native problem handle, `ConicProblem`: one conic structure, built once, solved and
//! differentiated many times with values only.
//!
//! Built from the sizes, the CSC patterns of P (full symmetric, optional) and A, and the
//! SCS cone dict, it holds the checked patterns and cones, the cone layout and the data
//! maps to POUNCE (core `ConicStructure`, built on the first non-empty call), the
//! adjoint's KKT pattern (built on the first `adjoint`), and the per-worker states (QP factorizations with their symbolic analyses,
//! the P check, KKT factorizations) that every later call reuses. Each call passes only
//! batch-first float64 value arrays; they are checked here (shapes, finiteness), then the
//! batch runs on the pool with the GIL released (interrupt.rs).
use crate::cones::cone_dims_from_py;
use crate::interrupt::{self, Pace};
use crate::panic_guard::{guard, test_panic_from_env};
use crate::validate::{
    check_all_finite, csc_from_py, expect_shape, f64_array, f64_array_unchecked, py_err,
    value_error, Array, Shared,
};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pounce_layers_core::batch::{solve_batch, BatchInput, ForwardWorkspaces, ItemOut, RunControl};
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::cone_snap::{batch_scalings, SnapCones};
use pounce_layers_core::kkt_adjoint::{
    adjoint_batch, h_lens, AdjointInput, AdjointWorkspaces, Grads, KktPattern,
};
use pounce_layers_core::newton_steps::{newton_batch, NewtonInput, NewtonOut, NewtonSettings};
use pounce_layers_core::options::{
    parse_scaling_strategy, BackendOptions, KktBackend, QpEngine, SolveOptions, Stage,
};
use pounce_layers_core::pattern::{check_sizes, CscPattern};
use pounce_layers_core::structure::{check_cone_rows, ConicStructure};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The checked inputs of a structure: sizes, patterns, cones (their row count checked for
/// overflow and against `m`). Memory proportional to the patterns, never to `m`.
struct Parsed {
    n: usize,
    m: usize,
    p: Option<CscPattern>,
    a: CscPattern,
    dims: ConeDims,
    /// (h_diag, h_blocks) lengths per item.
    h_lens: (usize, usize),
}

/// What a handle owns; shared with the batch jobs it starts (a job may outlive an
/// interrupted call). The structure's layout and maps (memory proportional to `m`) are
/// built on the first call with a non-empty batch, so an empty batch of the largest `m`
/// allocates nothing of that size.
struct Problem {
    parsed: Parsed,
    st: OnceLock<ConicStructure>,
    pat: OnceLock<KktPattern>,
    /// The cones as the snap and H see them (cone_snap.rs), built on first use.
    snap: OnceLock<SnapCones>,
    fwd: ForwardWorkspaces,
    adj: AdjointWorkspaces,
    /// Where the next batch of one item runs (interrupt.rs), per kind of call.
    fwd_pace: Pace,
    adj_pace: Pace,
}

impl Problem {
    /// Check sizes, cones (their row count against `m` before anything of size `m` is
    /// allocated, the combinations POUNCE takes) and patterns.
    fn from_py(
        n: usize,
        m: usize,
        p_indptr: Option<&Bound<'_, PyAny>>,
        p_indices: Option<&Bound<'_, PyAny>>,
        a_indptr: &Bound<'_, PyAny>,
        a_indices: &Bound<'_, PyAny>,
        cones: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        check_sizes(n, m).map_err(py_err)?;
        let dims = cone_dims_from_py(cones)?;
        dims.check().map_err(py_err)?;
        check_cone_rows(&dims, m).map_err(py_err)?;
        let h_lens = h_lens(&dims).map_err(py_err)?;
        let p = match (p_indptr, p_indices) {
            (Some(ip), Some(ix)) => Some(csc_from_py(n, n, ip, ix, "p")?),
            (None, None) => None,
            _ => {
                return Err(value_error(
                    "`p_indptr` and `p_indices` must both be given or both be None",
                ))
            }
        };
        let a = csc_from_py(m, n, a_indptr, a_indices, "a")?;
        Ok(Problem {
            parsed: Parsed {
                n,
                m,
                p,
                a,
                dims,
                h_lens,
            },
            st: OnceLock::new(),
            pat: OnceLock::new(),
            snap: OnceLock::new(),
            fwd: ForwardWorkspaces::new(),
            adj: AdjointWorkspaces::new(),
            fwd_pace: Pace::default(),
            adj_pace: Pace::default(),
        })
    }

    /// The structure (layout, data maps), built on first use.
    fn structure(&self) -> PyResult<&ConicStructure> {
        if let Some(st) = self.st.get() {
            return Ok(st);
        }
        let p = &self.parsed;
        let st = ConicStructure::new(p.n, p.m, p.p.clone(), p.a.clone(), p.dims.clone())
            .map_err(py_err)?;
        // Another thread may have built it meanwhile: either copy is the same.
        let _ = self.st.set(st);
        Ok(self.st.get().expect("set above"))
    }

    fn nnz_p(&self) -> usize {
        self.parsed.p.as_ref().map_or(0, |p| p.nnz())
    }

    fn nnz_a(&self) -> usize {
        self.parsed.a.nnz()
    }
}

/// The backend overrides of one call: `None` or a dict with any of `"kkt_backend"`
/// ("auto" | "dense" | "feral" | "condensed"), `"feral_scaling"` ("auto" | "infnorm" | "mc64" |
/// "identity"/"none"), `"feral_refine"` (bool), `"feral_min_par_flops"` (int),
/// `"block_condense"` (bool) (for comparisons; pounce_kkt/conic.py reads them from the
/// environment in one place).
fn backend_options(obj: Option<&Bound<'_, PyDict>>) -> PyResult<BackendOptions> {
    let mut o = BackendOptions::default();
    let Some(d) = obj else { return Ok(o) };
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        match key.as_str() {
            "kkt_backend" => {
                let s: String = v.extract()?;
                o.kkt_backend = match s.as_str() {
                    "auto" => KktBackend::Auto,
                    "dense" => KktBackend::Dense,
                    "feral" => KktBackend::Feral,
                    "condensed" => KktBackend::Condensed,
                    _ => {
                        return Err(value_error(format!(
                            "backend['kkt_backend'] must be 'auto', 'dense', 'feral' or 'condensed', got {s:?}"
                        )))
                    }
                }
            }
            "feral_scaling" => {
                let s: String = v.extract()?;
                o.feral_scaling = Some(parse_scaling_strategy(&s).ok_or_else(|| {
                    value_error(format!("backend['feral_scaling'] = {s:?} is not a scaling"))
                })?);
            }
            "feral_refine" => o.feral_refine = Some(v.extract()?),
            "feral_min_par_flops" => o.feral_min_par_flops = Some(v.extract()?),
            "block_condense" => o.block_condense = Some(v.extract()?),
            _ => return Err(value_error(format!("unknown backend option {key:?}"))),
        }
    }
    Ok(o)
}

/// Batch size from a batch-first 2-D array (`q` or `gx`), with a named error.
fn batch_size(arr: &Array<'_, f64>, name: &str, width: usize) -> PyResult<usize> {
    if arr.shape[1] != width {
        return Err(value_error(format!(
            "`{name}` has shape {:?}, expected (B, {width})",
            arr.shape
        )));
    }
    Ok(arr.shape[0])
}

/// The P values array: `(B, nnzP)` when P has a pattern, must be None otherwise.
fn p_values_unchecked<'py>(
    prob: &Problem,
    obj: Option<&Bound<'py, PyAny>>,
    batch: usize,
) -> PyResult<Option<Array<'py, f64>>> {
    match (&prob.parsed.p, obj) {
        (Some(p), Some(o)) => {
            let arr = f64_array_unchecked(o, "p_values", 2)?;
            expect_shape("p_values", &arr.shape, &[batch, p.nnz()])?;
            Ok(Some(arr))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err(value_error("`p_values` is None but a P pattern was given")),
        (None, Some(_)) => Err(value_error("`p_values` given without a P pattern")),
    }
}

// ------------------------------------------------------------------------------ forward

/// The value arrays of a forward batch, held by its job (validate.rs `Shared`).
struct SolveInputs {
    p: Option<Shared<f64>>,
    a: Shared<f64>,
    q: Shared<f64>,
    b: Shared<f64>,
    warm: Option<(Shared<f64>, Shared<f64>)>,
}

struct SolveJob {
    prob: Arc<Problem>,
    so: SolveOptions,
    backends: BackendOptions,
    bsz: usize,
    inputs: SolveInputs,
    ctl: RunControl,
}

struct SolveDone {
    xs: Vec<f64>,
    ys: Vec<f64>,
    ss: Vec<f64>,
    outs: Vec<ItemOut>,
    /// Handed back so that the array references are released with the GIL held.
    _inputs: SolveInputs,
}

impl SolveJob {
    fn run(self, cancel: &Cancel) -> SolveDone {
        let inp = &self.inputs;
        let batch = BatchInput {
            bsz: self.bsz,
            p: inp.p.as_deref(),
            a: &inp.a,
            q: &inp.q,
            b: &inp.b,
            warm: inp.warm.as_ref().map(|(x, y)| (&**x, &**y)),
        };
        let ctl = RunControl {
            cancel: cancel.clone(),
            ..self.ctl.clone()
        };
        let st = self.prob.st.get().expect("built before the job starts");
        let out = solve_batch(st, &self.so, &self.backends, &batch, &ctl, &self.prob.fwd);
        SolveDone {
            xs: out.xs,
            ys: out.ys,
            ss: out.ss,
            outs: out.outs,
            _inputs: self.inputs,
        }
    }
}

/// The forward of one call (see `ConicProblem.solve`); `started` is when the call began
/// (the time limit counts from it).
#[allow(clippy::too_many_arguments)]
fn solve<'py>(
    py: Python<'py>,
    prob: &Arc<Problem>,
    started: Instant,
    test_panic: TestPanic,
    p_values: Option<&Bound<'py, PyAny>>,
    a_values: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    tol: f64,
    max_iter: usize,
    time_limit: Option<f64>,
    warm: [Option<&Bound<'py, PyAny>>; 3],
    backend: Option<&Bound<'py, PyDict>>,
    engine: &str,
    stage: (Option<f64>, Option<usize>),
) -> PyResult<Bound<'py, PyDict>> {
    let (n, m) = (prob.parsed.n, prob.parsed.m);
    let engine = QpEngine::parse(engine).ok_or_else(|| {
        value_error(format!(
            "`engine` must be 'auto', 'ipm' or 'active_set', got {engine:?}"
        ))
    })?;
    if !(tol > 0.0 && tol.is_finite()) {
        return Err(value_error(format!(
            "`tol` must be positive and finite, got {tol}"
        )));
    }
    let stage = match stage {
        (None, None) => None,
        (Some(t), _) if !(t > 0.0 && t.is_finite()) => {
            return Err(value_error(format!(
                "`stage_tol` must be positive and finite, got {t}"
            )))
        }
        (_, Some(0)) => return Err(value_error("`stage_max_iter` must be >= 1")),
        (t, k) => Some(Stage {
            tol: t.unwrap_or(tol),
            max_iter: k.unwrap_or(max_iter),
        }),
    };
    let time_limit = match time_limit {
        None => None,
        Some(t) if t.is_nan() || t < 0.0 => {
            return Err(value_error(format!("`time_limit` must be >= 0, got {t}")))
        }
        Some(t) => Duration::try_from_secs_f64(t).ok(),
    };
    let backends = backend_options(backend)?;
    let q_arr = f64_array(q, "q", 2)?;
    let bsz = batch_size(&q_arr, "q", n)?;
    let b_arr = f64_array(b, "b", 2)?;
    expect_shape("b", &b_arr.shape, &[bsz, m])?;
    let a_arr = f64_array(a_values, "a_values", 2)?;
    expect_shape("a_values", &a_arr.shape, &[bsz, prob.nnz_a()])?;
    let p_arr = p_values_unchecked(prob, p_values, bsz)?;
    if let Some(a) = &p_arr {
        check_all_finite(a, "p_values")?;
    }
    let mut warm_arrs = Vec::new();
    for (obj, name, w) in [
        (warm[0], "warm_x", n),
        (warm[1], "warm_y", m),
        (warm[2], "warm_s", m),
    ] {
        let arr = obj.map(|o| f64_array(o, name, 2)).transpose()?;
        if let Some(a) = &arr {
            expect_shape(name, &a.shape, &[bsz, w])?;
        }
        warm_arrs.push(arr);
    }
    let warm = match (&warm_arrs[0], &warm_arrs[1]) {
        (Some(x), Some(y)) => Some((x.share(), y.share())),
        (None, None) => None,
        _ => return Err(value_error("a warm start needs both `warm_x` and `warm_y`")),
    };
    if bsz == 0 {
        return solve_result(py, bsz, n, m, Vec::new(), Vec::new(), Vec::new(), &[]);
    }
    prob.structure()?;
    let job = SolveJob {
        prob: prob.clone(),
        so: SolveOptions {
            tol,
            max_iter,
            time_limit,
            engine,
            stage,
        },
        backends,
        bsz,
        inputs: SolveInputs {
            p: p_arr.as_ref().map(|a| a.share()),
            a: a_arr.share(),
            q: q_arr.share(),
            b: b_arr.share(),
            warm,
        },
        ctl: RunControl {
            deadline: time_limit.and_then(|t| started.checked_add(t)),
            cancel: Cancel::default(),
            test_panic,
        },
    };
    let out = interrupt::run(
        py,
        "ConicProblem.solve",
        &prob.fwd_pace,
        bsz,
        move |cancel| job.run(cancel),
    )?;
    solve_result(py, bsz, n, m, out.xs, out.ys, out.ss, &out.outs)
}

#[allow(clippy::too_many_arguments)]
fn solve_result<'py>(
    py: Python<'py>,
    bsz: usize,
    n: usize,
    m: usize,
    xs: Vec<f64>,
    ys: Vec<f64>,
    ss: Vec<f64>,
    outs: &[ItemOut],
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("x", PyArray1::from_vec(py, xs).reshape([bsz, n])?)?;
    out.set_item("y", PyArray1::from_vec(py, ys).reshape([bsz, m])?)?;
    out.set_item("s", PyArray1::from_vec(py, ss).reshape([bsz, m])?)?;
    out.set_item("status", outs.iter().map(|o| o.status).collect::<Vec<_>>())?;
    out.set_item(
        "iterations",
        PyArray1::from_vec(py, outs.iter().map(|o| o.iters as i64).collect()),
    )?;
    out.set_item(
        "solve_time",
        PyArray1::from_vec(py, outs.iter().map(|o| o.secs).collect()),
    )?;
    out.set_item("engine", outs.iter().map(|o| o.engine).collect::<Vec<_>>())?;
    Ok(out)
}

// ------------------------------------------------------------------------------ adjoint

/// The adjoint's H: given (`h_diag`, `h_blocks`), or the limit scaling at the snapped pair
/// of the given `s` and the call's `y`, computed here (cone_snap.rs).
enum HInput {
    Given {
        h_diag: Shared<f64>,
        h_blocks: Shared<f64>,
    },
    AtSnap {
        s: Shared<f64>,
    },
}

/// The arrays of an adjoint batch, held by its job (validate.rs `Shared`).
struct AdjointInputs {
    p: Option<Shared<f64>>,
    a: Shared<f64>,
    h: HInput,
    x: Shared<f64>,
    y: Shared<f64>,
    gx: Shared<f64>,
    gy: Shared<f64>,
    gs: Shared<f64>,
}

/// One adjoint or Newton-steps call's job: the handle, the backends, the batch's size and
/// ok items, the panic hook and its inputs `I` (the arrays it holds).
struct Job<I> {
    prob: Arc<Problem>,
    backends: BackendOptions,
    bsz: usize,
    ok: Vec<bool>,
    test_panic: TestPanic,
    inputs: I,
}

/// A job's result `T`, and its inputs, handed back so that the array references are
/// released with the GIL held.
struct Done<T, I> {
    out: T,
    _inputs: Option<I>,
}

impl Job<AdjointInputs> {
    fn run(self, cancel: &Cancel) -> Done<Grads, AdjointInputs> {
        let prob = &self.prob;
        let st = prob.st.get().expect("built before the job starts");
        let pat = prob.pat.get_or_init(|| KktPattern::new(st));
        let i = &self.inputs;
        let snapped;
        let (h_diag, h_blocks): (&[f64], &[f64]) = match &i.h {
            HInput::Given { h_diag, h_blocks } => (h_diag, h_blocks),
            HInput::AtSnap { s } => {
                let cones = prob.snap.get_or_init(|| SnapCones::new(&st.layout));
                snapped = batch_scalings(st, cones, s, &i.y, &self.ok);
                (&snapped.0, &snapped.1)
            }
        };
        // The forward's kept active-set factors (qp_sessions.rs), read while the adjoint
        // runs: an item whose forward answer came from one is solved with it.
        let grads = prob.fwd.sessions.peek(|states| {
            let kept: Vec<_> = states.iter().map(|s| s.factor()).collect();
            let inp = AdjointInput {
                bsz: self.bsz,
                p: i.p.as_deref(),
                a: &i.a,
                h_diag,
                h_blocks,
                x: &i.x,
                y: &i.y,
                gx: &i.gx,
                gy: &i.gy,
                gs: &i.gs,
                ok: &self.ok,
                kept: &kept,
            };
            adjoint_batch(
                st,
                pat,
                &self.backends,
                &inp,
                cancel,
                self.test_panic,
                &prob.adj,
            )
        });
        Done {
            out: grads,
            _inputs: Some(self.inputs),
        }
    }
}

/// The batch arrays of an adjoint or Newton-steps call: each named `(array, name, width)`
/// read as `(B, width)` float64 (B = `ok.len()`, the batch of the leading array already
/// read), every array's ok rows checked finite (the leading one's too), and the P values
/// (None without a P pattern) checked the same way. Returns the named arrays' shares in
/// order and P's array.
#[allow(clippy::type_complexity)]
fn batch_arrays<'a, 'py: 'a>(
    prob: &Problem,
    named: impl IntoIterator<Item = (&'a Bound<'py, PyAny>, &'a str, usize)>,
    lead: (&Array<'py, f64>, &str),
    p_values: Option<&Bound<'py, PyAny>>,
    ok: &[bool],
) -> PyResult<(Vec<Shared<f64>>, Option<Array<'py, f64>>)> {
    let bsz = ok.len();
    let mut arrs = Vec::new();
    for (obj, name, w) in named {
        let a = f64_array_unchecked(obj, name, 2)?;
        expect_shape(name, &a.shape, &[bsz, w])?;
        check_finite_rows(&a, name, ok)?;
        arrs.push(a.share());
    }
    check_finite_rows(lead.0, lead.1, ok)?;
    let p_arr = p_values_unchecked(prob, p_values, bsz)?;
    if let Some(a) = &p_arr {
        check_finite_rows(a, "p_values", ok)?;
    }
    Ok((arrs, p_arr))
}

fn check_finite_rows(arr: &Array<'_, f64>, name: &str, ok: &[bool]) -> PyResult<()> {
    let w = arr.shape[1];
    for (i, row) in arr.slice().chunks(w.max(1)).enumerate() {
        if ok[i] {
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(value_error(format!(
                    "`{name}` contains a non-finite value (NaN or Inf) at [{i}, {j}]"
                )));
            }
        }
    }
    Ok(())
}

fn parse_statuses_ok(obj: &Bound<'_, PyAny>, batch: usize) -> PyResult<Vec<bool>> {
    let v: Vec<bool> = if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, bool>>() {
        a.as_array().to_vec()
    } else {
        obj.extract().map_err(|_| {
            value_error("`statuses_ok` must be a 1-D bool numpy array or a list of bools")
        })?
    };
    if v.len() != batch {
        return Err(value_error(format!(
            "`statuses_ok` has length {}, expected B = {batch}",
            v.len()
        )));
    }
    Ok(v)
}

/// The adjoint of one call (see `ConicProblem.adjoint`).
#[allow(clippy::too_many_arguments)]
fn adjoint<'py>(
    py: Python<'py>,
    prob: &Arc<Problem>,
    test_panic: TestPanic,
    p_values: Option<&Bound<'py, PyAny>>,
    a_values: &Bound<'py, PyAny>,
    h: [Option<&Bound<'py, PyAny>>; 3],
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    gx: &Bound<'py, PyAny>,
    gy: &Bound<'py, PyAny>,
    gs: &Bound<'py, PyAny>,
    statuses_ok: &Bound<'py, PyAny>,
    backend: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (n, m) = (prob.parsed.n, prob.parsed.m);
    let backends = backend_options(backend)?;
    let gx_a = f64_array_unchecked(gx, "gx", 2)?;
    let bsz = batch_size(&gx_a, "gx", n)?;
    let ok = parse_statuses_ok(statuses_ok, bsz)?;
    let (hdl, hbl) = prob.parsed.h_lens;
    // H given, or (h_diag = h_blocks = None) computed at the snapped pairs of s and y.
    let h_named: Vec<(&Bound<'py, PyAny>, &str, usize)> = match h {
        [Some(hd), Some(hb), None] => vec![(hd, "h_diag", hdl), (hb, "h_blocks", hbl)],
        [None, None, Some(s)] => vec![(s, "s", m)],
        _ => {
            return Err(value_error(
                "pass either `h_diag` and `h_blocks`, or `s` with h_diag = h_blocks = None",
            ))
        }
    };
    let named = h_named.into_iter().chain([
        (x, "x", n),
        (y, "y", m),
        (gy, "gy", m),
        (gs, "gs", m),
        (a_values, "a_values", prob.nnz_a()),
    ]);
    let (arrs, p_arr) = batch_arrays(prob, named, (&gx_a, "gx"), p_values, &ok)?;
    let dims = (prob.nnz_p(), n, prob.nnz_a(), m);
    let has_p = prob.parsed.p.is_some();
    if bsz == 0 {
        return adjoint_result(py, has_p, bsz, dims, Grads::default());
    }
    prob.structure()?;
    let mut arrs = arrs.into_iter();
    let mut next = || arrs.next().expect("one array per name");
    let h_in = if h[0].is_some() {
        HInput::Given {
            h_diag: next(),
            h_blocks: next(),
        }
    } else {
        HInput::AtSnap { s: next() }
    };
    let (xs, ys, gys, gss, avs) = (next(), next(), next(), next(), next());
    let job = Job {
        prob: prob.clone(),
        backends,
        bsz,
        ok,
        test_panic,
        inputs: AdjointInputs {
            p: p_arr.as_ref().map(|a| a.share()),
            a: avs,
            h: h_in,
            x: xs,
            y: ys,
            gx: gx_a.share(),
            gy: gys,
            gs: gss,
        },
    };
    let out = interrupt::run(
        py,
        "ConicProblem.adjoint",
        &prob.adj_pace,
        bsz,
        move |cancel| job.run(cancel),
    )?;
    adjoint_result(py, has_p, bsz, dims, out.out)
}

fn adjoint_result<'py>(
    py: Python<'py>,
    has_p: bool,
    bsz: usize,
    (nnz_p, n, nnz_a, m): (usize, usize, usize, usize),
    g: Grads,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    if has_p {
        out.set_item("dP", PyArray1::from_vec(py, g.dp).reshape([bsz, nnz_p])?)?;
    } else {
        out.set_item("dP", py.None())?;
    }
    out.set_item("dq", PyArray1::from_vec(py, g.dq).reshape([bsz, n])?)?;
    out.set_item("dA", PyArray1::from_vec(py, g.da).reshape([bsz, nnz_a])?)?;
    out.set_item("db", PyArray1::from_vec(py, g.db).reshape([bsz, m])?)?;
    // Which items got a gradient (False: not ok, or K could not be factored).
    out.set_item("solved", g.solved)?;
    Ok(out)
}

// ------------------------------------------------------------------------ Newton steps

/// The arrays and settings of a Newton-steps batch, held by its job.
struct NewtonInputs {
    p: Option<Shared<f64>>,
    a: Shared<f64>,
    q: Shared<f64>,
    b: Shared<f64>,
    x: Shared<f64>,
    y: Shared<f64>,
    s: Shared<f64>,
    settings: NewtonSettings,
}

impl Job<NewtonInputs> {
    fn run(self, cancel: &Cancel) -> Done<NewtonOut, NewtonInputs> {
        let prob = &self.prob;
        let st = prob.st.get().expect("built before the job starts");
        let pat = prob.pat.get_or_init(|| KktPattern::new(st));
        let cones = prob.snap.get_or_init(|| SnapCones::new(&st.layout));
        let i = &self.inputs;
        let inp = NewtonInput {
            bsz: self.bsz,
            p: i.p.as_deref(),
            a: &i.a,
            q: &i.q,
            b: &i.b,
            x: &i.x,
            y: &i.y,
            s: &i.s,
            ok: &self.ok,
        };
        let out = newton_batch(
            st,
            cones,
            pat,
            &self.backends,
            &inp,
            &i.settings,
            cancel,
            self.test_panic,
            &prob.adj,
        );
        Done {
            out,
            _inputs: Some(self.inputs),
        }
    }
}

/// The Newton steps of one call (see `ConicProblem.newton_steps`).
#[allow(clippy::too_many_arguments)]
fn newton_steps<'py>(
    py: Python<'py>,
    prob: &Arc<Problem>,
    test_panic: TestPanic,
    p_values: Option<&Bound<'py, PyAny>>,
    a_values: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    s: &Bound<'py, PyAny>,
    statuses_ok: &Bound<'py, PyAny>,
    settings: NewtonSettings,
    backend: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let (n, m) = (prob.parsed.n, prob.parsed.m);
    let backends = backend_options(backend)?;
    let q_a = f64_array_unchecked(q, "q", 2)?;
    let bsz = batch_size(&q_a, "q", n)?;
    let ok = parse_statuses_ok(statuses_ok, bsz)?;
    let named = [
        (b, "b", m),
        (x, "x", n),
        (y, "y", m),
        (s, "s", m),
        (a_values, "a_values", prob.nnz_a()),
    ];
    let (arrs, p_arr) = batch_arrays(prob, named, (&q_a, "q"), p_values, &ok)?;
    let out = if bsz == 0 {
        NewtonOut::default()
    } else {
        prob.structure()?;
        let [bs, xs, ys, ss, avs] =
            <[Shared<f64>; 5]>::try_from(arrs).unwrap_or_else(|_| unreachable!("five arrays"));
        let job = Job {
            prob: prob.clone(),
            backends,
            bsz,
            ok,
            test_panic,
            inputs: NewtonInputs {
                p: p_arr.as_ref().map(|a| a.share()),
                a: avs,
                q: q_a.share(),
                b: bs,
                x: xs,
                y: ys,
                s: ss,
                settings,
            },
        };
        interrupt::run(
            py,
            "ConicProblem.newton_steps",
            &prob.adj_pace,
            bsz,
            move |cancel| job.run(cancel),
        )?
        .out
    };
    let d = PyDict::new(py);
    d.set_item("x", PyArray1::from_vec(py, out.x).reshape([bsz, n])?)?;
    d.set_item("y", PyArray1::from_vec(py, out.y).reshape([bsz, m])?)?;
    d.set_item("s", PyArray1::from_vec(py, out.s).reshape([bsz, m])?)?;
    d.set_item("before", PyArray1::from_vec(py, out.before))?;
    d.set_item("after", PyArray1::from_vec(py, out.after))?;
    d.set_item("steps", PyArray1::from_vec(py, out.steps))?;
    d.set_item("failed", PyArray1::from_vec(py, out.failed))?;
    Ok(d)
}

// ------------------------------------------------------------------------------ the class

/// A conic problem structure, built once: `ConicProblem(n, m, p_indptr, p_indices,
/// a_indptr, a_indices, cones)`.
///
/// Problem (SCS form): minimize 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K, dual y in K*,
/// with P_eff = (P + P')/2 from the values of P's FULL symmetric CSC pattern (`p_indptr =
/// p_indices = None`: no P). `a_indptr`, `a_indices`: A's (m x n) CSC pattern, int64,
/// 0-based, no duplicates. `cones`: the SCS dict `{"z", "l", "q", "s", "ep", "p"}` (counts
/// and sizes are ints: a float raises `TypeError`). Everything is checked here, once; the
/// methods take batch-first float64 C-contiguous value arrays on these patterns.
#[pyclass(name = "ConicProblem", module = "pounce_kkt._native", frozen)]
pub struct ConicProblem {
    inner: Arc<Problem>,
}

#[pymethods]
impl ConicProblem {
    #[new]
    #[pyo3(signature = (n, m, p_indptr, p_indices, a_indptr, a_indices, cones))]
    fn new(
        n: usize,
        m: usize,
        p_indptr: Option<Bound<'_, PyAny>>,
        p_indices: Option<Bound<'_, PyAny>>,
        a_indptr: Bound<'_, PyAny>,
        a_indices: Bound<'_, PyAny>,
        cones: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        guard("ConicProblem", || {
            test_panic_from_env().at_call("ConicProblem");
            let p = Problem::from_py(
                n,
                m,
                p_indptr.as_ref(),
                p_indices.as_ref(),
                &a_indptr,
                &a_indices,
                &cones,
            )?;
            Ok(ConicProblem { inner: Arc::new(p) })
        })
    }

    #[getter]
    fn n(&self) -> usize {
        self.inner.parsed.n
    }

    #[getter]
    fn m(&self) -> usize {
        self.inner.parsed.m
    }

    /// Length of `h_diag` per item (zero and nonneg rows).
    #[getter]
    fn h_diag_len(&self) -> usize {
        self.inner.parsed.h_lens.0
    }

    /// Length of `h_blocks` per item (sum of d_k^2 over the SOC, PSD, exp, power cones).
    #[getter]
    fn h_blocks_len(&self) -> usize {
        self.inner.parsed.h_lens.1
    }

    /// Solve a batch: `p_values (B, nnzP)` or None (no P pattern), `a_values (B, nnzA)`,
    /// `q (B, n)`, `b (B, m)`, all float64 C-contiguous.
    ///
    /// Options: `tol`, `max_iter`, `time_limit` (seconds for the WHOLE call, None = none:
    /// one deadline for the batch; an item started before it stops at it, within about one
    /// IPM iteration plus `min(time_limit / 20, 0.25 s)`, with status "time_limit" unless
    /// it finished; an item not started before it is not solved and gets "time_limit" with
    /// 0 iterations). Optional warm start `warm_x (B, n)`, `warm_y (B, m)`; `warm_s (B, m)`
    /// is accepted for API symmetry and only validated (POUNCE re-derives the slack from
    /// `x` and recentres it). `backend`: None or a dict of backend overrides
    /// (`kkt_backend`, `feral_scaling`, `feral_refine`, `feral_min_par_flops`; for
    /// comparisons and tests).
    ///
    /// Returns `{"x" (B, n), "y" (B, m), "s" (B, m), "status" list[str], "iterations"
    /// (B,), "solve_time" (B,) seconds, "engine" list[str]}` with `y` in K* and
    /// `s = b - A x` (0 on zero rows); `engine` names what produced each item's answer:
    /// "ipm", "active_set_kept" (the item's previous active rows on this handle, kept: one
    /// KKT solve), "active_set_warm" (its active-set session, warm from its previous
    /// solve), "active_set" (the session, cold), "none" (not solved).
    ///
    /// Engines (the core's options.rs): zero + nonneg problems run a direct IPM on a KKT
    /// factorization whose symbolic analysis each worker keeps across items and calls, and
    /// fall back to POUNCE's homogeneous self-dual embedding for any item that does not end
    /// optimal (so infeasible / unbounded items are certified by the latter); conic
    /// problems run the embedding directly. `engine` ("auto" | "ipm" | "active_set")
    /// chooses for zero + nonneg problems: "active_set" starts every item from its previous
    /// answer on this handle (its active rows kept when that answer is still optimal, else
    /// POUNCE's parametric active-set engine through one session per item index, warm from
    /// that item's previous solve) and hands any item it does not finish optimal within
    /// `tol` to the IPM above; "auto" does so only for an item whose values moved by at most
    /// 2% (of their largest magnitude) since its previous solve on this handle, with
    /// n + m <= 400, and runs a session only when it is warm; "ipm" never. `iterations`
    /// counts every IPM and active-set iteration an item spent, over all legs. The adjoint
    /// of an item answered by its kept active rows reuses that solve's factor. An item whose `P_eff` is not positive semidefinite (to within
    /// `1e-9 * max|P_eff|`, the core's convexity.rs) is not solved and gets "nonconvex".
    ///
    /// The batch runs on the module's fork-safe pool with the GIL released; each item is
    /// solved single-threaded (feral's serial backend), so no OS threads are created per
    /// solve. Ctrl-C raises `KeyboardInterrupt` within about 0.2 s (interrupt.rs), except
    /// that a batch of one item, when this handle's last solve took at most 20 ms per item,
    /// runs on the calling thread (GIL released) and raises it when the item ends. A Rust
    /// panic in an item fails that item ("numerical_failure"); anywhere else it raises
    /// `RuntimeError`. Statuses: optimal, optimal_inaccurate, primal_infeasible,
    /// dual_infeasible, iteration_limit, time_limit, numerical_failure, nonconvex.
    ///
    /// `stage_tol` / `stage_max_iter` (either given: a stage; the other defaults to `tol` /
    /// `max_iter`): problems with a SOC, PSD, exp or power cone get one IPM solve at the
    /// looser of `stage_tol` and `tol`, at most `stage_max_iter` iterations, and nothing
    /// after it (no second solve, no certificate search): status "optimal" only when the
    /// point meets `tol`, "optimal_inaccurate" for a usable point short of it, else the
    /// IPM's status (the core's options.rs `Stage`). For a caller that finishes the point
    /// itself (pounce_kkt/staged_newton.py); zero + nonneg problems ignore it.
    #[pyo3(signature = (p_values, a_values, q, b, tol=1e-8, max_iter=200, time_limit=None,
                        warm_x=None, warm_y=None, warm_s=None, backend=None, engine="auto",
                        stage_tol=None, stage_max_iter=None))]
    #[allow(clippy::too_many_arguments)]
    fn solve<'py>(
        &self,
        py: Python<'py>,
        p_values: Option<Bound<'py, PyAny>>,
        a_values: Bound<'py, PyAny>,
        q: Bound<'py, PyAny>,
        b: Bound<'py, PyAny>,
        tol: f64,
        max_iter: usize,
        time_limit: Option<f64>,
        warm_x: Option<Bound<'py, PyAny>>,
        warm_y: Option<Bound<'py, PyAny>>,
        warm_s: Option<Bound<'py, PyAny>>,
        backend: Option<Bound<'py, PyDict>>,
        engine: &str,
        stage_tol: Option<f64>,
        stage_max_iter: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let started = Instant::now();
        guard("ConicProblem.solve", || {
            let test_panic = test_panic_from_env();
            test_panic.at_call("ConicProblem.solve");
            solve(
                py,
                &self.inner,
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
                engine,
                (stage_tol, stage_max_iter),
            )
        })
    }

    /// The KKT adjoint of a batch: `p_values (B, nnzP)` or None, `a_values (B, nnzA)`,
    /// `h_diag (B, h_diag_len)`, `h_blocks (B, h_blocks_len)` (each SOC, PSD, exp and power
    /// block dense row-major in cone order), `x (B, n)`, `y (B, m)`, upstream `gx (B, n)`,
    /// `gy (B, m)`, `gs (B, m)`, `statuses_ok (B,)` bool. Items whose `statuses_ok` is
    /// False get zero gradients, and only ok rows must be finite.
    ///
    /// For upstream `(gx, gy, gs)` it solves `K [u; v] = [gx; gy - H gs]` with
    /// `K = [[P_eff, A'], [A, -H]]`, then `dq = -u`, `db = v`, `dA[i, j] = -(y_i u_j + v_i
    /// x_j)` on A's pattern and `dP[i, j] = -(u_i x_j + u_j x_i)/2` on P's full pattern (the
    /// regularisation and the refinement: the core's kkt_adjoint.rs, docs/design.md).
    /// With `h_diag = h_blocks = None` and `s (B, m)` given, H is the limit scaling at the
    /// snapped pair `(Pi_K(w), Pi_K(w) - w)`, `w = s - y`, computed natively (the core's
    /// cone_snap.rs; pounce_kkt/active_set.py `limit_scaling` states it).
    /// Returns `{"dP" (B, nnzP) or None, "dq" (B, n), "dA" (B, nnzA), "db" (B, m), "solved"
    /// list[bool]}` (False: not ok, or K could not be factored). The batch runs on the
    /// fork-safe pool with the GIL released; Ctrl-C raises `KeyboardInterrupt` within about
    /// 0.2 s (a batch of one short item runs on the calling thread, as for `solve`); a Rust panic in an item leaves that item unsolved, anywhere else it raises
    /// `RuntimeError`. `backend`: as for `solve`.
    #[pyo3(signature = (p_values, a_values, h_diag, h_blocks, x, y, gx, gy, gs, statuses_ok,
                        backend=None, s=None))]
    #[allow(clippy::too_many_arguments)]
    fn adjoint<'py>(
        &self,
        py: Python<'py>,
        p_values: Option<Bound<'py, PyAny>>,
        a_values: Bound<'py, PyAny>,
        h_diag: Option<Bound<'py, PyAny>>,
        h_blocks: Option<Bound<'py, PyAny>>,
        x: Bound<'py, PyAny>,
        y: Bound<'py, PyAny>,
        gx: Bound<'py, PyAny>,
        gy: Bound<'py, PyAny>,
        gs: Bound<'py, PyAny>,
        statuses_ok: Bound<'py, PyAny>,
        backend: Option<Bound<'py, PyDict>>,
        s: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard("ConicProblem.adjoint", || {
            let test_panic = test_panic_from_env();
            test_panic.at_call("ConicProblem.adjoint");
            adjoint(
                py,
                &self.inner,
                test_panic,
                p_values.as_ref(),
                &a_values,
                [h_diag.as_ref(), h_blocks.as_ref(), s.as_ref()],
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

    /// Semismooth Newton steps on the conic optimality conditions from given points (the
    /// solution refinement of pounce_kkt/refine.py, whose docstring states the method and
    /// rules; the core's newton_steps.rs), each step's KKT solve the adjoint's: `p_values
    /// (B, nnzP)` or None, `a_values (B, nnzA)`, `q (B, n)`, `b (B, m)`, the given `x (B,
    /// n)`, `y (B, m)`, `s (B, m)`, `statuses_ok (B,)` bool (False: the item is returned as
    /// given), `target`, `floor`, `max_steps` (refine.py's). Returns `{"x", "y", "s"` (the best
    /// point of each item), `"before"`, `"after"` (its residual `res` before and after, NaN
    /// for items not ok), `"steps"` (B,) int64, `"failed"` (B,) bool (K could not be
    /// factored, or a panic: the item's point is as given)}. Runs like `adjoint` (pool, GIL
    /// released, Ctrl-C).
    #[pyo3(signature = (p_values, a_values, q, b, x, y, s, statuses_ok, target, floor,
                        max_steps, backend=None))]
    #[allow(clippy::too_many_arguments)]
    fn newton_steps<'py>(
        &self,
        py: Python<'py>,
        p_values: Option<Bound<'py, PyAny>>,
        a_values: Bound<'py, PyAny>,
        q: Bound<'py, PyAny>,
        b: Bound<'py, PyAny>,
        x: Bound<'py, PyAny>,
        y: Bound<'py, PyAny>,
        s: Bound<'py, PyAny>,
        statuses_ok: Bound<'py, PyAny>,
        target: f64,
        floor: f64,
        max_steps: usize,
        backend: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard("ConicProblem.newton_steps", || {
            let test_panic = test_panic_from_env();
            test_panic.at_call("ConicProblem.newton_steps");
            newton_steps(
                py,
                &self.inner,
                test_panic,
                p_values.as_ref(),
                &a_values,
                &q,
                &b,
                &x,
                &y,
                &s,
                &statuses_ok,
                NewtonSettings {
                    target,
                    floor,
                    max_steps,
                },
                backend.as_ref(),
            )
        })
    }

    fn __repr__(&self) -> String {
        let p = &self.inner.parsed;
        format!(
            "ConicProblem(n={}, m={}, nnz_a={}, nnz_p={})",
            p.n,
            p.m,
            p.a.nnz(),
            p.p.as_ref()
                .map_or("None".to_string(), |p| p.nnz().to_string())
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ConicProblem>()
}
