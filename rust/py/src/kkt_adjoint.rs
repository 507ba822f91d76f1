//! Batched sparse KKT adjoints: the backward of `conic_solve_batch`.
use crate::cone_layout::{psd_rows, ConeDims};
use crate::interrupt::{self, Cancel};
use crate::options::{feral_config_adjoint, kkt_backend};
use crate::panic_guard::{catch, guard, TestPanic};
use crate::pool::threads;
use crate::structure::{batch_size, p_values_unchecked, ConicStructure};
use crate::validate::{checked_mul, expect_shape, f64_array_unchecked, value_error, Array, Shared};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1};
use pounce_feral::FeralConfig;
use pounce_linsol::Factorization;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use rayon::prelude::*;

/// pounce-linsol's index type (`pounce_common::types::Index`).
type Index = i32;

/// Static regularisation of the factored K (relative to the data scale): `+delta` on the
/// x block, `-delta` on the y block keeps K quasi-definite whatever P and H are. Iterative
/// refinement against the unregularised K removes its effect.
const REG_REL: f64 = 1e-10;
const REFINE_STEPS: usize = 10;
const REFINE_TOL: f64 = 1e-14;

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
struct KktPattern {
    dim: usize,
    irn: Vec<Index>,
    jcn: Vec<Index>,
    src: Vec<KSrc>,
    /// COO positions of the diagonal, for the regularisation (`dim` entries).
    diag_pos: Vec<usize>,
}

impl KktPattern {
    fn new(st: &ConicStructure) -> Self {
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
        KktPattern {
            dim,
            irn,
            jcn,
            src,
            diag_pos,
        }
    }

    /// Unregularised values of K for one item.
    fn values(&self, p_low: &[f64], a: &[f64], h_diag: &[f64], h_blocks: &[f64], out: &mut [f64]) {
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

    /// `out = K v` for the symmetric K stored as its lower triangle.
    fn matvec(&self, vals: &[f64], v: &[f64], out: &mut [f64]) {
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
/// (numeric only, the symbolic analysis kept) for every later one.
struct Worker<'a> {
    pat: &'a KktPattern,
    cfg: &'a FeralConfig,
    fact: Option<Factorization>,
    vals: Vec<f64>,
    vals_reg: Vec<f64>,
    sol: Vec<f64>,
    res: Vec<f64>,
    corr: Vec<f64>,
}

impl<'a> Worker<'a> {
    fn new(pat: &'a KktPattern, cfg: &'a FeralConfig) -> Self {
        let nnz = pat.src.len();
        Worker {
            pat,
            cfg,
            fact: None,
            vals: vec![0.0; nnz],
            vals_reg: vec![0.0; nnz],
            sol: vec![0.0; pat.dim],
            res: vec![0.0; pat.dim],
            corr: vec![0.0; pat.dim],
        }
    }

    fn factor(&mut self, delta: f64, n: usize) -> bool {
        self.vals_reg.copy_from_slice(&self.vals);
        for (i, &p) in self.pat.diag_pos.iter().enumerate() {
            self.vals_reg[p] += if i < n { delta } else { -delta };
        }
        if let Some(f) = self.fact.as_mut() {
            if f.refactor(&self.vals_reg).is_ok() {
                return true;
            }
            self.fact = None;
        }
        let backend = kkt_backend(self.pat.dim, self.pat.irn.len(), self.cfg, false);
        match Factorization::new(
            self.pat.dim as Index,
            self.pat.irn.clone(),
            self.pat.jcn.clone(),
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

    /// Solve `K sol = rhs` with the regularised factor plus iterative refinement against
    /// the unregularised K. Returns false if the factor could not be used.
    fn solve(&mut self, rhs: &[f64]) -> bool {
        let Some(f) = self.fact.as_mut() else {
            return false;
        };
        self.sol.copy_from_slice(rhs);
        if f.solve_one(&mut self.sol).is_err() {
            return false;
        }
        let rhs_norm = rhs
            .iter()
            .fold(0.0_f64, |a, v| a.max(v.abs()))
            .max(f64::MIN_POSITIVE);
        let mut last = f64::INFINITY;
        for _ in 0..REFINE_STEPS {
            self.pat.matvec(&self.vals, &self.sol, &mut self.res);
            let mut rn = 0.0_f64;
            for (r, &b) in self.res.iter_mut().zip(rhs) {
                *r = b - *r;
                rn = rn.max(r.abs());
            }
            if rn <= REFINE_TOL * rhs_norm || rn >= 0.5 * last {
                break;
            }
            last = rn;
            self.corr.copy_from_slice(&self.res);
            if f.solve_one(&mut self.corr).is_err() {
                return false;
            }
            for (s, c) in self.sol.iter_mut().zip(&self.corr) {
                *s += c;
            }
        }
        self.sol.iter().all(|v| v.is_finite())
    }
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
}

/// Per-item outputs (written in place, already zeroed).
struct ItemOut<'a> {
    dp: &'a mut [f64],
    dq: &'a mut [f64],
    da: &'a mut [f64],
    db: &'a mut [f64],
}

fn adjoint_item(st: &ConicStructure, w: &mut Worker<'_>, d: &ItemIn<'_>, o: ItemOut<'_>) -> bool {
    let (n, m) = (st.n(), st.m());
    let p_low = st.map.p_lower_values(d.p);
    w.pat.values(&p_low, d.a, d.h_diag, d.h_blocks, &mut w.vals);
    // K [u; v] = [gx; gy - H gs] is solved as K [u; w] = [gx - A' gs; gy] with v = w + gs
    // (exact algebra): the right-hand side then never holds H gs, whose magnitude on rows
    // with a huge H (inactive constraints, H = s/y ~ 1/mu) would swamp the refinement test.
    let mut rhs = Vec::with_capacity(n + m);
    rhs.extend_from_slice(d.gx);
    rhs.extend_from_slice(d.gy);
    for (k, r, c) in st.a.entries() {
        rhs[c] -= d.a[k] * d.gs[r];
    }
    // Regularisation relative to the data (P and A), not to H, whose entries span ~1/mu..mu.
    let scale = p_low.iter().chain(d.a).fold(1.0_f64, |a, v| a.max(v.abs()));
    let mut delta = REG_REL * scale;
    let mut solved = false;
    for _ in 0..4 {
        if w.factor(delta, n) && w.solve(&rhs) {
            solved = true;
            break;
        }
        delta *= 1e3;
    }
    if !solved {
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

fn check_finite_rows(arr: &Array<'_, f64>, name: &str, ok: &[bool]) -> PyResult<()> {
    let w = arr.shape[1];
    for (i, row) in arr.slice().chunks(w.max(1)).enumerate() {
        if ok[i] {
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(value_error(format!(
                    "`{name}` contains a non-finite value (NaN or Inf) at [{i}, {j}]"
                )));
            }
        }
    }
    Ok(())
}

fn parse_statuses_ok(obj: &Bound<'_, PyAny>, batch: usize) -> PyResult<Vec<bool>> {
    let v: Vec<bool> = if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, bool>>() {
        a.as_array().to_vec()
    } else {
        obj.extract().map_err(|_| {
            value_error("`statuses_ok` must be a 1-D bool numpy array or a list of bools")
        })?
    };
    if v.len() != batch {
        return Err(value_error(format!(
            "`statuses_ok` has length {}, expected B = {batch}",
            v.len()
        )));
    }
    Ok(v)
}

/// Gradients of a loss through `conic_solve_batch`, by implicit differentiation of the KKT
/// conditions, for a batch sharing one structure.
///
/// Method. We differentiate the optimality conditions in KKT form: stationarity
/// `P_eff x + q + A'y = 0`, primal feasibility `A x + s = b`, and the complementarity of
/// each cone linearised at the solution as `ds = -H dy` (`H` symmetric PSD, per cone: 0 for
/// zero rows, `s/y` for nonneg rows, the Nesterov-Todd `W^2` for SOC and PSD, the inverse
/// barrier Hessian scaled by mu for exp/power; computed in Torch by
/// `pounce_kkt/cone_scaling.py` and passed as `h_diag`, `h_blocks`). This is the interior
/// point method's own Newton system at centring 0, `K = [[P_eff, A'], [A, -H]]`: symmetric
/// quasi-definite, so it factors with a sparse LDL' (feral through pounce-linsol), whose
/// symbolic analysis is shared across the batch, or, when K is small and mostly filled, with
/// the dense Bunch-Kaufman backend (options.rs `kkt_backend`). diffcp's residual map is exact at the limit
/// too, but it is nonsymmetric and needs LSQR or an LU; under strict complementarity the two
/// agree as mu -> 0.
///
/// Backward: for upstream `(gx, gy, gs)` solve `K [u; v] = [gx; gy - H gs]`, then
/// `dq = -u`, `db = v`, `dA[i, j] = -(y_i u_j + v_i x_j)` on A's pattern and
/// `dP[i, j] = -(u_i x_j + u_j x_i)/2` on P's full pattern (P_eff = (P + P')/2).
///
/// K's lower triangle is assembled once per call (pattern) and per item (values), never as
/// a dense matrix. It is factored with a small static regularisation (`+delta` on the x
/// block, `-delta` on the y block) and the solve is iteratively refined against the
/// unregularised K. Each rayon worker owns one `Factorization` and `refactor`s it for its
/// next item, reusing the symbolic analysis. The batch runs on the module's fork-safe pool
/// (pool.rs) with the GIL released; every factorization runs serial. Ctrl-C raises
/// `KeyboardInterrupt` within about 0.2 s (interrupt.rs); a Rust panic in an item leaves that
/// item unsolved, anywhere else it raises `RuntimeError`.
///
/// Arrays (float64, C-contiguous, batch-first): `h_diag (B, z + l)`, `h_blocks (B, sum d_k^2)`
/// with each SOC, PSD, exp and power block dense row-major in cone order, `x (B, n)`,
/// `y (B, m)`, `gx (B, n)`, `gy (B, m)`, `gs (B, m)`; `statuses_ok (B,)` bool. Items whose
/// `statuses_ok` is False get zero gradients, and only ok rows must be finite.
///
/// Returns `{"dP" (B, nnzP) or None, "dq" (B, n), "dA" (B, nnzA), "db" (B, m)}`.
#[pyfunction]
#[pyo3(signature = (n, m, p_indptr, p_indices, p_values, a_indptr, a_indices, a_values, cones,
                    h_diag, h_blocks, x, y, gx, gy, gs, statuses_ok))]
#[allow(clippy::too_many_arguments)]
pub fn kkt_adjoint_batch<'py>(
    py: Python<'py>,
    n: usize,
    m: usize,
    p_indptr: Option<Bound<'py, PyAny>>,
    p_indices: Option<Bound<'py, PyAny>>,
    p_values: Option<Bound<'py, PyAny>>,
    a_indptr: Bound<'py, PyAny>,
    a_indices: Bound<'py, PyAny>,
    a_values: Bound<'py, PyAny>,
    cones: Bound<'py, PyAny>,
    h_diag: Bound<'py, PyAny>,
    h_blocks: Bound<'py, PyAny>,
    x: Bound<'py, PyAny>,
    y: Bound<'py, PyAny>,
    gx: Bound<'py, PyAny>,
    gy: Bound<'py, PyAny>,
    gs: Bound<'py, PyAny>,
    statuses_ok: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    guard("kkt_adjoint_batch", || {
        let test_panic = TestPanic::from_env();
        test_panic.at_call("kkt_adjoint_batch");
        let parsed = ConicStructure::parse(
            n,
            m,
            p_indptr.as_ref(),
            p_indices.as_ref(),
            &a_indptr,
            &a_indices,
            &cones,
        )?;
        let gx_a = f64_array_unchecked(&gx, "gx", 2)?;
        let bsz = batch_size(&gx_a, "gx", n)?;
        let ok = parse_statuses_ok(&statuses_ok, bsz)?;
        let (hdl, hbl) = h_lens(parsed.dims())?;
        let named = [
            (&h_diag, "h_diag", hdl),
            (&h_blocks, "h_blocks", hbl),
            (&x, "x", n),
            (&y, "y", m),
            (&gy, "gy", m),
            (&gs, "gs", m),
            (&a_values, "a_values", parsed.a().nnz()),
        ];
        let mut arrs = Vec::new();
        for (obj, name, w) in named {
            let a = f64_array_unchecked(obj, name, 2)?;
            expect_shape(name, &a.shape, &[bsz, w])?;
            check_finite_rows(&a, name, &ok)?;
            arrs.push(a.share());
        }
        check_finite_rows(&gx_a, "gx", &ok)?;
        let p_arr = p_values_unchecked(parsed.p(), p_values.as_ref(), bsz)?;
        if let Some(a) = &p_arr {
            check_finite_rows(a, "p_values", &ok)?;
        }
        let nnz_p = parsed.p().map_or(0, |p| p.nnz());
        let nnz_a = parsed.a().nnz();
        if bsz == 0 {
            return result(
                py,
                parsed.p().is_some(),
                bsz,
                (nnz_p, n, nnz_a, m),
                Grads::default(),
            );
        }
        let [hd, hb, xs, ys, gys, gss, avs] =
            <[Shared<f64>; 7]>::try_from(arrs).unwrap_or_else(|_| unreachable!("seven arrays"));
        let job = AdjointJob {
            st: parsed.build()?,
            bsz,
            ok,
            test_panic,
            inputs: AdjointInputs {
                p: p_arr.as_ref().map(|a| a.share()),
                a: avs,
                h_diag: hd,
                h_blocks: hb,
                x: xs,
                y: ys,
                gx: gx_a.share(),
                gy: gys,
                gs: gss,
            },
        };
        let has_p = job.st.p.is_some();
        let out = interrupt::run(py, "kkt_adjoint_batch", move |cancel| job.run(cancel))?;
        result(py, has_p, bsz, (nnz_p, n, nnz_a, m), out)
    })
}

/// Lengths of `h_diag` and `h_blocks` for these cones, checked for overflow.
fn h_lens(dims: &ConeDims) -> PyResult<(usize, usize)> {
    let hdl = dims.z + dims.l;
    let mut hbl: usize = 0;
    let psd = dims.s.iter().map(|&k| psd_rows(k).unwrap_or(usize::MAX));
    let blocks = dims
        .q
        .iter()
        .copied()
        .chain(psd)
        .chain(std::iter::repeat_n(3, dims.ep + dims.p.len()));
    for d in blocks {
        hbl = hbl
            .checked_add(checked_mul(d, d, "the length of `h_blocks`")?)
            .ok_or_else(|| value_error("the length of `h_blocks` overflows"))?;
    }
    Ok((hdl, hbl))
}

/// The arrays of an adjoint batch, held by its job (validate.rs `Shared`).
struct AdjointInputs {
    p: Option<Shared<f64>>,
    a: Shared<f64>,
    h_diag: Shared<f64>,
    h_blocks: Shared<f64>,
    x: Shared<f64>,
    y: Shared<f64>,
    gx: Shared<f64>,
    gy: Shared<f64>,
    gs: Shared<f64>,
}

struct AdjointJob {
    st: ConicStructure,
    bsz: usize,
    ok: Vec<bool>,
    test_panic: TestPanic,
    inputs: AdjointInputs,
}

#[derive(Default)]
struct Grads {
    dp: Vec<f64>,
    dq: Vec<f64>,
    da: Vec<f64>,
    db: Vec<f64>,
    solved: Vec<bool>,
    /// Handed back so that the array references are released with the GIL held.
    _inputs: Option<AdjointInputs>,
}

impl AdjointJob {
    fn run(self, cancel: &Cancel) -> Grads {
        let AdjointJob {
            st,
            bsz,
            ok,
            test_panic,
            inputs,
        } = self;
        let (n, m) = (st.n(), st.m());
        let lay = &st.layout;
        let inp = &inputs;
        let (nnz_p, nnz_a) = (st.p.as_ref().map_or(0, |p| p.nnz()), st.a.nnz());
        let (hdl, hbl) = (lay.h_diag_len(), lay.h_blocks_len());

        let pat = KktPattern::new(&st);
        let cfg = feral_config_adjoint();
        let mut dp = vec![0.0; bsz * nnz_p];
        let mut dq = vec![0.0; bsz * n];
        let mut da = vec![0.0; bsz * nnz_a];
        let mut db = vec![0.0; bsz * m];
        // One chunk of consecutive items per worker: one symbolic analysis per worker.
        let per = bsz.div_ceil(threads()).max(1);
        let item_in = |i: usize| ItemIn {
            p: inp.p.as_deref().map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
            a: &inp.a[i * nnz_a..(i + 1) * nnz_a],
            h_diag: &inp.h_diag[i * hdl..(i + 1) * hdl],
            h_blocks: &inp.h_blocks[i * hbl..(i + 1) * hbl],
            x: &inp.x[i * n..(i + 1) * n],
            y: &inp.y[i * m..(i + 1) * m],
            gx: &inp.gx[i * n..(i + 1) * n],
            gy: &inp.gy[i * m..(i + 1) * m],
            gs: &inp.gs[i * m..(i + 1) * m],
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
        let solved: Vec<bool> = dp
            .par_chunks_mut(cp)
            .zip(dq.par_chunks_mut(cq))
            .zip(da.par_chunks_mut(ca))
            .zip(db.par_chunks_mut(cb))
            .enumerate()
            .flat_map_iter(|(c, (((dp, dq), da), db))| {
                let mut w = Worker::new(&pat, &cfg);
                let first = c * per;
                let count = dq.len() / n.max(1);
                let mut flags = Vec::with_capacity(count);
                for j in 0..count {
                    let i = first + j;
                    if !ok[i] || cancel.is_set() {
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
                        adjoint_item(&st, &mut w, &item_in(i), o)
                    });
                    match solved {
                        Ok(done) => flags.push(done),
                        Err(_) => {
                            // The panic message went to stderr (the panic hook): the item is
                            // not solved (the core raises for it), its gradients are zeroed
                            // and the worker's factorization rebuilt.
                            w = Worker::new(&pat, &cfg);
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
                flags
            })
            .collect();
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
            _inputs: Some(inputs),
        }
    }
}

fn result<'py>(
    py: Python<'py>,
    has_p: bool,
    bsz: usize,
    (nnz_p, n, nnz_a, m): (usize, usize, usize, usize),
    g: Grads,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    if has_p {
        out.set_item("dP", PyArray1::from_vec(py, g.dp).reshape([bsz, nnz_p])?)?;
    } else {
        out.set_item("dP", py.None())?;
    }
    out.set_item("dq", PyArray1::from_vec(py, g.dq).reshape([bsz, n])?)?;
    out.set_item("dA", PyArray1::from_vec(py, g.da).reshape([bsz, nnz_a])?)?;
    out.set_item("db", PyArray1::from_vec(py, g.db).reshape([bsz, m])?)?;
    // Which items got a gradient (False: not ok, or K could not be factored).
    out.set_item("solved", g.solved)?;
    Ok(out)
}

/// Registers `kkt_adjoint_batch` and the solve's constants, so the dense Torch path
/// (pounce_kkt/dense_kkt.py) regularises and refines with the very same numbers:
/// `KKT_REG_REL`, `KKT_REFINE_STEPS`, `KKT_REFINE_TOL`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kkt_adjoint_batch, m)?)?;
    m.add("KKT_REG_REL", REG_REL)?;
    m.add("KKT_REFINE_STEPS", REFINE_STEPS)?;
    m.add("KKT_REFINE_TOL", REFINE_TOL)?;
    Ok(())
}
