//! The dense LBL' backend (dense_backend.rs) driven through pounce-linsol's interface, as
//! POUNCE's IPM drives it: inertia and solves against matrices of known eigenvalues.
mod common;

use common::{dense_solve, matvec, rel_err, saddle, with_eigenvalues, Dense, Rng};
use pounce_layers_core::dense_backend::{
    use_dense, DenseLbltBackend, DENSE_ALWAYS_DIM, DENSE_MAX_DIM, DENSE_MIN_FILL,
};
use pounce_linsol::{ESymSolverStatus, SparseSymLinearSolverInterface};

/// 1-based lower-triangle triplets of `k`; with `split`, each off-diagonal value is stored
/// as two halves, one in each triangle (the backend must sum duplicates and fold them).
#[allow(clippy::needless_range_loop)] // (i, j) are the matrix indices
fn triplets(k: &Dense, split: bool) -> (Vec<i32>, Vec<i32>, Vec<f64>) {
    let (mut r, mut c, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..k.len() {
        for j in 0..=i {
            if split && i != j {
                for (a, b) in [(i, j), (j, i)] {
                    r.push(a as i32 + 1);
                    c.push(b as i32 + 1);
                    v.push(k[i][j] / 2.0);
                }
            } else {
                r.push(i as i32 + 1);
                c.push(j as i32 + 1);
                v.push(k[i][j]);
            }
        }
    }
    (r, c, v)
}

struct Solved {
    status: ESymSolverStatus,
    negative: i32,
    unpivoted: bool,
    x: Vec<f64>,
}

/// Factor `k` and solve for the right-hand sides `rhs` (stored one after another).
fn solve(k: &Dense, rhs: &[f64], split: bool, quasi_definite: bool) -> Solved {
    let (r, c, v) = triplets(k, split);
    let mut be = if quasi_definite {
        DenseLbltBackend::quasi_definite_first()
    } else {
        DenseLbltBackend::new()
    };
    let dim = k.len() as i32;
    assert_eq!(
        be.initialize_structure(dim, v.len() as i32, &r, &c),
        ESymSolverStatus::Success
    );
    be.values_array_mut().copy_from_slice(&v);
    let mut x = rhs.to_vec();
    let nrhs = (rhs.len() / k.len()) as i32;
    let status = be.multi_solve(true, &r, &c, nrhs, &mut x, false, 0);
    Solved {
        status,
        negative: be.number_of_neg_evals(),
        unpivoted: be.kept_unpivoted(),
        x,
    }
}

fn check_solves(k: &Dense, rhs: &[f64], x: &[f64]) {
    let n = k.len();
    for (b, x) in rhs.chunks(n).zip(x.chunks(n)) {
        assert!(rel_err(x, &dense_solve(k, b)) < 1e-10);
        assert!(rel_err(&matvec(k, x), b) < 1e-10);
    }
}

#[test]
fn inertia_and_solves_match_the_known_spectrum() {
    for seed in 0..6u64 {
        for split in [false, true] {
            let mut rng = Rng::new(seed);
            let n = 20 + seed as usize;
            let neg = 3 + seed as usize;
            // |eigenvalues| in [0.1, 10], the first `neg` of them negative.
            let d: Vec<f64> = (0..n)
                .map(|i| {
                    let mag = 10f64.powf(rng.uniform());
                    if i < neg {
                        -mag
                    } else {
                        mag
                    }
                })
                .collect();
            let k = with_eigenvalues(&d, &mut rng);
            let rhs = rng.vec(3 * n);
            let out = solve(&k, &rhs, split, false);
            assert_eq!(out.status, ESymSolverStatus::Success);
            assert_eq!(out.negative, neg as i32, "seed {seed}");
            check_solves(&k, &rhs, &out.x);
        }
    }
}

/// A saddle point `[[P, G'], [G, 0]]` (zero diagonal block: needs 2x2 pivots), P PD of
/// order n, G of full row rank m: exactly m negative eigenvalues.
#[test]
fn saddle_points_need_two_by_two_pivots() {
    for seed in 0..4u64 {
        let mut rng = Rng::new(100 + seed);
        let (n, m) = (7 + seed as usize, 3 + seed as usize);
        let p = with_eigenvalues(
            &(0..n).map(|i| 0.5 + i as f64).collect::<Vec<_>>(),
            &mut rng,
        );
        let g: Dense = (0..m).map(|_| rng.vec(n)).collect();
        let k = saddle(n, m, |i, j| p[i][j], |r, c| g[r][c], |_, _| 0.0);
        let rhs = rng.vec(n + m);
        for qd in [false, true] {
            let out = solve(&k, &rhs, seed % 2 == 1, qd);
            assert_eq!(out.status, ESymSolverStatus::Success);
            assert_eq!(out.negative, m as i32);
            assert!(
                !out.unpivoted,
                "a zero diagonal must not keep the unpivoted LDL'"
            );
            check_solves(&k, &rhs, &out.x);
        }
    }
}

/// An IPM-like KKT `[[P + I, G'], [G, -W]]` with W spanning 1e-4..1e4: quasi-definite,
/// so the quasi-definite backend keeps its unpivoted LDL'.
#[test]
fn quasi_definite_backend_keeps_the_unpivoted_factor() {
    for seed in 0..4u64 {
        let mut rng = Rng::new(200 + seed);
        let (n, m) = (12 + seed as usize, 9);
        let p = with_eigenvalues(
            &(0..n).map(|i| 1.0 + i as f64).collect::<Vec<_>>(),
            &mut rng,
        );
        let g: Dense = (0..m).map(|_| rng.vec(n)).collect();
        let w: Vec<f64> = (0..m).map(|_| 10f64.powf(4.0 * rng.uniform())).collect();
        let c = |i: usize, j: usize| if i == j { -w[i] } else { 0.0 };
        let k = saddle(n, m, |i, j| p[i][j], |r, c| g[r][c], c);
        let rhs = rng.vec(2 * (n + m));
        let out = solve(&k, &rhs, false, true);
        assert_eq!(out.status, ESymSolverStatus::Success);
        assert!(out.unpivoted);
        assert_eq!(out.negative, m as i32);
        check_solves(&k, &rhs, &out.x);
    }
}

#[test]
fn quasi_definite_backend_falls_back_to_bunch_kaufman() {
    let cases: [(Dense, i32); 3] = [
        // diagonal signs (+, +) but indefinite: the second pivot turns negative
        (vec![vec![1.0, 2.0], vec![2.0, 1.0]], 1),
        // tiny leading pivot: multipliers of 1e12, far past the growth bound
        (
            vec![
                vec![1e-12, 1.0, 0.0],
                vec![1.0, 1e-12, 1.0],
                vec![0.0, 1.0, 2.0],
            ],
            1,
        ),
        // zero diagonal (a saddle point's constraint block)
        (vec![vec![2.0, 1.0], vec![1.0, 0.0]], 1),
    ];
    for (k, negative) in cases {
        let rhs: Vec<f64> = (0..k.len()).map(|i| 1.0 + i as f64).collect();
        let out = solve(&k, &rhs, false, true);
        assert_eq!(out.status, ESymSolverStatus::Success);
        assert!(!out.unpivoted);
        assert_eq!(out.negative, negative);
        check_solves(&k, &rhs, &out.x);
    }
}

#[test]
fn singular_and_non_finite_matrices_are_reported() {
    let mut rng = Rng::new(3);
    // Rank 3 of 6: eigenvalues (1, 2, 3, 0, 0, 0).
    let k = with_eigenvalues(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &mut rng);
    let mut k0 = k.clone();
    for r in k0.iter_mut() {
        r[5] = 0.0;
    }
    k0[5] = vec![0.0; 6];
    assert_eq!(
        solve(&k0, &[1.0; 6], false, false).status,
        ESymSolverStatus::Singular
    );
    let mut eye: Dense = (0..4)
        .map(|i| (0..4).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    eye[1][0] = f64::NAN;
    assert_eq!(
        solve(&eye, &[1.0; 4], false, false).status,
        ESymSolverStatus::FatalError
    );
}

#[test]
fn out_of_range_triplets_are_refused() {
    let mut be = DenseLbltBackend::new();
    assert_eq!(
        be.initialize_structure(2, 1, &[3], &[1]),
        ESymSolverStatus::FatalError
    );
    assert_eq!(
        be.initialize_structure(2, 2, &[1], &[1]),
        ESymSolverStatus::FatalError
    );
}

#[test]
fn the_dense_policy_follows_size_and_fill() {
    assert!(use_dense(DENSE_ALWAYS_DIM, 0));
    let dim = DENSE_ALWAYS_DIM + 1;
    let full = dim * (dim + 1) / 2;
    let at_fill = (DENSE_MIN_FILL * full as f64).ceil() as usize;
    assert!(use_dense(dim, at_fill));
    assert!(!use_dense(dim, at_fill - 1));
    assert!(use_dense(
        DENSE_MAX_DIM,
        DENSE_MAX_DIM * (DENSE_MAX_DIM + 1) / 2
    ));
    assert!(!use_dense(DENSE_MAX_DIM + 1, usize::MAX / 4));
}
