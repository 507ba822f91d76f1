//! Batched conic forward solves: one structure, many value sets, rayon across items.
use crate::certificates::{self, Certificate};
use crate::cone_layout::{dual_to_scs, slack_scs, warm_to_pounce, ProblemClass};
use crate::options::{
    backend, fast_qp_options, feral_config, feral_config_fast, kkt_backend, robust_options,
    SolveOptions,
};
use crate::structure::{batch_size, ConicStructure};
use crate::validate::{expect_shape, f64_array, value_error};
use numpy::{PyArray1, PyArrayMethods};
use pounce_convex::{
    solve_qp_ipm, solve_socp_ipm, solve_socp_ipm_warm, QpFactorization, QpOptions, QpProblem,
    QpSolution, QpStatus, QpWarmStart,
};
use pounce_feral::FeralConfig;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// The status names of the native API (docs/design.md).
pub fn status_name(s: QpStatus) -> &'static str {
    match s {
        QpStatus::Optimal => "optimal",
        QpStatus::OptimalInaccurate => "optimal_inaccurate",
        QpStatus::PrimalInfeasible => "primal_infeasible",
        QpStatus::DualInfeasible => "dual_infeasible",
        QpStatus::IterationLimit => "iteration_limit",
        QpStatus::TimeLimit => "time_limit",
        QpStatus::NumericalFailure => "numerical_failure",
    }
}

struct ItemOut {
    status: QpStatus,
    iters: usize,
    secs: f64,
}

/// The values of one item, borrowed from the batch arrays.
struct ItemData<'a> {
    p: Option<&'a [f64]>,
    a: &'a [f64],
    q: &'a [f64],
    b: &'a [f64],
    warm: Option<(&'a [f64], &'a [f64])>,
}

/// Everything an item solve needs that is shared by the batch.
struct Engine<'a> {
    st: &'a ConicStructure,
    so: SolveOptions,
    robust: QpOptions,
    fast: QpOptions,
    cfg: FeralConfig,
    cfg_fast: FeralConfig,
    /// The QP engine's KKT dimension and approximate lower-triangle nnz (`qp_kkt_size`).
    kkt_size: (usize, usize),
}

/// A rayon worker's reusable QP factorization (symbolic analysis kept across its items).
enum WorkerFactor {
    Untried,
    Failed,
    Ready(Box<QpFactorization>),
}

impl Engine<'_> {
    /// What is left of the per-item time limit after `spent`; `None` = no limit.
    fn remaining(&self, spent: Duration) -> Option<Duration> {
        self.so.time_limit.map(|t| t.saturating_sub(spent))
    }

    /// QP class: the fast reusable-factor direct IPM, then the robust HSDE solve for any item
    /// it does not finish `Optimal` (see options.rs).
    fn solve_qp(
        &self,
        prob: &QpProblem,
        warm: Option<&QpWarmStart>,
        wf: &mut WorkerFactor,
    ) -> QpSolution {
        let t0 = Instant::now();
        if matches!(wf, WorkerFactor::Untried) {
            *wf = match QpFactorization::build(prob, &self.fast, || {
                kkt_backend(self.kkt_size.0, self.kkt_size.1, &self.cfg_fast, true)
            }) {
                Some(f) => WorkerFactor::Ready(Box::new(f)),
                None => WorkerFactor::Failed,
            };
        }
        let mut spent_iters = 0;
        if let WorkerFactor::Ready(f) = wf {
            let sol = match warm {
                Some(w) => f.solve_warm(prob, w),
                None => f.solve(prob),
            };
            if sol.status == QpStatus::Optimal {
                return sol;
            }
            spent_iters = sol.iters;
        }
        let opts = QpOptions {
            time_limit: self.remaining(t0.elapsed()),
            ..self.robust
        };
        let mut sol = solve_qp_ipm(prob, &opts, || backend(&self.cfg));
        sol.iters += spent_iters;
        sol
    }

    /// Solve one item and write `(x, y, s)` in SCS convention.
    fn solve_item(
        &self,
        d: &ItemData<'_>,
        wf: &mut WorkerFactor,
        x: &mut [f64],
        y: &mut [f64],
        s: &mut [f64],
    ) -> ItemOut {
        let t0 = Instant::now();
        let st = self.st;
        let lay = &st.layout;
        let prob = st.map.problem(lay, d.p, d.a, d.q, d.b);
        let warm = d.warm.map(|(wx, wy)| warm_to_pounce(lay, wx, wy));
        let mk = || backend(&self.cfg);
        let sol = match (lay.class, &warm) {
            (ProblemClass::Qp, w) => self.solve_qp(&prob, w.as_ref(), wf),
            (ProblemClass::Conic, None) => solve_socp_ipm(&prob, &lay.specs, &self.robust, mk),
            (ProblemClass::Conic, Some(w)) => {
                solve_socp_ipm_warm(&prob, &lay.specs, w, &self.robust, mk)
            }
        };
        x.copy_from_slice(&sol.x);
        dual_to_scs(lay, &sol.y, &sol.z, y);
        slack_scs(lay, &st.a, d.a, d.b, x, s);
        let (mut status, mut iters) = (sol.status, sol.iters);
        if certificates::wanted(st, status) {
            let opts = QpOptions {
                time_limit: self.remaining(t0.elapsed()),
                ..self.robust
            };
            match certificates::find(st, d.p, d.a, d.q, d.b, &opts, mk) {
                Some(Certificate::PrimalInfeasible { y: cert, iters: k }) => {
                    (status, iters) = (QpStatus::PrimalInfeasible, iters + k);
                    y.copy_from_slice(&cert);
                }
                Some(Certificate::DualInfeasible { x: cert, iters: k }) => {
                    (status, iters) = (QpStatus::DualInfeasible, iters + k);
                    x.copy_from_slice(&cert);
                }
                None => {}
            }
        }
        certificates::normalize(st, status, d.a, d.q, d.b, x, y, s);
        ItemOut {
            status,
            iters,
            secs: t0.elapsed().as_secs_f64(),
        }
    }
}

/// The QP-class KKT `[[P + reg, A'], [A, -W]]`, for the backend choice: its dimension n + m
/// and about how many lower-triangle entries it holds (P's lower half, the x diagonal, A and
/// the (z, z) diagonal).
fn qp_kkt_size(st: &ConicStructure) -> (usize, usize) {
    let (n, m) = (st.n(), st.m());
    let p_lower = st.p.as_ref().map_or(0, |p| p.nnz().div_ceil(2));
    (n + m, p_lower + n + st.a.nnz() + m)
}

/// Solve a batch of conic programs sharing one sparsity structure.
///
/// Problem (SCS form): minimize 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K, with
/// P_eff = (P + P')/2 from the values of P's FULL symmetric CSC pattern. Cones `K` in SCS
/// order: `{"z", "l", "q", "s", "ep", "p"}` (see cone_layout.rs for the mapping to POUNCE).
///
/// Arrays: `p_values (B, nnzP)` or None with `p_indptr = p_indices = None`; `a_values
/// (B, nnzA)`, `q (B, n)`, `b (B, m)`, all float64 C-contiguous; int64 index arrays.
/// Options: `tol`, `max_iter`, `time_limit` (seconds, per item, None = none). Optional warm
/// start `warm_x (B, n)`, `warm_y (B, m)`; `warm_s (B, m)` is accepted for API symmetry and
/// only validated (POUNCE re-derives the slack from `x` and recentres it).
///
/// Returns `{"x" (B, n), "y" (B, m), "s" (B, m), "status" list[str], "iterations" (B,),
/// "solve_time" (B,) seconds}` with `y` in K* and `s = b - A x` (0 on zero rows).
///
/// Engines (options.rs): zero + nonneg problems run a direct IPM on a KKT factorization
/// whose symbolic analysis each worker reuses across its items, and fall back to POUNCE's
/// homogeneous self-dual embedding for any item that does not end optimal (so infeasible /
/// unbounded items are certified by the latter); conic problems run the embedding directly.
/// `iterations` counts every IPM iteration an item spent, over both legs.
///
/// The batch runs on rayon's global pool with the GIL released; each item is solved
/// single-threaded (feral's serial backend), so no OS threads are created per solve.
/// Statuses: optimal, optimal_inaccurate, primal_infeasible, dual_infeasible,
/// iteration_limit, time_limit, numerical_failure.
#[pyfunction]
#[pyo3(signature = (n, m, p_indptr, p_indices, p_values, a_indptr, a_indices, a_values, q, b,
                    cones, tol=1e-8, max_iter=200, time_limit=None, warm_x=None, warm_y=None,
                    warm_s=None))]
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
) -> PyResult<Bound<'py, PyDict>> {
    if !(tol > 0.0 && tol.is_finite()) {
        return Err(value_error(format!(
            "`tol` must be positive and finite, got {tol}"
        )));
    }
    let time_limit = match time_limit {
        None => None,
        Some(t) if t.is_nan() || t < 0.0 => {
            return Err(value_error(format!("`time_limit` must be >= 0, got {t}")))
        }
        Some(t) => Duration::try_from_secs_f64(t).ok(),
    };
    let st = ConicStructure::from_py(
        n,
        m,
        p_indptr.as_ref(),
        p_indices.as_ref(),
        &a_indptr,
        &a_indices,
        &cones,
    )?;
    let q_arr = f64_array(&q, "q", 2)?;
    let bsz = batch_size(&q_arr, "q", n)?;
    let b_arr = f64_array(&b, "b", 2)?;
    expect_shape("b", &b_arr.shape, &[bsz, m])?;
    let a_arr = f64_array(&a_values, "a_values", 2)?;
    expect_shape("a_values", &a_arr.shape, &[bsz, st.a.nnz()])?;
    let p_arr = st.p_values(p_values.as_ref(), bsz)?;
    let wx = warm_x
        .as_ref()
        .map(|o| f64_array(o, "warm_x", 2))
        .transpose()?;
    let wy = warm_y
        .as_ref()
        .map(|o| f64_array(o, "warm_y", 2))
        .transpose()?;
    let ws = warm_s
        .as_ref()
        .map(|o| f64_array(o, "warm_s", 2))
        .transpose()?;
    if let Some(a) = &wx {
        expect_shape("warm_x", &a.shape, &[bsz, n])?;
    }
    if let Some(a) = &wy {
        expect_shape("warm_y", &a.shape, &[bsz, m])?;
    }
    if let Some(a) = &ws {
        expect_shape("warm_s", &a.shape, &[bsz, m])?;
    }
    let warm = match (&wx, &wy) {
        (Some(x), Some(y)) => Some((x.slice(), y.slice())),
        (None, None) => None,
        _ => return Err(value_error("a warm start needs both `warm_x` and `warm_y`")),
    };

    let so = SolveOptions {
        tol,
        max_iter,
        time_limit,
    };
    let engine = Engine {
        st: &st,
        so,
        robust: robust_options(&so),
        fast: fast_qp_options(&so),
        cfg: feral_config(),
        cfg_fast: feral_config_fast(),
        kkt_size: qp_kkt_size(&st),
    };
    let (qs, bs, avs) = (q_arr.slice(), b_arr.slice(), a_arr.slice());
    let pvs = p_arr.as_ref().map(|a| a.slice());
    let nnz_a = st.a.nnz();
    let nnz_p = st.p.as_ref().map_or(0, |p| p.nnz());

    // Chunks are at least 1 wide so that n = 0 or m = 0 still yields B items.
    let (nw, mw) = (n.max(1), m.max(1));
    let mut xs = vec![0.0; bsz * nw];
    let mut ys = vec![0.0; bsz * mw];
    let mut ss = vec![0.0; bsz * mw];
    // Contiguous chunks of items, a few per pool thread: each chunk is solved in order by one
    // worker with one reusable QP factorization, whose symbolic analysis (~2x the cost of a
    // small solve) is then paid per chunk rather than per rayon split or per item.
    let chunks_per_thread = 2;
    let per = bsz
        .div_ceil(rayon::current_num_threads().max(1) * chunks_per_thread)
        .max(1);
    let outs: Vec<ItemOut> = py.detach(|| {
        xs.par_chunks_mut(per * nw)
            .zip(ys.par_chunks_mut(per * mw))
            .zip(ss.par_chunks_mut(per * mw))
            .enumerate()
            .flat_map_iter(|(c, ((xc, yc), sc))| {
                let mut wf = WorkerFactor::Untried;
                let count = xc.len() / nw;
                let mut outs = Vec::with_capacity(count);
                for j in 0..count {
                    let i = c * per + j;
                    let d = ItemData {
                        p: pvs.map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
                        a: &avs[i * nnz_a..(i + 1) * nnz_a],
                        q: &qs[i * n..(i + 1) * n],
                        b: &bs[i * m..(i + 1) * m],
                        warm: warm
                            .map(|(wx, wy)| (&wx[i * n..(i + 1) * n], &wy[i * m..(i + 1) * m])),
                    };
                    let (x, y, s) = (
                        &mut xc[j * nw..j * nw + n],
                        &mut yc[j * mw..j * mw + m],
                        &mut sc[j * mw..j * mw + m],
                    );
                    outs.push(engine.solve_item(&d, &mut wf, x, y, s));
                }
                outs
            })
            .collect()
    });
    xs.truncate(bsz * n);
    ys.truncate(bsz * m);
    ss.truncate(bsz * m);

    let out = PyDict::new(py);
    out.set_item("x", PyArray1::from_vec(py, xs).reshape([bsz, n])?)?;
    out.set_item("y", PyArray1::from_vec(py, ys).reshape([bsz, m])?)?;
    out.set_item("s", PyArray1::from_vec(py, ss).reshape([bsz, m])?)?;
    out.set_item(
        "status",
        outs.iter()
            .map(|o| status_name(o.status))
            .collect::<Vec<_>>(),
    )?;
    out.set_item(
        "iterations",
        PyArray1::from_vec(py, outs.iter().map(|o| o.iters as i64).collect()),
    )?;
    out.set_item(
        "solve_time",
        PyArray1::from_vec(py, outs.iter().map(|o| o.secs).collect()),
    )?;
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(conic_solve_batch, m)?)?;
    // lib.rs registers batch, kkt_adjoint and nlp; the layout introspection rides here.
    crate::cone_layout::register(m)?;
    Ok(())
}
