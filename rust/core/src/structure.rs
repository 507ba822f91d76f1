//! One validated problem structure, shared by every item of a batch: the sizes, the CSC
//! patterns of P (full symmetric) and A, the cones, and the precomputed map to POUNCE.
use crate::cone_dims::ConeDims;
use crate::cone_layout::{ConeLayout, DataMap};
use crate::cones::ProductCone;
use crate::error::{value_error, Result};
use crate::pattern::{check_sizes, CscPattern};

pub struct ConicStructure {
    pub layout: ConeLayout,
    pub p: Option<CscPattern>,
    pub a: CscPattern,
    pub map: DataMap,
}

/// The cones' row count against `m`, checked for overflow, before anything of size `m` is
/// allocated.
pub fn check_cone_rows(dims: &ConeDims, m: usize) -> Result<()> {
    let rows = ProductCone::new(dims)?.rows;
    if rows != m {
        return Err(value_error(format!(
            "cone dimensions cover {rows} rows but A has m = {m} rows"
        )));
    }
    Ok(())
}

impl ConicStructure {
    /// The layout and the map to POUNCE of checked patterns (`a` is `m x n`, `p` `n x n`)
    /// and cones; the sizes and the cones' row count are checked first.
    pub fn new(
        n: usize,
        m: usize,
        p: Option<CscPattern>,
        a: CscPattern,
        dims: ConeDims,
    ) -> Result<Self> {
        check_sizes(n, m)?;
        check_cone_rows(&dims, m)?;
        if (a.nrows, a.ncols) != (m, n) {
            return Err(value_error(format!(
                "A's pattern is {} x {}, expected m x n = {m} x {n}",
                a.nrows, a.ncols
            )));
        }
        if let Some(p) = &p {
            if (p.nrows, p.ncols) != (n, n) {
                return Err(value_error(format!(
                    "P's pattern is {} x {}, expected n x n = {n} x {n}",
                    p.nrows, p.ncols
                )));
            }
        }
        let layout = ConeLayout::new(n, m, dims)?;
        let map = DataMap::new(&layout, p.as_ref(), &a);
        Ok(ConicStructure { layout, p, a, map })
    }

    pub fn n(&self) -> usize {
        self.layout.n
    }

    pub fn m(&self) -> usize {
        self.layout.m
    }

    pub fn nnz_p(&self) -> usize {
        self.p.as_ref().map_or(0, |p| p.nnz())
    }

    pub fn nnz_a(&self) -> usize {
        self.a.nnz()
    }
}
