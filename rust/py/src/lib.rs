//! Native core of pounce-layers, exposed to Python as `pounce_kkt._native`.
//!
//! Each submodule owns one job and registers its own Python functions:
//! - `cone_layout`: the one mapping between the SCS/cvxpy conic layout and POUNCE's.
//! - `batch`: batched conic forward solves (rayon, GIL released).
//! - `kkt_adjoint`: batched sparse KKT adjoint solves (rayon, GIL released).
//! - `dense_backend`: the dense LBL' linear solver for small, filled KKT systems.
//! - `nlp`: the NLP interior-point solve used by the Theseus adapter.
//! - `convexity`: the check that each item's P is positive semidefinite.
//! - `pool`: the fork-safe rayon pool every batch runs on.
//! - `interrupt`: running a batch on that pool so that Ctrl-C reaches the caller.
//! - `panic_guard`: no Rust panic crosses into Python.
use pyo3::prelude::*;

pub mod batch;
pub mod certificates;
pub mod cone_layout;
pub mod convexity;
pub mod dense_backend;
pub mod interrupt;
pub mod kkt_adjoint;
pub mod nlp;
pub mod options;
pub mod panic_guard;
pub mod pool;
pub mod structure;
pub mod validate;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    batch::register(m)?;
    kkt_adjoint::register(m)?;
    dense_backend::register(m)?;
    nlp::register(m)?;
    Ok(())
}
