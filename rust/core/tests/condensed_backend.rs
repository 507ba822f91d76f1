//! The condensed backend (condensed_backend.rs) through pounce-linsol's interface: its solves
//! and inertia against the dense LBL' on QP-shaped KKTs (x block, equality rows with a small
//! negative diagonal, inequality rows with a scaling diagonal spanning many decades), its
//! fallback where the Schur complement is not positive definite or the pattern does not
//! condense, the structure POUNCE's QP IPM hands it, IPM solutions with it equal to those
//! with the full dense factor and with feral (optimal, degenerate and infeasible items), and
//! the adjoint's gradients with it equal to the dense LBL's.
mod common;

use common::{dense_qp, dense_solve, matvec, opts, rel_err, saddle, Dense, Rng};
use pounce_convex::{QpFactorization, QpOptions, QpStatus};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl,
};
use pounce_layers_core::block_condensed::BlockCondensedBackend;
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::condensed_backend::{
    trailing_diagonal_split, use_condensed, CondensedBackend, CondensedStats,
};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::dense_backend::DenseLbltBackend;
use pounce_layers_core::kkt_adjoint::{adjoint_batch, AdjointInput, AdjointWorkspaces, KktPattern};
use pounce_layers_core::options::{BackendOptions, KktBackend, QpEngine, SolveOptions};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::ConicStructure;
use pounce_linsol::{ESymSolverStatus, SparseSymLinearSolverInterface};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// 1-based lower-triangle triplets of `k`'s nonzeros (the diagonal always stored); with
/// `upper`, the off-diagonal entries are given in the upper triangle instead.
fn triplets(k: &Dense, upper: bool) -> (Vec<i32>, Vec<i32>, Vec<f64>) {
    let (mut r, mut c, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for (i, row) in k.iter().enumerate() {
        for (j, &x) in row.iter().enumerate().take(i + 1) {
            if x != 0.0 || i == j {
                let (a, b) = if upper { (j, i) } else { (i, j) };
                r.push(a as i32 + 1);
                c.push(b as i32 + 1);
                v.push(x);
            }
        }
    }
    (r, c, v)
}

struct Solved {
    status: ESymSolverStatus,
    negative: i32,
    x: Vec<f64>,
}

/// Factor `k` with `be` and solve the right-hand sides `rhs` (stored one after another).
fn solve_with(
    be: &mut dyn SparseSymLinearSolverInterface,
    k: &Dense,
    rhs: &[f64],
    upper: bool,
) -> Solved {
    let (r, c, v) = triplets(k, upper);
    assert_eq!(
        be.initialize_structure(k.len() as i32, v.len() as i32, &r, &c),
        ESymSolverStatus::Success
    );
    be.values_array_mut().copy_from_slice(&v);
    let mut x = rhs.to_vec();
    let nrhs = (rhs.len() / k.len()) as i32;
    let status = be.multi_solve(true, &r, &c, nrhs, &mut x, false, 0);
    Solved {
        status,
        negative: be.number_of_neg_evals(),
        x,
    }
}

/// The IPM's KKT `[[P + dw I, A', G'], [A, -dc I, 0], [G, 0, -W]]` with `P = R R' / n`
/// (positive semidefinite), `meq` equality and `mineq` inequality rows, `dc = eq_reg`, `W`
/// log-uniform in `[10^-w_dec, 10^w_dec]`.
fn qp_kkt(n: usize, meq: usize, mineq: usize, eq_reg: f64, w_dec: f64, rng: &mut Rng) -> Dense {
    let m = meq + mineq;
    let r = rng.vec(n * n);
    let g = rng.vec(m * n);
    let w: Vec<f64> = (0..m)
        .map(|i| {
            if i < meq {
                eq_reg
            } else {
                10f64.powf(w_dec * rng.uniform())
            }
        })
        .collect();
    saddle(
        n,
        m,
        |i, j| {
            (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64
                + if i == j { 1e-8 } else { 0.0 }
        },
        |i, j| g[i * n + j],
        |i, j| if i == j { -w[i] } else { 0.0 },
    )
}

#[test]
fn condensed_solves_and_inertia_match_the_dense_lblt() {
    for seed in 0..8u64 {
        let mut rng = Rng::new(seed);
        let (n, meq, mineq) = (
            10 + 3 * seed as usize,
            seed as usize % 4,
            12 + seed as usize,
        );
        // A well-conditioned K (scaling over 1e-2..1e2, equality diagonal 1e-3).
        let k = qp_kkt(n, meq, mineq, 1e-3, 2.0, &mut rng);
        let dim = k.len();
        let rhs = rng.vec(3 * dim);
        for (upper, refine) in [(false, false), (true, false), (false, true), (true, true)] {
            let stats = Arc::new(CondensedStats::default());
            let mut be = CondensedBackend::new(Box::new(DenseLbltBackend::new()))
                .refined(refine)
                .with_stats(stats.clone());
            let got = solve_with(&mut be, &k, &rhs, upper);
            let want = solve_with(&mut DenseLbltBackend::new(), &k, &rhs, upper);
            assert_eq!(got.status, ESymSolverStatus::Success);
            assert_eq!(be.lead_dim(), Some(n));
            assert!(!be.fell_back());
            assert_eq!(stats.condensed.load(Ordering::Relaxed), 1);
            assert_eq!(got.negative, (meq + mineq) as i32);
            assert_eq!(got.negative, want.negative);
            // Refined: to 1e-12; the IPM's unrefined solve: to 1e-9.
            let tol = if refine { 1e-12 } else { 1e-9 };
            for (a, b) in got.x.chunks(dim).zip(want.x.chunks(dim)) {
                let e = rel_err(a, b);
                assert!(
                    e < tol,
                    "seed {seed} refine {refine}: condensed vs LBL' {e:.2e}"
                );
            }
        }
    }
}

/// With the scaling spanning 1e-10..1e10 (an IPM's last iterations) S spans 1e10 and the
/// unrefined condensed solve leaves residuals up to ~1e-6 of |rhs|; refined against K (to a
/// componentwise backward error of `REFINE_REL`) it is within 1e-11, the LBL' at ~1e-14.
#[test]
fn wide_scaling_is_refined_to_the_lblt_residual() {
    for seed in 0..6u64 {
        let mut rng = Rng::new(100 + seed);
        let k = qp_kkt(30, 5, 40, 1e-8, 10.0, &mut rng);
        let dim = k.len();
        let rhs = rng.vec(dim);
        let mut be = CondensedBackend::new(Box::new(DenseLbltBackend::new())).refined(true);
        let got = solve_with(&mut be, &k, &rhs, false);
        let want = solve_with(&mut DenseLbltBackend::new(), &k, &rhs, false);
        let mut plain = CondensedBackend::new(Box::new(DenseLbltBackend::new()));
        let unrefined = solve_with(&mut plain, &k, &rhs, false);
        assert!(!be.fell_back());
        let res = |x: &[f64]| rel_err(&matvec(&k, x), &rhs);
        eprintln!(
            "seed {seed}: residual unrefined {:.1e}, refined {:.1e}, LBL' {:.1e}",
            res(&unrefined.x),
            res(&got.x),
            res(&want.x)
        );
        assert!(
            res(&got.x) <= 1e-11 && res(&want.x) <= 1e-11 && res(&unrefined.x) <= 1e-4,
            "seed {seed}: residual {:.2e} vs LBL' {:.2e}",
            res(&got.x),
            res(&want.x)
        );
        assert_eq!(got.negative, 45);
    }
}

/// A positive D (rows that are not an IPM's) with S still positive definite: the inertia is
/// Haynsworth's (D's negatives, none), not the IPM's m.
#[test]
fn inertia_follows_the_sign_of_d() {
    let mut rng = Rng::new(7);
    let (n, m) = (6, 4);
    let g = rng.vec(m * n);
    let k = saddle(
        n,
        m,
        |i, j| if i == j { 10.0 } else { 0.0 },
        |i, j| 0.3 * g[i * n + j],
        |i, j| {
            if i == j {
                [1.0, -2.0, 3.0, 4.0][i]
            } else {
                0.0
            }
        },
    );
    let rhs = rng.vec(n + m);
    let mut be = CondensedBackend::new(Box::new(DenseLbltBackend::new()));
    let got = solve_with(&mut be, &k, &rhs, false);
    assert!(!be.fell_back());
    assert_eq!(got.negative, 1);
    assert!(rel_err(&got.x, &dense_solve(&k, &rhs)) < 1e-12);
}

/// An indefinite Schur complement (H negative definite) is not condensed: the fallback
/// factors the whole matrix and reports its inertia, and the solve is still right.
#[test]
fn an_indefinite_schur_complement_falls_back() {
    let mut rng = Rng::new(3);
    let (n, m) = (8, 5);
    let g = rng.vec(m * n);
    let k = saddle(
        n,
        m,
        |i, j| if i == j { -10.0 - i as f64 } else { 0.1 },
        |i, j| 0.1 * g[i * n + j],
        |i, j| if i == j { -1.0 } else { 0.0 },
    );
    let rhs = rng.vec(2 * (n + m));
    let stats = Arc::new(CondensedStats::default());
    let mut be = CondensedBackend::new(Box::new(DenseLbltBackend::new())).with_stats(stats.clone());
    let got = solve_with(&mut be, &k, &rhs, false);
    let want = solve_with(&mut DenseLbltBackend::new(), &k, &rhs, false);
    assert_eq!(got.status, ESymSolverStatus::Success);
    assert!(be.fell_back());
    assert_eq!(stats.fallback.load(Ordering::Relaxed), 1);
    assert_eq!(got.negative, (n + m) as i32);
    assert_eq!(got.negative, want.negative);
    assert!(rel_err(&got.x, &want.x) < 1e-12);
    // A zero D entry is not condensed either.
    let mut k0 = k.clone();
    k0[n + 2][n + 2] = 0.0;
    let got = solve_with(&mut be, &k0, &rhs[..n + m], false);
    assert!(be.fell_back());
    assert!(rel_err(&got.x, &dense_solve(&k0, &rhs[..n + m])) < 1e-10);
    // With check_neg_evals a wrong expected count is reported as such.
    let (r, c, v) = triplets(&k, false);
    be.initialize_structure((n + m) as i32, v.len() as i32, &r, &c);
    be.values_array_mut().copy_from_slice(&v);
    let mut x = rhs[..n + m].to_vec();
    let st = be.multi_solve(true, &r, &c, 1, &mut x, true, 3);
    assert_eq!(st, ESymSolverStatus::WrongInertia);
}

#[test]
fn split_detection() {
    // [[a, .], [b, c]] with a 2x2 trailing diagonal block: split after the x block.
    let e = [
        (0, 0),
        (1, 1),
        (1, 0),
        (2, 0),
        (2, 1),
        (3, 1),
        (2, 2),
        (3, 3),
    ];
    assert_eq!(trailing_diagonal_split(4, e.iter().copied()), Some(2));
    // An off-diagonal entry inside the trailing block moves the split past it.
    let e2 = [(0, 0), (1, 1), (1, 0), (2, 0), (3, 2), (2, 2), (3, 3)];
    assert_eq!(trailing_diagonal_split(4, e2.iter().copied()), Some(3));
    // Upper-triangle input reads the same.
    let e3: Vec<_> = e.iter().map(|&(r, c)| (c, r)).collect();
    assert_eq!(trailing_diagonal_split(4, e3.into_iter()), Some(2));
    // A missing trailing diagonal, or nothing left to condense.
    let e4 = [(0, 0), (1, 1), (1, 0), (2, 0), (3, 1), (2, 2)];
    assert_eq!(trailing_diagonal_split(4, e4.iter().copied()), None);
    let e5 = [(0, 0), (1, 1), (1, 0), (2, 2), (3, 3), (3, 2)];
    assert_eq!(trailing_diagonal_split(4, e5.iter().copied()), Some(3));
    assert!(use_condensed(true, 5000, 1));
    assert!(use_condensed(false, 1000, 400_000));
    assert!(!use_condensed(false, 1000, 10_000));
}

/// POUNCE's direct QP IPM hands the backend `[x; y_eq; z_ineq]` with the rows after x
/// coupled only to x and their own diagonal: the whole x block is the leading block, every
/// factorization condenses, and the solution is the dense LBL's.
#[test]
fn the_ipm_kkt_condenses_on_the_x_block() {
    let mut rng = Rng::new(11);
    for (n, meq, mineq) in [(50, 0, 50), (20, 5, 30), (5, 0, 10)] {
        let prob = dense_qp(n, meq, mineq, &mut rng);
        let o = QpOptions {
            tol: 1e-9,
            use_hsde: false,
            ..QpOptions::default()
        };
        let stats = Arc::new(CondensedStats::default());
        let st = stats.clone();
        let mut f = QpFactorization::build(&prob, &o, move || {
            Box::new(
                CondensedBackend::new(Box::new(DenseLbltBackend::quasi_definite_first()))
                    .with_stats(st.clone()),
            )
        })
        .expect("builds");
        let got = f.solve(&prob);
        let mut fd = QpFactorization::build(&prob, &o, || {
            Box::new(DenseLbltBackend::quasi_definite_first())
        })
        .expect("builds");
        let want = fd.solve(&prob);
        let lead = stats.lead.load(Ordering::Relaxed);
        let (c, fb) = (
            stats.condensed.load(Ordering::Relaxed),
            stats.fallback.load(Ordering::Relaxed),
        );
        eprintln!(
            "n={n} meq={meq} mineq={mineq}: lead {lead}, condensed {c}, fallback {fb}, refine {}, iters {} (dense {})",
            stats.refine_steps.load(Ordering::Relaxed),
            got.iters,
            want.iters
        );
        assert_eq!(lead, n);
        assert_eq!(fb, 0);
        assert!(c >= got.iters);
        assert_eq!(
            (got.status, want.status),
            (QpStatus::Optimal, QpStatus::Optimal)
        );
        assert!(rel_err(&got.x, &want.x) < 1e-7);
    }
}

/// A dense `rows x cols` CSC pattern.
fn dense_pattern(rows: usize, cols: usize, name: &str) -> CscPattern {
    let ip: Vec<i64> = (0..=cols as i64).map(|c| c * rows as i64).collect();
    let ix: Vec<i64> = (0..cols).flat_map(|_| 0..rows as i64).collect();
    CscPattern::new(rows, cols, &ip, &ix, name).unwrap()
}

/// A batch in SCS form (`A x + s = b`, `z` zero rows then `l` nonneg rows): optimal QP or LP
/// items, a degenerate item (a duplicated row, active at the solution) and an infeasible
/// one (two opposite rows with a gap). Returns the outputs per backend.
fn batch_with(qp: bool, kb: KktBackend) -> BatchOutput {
    let (n, z, l, bsz) = (12, 2, 16, 6);
    let m = z + l;
    let mut rng = Rng::new(if qp { 5 } else { 6 });
    let dims = ConeDims {
        z,
        l,
        ..Default::default()
    };
    let st = ConicStructure::new(
        n,
        m,
        qp.then(|| dense_pattern(n, n, "p")),
        dense_pattern(m, n, "a"),
        dims,
    )
    .unwrap();
    let r = rng.vec(n * n);
    let mut p1 = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            p1[j * n + i] = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64
                + if i == j { 0.5 } else { 0.0 };
        }
    }
    let (mut p, mut a, mut q, mut b) = (vec![], vec![], vec![], vec![]);
    for item in 0..bsz {
        p.extend(&p1);
        let mut ai = rng.vec(m * n);
        let x0 = rng.vec(n);
        // LPs: the box |x| <= 1 in the last 2n... rows would need m >= 2n; keep the
        // objective bounded by adding the rows +-x_j <= 1 for the first l/2 columns and
        // q in their span (the remaining columns get zero cost).
        let mut bi: Vec<f64> = (0..m)
            .map(|row| {
                let ax: f64 = (0..n).map(|c| ai[c * m + row] * x0[c]).sum();
                ax + if row < z {
                    0.0
                } else {
                    0.5 * (rng.uniform() + 1.0)
                }
            })
            .collect();
        let mut qi = rng.vec(n);
        if !qp {
            // Rows z..z+2h: +-e_j' x <= 1 for j < h; cost only on those columns.
            let h = l / 2;
            for j in 0..h {
                for c in 0..n {
                    ai[c * m + z + 2 * j] = if c == j { 1.0 } else { 0.0 };
                    ai[c * m + z + 2 * j + 1] = if c == j { -1.0 } else { 0.0 };
                }
                bi[z + 2 * j] = 1.0 + x0[j].abs();
                bi[z + 2 * j + 1] = 1.0 + x0[j].abs();
            }
            // Equality rows only on the boxed columns, so the free columns stay free and
            // costless.
            for row in 0..z {
                for c in h..n {
                    ai[c * m + row] = 0.0;
                }
                bi[row] = (0..h).map(|c| ai[c * m + row] * x0[c]).sum();
            }
            for qj in qi.iter_mut().skip(h) {
                *qj = 0.0;
            }
        }
        if item == 3 {
            // Degenerate: the last row duplicated onto the one before, made active at x0.
            for c in 0..n {
                ai[c * m + m - 2] = ai[c * m + m - 1];
            }
            let ax: f64 = (0..n).map(|c| ai[c * m + m - 1] * x0[c]).sum();
            bi[m - 2] = ax;
            bi[m - 1] = ax;
        }
        if item == 4 {
            // Infeasible: row m-2 says v'x <= -1, row m-1 says -v'x <= -1.
            for c in 0..n {
                ai[c * m + m - 1] = -ai[c * m + m - 2];
            }
            bi[m - 2] = -1.0;
            bi[m - 1] = -1.0;
        }
        a.extend(ai);
        b.extend(bi);
        q.extend(qi);
    }
    let so = SolveOptions {
        engine: QpEngine::Ipm,
        ..opts(1e-9)
    };
    let backends = BackendOptions {
        kkt_backend: kb,
        ..Default::default()
    };
    let inp = BatchInput {
        bsz,
        p: qp.then_some(&p[..]),
        a: &a,
        q: &q,
        b: &b,
        warm: None,
    };
    solve_batch(
        &st,
        &so,
        &backends,
        &inp,
        &RunControl::default(),
        &ForwardWorkspaces::default(),
    )
}

/// IPM answers with the condensed backend (auto picks it for these KKTs; forced too) equal
/// the full dense factor's and feral's: same statuses (the infeasible item certified), same
/// x, y, s on the solved items.
#[test]
fn ipm_solutions_match_across_backends() {
    for qp in [true, false] {
        let runs: Vec<(KktBackend, BatchOutput)> = [
            KktBackend::Auto,
            KktBackend::Condensed,
            KktBackend::Dense,
            KktBackend::Feral,
        ]
        .into_iter()
        .map(|kb| (kb, batch_with(qp, kb)))
        .collect();
        let (_, base) = &runs[2];
        let statuses = |o: &BatchOutput| o.outs.iter().map(|i| i.status).collect::<Vec<_>>();
        assert_eq!(statuses(base)[4], "primal_infeasible", "qp={qp}");
        assert!(statuses(base)
            .iter()
            .enumerate()
            .all(|(i, s)| i == 4 || *s == "optimal"));
        let (n, m) = (12, 18);
        for (kb, out) in &runs {
            eprintln!(
                "qp={qp} {kb:?}: iters {:?}",
                out.outs.iter().map(|o| o.iters).collect::<Vec<_>>()
            );
            assert_eq!(statuses(out), statuses(base), "qp={qp} {kb:?}");
            for item in (0..6).filter(|&i| i != 4) {
                let x = |o: &BatchOutput| o.xs[item * n..(item + 1) * n].to_vec();
                let y = |o: &BatchOutput| o.ys[item * m..(item + 1) * m].to_vec();
                let ex = rel_err(&x(out), &x(base));
                assert!(
                    ex < 1e-6,
                    "qp={qp} {kb:?} item {item}: x differs by {ex:.2e}"
                );
                if item != 3 {
                    // (the degenerate item's duals are not unique)
                    let ey = rel_err(&y(out), &y(base));
                    assert!(
                        ey < 1e-6,
                        "qp={qp} {kb:?} item {item}: y differs by {ey:.2e}"
                    );
                }
            }
        }
    }
}

/// The adjoint's K (`[[P, A'], [A, -H]]`, H diagonal: an IPM answer's `s/z`, from 1e-8 on
/// active rows to 1e8 on inactive ones, 0 on the zero rows) condensed (the policy picks it
/// for this QP; forced too) gives the full dense LBL's gradients: both are refined against
/// the unregularised K by the adjoint.
#[test]
fn the_condensed_adjoint_matches_the_dense_one() {
    let (n, z, l, bsz) = (12, 2, 16, 4);
    let m = z + l;
    let dims = ConeDims {
        z,
        l,
        ..Default::default()
    };
    let st = ConicStructure::new(
        n,
        m,
        Some(dense_pattern(n, n, "p")),
        dense_pattern(m, n, "a"),
        dims,
    )
    .unwrap();
    let mut rng = Rng::new(21);
    let r = rng.vec(n * n);
    let mut p1 = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            p1[j * n + i] = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64
                + if i == j { 0.1 } else { 0.0 };
        }
    }
    let p: Vec<f64> = (0..bsz).flat_map(|_| p1.iter().copied()).collect();
    let a = rng.vec(bsz * m * n);
    let h: Vec<f64> = (0..bsz * m)
        .map(|k| {
            if k % m < z {
                0.0
            } else {
                10f64.powf(8.0 * rng.uniform())
            }
        })
        .collect();
    let (x, y) = (rng.vec(bsz * n), rng.vec(bsz * m));
    let (gx, gy, gs) = (rng.vec(bsz * n), rng.vec(bsz * m), rng.vec(bsz * m));
    let ok = vec![true; bsz];
    let pat = KktPattern::new(&st);
    let grads = |kb: KktBackend| {
        let inp = AdjointInput {
            bsz,
            p: Some(&p),
            a: &a,
            h_diag: &h,
            h_blocks: &[],
            x: &x,
            y: &y,
            gx: &gx,
            gy: &gy,
            gs: &gs,
            ok: &ok,
            kept: &[],
        };
        let backends = BackendOptions {
            kkt_backend: kb,
            ..Default::default()
        };
        adjoint_batch(
            &st,
            &pat,
            &backends,
            &inp,
            &Cancel::default(),
            TestPanic::Off,
            &AdjointWorkspaces::new(),
        )
    };
    let want = grads(KktBackend::Dense);
    assert!(want.solved.iter().all(|&s| s));
    for kb in [KktBackend::Auto, KktBackend::Condensed] {
        let got = grads(kb);
        assert!(got.solved.iter().all(|&s| s));
        for (name, u, v) in [
            ("dp", &got.dp, &want.dp),
            ("dq", &got.dq, &want.dq),
            ("da", &got.da, &want.da),
            ("db", &got.db, &want.db),
        ] {
            let e = rel_err(u, v);
            assert!(e < 1e-9, "{kb:?} {name}: {e:.2e}");
        }
    }
}

/// A K `[[L0, B'], [B, D]]` with `L0` (`k x k`) positive definite, `D` block diagonal and
/// negative definite on the blocks `sizes` (each block `-(M M' / d + 0.1 I)`, scaled by
/// `scale`), and `B` sparse: each block couples to a few random columns of the leading
/// block, as a cone's rows to a few entries of x. Returns K and the blocks.
fn block_kkt(k: usize, sizes: &[usize], scale: f64, rng: &mut Rng) -> (Dense, Vec<(usize, usize)>) {
    let m: usize = sizes.iter().sum();
    let dim = k + m;
    let mut kk = vec![vec![0.0; dim]; dim];
    let r = rng.vec(k * k);
    for i in 0..k {
        for j in 0..k {
            kk[i][j] = (0..k).map(|p| r[i * k + p] * r[j * k + p]).sum::<f64>() / k as f64
                + f64::from(u8::from(i == j));
        }
    }
    let mut blocks = Vec::new();
    let mut start = k;
    for &d in sizes {
        let g = rng.vec(d * d);
        for i in 0..d {
            for j in 0..d {
                let v = (0..d).map(|p| g[i * d + p] * g[j * d + p]).sum::<f64>() / d as f64
                    + 0.1 * f64::from(u8::from(i == j));
                kk[start + i][start + j] = -scale * v;
            }
        }
        for i in 0..d {
            for _ in 0..3 {
                let c = ((rng.uniform().abs() * k as f64) as usize).min(k - 1);
                let v = rng.uniform();
                kk[start + i][c] = v;
                kk[c][start + i] = v;
            }
        }
        blocks.push((start, d));
        start += d;
    }
    (kk, blocks)
}

/// The block-condensed backend solves as the dense LBL' does, reports `m` negatives, and
/// hands to its fallback a K whose block is not negative definite or whose pattern couples
/// two blocks.
#[test]
fn block_condensed_solves_match_the_dense_solve() {
    let mut rng = Rng::new(17);
    let sizes = [1, 3, 3, 1, 6, 3, 1];
    for scale in [1.0, 1e-6, 1e6] {
        let (kk, blocks) = block_kkt(9, &sizes, scale, &mut rng);
        let dim = kk.len();
        let rhs: Vec<f64> = rng.vec(2 * dim);
        let mut be = BlockCondensedBackend::new(9, &blocks, Box::new(DenseLbltBackend::new()));
        let got = solve_with(&mut be, &kk, &rhs, false);
        assert_eq!(got.status, ESymSolverStatus::Success);
        assert!(!be.fell_back());
        assert_eq!(got.negative, 18);
        for (x, b) in got.x.chunks(dim).zip(rhs.chunks(dim)) {
            let want = dense_solve(&kk, b);
            assert!(
                rel_err(x, &want) < 1e-8,
                "scale {scale}: {}",
                rel_err(x, &want)
            );
        }
    }
    // A block that is not negative definite: the fallback answers.
    let (mut kk, blocks) = block_kkt(9, &sizes, 1.0, &mut rng);
    kk[10][10] = 5.0;
    let rhs = rng.vec(kk.len());
    let mut be = BlockCondensedBackend::new(9, &blocks, Box::new(DenseLbltBackend::new()));
    let got = solve_with(&mut be, &kk, &rhs, false);
    assert!(be.fell_back());
    assert!(rel_err(&got.x, &dense_solve(&kk, &rhs)) < 1e-8);
    // Two blocks coupled: the pattern does not condense.
    let (mut kk, blocks) = block_kkt(9, &sizes, 1.0, &mut rng);
    kk[12][9] = 0.3;
    kk[9][12] = 0.3;
    let mut be = BlockCondensedBackend::new(9, &blocks, Box::new(DenseLbltBackend::new()));
    let got = solve_with(&mut be, &kk, &rhs, false);
    assert!(be.fell_back());
    assert!(rel_err(&got.x, &dense_solve(&kk, &rhs)) < 1e-8);
}
