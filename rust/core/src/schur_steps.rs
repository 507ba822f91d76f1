//! Active-set steps on the Schur complement of P: the restricted KKT solves of
//! kept_active_set.rs's primal-dual active-set steps, each reduced to a Cholesky of a
//! submatrix of one matrix formed once per problem.
//!
//! With P positive definite (`P = L L'`) and every constraint row stacked as `B = [A; G]`,
//! `rhs = [b; h]`, the restricted KKT on the rows `S` (the equalities and the active
//! inequality rows `W`),
//!
//! ```text
//!     [ P    B_S' ] [ x   ]   [ -c    ]
//!     [ B_S  0    ] [ l_S ] = [ rhs_S ],
//! ```
//!
//! has `x = -P^{-1} (c + B_S' l_S)` and `M_SS l_S = t_S`, where `M = B P^{-1} B'` and
//! `t = -(rhs + B P^{-1} c)`; an inequality row's slack `h_i - G_i x` is then
//! `-t_i + M_iS l_S`. `M` and `t` cost one Cholesky of P, one triangular solve with every
//! row and one product (formed on the first step); each step is then a Cholesky of
//! `|S| x |S|` and a product with `M`'s `S` columns, where the full restricted KKT is an
//! `(n + |S|)`-square Bunch-Kaufman factorization. On the set the steps stop on, the answer
//! is `x` above ([`SchurSteps::answer`]); kept_active_set.rs checks it on the problem's own
//! residuals, and keeps `L`, `Y_S = L^{-1} B_S'` and the Cholesky factor of `M_SS` as the
//! restricted KKT's factor for the backward ([`SchurFactor`]). When that check fails (P
//! ill-conditioned) the full restricted solve confirms the set instead.
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, Par};
use pounce_convex::QpProblem;

/// Add P's stored entries into the lower triangle of `out` (its leading `n x n` block),
/// an entry given above the diagonal mirrored below it, duplicates summed.
pub(crate) fn add_p_lower(prob: &QpProblem, out: &mut Mat<f64>) {
    for t in &prob.p_lower {
        let (r, c) = if t.row >= t.col {
            (t.row, t.col)
        } else {
            (t.col, t.row)
        };
        out[(r, c)] += t.val;
    }
}

/// `M = B P^{-1} B'` and `t = -(rhs + B P^{-1} c)` of one problem (module docs); rows in
/// the order equalities, then inequality rows; with P's Cholesky factor `L` and
/// `[Y u] = L^{-1} [B' c]`, from which an answer is formed.
pub struct SchurSteps {
    me: usize,
    m: Mat<f64>,
    t: Vec<f64>,
    l: Mat<f64>,
    y: Mat<f64>,
}

/// One step's restricted solve on the rows `rows` (indices into `[A; G]`'s rows): the
/// multipliers `lam` of those rows (equalities first), every inequality row's slack, and the
/// lower Cholesky factor of `M_SS`.
pub struct SchurStep {
    rows: Vec<usize>,
    pub lam: Vec<f64>,
    pub slack: Vec<f64>,
    mchol: Mat<f64>,
}

impl SchurStep {
    /// The multipliers of the active inequality rows (after the equalities').
    pub fn z_w(&self, me: usize) -> &[f64] {
        &self.lam[me..]
    }
}

/// The restricted KKT `[[P, B_S'], [B_S, 0]]` factored through the Schur complement of P:
/// `L` (P = L L'), `Y_S = L^{-1} B_S'` and `C` (M_SS = C C').
pub struct SchurFactor {
    l: Mat<f64>,
    ys: Mat<f64>,
    mchol: Mat<f64>,
}

/// `v := L^{-1} v` for the lower triangle of `l` (its leading `v.len()` block).
fn lower_solve(l: &Mat<f64>, v: &mut [f64]) {
    for i in 0..v.len() {
        let mut a = v[i];
        for (j, vj) in v[..i].iter().enumerate() {
            a -= l[(i, j)] * vj;
        }
        v[i] = a / l[(i, i)];
    }
}

/// `v := L^{-T} v` for the lower triangle of `l`.
fn lower_t_solve(l: &Mat<f64>, v: &mut [f64]) {
    for i in (0..v.len()).rev() {
        let mut a = v[i];
        for (j, vj) in v.iter().enumerate().skip(i + 1) {
            a -= l[(j, i)] * vj;
        }
        v[i] = a / l[(i, i)];
    }
}

impl SchurFactor {
    /// Solve the restricted KKT in place: `v = [r1 (n); r2 (|S|)]` becomes `[u; w]` with
    /// `P u + B_S' w = r1`, `B_S u = r2`: `a = L^{-1} r1`, `M_SS w = Y_S' a - r2`,
    /// `u = L^{-T} (a - Y_S w)`. Returns whether the result is finite.
    pub fn solve(&self, v: &mut [f64]) -> bool {
        let n = self.l.nrows();
        let (r1, r2) = v.split_at_mut(n);
        lower_solve(&self.l, r1);
        for (j, w) in r2.iter_mut().enumerate() {
            let dot: f64 = (0..n).map(|i| self.ys[(i, j)] * r1[i]).sum();
            *w = dot - *w;
        }
        lower_solve(&self.mchol, r2);
        lower_t_solve(&self.mchol, r2);
        for (j, &w) in r2.iter().enumerate() {
            for (i, a) in r1.iter_mut().enumerate() {
                *a -= self.ys[(i, j)] * w;
            }
        }
        lower_t_solve(&self.l, r1);
        v.iter().all(|a| a.is_finite())
    }
}

impl SchurSteps {
    /// `M` and `t` of `prob`; `None` without constraint rows, without P, or when P is not
    /// numerically positive definite (its Cholesky fails).
    pub fn new(prob: &QpProblem) -> Option<Self> {
        let (n, me, mi) = (prob.n, prob.b.len(), prob.h.len());
        let k = me + mi;
        if k == 0 || prob.p_lower.is_empty() {
            return None;
        }
        let mut p = Mat::<f64>::zeros(n, n);
        add_p_lower(prob, &mut p);
        if !cholesky_lower(&mut p) {
            return None;
        }
        let l = p;
        // [B' c], then L^{-1} [B' c] = [Y u].
        let mut y = Mat::<f64>::zeros(n, k + 1);
        for t in &prob.a {
            y[(t.col, t.row)] += t.val;
        }
        for t in &prob.g {
            y[(t.col, me + t.row)] += t.val;
        }
        for (i, &ci) in prob.c.iter().enumerate() {
            y[(i, k)] = ci;
        }
        solve_lower_triangular_in_place(l.as_ref(), y.as_mut(), Par::Seq);
        // Y' [Y u] = [M, B P^{-1} c].
        let mut m = Mat::<f64>::zeros(k, k + 1);
        matmul(
            m.as_mut(),
            Accum::Replace,
            y.as_ref().subcols(0, k).transpose(),
            y.as_ref(),
            1.0,
            Par::Seq,
        );
        let t: Vec<f64> = (0..k)
            .map(|j| {
                let r = if j < me { prob.b[j] } else { prob.h[j - me] };
                -(r + m[(j, k)])
            })
            .collect();
        (m.col_iter().all(|c| c.iter().all(|v| v.is_finite())) && t.iter().all(|v| v.is_finite()))
            .then_some(SchurSteps { me, m, t, l, y })
    }

    /// The multipliers of the active inequality rows `active` (increasing) and the slack of
    /// every inequality row at the restricted solution on them; `None` when `M_SS` is not
    /// numerically positive definite (dependent rows) or the result is not finite.
    pub fn step(&self, active: &[usize]) -> Option<(Vec<f64>, Vec<f64>)> {
        let st = self.step_on(active)?;
        Some((st.z_w(self.me).to_vec(), st.slack))
    }

    /// [`Self::step`] with the whole restricted solve: every multiplier on the rows and the
    /// factor of `M_SS`, for [`Self::answer`] and [`Self::factor`].
    pub fn step_on(&self, active: &[usize]) -> Option<SchurStep> {
        let me = self.me;
        let rows: Vec<usize> = (0..me).chain(active.iter().map(|&i| me + i)).collect();
        let s = rows.len();
        let mut lam: Vec<f64> = rows.iter().map(|&r| self.t[r]).collect();
        let mut mchol = Mat::<f64>::from_fn(s, s, |a, b| {
            if a >= b {
                self.m[(rows[a], rows[b])]
            } else {
                0.0
            }
        });
        if s > 0 {
            if !cholesky_lower(&mut mchol) {
                return None;
            }
            lower_solve(&mchol, &mut lam);
            lower_t_solve(&mchol, &mut lam);
        }
        let mi = self.t.len() - me;
        let mut slack: Vec<f64> = (0..mi).map(|i| -self.t[me + i]).collect();
        for (&r, &l) in rows.iter().zip(&lam) {
            for (i, sl) in slack.iter_mut().enumerate() {
                *sl += self.m[(me + i, r)] * l;
            }
        }
        (lam.iter().chain(&slack).all(|v| v.is_finite())).then_some(SchurStep {
            rows,
            lam,
            slack,
            mchol,
        })
    }

    /// The restricted solution's `x = -L^{-T} (u + Y_S lam)` at the step `st`.
    pub fn answer(&self, st: &SchurStep) -> Vec<f64> {
        let (n, k) = (self.l.nrows(), self.t.len());
        let mut x: Vec<f64> = (0..n).map(|i| self.y[(i, k)]).collect();
        for (&r, &l) in st.rows.iter().zip(&st.lam) {
            for (i, xi) in x.iter_mut().enumerate() {
                *xi += self.y[(i, r)] * l;
            }
        }
        lower_t_solve(&self.l, &mut x);
        x.iter_mut().for_each(|v| *v = -*v);
        x
    }

    /// The restricted KKT's factor at the step `st` (its rows: equalities, then the active
    /// inequality rows, as the restricted KKT of kept_active_set.rs orders them); the steps
    /// end with it. Returns the step's multipliers with it.
    pub fn into_factor(self, st: SchurStep) -> (SchurFactor, Vec<f64>) {
        let n = self.l.nrows();
        let SchurStep {
            rows, lam, mchol, ..
        } = st;
        let ys = Mat::<f64>::from_fn(n, rows.len(), |i, j| self.y[(i, rows[j])]);
        (
            SchurFactor {
                l: self.l,
                ys,
                mchol,
            },
            lam,
        )
    }
}

/// The lower Cholesky factor of the symmetric positive definite matrix whose lower triangle
/// `a` holds, in place (the upper triangle is not read); false when a pivot is not positive
/// and finite (not numerically positive definite).
fn cholesky_lower(a: &mut Mat<f64>) -> bool {
    let n = a.nrows();
    for j in 0..n {
        let mut d = a[(j, j)];
        for k in 0..j {
            d -= a[(j, k)] * a[(j, k)];
        }
        if !(d > 0.0 && d.is_finite()) {
            return false;
        }
        let d = d.sqrt();
        a[(j, j)] = d;
        for i in j + 1..n {
            let mut v = a[(i, j)];
            for k in 0..j {
                v -= a[(i, k)] * a[(j, k)];
            }
            a[(i, j)] = v / d;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `L L'` is the matrix (lower triangle given, upper ignored); a singular positive
    /// semidefinite matrix and an indefinite one are refused.
    #[test]
    fn cholesky_lower_factors_and_refuses() {
        let b = [[2.0, -1.0, 0.5], [0.3, 1.5, -0.7], [1.1, 0.2, 0.9]];
        let a = Mat::<f64>::from_fn(3, 3, |i, j| {
            (0..3).map(|k| b[i][k] * b[j][k]).sum::<f64>() + f64::from(u8::from(i == j))
        });
        let mut l = Mat::<f64>::from_fn(3, 3, |i, j| if i >= j { a[(i, j)] } else { 7.0 });
        assert!(cholesky_lower(&mut l));
        for i in 0..3 {
            for j in 0..=i {
                let llt: f64 = (0..=j).map(|k| l[(i, k)] * l[(j, k)]).sum();
                assert!((llt - a[(i, j)]).abs() < 1e-14 * a[(i, j)].abs().max(1.0));
            }
        }
        // [[1, 1], [1, 1]] (singular) and [[1, 2], [2, 1]] (indefinite).
        for off in [1.0, 2.0] {
            let mut m = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { off });
            assert!(!cholesky_lower(&mut m), "off-diagonal {off}");
        }
    }
}
