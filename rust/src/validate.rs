//! Input validation for the native entry points.
//!
//! Every array crossing the Python boundary is checked here, before any solve starts, so a
//! malformed call fails with a `ValueError` naming the offending argument instead of a panic
//! or a silently wrong answer deep inside a rayon worker.
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A borrowed, C-contiguous numpy array of a fixed element type.
pub struct Array<'py, T: numpy::Element> {
    arr: PyReadonlyArrayDyn<'py, T>,
    pub shape: Vec<usize>,
}

impl<'py, T: numpy::Element> Array<'py, T> {
    pub fn slice(&self) -> &[T] {
        // Contiguity was checked at extraction.
        self.arr.as_slice().expect("contiguous array")
    }
}

fn extract<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    dtype: &str,
    ndim: usize,
) -> PyResult<Array<'py, T>> {
    let arr: PyReadonlyArrayDyn<'py, T> = obj
        .extract()
        .map_err(|_| value_error(format!("`{name}` must be a numpy array of dtype {dtype}")))?;
    if arr.ndim() != ndim {
        return Err(value_error(format!(
            "`{name}` must have {ndim} dimension(s), got shape {:?}",
            arr.shape()
        )));
    }
    if !arr.is_c_contiguous() {
        return Err(value_error(format!("`{name}` must be C-contiguous")));
    }
    let shape = arr.shape().to_vec();
    Ok(Array { arr, shape })
}

/// A float64 array of the given `ndim`; every entry must be finite.
pub fn f64_array<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<Array<'py, f64>> {
    let a = extract::<f64>(obj, name, "float64", ndim)?;
    check_all_finite(&a, name)?;
    Ok(a)
}

/// Every entry of `a` must be finite; the error names the array and the flat index.
pub fn check_all_finite(a: &Array<'_, f64>, name: &str) -> PyResult<()> {
    match a.slice().iter().position(|v| !v.is_finite()) {
        Some(pos) => Err(value_error(format!(
            "`{name}` contains a non-finite value (NaN or Inf) at flat index {pos}"
        ))),
        None => Ok(()),
    }
}

/// A float64 array of the given `ndim` whose values are not inspected (e.g. outputs of a
/// failed solve that are masked out anyway).
pub fn f64_array_unchecked<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<Array<'py, f64>> {
    extract::<f64>(obj, name, "float64", ndim)
}

pub fn i64_array<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Array<'py, i64>> {
    extract::<i64>(obj, name, "int64", 1)
}

/// Require `shape == expected`.
pub fn expect_shape(name: &str, shape: &[usize], expected: &[usize]) -> PyResult<()> {
    if shape != expected {
        return Err(value_error(format!(
            "`{name}` has shape {shape:?}, expected {expected:?}"
        )));
    }
    Ok(())
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

    /// Check and convert raw `indptr` / `indices` (names are for the error messages).
    pub fn new(
        nrows: usize,
        ncols: usize,
        indptr: &[i64],
        indices: &[i64],
        what: &str,
    ) -> PyResult<Self> {
        if indptr.len() != ncols + 1 {
            return Err(value_error(format!(
                "`{what}_indptr` has length {}, expected n + 1 = {}",
                indptr.len(),
                ncols + 1
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
        if indptr[ncols] as usize != indices.len() {
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
        // gradient, so they are refused rather than summed.
        let mut seen = vec![usize::MAX; nrows];
        for c in 0..ncols {
            for &r in &indices[indptr[c]..indptr[c + 1]] {
                if seen[r] == c {
                    return Err(value_error(format!(
                        "`{what}` pattern has a duplicate entry at ({r}, {c}); sum duplicates first"
                    )));
                }
                seen[r] = c;
            }
        }
        Ok(CscPattern {
            nrows,
            ncols,
            indptr,
            indices,
        })
    }
}

/// Read `(indptr, indices)` of a CSC pattern from Python objects.
pub fn csc_from_py(
    nrows: usize,
    ncols: usize,
    indptr: &Bound<'_, PyAny>,
    indices: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<CscPattern> {
    let ip = i64_array(indptr, &format!("{what}_indptr"))?;
    let ix = i64_array(indices, &format!("{what}_indices"))?;
    CscPattern::new(nrows, ncols, ip.slice(), ix.slice(), what)
}
