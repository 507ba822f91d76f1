//! The native Newton steps (newton_steps.rs) from a two-iteration interior-point stage on
//! softmax problems (exp cones): they end at softmax(-c), the closed form, with a residual
//! at rounding; an item not ok comes back as given; the step budget holds; an item that
//! panics is failed and the others are still solved.
mod common;

use common::{opts, softmax, softmax_batch};
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::cone_snap::SnapCones;
use pounce_layers_core::kkt_adjoint::{AdjointWorkspaces, KktPattern};
use pounce_layers_core::newton_steps::{newton_batch, NewtonInput, NewtonOut, NewtonSettings};
use pounce_layers_core::options::{BackendOptions, SolveOptions, Stage};

const K: usize = 6;
const B: usize = 3;

fn costs(i: usize) -> Vec<f64> {
    let mut q: Vec<f64> = (0..K)
        .map(|j| (((i + 2) * (j + 1) * 7 % 5) as f64 - 2.0) * 0.6)
        .collect();
    q.extend(std::iter::repeat_n(-1.0, K));
    q
}

fn steps_from_stage(
    ok: &[bool],
    max_steps: usize,
    panic: TestPanic,
) -> (NewtonOut, Vec<Vec<f64>>, Vec<f64>) {
    let so = SolveOptions {
        stage: Some(Stage {
            tol: 1e-8,
            max_iter: 2,
        }),
        ..opts(1e-8)
    };
    let (st, a, b, q, fwd) = softmax_batch(K, B, costs, &so);
    let be = BackendOptions::default();
    assert!(fwd.outs.iter().all(|o| o.status == "optimal_inaccurate"));
    let cones = SnapCones::new(&st.layout);
    let pat = KktPattern::new(&st);
    let out = newton_batch(
        &st,
        &cones,
        &pat,
        &be,
        &NewtonInput {
            bsz: B,
            p: None,
            a: &a,
            q: &q,
            b: &b,
            x: &fwd.xs,
            y: &fwd.ys,
            s: &fwd.ss,
            ok,
        },
        &NewtonSettings {
            target: 1e-14,
            floor: 1e-15,
            max_steps,
        },
        &Cancel::default(),
        panic,
        &AdjointWorkspaces::new(),
    );
    let soft = (0..B).map(|i| softmax(&costs(i)[..K])).collect();
    (out, soft, fwd.xs)
}

#[test]
fn steps_from_a_stage_reach_the_closed_form() {
    let (out, soft, _) = steps_from_stage(&[true; B], 8, TestPanic::Off);
    let n = 2 * K;
    for (i, soft) in soft.iter().enumerate() {
        assert!(!out.failed[i]);
        assert!(out.steps[i] >= 1 && out.steps[i] <= 8, "{:?}", out.steps);
        assert!(out.before[i] > 1e-6, "the stage is not at the answer");
        assert!(
            out.after[i] < 1e-13,
            "item {i}: residual {:e}",
            out.after[i]
        );
        let x = &out.x[i * n..i * n + K];
        let err = x
            .iter()
            .zip(soft)
            .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "item {i}: |x - softmax(-c)| = {err:e}");
    }
}

#[test]
fn an_item_not_ok_is_handed_back_and_the_budget_holds() {
    let (out, _, given) = steps_from_stage(&[true, false, true], 1, TestPanic::Off);
    let n = 2 * K;
    assert_eq!(out.steps, vec![1, 0, 1]);
    assert!(out.before[1].is_nan() && out.after[1].is_nan() && !out.failed[1]);
    assert_eq!(&out.x[n..2 * n], &given[n..2 * n]);
    // One step lowers the residual but does not finish.
    for i in [0, 2] {
        assert!(
            out.after[i] < out.before[i] && out.after[i] > 1e-14,
            "{:?}",
            out.after
        );
    }
}

#[test]
fn a_panicking_item_fails_alone() {
    let (out, soft, given) = steps_from_stage(&[true; B], 8, TestPanic::Item(1));
    let n = 2 * K;
    assert_eq!(out.failed, vec![false, true, false]);
    assert_eq!(&out.x[n..2 * n], &given[n..2 * n]);
    for i in [0, 2] {
        let x = &out.x[i * n..i * n + K];
        let err = x
            .iter()
            .zip(&soft[i])
            .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-12, "item {i}: |x - softmax(-c)| = {err:e}");
    }
}
