//! The adjoint's K condensed on its x block when H is block diagonal: the Schur complement
//! over cone blocks, each coupled to x through a few columns.
//!
//! The adjoint's `K = [[P + d, A'], [A, -H - d]]` (kkt_adjoint.rs) has a trailing block
//! `D = -H - d` that is block diagonal: one 1 x 1 block per zero / nonneg row and one dense
//! block per SOC, PSD, exp or power cone. With the leading block `L0` (`k x k`, P plus its
//! regularisation), the coupling `B` and `D` negative definite (H positive semidefinite,
//! `d > 0`), the system `[[L0, B'], [B, D]] [u; v] = [f; g]` is
//!
//! ```text
//! S = L0 + sum_b B_b' (-D_b)^{-1} B_b        (k x k, positive definite)
//! S u = f + sum_b B_b' (-D_b)^{-1} g_b,      v_b = -(-D_b)^{-1} (g_b - B_b u)
//! ```
//!
//! where `B_b` holds only the columns block `b` couples to (an exp cone's 3 rows touch a
//! few of x's entries), so forming S costs `sum_b d_b^2 c_b + d_b c_b^2` flops, each
//! `-D_b` one Cholesky of its own size, and S one Cholesky of `k`: against a sparse LDL' of
//! the whole `(k + m)`-square K. Inertia by Haynsworth: `m` negatives when every block's
//! and S's Cholesky succeed. Anything else (a block or S not numerically definite, a
//! non-finite value, a pattern that is not this shape) hands the matrix whole to the
//! fallback backend, which then factors, solves and reports the inertia.
//!
//! S spans the blocks' `1/|D_b|`, so near an active cone (H ~ 0, `D_b ~ -d`) the condensed
//! solve is not backward stable in K; kkt_adjoint.rs refines every solve against the
//! unregularised K (kkt_refine.rs), as it does for condensed_backend.rs's diagonal case.
use crate::condensing::{Condense, Condensing, DenseLlt, Triplets};
use pounce_linsol::SparseSymLinearSolverInterface;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Matrices this process has factored in the block-condensed form (not the fallback's).
static FACTORED: AtomicUsize = AtomicUsize::new(0);

/// How many matrices this process has factored block-condensed: what shows that a caller
/// (the adjoint, the Newton steps) reaches this backend, for tests and measurements.
pub fn factorizations() -> usize {
    FACTORED.load(Ordering::Relaxed)
}

/// Largest trailing block condensed (a larger one sends the pattern to the fallback).
pub const BLOCK_CONDENSED_MAX_BLOCK: usize = 64;
/// Largest leading block condensed: S is factored dense, which a large sparse problem's
/// feral LDL' can beat; measured faster at k = 22-65 (docs/exp-socp-profile.md, "The
/// adjoint condensed over cone blocks"), so larger leads keep the previous choice.
pub const BLOCK_CONDENSED_MAX_LEAD: usize = 128;

/// Where a stored triplet slot goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Entry (r, c) of the leading block, r >= c.
    Lead(usize, usize),
    /// Block `b`'s coupling: the flat index in its `B_b`.
    Coupling(usize, usize),
    /// Block `b`'s own entry: the flat index (lower triangle) in its `-D_b`.
    Own(usize, usize),
}

/// One trailing block: its rows, the leading columns it couples to, and its factors.
struct Block {
    start: usize,
    dim: usize,
    cols: Vec<usize>,
    /// `B_b` (`dim x cols`, column-major).
    b: Vec<f64>,
    /// `-D_b`'s lower triangle, then its Cholesky factor (`dim x dim`, column-major).
    l: Vec<f64>,
}

/// Cholesky in place of the lower triangle of the `d x d` column-major `a`; false when a
/// pivot is not positive and finite.
fn chol(a: &mut [f64], d: usize) -> bool {
    for j in 0..d {
        let mut djj = a[j * d + j];
        for p in 0..j {
            djj -= a[p * d + j] * a[p * d + j];
        }
        if !(djj > 0.0 && djj.is_finite()) {
            return false;
        }
        let ljj = djj.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut v = a[j * d + i];
            for p in 0..j {
                v -= a[p * d + i] * a[p * d + j];
            }
            a[j * d + i] = v / ljj;
        }
    }
    true
}

/// `x = L^{-1} x` with the `d x d` column-major lower-triangular `l`.
fn lower_solve(l: &[f64], d: usize, x: &mut [f64]) {
    for j in 0..d {
        x[j] /= l[j * d + j];
        let xj = x[j];
        for i in j + 1..d {
            x[i] -= l[j * d + i] * xj;
        }
    }
}

/// `x = (L L')^{-1} x` with the `d x d` column-major Cholesky factor `l`.
fn chol_solve(l: &[f64], d: usize, x: &mut [f64]) {
    lower_solve(l, d, x);
    for j in (0..d).rev() {
        let mut v = x[j];
        for i in j + 1..d {
            v -= l[j * d + i] * x[i];
        }
        x[j] = v / l[j * d + j];
    }
}

/// The block-condensed backend (module docs): [`BlockSchur`] with its fallback. Serial.
pub type BlockCondensedBackend = Condensing<BlockSchur>;

impl BlockCondensedBackend {
    /// A backend condensing on the leading `lead` rows, the trailing rows partitioned into
    /// `blocks` (`(first row, rows)`, increasing, covering `lead..dim`); what does not
    /// condense goes to `fallback`.
    pub fn new(
        lead: usize,
        blocks: &[(usize, usize)],
        fallback: Box<dyn SparseSymLinearSolverInterface>,
    ) -> Self {
        let inner = BlockSchur {
            k: lead,
            dim: 0,
            blocks: blocks
                .iter()
                .map(|&(start, dim)| Block {
                    start,
                    dim,
                    cols: Vec::new(),
                    b: Vec::new(),
                    l: Vec::new(),
                })
                .collect(),
            slots: Vec::new(),
            s: DenseLlt::default(),
            col: Vec::new(),
            y: Vec::new(),
        };
        Condensing::with_inner(inner, fallback)
    }
}

/// The Schur complement on the leading block over the trailing cone blocks (module docs).
pub struct BlockSchur {
    k: usize,
    dim: usize,
    blocks: Vec<Block>,
    slots: Vec<Slot>,
    /// S, then its Cholesky factor (`k x k` column-major, lower triangle).
    s: DenseLlt,
    /// Workspace: one block's `L_b^{-1} B_b`, the trailing right-hand side.
    col: Vec<f64>,
    y: Vec<f64>,
}

impl BlockSchur {
    /// Map the pattern's slots; false when it is not the leading block plus these blocks.
    fn map_pattern(&mut self, rows: &[usize], cols: &[usize]) -> bool {
        let (k, dim) = (self.k, self.dim);
        if k == 0 || k > BLOCK_CONDENSED_MAX_LEAD || self.blocks.is_empty() {
            return false;
        }
        let mut owner = vec![usize::MAX; dim];
        let mut next = k;
        for (bi, blk) in self.blocks.iter().enumerate() {
            if blk.start != next || blk.dim == 0 || blk.dim > BLOCK_CONDENSED_MAX_BLOCK {
                return false;
            }
            owner[blk.start..blk.start + blk.dim].fill(bi);
            next += blk.dim;
        }
        if next != dim {
            return false;
        }
        let mut bcols: Vec<Vec<usize>> = vec![Vec::new(); self.blocks.len()];
        for (&r, &c) in rows.iter().zip(cols) {
            if r >= k && c < k {
                bcols[owner[r]].push(c);
            } else if r >= k && owner[r] != owner[c] {
                return false;
            }
        }
        for (blk, mut cs) in self.blocks.iter_mut().zip(bcols) {
            cs.sort_unstable();
            cs.dedup();
            blk.b = vec![0.0; blk.dim * cs.len()];
            blk.l = vec![0.0; blk.dim * blk.dim];
            blk.cols = cs;
        }
        self.s = DenseLlt::new(k);
        let widest = self
            .blocks
            .iter()
            .map(|b| b.dim * b.cols.len())
            .max()
            .unwrap_or(0);
        self.col = vec![0.0; widest];
        self.y = vec![0.0; dim - k];

        self.slots = rows
            .iter()
            .zip(cols)
            .map(|(&r, &c)| {
                if r < k {
                    Slot::Lead(r, c)
                } else {
                    let bi = owner[r];
                    let blk = &self.blocks[bi];
                    if c < k {
                        let j = blk.cols.binary_search(&c).expect("collected above");
                        Slot::Coupling(bi, j * blk.dim + (r - blk.start))
                    } else {
                        Slot::Own(bi, (c - blk.start) * blk.dim + (r - blk.start))
                    }
                }
            })
            .collect();
        true
    }

    /// Form and factor S (module docs); false when a block or S is not numerically
    /// definite or a value is not finite.
    fn factor_condensed(&mut self, values: &[f64]) -> bool {
        let k = self.k;
        self.s.a.fill(0.0);
        for blk in &mut self.blocks {
            blk.b.fill(0.0);
            blk.l.fill(0.0);
        }
        for (slot, &v) in self.slots.iter().zip(values) {
            if !v.is_finite() {
                return false;
            }
            match *slot {
                Slot::Lead(r, c) => self.s.a[c * k + r] += v,
                Slot::Coupling(b, i) => self.blocks[b].b[i] += v,
                Slot::Own(b, i) => self.blocks[b].l[i] -= v,
            }
        }
        let col = &mut self.col;
        for blk in &mut self.blocks {
            let d = blk.dim;
            if !chol(&mut blk.l, d) {
                return false;
            }
            // S[C, C] += X' X with X = L_b^{-1} B_b (B' (-D)^{-1} B), lower triangle (C
            // increasing).
            let c = blk.cols.len();
            let x = &mut col[..d * c];
            x.copy_from_slice(&blk.b);
            for xj in x.chunks_exact_mut(d) {
                lower_solve(&blk.l, d, xj);
            }
            for (j, &cj) in blk.cols.iter().enumerate() {
                let xj = &x[j * d..(j + 1) * d];
                for (i, &ci) in blk.cols.iter().enumerate().skip(j) {
                    let xi = &x[i * d..(i + 1) * d];
                    self.s.a[cj * k + ci] += xi.iter().zip(xj).map(|(a, b)| a * b).sum::<f64>();
                }
            }
        }
        self.s.factor()
    }

    /// Overwrite `x` (one right-hand side, length dim) with K^{-1} x, condensed.
    fn condensed_solve(&mut self, x: &mut [f64]) {
        let k = self.k;
        let (top, bot) = x.split_at_mut(k);
        let y = &mut self.y;
        y.copy_from_slice(bot);
        for blk in &self.blocks {
            let (off, d) = (blk.start - k, blk.dim);
            let yb = &mut y[off..off + d];
            chol_solve(&blk.l, d, yb);
            for (j, &c) in blk.cols.iter().enumerate() {
                let bj = &blk.b[j * d..(j + 1) * d];
                top[c] += bj.iter().zip(yb.iter()).map(|(a, b)| a * b).sum::<f64>();
            }
        }
        self.s.solve(top);
        for blk in &self.blocks {
            let (off, d) = (blk.start - k, blk.dim);
            let t = &mut bot[off..off + d];
            for (j, &c) in blk.cols.iter().enumerate() {
                let uc = top[c];
                for (tr, &b) in t.iter_mut().zip(&blk.b[j * d..(j + 1) * d]) {
                    *tr -= b * uc;
                }
            }
            chol_solve(&blk.l, d, t);
            t.iter_mut().for_each(|v| *v = -*v);
        }
    }
}

impl Condense for BlockSchur {
    fn analyse(&mut self, dim: usize, t: &Triplets) -> bool {
        self.dim = dim;
        let ok = self.map_pattern(&t.rows, &t.cols);
        if !ok {
            self.slots.clear();
        }
        ok
    }

    fn factor(&mut self, t: &Triplets) -> Option<usize> {
        let ok = self.factor_condensed(&t.values);
        if ok {
            FACTORED.fetch_add(1, Ordering::Relaxed);
        }
        ok.then_some(self.dim - self.k)
    }

    fn solve(&mut self, _t: &Triplets, x: &mut [f64]) {
        self.condensed_solve(x);
    }
}
