//! Batched conic forward solves: one structure, many value sets, rayon across items.
use crate::certificates::{self, Certificate};
use crate::cone_layout::{dual_to_scs, slack_scs, warm_to_pounce, ProblemClass};
use crate::convexity::PsdCheck;
use crate::interrupt::{self, Cancel};
use crate::options::{
    backend, fast_qp_options, feral_config, feral_config_fast, kkt_backend, meets_tol,
    robust_options, staged_nonsym_options, SolveOptions,
};
use crate::panic_guard::{catch, guard, TestPanic};
use crate::pool::threads;
use crate::structure::{batch_size, p_values as p_values_checked, ConicStructure};
use crate::validate::{expect_shape, f64_array, value_error, Shared};
use numpy::{PyArray1, PyArrayMethods};
use pounce_convex::{
    solve_qp_ipm, solve_socp_ipm, solve_socp_ipm_warm, ConeSpec, QpFactorization, QpOptions,
    QpProblem, QpSolution, QpStatus, QpWarmStart,
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

/// The status of an item whose `P_eff` is not positive semidefinite (convexity.rs); it is
/// not solved.
pub const NONCONVEX: &str = "nonconvex";

struct ItemOut {
    status: &'static str,
    iters: usize,
    secs: f64,
}

impl ItemOut {
    /// An item that was not solved (its outputs stay zero).
    fn skipped(status: &'static str) -> Self {
        ItemOut {
            status,
            iters: 0,
            secs: 0.0,
        }
    }
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
    robust: QpOptions,
    fast: QpOptions,
    cfg: FeralConfig,
    cfg_fast: FeralConfig,
    /// The QP engine's KKT dimension and approximate lower-triangle nnz (`qp_kkt_size`).
    kkt_size: (usize, usize),
    /// The end of the call's `time_limit` (one deadline for the whole batch).
    deadline: Option<Instant>,
    /// How far a worker's reusable factorization's own time limit may exceed what is left
    /// before the deadline (see `Engine::solve_qp`).
    slack: Duration,
}

/// A rayon worker's reusable QP factorization (symbolic analysis kept across its items).
enum WorkerFactor {
    Untried,
    Failed,
    /// With the time limit it was built with (`QpFactorization` keeps its options).
    Ready(Box<QpFactorization>, Option<Duration>),
}

/// What one worker keeps across the items of its chunk.
struct Worker {
    factor: WorkerFactor,
    psd: Option<PsdCheck>,
    /// How long the worker's last item took.
    last_item: Duration,
}

impl Worker {
    fn new(st: &ConicStructure) -> Self {
        Worker {
            factor: WorkerFactor::Untried,
            psd: st
                .p
                .as_ref()
                .map(|_| PsdCheck::new(st.n(), st.map.p_slots())),
            last_item: Duration::ZERO,
        }
    }
}

impl Engine<'_> {
    /// Time left before the batch's deadline; `None` = no limit.
    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn expired(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// QP class: the fast reusable-factor direct IPM, then the robust HSDE solve for any item
    /// it does not finish `Optimal` (see options.rs).
    ///
    /// Under a time limit, the reusable factorization carries the time left when it was
    /// built (pounce-convex fixes a `QpFactorization`'s options at build). An item can
    /// overshoot the batch deadline by no more than its own length, nor by more than that
    /// stale limit exceeds what is left; so the factorization is rebuilt (a symbolic
    /// analysis) only when both exceed `slack`, i.e. for items long enough to matter: an
    /// item then overshoots by at most about `slack` plus one IPM iteration.
    fn solve_qp(
        &self,
        prob: &QpProblem,
        warm: Option<&QpWarmStart>,
        wk: &mut Worker,
    ) -> QpSolution {
        let left = self.remaining();
        if let (WorkerFactor::Ready(_, built), Some(left)) = (&wk.factor, left) {
            if wk.last_item > self.slack && built.is_none_or(|b| b > left + self.slack) {
                wk.factor = WorkerFactor::Untried;
            }
        }
        if matches!(wk.factor, WorkerFactor::Untried) {
            let fast = QpOptions {
                time_limit: left,
                ..self.fast
            };
            wk.factor = match QpFactorization::build(prob, &fast, || {
                kkt_backend(self.kkt_size.0, self.kkt_size.1, &self.cfg_fast, true)
            }) {
                Some(f) => WorkerFactor::Ready(Box::new(f), left),
                None => WorkerFactor::Failed,
            };
            // The build (symbolic analysis and a first factorization) cannot be interrupted;
            // past the deadline nothing more is started.
            if self.expired() {
                return not_started(prob);
            }
        }
        let mut spent_iters = 0;
        if let WorkerFactor::Ready(f, _) = &mut wk.factor {
            let sol = match warm {
                Some(w) => f.solve_warm(prob, w),
                None => f.solve(prob),
            };
            // Past the deadline the robust engine would only spend its setup (equilibration,
            // a first factorization) before it stops.
            if sol.status == QpStatus::Optimal || self.expired() {
                return sol;
            }
            spent_iters = sol.iters;
        }
        let opts = QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        };
        let mut sol = solve_qp_ipm(prob, &opts, || backend(&self.cfg));
        sol.iters += spent_iters;
        sol
    }

    /// Conic class: `solve_socp_ipm` (`_warm` with a warm start) with POUNCE's defaults at
    /// the caller's tol. With exp or power cones, first the staged solve at
    /// `NONSYM_STAGE_TOL`, kept when it meets the caller's tol on its own residuals
    /// (options.rs, "Exp / power cones"); otherwise the solve at the caller's tol, its
    /// iterations added to the staged ones. When the deadline leaves no time for that
    /// solve, the staged point is returned, as `optimal_inaccurate` if it was `Optimal`.
    fn solve_conic(
        &self,
        prob: &QpProblem,
        specs: &[ConeSpec],
        warm: Option<&QpWarmStart>,
    ) -> QpSolution {
        let solve = |opts: &QpOptions| {
            let mk = || backend(&self.cfg);
            match warm {
                None => solve_socp_ipm(prob, specs, opts, mk),
                Some(w) => solve_socp_ipm_warm(prob, specs, w, opts, mk),
            }
        };
        let robust = QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        };
        let Some(staged) = staged_nonsym_options(&robust, specs) else {
            return solve(&robust);
        };
        let first = solve(&staged);
        if meets_tol(prob, specs, &first, robust.tol) {
            return first;
        }
        if self.expired() {
            let status = match first.status {
                QpStatus::Optimal => QpStatus::OptimalInaccurate,
                s => s,
            };
            return QpSolution { status, ..first };
        }
        let mut sol = solve(&QpOptions {
            time_limit: self.remaining(),
            ..self.robust
        });
        sol.iters += first.iters;
        sol
    }

    /// Solve one item and write `(x, y, s)` in SCS convention.
    fn solve_item(
        &self,
        d: &ItemData<'_>,
        wk: &mut Worker,
        x: &mut [f64],
        y: &mut [f64],
        s: &mut [f64],
    ) -> ItemOut {
        let t0 = Instant::now();
        let st = self.st;
        let lay = &st.layout;
        let p_low = st.map.p_lower_values(d.p);
        if let Some(chk) = wk.psd.as_mut() {
            if !chk.is_psd(&p_low) {
                return ItemOut {
                    secs: t0.elapsed().as_secs_f64(),
                    ..ItemOut::skipped(NONCONVEX)
                };
            }
        }
        let prob = st.map.problem(lay, &p_low, d.a, d.q, d.b);
        if self.expired() {
            return ItemOut {
                secs: t0.elapsed().as_secs_f64(),
                ..ItemOut::skipped(status_name(QpStatus::TimeLimit))
            };
        }
        let warm = d.warm.map(|(wx, wy)| warm_to_pounce(lay, wx, wy));
        let mk = || backend(&self.cfg);
        let sol = match lay.class {
            ProblemClass::Qp => self.solve_qp(&prob, warm.as_ref(), wk),
            ProblemClass::Conic => self.solve_conic(&prob, &lay.specs, warm.as_ref()),
        };
        x.copy_from_slice(&sol.x);
        dual_to_scs(lay, &sol.y, &sol.z, y);
        slack_scs(lay, &st.a, d.a, d.b, x, s);
        let (mut status, mut iters) = (sol.status, sol.iters);
        if certificates::wanted(st, status) {
            let opts = QpOptions {
                time_limit: self.remaining(),
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
            status: status_name(status),
            iters,
            secs: t0.elapsed().as_secs_f64(),
        }
    }
}

/// The solution of an item the deadline stopped before its first iteration.
fn not_started(prob: &QpProblem) -> QpSolution {
    QpSolution {
        status: QpStatus::TimeLimit,
        x: vec![0.0; prob.n],
        y: vec![0.0; prob.b.len()],
        z: vec![0.0; prob.h.len()],
        z_lb: Vec::new(),
        z_ub: Vec::new(),
        obj: 0.0,
        iters: 0,
        iterates: Vec::new(),
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

/// The value arrays of a batch, held by its job (validate.rs `Shared`).
struct Inputs {
    p: Option<Shared<f64>>,
    a: Shared<f64>,
    q: Shared<f64>,
    b: Shared<f64>,
    warm: Option<(Shared<f64>, Shared<f64>)>,
}

/// One call's batch, owned by its job on the pool (interrupt.rs).
struct Batch {
    st: ConicStructure,
    so: SolveOptions,
    bsz: usize,
    inputs: Inputs,
    deadline: Option<Instant>,
    test_panic: TestPanic,
}

struct BatchOut {
    xs: Vec<f64>,
    ys: Vec<f64>,
    ss: Vec<f64>,
    outs: Vec<ItemOut>,
    /// Handed back so that the array references are released with the GIL held.
    _inputs: Inputs,
}

impl Batch {
    fn run(self, cancel: &Cancel) -> BatchOut {
        let Batch {
            st,
            so,
            bsz,
            inputs,
            deadline,
            test_panic,
        } = self;
        let (n, m) = (st.n(), st.m());
        let slack = so.time_limit.map_or(Duration::ZERO, |t| {
            (t / 20).clamp(Duration::from_millis(1), Duration::from_millis(250))
        });
        let engine = Engine {
            st: &st,
            robust: robust_options(&so),
            fast: fast_qp_options(&so),
            cfg: feral_config(),
            cfg_fast: feral_config_fast(),
            kkt_size: qp_kkt_size(&st),
            deadline,
            slack,
        };
        let (qs, bs, avs) = (&*inputs.q, &*inputs.b, &*inputs.a);
        let pvs = inputs.p.as_deref();
        let warm = inputs.warm.as_ref().map(|(x, y)| (&**x, &**y));
        let nnz_a = st.a.nnz();
        let nnz_p = st.p.as_ref().map_or(0, |p| p.nnz());

        // Chunks are at least 1 wide so that n = 0 or m = 0 still yields B items.
        let (nw, mw) = (n.max(1), m.max(1));
        let mut xs = vec![0.0; bsz * nw];
        let mut ys = vec![0.0; bsz * mw];
        let mut ss = vec![0.0; bsz * mw];
        // Contiguous chunks of items, a few per pool thread: each chunk is solved in order by
        // one worker with one reusable QP factorization, whose symbolic analysis (~2x the
        // cost of a small solve) is then paid per chunk rather than per rayon split or per
        // item.
        let chunks_per_thread = 2;
        let per = bsz.div_ceil(threads() * chunks_per_thread).max(1);
        let outs: Vec<ItemOut> = xs
            .par_chunks_mut(per * nw)
            .zip(ys.par_chunks_mut(per * mw))
            .zip(ss.par_chunks_mut(per * mw))
            .enumerate()
            .flat_map_iter(|(c, ((xc, yc), sc))| {
                let mut wk = Worker::new(&st);
                let count = xc.len() / nw;
                let mut outs = Vec::with_capacity(count);
                for j in 0..count {
                    if cancel.is_set() {
                        outs.push(ItemOut::skipped(status_name(QpStatus::NumericalFailure)));
                        continue;
                    }
                    if engine.expired() {
                        outs.push(ItemOut::skipped(status_name(QpStatus::TimeLimit)));
                        continue;
                    }
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
                    let t0 = Instant::now();
                    let solved = catch(|| {
                        test_panic.at_item(i);
                        engine.solve_item(&d, &mut wk, &mut *x, &mut *y, &mut *s)
                    });
                    match solved {
                        Ok(o) => {
                            wk.last_item = t0.elapsed();
                            outs.push(o)
                        }
                        Err(_) => {
                            // The panic message went to stderr (the panic hook); the item
                            // fails, its outputs are zeroed and the worker's state rebuilt.
                            wk = Worker::new(&st);
                            for v in x.iter_mut().chain(y.iter_mut()).chain(s.iter_mut()) {
                                *v = 0.0;
                            }
                            outs.push(ItemOut {
                                secs: t0.elapsed().as_secs_f64(),
                                ..ItemOut::skipped(status_name(QpStatus::NumericalFailure))
                            });
                        }
                    }
                }
                outs
            })
            .collect();
        xs.truncate(bsz * n);
        ys.truncate(bsz * m);
        ss.truncate(bsz * m);
        BatchOut {
            xs,
            ys,
            ss,
            outs,
            _inputs: inputs,
        }
    }
}

/// Solve a batch of conic programs sharing one sparsity structure.
///
/// Problem (SCS form): minimize 1/2 x'P_eff x + q'x s.t. A x + s = b, s in K, with
/// P_eff = (P + P')/2 from the values of P's FULL symmetric CSC pattern. Cones `K` in SCS
/// order: `{"z", "l", "q", "s", "ep", "p"}` (see cone_layout.rs for the mapping to POUNCE);
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
/// Engines (options.rs): zero + nonneg problems run a direct IPM on a KKT factorization
/// whose symbolic analysis each worker reuses across its items, and fall back to POUNCE's
/// homogeneous self-dual embedding for any item that does not end optimal (so infeasible /
/// unbounded items are certified by the latter); conic problems run the embedding directly.
/// `iterations` counts every IPM iteration an item spent, over both legs.
///
/// Convexity: an item whose `P_eff` is not positive semidefinite (to within
/// `1e-9 * max|P_eff|`, convexity.rs) is not solved and gets the status "nonconvex".
///
/// The batch runs on the module's own fork-safe rayon pool (pool.rs) with the GIL released;
/// each item is solved single-threaded (feral's serial backend), so no OS threads are
/// created per solve. Ctrl-C raises `KeyboardInterrupt` within about 0.2 s (interrupt.rs).
/// A Rust panic in an item fails that item ("numerical_failure"); anywhere else it raises
/// `RuntimeError`. Statuses: optimal, optimal_inaccurate, primal_infeasible,
/// dual_infeasible, iteration_limit, time_limit, numerical_failure, nonconvex.
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
    let started = Instant::now();
    guard("conic_solve_batch", || {
        let test_panic = TestPanic::from_env();
        test_panic.at_call("conic_solve_batch");
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
        let parsed = ConicStructure::parse(
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
        expect_shape("a_values", &a_arr.shape, &[bsz, parsed.a().nnz()])?;
        let p_arr = p_values_checked(parsed.p(), p_values.as_ref(), bsz)?;
        let mut warm_arrs = Vec::new();
        for (obj, name, w) in [
            (&warm_x, "warm_x", n),
            (&warm_y, "warm_y", m),
            (&warm_s, "warm_s", m),
        ] {
            let arr = obj.as_ref().map(|o| f64_array(o, name, 2)).transpose()?;
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
            // Nothing of size m is built for an empty batch (validate.rs `check_sizes`).
            return result(py, bsz, n, m, Vec::new(), Vec::new(), Vec::new(), &[]);
        }
        let batch = Batch {
            st: parsed.build()?,
            so: SolveOptions {
                tol,
                max_iter,
                time_limit,
            },
            bsz,
            inputs: Inputs {
                p: p_arr.as_ref().map(|a| a.share()),
                a: a_arr.share(),
                q: q_arr.share(),
                b: b_arr.share(),
                warm,
            },
            deadline: time_limit.and_then(|t| started.checked_add(t)),
            test_panic,
        };
        let out = interrupt::run(py, "conic_solve_batch", move |cancel| batch.run(cancel))?;
        result(py, bsz, n, m, out.xs, out.ys, out.ss, &out.outs)
    })
}

#[allow(clippy::too_many_arguments)]
fn result<'py>(
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
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(conic_solve_batch, m)?)?;
    // lib.rs registers batch, kkt_adjoint and nlp; the layout introspection rides here.
    crate::cone_layout::register(m)?;
    Ok(())
}
