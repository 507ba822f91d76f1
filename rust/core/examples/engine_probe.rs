//! Probe: IPM vs active set on dense QPs (not shipped).
use pounce_convex::{
    solve_qp_active_set, ActiveSetOverrides, ActiveSetSession, QpFactorization, QpOptions,
    QpProblem, Triplet,
};
use pounce_layers_core::dense_backend::DenseLbltBackend;
use pounce_layers_core::options::{backend, BackendOptions};
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn u(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn qp(n: usize, m: usize, seed: u64, eps: f64) -> QpProblem {
    let mut r = Rng(seed);
    let mut r0 = Rng(7);
    let mm: Vec<f64> = (0..n * n).map(|_| r0.u()).collect();
    let mut p_lower = Vec::new();
    for i in 0..n {
        for j in 0..=i {
            let mut v: f64 = (0..n).map(|k| mm[i * n + k] * mm[j * n + k]).sum::<f64>() / n as f64;
            if i == j {
                v += 1.0;
            }
            p_lower.push(Triplet {
                row: i,
                col: j,
                val: v,
            });
        }
    }
    let mut rb = Rng(11);
    let g: Vec<f64> = (0..m * n).map(|_| rb.u()).collect();
    let x0: Vec<f64> = (0..n).map(|_| rb.u()).collect();
    let c: Vec<f64> = (0..n).map(|_| rb.u() + eps * r.u()).collect();
    let mut gt = Vec::new();
    let mut h = Vec::new();
    for i in 0..m {
        let mut s = 0.0;
        for j in 0..n {
            let v = g[i * n + j] + eps * r.u();
            gt.push(Triplet {
                row: i,
                col: j,
                val: v,
            });
            s += v * x0[j];
        }
        h.push(s + 0.5 * (rb.u() + 1.0));
    }
    QpProblem {
        n,
        p_lower,
        c,
        a: vec![],
        b: vec![],
        g: gt,
        h,
        lb: vec![],
        ub: vec![],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(50, |s| s.parse().unwrap());
    let m: usize = args.get(2).map_or(50, |s| s.parse().unwrap());
    let reps: usize = args.get(3).map_or(20, |s| s.parse().unwrap());
    let eps: f64 = args.get(4).map_or(1e-3, |s| s.parse().unwrap());
    let opts = QpOptions {
        tol: 1e-8,
        use_hsde: false,
        ..QpOptions::default()
    };
    let bo = BackendOptions::default();
    let cfg = bo.feral_fast();
    let probs: Vec<QpProblem> = (0..reps).map(|k| qp(n, m, k as u64 + 1, eps)).collect();
    // IPM reusable factor, dense
    let mut f = QpFactorization::build(&probs[0], &opts, || {
        Box::new(DenseLbltBackend::quasi_definite_first())
    })
    .unwrap();
    let t = Instant::now();
    let mut it = 0;
    for p in &probs {
        let s = f.solve(p);
        it += s.iters;
        assert_eq!(format!("{:?}", s.status), "Optimal");
    }
    let ipm = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "ipm dense  {:.3} ms/item  iters {:.1}",
        ipm * 1e3,
        it as f64 / reps as f64
    );
    let ipm_x: Vec<Vec<f64>> = probs.iter().map(|p| f.solve(p).x).collect();
    for (name, dense) in [("dense", true), ("feral", false)] {
        let eng = ActiveSetOverrides::default();
        let cfg = cfg.clone();
        let mk = move || -> Box<dyn pounce_linsol::SparseSymLinearSolverInterface> {
            if dense {
                Box::new(DenseLbltBackend::new())
            } else {
                backend(&cfg)
            }
        };
        let mut mk2 = mk.clone();
        let t = Instant::now();
        let mut it = 0;
        let mut err: f64 = 0.0;
        for (p, xr) in probs.iter().zip(&ipm_x) {
            let s = solve_qp_active_set(p, &opts, &eng, &mut mk2);
            it += s.iters;
            err = err.max(
                s.x.iter()
                    .zip(xr)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max),
            );
            assert!(
                matches!(format!("{:?}", s.status).as_str(), "Optimal"),
                "{:?}",
                s.status
            );
        }
        println!(
            "as cold {name} {:.3} ms/item iters {:.1} maxdx {err:.1e}",
            t.elapsed().as_secs_f64() / reps as f64 * 1e3,
            it as f64 / reps as f64
        );
        for presolve in [true, false] {
            let mut sess = ActiveSetSession::new(mk.clone())
                .with_options(opts)
                .with_presolve(presolve);
            sess.solve(&probs[0]);
            let t = Instant::now();
            let mut it = 0;
            let mut err: f64 = 0.0;
            for (p, xr) in probs.iter().zip(&ipm_x).skip(1) {
                let s = sess.solve(p);
                it += s.iters;
                err = err.max(
                    s.x.iter()
                        .zip(xr)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max),
                );
            }
            println!("session {name} presolve={presolve} {:.3} ms/item iters {:.1} maxdx {err:.1e} stats {:?}", t.elapsed().as_secs_f64() / (reps - 1) as f64 * 1e3, it as f64 / (reps - 1) as f64, sess.stats());
            let t = Instant::now();
            for _ in 1..reps {
                sess.solve(&probs[reps - 1]);
            }
            println!(
                "   same problem repeated: {:.3} ms/item, last_reuse {:?}",
                t.elapsed().as_secs_f64() / (reps - 1) as f64 * 1e3,
                sess.last_reuse()
            );
        }
    }
}
