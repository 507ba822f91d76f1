//! The adjoint's K with cone blocks reaches the block-condensed backend (unless the backend
//! options turn it off): counted by `block_condensed::factorizations()`. One test in its own
//! binary, so no other test's factorizations run while it counts.
mod common;

use common::{opts, softmax_batch};
use pounce_layers_core::block_condensed::factorizations;
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::cone_snap::{batch_scalings, SnapCones};
use pounce_layers_core::kkt_adjoint::{adjoint_batch, AdjointInput, AdjointWorkspaces, KktPattern};
use pounce_layers_core::options::BackendOptions;

#[test]
fn the_adjoint_factors_cone_blocks_condensed_unless_told_not_to() {
    let (k, bsz) = (6, 3);
    let costs = |i: usize| {
        (0..k)
            .map(|j| (((i + 1) * (j + 3) * 7 % 5) as f64 - 2.0) * 0.6)
            .collect()
    };
    let (st, a, _, _, fwd) = softmax_batch(k, bsz, costs, &opts(1e-10));
    let (n, m) = (st.n(), st.m());
    assert!(fwd.outs.iter().all(|o| o.status == "optimal"));
    // H at the solutions' snapped pairs, the adjoint's layout.
    let cones = SnapCones::new(&st.layout);
    let (hd, hb) = batch_scalings(&st, &cones, &fwd.ss, &fwd.ys, &vec![true; bsz]);
    let gx: Vec<f64> = (0..bsz * n).map(|i| (i % 3) as f64 - 1.0).collect();
    let zeros = vec![0.0; bsz * m];
    let ok = vec![true; bsz];
    let pat = KktPattern::new(&st);
    let run = |backends: &BackendOptions| {
        let inp = AdjointInput {
            bsz,
            p: None,
            a: &a,
            h_diag: &hd,
            h_blocks: &hb,
            x: &fwd.xs,
            y: &fwd.ys,
            gx: &gx,
            gy: &zeros,
            gs: &zeros,
            ok: &ok,
            kept: &[],
        };
        let before = factorizations();
        let g = adjoint_batch(
            &st,
            &pat,
            backends,
            &inp,
            &Cancel::default(),
            TestPanic::Off,
            &AdjointWorkspaces::new(),
        );
        assert!(g.solved.iter().all(|&s| s));
        (factorizations() - before, g.dq)
    };
    let (condensed, dq_on) = run(&BackendOptions::default());
    assert!(
        condensed >= bsz,
        "{condensed} block-condensed factorizations for {bsz} items"
    );
    let off = BackendOptions {
        block_condense: Some(false),
        ..BackendOptions::default()
    };
    let (none, dq_off) = run(&off);
    assert_eq!(none, 0);
    // Either way the same gradients.
    for (u, v) in dq_on.iter().zip(&dq_off) {
        assert!((u - v).abs() <= 1e-8 * (1.0 + v.abs()), "{u} vs {v}");
    }
}
