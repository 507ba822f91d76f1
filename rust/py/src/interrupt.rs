//! Running a batch so that Ctrl-C reaches the caller within a fraction of a second.
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
//!
//! A batch of one item whose kind of call took at most [`HERE_MAX`] per item the last time
//! on this handle ([`Pace`]) runs on the calling thread instead, with the GIL released: a
//! single item gains nothing from the pool, and the hand-off (waking a pool thread, then
//! the waiting caller) costs a scheduler time slice each way on a loaded machine. Such a
//! call cannot return before its item ends, so Ctrl-C waits for the item (an item about as
//! long as the last one: within [`HERE_MAX`]); the signal's exception is raised when it
//! ends, in place of the result. A handle's first call, and every call after one whose
//! items took longer, runs on the pool.
use crate::panic_guard::panic_error;
use pounce_layers_core::cancel::Cancel;
use pounce_layers_core::pool::pool;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often a waiting caller checks for signals.
pub const POLL: Duration = Duration::from_millis(50);
/// How long an interrupted caller waits for the batch to wind down before returning.
pub const GRACE: Duration = Duration::from_millis(100);
/// The longest per-item time of a handle's last call for which its next batch of one item
/// runs on the calling thread (see the module docs).
pub const HERE_MAX: Duration = Duration::from_millis(20);

/// The per-item wall time of the last finished call of one kind on one handle (nanoseconds;
/// `u64::MAX` before the first), which decides where the next batch of one item runs.
pub struct Pace(AtomicU64);

impl Default for Pace {
    fn default() -> Self {
        Pace(AtomicU64::new(u64::MAX))
    }
}

impl Pace {
    /// Whether a batch of `bsz` items runs on the calling thread.
    fn here(&self, bsz: usize) -> bool {
        bsz == 1 && self.0.load(Ordering::Relaxed) <= HERE_MAX.as_nanos() as u64
    }

    fn record(&self, spent: Duration, bsz: usize) {
        let per = spent.as_nanos() / bsz.max(1) as u128;
        self.0
            .store(per.min(u64::MAX as u128 - 1) as u64, Ordering::Relaxed);
    }
}

/// Run `job` on a batch of `bsz` items and wait for it, interruptibly: on the pool, or on
/// this thread as `pace` decides (see the module docs). A panic in the job becomes a
/// `RuntimeError` naming `what`; a signal handler's exception is returned as is.
pub fn run<T, F>(py: Python<'_>, what: &str, pace: &Pace, bsz: usize, job: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> T + Send + 'static,
{
    if pace.here(bsz) {
        return run_here(py, what, pace, bsz, job);
    }
    let cancel = Cancel::default();
    let (tx, rx) = sync_channel(1);
    let flag = cancel.clone();
    pool().spawn(move || {
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| job(&flag)));
        // The receiver is gone when the caller was interrupted: the result is dropped here.
        let _ = tx.send((r, t0.elapsed()));
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
        Ok((Ok(out), spent)) => {
            pace.record(spent, bsz);
            Ok(out)
        }
        Ok((Err(payload), _)) => Err(panic_error(what, payload.as_ref())),
        Err((e, late)) => {
            drop(late);
            Err(e)
        }
    }
}

/// `job` on this thread with the GIL released; then Python's pending signal handlers run,
/// and an exception of theirs replaces the result.
fn run_here<T, F>(py: Python<'_>, what: &str, pace: &Pace, bsz: usize, job: F) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Cancel) -> T + Send + 'static,
{
    let done = py.detach(move || {
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| job(&Cancel::default())));
        (r, t0.elapsed())
    });
    match done {
        (Ok(out), spent) => {
            pace.record(spent, bsz);
            py.check_signals()?;
            Ok(out)
        }
        (Err(payload), _) => Err(panic_error(what, payload.as_ref())),
    }
}
