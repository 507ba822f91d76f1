//! Batched sparse KKT adjoints: the backward of the conic forward (batch.rs).
//!
//! Method (docs/design.md, "The KKT adjoint"). We differentiate the optimality conditions in
//! KKT form: stationarity `P_eff x + q + A'y = 0`, primal feasibility `A x + s = b`, and the
//! complementarity of each cone linearised at the solution as `ds = -H dy` (`H` symmetric
//! PSD, per cone; computed by the caller, in pounce_kkt/cone_scaling.py, and passed as
//! `h_diag` (zero and nonneg rows) and `h_blocks` (each SOC, PSD, exp and power block dense
//! row-major, in cone order)). That is the interior-point method's own Newton system at
//! centring 0, `K = [[P_eff, A'], [A, -H]]`: symmetric quasi-definite, so it factors with a
//! sparse LDL' (feral through pounce-linsol) whose symbolic analysis each worker keeps, or,
//! when K is small and mostly filled, with the dense backend (options.rs `kkt_backend`); with
//! H diagonal (zero and nonneg rows only), through its x block's Schur complement
//! (condensed_backend.rs, options.rs `condense_adjoint`), that choice as the fallback; with
//! cone blocks in H (SOC, PSD, exp, power), through the Schur complement over the blocks,
//! each coupled to x through its own few columns (block_condensed.rs, options.rs
//! `block_condense_adjoint`), that choice as the fallback.
//!
//! Backward: for upstream `(gx, gy, gs)` solve `K [u; v] = [gx; gy - H gs]`, then
//! `dq = -u`, `db = v`, `dA[i, j] = -(y_i u_j + v_i x_j)` on A's pattern and
//! `dP[i, j] = -(u_i x_j + u_j x_i)/2` on P's full pattern (P_eff = (P + P')/2).
//!
//! The solve, stated once here and used by the dense Torch path through the exported
//! constants: K plus a static regularisation (`+delta` on the x block, `-delta` on the y
//! block, `delta = REG_REL * max(1, max|P_eff|, max|A|)` per item), then up to
//! `REFINE_STEPS` steps of iterative refinement against the unregularised K, until the
//! residual is below `REFINE_TOL` of the right-hand side or stops halving. When that fails
//! (no factor, or a non-finite solution) delta escalates by `REG_ESCALATION`, up to
//! `REG_TRIES` factors; an item that still fails is reported unsolved.
use crate::block_condensed::BlockCondensedBackend;
use crate::cancel::{catch, Cancel, TestPanic};
use crate::condensed_backend::CondensedBackend;
use crate::cone_dims::ConeDims;
use crate::cones::ProductCone;
use crate::error::Result;
use crate::kept_active_set::KeptFactor;
use crate::options::{block_condense_adjoint, condense_adjoint, kkt_backend, BackendOptions};
use crate::pool::threads;
use crate::structure::ConicStructure;
use crate::workspaces::Workspaces;
use pounce_feral::FeralConfig;
use pounce_linsol::{Factorization, SparseSymLinearSolverInterface};
use rayon::prelude::*;

/// pounce-linsol's index type (`pounce_common::types::Index`).
type Index = i32;

use crate::kkt_refine::{refine, REG_REL};
/// When the regularised K cannot be factored or its refined solve is not finite, `delta`
/// is multiplied by `REG_ESCALATION` and the item tried again, up to `REG_TRIES` factors in
/// all (delta up to 1e9 times `REG_REL`); refinement against the unregularised K still
/// removes delta's effect where K itself is nonsingular.
pub const REG_ESCALATION: f64 = 1e3;
pub const REG_TRIES: usize = 4;

/// Source of each value of K's lower-triangle COO, in COO order.
#[derive(Debug, Clone, Copy)]
enum KSrc {
    /// Lower-triangle slot of P_eff (as laid out by `DataMap`).
    PSlot(usize),
    /// A diagonal of the x block that P does not store (value 0 + regularisation).
    XDiag,
    /// Stored entry `k` of A (row n + r, column c).
    A(usize),
    /// Diagonal `i` of H for a zero / nonneg row (from `h_diag`), entered as `-H`.
    HDiag(usize),
    /// Entry of `h_blocks` (flat offset of the symmetrised pair), entered as `-H`.
    HBlock { ij: usize, ji: usize },
}

/// The pattern of `K = [[P_eff, A'], [A, -H]]` (lower triangle, 1-based for feral), shared by
/// every item of a batch; per item only the values change.
pub struct KktPattern {
    dim: usize,
    irn: Vec<Index>,
    jcn: Vec<Index>,
    src: Vec<KSrc>,
    /// COO positions of the diagonal, for the regularisation (`dim` entries).
    diag_pos: Vec<usize>,
    /// Whether every cone's H is diagonal (zero and nonneg rows only): K's trailing block is
    /// then diagonal and may be condensed (condensed_backend.rs).
    diagonal_h: bool,
    /// K's trailing rows as blocks `(first row, rows)`: one per zero / nonneg row, one per
    /// dense cone block (block_condensed.rs).
    blocks: Vec<(usize, usize)>,
}

impl KktPattern {
    pub fn new(st: &ConicStructure) -> Self {
        let (n, m) = (st.n(), st.m());
        let dim = n + m;
        let mut irn = Vec::new();
        let mut jcn = Vec::new();
        let mut src = Vec::new();
        let mut diag_pos = vec![usize::MAX; dim];
        let mut push = |r: usize, c: usize, s: KSrc, irn: &mut Vec<Index>, jcn: &mut Vec<Index>| {
            irn.push((r + 1) as Index);
            jcn.push((c + 1) as Index);
            src.push(s);
            irn.len() - 1
        };
        for (slot, &(r, c)) in st.map.p_slots().iter().enumerate() {
            let pos = push(r, c, KSrc::PSlot(slot), &mut irn, &mut jcn);
            if r == c {
                diag_pos[r] = pos;
            }
        }
        for (i, pos) in diag_pos.iter_mut().enumerate().take(n) {
            if *pos == usize::MAX {
                *pos = push(i, i, KSrc::XDiag, &mut irn, &mut jcn);
            }
        }
        for (k, r, c) in st.a.entries() {
            push(n + r, c, KSrc::A(k), &mut irn, &mut jcn);
        }
        let lay = &st.layout;
        for i in 0..lay.h_diag_len() {
            diag_pos[n + i] = push(n + i, n + i, KSrc::HDiag(i), &mut irn, &mut jcn);
        }
        let mut off = 0;
        for blk in &lay.dense_blocks {
            let d = blk.dim;
            for i in 0..d {
                for j in 0..=i {
                    let s = KSrc::HBlock {
                        ij: off + i * d + j,
                        ji: off + j * d + i,
                    };
                    let pos = push(n + blk.start + i, n + blk.start + j, s, &mut irn, &mut jcn);
                    if i == j {
                        diag_pos[n + blk.start + i] = pos;
                    }
                }
            }
            off += d * d;
        }
        debug_assert!(diag_pos.iter().all(|&p| p != usize::MAX));
        let mut blocks: Vec<(usize, usize)> = (0..lay.h_diag_len()).map(|i| (n + i, 1)).collect();
        blocks.extend(lay.dense_blocks.iter().map(|b| (n + b.start, b.dim)));
        blocks.sort_unstable();
        KktPattern {
            dim,
            irn,
            jcn,
            src,
            diag_pos,
            diagonal_h: lay.dense_blocks.is_empty(),
            blocks,
        }
    }

    /// Unregularised values of K for one item.
    pub fn values(
        &self,
        p_low: &[f64],
        a: &[f64],
        h_diag: &[f64],
        h_blocks: &[f64],
        out: &mut [f64],
    ) {
        for (v, s) in out.iter_mut().zip(&self.src) {
            *v = match *s {
                KSrc::PSlot(slot) => p_low[slot],
                KSrc::XDiag => 0.0,
                KSrc::A(k) => a[k],
                KSrc::HDiag(i) => -h_diag[i],
                KSrc::HBlock { ij, ji } => -0.5 * (h_blocks[ij] + h_blocks[ji]),
            };
        }
    }

    /// The number of stored entries of K's lower triangle (the length of [`Self::values`]'
    /// output).
    pub fn nnz(&self) -> usize {
        self.src.len()
    }

    /// `out = K v` for the symmetric K stored as its lower triangle.
    pub fn matvec(&self, vals: &[f64], v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for ((&r, &c), &a) in self.irn.iter().zip(&self.jcn).zip(vals) {
            let (r, c) = (r as usize - 1, c as usize - 1);
            out[r] += a * v[c];
            if r != c {
                out[c] += a * v[r];
            }
        }
    }
}

/// Per-worker state: one factorization, created on the worker's first item and refactored
/// (numeric only, the symbolic analysis kept) for every later one, and the buffers.
pub struct Worker {
    fact: Option<Factorization>,
    vals: Vec<f64>,
    vals_reg: Vec<f64>,
    sol: Vec<f64>,
    res: Vec<f64>,
    corr: Vec<f64>,
}

// SAFETY: as for batch.rs' `Worker`: the factorization's boxed `dyn` backend and scaling are
// of the `Send` types checked in workspaces.rs; one thread uses a worker at a time.
unsafe impl Send for Worker {}

impl Worker {
    pub fn new(pat: &KktPattern) -> Self {
        let nnz = pat.src.len();
        Worker {
            fact: None,
            vals: vec![0.0; nnz],
            vals_reg: vec![0.0; nnz],
            sol: vec![0.0; pat.dim],
            res: vec![0.0; pat.dim],
            corr: vec![0.0; pat.dim],
        }
    }

    fn factor(&mut self, env: &Env<'_>, delta: f64, n: usize) -> bool {
        let pat = env.pat;
        self.vals_reg.copy_from_slice(&self.vals);
        for (i, &p) in pat.diag_pos.iter().enumerate() {
            self.vals_reg[p] += if i < n { delta } else { -delta };
        }
        if let Some(f) = self.fact.as_mut() {
            if f.refactor(&self.vals_reg).is_ok() {
                return true;
            }
            self.fact = None;
        }
        let full = kkt_backend(env.backends, pat.dim, pat.irn.len(), env.cfg, false);
        let backend: Box<dyn SparseSymLinearSolverInterface> = if pat.diagonal_h {
            if condense_adjoint(env.backends, pat.dim, pat.irn.len()) {
                Box::new(CondensedBackend::new(full))
            } else {
                full
            }
        } else if block_condense_adjoint(env.backends) {
            Box::new(BlockCondensedBackend::new(n, &pat.blocks, full))
        } else {
            full
        };
        match Factorization::new(
            pat.dim as Index,
            pat.irn.clone(),
            pat.jcn.clone(),
            self.vals_reg.clone(),
            backend,
        ) {
            Ok(f) => {
                self.fact = Some(f);
                true
            }
            Err(_) => false,
        }
    }

    /// The last solve's solution.
    pub(crate) fn solution(&self) -> &[f64] {
        &self.sol
    }

    /// Solve `K sol = rhs` with the regularised factor plus iterative refinement against
    /// the unregularised K. Returns false if the factor could not be used.
    fn solve(&mut self, pat: &KktPattern, rhs: &[f64]) -> bool {
        let Some(f) = self.fact.as_mut() else {
            return false;
        };
        self.sol.copy_from_slice(rhs);
        if f.solve_one(&mut self.sol).is_err() {
            return false;
        }
        let vals = &self.vals;
        refine(
            &mut self.sol,
            rhs,
            &mut self.res,
            &mut self.corr,
            |x, out| pat.matvec(vals, x, out),
            |v| f.solve_one(v).is_ok(),
        )
    }
}

/// What the items of one call share: the pattern and the backends.
pub(crate) struct Env<'a> {
    pub(crate) pat: &'a KktPattern,
    pub(crate) backends: &'a BackendOptions,
    pub(crate) cfg: &'a FeralConfig,
}

/// Solve `K sol = rhs` for one item, K from P's lower-triangle values `p_low` (DataMap
/// order), A's values and H (`h_diag`, `h_blocks`): the regularised factor plus iterative
/// refinement, delta escalating as the module docs say. The solution is `w.solution()`;
/// false when every try failed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve_item(
    env: &Env<'_>,
    w: &mut Worker,
    n: usize,
    p_low: &[f64],
    a: &[f64],
    h_diag: &[f64],
    h_blocks: &[f64],
    rhs: &[f64],
) -> bool {
    env.pat.values(p_low, a, h_diag, h_blocks, &mut w.vals);
    // Regularisation relative to the data (P and A), not to H, whose entries span
    // ~1/mu..mu.
    let scale = p_low.iter().chain(a).fold(1.0_f64, |a, v| a.max(v.abs()));
    let mut delta = REG_REL * scale;
    for _ in 0..REG_TRIES {
        if w.factor(env, delta, n) && w.solve(env.pat, rhs) {
            return true;
        }
        delta *= REG_ESCALATION;
    }
    false
}

/// Borrowed per-item inputs.
struct ItemIn<'a> {
    p: Option<&'a [f64]>,
    a: &'a [f64],
    h_diag: &'a [f64],
    h_blocks: &'a [f64],
    x: &'a [f64],
    y: &'a [f64],
    gx: &'a [f64],
    gy: &'a [f64],
    gs: &'a [f64],
    kept: Option<&'a KeptFactor>,
}

/// Per-item outputs (written in place, already zeroed).
struct ItemOut<'a> {
    dp: &'a mut [f64],
    dq: &'a mut [f64],
    da: &'a mut [f64],
    db: &'a mut [f64],
}

fn adjoint_item(
    st: &ConicStructure,
    env: &Env<'_>,
    w: &mut Worker,
    d: &ItemIn<'_>,
    o: ItemOut<'_>,
) -> bool {
    let (n, m) = (st.n(), st.m());
    let p_low = st.map.p_lower_values(d.p);
    // K [u; v] = [gx; gy - H gs] is solved as K [u; w] = [gx - A' gs; gy] with v = w + gs
    // (exact algebra): the right-hand side then never holds H gs, whose magnitude on rows
    // with a huge H (inactive constraints, H = s/y ~ 1/mu) would swamp the refinement test.
    let mut rhs = Vec::with_capacity(n + m);
    rhs.extend_from_slice(d.gx);
    rhs.extend_from_slice(d.gy);
    for (k, r, c) in st.a.entries() {
        rhs[c] -= d.a[k] * d.gs[r];
    }
    let reused = d
        .kept
        .and_then(|f| {
            // The refinement's residuals are against the item's own K (P, A and H).
            env.pat
                .values(&p_low, d.a, d.h_diag, d.h_blocks, &mut w.vals);
            let vals = &w.vals;
            f.adjoint_solve(&st.layout, d.h_diag, &rhs, |v, out| {
                env.pat.matvec(vals, v, out)
            })
        })
        .map(|sol| w.sol.copy_from_slice(&sol))
        .is_some();
    if !reused && !solve_item(env, w, n, &p_low, d.a, d.h_diag, d.h_blocks, &rhs) {
        return false;
    }
    let (u, wv) = w.sol.split_at(n);
    for (dq, &ui) in o.dq.iter_mut().zip(u) {
        *dq = -ui;
    }
    for ((db, &wi), &g) in o.db.iter_mut().zip(wv).zip(d.gs) {
        *db = wi + g;
    }
    let v = &*o.db;
    for (k, r, c) in st.a.entries() {
        o.da[k] = -(d.y[r] * u[c] + v[r] * d.x[c]);
    }
    if let Some(p) = &st.p {
        for (k, r, c) in p.entries() {
            o.dp[k] = -0.5 * (u[r] * d.x[c] + u[c] * d.x[r]);
        }
    }
    true
}

/// Lengths of `h_diag` and `h_blocks` for these cones, checked for overflow.
pub fn h_lens(dims: &ConeDims) -> Result<(usize, usize)> {
    let p = ProductCone::new(dims)?;
    Ok((p.h_diag_len, p.h_blocks_len))
}

/// The adjoint workers a problem handle keeps across its calls (keyed by the backend
/// options their factorizations were built with).
pub type AdjointWorkspaces = Workspaces<BackendOptions, Worker>;

/// The arrays of an adjoint batch of `bsz` items, batch-first and row-major: `p (B, nnzP)`
/// (None without a P pattern), `a (B, nnzA)`, `h_diag (B, z + l)`, `h_blocks (B, sum
/// d_k^2)`, `x (B, n)`, `y (B, m)`, upstream `gx (B, n)`, `gy (B, m)`, `gs (B, m)`, and
/// `ok (B,)`: items whose `ok` is false get zero gradients.
pub struct AdjointInput<'a> {
    pub bsz: usize,
    pub p: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub h_diag: &'a [f64],
    pub h_blocks: &'a [f64],
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub gx: &'a [f64],
    pub gy: &'a [f64],
    pub gs: &'a [f64],
    pub ok: &'a [bool],
    /// The factors of the forward's kept active sets per item (qp_sessions.rs
    /// `ItemState::factor`; may be empty or shorter than the batch): an item whose factor
    /// was built from these P and A values, at this active set, is solved with it.
    pub kept: &'a [Option<&'a KeptFactor>],
}

/// Gradients `dp (B, nnzP)` (empty without P), `dq (B, n)`, `da (B, nnzA)`, `db (B, m)`,
/// and which items got one (`solved`: false for items not ok, cancelled, panicked or whose
/// K could not be factored; their gradients are zero).
#[derive(Default)]
pub struct Grads {
    pub dp: Vec<f64>,
    pub dq: Vec<f64>,
    pub da: Vec<f64>,
    pub db: Vec<f64>,
    pub solved: Vec<bool>,
}

/// The adjoint of a batch sharing the structure `st` and its KKT pattern `pat`. One chunk
/// of consecutive items per pool thread, each on one worker (a batch of one chunk, e.g. one
/// item, runs on the calling thread and never touches a rayon pool) (one symbolic analysis per
/// worker, or none when `workspaces` holds one from an earlier call). An item that panics
/// is unsolved, with zero gradients, and its worker rebuilt.
pub fn adjoint_batch(
    st: &ConicStructure,
    pat: &KktPattern,
    backends: &BackendOptions,
    inp: &AdjointInput<'_>,
    cancel: &Cancel,
    test_panic: TestPanic,
    workspaces: &AdjointWorkspaces,
) -> Grads {
    let (n, m, bsz) = (st.n(), st.m(), inp.bsz);
    let lay = &st.layout;
    let (nnz_p, nnz_a) = (st.nnz_p(), st.nnz_a());
    let (hdl, hbl) = (lay.h_diag_len(), lay.h_blocks_len());
    let cfg = backends.feral_adjoint();
    let env = Env {
        pat,
        backends,
        cfg: &cfg,
    };
    let mut dp = vec![0.0; bsz * nnz_p];
    let mut dq = vec![0.0; bsz * n];
    let mut da = vec![0.0; bsz * nnz_a];
    let mut db = vec![0.0; bsz * m];
    let per = bsz.div_ceil(threads()).max(1);
    let item_in = |i: usize| ItemIn {
        p: inp.p.map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
        a: &inp.a[i * nnz_a..(i + 1) * nnz_a],
        h_diag: &inp.h_diag[i * hdl..(i + 1) * hdl],
        h_blocks: &inp.h_blocks[i * hbl..(i + 1) * hbl],
        x: &inp.x[i * n..(i + 1) * n],
        y: &inp.y[i * m..(i + 1) * m],
        gx: &inp.gx[i * n..(i + 1) * n],
        gy: &inp.gy[i * m..(i + 1) * m],
        gs: &inp.gs[i * m..(i + 1) * m],
        kept: inp.kept.get(i).copied().flatten().filter(|f| {
            f.built_from(
                inp.p.map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
                &inp.a[i * nnz_a..(i + 1) * nnz_a],
            )
        }),
    };
    let chunks = |v: &mut Vec<f64>, w: usize| {
        // Width-0 outputs still need one chunk per item group.
        let w = w.max(1);
        if v.is_empty() {
            v.resize(bsz * w, 0.0);
        }
        per * w
    };
    let (cp, cq, ca, cb) = (
        chunks(&mut dp, nnz_p),
        chunks(&mut dq, n),
        chunks(&mut da, nnz_a),
        chunks(&mut db, m),
    );
    let chunk = |c: usize, dp: &mut [f64], dq: &mut [f64], da: &mut [f64], db: &mut [f64]| {
        let mut w = workspaces
            .take(backends)
            .unwrap_or_else(|| Worker::new(pat));
        let first = c * per;
        let count = dq.len() / n.max(1);
        let mut flags = Vec::with_capacity(count);
        for j in 0..count {
            let i = first + j;
            if !inp.ok[i] || cancel.is_set() {
                flags.push(false);
                continue;
            }
            let (sp, sq, sa, sb) = (
                j * nnz_p.max(1)..j * nnz_p.max(1) + nnz_p,
                j * n.max(1)..j * n.max(1) + n,
                j * nnz_a.max(1)..j * nnz_a.max(1) + nnz_a,
                j * m.max(1)..j * m.max(1) + m,
            );
            let solved = catch(|| {
                test_panic.at_item(i);
                let o = ItemOut {
                    dp: &mut dp[sp.clone()],
                    dq: &mut dq[sq.clone()],
                    da: &mut da[sa.clone()],
                    db: &mut db[sb.clone()],
                };
                adjoint_item(st, &env, &mut w, &item_in(i), o)
            });
            match solved {
                Ok(done) => flags.push(done),
                Err(_) => {
                    // The panic message went to stderr (the panic hook): the item is
                    // not solved, its gradients are zeroed and the worker rebuilt.
                    w = Worker::new(pat);
                    for (v, r) in [
                        (&mut *dp, sp),
                        (&mut *dq, sq),
                        (&mut *da, sa),
                        (&mut *db, sb),
                    ] {
                        v[r].iter_mut().for_each(|g| *g = 0.0);
                    }
                    flags.push(false);
                }
            }
        }
        workspaces.put(backends.clone(), w);
        flags
    };
    let solved: Vec<bool> = if bsz == 0 {
        Vec::new()
    } else if bsz <= per {
        // One chunk: it runs here, without the pool.
        chunk(0, &mut dp, &mut dq, &mut da, &mut db)
    } else {
        dp.par_chunks_mut(cp)
            .zip(dq.par_chunks_mut(cq))
            .zip(da.par_chunks_mut(ca))
            .zip(db.par_chunks_mut(cb))
            .enumerate()
            .flat_map_iter(|(c, (((dp, dq), da), db))| chunk(c, dp, dq, da, db))
            .collect()
    };
    dp.truncate(bsz * nnz_p);
    dq.truncate(bsz * n);
    da.truncate(bsz * nnz_a);
    db.truncate(bsz * m);
    Grads {
        dp,
        dq,
        da,
        db,
        solved,
    }
}
