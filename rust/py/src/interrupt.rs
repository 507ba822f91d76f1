//! Running a batch on the pool so that Ctrl-C reaches the caller within a fraction of a
//! second.
//!
//! [`run`] starts the batch as one job on the fork-safe pool (the core's pool.rs) and, with the GIL
//! released, waits for it in slices of [`POLL`]. After each slice it re-takes the GIL just
//! long enough to run Python's pending signal handlers (`PyErr_CheckSignals`, which only
//! does something on the main thread). When a handler raises (SIGINT's raises
//! `KeyboardInterrupt`), the job's cancel flag is set, so items not yet started are
//! skipped, and the exception is returned after at most [`GRACE`] more: an item already
//! running cannot be stopped inside POUNCE (it has no cancel hook), so the job is left to
//! finish that item in the background. That is safe because the job owns everything it
//! touches (the problem handle's structure through an `Arc`, `Shared` views that keep the input arrays alive, its outputs),
//! and its result is then dropped.
use crate::panic_guard::panic_error;
use pounce_layers_core::cancel::Cancel;
use pounce_layers_core::pool::pool;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::Duration;

/// How often a waiting caller checks for signals.
pub const POLL: Duration = Duration::from_millis(50);
/// How long an interrupted caller waits for the batch to wind down before returning.
pub const GRACE: Duration = Duration::from_millis(100);

/// Run `job` on the pool and wait for it, interruptibly (see the module docs). A panic in
/// the job becomes a `RuntimeError` naming `what`; a signal handler's exception is returned
/// as is.
pub fn run<T, F>(py: Python<'_>, what: &str, job: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> T + Send + 'static,
{
    let cancel = Cancel::default();
    let (tx, rx) = sync_channel(1);
    let flag = cancel.clone();
    pool().spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&flag)));
        // The receiver is gone when the caller was interrupted: the result is dropped here.
        let _ = tx.send(r);
    });
    // The result leaves the GIL-released region before it is used or dropped (it may hold
    // Python references).
    let waited = py.detach(move || loop {
        match rx.recv_timeout(POLL) {
            Ok(r) => return Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = Python::attach(|py| py.check_signals()) {
                    cancel.set();
                    return Err((e, rx.recv_timeout(GRACE).ok()));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err((
                    PyRuntimeError::new_err(format!("{what}: the batch job vanished")),
                    None,
                ))
            }
        }
    });
    match waited {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(payload)) => Err(panic_error(what, payload.as_ref())),
        Err((e, late)) => {
            drop(late);
            Err(e)
        }
    }
}
