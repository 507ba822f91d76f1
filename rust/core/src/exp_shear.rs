//! The exp-cone shear: an equivalent form of a problem with exponential cones in which
//! pounce-convex's non-symmetric driver runs faster (docs/exp-socp-profile.md, "cone
//! automorphism").
//!
//! The exponential cone (y exp(x / y) <= z, rows in POUNCE's order x, y, z) is mapped onto
//! itself by T_c (x, y, z) = (x + ln(c) y, y, c z) for every c > 0, and its barrier only
//! shifts by a constant. Replacing an exp block's rows of `h - G v` by T_c of them
//! (`h' = T h`, `G' = T G`) therefore leaves the feasible set, the optimum and the
//! central path unchanged; the dual maps back as `z = T' z'` (T' K* = K* since T K = K).
//! What changes is the floating-point conditioning of the driver's per-cone
//! conjugate-point Newton solve, whose cost dominates exp-cone solves: with c = y / z of
//! the block's slack at (or near) the solution, the y and z entries are balanced and the
//! staged solve of the benchmark families ran 1.1-3.7x faster at the same x. The slack needs
//! a primal point near the solution, so the engine (batch.rs `solve_conic`) shears only
//! items with a warm start, with c from the warm x.
use pounce_convex::{ConeSpec, QpProblem, QpSolution, QpWarmStart, Triplet};

/// Bounds on c (a block whose slack gives c outside them is sheared by the bound).
pub const SHEAR_C_MIN: f64 = 1e-8;
pub const SHEAR_C_MAX: f64 = 1e8;

/// The shear of every exp block of a problem: `(first POUNCE inequality row, c)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpShear {
    pub blocks: Vec<(usize, f64)>,
}

impl ExpShear {
    /// The shear with c = s_y / s_z per exp block, from the slack `s = h - G x` of the
    /// primal point `x`; c = 1 for a block whose s_y or s_z is not positive and finite.
    /// `None` when the problem has no exp block or every c is 1.
    pub fn from_primal(prob: &QpProblem, specs: &[ConeSpec], x: &[f64]) -> Option<Self> {
        let mut s = prob.h.clone();
        for t in &prob.g {
            s[t.row] -= t.val * x[t.col];
        }
        let mut blocks = Vec::new();
        let mut off = 0;
        for c in specs {
            if matches!(c, ConeSpec::Exponential) {
                let (sy, sz) = (s[off + 1], s[off + 2]);
                let c = if sy > 0.0 && sz > 0.0 && (sy / sz).is_finite() {
                    (sy / sz).clamp(SHEAR_C_MIN, SHEAR_C_MAX)
                } else {
                    1.0
                };
                blocks.push((off, c));
            }
            off += c.dim();
        }
        blocks
            .iter()
            .any(|&(_, c)| c != 1.0)
            .then_some(ExpShear { blocks })
    }

    /// The sheared problem: `h' = T h`, `G' = T G` on every exp block.
    pub fn problem(&self, prob: &QpProblem) -> QpProblem {
        let mut out = prob.clone();
        let mut c_of_row = vec![None; prob.h.len()];
        for &(off, c) in &self.blocks {
            for k in 0..3 {
                c_of_row[off + k] = Some((off, c));
            }
            out.h[off] += c.ln() * prob.h[off + 1];
            out.h[off + 2] *= c;
        }
        for t in out.g.iter_mut() {
            if let Some((off, c)) = c_of_row[t.row] {
                if t.row == off + 2 {
                    t.val *= c;
                }
            }
        }
        for t in &prob.g {
            if let Some((off, c)) = c_of_row[t.row] {
                if t.row == off + 1 {
                    out.g.push(Triplet::new(off, t.col, c.ln() * t.val));
                }
            }
        }
        out
    }

    /// A warm start of the original problem as one of the sheared problem
    /// (`z' = T'^{-1} z`).
    pub fn warm(&self, w: &QpWarmStart) -> QpWarmStart {
        let mut out = w.clone();
        for &(off, c) in &self.blocks {
            if out.z.len() >= off + 3 {
                out.z[off + 1] -= c.ln() * out.z[off];
                out.z[off + 2] /= c;
            }
        }
        out
    }

    /// The sheared problem's solution as one of the original (`z = T' z'`; x, y and the
    /// objective are unchanged).
    pub fn unshear(&self, sol: &mut QpSolution) {
        for &(off, c) in &self.blocks {
            if sol.z.len() >= off + 3 {
                sol.z[off + 1] += c.ln() * sol.z[off];
                sol.z[off + 2] *= c;
            }
        }
    }
}
