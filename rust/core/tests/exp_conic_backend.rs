//! The conic class's linear-solver choice (options.rs `conic_backend`): the policy's
//! verdicts on the KKT sizes measured in docs/exp-socp-profile.md, and solves through it
//! against feral and against closed-form answers.
mod common;

use common::{entropy_problem, Rng};
use pounce_convex::{solve_socp_ipm, ConeSpec, QpOptions, QpProblem, QpStatus, Triplet};
use pounce_layers_core::options::{
    backend, conic_backend, meets_tol, staged_nonsym_options, use_dense_conic, BackendOptions,
    KktBackend,
};

/// min ||A x - b||_2 + c'x s.t. ||x||_2 <= 1 (A k x k), over v = (x, t): min t + c'x with
/// (t, A x - b) and (1, x) in second-order cones (slack s = h - G v).
fn socp(k: usize, seed: u64) -> (QpProblem, Vec<ConeSpec>) {
    let mut r = Rng::new(seed);
    let (n, t) = (k + 1, k);
    let mut g = vec![Triplet::new(0, t, -1.0)];
    let mut h = vec![0.0];
    for row in 0..k {
        for col in 0..k {
            g.push(Triplet::new(1 + row, col, -r.uniform()));
        }
        h.push(-r.uniform());
    }
    h.push(1.0);
    for i in 0..k {
        g.push(Triplet::new(k + 2 + i, i, -1.0));
        h.push(0.0);
    }
    let mut c: Vec<f64> = (0..k).map(|_| r.uniform()).collect();
    c.push(1.0);
    let prob = QpProblem {
        n,
        p_lower: vec![],
        c,
        a: vec![],
        b: vec![],
        g,
        h,
        lb: vec![],
        ub: vec![],
    };
    (
        prob,
        vec![ConeSpec::SecondOrder(k + 1), ConeSpec::SecondOrder(k + 1)],
    )
}

/// The entropy problem (common.rs) with costs uniform in [-2, 2); its x is softmax(-c).
fn entropy(k: usize, seed: u64) -> (QpProblem, Vec<ConeSpec>, Vec<f64>) {
    let mut r = Rng::new(seed);
    let cx: Vec<f64> = (0..k).map(|_| 2.0 * r.uniform()).collect();
    entropy_problem(&cx)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn policy_on_the_measured_kkt_sizes() {
    // SOCPs n = 5, 20, 40, 80 of the profile (dim, lower nnz): dense.
    for (dim, nnz) in [(22, 67), (67, 532), (127, 1852), (247, 6892)] {
        assert!(use_dense_conic(dim, nnz), "SOCP KKT {dim}/{nnz}");
    }
    // Exp cones: dense up to dim 64 whatever the fill, feral for the sparse larger ones.
    assert!(use_dense_conic(55, 140));
    for (dim, nnz) in [(101, 221), (105, 275), (201, 441), (205, 545)] {
        assert!(!use_dense_conic(dim, nnz), "exp KKT {dim}/{nnz}");
    }
    // Above the dense backend's size limit: never.
    assert!(!use_dense_conic(401, 401 * 402 / 2));
    let force = |k| BackendOptions {
        kkt_backend: k,
        ..BackendOptions::default()
    };
    assert!(force(KktBackend::Dense).dense_conic_kkt(1000, 1000));
    assert!(!force(KktBackend::Feral).dense_conic_kkt(10, 55));
}

#[test]
fn socp_through_the_policy_matches_feral() {
    let bo = BackendOptions::default();
    let opts = QpOptions::default();
    for (k, seed) in [(5, 1), (20, 2), (40, 3)] {
        let (prob, specs) = socp(k, seed);
        let feral = solve_socp_ipm(&prob, &specs, &opts, || backend(&bo.feral_robust()));
        let chosen = solve_socp_ipm(&prob, &specs, &opts, || {
            conic_backend(&bo, &bo.feral_robust())
        });
        assert_eq!(feral.status, QpStatus::Optimal, "k = {k}");
        assert_eq!(chosen.status, QpStatus::Optimal, "k = {k}");
        // POUNCE's Optimal is not always within 1e-8 on our residuals (k = 5 here, with
        // either backend); the chosen backend meets every tol feral meets.
        for tol in [1e-8, 1e-7] {
            let feral_meets = meets_tol(&prob, &specs, &feral, tol);
            assert!(
                !feral_meets || meets_tol(&prob, &specs, &chosen, tol),
                "k = {k}"
            );
        }
        assert!(meets_tol(&prob, &specs, &chosen, 1e-7), "k = {k}");
        let d = max_diff(&feral.x, &chosen.x);
        assert!(d < 1e-7, "k = {k}: |x_dense - x_feral| = {d:e}");
        assert!(max_diff(&feral.z, &chosen.z) < 1e-6, "k = {k}");
    }
}

#[test]
fn feral_override_reaches_the_conic_backend() {
    // KktBackend::Feral keeps feral for every KKT: the same iterates as plain feral.
    let bo = BackendOptions {
        kkt_backend: KktBackend::Feral,
        ..BackendOptions::default()
    };
    let (prob, specs) = socp(5, 4);
    let opts = QpOptions::default();
    let a = solve_socp_ipm(&prob, &specs, &opts, || backend(&bo.feral_robust()));
    let b = solve_socp_ipm(&prob, &specs, &opts, || {
        conic_backend(&bo, &bo.feral_robust())
    });
    assert_eq!(a.iters, b.iters);
    assert_eq!(a.x, b.x);
}

#[test]
fn entropy_through_the_policy_is_softmax() {
    // The engine's staged exp solve (options.rs) on the chosen backend: dense at k = 2, 10
    // (KKT dim <= 64), feral at k = 30 (dim 151, fill 0.03).
    let bo = BackendOptions::default();
    let opts = QpOptions::default();
    for (k, seed) in [(2, 5), (10, 6), (30, 7)] {
        let (prob, specs, soft) = entropy(k, seed);
        let run = |o: &QpOptions| {
            solve_socp_ipm(&prob, &specs, o, || conic_backend(&bo, &bo.feral_robust()))
        };
        let staged = staged_nonsym_options(&opts, &specs).expect("exp cones stage");
        let mut sol = run(&staged);
        if !meets_tol(&prob, &specs, &sol, opts.tol) {
            sol = run(&opts);
        }
        assert_eq!(sol.status, QpStatus::Optimal, "k = {k}");
        assert!(meets_tol(&prob, &specs, &sol, 1e-8), "k = {k}");
        let d = max_diff(&sol.x[..k], &soft);
        assert!(d < 1e-8, "k = {k}: |x - softmax(-c)| = {d:e}");
    }
}
