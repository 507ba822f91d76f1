//! No Rust panic crosses into Python.
//!
//! PyO3 turns a panic that reaches the boundary into `pyo3_runtime.PanicException`, a
//! `BaseException` that `except Exception` does not catch. Every `#[pyfunction]` and
//! method body runs inside [`guard`], which raises a `RuntimeError` with the panic's
//! message instead; batch items run inside the core's `cancel::catch`, so one item's panic
//! fails that item and leaves the others alone. Sizes are validated before anything is
//! allocated from them, because an allocation failure aborts the process rather than
//! panicking.
use pounce_layers_core::cancel::{panic_message, TestPanic};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The `RuntimeError` raised for a panic inside `what`.
pub fn panic_error(what: &str, payload: &(dyn Any + Send)) -> PyErr {
    PyRuntimeError::new_err(format!(
        "internal error in {what}: {} (a Rust panic, caught; please report it)",
        panic_message(payload)
    ))
}

/// Run a `#[pyfunction]` body; a panic becomes a `RuntimeError` naming the function.
pub fn guard<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(what, payload.as_ref())),
    }
}

/// The test hook, read once per call from `POUNCE_LAYERS_TEST_PANIC`: `call` makes the
/// entry point panic in its body, `item:<i>` makes batch item `i` panic inside its solve
/// (for the tests of this module's guarantees; unset in normal use).
pub fn test_panic_from_env() -> TestPanic {
    match std::env::var("POUNCE_LAYERS_TEST_PANIC").as_deref() {
        Ok("call") => TestPanic::Call,
        Ok(s) => s
            .strip_prefix("item:")
            .and_then(|i| i.parse().ok())
            .map_or(TestPanic::Off, TestPanic::Item),
        Err(_) => TestPanic::Off,
    }
}
