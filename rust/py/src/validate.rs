//! Input validation for the native entry points.
//!
//! Every array crossing the Python boundary is checked here, before any solve starts, so a
//! malformed call fails with a `ValueError` naming the offending argument instead of a panic
//! or a silently wrong answer deep inside a rayon worker.
use numpy::{PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::ops::Deref;

pub fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// The largest `n`, `m` and `n + m` the native core takes: POUNCE's linear solvers index
/// the KKT system (dimension `n + m` and more) with `i32`.
pub const MAX_DIM: usize = i32::MAX as usize;

/// Check the problem sizes before anything is allocated from them (`m = 2**40` must be a
/// `ValueError`, not an allocation failure that aborts the process).
pub fn check_sizes(n: usize, m: usize) -> PyResult<()> {
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

/// `a * b`, or a `ValueError` naming `what` when it overflows.
pub fn checked_mul(a: usize, b: usize, what: &str) -> PyResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| value_error(format!("{what} overflows ({a} x {b})")))
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

    /// A view of the data that a job on the thread pool may hold past this call (see
    /// [`Shared`]).
    pub fn share(&self) -> Shared<T> {
        let s = self.slice();
        Shared {
            _owner: self.arr.as_any().clone().unbind(),
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// A read-only view of a numpy array's data that owns a reference to the array, so the
/// data stays allocated for as long as the view lives: a batch job on the pool (pool.rs)
/// may outlive the call that started it when the caller is interrupted (interrupt.rs).
/// The data is read without the GIL, as every GIL-released solve reads its inputs; the
/// array must not be written meanwhile (the Python side hands over private contiguous
/// copies or arrays it does not write).
pub struct Shared<T> {
    _owner: Py<PyAny>,
    ptr: *const T,
    len: usize,
}

// SAFETY: the view only reads plain numeric data that `_owner` keeps alive; `Py<PyAny>` is
// itself Send + Sync.
unsafe impl<T: Sync> Send for Shared<T> {}
unsafe impl<T: Sync> Sync for Shared<T> {}

impl<T> Deref for Shared<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr`/`len` describe the C-contiguous buffer of the array `_owner` holds
        // a reference to (checked at extraction); a referenced numpy array is never resized.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn extract<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    dtype: &str,
    ndim: usize,
) -> PyResult<Array<'py, T>> {
    let arr: PyReadonlyArrayDyn<'py, T> = obj.extract().map_err(|_| {
        let got = match obj.cast::<PyUntypedArray>() {
            Ok(a) => format!("an array of dtype {}", a.dtype()),
            Err(_) => format!(
                "a {}",
                obj.get_type().name().map_or("?".into(), |n| n.to_string())
            ),
        };
        value_error(format!(
            "`{name}` must be a numpy array of dtype {dtype}, got {got}"
        ))
    })?;
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
