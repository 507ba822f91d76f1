//! The SCS cone dict read from Python into the core's `ConeDims`.
use crate::validate::value_error;
use pounce_layers_core::cone_dims::ConeDims;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat};

/// The Python type name of `v`, for error messages.
fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// A cone count or size: a Python int (or numpy integer) >= 0. Floats are refused, never
/// truncated (2.7 must not become 2).
fn cone_count(v: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    if v.is_instance_of::<PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int, got float {}",
            v.repr().map_or_else(|_| "?".to_string(), |r| r.to_string())
        )));
    }
    let x: i128 = v.extract().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be an int, got {}", type_name(v)))
    })?;
    if x < 0 {
        return Err(value_error(format!("{what} must be >= 0, got {x}")));
    }
    usize::try_from(x).map_err(|_| value_error(format!("{what} = {x} is too large")))
}

fn dict_usize(d: &Bound<'_, PyDict>, key: &str) -> PyResult<usize> {
    match d.get_item(key)? {
        None => Ok(0),
        Some(v) if v.is_none() => Ok(0),
        Some(v) => cone_count(&v, &format!("cones[{key:?}]")),
    }
}

/// The entries of the list `cones[key]`, each read by `read(item, "cones[key][i]")`.
fn dict_list<T>(
    d: &Bound<'_, PyDict>,
    key: &str,
    read: impl Fn(&Bound<'_, PyAny>, &str) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    match d.get_item(key)? {
        None => Ok(Vec::new()),
        Some(v) if v.is_none() => Ok(Vec::new()),
        Some(v) => {
            let mut out = Vec::new();
            for (i, item) in v
                .try_iter()
                .map_err(|_| value_error(format!("cones[{key:?}] must be a list")))?
                .enumerate()
            {
                out.push(read(&item?, &format!("cones[{key:?}][{i}]"))?);
            }
            Ok(out)
        }
    }
}

fn alpha(v: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    v.extract::<f64>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a float, got {}", type_name(v))))
}

/// Read the canonical cone dict `{"z", "l", "q", "s", "ep", "p"}` (missing keys = empty)
/// that `pounce_kkt.ConeDims.to_dict` writes. pounce_kkt's `ConeDims` validates the user's
/// dict (and reads its dialects: `"f"`, empty `"ed"` / `"pnd"`, ...); this side asserts the
/// canonical form: any other key is refused, counts and sizes must be ints (a float raises
/// `TypeError`, a negative one `ValueError`); the sizes themselves are checked by
/// `ConeDims::check` (SOC sizes and PSD orders >= 1, alphas in (0, 1)).
pub fn cone_dims_from_py(obj: &Bound<'_, PyAny>) -> PyResult<ConeDims> {
    let d = obj
        .cast::<PyDict>()
        .map_err(|_| value_error("`cones` must be a dict like {'z': 0, 'l': 3, 'q': [..]}"))?;
    for key in d.keys() {
        let k: String = key.extract().unwrap_or_default();
        if !["z", "l", "q", "s", "ep", "p"].contains(&k.as_str()) {
            return Err(value_error(format!(
                "unknown cone key {k:?}: the native side takes the canonical dict with keys z, \
                 l, q, s, ep, p that pounce_kkt.ConeDims(...).to_dict() writes (ConeDims \
                 reads the SCS, cvxpy and diffcp dialects, e.g. 'f', 'ed': 0, 'pnd': [])"
            )));
        }
    }
    let q = dict_list(d, "q", cone_count)?;
    let s = dict_list(d, "s", cone_count)?;
    let p = dict_list(d, "p", alpha)?;
    Ok(ConeDims {
        z: dict_usize(d, "z")?,
        l: dict_usize(d, "l")?,
        q,
        s,
        ep: dict_usize(d, "ep")?,
        p,
    })
}
