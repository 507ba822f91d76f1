//! Input validation for the native entry points.
//!
//! Every array crossing the Python boundary is checked here, before any solve starts, so a
//! malformed call fails with a `ValueError` naming the offending argument instead of a panic
//! or a silently wrong answer deep inside a rayon worker.
use numpy::{PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::Error as CoreError;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::ops::Deref;

pub fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// The core's error as the Python exception it stands for.
pub fn py_err(e: CoreError) -> PyErr {
    match e {
        CoreError::Value(m) => PyValueError::new_err(m),
        CoreError::Type(m) => PyTypeError::new_err(m),
    }
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
/// data stays allocated for as long as the view lives: a batch job on the pool (the core's pool.rs)
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
    CscPattern::new(nrows, ncols, ip.slice(), ix.slice(), what).map_err(py_err)
}
