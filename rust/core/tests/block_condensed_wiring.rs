//! The adjoint's K with cone blocks reaches the block-condensed backend (unless the backend
//! options turn it off): counted by `block_condensed::factorizations()`. One test in its own
//! binary, so no other test's factorizations run while it counts.
mod common;

use common::{opts, softmax_structure};
use pounce_layers_core::batch::{solve_batch, BatchInput, ForwardWorkspaces, RunControl};
use pounce_layers_core::block_condensed::factorizations;
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::cone_snap::SnapCones;
use pounce_layers_core::kkt_adjoint::{adjoint_batch, AdjointInput, AdjointWorkspaces, KktPattern};
use pounce_layers_core::options::BackendOptions;

#[test]
fn the_adjoint_factors_cone_blocks_condensed_unless_told_not_to() {
    let (k, bsz) = (6, 3);
    let (st, a1, b1) = softmax_structure(k);
    let (n, m) = (st.n(), st.m());
    let a: Vec<f64> = (0..bsz).flat_map(|_| a1.clone()).collect();
    let b: Vec<f64> = (0..bsz).flat_map(|_| b1.clone()).collect();
    let q: Vec<f64> = (0..bsz * n)
        .map(|i| {
            if i % n < k {
                ((i * 7 % 5) as f64 - 2.0) * 0.6
            } else {
                -1.0
            }
        })
        .collect();
    let inp = BatchInput {
        bsz,
        p: None,
        a: &a,
        q: &q,
        b: &b,
        warm: None,
    };
    let be = BackendOptions::default();
    let fwd = solve_batch(
        &st,
        &opts(1e-10),
        &be,
        &inp,
        &RunControl::default(),
        &ForwardWorkspaces::new(),
    );
    assert!(fwd.outs.iter().all(|o| o.status == "optimal"));
    // H at the solutions' snapped pairs, the adjoint's layout.
    let cones = SnapCones::new(&st.layout);
    let (hdl, hbl) = (st.layout.h_diag_len(), st.layout.h_blocks_len());
    let (mut hd, mut hb) = (vec![0.0; bsz * hdl], vec![0.0; bsz * hbl]);
    for i in 0..bsz {
        cones.scaling_at_snap(
            &fwd.ss[i * m..(i + 1) * m],
            &fwd.ys[i * m..(i + 1) * m],
            &mut hd[i * hdl..(i + 1) * hdl],
            &mut hb[i * hbl..(i + 1) * hbl],
        );
    }
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
