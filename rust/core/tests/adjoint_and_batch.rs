//! The batched forward (batch.rs) on problems with known solutions, infeasibility and
//! unboundedness certificates (certificates.rs) on tiny LPs, and the sparse KKT adjoint
//! (kkt_adjoint.rs) against a dense reference solve.
mod common;

use common::{dense_solve, lp, one_row_lp, opts, rel_err, saddle, solve_lps, Rng};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl,
};
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::certificates::{find, Certificate};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::kkt_adjoint::{
    adjoint_batch, h_lens, AdjointInput, AdjointWorkspaces, KktPattern,
};
use pounce_layers_core::options::{
    backend, robust_options, BackendOptions, QpEngine, SolveOptions,
};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::ConicStructure;

/// `B` box QPs `min 1/2 |x|^2 - c'x  s.t.  -1 <= x <= 1` (rows `x + s = 1`, `-x + s = 1`):
/// `x = clip(c, -1, 1)`, `y_up = max(c - 1, 0)`, `y_lo = max(-c - 1, 0)`.
#[test]
fn box_qps_reach_their_closed_form_and_workers_are_reused() {
    let (n, bsz) = (3, 5);
    let m = 2 * n;
    let p = CscPattern::new(n, n, &[0, 1, 2, 3], &[0, 1, 2], "p").unwrap();
    let a_ip: Vec<i64> = (0..=n as i64).map(|c| 2 * c).collect();
    let a_ix: Vec<i64> = (0..n as i64).flat_map(|c| [c, n as i64 + c]).collect();
    let a = CscPattern::new(m, n, &a_ip, &a_ix, "a").unwrap();
    let dims = ConeDims {
        l: m,
        ..Default::default()
    };
    let st = ConicStructure::new(n, m, Some(p), a, dims).unwrap();
    let mut rng = Rng::new(7);
    let c: Vec<f64> = (0..bsz * n).map(|_| 2.5 * rng.uniform()).collect();
    let q: Vec<f64> = c.iter().map(|v| -v).collect();
    let pv = vec![1.0; bsz * n];
    let av: Vec<f64> = (0..bsz * n).flat_map(|_| [1.0, -1.0]).collect();
    let b = vec![1.0; bsz * m];
    let inp = BatchInput {
        bsz,
        p: Some(&pv),
        a: &av,
        q: &q,
        b: &b,
        warm: None,
    };
    let ws = ForwardWorkspaces::new();
    // The IPM engine: the second call repeats the first's values (under `auto` it would
    // take the active set, qp_engine.rs).
    let so = SolveOptions {
        engine: QpEngine::Ipm,
        ..opts(1e-10)
    };
    let run = || {
        solve_batch(
            &st,
            &so,
            &BackendOptions::default(),
            &inp,
            &RunControl::default(),
            &ws,
        )
    };
    let out = run();
    for i in 0..bsz {
        assert_eq!(out.outs[i].status, "optimal");
        for j in 0..n {
            let cj = c[i * n + j];
            assert!((out.xs[i * n + j] - cj.clamp(-1.0, 1.0)).abs() < 1e-7);
            assert!((out.ys[i * m + j] - (cj - 1.0).max(0.0)).abs() < 1e-7);
            assert!((out.ys[i * m + n + j] - (-cj - 1.0).max(0.0)).abs() < 1e-7);
        }
    }
    assert!(
        ws.held() > 0,
        "the workers' factorizations are kept for the next call"
    );
    let again = run();
    assert_eq!(again.xs, out.xs);
    assert_eq!(again.ys, out.ys);
}

/// One item's panic fails that item only; a cancelled batch starts no item.
#[test]
fn panics_stay_in_their_item_and_cancel_skips_the_rest() {
    let st = one_row_lp();
    // min x s.t. x >= -1 (row -x + s = 1): x = -1.
    let (av, q, b) = (vec![-1.0; 3], vec![1.0; 3], vec![1.0; 3]);
    let ctl = RunControl {
        test_panic: TestPanic::Item(1),
        ..Default::default()
    };
    let ws = ForwardWorkspaces::new();
    let out = solve_lps(&st, 1e-9, (&av, &q, &b), &ctl, &ws);
    let status: Vec<&str> = out.outs.iter().map(|o| o.status).collect();
    assert_eq!(status, ["optimal", "numerical_failure", "optimal"]);
    assert!((out.xs[0] + 1.0).abs() < 1e-7 && (out.xs[2] + 1.0).abs() < 1e-7);
    assert_eq!(out.xs[1], 0.0);
    let cancel = Cancel::default();
    cancel.set();
    let ctl = RunControl {
        cancel,
        ..Default::default()
    };
    let out = solve_lps(&st, 1e-9, (&av, &q, &b), &ctl, &ws);
    assert!(out
        .outs
        .iter()
        .all(|o| o.status == "numerical_failure" && o.iters == 0));
}

/// `x >= 1` and `x <= 0`: rows `-x + s = -1`, `x + s = 0`. Certificate: `y >= 0`,
/// `A'y = -y0 + y1 = 0`, `b'y = -y0 = -1`, i.e. `y = (1, 1)`.
fn infeasible_lp() -> ConicStructure {
    let dims = ConeDims {
        l: 2,
        ..Default::default()
    };
    lp(1, 2, &[0, 2], &[0, 1], dims)
}

/// The batch's solve of one LP item at tol 1e-9, and `certificates::find`'s own certificate
/// for it.
fn solve_and_certify(
    st: &ConicStructure,
    (av, q, b): (&[f64], &[f64], &[f64]),
) -> (BatchOutput, Option<Certificate>) {
    let ws = ForwardWorkspaces::new();
    let out = solve_lps(st, 1e-9, (av, q, b), &RunControl::default(), &ws);
    let cfg = BackendOptions::default().feral_robust();
    let sol = find(st, None, av, q, b, &robust_options(&opts(1e-9)), || {
        backend(&cfg)
    });
    (out, sol)
}

#[test]
fn infeasible_lp_is_certified() {
    let st = infeasible_lp();
    let (av, b, q) = ([-1.0, 1.0], [-1.0, 0.0], [1.0]);
    let (out, sol) = solve_and_certify(&st, (&av, &q, &b));
    assert_eq!(out.outs[0].status, "primal_infeasible");
    // Normalised: b'y = -1, and the certificate's own equations.
    assert!(rel_err(&out.ys, &[1.0, 1.0]) < 1e-6, "{:?}", out.ys);
    assert_eq!((out.xs[0], out.ss.clone()), (0.0, vec![0.0, 0.0]));
    match sol {
        Some(Certificate::PrimalInfeasible { y, .. }) => assert!(rel_err(&y, &[1.0, 1.0]) < 1e-6),
        _ => panic!("no primal infeasibility certificate"),
    }
}

/// `min -x  s.t.  x >= 0` (row `-x + s = 0`): unbounded along `x = 1` (`q'x = -1`).
#[test]
fn unbounded_lp_is_certified() {
    let st = one_row_lp();
    let (av, b, q) = ([-1.0], [0.0], [-1.0]);
    let (out, sol) = solve_and_certify(&st, (&av, &q, &b));
    assert_eq!(out.outs[0].status, "dual_infeasible");
    assert!((out.xs[0] - 1.0).abs() < 1e-6);
    // s = -A x on the cone rows, y = 0.
    assert!((out.ss[0] - 1.0).abs() < 1e-6 && out.ys[0] == 0.0);
    match sol {
        Some(Certificate::DualInfeasible { x, .. }) => assert!((x[0] - 1.0).abs() < 1e-6),
        _ => panic!("no dual infeasibility certificate"),
    }
}

/// `x <= 0` and `(0, 1, x) in K_exp` (i.e. `x >= 1`): infeasible, with an exp cone, so
/// the batch looks for the certificate itself when POUNCE's driver gives no verdict.
#[test]
fn infeasible_exp_problem_is_certified() {
    let dims = ConeDims {
        l: 1,
        ep: 1,
        ..Default::default()
    };
    let st = lp(1, 4, &[0, 2], &[0, 3], dims);
    let (av, b, q) = ([1.0, -1.0], [0.0, 0.0, 1.0, 0.0], [1.0]);
    let out = solve_lps(
        &st,
        1e-8,
        (&av, &q, &b),
        &RunControl::default(),
        &ForwardWorkspaces::new(),
    );
    assert_eq!(out.outs[0].status, "primal_infeasible");
    let y = &out.ys;
    let by: f64 = b.iter().zip(y).map(|(u, v)| u * v).sum();
    assert!((by + 1.0).abs() < 1e-6, "b'y = {by}");
    let aty = av[0] * y[0] + av[1] * y[3];
    assert!(aty.abs() < 1e-5, "A'y = {aty}");
    assert!(y[0] >= -1e-9);
}

/// The sparse adjoint against a dense reference: `K [u; v] = [gx; gy - H gs]` with
/// `K = [[P_eff, A'], [A, -H]]`, then the gradient formulas of docs/design.md.
#[test]
fn adjoint_matches_a_dense_reference_solve() {
    let (n, bsz) = (4, 2);
    let dims = ConeDims {
        z: 1,
        l: 2,
        q: vec![3],
        ..Default::default()
    };
    let m = 6;
    let st = ConicStructure::new(
        n,
        m,
        Some(CscPattern::dense(n, n)),
        CscPattern::dense(m, n),
        dims.clone(),
    )
    .unwrap();
    let (hdl, hbl) = h_lens(&dims).unwrap();
    assert_eq!((hdl, hbl), (3, 9));
    let mut rng = Rng::new(11);
    let (nn, mn) = (n * n, m * n);
    let mut pv = Vec::new();
    for _ in 0..bsz {
        // P = L L' + I, stored asymmetrically (P_eff = (P + P')/2 is what counts).
        let l = rng.vec(nn);
        for c in 0..n {
            for r in 0..n {
                let s: f64 = (0..n).map(|k| l[r * n + k] * l[c * n + k]).sum();
                pv.push(s + f64::from(u8::from(r == c)) + 0.1 * (r as f64 - c as f64));
            }
        }
    }
    let av = rng.vec(bsz * mn);
    let mut h_diag = Vec::new();
    let mut h_blocks = Vec::new();
    for _ in 0..bsz {
        h_diag.extend([0.0, 0.5 + rng.uniform().abs(), 2.0 + rng.uniform()]);
        let g = rng.vec(9);
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| g[i * 3 + k] * g[j * 3 + k]).sum();
                h_blocks.push(s + f64::from(u8::from(i == j)));
            }
        }
    }
    let (x, y) = (rng.vec(bsz * n), rng.vec(bsz * m));
    let (gx, gy, gs) = (rng.vec(bsz * n), rng.vec(bsz * m), rng.vec(bsz * m));
    let ok = [true, false];
    let pat = KktPattern::new(&st);
    let inp = AdjointInput {
        bsz,
        p: Some(&pv),
        a: &av,
        h_diag: &h_diag,
        h_blocks: &h_blocks,
        x: &x,
        y: &y,
        gx: &gx,
        gy: &gy,
        gs: &gs,
        ok: &ok,
        kept: &[],
    };
    let g = adjoint_batch(
        &st,
        &pat,
        &BackendOptions::default(),
        &inp,
        &Cancel::default(),
        TestPanic::Off,
        &AdjointWorkspaces::new(),
    );
    assert_eq!(g.solved, vec![true, false]);
    assert!(g.dq[n..]
        .iter()
        .chain(&g.db[m..])
        .chain(&g.da[mn..])
        .all(|&v| v == 0.0));

    // Dense reference for item 0.
    let pm = |r: usize, c: usize| 0.5 * (pv[c * n + r] + pv[r * n + c]);
    let am = |r: usize, c: usize| av[c * m + r];
    let mut h = vec![vec![0.0; m]; m];
    for i in 0..3 {
        h[i][i] = h_diag[i];
        for j in 0..3 {
            h[3 + i][3 + j] = h_blocks[i * 3 + j];
        }
    }
    let k = saddle(n, m, pm, am, |i, j| -h[i][j]);
    let mut rhs = gx[..n].to_vec();
    rhs.extend((0..m).map(|i| gy[i] - (0..m).map(|j| h[i][j] * gs[j]).sum::<f64>()));
    let sol = dense_solve(&k, &rhs);
    let (u, v) = sol.split_at(n);
    let dq: Vec<f64> = u.iter().map(|a| -a).collect();
    assert!(rel_err(&g.dq[..n], &dq) < 1e-9);
    assert!(rel_err(&g.db[..m], v) < 1e-9);
    let da: Vec<f64> = (0..mn)
        .map(|kk| {
            let (r, c) = (kk % m, kk / m);
            -(y[r] * u[c] + v[r] * x[c])
        })
        .collect();
    assert!(rel_err(&g.da[..mn], &da) < 1e-9);
    let dp: Vec<f64> = (0..nn)
        .map(|kk| {
            let (r, c) = (kk % n, kk / n);
            -0.5 * (u[r] * x[c] + u[c] * x[r])
        })
        .collect();
    assert!(rel_err(&g.dp[..nn], &dp) < 1e-9);
}
