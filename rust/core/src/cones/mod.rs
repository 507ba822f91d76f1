//! One home per cone. Each cone of the SCS product cone lives in its own file behind
//! [`Cone`]: its rows, POUNCE's cone for them and the order of those rows, whether the
//! adjoint's `H` is a dense block on it, and its dual cone as a linear image of the cone.
//! [`ProductCone`] lays the cones of a [`ConeDims`] out in SCS row order once, with every
//! count checked for overflow; it is the only walker over cone rows (the layout, the H
//! lengths, the certificates' dual cone).
//!
//! SCS row order: zero (`z`), nonneg (`l`), SOC (`q`), PSD (`s`), exp (`ep`), power (`p`).
//!
//! The SOC, PSD, exp and power files also hold that cone's projection and its limit scaling
//! H at a snapped pair (`project`, `scaling`; the product walk is cone_snap.rs), with the
//! maths they share in `centring.rs` (SOC, PSD), `barrier.rs` (exp, power) and `ray.rs`
//! (power), as pounce_kkt/cones/ lays out the Python reference.
pub mod barrier;
pub mod centring;
pub mod exp;
pub mod nonneg;
pub mod power;
pub mod psd;
pub mod ray;
pub mod soc;
pub mod zero;

use crate::cone_dims::ConeDims;
use crate::error::{value_error, Result};
use pounce_convex::ConeSpec;

pub trait Cone: std::fmt::Debug + Send + Sync {
    /// The SCS cone-dict key of this kind of cone.
    fn key(&self) -> &'static str;

    /// The SCS rows it covers, or `None` when that count overflows.
    fn rows(&self) -> Option<usize>;

    /// POUNCE's cone for these rows; `None` for the zero cone, whose rows become equalities.
    fn pounce(&self) -> Option<ConeSpec>;

    /// For each POUNCE row of the cone, in POUNCE's order, its SCS offset within the cone.
    fn pounce_order(&self) -> Vec<usize> {
        (0..self.rows().unwrap_or(0)).collect()
    }

    /// Whether the adjoint's `H` is a dense block over these rows (else it is diagonal and
    /// travels in `h_diag`).
    fn dense_h(&self) -> bool {
        true
    }

    /// Whether POUNCE solves it on its non-symmetric driver (exp, power).
    fn nonsymmetric(&self) -> bool {
        false
    }

    /// The dual cone as a linear image of the cone: `(row, col, value)` entries of `M`
    /// with `y in K*  <=>  M y in K`, over the cone's own rows (self-dual cones: `I`).
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        (0..self.rows().unwrap_or(0)).map(|i| (i, i, 1.0)).collect()
    }
}

/// One cone of the product and its first SCS row.
#[derive(Debug)]
pub struct ConeRange {
    pub cone: Box<dyn Cone>,
    pub start: usize,
    pub rows: usize,
}

/// The cones of a `ConeDims` in SCS row order (empty zero / nonneg parts left out).
#[derive(Debug)]
pub struct ProductCone {
    pub ranges: Vec<ConeRange>,
    /// All rows.
    pub rows: usize,
    /// Rows whose `H` is diagonal (zero and nonneg): the length of `h_diag`.
    pub h_diag_len: usize,
    /// `sum d_k^2` over the dense-`H` cones: the length of `h_blocks`.
    pub h_blocks_len: usize,
}

fn overflow(what: &str) -> crate::error::Error {
    value_error(format!(
        "cone dimensions overflow: {what} does not fit in 64 bits"
    ))
}

impl ProductCone {
    /// Lay the cones out; every count is checked for overflow.
    pub fn new(dims: &ConeDims) -> Result<Self> {
        let mut cones: Vec<Box<dyn Cone>> = Vec::new();
        if dims.z > 0 {
            cones.push(Box::new(zero::Zero(dims.z)));
        }
        if dims.l > 0 {
            cones.push(Box::new(nonneg::Nonneg(dims.l)));
        }
        cones.extend(
            dims.q
                .iter()
                .map(|&d| Box::new(soc::Soc(d)) as Box<dyn Cone>),
        );
        cones.extend(
            dims.s
                .iter()
                .map(|&k| Box::new(psd::Psd(k)) as Box<dyn Cone>),
        );
        cones.extend((0..dims.ep).map(|_| Box::new(exp::Exp) as Box<dyn Cone>));
        cones.extend(
            dims.p
                .iter()
                .map(|&a| Box::new(power::Power(a)) as Box<dyn Cone>),
        );
        let (mut row, mut h_diag_len, mut h_blocks_len) = (0usize, 0usize, 0usize);
        let mut ranges = Vec::with_capacity(cones.len());
        for cone in cones {
            let rows = cone.rows().ok_or_else(|| overflow("a cone's row count"))?;
            if cone.dense_h() {
                let sq = rows
                    .checked_mul(rows)
                    .ok_or_else(|| overflow("the length of `h_blocks`"))?;
                h_blocks_len = h_blocks_len
                    .checked_add(sq)
                    .ok_or_else(|| overflow("the length of `h_blocks`"))?;
            } else {
                h_diag_len += rows; // <= row, which is checked below
            }
            ranges.push(ConeRange {
                cone,
                start: row,
                rows,
            });
            row = row
                .checked_add(rows)
                .ok_or_else(|| overflow("their row count"))?;
        }
        Ok(ProductCone {
            ranges,
            rows: row,
            h_diag_len,
            h_blocks_len,
        })
    }

    /// Only zero and nonneg rows (diagonal `H`): a linear or quadratic program.
    pub fn is_qp(&self) -> bool {
        self.ranges.iter().all(|r| !r.cone.dense_h())
    }

    /// Any exp or power cone.
    pub fn has_nonsymmetric(&self) -> bool {
        self.ranges.iter().any(|r| r.cone.nonsymmetric())
    }
}

/// `<a, b>` over the shorter of the two slices.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
