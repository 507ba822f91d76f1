//! The conic class's stage (options.rs `Stage`): one IPM solve with the stage's iteration
//! cap and nothing after it, its status "optimal" only when the point meets the caller's
//! tol and "optimal_inaccurate" for a usable point short of it; the QP class ignores it.
mod common;

use common::{one_row_lp, opts, softmax, softmax_structure};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl,
};
use pounce_layers_core::options::{BackendOptions, SolveOptions, Stage};
use pounce_layers_core::structure::ConicStructure;

fn run(st: &ConicStructure, so: &SolveOptions, a: &[f64], q: &[f64], b: &[f64]) -> BatchOutput {
    let inp = BatchInput {
        bsz: 1,
        p: None,
        a,
        q,
        b,
        warm: None,
    };
    let ws = ForwardWorkspaces::new();
    solve_batch(
        st,
        so,
        &BackendOptions::default(),
        &inp,
        &RunControl::default(),
        &ws,
    )
}

fn staged(tol: f64, stage_tol: f64, max_iter: usize) -> SolveOptions {
    SolveOptions {
        stage: Some(Stage {
            tol: stage_tol,
            max_iter,
        }),
        ..opts(tol)
    }
}

#[test]
fn a_short_stage_returns_its_point_unfinished() {
    let k = 12;
    let (st, a, b) = softmax_structure(k);
    let mut q: Vec<f64> = (0..k).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.7).collect();
    q.extend(std::iter::repeat_n(-1.0, k));
    // Without a stage, one iteration is an iteration limit (and the certificate search).
    let capped = SolveOptions {
        max_iter: 1,
        ..opts(1e-8)
    };
    assert_eq!(
        run(&st, &capped, &a, &q, &b).outs[0].status,
        "iteration_limit"
    );
    // A one-iteration stage: that iteration only, a usable point short of tol.
    let one = run(&st, &staged(1e-8, 1e-8, 1), &a, &q, &b);
    assert_eq!(one.outs[0].status, "optimal_inaccurate");
    assert_eq!(one.outs[0].iters, 1);
    let soft = softmax(&q[..k]);
    let far = one.xs[..k]
        .iter()
        .zip(&soft)
        .fold(0.0_f64, |m, (x, r)| m.max((x - r).abs()));
    assert!(far > 1e-6, "one iteration already at the answer ({far:e})");
    // A stage long enough to converge: "optimal" at the caller's tol, softmax(-c).
    let all = run(&st, &staged(1e-8, 1e-8, 200), &a, &q, &b);
    assert_eq!(all.outs[0].status, "optimal");
    let dx = all.xs[..k]
        .iter()
        .zip(&soft)
        .fold(0.0_f64, |m, (x, r)| m.max((x - r).abs()));
    assert!(dx < 1e-7, "|x - softmax(-c)| = {dx:e}");
}

#[test]
fn the_qp_class_ignores_the_stage() {
    let st = one_row_lp();
    // min x s.t. -x + s = 1, s >= 0 (x >= -1): x = -1.
    let out = run(&st, &staged(1e-9, 1e-1, 1), &[-1.0], &[1.0], &[1.0]);
    assert_eq!(out.outs[0].status, "optimal");
    assert!((out.xs[0] + 1.0).abs() < 1e-7, "x = {}", out.xs[0]);
    assert!(out.outs[0].iters > 1);
}
