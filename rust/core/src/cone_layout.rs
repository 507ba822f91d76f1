//! The one mapping between the SCS/cvxpy conic layout and POUNCE's.
//!
//! SCS form (the core's convention, see docs/design.md):
//!
//! ```text
//!   minimize 1/2 x'Px + q'x   s.t.  A x + s = b,  s in K,   dual y in K*,
//!   rows of K in order: zero (z), nonneg (l), SOC (q), PSD (s), exp (ep), power (p).
//! ```
//!
//! POUNCE form (pounce-convex `QpProblem` + `ConeSpec` list):
//!
//! ```text
//!   minimize 1/2 x'P_low x + c'x  s.t.  A_eq x = b_eq,  G x + s = h,  s in K_pounce,
//!   stationarity  P x + c + A_eq' y + G' z = 0.
//! ```
//!
//! Each cone's own conversion (its POUNCE cone, the order of its rows, its dual) lives in
//! its file under cones/ ([`crate::cones`]); this module lays the product cone out once
//! ([`ConeLayout`]) and maps the data: zero rows become the equality block `(A_eq, b_eq)`
//! (dual: POUNCE's `y`; slack 0), every other row goes to `G x + s = h` with `G = A`,
//! `h = b`, in POUNCE's row order.
//!
//! `P_eff = (P + P')/2` is what is solved; POUNCE takes its lower triangle. The SCS dual is
//! `y = (y_eq, z)` un-permuted and the SCS slack `s = b - A x` on the cone rows, 0 on zero
//! rows.
use crate::cone_dims::ConeDims;
use crate::cones::ProductCone;
use crate::error::{value_error, Result};
use crate::pattern::CscPattern;
use pounce_convex::{ConeSpec, QpProblem, QpWarmStart, Triplet};

/// Problem class, which decides the POUNCE engine and its options (see `options.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemClass {
    /// zero + nonneg rows only.
    Qp,
    /// Any SOC / PSD / exp / power row.
    Conic,
}

/// A dense symmetric block of the adjoint's `H` (one per SOC, PSD, exp and power cone),
/// located by its first SCS row and its dimension.
#[derive(Debug, Clone, Copy)]
pub struct DenseBlock {
    pub start: usize,
    pub dim: usize,
}

/// The mapping of one problem structure (shapes, patterns, cones) to POUNCE.
#[derive(Debug)]
pub struct ConeLayout {
    pub n: usize,
    pub m: usize,
    pub dims: ConeDims,
    pub class: ProblemClass,
    /// POUNCE cone list over the inequality rows (empty cones dropped).
    pub specs: Vec<ConeSpec>,
    /// SCS row of each POUNCE inequality row.
    pub scs_row_of_ineq: Vec<usize>,
    /// POUNCE inequality row of each SCS row `>= z` (index `r - z`).
    pub ineq_of_scs_row: Vec<usize>,
    /// Non-diagonal `H` blocks (SOC, PSD, exp, power) in SCS order.
    pub dense_blocks: Vec<DenseBlock>,
    /// The cones in SCS row order.
    pub product: ProductCone,
}

impl ConeLayout {
    pub fn new(n: usize, m: usize, dims: ConeDims) -> Result<Self> {
        let product = ProductCone::new(&dims)?;
        if product.rows != m {
            return Err(value_error(format!(
                "cone dimensions cover {} rows but A has m = {m} rows",
                product.rows
            )));
        }
        dims.check()?;
        let z = dims.z;
        let mut specs = Vec::new();
        let mut scs_row_of_ineq = Vec::with_capacity(m - z);
        let mut dense_blocks = Vec::new();
        for r in &product.ranges {
            let Some(spec) = r.cone.pounce() else {
                continue; // the zero cone: equality rows
            };
            specs.push(spec);
            scs_row_of_ineq.extend(r.cone.pounce_order().into_iter().map(|o| r.start + o));
            if r.cone.dense_h() {
                dense_blocks.push(DenseBlock {
                    start: r.start,
                    dim: r.rows,
                });
            }
        }
        debug_assert_eq!(scs_row_of_ineq.len(), m - z);
        let mut ineq_of_scs_row = vec![0; m - z];
        for (r, &scs) in scs_row_of_ineq.iter().enumerate() {
            ineq_of_scs_row[scs - z] = r;
        }
        let class = if product.is_qp() {
            ProblemClass::Qp
        } else {
            ProblemClass::Conic
        };
        Ok(ConeLayout {
            n,
            m,
            dims,
            class,
            specs,
            scs_row_of_ineq,
            ineq_of_scs_row,
            dense_blocks,
            product,
        })
    }

    pub fn m_eq(&self) -> usize {
        self.dims.z
    }

    pub fn m_ineq(&self) -> usize {
        self.m - self.dims.z
    }

    /// Total length of the row-major dense `H` blocks, `sum d_k^2`.
    pub fn h_blocks_len(&self) -> usize {
        self.product.h_blocks_len
    }

    /// Rows carried by the diagonal part of `H` (zero + nonneg).
    pub fn h_diag_len(&self) -> usize {
        self.product.h_diag_len
    }
}

/// Where each stored entry of P and A goes in the POUNCE problem. Built once per structure;
/// per item only the values are gathered.
#[derive(Debug, Clone)]
pub struct DataMap {
    /// Lower-triangle `(row, col)` of `P_eff`, one per output slot.
    p_slots: Vec<(usize, usize)>,
    /// `(slot, weight)` per stored entry of the full P pattern.
    p_src: Vec<(usize, f64)>,
    /// Per stored entry of A: `(is_eq, pounce_row, col)`.
    a_dst: Vec<(bool, usize, usize)>,
    /// The stored entries of A in the order their triplets are emitted: equality rows
    /// first, each part ascending in `(row, col)`.
    a_order: Vec<usize>,
}

impl DataMap {
    pub fn new(layout: &ConeLayout, p: Option<&CscPattern>, a: &CscPattern) -> Self {
        let mut p_slots = Vec::new();
        let mut p_src = Vec::new();
        if let Some(p) = p {
            let mut slot_of = std::collections::HashMap::new();
            for (_, r, c) in p.entries() {
                let key = if r >= c { (r, c) } else { (c, r) };
                let next = p_slots.len();
                let slot = *slot_of.entry(key).or_insert_with(|| {
                    p_slots.push(key);
                    next
                });
                // P_eff = (P + P')/2: an off-diagonal stored entry contributes half to its
                // lower-triangle slot, a diagonal one all of itself.
                p_src.push((slot, if r == c { 1.0 } else { 0.5 }));
            }
        }
        let z = layout.m_eq();
        let a_dst = a
            .entries()
            .map(|(_, r, c)| {
                if r < z {
                    (true, r, c)
                } else {
                    (false, layout.ineq_of_scs_row[r - z], c)
                }
            })
            .collect::<Vec<_>>();
        // Emit every triplet list ascending in (row, col): pounce-convex rebuilds its KKT
        // pattern per solve in a B-tree keyed that way (`KktStructure::build`, ~1/3 of a
        // small QP solve), and in-order keys are its cheapest inserts.
        let mut order: Vec<usize> = (0..p_slots.len()).collect();
        order.sort_unstable_by_key(|&k| p_slots[k]);
        let mut new_slot = vec![0; p_slots.len()];
        for (new, &old) in order.iter().enumerate() {
            new_slot[old] = new;
        }
        let p_slots = order.iter().map(|&k| p_slots[k]).collect();
        let p_src = p_src.iter().map(|&(k, w)| (new_slot[k], w)).collect();
        let mut a_order: Vec<usize> = (0..a_dst.len()).collect();
        a_order.sort_unstable_by_key(|&k| {
            let (is_eq, r, c) = a_dst[k];
            (!is_eq, r, c)
        });
        DataMap {
            p_slots,
            p_src,
            a_dst,
            a_order,
        }
    }

    /// Lower-triangle `(row, col)` of each `P_eff` slot.
    pub fn p_slots(&self) -> &[(usize, usize)] {
        &self.p_slots
    }

    /// Values of `P_eff`'s lower triangle, one per slot, from the full-pattern values.
    pub fn p_lower_values(&self, p_values: Option<&[f64]>) -> Vec<f64> {
        let mut p_low = vec![0.0; self.p_slots.len()];
        if let Some(pv) = p_values {
            for (&(slot, w), &v) in self.p_src.iter().zip(pv) {
                p_low[slot] += w * v;
            }
        }
        p_low
    }

    /// Assemble the POUNCE problem of one item; `p_low` from [`Self::p_lower_values`].
    pub fn problem(
        &self,
        layout: &ConeLayout,
        p_low: &[f64],
        a_values: &[f64],
        q: &[f64],
        b: &[f64],
    ) -> QpProblem {
        let mut prob = empty_problem(layout.n);
        self.problem_into(&mut prob, layout, p_low, a_values, q, b);
        prob
    }

    /// [`Self::problem`] written into `prob`, reusing its vectors' storage (a worker
    /// assembles one item after another into the same problem).
    pub fn problem_into(
        &self,
        prob: &mut QpProblem,
        layout: &ConeLayout,
        p_low: &[f64],
        a_values: &[f64],
        q: &[f64],
        b: &[f64],
    ) {
        prob.n = layout.n;
        prob.p_lower.clear();
        prob.p_lower.extend(
            self.p_slots
                .iter()
                .zip(p_low)
                .map(|(&(r, c), &v)| Triplet::new(r, c, v)),
        );
        prob.a.clear();
        prob.g.clear();
        for &k in &self.a_order {
            let ((is_eq, r, c), v) = (self.a_dst[k], a_values[k]);
            if is_eq {
                prob.a.push(Triplet::new(r, c, v));
            } else {
                prob.g.push(Triplet::new(r, c, v));
            }
        }
        let z = layout.m_eq();
        prob.h.clear();
        prob.h.extend(layout.scs_row_of_ineq.iter().map(|&r| b[r]));
        prob.c.clear();
        prob.c.extend_from_slice(q);
        prob.b.clear();
        prob.b.extend_from_slice(&b[..z]);
        prob.lb.clear();
        prob.ub.clear();
    }
}

/// A problem of `n` variables with no entries (to be filled by [`DataMap::problem_into`]).
pub fn empty_problem(n: usize) -> QpProblem {
    QpProblem {
        n,
        p_lower: Vec::new(),
        c: Vec::new(),
        a: Vec::new(),
        b: Vec::new(),
        g: Vec::new(),
        h: Vec::new(),
        lb: Vec::new(),
        ub: Vec::new(),
    }
}

/// A linear conic program given directly as SCS-form triplets `(row, col, value)` of `A`
/// (no P): the POUNCE problem, with the same row mapping as [`DataMap::problem`]. Used for
/// the auxiliary certificate problems (certificates.rs).
pub fn linear_problem_from_triplets(
    layout: &ConeLayout,
    a_scs: &[(usize, usize, f64)],
    c: Vec<f64>,
    b: &[f64],
) -> QpProblem {
    let z = layout.m_eq();
    let (mut a_eq, mut g) = (Vec::new(), Vec::new());
    for &(r, col, v) in a_scs {
        if r < z {
            a_eq.push(Triplet::new(r, col, v));
        } else {
            g.push(Triplet::new(layout.ineq_of_scs_row[r - z], col, v));
        }
    }
    QpProblem {
        n: layout.n,
        p_lower: Vec::new(),
        c,
        a: a_eq,
        b: b[..z].to_vec(),
        g,
        h: layout.scs_row_of_ineq.iter().map(|&r| b[r]).collect(),
        lb: Vec::new(),
        ub: Vec::new(),
    }
}

/// SCS `(x, y)` warm start -> POUNCE. The SCS slack is implied by `x` (POUNCE re-derives
/// `h - G x` and recentres it), so it does not enter.
pub fn warm_to_pounce(layout: &ConeLayout, x: &[f64], y: &[f64]) -> QpWarmStart {
    let z = layout.m_eq();
    QpWarmStart {
        x: x.to_vec(),
        y: y[..z].to_vec(),
        z: layout.scs_row_of_ineq.iter().map(|&r| y[r]).collect(),
        z_lb: Vec::new(),
        z_ub: Vec::new(),
    }
}

/// POUNCE `(y_eq, z)` -> SCS `y`, written into `y_out` (length m).
pub fn dual_to_scs(layout: &ConeLayout, y_eq: &[f64], z_ineq: &[f64], y_out: &mut [f64]) {
    let z = layout.m_eq();
    y_out[..z].copy_from_slice(&y_eq[..z]);
    for (r, &scs) in layout.scs_row_of_ineq.iter().enumerate() {
        y_out[scs] = z_ineq[r];
    }
}

/// SCS slack: `s = b - A x` on cone rows, exactly 0 on zero rows.
pub fn slack_scs(
    layout: &ConeLayout,
    a: &CscPattern,
    a_values: &[f64],
    b: &[f64],
    x: &[f64],
    s_out: &mut [f64],
) {
    s_out.copy_from_slice(b);
    for (k, r, c) in a.entries() {
        s_out[r] -= a_values[k] * x[c];
    }
    for v in &mut s_out[..layout.m_eq()] {
        *v = 0.0;
    }
}
