//! solve_batch on an exp-cone layer with a warm start, where the engine solves the sheared
//! equivalent (exp_shear.rs) and maps it back: the answer is the problem's (softmax(-c)),
//! in the SCS convention (duals equal to the cold solve's), status optimal.
mod common;

use common::{softmax, softmax_structure};
use pounce_layers_core::batch::{solve_batch, BatchInput, ForwardWorkspaces, RunControl};
use pounce_layers_core::options::{BackendOptions, QpEngine, SolveOptions};

#[test]
fn warm_exp_solve_is_the_problems_answer() {
    let k = 12;
    let (st, a, b) = softmax_structure(k);
    let so = SolveOptions {
        tol: 1e-8,
        max_iter: 200,
        time_limit: None,
        engine: QpEngine::Auto,
        stage: None,
    };
    let bo = BackendOptions::default();
    let ws = ForwardWorkspaces::new();
    let q_of = |shift: f64| -> Vec<f64> {
        let mut q: Vec<f64> = (0..k)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.7 + shift * i as f64)
            .collect();
        q.extend(std::iter::repeat_n(-1.0, k));
        q
    };
    let run = |q: &[f64], warm: Option<(&[f64], &[f64])>| {
        let inp = BatchInput {
            bsz: 1,
            p: None,
            a: &a,
            q,
            b: &b,
            warm,
        };
        solve_batch(&st, &so, &bo, &inp, &RunControl::default(), &ws)
    };
    let q0 = q_of(0.0);
    let cold0 = run(&q0, None);
    assert_eq!(cold0.outs[0].status, "optimal");
    // The next "training step": c moved a little, warm from the previous answer.
    let q1 = q_of(0.03);
    let warm1 = run(&q1, Some((&cold0.xs, &cold0.ys)));
    let cold1 = run(&q1, None);
    assert_eq!(warm1.outs[0].status, "optimal");
    let soft = softmax(&q1[..k]);
    let dx = warm1.xs[..k]
        .iter()
        .zip(&soft)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(dx < 1e-8, "|x - softmax(-c)| = {dx:e}");
    let dy = warm1
        .ys
        .iter()
        .zip(&cold1.ys)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(dy < 1e-6, "|y_warm - y_cold| = {dy:e}");
    let ds = warm1
        .ss
        .iter()
        .zip(&cold1.ss)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(ds < 1e-8, "|s_warm - s_cold| = {ds:e}");
}
