//! The exp-cone shear (exp_shear.rs): the sheared problem, solved cold, gives the
//! original's solution once mapped back (x, and z through T'), within tol on the
//! original's own residuals, for c from that solution's slack and for c from a nearby
//! problem's solution.
mod common;

use common::entropy_problem;
use pounce_convex::{solve_socp_ipm, ConeSpec, QpOptions, QpProblem, QpStatus};
use pounce_layers_core::exp_shear::ExpShear;
use pounce_layers_core::options::{backend, meets_tol, staged_nonsym_options, BackendOptions};

/// The entropy problem (common.rs) with costs `((7i mod 5) - 2) 0.7 + shift i`; its x is
/// softmax(-c).
fn entropy(k: usize, shift: f64) -> (QpProblem, Vec<ConeSpec>, Vec<f64>) {
    let cx: Vec<f64> = (0..k)
        .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.7 + shift * i as f64)
        .collect();
    entropy_problem(&cx)
}

fn staged(prob: &QpProblem, specs: &[ConeSpec]) -> pounce_convex::QpSolution {
    let bo = BackendOptions::default();
    let opts = QpOptions::default();
    let run = |o: &QpOptions| solve_socp_ipm(prob, specs, o, || backend(&bo.feral_robust()));
    let sol = run(&staged_nonsym_options(&opts, specs).unwrap());
    if meets_tol(prob, specs, &sol, opts.tol) {
        sol
    } else {
        run(&opts)
    }
}

#[test]
fn sheared_solution_maps_back() {
    for (k, shift) in [(3, 0.0), (12, 0.0), (12, 0.05)] {
        let (prob, specs, soft) = entropy(k, 0.0);
        let plain = staged(&prob, &specs);
        assert_eq!(plain.status, QpStatus::Optimal);
        // c from the solution of the problem itself (shift 0) or of a nearby one.
        let (near, _, _) = entropy(k, shift);
        let x0 = if shift == 0.0 {
            plain.x.clone()
        } else {
            staged(&near, &specs).x
        };
        let sh = ExpShear::from_primal(&prob, &specs, &x0).expect("softmax slacks give c != 1");
        assert_eq!(sh.blocks.len(), k);
        for (i, &(off, c)) in sh.blocks.iter().enumerate() {
            assert_eq!(off, 3 * i);
            assert!(c > 0.0 && c < 1.0, "c = s_y / s_z = x_i in (0, 1), got {c}");
        }
        let q = sh.problem(&prob);
        let mut sol = staged(&q, &specs);
        assert_eq!(sol.status, QpStatus::Optimal, "k = {k}");
        sh.unshear(&mut sol);
        // The original problem's own residuals (stationarity with the original G and the
        // mapped-back z, complementarity, primal) within tol.
        assert!(
            meets_tol(&prob, &specs, &sol, 1e-8),
            "k = {k}, shift = {shift}"
        );
        let dx = sol.x[..k]
            .iter()
            .zip(&soft)
            .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(dx < 1e-8, "k = {k}: |x - softmax(-c)| = {dx:e}");
        let dz = sol
            .z
            .iter()
            .zip(&plain.z)
            .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(dz < 1e-6, "k = {k}: |z - z_plain| = {dz:e}");
    }
}

#[test]
fn warm_and_unshear_are_inverse_on_z() {
    let (prob, specs, _) = entropy(4, 0.0);
    let sh = ExpShear {
        blocks: (0..4).map(|i| (3 * i, 0.1 + 0.3 * i as f64)).collect(),
    };
    let z: Vec<f64> = (0..12).map(|i| 0.5 + i as f64).collect();
    let w = pounce_convex::QpWarmStart {
        x: vec![0.0; prob.n],
        y: vec![0.0],
        z: z.clone(),
        z_lb: vec![],
        z_ub: vec![],
    };
    let mut sol = staged(&prob, &specs);
    sol.z = sh.warm(&w).z;
    sh.unshear(&mut sol);
    let d = sol
        .z
        .iter()
        .zip(&z)
        .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(d < 1e-12, "{d:e}");
    // No exp block, or c = 1 everywhere: no shear.
    assert!(ExpShear::from_primal(&prob, &[ConeSpec::Nonneg(12)], &vec![0.0; prob.n]).is_none());
}
