//! The QP class's engines (options.rs `QpEngine`, qp_sessions.rs, kept_active_set.rs): the
//! active set agrees with the IPM, starts each item from its previous answer across calls
//! (its active rows kept, else its session warm), hands what it cannot solve to the IPM,
//! and `auto` takes it only for items that moved little.
mod common;

use common::{dense_qp, opts, rel_err, Rng};
use pounce_convex::{QpOptions, QpProblem, Triplet};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl, ENGINE_ACTIVE_SET,
    ENGINE_ACTIVE_SET_KEPT, ENGINE_ACTIVE_SET_STEPS, ENGINE_ACTIVE_SET_WARM, ENGINE_IPM,
};
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::dense_backend::DenseLbltBackend;
use pounce_layers_core::kept_active_set::{
    active_rows, solve_cold, solve_from, solve_on, solve_steps, KeptFactor,
};
use pounce_layers_core::kkt_adjoint::{adjoint_batch, AdjointInput, AdjointWorkspaces, KktPattern};
use pounce_layers_core::options::{BackendOptions, KktBackend, QpEngine, SolveOptions};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::qp_sessions::{ItemState, KEPT_BACKOFF_MAX_EXP};
use pounce_layers_core::schur_steps::SchurSteps;
use pounce_layers_core::structure::ConicStructure;

/// A dense `rows x cols` CSC pattern.
fn dense(rows: usize, cols: usize, name: &str) -> CscPattern {
    let ip: Vec<i64> = (0..=cols as i64).map(|c| c * rows as i64).collect();
    let ix: Vec<i64> = (0..cols).flat_map(|_| 0..rows as i64).collect();
    CscPattern::new(rows, cols, &ip, &ix, name).unwrap()
}

/// A batch of `bsz` QPs `min 1/2 x'Px + q'x s.t. A x + s = b, s in {0}^z x R+^l`, dense
/// P (positive definite, the same for every item) and A; `b = A x0 + u` with `u >= 0`
/// (`u = 0` on the zero rows), so `x0` is feasible and, with `u` in [0, 1), about half
/// the inequality rows bind at the solution. Values are column-major as the patterns.
struct Qps {
    st: ConicStructure,
    bsz: usize,
    p: Vec<f64>,
    a: Vec<f64>,
    q: Vec<f64>,
    b: Vec<f64>,
}

impl Qps {
    fn new(n: usize, z: usize, l: usize, bsz: usize, seed: u64) -> Self {
        let m = z + l;
        let dims = ConeDims {
            z,
            l,
            ..Default::default()
        };
        let st = ConicStructure::new(n, m, Some(dense(n, n, "p")), dense(m, n, "a"), dims).unwrap();
        let mut rng = Rng::new(seed);
        let r = rng.vec(n * n);
        let mut p1 = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64;
                p1[j * n + i] = v + f64::from(u8::from(i == j));
            }
        }
        let (mut p, mut a, mut q, mut b) = (vec![], vec![], vec![], vec![]);
        for _ in 0..bsz {
            p.extend(&p1);
            let ai = rng.vec(m * n); // column-major: entry (r, c) at c * m + r
            let x0 = rng.vec(n);
            for row in 0..m {
                let ax: f64 = (0..n).map(|c| ai[c * m + row] * x0[c]).sum();
                let u = if row < z {
                    0.0
                } else {
                    0.5 * (rng.uniform() + 1.0)
                };
                b.push(ax + u);
            }
            a.extend(ai);
            q.extend(rng.vec(n));
        }
        Qps {
            st,
            bsz,
            p,
            a,
            q,
            b,
        }
    }

    /// Every value moved by `eps` times a uniform draw in [-1, 1) (P kept symmetric and
    /// positive definite by moving only its diagonal, b by as much again so that the
    /// moved problem stays feasible).
    fn moved(&self, eps: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let n = self.st.n();
        let mut p = self.p.clone();
        for (k, v) in p.iter_mut().enumerate() {
            if (k % (n * n)).is_multiple_of(n + 1) {
                *v += eps * rng.uniform().abs();
            }
        }
        let jitter = |v: &[f64], rng: &mut Rng| -> Vec<f64> {
            v.iter().map(|x| x + eps * rng.uniform()).collect()
        };
        let (a, q, b) = (
            jitter(&self.a, &mut rng),
            jitter(&self.q, &mut rng),
            jitter(&self.b, &mut rng),
        );
        let st = ConicStructure::new(
            n,
            self.st.m(),
            self.st.p.clone(),
            self.st.a.clone(),
            self.st.layout.dims.clone(),
        )
        .unwrap();
        Qps {
            st,
            bsz: self.bsz,
            p,
            a,
            q,
            b,
        }
    }

    fn solve(&self, engine: QpEngine, ws: &ForwardWorkspaces) -> BatchOutput {
        self.solve_with(engine, &BackendOptions::default(), ws)
    }

    fn solve_with(
        &self,
        engine: QpEngine,
        backends: &BackendOptions,
        ws: &ForwardWorkspaces,
    ) -> BatchOutput {
        let so = SolveOptions {
            engine,
            ..opts(1e-9)
        };
        let inp = BatchInput {
            bsz: self.bsz,
            p: Some(&self.p),
            a: &self.a,
            q: &self.q,
            b: &self.b,
            warm: None,
        };
        solve_batch(&self.st, &so, backends, &inp, &RunControl::default(), ws)
    }
}

fn engines(out: &BatchOutput) -> Vec<&'static str> {
    out.outs.iter().map(|o| o.engine).collect()
}

fn assert_same_solution(a: &BatchOutput, b: &BatchOutput, tol: f64) {
    for (oa, ob) in a.outs.iter().zip(&b.outs) {
        assert_eq!((oa.status, ob.status), ("optimal", "optimal"));
    }
    for (name, u, v) in [
        ("x", &a.xs, &b.xs),
        ("y", &a.ys, &b.ys),
        ("s", &a.ss, &b.ss),
    ] {
        let e = rel_err(u, v);
        assert!(e < tol, "{name} differs between the engines by {e:.2e}");
    }
}

/// The active set's solution is the IPM's, on QPs with equality and inequality rows, with
/// the dense and with the sparse (feral) backend.
#[test]
fn active_set_solution_equals_the_ipm_solution() {
    for (n, z, l, kkt) in [
        (8, 0, 12, KktBackend::Auto),
        (6, 2, 9, KktBackend::Auto),
        (20, 3, 25, KktBackend::Feral),
    ] {
        let qps = Qps::new(n, z, l, 6, 3 + n as u64);
        let backends = BackendOptions {
            kkt_backend: kkt,
            ..Default::default()
        };
        let ipm = qps.solve_with(QpEngine::Ipm, &backends, &ForwardWorkspaces::new());
        let act = qps.solve_with(QpEngine::ActiveSet, &backends, &ForwardWorkspaces::new());
        assert!(engines(&ipm).iter().all(|&e| e == ENGINE_IPM));
        assert!(
            engines(&act).iter().all(|&e| e == ENGINE_ACTIVE_SET),
            "{:?}",
            engines(&act)
        );
        assert_same_solution(&act, &ipm, 1e-7);
        // Exact complementarity: each inequality row is either active (s = 0 to rounding)
        // or has y = 0 exactly, and some rows are of each kind.
        let m = z + l;
        let (mut active, mut inactive) = (0, 0);
        for i in 0..qps.bsz {
            for r in z..m {
                let (s, y) = (act.ss[i * m + r], act.ys[i * m + r]);
                assert!(s * y <= 1e-12 * (1.0 + y), "s y = {} on row {r}", s * y);
                if y == 0.0 {
                    inactive += 1;
                } else {
                    active += 1;
                }
            }
        }
        assert!(
            active > 0 && inactive > 0,
            "{active} active, {inactive} inactive"
        );
    }
}

/// Item i of the next call starts from item i's previous answer: a small move keeps every
/// item's active rows (one KKT solve each), a larger one changes some and active-set steps
/// from the kept rows (or the item's session) reach the new ones; the answers are the IPM's.
#[test]
fn the_active_set_starts_each_item_from_its_previous_call() {
    let qps = Qps::new(10, 1, 14, 5, 21);
    let ws = ForwardWorkspaces::new();
    let first = qps.solve(QpEngine::ActiveSet, &ws);
    assert!(engines(&first).iter().all(|&e| e == ENGINE_ACTIVE_SET));
    assert_eq!(ws.sessions.sessions(), qps.bsz);
    let near = qps.moved(1e-3, 40);
    let kept = near.solve(QpEngine::ActiveSet, &ws);
    assert!(
        engines(&kept).iter().all(|&e| e == ENGINE_ACTIVE_SET_KEPT),
        "{:?}",
        engines(&kept)
    );
    assert_same_solution(
        &kept,
        &near.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
    let far = near.moved(0.3, 41);
    let out = far.solve(QpEngine::ActiveSet, &ws);
    let names = engines(&out);
    assert!(
        names
            .iter()
            .all(|&e| e == ENGINE_ACTIVE_SET_KEPT || e == ENGINE_ACTIVE_SET_WARM),
        "{names:?}"
    );
    // The move changed active sets; the kept rows' active-set steps moved to the new ones
    // (the session's warm start itself: an_item_session_traces_from_its_previous_solve).
    assert_ne!(active_pattern(&kept, 14), active_pattern(&out, 14));
    assert_same_solution(
        &out,
        &far.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
}

/// Per item, which of the last `l` (nonneg) rows have a positive multiplier.
fn active_pattern(out: &BatchOutput, l: usize) -> Vec<Vec<bool>> {
    let m = out.ys.len() / out.outs.len();
    out.ys
        .chunks(m)
        .map(|y| y[m - l..].iter().map(|&v| v > 1e-9).collect())
        .collect()
}

/// `min 1/2 |x|^2 - c'x  s.t.  x <= 1`: `x = min(c, 1)`, `z = max(c - 1, 0)`.
fn clipped(c: &[f64]) -> QpProblem {
    let n = c.len();
    QpProblem {
        n,
        p_lower: (0..n).map(|i| Triplet::new(i, i, 1.0)).collect(),
        c: c.iter().map(|v| -v).collect(),
        a: vec![],
        b: vec![],
        g: (0..n).map(|i| Triplet::new(i, i, 1.0)).collect(),
        h: vec![1.0; n],
        lb: vec![],
        ub: vec![],
    }
}

/// The kept active set is accepted only when it is the answer: a row whose multiplier
/// would turn negative, or an inactive row now violated, sends the item on.
#[test]
fn the_kept_active_set_is_checked() {
    let specs = [pounce_convex::ConeSpec::Nonneg(3)];
    let prob = clipped(&[2.0, 0.5, -1.0]);
    let (sol, _) = solve_on(&prob, &specs, &[0], 1e-9).expect("row 0 is the active set");
    assert!(rel_err(&sol.x, &[1.0, 0.5, -1.0]) < 1e-15);
    assert!(rel_err(&sol.z, &[1.0, 0.0, 0.0]) < 1e-15);
    assert_eq!(sol.z[1..], [0.0, 0.0]);
    assert_eq!(active_rows(&prob, &sol), vec![0]);
    // Row 0 leaves (its multiplier would be -0.5) / row 1 enters (x_1 = 1.5 > 1).
    assert!(solve_on(&clipped(&[0.5, 0.5, -1.0]), &specs, &[0], 1e-9).is_none());
    assert!(solve_on(&clipped(&[2.0, 1.5, -1.0]), &specs, &[0], 1e-9).is_none());
    assert!(solve_on(&clipped(&[2.0, 1.5, -1.0]), &specs, &[0, 1], 1e-9).is_some());
}

/// From a stale active set, primal-dual active-set steps reach the new one: a row leaves
/// and another enters in the clipped problem; a random QP batch moved by 10% is solved from
/// each item's IPM active rows to the IPM's answer, or handed back (`None`), never wrong.
#[test]
fn the_kept_active_set_moves_to_the_new_one() {
    let specs = [pounce_convex::ConeSpec::Nonneg(3)];
    // Row 0 leaves and row 1 enters: x = (0.5, 1, -1), z = (0, 0.5, 0).
    let (sol, f) = solve_from(&clipped(&[0.5, 1.5, -1.0]), &specs, &[0], 1e-9)
        .expect("two steps reach the active set {1}");
    assert!(rel_err(&sol.x, &[0.5, 1.0, -1.0]) < 1e-15);
    assert!(rel_err(&sol.z, &[0.0, 0.5, 0.0]) < 1e-15);
    assert_eq!(f.dim(), 4);
    // Unchanged sets are the one-solve check's answer.
    let (a, _) = solve_from(&clipped(&[2.0, 0.5, -1.0]), &specs, &[0], 1e-9).unwrap();
    let (b, _) = solve_on(&clipped(&[2.0, 0.5, -1.0]), &specs, &[0], 1e-9).unwrap();
    assert_eq!(a.x, b.x);
    // More active rows than x has entries: handed back.
    assert!(solve_from(&clipped(&[2.0, 2.0, 2.0]), &specs, &[0, 1, 2, 0], 1e-9).is_none());

    // Random strictly convex QPs (n = 12, 18 rows), moved by 10%: from the old active rows.
    let (n, m) = (12, 18);
    let mut rng = Rng::new(21);
    let (mut hits, mut one_step_misses) = (0, 0);
    let dense = || -> Box<dyn pounce_linsol::SparseSymLinearSolverInterface> {
        Box::new(DenseLbltBackend::new())
    };
    let opts = QpOptions {
        tol: 1e-11,
        ..QpOptions::default()
    };
    let specs = [pounce_convex::ConeSpec::Nonneg(m)];
    for item in 0..16 {
        let r = rng.vec(n * n);
        let g = rng.vec(m * n);
        let (c, h) = (rng.vec(n), rng.vec(m));
        let qp = |eps: f64, rng: &mut Rng| {
            let mv = |v: f64, rng: &mut Rng| v * (1.0 + eps * rng.uniform());
            let mut p_lower = vec![];
            for i in 0..n {
                for j in 0..=i {
                    let v: f64 =
                        (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64;
                    p_lower.push(Triplet::new(i, j, v + f64::from(u8::from(i == j))));
                }
            }
            QpProblem {
                n,
                p_lower,
                c: c.iter().map(|&v| mv(v, rng)).collect(),
                a: vec![],
                b: vec![],
                g: (0..m * n)
                    .map(|k| Triplet::new(k / n, k % n, mv(g[k], rng)))
                    .collect(),
                h: h.iter().map(|&v| mv(v.abs() * 0.2, rng)).collect(),
                lb: vec![],
                ub: vec![],
            }
        };
        let (old, new) = (qp(0.0, &mut rng), qp(0.1, &mut rng));
        let old_sol = pounce_convex::solve_qp_ipm(&old, &opts, dense);
        let new_sol = pounce_convex::solve_qp_ipm(&new, &opts, dense);
        let active = active_rows(&old, &old_sol);
        if solve_on(&new, &specs, &active, 1e-9).is_none() {
            one_step_misses += 1;
        }
        if let Some((sol, _)) = solve_from(&new, &specs, &active, 1e-9) {
            hits += 1;
            assert!(rel_err(&sol.x, &new_sol.x) < 1e-8, "item {item}");
            assert!(rel_err(&sol.z, &new_sol.z) < 1e-6, "item {item}");
        }
    }
    assert!(
        one_step_misses > 0,
        "the move should change some active sets"
    );
    assert!(
        hits > 16 - one_step_misses,
        "steps should rescue some: {hits} hits"
    );
}

/// An item's session warm-starts from its previous solve (pounce-convex's homotopy), also
/// when the move changes the active set.
#[test]
fn an_item_session_traces_from_its_previous_solve() {
    let mut state = ItemState::default();
    let opts = QpOptions {
        tol: 1e-9,
        ..QpOptions::default()
    };
    let dense = || -> Box<dyn pounce_linsol::SparseSymLinearSolverInterface> {
        Box::new(DenseLbltBackend::new())
    };
    let first = state.solve(&clipped(&[2.0, 0.5, -1.0]), opts, dense);
    assert!(!first.warm && state.session_ready());
    let next = state.solve(&clipped(&[0.5, 2.0, -1.0]), opts, dense);
    assert!(next.warm, "{:?}", state.last_reuse());
    assert!(rel_err(&next.sol.x, &[0.5, 1.0, -1.0]) < 1e-12);
    assert!(rel_err(&next.sol.z, &[0.0, 1.0, 0.0]) < 1e-12);
}

/// `auto`: active-set steps from no rows on an item's first call, with the IPM's solution;
/// while the values move by less than `AUTO_ACTIVE_SET_REL`, the item's last active rows
/// kept; after a large move, steps from the kept rows where they reach an optimal set,
/// the IPM elsewhere, and the same solution as the IPM's either way.
#[test]
fn auto_takes_the_active_set_only_for_items_that_moved_little() {
    let qps = Qps::new(8, 0, 10, 4, 5);
    let ws = ForwardWorkspaces::new();
    let run = |q: &Qps| engines(&q.solve(QpEngine::Auto, &ws));
    let first = qps.solve(QpEngine::Auto, &ws);
    assert!(engines(&first)
        .iter()
        .all(|&e| e == ENGINE_ACTIVE_SET_STEPS));
    assert_same_solution(
        &first,
        &qps.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
    let near = qps.moved(1e-3, 9);
    let out = near.solve(QpEngine::Auto, &ws);
    assert!(engines(&out).iter().all(|&e| e == ENGINE_ACTIVE_SET_KEPT));
    assert_same_solution(
        &out,
        &near.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
    let near_active = active_pattern(&out, 10);
    let far = near.moved(3.0, 11);
    let out = far.solve(QpEngine::Auto, &ws);
    assert!(engines(&out)
        .iter()
        .all(|&e| e == ENGINE_IPM || e == ENGINE_ACTIVE_SET_KEPT));
    assert_ne!(
        active_pattern(&out, 10),
        near_active,
        "the move should change some active sets"
    );
    assert_same_solution(
        &out,
        &far.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
    assert!(run(&far.moved(1e-3, 12))
        .iter()
        .all(|&e| e == ENGINE_ACTIVE_SET_KEPT));
}

/// An infeasible item: the active set (the session, or `auto`'s steps from no rows) does
/// not finish it, so the IPM's robust leg does and certifies it; the feasible items of the
/// batch keep the active set's answer.
#[test]
fn an_item_the_active_set_cannot_solve_falls_back_to_the_ipm() {
    let mut qps = Qps::new(4, 0, 6, 3, 8);
    let m = 6;
    // Item 1: rows 0 and 1 ask a'x <= -1 and -a'x <= -1 (a'x <= -1 and a'x >= 1).
    let n = 4;
    for c in 0..n {
        let v = qps.a[m * n + c * m];
        qps.a[m * n + c * m + 1] = -v;
    }
    qps.b[m] = -1.0;
    qps.b[m + 1] = -1.0;
    let act = qps.solve(QpEngine::ActiveSet, &ForwardWorkspaces::new());
    let ipm = qps.solve(QpEngine::Ipm, &ForwardWorkspaces::new());
    assert_eq!(act.outs[1].status, "primal_infeasible");
    assert_eq!(act.outs[1].status, ipm.outs[1].status);
    assert_eq!(act.outs[1].engine, ENGINE_IPM);
    assert_eq!(act.ys[m..2 * m], ipm.ys[m..2 * m], "the IPM's certificate");
    for i in [0, 2] {
        assert_eq!(act.outs[i].engine, ENGINE_ACTIVE_SET);
        assert!(rel_err(&act.xs[i * n..(i + 1) * n], &ipm.xs[i * n..(i + 1) * n]) < 1e-7);
    }
    let auto = qps.solve(QpEngine::Auto, &ForwardWorkspaces::new());
    assert_eq!(auto.outs[1].status, "primal_infeasible");
    assert_eq!(auto.outs[1].engine, ENGINE_IPM);
    assert_eq!(auto.ys[m..2 * m], ipm.ys[m..2 * m], "the IPM's certificate");
    for i in [0, 2] {
        assert_eq!(auto.outs[i].engine, ENGINE_ACTIVE_SET_STEPS);
        assert!(rel_err(&auto.xs[i * n..(i + 1) * n], &ipm.xs[i * n..(i + 1) * n]) < 1e-7);
    }
}

/// Steps from no rows on random strictly convex QPs (n = m = 30, a fifth of them with 5
/// equality rows): every item is solved to the IPM's answer; an LP (no P: the first
/// restricted KKT is singular) is handed back at once.
#[test]
fn steps_from_no_rows_solve_a_first_call() {
    for (z, seed) in [(0, 31), (5, 32)] {
        let qps = Qps::new(30, z, 30, 6, seed);
        let out = qps.solve(QpEngine::Auto, &ForwardWorkspaces::new());
        assert!(engines(&out).iter().all(|&e| e == ENGINE_ACTIVE_SET_STEPS));
        let ipm = qps.solve(QpEngine::Ipm, &ForwardWorkspaces::new());
        assert_same_solution(&out, &ipm, 1e-7);
    }
    let specs = [pounce_convex::ConeSpec::Nonneg(2)];
    let lp = QpProblem {
        n: 2,
        p_lower: vec![],
        c: vec![1.0, 1.0],
        a: vec![],
        b: vec![],
        g: vec![Triplet::new(0, 0, -1.0), Triplet::new(1, 1, -1.0)],
        h: vec![0.0, 0.0],
        lb: vec![],
        ub: vec![],
    };
    assert!(solve_cold(&lp, &specs, 1e-9).is_none());
}

/// The IPM engine keeps no per-item state.
#[test]
fn the_ipm_engine_keeps_no_sessions() {
    let qps = Qps::new(5, 0, 5, 3, 2);
    let ws = ForwardWorkspaces::new();
    qps.solve(QpEngine::Ipm, &ws);
    qps.solve(QpEngine::Ipm, &ws);
    assert_eq!(ws.sessions.sessions(), 0);
}

/// The backward of an item the kept active set answered reuses that answer's factor: the
/// same gradients as the general adjoint (a fresh factor of K with H at the active set's
/// limit), for the same P, A and active set only.
#[test]
fn the_adjoint_reuses_the_kept_factor() {
    let qps = Qps::new(9, 2, 12, 4, 31);
    let (n, m) = (qps.st.n(), qps.st.m());
    let ws = ForwardWorkspaces::new();
    qps.solve(QpEngine::ActiveSet, &ws);
    let out = qps.solve(QpEngine::ActiveSet, &ws);
    assert!(engines(&out).iter().all(|&e| e == ENGINE_ACTIVE_SET_KEPT));
    // H at the active set of w = s - y (pounce_kkt/active_set.py `limit_scaling`).
    let h_diag: Vec<f64> = (0..qps.bsz * m)
        .map(|k| {
            let w = out.ss[k] - out.ys[k];
            if k % m >= 2 && w > 0.0 {
                1e20
            } else {
                0.0
            }
        })
        .collect();
    let mut rng = Rng::new(3);
    let (gx, gy, gs) = (
        rng.vec(qps.bsz * n),
        rng.vec(qps.bsz * m),
        rng.vec(qps.bsz * m),
    );
    let ok = vec![true; qps.bsz];
    let pat = KktPattern::new(&qps.st);
    let adjoint = |kept: &[Option<&KeptFactor>], a: &[f64], h: &[f64]| {
        let inp = AdjointInput {
            bsz: qps.bsz,
            p: Some(&qps.p),
            a,
            h_diag: h,
            h_blocks: &[],
            x: &out.xs,
            y: &out.ys,
            gx: &gx,
            gy: &gy,
            gs: &gs,
            ok: &ok,
            kept,
        };
        adjoint_batch(
            &qps.st,
            &pat,
            &BackendOptions::default(),
            &inp,
            &Cancel::default(),
            TestPanic::Off,
            &AdjointWorkspaces::new(),
        )
    };
    let general = adjoint(&[], &qps.a, &h_diag);
    let (reused, factors) = ws.sessions.peek(|states| {
        let kept: Vec<_> = states.iter().map(|s| s.factor()).collect();
        assert!(kept.iter().all(Option::is_some));
        let g = adjoint(&kept, &qps.a, &h_diag);
        // The factor applies to its own P, A and active set only.
        let f = kept[0].unwrap();
        let rhs: Vec<f64> = gx[..n].iter().chain(&gy[..m]).copied().collect();
        // Item 0's K (P, A, H) for the refinement's residuals.
        let p_low = qps
            .st
            .map
            .p_lower_values(Some(&qps.p[..qps.p.len() / qps.bsz]));
        let a0 = &qps.a[..qps.a.len() / qps.bsz];
        let pat = &pat;
        let k_matvec = |h: &[f64]| {
            let mut vals = vec![0.0; pat.nnz()];
            pat.values(&p_low, a0, h, &[], &mut vals);
            move |v: &[f64], out: &mut [f64]| pat.matvec(&vals, v, out)
        };
        let mine = f
            .adjoint_solve(&qps.st.layout, &h_diag[..m], &rhs, k_matvec(&h_diag[..m]))
            .is_some();
        let mut flipped = h_diag[..m].to_vec();
        let r = (2..m).find(|&r| flipped[r] == 0.0).expect("an active row");
        flipped[r] = 1e20;
        let other = f
            .adjoint_solve(&qps.st.layout, &flipped, &rhs, k_matvec(&flipped))
            .is_some();
        let mut a2 = qps.a.clone();
        a2[0] += 1e-3;
        (
            g,
            (
                mine,
                other,
                f.built_from(Some(&qps.p[..n * n]), &a2[..a2.len() / qps.bsz]),
            ),
        )
    });
    assert_eq!(factors, (true, false, false));
    assert_eq!(reused.solved, general.solved);
    assert!(reused.solved.iter().all(|&s| s));
    for (name, u, v) in [
        ("dq", &reused.dq, &general.dq),
        ("db", &reused.db, &general.db),
        ("da", &reused.da, &general.da),
        ("dp", &reused.dp, &general.dp),
    ] {
        let e = rel_err(u, v);
        assert!(e < 1e-9, "{name}: {e:.2e}");
    }
}

/// A factor is kept for the backward only up to `KEEP_FACTOR_MAX_DIM` (memory per item).
#[test]
fn large_kept_factors_are_not_kept() {
    use pounce_layers_core::kept_active_set::KEEP_FACTOR_MAX_DIM;
    for (n, kept) in [(3, true), (KEEP_FACTOR_MAX_DIM, false)] {
        let specs = [pounce_convex::ConeSpec::Nonneg(n)];
        let prob = clipped(&vec![2.0; n]);
        let active: Vec<usize> = (0..n).collect();
        let (sol, f) = solve_on(&prob, &specs, &active, 1e-9).expect("every row binds");
        assert!(rel_err(&sol.x, &vec![1.0; n]) < 1e-14);
        assert_eq!(f.dim(), 2 * n);
        let mut state = ItemState::default();
        state.keep_factor(f, None, &[]);
        assert_eq!(state.factor().is_some(), kept, "n = {n}");
    }
}

/// The kept check's back-off for items that moved far: due at first; after k misses in a
/// row the next 2^k calls (at most 2^KEPT_BACKOFF_MAX_EXP) skip it; a hit resets the count.
#[test]
fn a_kept_check_that_keeps_missing_backs_off() {
    let mut state = ItemState::default();
    assert!(state.kept_due());
    let skipped = |state: &mut ItemState| (0..64).take_while(|_| !state.kept_due()).count();
    state.kept_outcome(false);
    assert_eq!(skipped(&mut state), 2);
    state.kept_outcome(false);
    assert_eq!(skipped(&mut state), 4);
    for _ in 0..6 {
        state.kept_outcome(false);
    }
    assert_eq!(skipped(&mut state), 1 << KEPT_BACKOFF_MAX_EXP);
    state.kept_outcome(true);
    assert!(state.kept_due());
    state.kept_outcome(false);
    assert_eq!(skipped(&mut state), 2);
}

/// The Schur-complement steps (schur_steps.rs) on the IPM's active rows give the IPM's
/// multipliers on them and its slacks on every row, with equality rows in the problem;
/// without P (an LP) there are none.
#[test]
fn schur_steps_agree_with_the_ipm_at_its_active_set() {
    let (n, me, mi) = (12, 3, 18);
    let mut rng = Rng::new(41);
    let r = rng.vec(n * n);
    let mut p_lower = vec![];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64;
            p_lower.push(Triplet::new(i, j, v + f64::from(u8::from(i == j))));
        }
    }
    let x0 = rng.vec(n);
    let a: Vec<Triplet> = (0..me * n)
        .map(|k| Triplet::new(k / n, k % n, rng.uniform()))
        .collect();
    let g: Vec<Triplet> = (0..mi * n)
        .map(|k| Triplet::new(k / n, k % n, rng.uniform()))
        .collect();
    let row_dot = |ts: &[Triplet], row: usize| -> f64 {
        ts.iter()
            .filter(|t| t.row == row)
            .map(|t| t.val * x0[t.col])
            .sum()
    };
    let prob = QpProblem {
        n,
        p_lower,
        c: rng.vec(n),
        a: a.clone(),
        b: (0..me).map(|i| row_dot(&a, i)).collect(),
        g: g.clone(),
        h: (0..mi)
            .map(|i| row_dot(&g, i) + 0.3 * rng.uniform().abs())
            .collect(),
        lb: vec![],
        ub: vec![],
    };
    let opts = QpOptions {
        tol: 1e-12,
        ..QpOptions::default()
    };
    let ipm = pounce_convex::solve_qp_ipm(&prob, &opts, || {
        Box::new(DenseLbltBackend::new()) as Box<dyn pounce_linsol::SparseSymLinearSolverInterface>
    });
    let active = active_rows(&prob, &ipm);
    assert!(!active.is_empty() && active.len() < mi);
    let sc = SchurSteps::new(&prob).expect("P is positive definite");
    let (z_w, slack) = sc.step(&active).expect("the active rows are independent");
    let z_ipm: Vec<f64> = active.iter().map(|&i| ipm.z[i]).collect();
    assert!(rel_err(&z_w, &z_ipm) < 1e-8, "{z_w:?} {z_ipm:?}");
    let s_ipm: Vec<f64> = (0..mi)
        .map(|i| {
            prob.h[i]
                - g.iter()
                    .filter(|t| t.row == i)
                    .map(|t| t.val * ipm.x[t.col])
                    .sum::<f64>()
        })
        .collect();
    assert!(rel_err(&slack, &s_ipm) < 1e-8);
    let specs = [pounce_convex::ConeSpec::Nonneg(mi)];
    let (sol, _) = solve_cold(&prob, &specs, 1e-9).expect("steps from no rows");
    assert!(rel_err(&sol.x, &ipm.x) < 1e-8);
    let lp = QpProblem {
        p_lower: vec![],
        ..prob
    };
    assert!(SchurSteps::new(&lp).is_none());
}

/// The set the Schur-complement steps stop on is answered by their own solve: from no rows,
/// the IPM's answer with the Schur factor, whose restricted KKT solve is the full LBL' one's
/// at that set; from the kept rows of an item that moved far, the steps without the full
/// first solve give the answer of the steps with it, in no more solves.
#[test]
fn the_schur_steps_answer_with_their_own_factor() {
    let (n, me, mi) = (10, 2, 14);
    let mut rng = Rng::new(57);
    let specs = [pounce_convex::ConeSpec::Nonneg(mi)];
    let opts = QpOptions {
        tol: 1e-12,
        ..QpOptions::default()
    };
    let dense = || -> Box<dyn pounce_linsol::SparseSymLinearSolverInterface> {
        Box::new(DenseLbltBackend::new())
    };
    let mut moved = 0;
    for item in 0..8 {
        let prob = dense_qp(n, me, mi, &mut rng);
        let ipm = pounce_convex::solve_qp_ipm(&prob, &opts, dense);
        let (sol, f) = solve_cold(&prob, &specs, 1e-9).expect("steps from no rows");
        assert!(f.by_schur(), "item {item}: the steps' own answer");
        assert!(rel_err(&sol.x, &ipm.x) < 1e-8, "item {item}");
        assert!(rel_err(&sol.z, &ipm.z) < 1e-6, "item {item}");
        let active = active_rows(&prob, &sol);
        let (full, g) = solve_on(&prob, &specs, &active, 1e-9).expect("the same set");
        assert!(!g.by_schur());
        assert!(rel_err(&sol.x, &full.x) < 1e-12, "item {item}");
        let v = rng.vec(f.dim());
        let (mut a, mut b) = (v.clone(), v);
        assert!(f.solve(&mut a) && g.solve(&mut b));
        assert!(
            rel_err(&a, &b) < 1e-10,
            "item {item}: {:.2e}",
            rel_err(&a, &b)
        );
        // Another item's data, this item's rows kept.
        let far = dense_qp(n, me, mi, &mut rng);
        let (x_direct, f_direct) =
            solve_steps(&far, &specs, &active, 1e-9, 10, false).expect("steps from kept rows");
        let (x_full, _) = solve_steps(&far, &specs, &active, 1e-9, 10, true).expect("full first");
        assert!(rel_err(&x_direct.x, &x_full.x) < 1e-10, "item {item}");
        assert!(x_direct.iters <= x_full.iters, "item {item}");
        assert!(f_direct.by_schur());
        moved += usize::from(active_rows(&far, &x_direct) != active);
    }
    assert!(
        moved > 0,
        "another item's data should change some active sets"
    );
}

/// Where P is so ill-conditioned that the Schur complement's answer misses tol (here
/// `min 1/2 (x1^2 + 1e-13 x2^2) - 2 x1 - x2, x <= 1`: x2 cancels to 1e-3), the full restricted
/// solve confirms the set and answers exactly.
#[test]
fn an_ill_conditioned_p_is_answered_by_the_full_solve() {
    let specs = [pounce_convex::ConeSpec::Nonneg(2)];
    let prob = QpProblem {
        p_lower: vec![Triplet::new(0, 0, 1.0), Triplet::new(1, 1, 1e-13)],
        ..clipped(&[2.0, 1.0])
    };
    let (sol, f) = solve_cold(&prob, &specs, 1e-9).expect("both rows bind");
    assert!(!f.by_schur());
    assert!(rel_err(&sol.x, &[1.0, 1.0]) < 1e-14, "{:?}", sol.x);
    assert!(rel_err(&sol.z, &[1.0, 1.0 - 1e-13]) < 1e-14, "{:?}", sol.z);
}
