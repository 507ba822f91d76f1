//! PyO3 binding of pounce-layers' native core, exposed to Python as `pounce_kkt._native`.
//!
//! The numerics live in the pure-Rust core crate (`pounce-layers-core`); this crate only
//! converts and checks Python inputs, releases the GIL, turns Ctrl-C and panics into Python
//! exceptions, and bridges POUNCE's NLP solver to Python callbacks:
//! - `problem`: the `ConicProblem` handle (one structure, built once; `solve`, `adjoint`).
//! - `kkt_adjoint`: the adjoint's constants (shared with the dense Torch path).
//! - `cones`, `validate`: the cone dict and the arrays read from Python.
//! - `nlp`: the NLP interior-point solve used by the Theseus adapter.
//! - `interrupt`: running a batch on the pool so that Ctrl-C reaches the caller.
//! - `panic_guard`: no Rust panic crosses into Python.
use pyo3::prelude::*;

pub mod cones;
pub mod interrupt;
pub mod kkt_adjoint;
pub mod nlp;
pub mod panic_guard;
pub mod problem;
pub mod validate;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    problem::register(m)?;
    kkt_adjoint::register(m)?;
    nlp::register(m)?;
    Ok(())
}
