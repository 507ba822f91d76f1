//! One validated problem structure, shared by every item of a batch: the sizes, the CSC
//! patterns of P (full symmetric) and A, the cones, and the precomputed map to POUNCE.
use crate::cone_layout::{ConeDims, ConeLayout, DataMap};
use crate::validate::{
    check_all_finite, check_sizes, csc_from_py, expect_shape, f64_array_unchecked, value_error,
    Array, CscPattern,
};
use pyo3::prelude::*;

pub struct ConicStructure {
    pub layout: ConeLayout,
    pub p: Option<CscPattern>,
    pub a: CscPattern,
    pub map: DataMap,
}

/// The checked inputs of a structure before anything of size `m` is allocated: the sizes,
/// the patterns (memory proportional to the index arrays) and the cones (their row count
/// checked for overflow and against `m`).
pub struct ParsedStructure {
    n: usize,
    m: usize,
    p: Option<CscPattern>,
    a: CscPattern,
    dims: ConeDims,
}

impl ParsedStructure {
    pub fn p(&self) -> Option<&CscPattern> {
        self.p.as_ref()
    }

    pub fn a(&self) -> &CscPattern {
        &self.a
    }

    pub fn dims(&self) -> &ConeDims {
        &self.dims
    }

    /// The layout and the map to POUNCE (memory proportional to `m` and the patterns).
    pub fn build(self) -> PyResult<ConicStructure> {
        let layout = ConeLayout::new(self.n, self.m, self.dims)?;
        let map = DataMap::new(&layout, self.p.as_ref(), &self.a);
        Ok(ConicStructure {
            layout,
            p: self.p,
            a: self.a,
            map,
        })
    }
}

impl ConicStructure {
    /// Check sizes, patterns and cones (see [`ParsedStructure`]).
    pub fn parse(
        n: usize,
        m: usize,
        p_indptr: Option<&Bound<'_, PyAny>>,
        p_indices: Option<&Bound<'_, PyAny>>,
        a_indptr: &Bound<'_, PyAny>,
        a_indices: &Bound<'_, PyAny>,
        cones: &Bound<'_, PyAny>,
    ) -> PyResult<ParsedStructure> {
        check_sizes(n, m)?;
        let dims = ConeDims::from_py(cones)?;
        match dims.rows_checked() {
            Some(rows) if rows == m => {}
            Some(rows) => {
                return Err(value_error(format!(
                    "cone dimensions cover {rows} rows but A has m = {m} rows"
                )))
            }
            None => {
                return Err(value_error(format!(
                    "cone dimensions overflow: their row count does not fit in 64 bits (A \
                     has m = {m} rows)"
                )))
            }
        }
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
        Ok(ParsedStructure { n, m, p, a, dims })
    }

    pub fn from_py(
        n: usize,
        m: usize,
        p_indptr: Option<&Bound<'_, PyAny>>,
        p_indices: Option<&Bound<'_, PyAny>>,
        a_indptr: &Bound<'_, PyAny>,
        a_indices: &Bound<'_, PyAny>,
        cones: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        Self::parse(n, m, p_indptr, p_indices, a_indptr, a_indices, cones)?.build()
    }

    pub fn n(&self) -> usize {
        self.layout.n
    }

    pub fn m(&self) -> usize {
        self.layout.m
    }
}

/// The P values array: `(B, nnzP)` when P has a pattern, must be None otherwise; every
/// entry finite.
pub fn p_values<'py>(
    p: Option<&CscPattern>,
    obj: Option<&Bound<'py, PyAny>>,
    batch: usize,
) -> PyResult<Option<Array<'py, f64>>> {
    let arr = p_values_unchecked(p, obj, batch)?;
    if let Some(a) = &arr {
        check_all_finite(a, "p_values")?;
    }
    Ok(arr)
}

/// As [`p_values`], with the values not inspected (the caller checks the rows it
/// uses).
pub fn p_values_unchecked<'py>(
    p: Option<&CscPattern>,
    obj: Option<&Bound<'py, PyAny>>,
    batch: usize,
) -> PyResult<Option<Array<'py, f64>>> {
    match (p, obj) {
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
