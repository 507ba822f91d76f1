//! Helpers of the core's integration tests: a seeded generator, dense references, small LPs
//! and their batch solve.
#![allow(dead_code, clippy::needless_range_loop)] // index loops read as the algebra

use pounce_convex::{ConeSpec, QpProblem, Triplet};
use pounce_layers_core::batch::{
    solve_batch, BatchInput, BatchOutput, ForwardWorkspaces, RunControl,
};
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::options::{BackendOptions, QpEngine, SolveOptions};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::ConicStructure;

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

/// min cx'x - sum(entr(x)) s.t. sum(x) = 1, over v = (x, t): min cx'x - sum(t) with
/// (t_i, x_i, 1) in the exponential cone (t_i <= entr(x_i)). Returns the problem, its cones
/// and its closed-form solution x = softmax(-cx).
pub fn entropy_problem(cx: &[f64]) -> (QpProblem, Vec<ConeSpec>, Vec<f64>) {
    let k = cx.len();
    let mut c = cx.to_vec();
    c.extend(std::iter::repeat_n(-1.0, k));
    let mut g = Vec::new();
    let mut h = Vec::new();
    for i in 0..k {
        g.push(Triplet::new(3 * i, k + i, -1.0));
        g.push(Triplet::new(3 * i + 1, i, -1.0));
        h.extend([0.0, 0.0, 1.0]);
    }
    let prob = QpProblem {
        n: 2 * k,
        p_lower: vec![],
        c,
        a: (0..k).map(|i| Triplet::new(0, i, 1.0)).collect(),
        b: vec![1.0],
        g,
        h,
        lb: vec![],
        ub: vec![],
    };
    let w: Vec<f64> = cx.iter().map(|v| (-v).exp()).collect();
    let sum: f64 = w.iter().sum();
    let soft = w.iter().map(|v| v / sum).collect();
    (prob, vec![ConeSpec::Exponential; k], soft)
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

/// Solve options at `tol`: 200 iterations, no time limit.
pub fn opts(tol: f64) -> SolveOptions {
    SolveOptions {
        tol,
        max_iter: 200,
        time_limit: None,
        engine: QpEngine::Auto,
        stage: None,
    }
}

/// A structure with `n` variables, `m` rows (`dims`), no P and A's CSC pattern
/// (`a_indptr`, `a_indices`).
pub fn lp(
    n: usize,
    m: usize,
    a_indptr: &[i64],
    a_indices: &[i64],
    dims: ConeDims,
) -> ConicStructure {
    let a = CscPattern::new(m, n, a_indptr, a_indices, "a").unwrap();
    ConicStructure::new(n, m, None, a, dims).unwrap()
}

/// One variable, one nonneg row: `a x + s = b`, `s >= 0`.
pub fn one_row_lp() -> ConicStructure {
    let dims = ConeDims {
        l: 1,
        ..Default::default()
    };
    lp(1, 1, &[0, 1], &[0], dims)
}

/// The forward of a batch without P (as many items as `q` holds rows of `st.n()`), default
/// backends, under `ctl`, on the workers in `ws`.
pub fn solve_lps(
    st: &ConicStructure,
    tol: f64,
    (av, q, b): (&[f64], &[f64], &[f64]),
    ctl: &RunControl,
    ws: &ForwardWorkspaces,
) -> BatchOutput {
    let inp = BatchInput {
        bsz: q.len() / st.n().max(1),
        p: None,
        a: av,
        q,
        b,
        warm: None,
    };
    solve_batch(st, &opts(tol), &BackendOptions::default(), &inp, ctl, ws)
}

/// The saddle-point matrix `[[P, G'], [G, C]]` (`P` n x n, `G` m x n, `C` m x m), from
/// its blocks' entries.
pub fn saddle(
    n: usize,
    m: usize,
    p: impl Fn(usize, usize) -> f64,
    g: impl Fn(usize, usize) -> f64,
    c: impl Fn(usize, usize) -> f64,
) -> Dense {
    (0..n + m)
        .map(|i| {
            (0..n + m)
                .map(|j| match (i < n, j < n) {
                    (true, true) => p(i, j),
                    (true, false) => g(j - n, i),
                    (false, true) => g(i - n, j),
                    (false, false) => c(i - n, j - n),
                })
                .collect()
        })
        .collect()
}

/// min c'x - sum(entr(x)) s.t. sum(x) = 1 in SCS form over v = (x, t): row 0 the equality,
/// then per i the exp block s = (t_i, x_i, 1) = b - A v. Returns the structure and A, b.
pub fn softmax_structure(k: usize) -> (ConicStructure, Vec<f64>, Vec<f64>) {
    let (n, m) = (2 * k, 1 + 3 * k);
    let mut indptr = vec![0i64];
    let mut indices = Vec::new();
    let mut vals = Vec::new();
    for i in 0..k {
        indices.extend([0i64, (2 + 3 * i) as i64]);
        vals.extend([1.0, -1.0]);
        indptr.push(indices.len() as i64);
    }
    for i in 0..k {
        indices.push((1 + 3 * i) as i64);
        vals.push(-1.0);
        indptr.push(indices.len() as i64);
    }
    let a = CscPattern::new(m, n, &indptr, &indices, "a").unwrap();
    let dims = ConeDims {
        z: 1,
        l: 0,
        q: vec![],
        s: vec![],
        ep: k,
        p: vec![],
    };
    let mut b = vec![0.0; m];
    b[0] = 1.0;
    for i in 0..k {
        b[3 + 3 * i] = 1.0;
    }
    (ConicStructure::new(n, m, None, a, dims).unwrap(), vals, b)
}

/// `bsz` softmax items of `k` costs (`softmax_structure`), item i's first `k` entries of q
/// from `costs(i)` and the rest -1: the structure, the stacked A, b and q values, and their
/// forward under `so` (default backends).
pub fn softmax_batch(
    k: usize,
    bsz: usize,
    costs: impl Fn(usize) -> Vec<f64>,
    so: &SolveOptions,
) -> (ConicStructure, Vec<f64>, Vec<f64>, Vec<f64>, BatchOutput) {
    let (st, a1, b1) = softmax_structure(k);
    let a: Vec<f64> = (0..bsz).flat_map(|_| a1.clone()).collect();
    let b: Vec<f64> = (0..bsz).flat_map(|_| b1.clone()).collect();
    let q: Vec<f64> = (0..bsz)
        .flat_map(|i| {
            let mut qi = costs(i);
            qi.truncate(k);
            qi.extend(std::iter::repeat_n(-1.0, k));
            qi
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
    let fwd = solve_batch(
        &st,
        so,
        &BackendOptions::default(),
        &inp,
        &RunControl::default(),
        &ForwardWorkspaces::new(),
    );
    (st, a, b, q, fwd)
}

pub fn softmax(c: &[f64]) -> Vec<f64> {
    let w: Vec<f64> = c.iter().map(|v| (-v).exp()).collect();
    let s: f64 = w.iter().sum();
    w.iter().map(|v| v / s).collect()
}

/// A dense QP `min 1/2 x'Px + c'x, A x = b, G x <= h` of `n` variables: P = R R'/n + I,
/// A and G uniform, b and h such that a random x0 is feasible with slack 0.5-1.5 on G.
pub fn dense_qp(n: usize, meq: usize, mineq: usize, rng: &mut Rng) -> QpProblem {
    let r = rng.vec(n * n);
    let mut p_lower = Vec::new();
    for i in 0..n {
        for j in 0..=i {
            let v = (0..n).map(|k| r[i * n + k] * r[j * n + k]).sum::<f64>() / n as f64;
            p_lower.push(Triplet {
                row: i,
                col: j,
                val: v + if i == j { 1.0 } else { 0.0 },
            });
        }
    }
    let trip = |rows: usize, rng: &mut Rng| -> Vec<Triplet> {
        (0..rows)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| Triplet {
                row: i,
                col: j,
                val: rng.uniform(),
            })
            .collect()
    };
    let a = trip(meq, rng);
    let g = trip(mineq, rng);
    let x0 = rng.vec(n);
    let mul = |t: &[Triplet], rows: usize| {
        let mut out = vec![0.0; rows];
        for e in t {
            out[e.row] += e.val * x0[e.col];
        }
        out
    };
    let b = mul(&a, meq);
    let h: Vec<f64> = mul(&g, mineq)
        .iter()
        .map(|v| v + 0.5 * (rng.uniform() + 1.0))
        .collect();
    QpProblem {
        n,
        p_lower,
        c: rng.vec(n),
        a,
        b,
        g,
        h,
        lb: Vec::new(),
        ub: Vec::new(),
    }
}
