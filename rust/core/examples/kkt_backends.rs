//! Per-matrix time of the KKT backends on an IPM-shaped dense QP KKT
//! `[[P + dw I, G'], [G, -W]]` (n variables, m rows, W log-uniform over 1e-4..1e4):
//! one factorization and two solves, as one IPM iteration uses them, best of 5 rounds.
//! `cargo run --release --example kkt_backends -- N M [REPS]`.
use pounce_layers_core::condensed_backend::CondensedBackend;
use pounce_layers_core::dense_backend::DenseLbltBackend;
use pounce_layers_core::options::{backend, BackendOptions};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::time::Instant;

fn lcg(s: &mut u64) -> f64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let n = a.first().copied().unwrap_or(50);
    let m = a.get(1).copied().unwrap_or(50);
    let reps = a.get(2).copied().unwrap_or(1000);
    let dim = n + m;
    let mut s = 1u64;
    let r: Vec<f64> = (0..n * n).map(|_| lcg(&mut s)).collect();
    let (mut ia, mut ja, mut v) = (vec![], vec![], vec![]);
    for i in 0..n {
        for j in 0..=i {
            let p = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64;
            ia.push(i as i32 + 1);
            ja.push(j as i32 + 1);
            v.push(p + if i == j { 1e-8 } else { 0.0 });
        }
    }
    for i in 0..m {
        for j in 0..n {
            ia.push((n + i) as i32 + 1);
            ja.push(j as i32 + 1);
            v.push(lcg(&mut s));
        }
        ia.push((n + i) as i32 + 1);
        ja.push((n + i) as i32 + 1);
        v.push(-(10f64.powf(4.0 * lcg(&mut s))));
    }
    let rhs0: Vec<f64> = (0..dim).map(|_| lcg(&mut s)).collect();
    let run = |name: &str, be: &mut dyn SparseSymLinearSolverInterface| {
        be.initialize_structure(dim as i32, v.len() as i32, &ia, &ja);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                be.values_array_mut().copy_from_slice(&v);
                let mut x = rhs0.clone();
                be.multi_solve(true, &ia, &ja, 1, &mut x, false, 0);
                let mut x = rhs0.clone();
                be.multi_solve(false, &ia, &ja, 1, &mut x, false, 0);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!("{name:>24}: {:8.1} us per factor + 2 solves", best * 1e6);
    };
    let dense = || Box::new(DenseLbltBackend::quasi_definite_first());
    let mut feral = backend(&BackendOptions::default().feral_fast());
    run("feral (fast path)", feral.as_mut());
    if dim <= 400 {
        run(
            "dense LDL' first",
            &mut DenseLbltBackend::quasi_definite_first(),
        );
        run("dense LBL'", &mut DenseLbltBackend::new());
    }
    run("condensed", &mut CondensedBackend::new(dense()));
    run(
        "condensed, refined",
        &mut CondensedBackend::new(dense()).refined(true),
    );
}
