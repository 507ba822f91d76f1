//! The QP class's engines (options.rs `QpEngine`, qp_sessions.rs): the active set agrees
//! with the IPM, warm-starts each item from its previous solve across calls, hands what it
//! cannot solve to the IPM, and `auto` takes it only for items that moved little.
mod common;

use common::{opts, rel_err, Rng};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl, ENGINE_ACTIVE_SET,
    ENGINE_ACTIVE_SET_WARM, ENGINE_IPM,
};
use pounce_layers_core::cone_layout::ConeDims;
use pounce_layers_core::options::{BackendOptions, KktBackend, QpEngine, SolveOptions};
use pounce_layers_core::pattern::CscPattern;
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

/// Item i of the next call starts from item i's previous solve: warm on every item, with
/// the session kept on the workspaces, and the answers still the IPM's.
#[test]
fn the_active_set_warm_starts_each_item_from_its_previous_call() {
    let qps = Qps::new(10, 1, 14, 5, 21);
    let ws = ForwardWorkspaces::new();
    let first = qps.solve(QpEngine::ActiveSet, &ws);
    assert!(engines(&first).iter().all(|&e| e == ENGINE_ACTIVE_SET));
    assert_eq!(ws.sessions.sessions(), qps.bsz);
    for (k, eps) in [1e-3, 1e-2].into_iter().enumerate() {
        let moved = qps.moved(eps, 40 + k as u64);
        let warm = moved.solve(QpEngine::ActiveSet, &ws);
        assert!(
            engines(&warm).iter().all(|&e| e == ENGINE_ACTIVE_SET_WARM),
            "{:?}",
            engines(&warm)
        );
        let ipm = moved.solve(QpEngine::Ipm, &ForwardWorkspaces::new());
        assert_same_solution(&warm, &ipm, 1e-7);
    }
}

/// `auto`: the IPM on an item's first call and after a large move; the active set (cold,
/// then warm) while the values move by less than `AUTO_ACTIVE_SET_REL`.
#[test]
fn auto_takes_the_active_set_only_for_items_that_moved_little() {
    let qps = Qps::new(8, 0, 10, 4, 5);
    let ws = ForwardWorkspaces::new();
    let run = |q: &Qps| engines(&q.solve(QpEngine::Auto, &ws));
    assert!(run(&qps).iter().all(|&e| e == ENGINE_IPM));
    let near = qps.moved(1e-3, 9);
    assert!(run(&near).iter().all(|&e| e == ENGINE_ACTIVE_SET));
    let nearer = near.moved(1e-3, 10);
    let out = nearer.solve(QpEngine::Auto, &ws);
    assert!(engines(&out).iter().all(|&e| e == ENGINE_ACTIVE_SET_WARM));
    assert_same_solution(
        &out,
        &nearer.solve(QpEngine::Ipm, &ForwardWorkspaces::new()),
        1e-7,
    );
    let far = nearer.moved(0.5, 11);
    assert!(run(&far).iter().all(|&e| e == ENGINE_IPM));
    // After the IPM, the session's previous solve is forgotten: the next small move is
    // solved cold.
    assert!(run(&far.moved(1e-3, 12))
        .iter()
        .all(|&e| e == ENGINE_ACTIVE_SET));
}

/// An infeasible item: the active set does not finish it, so the IPM's robust leg does and
/// certifies it; the feasible items of the batch keep the active set's answer.
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
