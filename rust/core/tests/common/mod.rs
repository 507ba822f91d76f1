//! Helpers of the core's integration tests: a seeded generator, dense references.
#![allow(dead_code, clippy::needless_range_loop)] // index loops read as the algebra

/// A small seeded generator (64-bit LCG, the high bits), uniform in [-1, 1).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Row-major dense `n x n`.
pub type Dense = Vec<Vec<f64>>;

/// Solve `K x = b` by Gaussian elimination with partial pivoting (the reference solve).
pub fn dense_solve(k: &Dense, b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut a = k.to_vec();
    let mut x = b.to_vec();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        x.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for j in c..n {
                a[r][j] -= f * a[c][j];
            }
            x[r] -= f * x[c];
        }
    }
    for c in (0..n).rev() {
        let s: f64 = (c + 1..n).map(|j| a[c][j] * x[j]).sum();
        x[c] = (x[c] - s) / a[c][c];
    }
    x
}

/// `Q diag(d) Q'` with `Q = I - 2 v v' / v'v` (a Householder reflection): a symmetric
/// matrix whose eigenvalues are exactly `d`.
pub fn with_eigenvalues(d: &[f64], rng: &mut Rng) -> Dense {
    let n = d.len();
    let v = rng.vec(n);
    let vv: f64 = v.iter().map(|a| a * a).sum();
    let q: Dense = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| f64::from(u8::from(i == j)) - 2.0 * v[i] * v[j] / vv)
                .collect()
        })
        .collect();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (0..n).map(|k| q[i][k] * d[k] * q[j][k]).sum())
                .collect()
        })
        .collect()
}

pub fn matvec(k: &Dense, x: &[f64]) -> Vec<f64> {
    k.iter()
        .map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

/// max |a - b| / max(1, max |b|).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}
