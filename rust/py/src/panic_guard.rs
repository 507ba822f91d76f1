//! No Rust panic crosses into Python.
//!
//! PyO3 turns a panic that reaches the boundary into `pyo3_runtime.PanicException`, a
//! `BaseException` that `except Exception` does not catch. Every `#[pyfunction]` body runs
//! inside [`guard`], which raises a `RuntimeError` with the panic's message instead, and
//! every batch item runs inside [`catch`], so one item's panic fails that item
//! (`numerical_failure`) and leaves the others alone. Sizes are validated before anything
//! is allocated from them (validate.rs), because an allocation failure aborts the process
//! rather than panicking.
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

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

/// Run one batch item; `Err(message)` if it panicked. The caller must treat any state the
/// item used (a reusable factorization) as lost.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// Test hook, read once per call from `POUNCE_LAYERS_TEST_PANIC`: `call` makes the entry
/// point panic in its body, `item:<i>` makes batch item `i` panic inside its solve (for the
/// tests of this module's guarantees; unset in normal use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPanic {
    Off,
    Call,
    Item(usize),
}

impl TestPanic {
    pub fn from_env() -> Self {
        match std::env::var("POUNCE_LAYERS_TEST_PANIC").as_deref() {
            Ok("call") => TestPanic::Call,
            Ok(s) => s
                .strip_prefix("item:")
                .and_then(|i| i.parse().ok())
                .map_or(TestPanic::Off, TestPanic::Item),
            Err(_) => TestPanic::Off,
        }
    }

    /// Panic here if the hook asks for a panic in the call's body.
    pub fn at_call(self, what: &str) {
        if self == TestPanic::Call {
            panic!("test panic in {what} (POUNCE_LAYERS_TEST_PANIC=call)");
        }
    }

    /// Panic here if the hook asks for a panic in item `i`.
    pub fn at_item(self, i: usize) {
        if self == TestPanic::Item(i) {
            panic!("test panic in batch item {i} (POUNCE_LAYERS_TEST_PANIC=item:{i})");
        }
    }
}
