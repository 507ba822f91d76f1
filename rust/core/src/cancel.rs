//! Cancelling a batch, and keeping one item's panic inside that item.
//!
//! A batch checks its [`Cancel`] flag before each item (the binding sets it on Ctrl-C).
//! Every item runs inside [`catch`], so one item's panic fails that item and leaves the
//! others alone. [`TestPanic`] injects such panics for the tests of these guarantees.
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A batch's cancel flag: items check it before they start.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

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

/// Run one batch item; `Err(message)` if it panicked. The caller must treat any state the
/// item used (a reusable factorization) as lost.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// Test hook: `Call` makes an entry point panic in its body, `Item(i)` makes batch item `i`
/// panic inside its solve (the binding reads it from `POUNCE_LAYERS_TEST_PANIC`; `Off` in
/// normal use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestPanic {
    #[default]
    Off,
    Call,
    Item(usize),
}

impl TestPanic {
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
