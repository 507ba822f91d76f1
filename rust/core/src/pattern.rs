//! Sizes and CSC sparsity patterns, checked before anything is allocated from them.
use crate::error::{value_error, Result};

/// The largest `n`, `m` and `n + m` the native core takes: POUNCE's linear solvers index
/// the KKT system (dimension `n + m` and more) with `i32`.
pub const MAX_DIM: usize = i32::MAX as usize;

/// Check the problem sizes before anything is allocated from them (`m = 2**40` must be an
/// error, not an allocation failure that aborts the process).
pub fn check_sizes(n: usize, m: usize) -> Result<()> {
    for (name, v) in [("n", n), ("m", m)] {
        if v > MAX_DIM {
            return Err(value_error(format!(
                "`{name}` = {v} exceeds the largest size the solver takes ({MAX_DIM}: \
                 POUNCE's linear solvers index with 32-bit integers)"
            )));
        }
    }
    if n + m > MAX_DIM {
        return Err(value_error(format!(
            "`n + m` = {} exceeds the largest KKT dimension the solver takes ({MAX_DIM})",
            n + m
        )));
    }
    Ok(())
}

/// `a * b`, or an error naming `what` when it overflows.
pub fn checked_mul(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| value_error(format!("{what} overflows ({a} x {b})")))
}

/// A validated CSC sparsity pattern (0-based, no duplicate entries).
#[derive(Debug, Clone)]
pub struct CscPattern {
    pub nrows: usize,
    pub ncols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
}

impl CscPattern {
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Iterate `(k, row, col)` over the stored entries in storage order.
    pub fn entries(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.ncols).flat_map(move |c| {
            (self.indptr[c]..self.indptr[c + 1]).map(move |k| (k, self.indices[k], c))
        })
    }

    /// Check and convert raw `indptr` / `indices` (`what` names them in the errors).
    pub fn new(
        nrows: usize,
        ncols: usize,
        indptr: &[i64],
        indices: &[i64],
        what: &str,
    ) -> Result<Self> {
        if ncols.checked_add(1) != Some(indptr.len()) {
            return Err(value_error(format!(
                "`{what}_indptr` has length {}, expected n + 1 = {}",
                indptr.len(),
                ncols as u128 + 1
            )));
        }
        if indptr[0] != 0 {
            return Err(value_error(format!("`{what}_indptr` must start at 0")));
        }
        if indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err(value_error(format!(
                "`{what}_indptr` is not monotone non-decreasing"
            )));
        }
        if usize::try_from(indptr[ncols]).ok() != Some(indices.len()) {
            return Err(value_error(format!(
                "`{what}_indptr[-1]` = {} does not match len(`{what}_indices`) = {}",
                indptr[ncols],
                indices.len()
            )));
        }
        if let Some(&bad) = indices.iter().find(|&&r| r < 0 || r as usize >= nrows) {
            return Err(value_error(format!(
                "`{what}_indices` holds row index {bad}, out of range for {nrows} rows"
            )));
        }
        let indptr: Vec<usize> = indptr.iter().map(|&v| v as usize).collect();
        let indices: Vec<usize> = indices.iter().map(|&v| v as usize).collect();
        // Duplicate (row, col) entries would make "the value of entry k" ambiguous for the
        // gradient, so they are refused rather than summed. Checked per column on a sorted
        // copy, so the memory is that of the pattern, never O(nrows).
        let mut col = Vec::new();
        for c in 0..ncols {
            let rows = &indices[indptr[c]..indptr[c + 1]];
            if rows.windows(2).all(|w| w[0] < w[1]) {
                continue;
            }
            col.clear();
            col.extend_from_slice(rows);
            col.sort_unstable();
            if let Some(w) = col.windows(2).find(|w| w[0] == w[1]) {
                let r = w[0];
                return Err(value_error(format!(
                    "`{what}` pattern has a duplicate entry at ({r}, {c}); sum duplicates first"
                )));
            }
        }
        Ok(CscPattern {
            nrows,
            ncols,
            indptr,
            indices,
        })
    }

    /// The pattern of a dense `nrows x ncols` matrix (every entry stored, column-major).
    pub fn dense(nrows: usize, ncols: usize) -> Self {
        CscPattern {
            nrows,
            ncols,
            indptr: (0..=ncols).map(|c| c * nrows).collect(),
            indices: (0..ncols).flat_map(|_| 0..nrows).collect(),
        }
    }
}
