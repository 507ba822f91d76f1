//! Per-item forward time of the QP engines on a call whose values moved from the previous
//! call's: the IPM (with the KKT backend the policy picks: the condensed one at n = m = 50)
//! against the active set warm from each item's previous answer (engine `active_set`: its
//! kept active rows, else its pounce-convex `ActiveSetSession`), on the bench_peers QP case
//! (P fixed, q, G, h batched; every entry times 1 + MOVE N(0,1)), after a first call on the
//! base values. Prints, per move, the median per-item seconds of each engine over `ROUNDS`
//! moved calls and which engine answered the active-set calls.
//! Each round: a first call on the base values, then STEPS calls each moved from the one
//! before (a training loop); the per-item time is the mean over those STEPS calls.
//! `cargo run --release --example engine_moves -- [N] [M] [B] [ROUNDS] [STEPS] [ipm|backends|first]`
//! (`ipm`: time only the IPM, e.g. under a profiler; `backends`: the IPM with the policy's
//! KKT backend against the full dense factor, interleaved, at move 0.1; `first`: first calls,
//! `auto`'s active-set steps from no rows against the IPM).
use pounce_layers_core::batch::{solve_batch, BatchInput, ForwardWorkspaces, RunControl};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::options::{BackendOptions, KktBackend, QpEngine, SolveOptions};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::ConicStructure;
use std::collections::BTreeMap;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn dense(rows: usize, cols: usize) -> CscPattern {
    let ip: Vec<i64> = (0..=cols as i64).map(|c| c * rows as i64).collect();
    let ix: Vec<i64> = (0..cols).flat_map(|_| 0..rows as i64).collect();
    CscPattern::new(rows, cols, &ip, &ix, "x").unwrap()
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let n = a.first().copied().unwrap_or(50);
    let m = a.get(1).copied().unwrap_or(50);
    let bsz = a.get(2).copied().unwrap_or(64);
    let rounds = a.get(3).copied().unwrap_or(5);
    let steps = a.get(4).copied().unwrap_or(4);
    let ipm_only = std::env::args().any(|s| s == "ipm");
    let dims = ConeDims {
        l: m,
        ..Default::default()
    };
    let st = ConicStructure::new(n, m, Some(dense(n, n)), dense(m, n), dims).unwrap();
    let mut rng = Rng(7);
    // P = R R' / n + I (fixed); G, q Gaussian; h = G x0 + u, u in [0.5, 1): x0 feasible.
    let r: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
    let mut p1 = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            p1[j * n + i] = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64
                + f64::from(u8::from(i == j));
        }
    }
    let p: Vec<f64> = (0..bsz).flat_map(|_| p1.iter().copied()).collect();
    let g: Vec<f64> = (0..bsz * m * n).map(|_| rng.normal()).collect();
    let q: Vec<f64> = (0..bsz * n).map(|_| rng.normal()).collect();
    let mut h = vec![0.0; bsz * m];
    for it in 0..bsz {
        let x0: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        for row in 0..m {
            let gx: f64 = (0..n).map(|c| g[it * m * n + c * m + row] * x0[c]).sum();
            h[it * m + row] = gx + 0.5 + 0.5 * rng.uniform();
        }
    }
    // `dense`: the IPM's KKT on the full dense factor (the policy before the condensed one).
    let backends_for = |dense: bool| BackendOptions {
        kkt_backend: if dense {
            KktBackend::Dense
        } else {
            KktBackend::Auto
        },
        ..Default::default()
    };
    let mv = |v: &[f64], eps: f64, rng: &mut Rng| -> Vec<f64> {
        v.iter().map(|x| x * (1.0 + eps * rng.normal())).collect()
    };
    let call_with =
        |eng: QpEngine, dense: bool, ws: &ForwardWorkspaces, g: &[f64], q: &[f64], h: &[f64]| {
            let so = SolveOptions {
                tol: 1e-8,
                max_iter: 200,
                time_limit: None,
                engine: eng,
                stage: None,
            };
            let inp = BatchInput {
                bsz,
                p: Some(&p),
                a: g,
                q,
                b: h,
                warm: None,
            };
            let t = Instant::now();
            let out = solve_batch(
                &st,
                &so,
                &backends_for(dense),
                &inp,
                &RunControl::default(),
                ws,
            );
            (t.elapsed().as_secs_f64() / bsz as f64, out)
        };
    let call = |eng, ws: &ForwardWorkspaces, g: &[f64], q: &[f64], h: &[f64]| {
        call_with(eng, false, ws, g, q, h)
    };
    if std::env::args().any(|s| s == "first") {
        // First calls (fresh workspaces: no kept rows): `auto` (active-set steps from no
        // rows) against the IPM, interleaved, per item.
        let (mut tu, mut ti) = (vec![], vec![]);
        for _ in 0..rounds {
            let (t, out) = call(QpEngine::Auto, &ForwardWorkspaces::new(), &g, &q, &h);
            tu.push(t);
            ti.push(call(QpEngine::Ipm, &ForwardWorkspaces::new(), &g, &q, &h).0);
            if tu.len() == 1 {
                let mut by: BTreeMap<&str, usize> = BTreeMap::new();
                out.outs
                    .iter()
                    .for_each(|o| *by.entry(o.engine).or_default() += 1);
                println!("engines of the first auto call: {by:?}");
            }
        }
        tu.sort_by(f64::total_cmp);
        ti.sort_by(f64::total_cmp);
        let (mu, mi) = (tu[tu.len() / 2], ti[ti.len() / 2]);
        println!(
            "n={n} m={m} B={bsz}: first call per item, auto {:.1} us, ipm {:.1} us, auto/ipm {:.2}",
            1e6 * mu,
            1e6 * mi,
            mu / mi
        );
        return;
    }
    if std::env::args().any(|s| s == "backends") {
        // The IPM per item with the policy's backend against the full dense factor,
        // interleaved, on the moved values of each round.
        let (mut ta, mut td) = (vec![], vec![]);
        for round in 0..rounds {
            let mut rr = Rng(2000 + round as u64);
            let (g2, q2, h2) = (
                mv(&g, 0.1, &mut rr),
                mv(&q, 0.1, &mut rr),
                mv(&h, 0.1, &mut rr),
            );
            let (wa, wd) = (ForwardWorkspaces::new(), ForwardWorkspaces::new());
            call_with(QpEngine::Ipm, false, &wa, &g, &q, &h);
            call_with(QpEngine::Ipm, true, &wd, &g, &q, &h);
            ta.push(call_with(QpEngine::Ipm, false, &wa, &g2, &q2, &h2).0);
            td.push(call_with(QpEngine::Ipm, true, &wd, &g2, &q2, &h2).0);
        }
        ta.sort_by(f64::total_cmp);
        td.sort_by(f64::total_cmp);
        let (a, d) = (ta[rounds / 2], td[rounds / 2]);
        println!(
            "IPM per item: policy (condensed) {:.3} ms, full dense {:.3} ms, dense/condensed {:.2}",
            a * 1e3,
            d * 1e3,
            d / a
        );
        return;
    }
    // The `auto` rule's measure of one item's move (qp_sessions.rs `moved_little`): the
    // largest change of its values (P, A, q, b) over their largest magnitude.
    let moved = |g2: &[f64], q2: &[f64], h2: &[f64], it: usize| -> f64 {
        let old = p1
            .iter()
            .chain(&g[it * m * n..(it + 1) * m * n])
            .chain(&q[it * n..(it + 1) * n])
            .chain(&h[it * m..(it + 1) * m]);
        let new = p1
            .iter()
            .chain(&g2[it * m * n..(it + 1) * m * n])
            .chain(&q2[it * n..(it + 1) * n])
            .chain(&h2[it * m..(it + 1) * m]);
        let scale = old.clone().fold(0.0f64, |s, v| s.max(v.abs()));
        let d = old.zip(new).fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
        d / scale
    };
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "n={n} m={m} B={bsz}: per-item ms (median over {rounds} rounds of the mean of {steps} chained moved calls); ratios: medians of the per-round ratios"
    );
    let engines = [QpEngine::Ipm, QpEngine::ActiveSet, QpEngine::Auto];
    for eps in [0.0, 0.005, 0.01, 0.02, 0.05, 0.07, 0.1] {
        let mut t: [Vec<f64>; 3] = Default::default();
        let (mut r_as, mut r_auto, mut rel) = (vec![], vec![], vec![]);
        let mut names: [BTreeMap<&str, usize>; 3] = Default::default();
        let mut ipm_iters = 0;
        let mut first: [Vec<f64>; 3] = Default::default();
        let mut max_dx = 0.0f64;
        for round in 0..rounds {
            let mut rr = Rng(1000 + round as u64);
            // Fresh handles each round: a first call on the base values, then `steps` calls,
            // each moved from the one before (a training loop), timed together.
            let ws: Vec<ForwardWorkspaces> = (0..3).map(|_| ForwardWorkspaces::new()).collect();
            let active: Vec<usize> = if ipm_only { vec![0] } else { vec![0, 1, 2] };
            for &e in &active {
                let (t0, _) = call(engines[e], &ws[e], &g, &q, &h);
                first[e].push(t0);
            }
            let mut tt = [0.0f64; 3];
            let mut xs: Vec<Vec<f64>> = vec![vec![]; 3];
            let (mut gc, mut qc, mut hc) = (g.clone(), q.clone(), h.clone());
            for step in 0..steps {
                let (g2, q2, h2) = (
                    mv(&gc, eps, &mut rr),
                    mv(&qc, eps, &mut rr),
                    mv(&hc, eps, &mut rr),
                );
                if step == 0 {
                    rel.extend((0..bsz).map(|it| moved(&g2, &q2, &h2, it)));
                }
                // Rotate the order between calls.
                for k in 0..active.len() {
                    let e = active[(k + round + step) % active.len()];
                    let (ti, out) = call(engines[e], &ws[e], &g2, &q2, &h2);
                    tt[e] += ti / steps as f64;
                    if e == 0 {
                        ipm_iters += out.outs.iter().map(|o| o.iters).sum::<usize>();
                    }
                    for o in &out.outs {
                        *names[e].entry(o.engine).or_default() += 1;
                    }
                    xs[e] = out.xs;
                }
                if !ipm_only {
                    for e in [1, 2] {
                        let dx = xs[0]
                            .iter()
                            .zip(&xs[e])
                            .fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
                        let scale = xs[0].iter().fold(1.0f64, |s, v| s.max(v.abs()));
                        max_dx = max_dx.max(dx / scale);
                    }
                }
                (gc, qc, hc) = (g2, q2, h2);
            }
            for e in 0..3 {
                t[e].push(tt[e]);
            }
            if ipm_only {
                continue;
            }
            r_as.push(tt[1] / tt[0]);
            r_auto.push(tt[2] / tt[0]);
        }
        let ti = med(&mut t[0]) * 1e3;
        if ipm_only {
            println!("move {eps:5.3}: ipm {ti:.3} ms");
            continue;
        }
        if eps == 0.0 {
            println!(
                "first call (cold): ipm {:.3} ms, active_set (cold session) {:.3} ms",
                med(&mut first[0]) * 1e3,
                med(&mut first[1]) * 1e3
            );
        }
        println!(
            "move {eps:5.3} (auto's measure: median {:.3}): ipm {ti:.3} ms ({:.1} iters/item); active_set/ipm {:.2}, auto/ipm {:.2}; active_set answered by {:?}; auto by {:?}; max |x - x_ipm| / max(1, |x_ipm|) {max_dx:.1e}",
            med(&mut rel),
            ipm_iters as f64 / (rounds * steps * bsz) as f64,
            med(&mut r_as),
            med(&mut r_auto),
            names[1],
            names[2],
        );
    }
}
