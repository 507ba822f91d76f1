//! Sizes and CSC patterns (pattern.rs) and the P convexity check (convexity.rs): each
//! refusal names what it refuses; each of the check's methods (diagonal, Gershgorin, dense
//! Cholesky, sparse LDL' inertia) decides PSD and indefinite matrices correctly.
use pounce_layers_core::convexity::PsdCheck;
use pounce_layers_core::pattern::{check_sizes, checked_mul, CscPattern, MAX_DIM};

fn refusal(indptr: &[i64], indices: &[i64]) -> String {
    CscPattern::new(3, 2, indptr, indices, "a")
        .unwrap_err()
        .to_string()
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    assert!(check_sizes(10, 20).is_ok());
    assert!(check_sizes(MAX_DIM - 5, 5).is_ok());
    let e = check_sizes(MAX_DIM + 1, 0).unwrap_err().to_string();
    assert!(e.contains("`n`"), "{e}");
    let e = check_sizes(0, 1 << 40).unwrap_err().to_string();
    assert!(e.contains("`m`"), "{e}");
    let e = check_sizes(MAX_DIM - 5, 6).unwrap_err().to_string();
    assert!(e.contains("`n + m`"), "{e}");
    assert_eq!(checked_mul(3, 4, "x").unwrap(), 12);
    let e = checked_mul(usize::MAX, 2, "the PSD rows")
        .unwrap_err()
        .to_string();
    assert!(e.contains("the PSD rows overflows"), "{e}");
}

#[test]
fn a_valid_pattern_iterates_its_entries_in_storage_order() {
    // [[1, .], [., 3], [2, 4]] (3 x 2), rows unsorted in column 1.
    let p = CscPattern::new(3, 2, &[0, 2, 4], &[0, 2, 2, 1], "a").unwrap();
    assert_eq!(p.nnz(), 4);
    let e: Vec<_> = p.entries().collect();
    assert_eq!(e, vec![(0, 0, 0), (1, 2, 0), (2, 2, 1), (3, 1, 1)]);
    let d = CscPattern::dense(2, 2);
    assert_eq!(d.indptr, vec![0, 2, 4]);
    assert_eq!(d.indices, vec![0, 1, 0, 1]);
}

#[test]
fn bad_patterns_are_refused_by_name() {
    assert!(refusal(&[0, 1], &[0]).contains("`a_indptr` has length 2, expected n + 1 = 3"));
    assert!(refusal(&[1, 1, 1], &[]).contains("must start at 0"));
    assert!(refusal(&[0, 2, 1], &[0, 1]).contains("not monotone"));
    assert!(refusal(&[0, 1, 2], &[0]).contains("does not match len(`a_indices`) = 1"));
    assert!(refusal(&[0, 1, 2], &[0, 3]).contains("row index 3, out of range for 3 rows"));
    assert!(refusal(&[0, 1, 2], &[-1, 0]).contains("row index -1"));
    let dup = refusal(&[0, 1, 4], &[0, 2, 0, 2]);
    assert!(dup.contains("duplicate entry at (2, 1)"), "{dup}");
}

/// The lower-triangle slots and values of a dense symmetric matrix.
fn lower(m: &[Vec<f64>]) -> (Vec<(usize, usize)>, Vec<f64>) {
    let mut slots = Vec::new();
    let mut vals = Vec::new();
    for (r, row) in m.iter().enumerate() {
        for (c, &v) in row.iter().enumerate().take(r + 1) {
            slots.push((r, c));
            vals.push(v);
        }
    }
    (slots, vals)
}

#[test]
fn diagonal_and_gershgorin_decide_without_a_factorization() {
    let slots = [(0, 0), (2, 2)];
    let mut chk = PsdCheck::new(3, &slots);
    assert!(chk.is_psd(&[1.0, 0.0]));
    assert!(!chk.is_psd(&[1.0, -1e-3]));
    // Within PSD_TOL_REL * max|P| of zero: passes.
    assert!(chk.is_psd(&[1.0, -1e-12]));
    assert!(chk.is_psd(&[0.0, 0.0]));
    // Diagonally dominant, not diagonal: Gershgorin passes it.
    let (s, v) = lower(&[vec![2.0, 1.0], vec![1.0, 2.0]]);
    assert!(PsdCheck::new(2, &s).is_psd(&v));
}

#[test]
fn small_matrices_are_decided_by_a_dense_cholesky() {
    // Rank one, singular, not diagonally dominant: PSD.
    let psd = [
        vec![1.0, 2.0, 3.0],
        vec![2.0, 4.0, 6.0],
        vec![3.0, 6.0, 9.0],
    ];
    let (s, v) = lower(&psd);
    let mut chk = PsdCheck::new(3, &s);
    assert!(chk.is_psd(&v));
    // Eigenvalues 3 and -1 on the first two variables.
    let (_, bad) = lower(&[
        vec![1.0, 2.0, 0.0],
        vec![2.0, 1.0, 0.0],
        vec![0.0, 0.0, 1.0],
    ]);
    assert!(!chk.is_psd(&bad));
    assert!(chk.is_psd(&v), "the same checker again after a failure");
}

#[test]
fn large_sparse_matrices_are_decided_by_the_inertia() {
    // 1000 blocks [[1, 2], [2, a]] (2000 variables, far too many for the dense path):
    // a = 4 is PSD (singular), a = 3.9 has a negative eigenvalue in every block, and one
    // block with a = 3.9 among PSD ones is enough to fail.
    let blocks = 1000;
    let mut slots = Vec::new();
    for b in 0..blocks {
        let i = 2 * b;
        slots.extend([(i, i), (i + 1, i), (i + 1, i + 1)]);
    }
    let vals = |a: &dyn Fn(usize) -> f64| -> Vec<f64> {
        (0..blocks).flat_map(|b| [1.0, 2.0, a(b)]).collect()
    };
    let mut chk = PsdCheck::new(2 * blocks, &slots);
    assert!(chk.is_psd(&vals(&|_| 4.0)));
    assert!(!chk.is_psd(&vals(&|_| 3.9)));
    assert!(!chk.is_psd(&vals(&|b| if b == 517 { 3.9 } else { 4.0 })));
    assert!(chk.is_psd(&vals(&|_| 5.0)));
}
