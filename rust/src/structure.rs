//! One validated problem structure, shared by every item of a batch: the sizes, the CSC
//! patterns of P (full symmetric) and A, the cones, and the precomputed map to POUNCE.
use crate::cone_layout::{ConeDims, ConeLayout, DataMap};
use crate::validate::{
    check_all_finite, csc_from_py, expect_shape, f64_array_unchecked, value_error, Array,
    CscPattern,
};
use pyo3::prelude::*;

pub struct ConicStructure {
    pub layout: ConeLayout,
    pub p: Option<CscPattern>,
    pub a: CscPattern,
    pub map: DataMap,
}

impl ConicStructure {
    pub fn from_py(
        n: usize,
        m: usize,
        p_indptr: Option<&Bound<'_, PyAny>>,
        p_indices: Option<&Bound<'_, PyAny>>,
        a_indptr: &Bound<'_, PyAny>,
        a_indices: &Bound<'_, PyAny>,
        cones: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let p = match (p_indptr, p_indices) {
            (Some(ip), Some(ix)) => Some(csc_from_py(n, n, ip, ix, "p")?),
            (None, None) => None,
            _ => {
                return Err(value_error(
                    "`p_indptr` and `p_indices` must both be given or both be None",
                ))
            }
        };
        let a = csc_from_py(m, n, a_indptr, a_indices, "a")?;
        let layout = ConeLayout::new(n, m, ConeDims::from_py(cones)?)?;
        let map = DataMap::new(&layout, p.as_ref(), &a);
        Ok(ConicStructure { layout, p, a, map })
    }

    pub fn n(&self) -> usize {
        self.layout.n
    }

    pub fn m(&self) -> usize {
        self.layout.m
    }

    /// The P values array: `(B, nnzP)` when P has a pattern, must be None otherwise; every
    /// entry finite.
    pub fn p_values<'py>(
        &self,
        obj: Option<&Bound<'py, PyAny>>,
        batch: usize,
    ) -> PyResult<Option<Array<'py, f64>>> {
        let arr = self.p_values_unchecked(obj, batch)?;
        if let Some(a) = &arr {
            check_all_finite(a, "p_values")?;
        }
        Ok(arr)
    }

    /// As [`Self::p_values`], with the values not inspected (the caller checks the rows it
    /// uses).
    pub fn p_values_unchecked<'py>(
        &self,
        obj: Option<&Bound<'py, PyAny>>,
        batch: usize,
    ) -> PyResult<Option<Array<'py, f64>>> {
        match (&self.p, obj) {
            (Some(p), Some(o)) => {
                let arr = f64_array_unchecked(o, "p_values", 2)?;
                expect_shape("p_values", &arr.shape, &[batch, p.nnz()])?;
                Ok(Some(arr))
            }
            (None, None) => Ok(None),
            (Some(_), None) => Err(value_error("`p_values` is None but a P pattern was given")),
            (None, Some(_)) => Err(value_error("`p_values` given without a P pattern")),
        }
    }
}

/// Batch size from a batch-first 2-D array (`q` or `gx`), with a named error.
pub fn batch_size(arr: &Array<'_, f64>, name: &str, width: usize) -> PyResult<usize> {
    if arr.shape[1] != width {
        return Err(value_error(format!(
            "`{name}` has shape {:?}, expected (B, {width})",
            arr.shape
        )));
    }
    Ok(arr.shape[0])
}
