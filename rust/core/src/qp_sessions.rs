//! The QP class's active-set engine: one pounce-convex `ActiveSetSession` per batch item,
//! kept on the problem handle across its calls, so that item `i` of a call is warm-started
//! from item `i`'s working set of the previous call (a training step moves the parameters
//! little, and which constraints bind moves less).
//!
//! [`ItemState`] is what one item keeps: its session (built on the item's first active-set
//! solve), the active rows of its last answer (whatever engine gave it; the first thing a
//! warm call tries, kept_active_set.rs) and the item's values at its last solve, which the
//! `auto` engine rule compares with the new values ([`ItemState::moved_little`], options.rs
//! `QpEngine`).
//! [`SessionStore`] holds the states of a handle between calls, like `Workspaces`: it
//! never blocks (a busy lock, or one a `fork` left held in a child, means fresh states),
//! and a child process never reuses its parent's states (the pid is checked).
use crate::kept_active_set::{active_rows, solve_steps, KeptFactor, KEEP_FACTOR_MAX_DIM};
use crate::options::{BackendOptions, AUTO_ACTIVE_SET_REL};
use pounce_convex::{ActiveSetSession, ConeSpec, QpOptions, QpProblem, QpSolution, Reuse};
use pounce_feral::FeralConfig;
use pounce_linsol::SparseSymLinearSolverInterface;
use std::sync::Mutex;

/// One item's values: P (None without a P pattern), A, q, b.
pub type ItemValues<'a> = (Option<&'a [f64]>, &'a [f64], &'a [f64], &'a [f64]);

/// One batch item's active-set state.
#[derive(Default)]
pub struct ItemState {
    session: Option<ActiveSetSession>,
    /// Whether the session's last solve was accepted (a warm start for its next one).
    session_ready: bool,
    /// The active inequality rows of the item's last accepted answer.
    active: Option<Vec<usize>>,
    /// The factor of the last answer when the kept active set gave it (for the backward).
    factor: Option<KeptFactor>,
    /// The item's values (P, A, q, b, in that order) at its last solve; empty before one.
    last: Vec<f64>,
    /// Kept checks in a row that failed (at most [`KEPT_BACKOFF_MAX_EXP`]).
    kept_misses: u32,
    /// Calls left that skip the kept check of an item that moved far.
    kept_skip: u32,
}

/// After `k` failed kept checks in a row, an item that moved far skips the check for the
/// next `2^min(k, KEPT_BACKOFF_MAX_EXP)` calls, so an item whose active set keeps changing
/// pays for a check on at most about 1 call in 16.
pub const KEPT_BACKOFF_MAX_EXP: u32 = 4;

// SAFETY: an `ActiveSetSession` is not `Send` for two reasons. (1) It boxes its backend
// factory as `dyn FnMut` without a `Send` bound; the factory built here captures a
// `FeralConfig` and a flag (both `Send`, checked below) and builds backends that
// workspaces.rs checks are `Send`. (2) The previous problem it keeps (pounce-convex's
// `ActiveSetQp`) holds pounce-linalg triplet matrices whose shape ("space") is an `Rc`.
// Those `Rc`s are created by the session's own translation of each problem and cloned only
// into values that live inside one `solve` call (pounce-qp and pounce-convex keep no
// `Rc` in a static or a thread-local: theirs hold only scalars, `Cell<Option<Instant>>`
// deadlines and flags), so when `solve` has returned every clone is owned by the session
// itself, and moving the session moves all of them together. A state is used by one
// thread at a time (taken out of the store, one item each), so no two threads touch the
// reference counts at once.
unsafe impl Send for ItemState {}

const _: () = {
    const fn send<T: Send>() {}
    send::<FeralConfig>();
    send::<QpSolution>();
};

/// A session's solve, and whether it reused the previous call's working set or path.
pub struct ActiveSetOut {
    pub sol: QpSolution,
    pub warm: bool,
}

impl ItemState {
    /// The item's values in the order [`Self::remember`] keeps them.
    fn values<'a>(
        p: Option<&'a [f64]>,
        a: &'a [f64],
        q: &'a [f64],
        b: &'a [f64],
    ) -> impl Iterator<Item = f64> + 'a {
        p.unwrap_or(&[]).iter().chain(a).chain(q).chain(b).copied()
    }

    /// Keep the item's values of this solve (for the next call's [`Self::moved_little`])
    /// and the active rows of its accepted answer `sol` to `prob`.
    pub fn remember(&mut self, (p, a, q, b): ItemValues<'_>, prob: &QpProblem, sol: &QpSolution) {
        self.last.clear();
        self.last.extend(Self::values(p, a, q, b));
        self.active = Some(active_rows(prob, sol));
        self.factor = None;
    }

    /// Keep the factor of the last answer, given by the kept active set at the item's
    /// P and A values `p`, `a` (for the backward), when its dimension is at most
    /// [`KEEP_FACTOR_MAX_DIM`].
    pub fn keep_factor(&mut self, mut f: KeptFactor, p: Option<&[f64]>, a: &[f64]) {
        if f.dim() <= KEEP_FACTOR_MAX_DIM {
            f.set_values(p, a);
            self.factor = Some(f);
        }
    }

    /// The factor of the last answer, if the kept active set gave it.
    pub fn factor(&self) -> Option<&KeptFactor> {
        self.factor.as_ref()
    }

    /// The solution of `prob` from the active rows of the item's last answer (at most
    /// `max_solves` primal-dual active-set steps, kept_active_set.rs `solve_steps`, the
    /// first one the full restricted solve with `full_first`), when it is optimal within
    /// `tol`, with its factor; `None` without a last answer.
    pub fn solve_kept(
        &self,
        prob: &QpProblem,
        specs: &[ConeSpec],
        tol: f64,
        max_solves: usize,
        full_first: bool,
    ) -> Option<(QpSolution, KeptFactor)> {
        solve_steps(
            prob,
            specs,
            self.active.as_deref()?,
            tol,
            max_solves,
            full_first,
        )
    }

    /// Whether the kept check is due for an item that moved far (see
    /// [`KEPT_BACKOFF_MAX_EXP`]); counts the call down when it is not.
    pub fn kept_due(&mut self) -> bool {
        if self.kept_skip > 0 {
            self.kept_skip -= 1;
            false
        } else {
            true
        }
    }

    /// Record a kept check's outcome: a hit clears the back-off, a miss lengthens it.
    pub fn kept_outcome(&mut self, hit: bool) {
        if hit {
            self.kept_misses = 0;
        } else {
            self.kept_misses = (self.kept_misses + 1).min(KEPT_BACKOFF_MAX_EXP);
            self.kept_skip = 1 << self.kept_misses;
        }
    }

    /// Whether the item has a previous answer's active rows to try.
    pub fn has_active(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the session can start from an accepted solve of its own.
    pub fn session_ready(&self) -> bool {
        self.session_ready
    }

    /// Whether the item was solved before and its values moved by at most
    /// [`AUTO_ACTIVE_SET_REL`] of their largest magnitude since (infinity norms).
    pub fn moved_little(&self, p: Option<&[f64]>, a: &[f64], q: &[f64], b: &[f64]) -> bool {
        let len = p.map_or(0, <[f64]>::len) + a.len() + q.len() + b.len();
        if self.last.is_empty() || self.last.len() != len {
            return false;
        }
        let scale = self.last.iter().fold(0.0_f64, |s, v| s.max(v.abs()));
        let moved = Self::values(p, a, q, b)
            .zip(&self.last)
            .fold(0.0_f64, |s, (v, w)| s.max((v - w).abs()));
        moved <= AUTO_ACTIVE_SET_REL * scale
    }

    /// Solve `prob` with the item's session (built on first use, presolve off: the
    /// reduction would change shape between members of a family and make every solve
    /// cold), warm from its previous solve when pounce-convex finds it reusable.
    /// `make_backend` builds the engine's linear solvers.
    pub fn solve<F>(&mut self, prob: &QpProblem, opts: QpOptions, make_backend: F) -> ActiveSetOut
    where
        F: FnMut() -> Box<dyn SparseSymLinearSolverInterface> + 'static,
    {
        let session = self.session.get_or_insert_with(|| {
            ActiveSetSession::new(make_backend)
                .with_options(opts)
                .with_presolve(false)
        });
        session.set_options(opts);
        let sol = session.solve(prob);
        let warm = session.last_reuse().is_warm();
        self.session_ready = sol.status == pounce_convex::QpStatus::Optimal;
        ActiveSetOut { sol, warm }
    }

    /// Forget the item's previous answer: the session's solve, the active rows and the
    /// values (after a failed active-set solve, or values far from the last ones, so the
    /// next call does not start from them).
    pub fn forget(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.reset();
        }
        self.session_ready = false;
        self.active = None;
        self.factor = None;
        self.last.clear();
    }

    /// Where the session's last answer came from (for tests).
    pub fn last_reuse(&self) -> Option<Reuse> {
        self.session.as_ref().map(ActiveSetSession::last_reuse)
    }
}

struct Slot {
    pid: u32,
    key: Option<BackendOptions>,
    items: Vec<ItemState>,
}

/// The per-item states a problem handle keeps across its calls.
pub struct SessionStore {
    slot: Mutex<Slot>,
}

impl Default for SessionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionStore {
    pub fn new() -> Self {
        SessionStore {
            slot: Mutex::new(Slot {
                pid: std::process::id(),
                key: None,
                items: Vec::new(),
            }),
        }
    }

    /// The states of items `0..bsz` for a call with backends `key`: those an earlier call
    /// of this process left (its sessions built their backends with the same options),
    /// fresh ones for the rest. A concurrent call on the same handle gets fresh states.
    pub fn take(&self, key: &BackendOptions, bsz: usize) -> Vec<ItemState> {
        let mut items = match self.slot.try_lock() {
            Ok(mut slot) if slot.pid == std::process::id() && slot.key.as_ref() == Some(key) => {
                std::mem::take(&mut slot.items)
            }
            _ => Vec::new(),
        };
        items.resize_with(bsz, ItemState::default);
        items
    }

    /// Hand back the states of a call with backends `key` (replacing any held).
    pub fn put(&self, key: BackendOptions, items: Vec<ItemState>) {
        let Ok(mut slot) = self.slot.try_lock() else {
            return;
        };
        slot.pid = std::process::id();
        slot.key = Some(key);
        slot.items = items;
    }

    /// `f` of the states held (read-only, e.g. the backward reading their factors), or of
    /// none when another call holds them or they are a parent process's.
    pub fn peek<R>(&self, f: impl FnOnce(&[ItemState]) -> R) -> R {
        match self.slot.try_lock() {
            Ok(slot) if slot.pid == std::process::id() => f(&slot.items),
            _ => f(&[]),
        }
    }

    /// How many items have a session (for tests).
    pub fn sessions(&self) -> usize {
        self.slot.try_lock().map_or(0, |s| {
            s.items.iter().filter(|i| i.session.is_some()).count()
        })
    }
}
