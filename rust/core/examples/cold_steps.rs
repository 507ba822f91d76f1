//! Probe: active-set steps from no rows (kept_active_set.rs `solve_cold`) on random dense
//! QPs, per item time and solves; `cargo run --release --example cold_steps -- N M ITEMS`.
use pounce_convex::{ConeSpec, QpProblem, Triplet};
use pounce_layers_core::kept_active_set::solve_cold;
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

/// min 1/2 x'Px + c'x s.t. Gx <= h: P fixed PD, G, c random, h strictly feasible at x0.
fn qp(n: usize, m: usize, seed: u64) -> QpProblem {
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
    let mut r = Rng(seed);
    let x0: Vec<f64> = (0..n).map(|_| r.u()).collect();
    let c: Vec<f64> = (0..n).map(|_| 2.0 * r.u()).collect();
    let (mut g, mut h) = (Vec::new(), Vec::new());
    for i in 0..m {
        let mut s = 0.0;
        for (j, x) in x0.iter().enumerate() {
            let v = 2.0 * r.u();
            g.push(Triplet {
                row: i,
                col: j,
                val: v,
            });
            s += v * x;
        }
        h.push(s + 0.5 * (r.u() + 1.0));
    }
    QpProblem {
        n,
        p_lower,
        c,
        a: vec![],
        b: vec![],
        g,
        h,
        lb: vec![],
        ub: vec![],
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, m, items) = (
        args.first().copied().unwrap_or(50),
        args.get(1).copied().unwrap_or(50),
        args.get(2).copied().unwrap_or(200),
    );
    let specs = [ConeSpec::Nonneg(m)];
    let probs: Vec<QpProblem> = (0..items).map(|i| qp(n, m, 100 + i as u64)).collect();
    let t = Instant::now();
    let mut ok = 0;
    for p in &probs {
        ok += usize::from(solve_cold(p, &specs, 1e-8).is_some());
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "n={n} m={m}: {ok}/{items} solved, {:.1} us per item",
        1e6 * s / items as f64
    );
}
