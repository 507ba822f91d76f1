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
//! `(n + |S|)`-square Bunch-Kaufman factorization. The steps only find the active set:
//! kept_active_set.rs confirms it with the full restricted solve, whose answer is checked
//! and whose factor the backward keeps.
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, Par, Side};
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
/// the order equalities, then inequality rows.
pub struct SchurSteps {
    me: usize,
    m: Mat<f64>,
    t: Vec<f64>,
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
        let llt = p.llt(Side::Lower).ok()?;
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
        solve_lower_triangular_in_place(llt.L(), y.as_mut(), Par::Seq);
        // Y' [Y u] = [M, B P^{-1} c].
        let mut mw = Mat::<f64>::zeros(k, k + 1);
        matmul(
            mw.as_mut(),
            Accum::Replace,
            y.as_ref().subcols(0, k).transpose(),
            y.as_ref(),
            1.0,
            Par::Seq,
        );
        let t: Vec<f64> = (0..k)
            .map(|j| {
                let r = if j < me { prob.b[j] } else { prob.h[j - me] };
                -(r + mw[(j, k)])
            })
            .collect();
        let m = mw.subcols(0, k).to_owned();
        (m.col_iter().all(|c| c.iter().all(|v| v.is_finite())) && t.iter().all(|v| v.is_finite()))
            .then_some(SchurSteps { me, m, t })
    }

    /// The multipliers of the active inequality rows `active` (increasing) and the slack of
    /// every inequality row at the restricted solution on them; `None` when `M_SS` is not
    /// numerically positive definite (dependent rows) or the result is not finite.
    pub fn step(&self, active: &[usize]) -> Option<(Vec<f64>, Vec<f64>)> {
        let me = self.me;
        let rows: Vec<usize> = (0..me).chain(active.iter().map(|&i| me + i)).collect();
        let s = rows.len();
        let mut lam = Mat::<f64>::from_fn(s, 1, |a, _| self.t[rows[a]]);
        if s > 0 {
            let mss = Mat::<f64>::from_fn(s, s, |a, b| self.m[(rows[a], rows[b])]);
            let llt = mss.llt(Side::Lower).ok()?;
            llt.solve_in_place(lam.as_mut());
        }
        let lam: Vec<f64> = (0..s).map(|a| lam[(a, 0)]).collect();
        let mi = self.t.len() - me;
        let mut slack: Vec<f64> = (0..mi).map(|i| -self.t[me + i]).collect();
        for (&r, &l) in rows.iter().zip(&lam) {
            for (i, sl) in slack.iter_mut().enumerate() {
                *sl += self.m[(me + i, r)] * l;
            }
        }
        let z_w = lam[me..].to_vec();
        (z_w.iter().chain(&slack).all(|v| v.is_finite())).then_some((z_w, slack))
    }
}
