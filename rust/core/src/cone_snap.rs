//! The projection onto the product cone and the limit scaling `H` at a snapped pair, for the
//! native Newton steps (newton_steps.rs) and the adjoint's H from `s` (the binding's
//! `ConicProblem.adjoint(..., s=)`), every SCS cone, SCS row order.
//!
//! Each cone's `project` and `scaling` live in its file under cones/ (with the shared maths
//! in cones/centring.rs, barrier.rs and ray.rs); this module walks the product. The same
//! conventions and formulas as the Python cone classes, which are the reference
//! (pounce_kkt/cones/; pounce_kkt/active_set.py `limit_scaling`):
//! - `Pi_K(w)`: 0 on zero rows, `max(w, 0)` on nonneg rows; an SOC block `(t, v)` is `w` when
//!   `|v| <= t`, 0 when `|v| <= -t`, else `(t + |v|)/2 (1, v/|v|)`; a PSD block (svec: lower
//!   triangle, column-major, off-diagonals x sqrt 2) is `svec(Q diag(max(lam, 0)) Q')`
//!   (eigenvalues by cyclic Jacobi); an exp block `(x, y, z)` (`y e^(x/y) <= z`) has the
//!   closed forms of `exp_projection` (in K, in the polar cone, the face `x <= 0, y <= 0`)
//!   and otherwise `t g(rho)` on the boundary ray `g(r) = (r, 1, e^r)`, rho the root of
//!   Friberg's univariate equation by safeguarded Newton (`exp_ray_root`); a power block
//!   (`x^a y^(1-a) >= |z|`) its closed forms (in K, polar, `z = 0`) and otherwise `t g(u*)`
//!   on its ray `(e^((1-a)u), e^(-a u), sign z)`, u* by ray.py's grid and safeguarded Newton.
//! - `H` at a snapped pair `(s, y) = (Pi_K(w), Pi_K(w) - w)`: zero rows 0, nonneg rows
//!   [`INACTIVE_H`] where `w > 0` and 0 elsewhere; SOC and PSD blocks the Nesterov-Todd
//!   scaling of the recentred central pair (soc.py, psd.py); exp and power
//!   blocks `(mu hess f(s~))^-1` of the log barrier at `s` pushed just inside the cone
//!   (exp.py, power.py).
//!
//! The Python classes stay the implementation for CUDA tensors and the dense (Torch)
//! backward path; tests/test_native_newton.py holds the two to the same answers.
use crate::cone_layout::ConeLayout;
use crate::cones::{exp, power, psd, soc};
use crate::structure::ConicStructure;

/// H of an inactive nonneg row (w_i > 0): "infinite", exactly representable in a diagonal
/// (pounce_kkt/active_set.py `INACTIVE_H`).
pub const INACTIVE_H: f64 = 1e20;

/// H at the snapped pairs of a batch's ok items of `st` (its `cones`; `s`, `y` batch-first,
/// B = `ok.len()`; zeros for the items not ok), in the adjoint's compact layout:
/// `(h_diag, h_blocks)`.
pub fn batch_scalings(
    st: &ConicStructure,
    cones: &SnapCones,
    s: &[f64],
    y: &[f64],
    ok: &[bool],
) -> (Vec<f64>, Vec<f64>) {
    let (m, hdl, hbl) = (st.m(), st.layout.h_diag_len(), st.layout.h_blocks_len());
    let mut hd = vec![0.0; ok.len() * hdl];
    let mut hb = vec![0.0; ok.len() * hbl];
    for (i, _) in ok.iter().enumerate().filter(|(_, &o)| o) {
        cones.scaling_at_snap(
            &s[i * m..(i + 1) * m],
            &y[i * m..(i + 1) * m],
            &mut hd[i * hdl..(i + 1) * hdl],
            &mut hb[i * hbl..(i + 1) * hbl],
        );
    }
    (hd, hb)
}

/// The kind of one dense block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockKind {
    Soc,
    /// A PSD block of this order (svec rows: lower triangle, column-major, x sqrt 2).
    Psd(usize),
    Exp,
    /// A power cone with this alpha.
    Power(f64),
}

/// The cones of one structure as the snap sees them: the zero and nonneg rows, then each
/// dense block (kind, first row, rows) in SCS order.
#[derive(Debug, Clone)]
pub struct SnapCones {
    pub z: usize,
    pub n_diag: usize,
    pub blocks: Vec<(BlockKind, usize, usize)>,
}

impl SnapCones {
    pub fn new(layout: &ConeLayout) -> Self {
        let mut blocks = Vec::new();
        let (mut orders, mut alphas) = (layout.dims.s.iter(), layout.dims.p.iter());
        for r in &layout.product.ranges {
            let kind = match r.cone.key() {
                "z" | "l" => continue,
                "q" => BlockKind::Soc,
                "s" => BlockKind::Psd(*orders.next().expect("one order per PSD cone")),
                "ep" => BlockKind::Exp,
                "p" => BlockKind::Power(*alphas.next().expect("one alpha per power cone")),
                key => unreachable!("no cone {key:?} in a ProductCone"),
            };
            blocks.push((kind, r.start, r.rows));
        }
        SnapCones {
            z: layout.dims.z,
            n_diag: layout.h_diag_len(),
            blocks,
        }
    }

    /// `p = Pi_K(w)` (p and w of length m).
    pub fn project(&self, w: &[f64], p: &mut [f64]) {
        p[..self.z].iter_mut().for_each(|v| *v = 0.0);
        for (pi, &wi) in p[self.z..self.n_diag]
            .iter_mut()
            .zip(&w[self.z..self.n_diag])
        {
            // NaN stays NaN (a trial point with one is then rejected).
            *pi = if wi > 0.0 || wi.is_nan() { wi } else { 0.0 };
        }
        for &(kind, start, d) in &self.blocks {
            let (wb, pb) = (&w[start..start + d], &mut p[start..start + d]);
            match kind {
                BlockKind::Soc => soc::project(wb, pb),
                BlockKind::Psd(k) => psd::project(wb, k, pb),
                BlockKind::Exp => exp::project(wb, pb),
                BlockKind::Power(a) => power::project(wb, a, pb),
            }
        }
    }

    /// The snapped pair of `w`: `(Pi_K(w), Pi_K(w) - w)`.
    pub fn snap(&self, w: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut p = vec![0.0; w.len()];
        self.project(w, &mut p);
        let d = p.iter().zip(w).map(|(p, w)| p - w).collect();
        (p, d)
    }

    /// `H` at the snapped pair of (s, y): [`Self::limit_scaling`] at [`Self::snap`] of
    /// `w = s - y` (pounce_kkt/active_set.py `limit_scaling`).
    pub fn scaling_at_snap(&self, s: &[f64], y: &[f64], h_diag: &mut [f64], h_blocks: &mut [f64]) {
        let w: Vec<f64> = s.iter().zip(y).map(|(s, y)| s - y).collect();
        let (p, d) = self.snap(&w);
        self.limit_scaling(&p, &d, h_diag, h_blocks);
    }

    /// `H` at the snapped pair (s, y): `h_diag` (n_diag) and `h_blocks` (each block dense
    /// row-major, in order), the adjoint's compact layout.
    pub fn limit_scaling(&self, s: &[f64], y: &[f64], h_diag: &mut [f64], h_blocks: &mut [f64]) {
        h_diag[..self.z].iter_mut().for_each(|v| *v = 0.0);
        for i in self.z..self.n_diag {
            h_diag[i] = if s[i] - y[i] > 0.0 { INACTIVE_H } else { 0.0 };
        }
        let mut off = 0;
        for &(kind, start, d) in &self.blocks {
            let (sb, yb) = (&s[start..start + d], &y[start..start + d]);
            let hb = &mut h_blocks[off..off + d * d];
            match kind {
                BlockKind::Soc => soc::scaling(sb, yb, hb),
                BlockKind::Psd(k) => psd::scaling(sb, yb, k, hb),
                BlockKind::Exp => exp::scaling(sb, yb, hb),
                BlockKind::Power(a) => power::scaling(sb, yb, a, hb),
            }
            off += d * d;
        }
    }
}
