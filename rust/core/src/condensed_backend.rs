//! A condensed dense backend for POUNCE's linear-solver interface: the Schur complement on
//! the leading block of a KKT whose trailing block is diagonal.
//!
//! pounce-convex's QP IPM (the direct driver's `KktStructure`) lays its KKT out as
//! `[x; y_eq; z_ineq]`: `[[P + dw I, A', G'], [A, -dc I, 0], [G, 0, -W - reg I]]` (lower
//! triangle stored). Every row after the x block couples only to x and to its own diagonal.
//! With `H` the leading `k x k` block, `B` the trailing `m x k` coupling and `D` the trailing
//! diagonal, the system `[[H, B'], [B, D]] [u; v] = [f; g]` is solved through
//!
//! ```text
//! S = H - B' D^{-1} B          (k x k, dense, symmetric)
//! S u = f - B' D^{-1} g,       v = D^{-1} (g - B u)
//! ```
//!
//! For an IPM's KKT `D < 0` and `H` is positive definite (P plus its regularisation), so S is
//! positive definite and factors by Cholesky: about `k^2 m + k^3 / 3` flops against
//! `(k + m)^3 / 3` for an LDL' of the whole matrix (n = m = 50: 167k against 333k). The
//! inertia follows from Haynsworth's formula, `In(K) = In(D) + In(S)`: the negatives are
//! D's negative entries when the Cholesky succeeds. Whenever that argument does not hold
//! (a zero or non-finite D entry, S not positive definite: the Cholesky stops) the matrix
//! is handed whole to the fallback backend (the dense LBL' or feral), which then reports
//! the inertia and solves; a wrong inertia is never reported.
//!
//! The condensed solve is not backward stable in K when D has entries of very different
//! sizes (an active inequality's `s/z -> 0`, a small equality regularisation): S's entries
//! then span `1/|D|`, and on a KKT whose scaling spans 1e-10..1e10 the solve leaves
//! residuals up to ~1e-5 of the right-hand side (the LBL' ~1e-14). The IPM does not refine
//! (`new`): its iterations are inexact Newton steps, its convergence test is on its own true
//! residuals, and anything short of `Optimal` is solved again by the robust engine
//! (options.rs); on the QPs and LPs of tests/condensed_backend.rs it takes the iterations it
//! takes with the LBL'. [`CondensedBackend::refined`] refines each solve against K (the
//! stored triplets, `4 nnz` flops per residual), up to [`REFINE_STEPS`] steps while the
//! componentwise backward error exceeds [`REFINE_REL`] and keeps halving; at n = m = 50 that
//! costs more than the factorization (examples/kkt_backends.rs).
//!
//! Structure detection ([`trailing_diagonal_split`]) runs once per pattern at
//! `initialize_structure`; a pattern without such a block (or whose leading block exceeds
//! [`CONDENSED_MAX_LEAD`]) goes to the fallback for every matrix. The interface's plumbing
//! (triplets, fallback, inertia) is condensing.rs'.
use crate::condensing::{Condense, Condensing, DenseLlt, Triplets};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, MatRef, Par};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Largest leading (condensed) block the backend factors densely; a larger one goes to the
/// fallback.
pub const CONDENSED_MAX_LEAD: usize = 600;
/// A solve is refined while its componentwise backward error in K,
/// `max_i |rhs - K sol|_i / (|K| |sol| + |rhs|)_i`, exceeds this ...
pub const REFINE_REL: f64 = 1e-13;
/// ... for at most this many steps, each kept only while the residual halves.
pub const REFINE_STEPS: usize = 2;

/// The split `k` of a symmetric pattern (0-based `(row, col)` pairs, either triangle,
/// duplicates allowed) such that every entry with an index `>= k` is either a diagonal
/// entry or couples to an index `< k`, and every trailing diagonal entry is present: the
/// smallest such `k` (one past the largest column of an off-diagonal lower-triangle entry).
/// `None` when no row can be condensed (`k == dim`) or a trailing diagonal is missing.
pub fn trailing_diagonal_split(
    dim: usize,
    entries: impl Iterator<Item = (usize, usize)>,
) -> Option<usize> {
    let mut k = 0usize;
    let mut has_diag = vec![false; dim];
    for (r, c) in entries {
        let (r, c) = (r.max(c), r.min(c));
        if r == c {
            has_diag[r] = true;
        } else {
            k = k.max(c + 1);
        }
    }
    (k < dim && has_diag[k..].iter().all(|&d| d)).then_some(k)
}

/// Where a stored triplet slot goes: its flat index in the column-major block it feeds.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Lower triangle of the leading block H (`k x k`).
    Lead(usize),
    /// The coupling block B (`m x k`).
    Coupling(usize),
    /// The trailing diagonal D.
    Diag(usize),
}

/// Largest KKT dimension for which [`use_condensed`] picks this backend over feral when the
/// KKT is too large for the full dense factor (`DENSE_MAX_DIM`) but filled.
pub const CONDENSED_AUTO_MAX_DIM: usize = 1600;

/// Whether an IPM KKT of dimension `dim` with `nnz_lower` stored lower-triangle entries,
/// which the size/fill policy gives to feral (`dense` false) or to the full dense factor
/// (`dense` true), goes to this backend instead: always in place of the full dense factor
/// (fewer flops whenever the structure condenses; the backend falls back otherwise), and in
/// place of feral when the KKT is filled (`DENSE_MIN_FILL`) and at most
/// [`CONDENSED_AUTO_MAX_DIM`]. The leading block's bound [`CONDENSED_MAX_LEAD`] is applied
/// on the pattern (`initialize_structure`).
pub fn use_condensed(dense: bool, dim: usize, nnz_lower: usize) -> bool {
    let full = dim * (dim + 1) / 2;
    dense
        || (dim <= CONDENSED_AUTO_MAX_DIM
            && nnz_lower as f64 >= crate::dense_backend::DENSE_MIN_FILL * full as f64)
}

/// Counts of how the matrices were factored (for tests and measurements).
#[derive(Debug, Default)]
pub struct CondensedStats {
    /// Matrices factored through the Schur complement.
    pub condensed: AtomicUsize,
    /// Matrices handed to the fallback (no condensable structure, zero D, S not PD).
    pub fallback: AtomicUsize,
    /// Refinement steps taken (over all solves).
    pub refine_steps: AtomicUsize,
    /// The leading block's size of the last pattern (`usize::MAX` when it did not condense).
    pub lead: AtomicUsize,
}

/// The condensed dense backend (module docs): [`DiagonalSchur`] with its fallback. Serial.
pub type CondensedBackend = Condensing<DiagonalSchur>;

impl CondensedBackend {
    /// A backend that hands the matrices it cannot condense to `fallback`; solves are not
    /// refined (the IPM's use: module docs).
    pub fn new(fallback: Box<dyn SparseSymLinearSolverInterface>) -> Self {
        Condensing::with_inner(DiagonalSchur::default(), fallback)
    }

    /// Whether each solve is refined against K (up to [`REFINE_STEPS`] steps while its
    /// componentwise backward error exceeds [`REFINE_REL`]).
    pub fn refined(mut self, on: bool) -> Self {
        self.inner.refine = on;
        self
    }

    /// Count the factorizations and refinement steps into `stats`.
    pub fn with_stats(mut self, stats: Arc<CondensedStats>) -> Self {
        self.inner.stats = Some(stats);
        self
    }

    /// The leading block's size when the pattern condenses.
    pub fn lead_dim(&self) -> Option<usize> {
        self.condensable().then_some(self.inner.k)
    }
}

/// The Schur complement on the leading block of a KKT whose trailing block is diagonal
/// (module docs).
#[derive(Default)]
pub struct DiagonalSchur {
    /// Leading block size.
    k: usize,
    /// Trailing block size.
    m: usize,
    /// Whether solves are refined against K (module docs).
    refine: bool,
    slots: Vec<Slot>,
    /// H, then S, then its Cholesky factor L (lower triangle; `k x k` column-major).
    s: DenseLlt,
    /// B (`m x k` column-major).
    b: Vec<f64>,
    /// diag(w) B.
    bw: Vec<f64>,
    d: Vec<f64>,
    /// -1 / D.
    w: Vec<f64>,
    tmp: Vec<f64>,
    res: Vec<f64>,
    corr: Vec<f64>,
    scale: Vec<f64>,
    old: Vec<f64>,
    rhs0: Vec<f64>,
    stats: Option<Arc<CondensedStats>>,
}

impl DiagonalSchur {
    fn count(&self, f: impl Fn(&CondensedStats) -> &AtomicUsize, by: usize) {
        if let Some(s) = &self.stats {
            f(s).fetch_add(by, Ordering::Relaxed);
        }
    }

    /// Scatter the values into H, B and D; false for a non-finite value or a zero D entry.
    fn assemble(&mut self, values: &[f64]) -> bool {
        self.s.a.fill(0.0);
        self.b.fill(0.0);
        self.d.fill(0.0);
        let mut amax = 0.0f64;
        let mut finite = true;
        for (slot, &v) in self.slots.iter().zip(values) {
            finite &= v.is_finite();
            amax = amax.max(v.abs());
            match *slot {
                Slot::Lead(i) => self.s.a[i] += v,
                Slot::Coupling(i) => self.b[i] += v,
                Slot::Diag(i) => self.d[i] += v,
            }
        }
        let tiny = f64::MIN_POSITIVE.max(1e-300 * amax);
        finite && self.d.iter().all(|d| d.abs() > tiny)
    }

    /// Form S and factor it; false when S is not (numerically) positive definite.
    fn factor_condensed(&mut self) -> bool {
        let (k, m) = (self.k, self.m);
        for (wi, &di) in self.w.iter_mut().zip(&self.d) {
            *wi = -1.0 / di;
        }
        for (bwc, bc) in self.bw.chunks_exact_mut(m).zip(self.b.chunks_exact(m)) {
            for ((o, &bi), &wi) in bwc.iter_mut().zip(bc).zip(&self.w) {
                *o = wi * bi;
            }
        }
        // S (lower) = H + B' diag(w) B.
        tri_matmul(
            self.s.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            MatRef::from_column_major_slice(&self.b, m, k).transpose(),
            BlockStructure::Rectangular,
            MatRef::from_column_major_slice(&self.bw, m, k),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        self.s.factor()
    }

    /// Overwrite `x` (one right-hand side, length dim) with K^{-1} x, condensed.
    fn condensed_solve(&mut self, x: &mut [f64]) {
        let (k, m) = (self.k, self.m);
        let (top, bot) = x.split_at_mut(k);
        // top += B' (w .* bot)
        for ((t, &wi), &ci) in self.tmp.iter_mut().zip(&self.w).zip(bot.iter()) {
            *t = wi * ci;
        }
        for (tj, bc) in top.iter_mut().zip(self.b.chunks_exact(m)) {
            *tj += dot(bc, &self.tmp);
        }
        self.s.solve(top);
        // bot = -w .* (bot - B top)
        self.tmp.fill(0.0);
        for (&tj, bc) in top.iter().zip(self.b.chunks_exact(m)) {
            for (t, &bi) in self.tmp.iter_mut().zip(bc) {
                *t += tj * bi;
            }
        }
        for ((c, &wi), &t) in bot.iter_mut().zip(&self.w).zip(&self.tmp) {
            *c = -wi * (*c - t);
        }
    }

    /// `out = rhs - K x` over the stored triplets; returns the componentwise backward error
    /// `max_i |out_i| / (|K| |x| + |rhs|)_i` (Oettli-Prager), with `scale` as workspace.
    fn residual(t: &Triplets, x: &[f64], rhs: &[f64], out: &mut [f64], scale: &mut [f64]) -> f64 {
        out.copy_from_slice(rhs);
        for (s, b) in scale.iter_mut().zip(rhs) {
            *s = b.abs();
        }
        for ((&r, &c), &v) in t.rows.iter().zip(&t.cols).zip(&t.values) {
            out[r] -= v * x[c];
            scale[r] += (v * x[c]).abs();
            if r != c {
                out[c] -= v * x[r];
                scale[c] += (v * x[r]).abs();
            }
        }
        out.iter().zip(scale.iter()).fold(
            0.0f64,
            |m, (&r, &s)| {
                if r == 0.0 {
                    m
                } else {
                    m.max(r.abs() / s)
                }
            },
        )
    }

    /// Refine `x` against K for the right-hand side `b` (module docs); returns the steps.
    fn refine_one(&mut self, t: &Triplets, x: &mut [f64], b: &[f64]) -> usize {
        let mut res = std::mem::take(&mut self.res);
        let mut corr = std::mem::take(&mut self.corr);
        let mut scale = std::mem::take(&mut self.scale);
        let mut old = std::mem::take(&mut self.old);
        let n = x.len();
        for v in [&mut res, &mut corr, &mut scale, &mut old] {
            v.resize(n, 0.0);
        }
        let mut steps = 0;
        let mut r = Self::residual(t, x, b, &mut res, &mut scale);
        for _ in 0..REFINE_STEPS {
            if r <= REFINE_REL || r.is_nan() {
                break;
            }
            corr.copy_from_slice(&res);
            self.condensed_solve(&mut corr);
            old.copy_from_slice(x);
            for (xi, ci) in x.iter_mut().zip(&corr) {
                *xi += ci;
            }
            steps += 1;
            let r_new = Self::residual(t, x, b, &mut res, &mut scale);
            let (improved, halved) = (r_new <= r, r_new <= 0.5 * r);
            if !improved {
                x.copy_from_slice(&old);
            }
            if !halved {
                break;
            }
            r = r_new;
        }
        self.res = res;
        self.corr = corr;
        self.scale = scale;
        self.old = old;
        steps
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators: lets the compiler vectorise the reduction.
    let mut acc = [0.0f64; 4];
    let (ca, ra) = a.split_at(a.len() / 4 * 4);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(4).zip(cb.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

impl Condense for DiagonalSchur {
    fn analyse(&mut self, dim: usize, t: &Triplets) -> bool {
        let split =
            trailing_diagonal_split(dim, t.rows.iter().copied().zip(t.cols.iter().copied()))
                .filter(|&k| k <= CONDENSED_MAX_LEAD);
        if let Some(st) = &self.stats {
            st.lead
                .store(split.unwrap_or(usize::MAX), Ordering::Relaxed);
        }
        let Some(k) = split else {
            self.slots.clear();
            return false;
        };
        let m = dim - k;
        self.k = k;
        self.m = m;
        self.slots = t
            .rows
            .iter()
            .zip(&t.cols)
            .map(|(&r, &c)| {
                if r < k {
                    Slot::Lead(c * k + r)
                } else if r == c {
                    Slot::Diag(r - k)
                } else {
                    Slot::Coupling(c * m + (r - k))
                }
            })
            .collect();
        self.s = DenseLlt::new(k);
        self.b = vec![0.0; m * k];
        self.bw = vec![0.0; m * k];
        self.d = vec![0.0; m];
        self.w = vec![0.0; m];
        self.tmp = vec![0.0; m];
        true
    }

    fn factor(&mut self, t: &Triplets) -> Option<usize> {
        if !(self.assemble(&t.values) && self.factor_condensed()) {
            return None;
        }
        self.count(|s| &s.condensed, 1);
        Some(self.d.iter().filter(|&&d| d < 0.0).count())
    }

    fn solve(&mut self, t: &Triplets, x: &mut [f64]) {
        if !self.refine {
            self.condensed_solve(x);
            return;
        }
        let mut rhs0 = std::mem::take(&mut self.rhs0);
        rhs0.clear();
        rhs0.extend_from_slice(x);
        self.condensed_solve(x);
        let steps = self.refine_one(t, x, &rhs0);
        self.rhs0 = rhs0;
        self.count(|s| &s.refine_steps, steps);
    }

    fn on_fallback(&mut self) {
        self.count(|s| &s.fallback, 1);
    }
}
