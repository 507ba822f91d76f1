//! Profile of the conic engine on exp-cone and SOCP batches (not shipped; measurements for
//! docs/exp-socp-profile.md).
//!
//! Reads a problem family dumped by benchmarks/exp_socp_dump.py (SCS form, B items sharing
//! one structure), maps every item to POUNCE exactly as batch.rs does (`DataMap::problem`)
//! and solves the items one after another on this thread, the way `Engine::solve_conic`
//! does (the staged exp/power solve included), under several variants. Every variant wraps
//! its linear solver in [`Timed`], which charges the time of the symbolic analysis, the
//! numeric factorizations and the back-solves, so the rest of an item's time is what
//! POUNCE spends outside the linear solver (cone scalings, step lengths, residuals).
//!
//!     cargo run --release --example exp_socp_profile -- FILE [reps] [variant,...]
//!
//! Variants: `staged` (the engine today: staged solve at 1e-3, then the caller's tol;
//! `staged:T` stages at tol T instead),
//! `direct` (one solve at the caller's tol), each with a backend suffix: `-feral`
//! (feral, POUNCE's defaults: adaptive scaling, refinement), `-fid` (feral, no scaling, no
//! refinement), `-finf` (feral, inf-norm scaling, no refinement), `-dense` (the dense LBL').
//! The default list is `staged-feral,direct-feral,staged-dense,direct-dense`. The
//! variants are interleaved per repetition; medians over repetitions are printed.
use pounce_convex::{solve_socp_ipm, ConeSpec, QpOptions, QpProblem, QpSolution, QpStatus};
use pounce_feral::ScalingStrategy;
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::dense_backend::DenseLbltBackend;
use pounce_layers_core::options::{
    backend, conic_backend, meets_tol, staged_nonsym_options, BackendOptions, SolveOptions,
};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::ConicStructure;
use pounce_linsol::{EMatrixFormat, ESymSolverStatus, SparseSymLinearSolverInterface};
use std::cell::RefCell;
use std::time::Instant;

type Index = i32;

/// Linear-solver time of the current thread, by phase.
#[derive(Default, Clone, Copy, Debug)]
struct LinTimes {
    instances: usize,
    symbolic: f64,
    factor: f64,
    factors: usize,
    solve: f64,
    solves: usize,
    dim: usize,
    nnz: usize,
}

thread_local! {
    static TIMES: RefCell<LinTimes> = RefCell::new(LinTimes::default());
    /// When each numeric factorization of the current solve started, and of which linear
    /// solver instance (1-based): one per IPM iteration on the driver's instance.
    static STAMPS: RefCell<Vec<(usize, Instant)>> = const { RefCell::new(Vec::new()) };
}

fn take_times() -> LinTimes {
    TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

/// A linear solver that charges its phases to [`TIMES`].
struct Timed(Box<dyn SparseSymLinearSolverInterface>);

impl SparseSymLinearSolverInterface for Timed {
    fn initialize_structure(
        &mut self,
        dim: Index,
        nonzeros: Index,
        ia: &[Index],
        ja: &[Index],
    ) -> ESymSolverStatus {
        let t = Instant::now();
        let r = self.0.initialize_structure(dim, nonzeros, ia, ja);
        TIMES.with(|s| {
            let mut s = s.borrow_mut();
            s.instances += 1;
            s.symbolic += t.elapsed().as_secs_f64();
            s.dim = s.dim.max(dim as usize);
            s.nnz = s.nnz.max(nonzeros as usize);
        });
        r
    }
    fn values_array_mut(&mut self) -> &mut [f64] {
        self.0.values_array_mut()
    }
    fn multi_solve(
        &mut self,
        new_matrix: bool,
        ia: &[Index],
        ja: &[Index],
        nrhs: Index,
        rhs_vals: &mut [f64],
        check_neg_evals: bool,
        number_of_neg_evals: Index,
    ) -> ESymSolverStatus {
        let t = Instant::now();
        if new_matrix {
            let inst = TIMES.with(|s| s.borrow().instances);
            STAMPS.with(|v| v.borrow_mut().push((inst, t)));
        }
        let r = self.0.multi_solve(
            new_matrix,
            ia,
            ja,
            nrhs,
            rhs_vals,
            check_neg_evals,
            number_of_neg_evals,
        );
        let dt = t.elapsed().as_secs_f64();
        TIMES.with(|s| {
            let mut s = s.borrow_mut();
            if new_matrix {
                s.factor += dt;
                s.factors += 1;
            } else {
                s.solve += dt;
            }
            s.solves += nrhs as usize;
        });
        r
    }
    fn number_of_neg_evals(&self) -> Index {
        self.0.number_of_neg_evals()
    }
    fn increase_quality(&mut self) -> bool {
        self.0.increase_quality()
    }
    fn provides_inertia(&self) -> bool {
        self.0.provides_inertia()
    }
    fn matrix_format(&self) -> EMatrixFormat {
        self.0.matrix_format()
    }
    fn singularity_certified(&self) -> bool {
        self.0.singularity_certified()
    }
    fn set_reused_scaling_zero_pivot_recheck(&mut self, on: bool) {
        self.0.set_reused_scaling_zero_pivot_recheck(on)
    }
    fn multi_solve_matches_single_solve(&self, nrhs: usize) -> bool {
        self.0.multi_solve_matches_single_solve(nrhs)
    }
}

/// One item's values: P (full pattern), A, q, b.
type ItemValues = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// One problem family: its structure and the B items' values.
struct Family {
    st: ConicStructure,
    items: Vec<ItemValues>,
}

fn nums<T: std::str::FromStr>(line: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    line.split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect()
}

fn read_family(path: &str) -> Family {
    let text = std::fs::read_to_string(path).expect("read the dump");
    let lines: Vec<&str> = text.split('\n').collect();
    let nm: Vec<usize> = nums(lines[0]);
    let (n, m) = (nm[0], nm[1]);
    let zle: Vec<usize> = nums(lines[1]);
    let dims = ConeDims {
        z: zle[0],
        l: zle[1],
        q: nums(lines[2]),
        s: Vec::new(),
        ep: zle[2],
        p: Vec::new(),
    };
    let p = (!lines[3].trim().is_empty()).then(|| {
        CscPattern::new(n, n, &nums::<i64>(lines[3]), &nums::<i64>(lines[4]), "p").unwrap()
    });
    let a = CscPattern::new(m, n, &nums::<i64>(lines[5]), &nums::<i64>(lines[6]), "a").unwrap();
    let bsz: usize = lines[7].trim().parse().unwrap();
    let items = (0..bsz)
        .map(|i| {
            let l = 8 + 4 * i;
            (
                nums(lines[l]),
                nums(lines[l + 1]),
                nums(lines[l + 2]),
                nums(lines[l + 3]),
            )
        })
        .collect();
    Family {
        st: ConicStructure::new(n, m, p, a, dims).unwrap(),
        items,
    }
}

fn problem(f: &Family, i: usize) -> QpProblem {
    let (pv, av, q, b) = &f.items[i];
    let p = f.st.p.as_ref().map(|_| pv.as_slice());
    let p_low = f.st.map.p_lower_values(p);
    f.st.map.problem(&f.st.layout, &p_low, av, q, b)
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Feral,
    FeralIdentity,
    FeralInf,
    Dense,
    DenseQd,
    Policy,
}

fn make(b: Backend) -> Box<dyn SparseSymLinearSolverInterface> {
    let bo = BackendOptions::default();
    let inner: Box<dyn SparseSymLinearSolverInterface> = match b {
        Backend::Feral => backend(&bo.feral_robust()),
        Backend::FeralIdentity => backend(&bo.feral_fast()),
        Backend::FeralInf => backend(
            &BackendOptions {
                feral_scaling: Some(ScalingStrategy::InfNorm),
                feral_refine: Some(false),
                ..bo
            }
            .feral_robust(),
        ),
        Backend::Dense => Box::new(DenseLbltBackend::new()),
        Backend::DenseQd => Box::new(DenseLbltBackend::quasi_definite_first()),
        Backend::Policy => conic_backend(&bo, &bo.feral_robust()),
    };
    Box::new(Timed(inner))
}

/// `Engine::solve_conic` without a warm start or deadline, on backend `b`; `staged` = the
/// staged exp/power solve.
fn solve(
    prob: &QpProblem,
    specs: &[ConeSpec],
    opts: &QpOptions,
    b: Backend,
    stage: Option<f64>,
) -> (QpSolution, usize) {
    let run = |o: &QpOptions| solve_socp_ipm(prob, specs, o, || make(b));
    let staged = stage.and_then(|t| {
        staged_nonsym_options(opts, specs).map(|o| QpOptions {
            tol: if t > 0.0 { t } else { o.tol },
            max_iter: std::env::var("STAGE_MAX_ITER").map_or(o.max_iter, |v| v.parse().unwrap()),
            ..o
        })
    });
    let Some(st) = staged else {
        return (run(opts), 1);
    };
    let first = run(&st);
    if meets_tol(prob, specs, &first, opts.tol) {
        return (first, 1);
    }
    let mut sol = run(opts);
    sol.iters += first.iters;
    (sol, 2)
}

struct Stat {
    secs: Vec<f64>,
    lin: Vec<LinTimes>,
    iters: usize,
    solves: usize,
    ok: usize,
    max_dx: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fam = read_family(&args[1]);
    let reps: usize = args.get(2).map_or(3, |s| s.parse().unwrap());
    let names: Vec<String> = args
        .get(3)
        .map_or("staged-feral,direct-feral,staged-dense,direct-dense", |s| {
            s.as_str()
        })
        .split(',')
        .map(String::from)
        .collect();
    let variants: Vec<(Option<f64>, Backend)> = names
        .iter()
        .map(|v| {
            let (s, b) = v.rsplit_once('-').expect("variant = staged|direct-backend");
            let b = match b {
                "feral" => Backend::Feral,
                "fid" => Backend::FeralIdentity,
                "finf" => Backend::FeralInf,
                "dense" => Backend::Dense,
                "dqd" => Backend::DenseQd,
                "policy" => Backend::Policy,
                _ => panic!("unknown backend {b}"),
            };
            // `staged` = NONSYM_STAGE_TOL; `staged:T` = a stage at tol T.
            let stage = match s.strip_prefix("staged") {
                None => None,
                Some("") => Some(0.0),
                Some(t) => Some(t.trim_start_matches(':').parse().unwrap()),
            };
            (stage, b)
        })
        .collect();
    let so = SolveOptions {
        tol: 1e-8,
        max_iter: 200,
        time_limit: None,
        engine: Default::default(),
        stage: None,
    };
    let opts = pounce_layers_core::options::robust_options(&so);
    let specs = &fam.st.layout.specs;
    let probs: Vec<QpProblem> = (0..fam.items.len()).map(|i| problem(&fam, i)).collect();
    let n_exp = specs
        .iter()
        .filter(|c| matches!(c, ConeSpec::Exponential))
        .count();
    let n_soc: Vec<usize> = specs
        .iter()
        .filter_map(|c| match c {
            ConeSpec::SecondOrder(k) => Some(*k),
            _ => None,
        })
        .collect();
    println!(
        "{}: n={} m={} B={} exp cones={} soc={:?} specs={}",
        args[1],
        fam.st.n(),
        fam.st.m(),
        probs.len(),
        n_exp,
        n_soc,
        specs.len()
    );
    if std::env::var("SHEAR").is_ok() {
        shear_experiment(&probs, specs, &opts);
        return;
    }
    if let Ok(tol) = std::env::var("ITER_PROFILE_TOL") {
        iter_profile(&probs, specs, &opts, tol.parse().unwrap());
        return;
    }
    // Reference x per item: the first variant's solution at rep 0.
    let mut refx: Vec<Vec<f64>> = Vec::new();
    let mut stats: Vec<Stat> = variants
        .iter()
        .map(|_| Stat {
            secs: Vec::new(),
            lin: Vec::new(),
            iters: 0,
            solves: 0,
            ok: 0,
            max_dx: 0.0,
        })
        .collect();
    for rep in 0..reps {
        for (k, &(stage, b)) in variants.iter().enumerate() {
            take_times();
            let t = Instant::now();
            let mut iters = 0;
            let mut solves = 0;
            let mut ok = 0;
            let mut max_dx: f64 = 0.0;
            for (i, p) in probs.iter().enumerate() {
                let (sol, ns) = solve(p, specs, &opts, b, stage);
                iters += sol.iters;
                solves += ns;
                ok +=
                    usize::from(meets_tol(p, specs, &sol, 1e-8) || sol.status == QpStatus::Optimal);
                if refx.len() <= i {
                    refx.push(sol.x.clone());
                }
                let dx = sol
                    .x
                    .iter()
                    .zip(&refx[i])
                    .fold(0.0_f64, |m, (a, r)| m.max((a - r).abs()));
                max_dx = max_dx.max(dx);
            }
            let secs = t.elapsed().as_secs_f64();
            let s = &mut stats[k];
            s.secs.push(secs);
            s.lin.push(take_times());
            if rep == 0 {
                (s.iters, s.solves, s.ok, s.max_dx) = (iters, solves, ok, max_dx);
            }
        }
    }
    let bsz = probs.len() as f64;
    println!(
        "{:<14} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>4} {:>8}",
        "variant",
        "ms/item",
        "iters",
        "solves",
        "us/iter",
        "symb%",
        "fact%",
        "back%",
        "other%",
        "dim",
        "nnz",
        "ok",
        "max|dx|"
    );
    for (name, s) in names.iter().zip(stats.iter_mut()) {
        let mut secs = s.secs.clone();
        let med = median(&mut secs);
        let j = s.secs.iter().position(|&v| v == med).unwrap();
        let l = s.lin[j];
        let pct = |v: f64| 100.0 * v / med;
        let other = med - l.symbolic - l.factor - l.solve;
        println!(
            "{:<14} {:>9.3} {:>7.2} {:>7.2} {:>9.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6} {:>6} {:>4} {:>8.1e}",
            name,
            1e3 * med / bsz,
            s.iters as f64 / bsz,
            s.solves as f64 / bsz,
            1e6 * med / s.iters as f64,
            pct(l.symbolic),
            pct(l.factor),
            pct(l.solve),
            pct(other),
            l.dim,
            l.nnz,
            s.ok,
            s.max_dx
        );
        println!(
            "{:<14} per item: {:.2} linear solvers, {:.1} factorizations, {:.1} rhs",
            "",
            l.instances as f64 / bsz,
            l.factors as f64 / bsz,
            l.solves as f64 / bsz
        );
    }
}

/// Per-iteration wall time of the direct solve at `tol` on feral, from the factorization
/// stamps of the IPM's linear solver (one refactor per iteration): the median over the
/// items of iteration k's time, for every k some item reaches.
fn iter_profile(probs: &[QpProblem], specs: &[ConeSpec], opts: &QpOptions, tol: f64) {
    let o = QpOptions { tol, ..*opts };
    let mut per_iter: Vec<Vec<f64>> = Vec::new();
    let mut tails: Vec<f64> = Vec::new();
    for p in probs {
        take_times();
        STAMPS.with(|v| v.borrow_mut().clear());
        let t0 = Instant::now();
        solve_socp_ipm(p, specs, &o, || make(Backend::Feral));
        let end = Instant::now();
        let stamps = STAMPS.with(|v| std::mem::take(&mut *v.borrow_mut()));
        let ipm: Vec<Instant> = stamps.iter().filter(|s| s.0 == 1).map(|s| s.1).collect();
        let polish_start = stamps.iter().find(|s| s.0 > 1).map_or(end, |s| s.1);
        for (k, w) in ipm.windows(2).enumerate() {
            if per_iter.len() <= k {
                per_iter.push(Vec::new());
            }
            per_iter[k].push((w[1] - w[0]).as_secs_f64());
        }
        if let Some(first) = ipm.first() {
            tails.push((first.duration_since(t0)).as_secs_f64());
        }
        let _ = polish_start;
    }
    println!(
        "tol {tol:e}: setup to first factorization {:.1} us (median)",
        1e6 * median(&mut tails)
    );
    for (k, v) in per_iter.iter_mut().enumerate() {
        let cnt = v.len();
        println!(
            "iter {:>3}: {:>9.1} us (median of {cnt} items)",
            k + 1,
            1e6 * median(v)
        );
    }
}

/// `prob` with every exp cone's slack block (x, y, z) mapped by the cone automorphism
/// T_c (x, y, z) = (x + ln(c) y, y, c z), c per cone (h' = T h, G' = T G): the same
/// problem, with the slack's y and z balanced when c = y / z at the solution.
fn sheared(prob: &QpProblem, specs: &[ConeSpec], cs: &[f64]) -> QpProblem {
    let mut out = prob.clone();
    let mut off = 0;
    let mut k = 0;
    for c in specs {
        let d = match c {
            ConeSpec::Nonneg(d) | ConeSpec::SecondOrder(d) => *d,
            ConeSpec::Exponential => {
                let (lc, cz) = (cs[k].ln(), cs[k]);
                k += 1;
                out.h[off] += lc * prob.h[off + 1];
                out.h[off + 2] *= cz;
                for t in &prob.g {
                    if t.row == off + 1 {
                        out.g
                            .push(pounce_convex::Triplet::new(off, t.col, lc * t.val));
                    }
                }
                for t in out.g.iter_mut() {
                    if t.row == off + 2 {
                        t.val *= cz;
                    }
                }
                3
            }
            _ => panic!("cone not handled"),
        };
        off += d;
    }
    out
}

/// Each item solved staged on feral, then again after the exp-cone shear with c = y / z of
/// the first solve's slack: time per item of both, iterations, and |x| difference.
fn shear_experiment(probs: &[QpProblem], specs: &[ConeSpec], opts: &QpOptions) {
    let (mut t_plain, mut t_shear, mut it_plain, mut it_shear, mut dx) = (0.0, 0.0, 0, 0, 0.0_f64);
    // SHEAR=first: every item uses the c of item 0's solution (a batch-level choice).
    let first_only = std::env::var("SHEAR").is_ok_and(|v| v == "first");
    // SHEAR_STAGE=k: c from the slack of a k-iteration solve (its time charged to the
    // sheared solve) instead of the item's solution.
    let stage: Option<usize> = std::env::var("SHEAR_STAGE")
        .ok()
        .map(|v| v.parse().unwrap());
    let mut c_first: Option<Vec<f64>> = None;
    let (mut t_plain_cap, mut t_shear_cap, mut it_cap) = (0.0, 0.0, 0);
    for p in probs {
        let t = Instant::now();
        let (sol, _) = solve(p, specs, opts, Backend::Feral, Some(0.0));
        t_plain += t.elapsed().as_secs_f64();
        it_plain += sol.iters;
        let t = Instant::now();
        let from = match stage {
            Some(k) => {
                let o = QpOptions {
                    max_iter: k,
                    ..*opts
                };
                solve_socp_ipm(p, specs, &o, || make(Backend::Feral)).x
            }
            None => sol.x.clone(),
        };
        t_shear += t.elapsed().as_secs_f64();
        let mut sl = p.h.clone();
        let mut gx = vec![0.0; p.h.len()];
        p.g_mul(&from, &mut gx);
        for (a, b) in sl.iter_mut().zip(&gx) {
            *a -= b;
        }
        let mut cs = Vec::new();
        let mut off = 0;
        for c in specs {
            match c {
                ConeSpec::Exponential => {
                    cs.push((sl[off + 1] / sl[off + 2]).clamp(1e-8, 1e8));
                    off += 3;
                }
                ConeSpec::Nonneg(d) | ConeSpec::SecondOrder(d) => off += d,
                _ => {}
            }
        }
        if first_only {
            cs = c_first.get_or_insert(cs).clone();
        }
        let q = sheared(p, specs, &cs);
        // SHEAR_CAP=j: both solves stop after j iterations (a stage), timed from scratch.
        if let Ok(j) = std::env::var("SHEAR_CAP") {
            let o = QpOptions {
                max_iter: j.parse().unwrap(),
                ..*opts
            };
            let t = Instant::now();
            let a = solve_socp_ipm(p, specs, &o, || make(Backend::Feral));
            t_plain_cap += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let b = solve_socp_ipm(&q, specs, &o, || make(Backend::Feral));
            t_shear_cap += t.elapsed().as_secs_f64();
            it_cap += a.iters + b.iters;
        }
        let t = Instant::now();
        let (s2, _) = solve(&q, specs, opts, Backend::Feral, Some(0.0));
        t_shear += t.elapsed().as_secs_f64();
        it_shear += s2.iters;
        assert!(meets_tol(&q, specs, &s2, 1e-8) || s2.status == QpStatus::Optimal);
        dx = dx.max(
            s2.x.iter()
                .zip(&sol.x)
                .fold(0.0, |m, (a, b)| m.max((a - b).abs())),
        );
    }
    let b = probs.len() as f64;
    if it_cap > 0 {
        println!(
            "capped: plain {:.3} ms/item, sheared {:.3} ms/item (c's stage not included), {:.2} iters",
            1e3 * t_plain_cap / b,
            1e3 * t_shear_cap / b,
            it_cap as f64 / b / 2.0
        );
    }
    println!(
        "plain {:.3} ms/item {:.2} iters | sheared (c = y/z at the solution, or after SHEAR_STAGE iterations, timed) {:.3} ms/item {:.2} iters | max|dx| {:.1e}",
        1e3 * t_plain / b,
        it_plain as f64 / b,
        1e3 * t_shear / b,
        it_shear as f64 / b,
        dx
    );
}
