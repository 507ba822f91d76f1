//! Per-worker state kept across the calls of one problem handle.
//!
//! A batch runs in chunks, one worker each; a worker's state (a QP factorization with its
//! symbolic analysis, a KKT factorization, buffers) is built for the structure and stays
//! valid for every later call with the same structure and the same `key` (the options the
//! state was built with). [`Workspaces`] holds the states that finished calls hand back.
//! It never blocks: a busy lock (another call handing back its states at that instant, or
//! a lock that a `fork` left held in a child process) only means a fresh state is built,
//! or the returned one dropped.
use std::sync::Mutex;

struct Slot<K, W> {
    pid: u32,
    key: Option<K>,
    free: Vec<W>,
}

pub struct Workspaces<K, W> {
    slot: Mutex<Slot<K, W>>,
}

impl<K: PartialEq, W> Default for Workspaces<K, W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PartialEq, W> Workspaces<K, W> {
    pub fn new() -> Self {
        Workspaces {
            slot: Mutex::new(Slot {
                pid: std::process::id(),
                key: None,
                free: Vec::new(),
            }),
        }
    }

    /// A state built for `key` by an earlier call of this process, if one is free.
    pub fn take(&self, key: &K) -> Option<W> {
        let mut slot = self.slot.try_lock().ok()?;
        if slot.pid != std::process::id() || slot.key.as_ref() != Some(key) {
            return None;
        }
        slot.free.pop()
    }

    /// Hand back a state built for `key`; states of another key are dropped.
    pub fn put(&self, key: K, w: W) {
        let Ok(mut slot) = self.slot.try_lock() else {
            return;
        };
        let pid = std::process::id();
        if slot.pid != pid || slot.key.as_ref() != Some(&key) {
            slot.free.clear();
            slot.pid = pid;
            slot.key = Some(key);
        }
        slot.free.push(w);
    }

    /// How many states are held (for tests).
    pub fn held(&self) -> usize {
        self.slot.try_lock().map_or(0, |s| s.free.len())
    }
}

/// The concrete linear solvers and scalings a worker's state can hold behind pounce-linsol's
/// trait objects (which carry no `Send` bound): every one is `Send` (owned data only, no `Rc`
/// or thread-bound state). Checked at compile time here; a worker whose state holds only
/// these may move between threads (see the `unsafe impl Send` of the two workers).
const _: () = {
    const fn send<T: Send>() {}
    send::<crate::dense_backend::DenseLbltBackend>();
    send::<pounce_feral::FeralSolverInterface>();
    send::<pounce_linsol::IdentityScalingMethod>();
    send::<pounce_linsol::SlackBasedTSymScalingMethod>();
    send::<pounce_linsol::RuizTSymScalingMethod>();
};
