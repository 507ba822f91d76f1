//! The rayon thread pool every batched entry point runs on, rebuilt after `fork`.
//!
//! rayon's global pool does not survive `fork`: the child inherits the registry (its job
//! queues, sleep counters and the parent's "threads are running" state) but none of its
//! threads, so the first parallel call in the child waits forever for workers that do not
//! exist. Forked children are everyday PyTorch: `torch.multiprocessing` / `multiprocessing`
//! fork pools and fork-based `DataLoader` workers.
//!
//! So the native core never touches the global pool. [`pool`] hands out a pool of our own,
//! tagged with the id of the process that built it; a process whose id differs (a forked
//! child) builds a fresh one on first use. The inherited pool is leaked, never dropped:
//! dropping a rayon pool signals its (absent) workers through the inherited registry, and
//! memory from before the fork is all there is to lose. The current pool is published
//! through an atomic pointer rather than behind a `Mutex`, so no lock can be held by a
//! thread that a fork left behind. Published pools are never freed, so a reference handed
//! out stays valid for the life of the process.
//!
//! The pool is created once per process (the threads live as long as the process), so no
//! OS thread is created per solve. Its size follows rayon's rules (`RAYON_NUM_THREADS`,
//! else the number of CPUs).
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::atomic::{AtomicPtr, Ordering};

struct Tagged {
    pid: u32,
    pool: ThreadPool,
}

static CURRENT: AtomicPtr<Tagged> = AtomicPtr::new(std::ptr::null_mut());

/// The pool of this process (built on first use, and again in a forked child).
pub fn pool() -> &'static ThreadPool {
    let pid = std::process::id();
    let cur = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in CURRENT came from `Box::into_raw` below and is never
    // freed once published.
    if let Some(t) = unsafe { cur.as_ref() } {
        if t.pid == pid {
            return &t.pool;
        }
    }
    let fresh = Box::into_raw(Box::new(Tagged { pid, pool: build() }));
    match CURRENT.compare_exchange(cur, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // The previous pool (null, or the parent's before a fork) is leaked on purpose.
        // SAFETY: `fresh` is now published and never freed.
        Ok(_) => unsafe { &(*fresh).pool },
        Err(winner) => {
            // Another thread of this process published a pool first: use that one. Ours
            // was never shared, so dropping it (which only asks its threads to exit) is
            // safe.
            // SAFETY: `fresh` came from Box::into_raw above and was never published.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as above, `winner` is published and never freed; it was built by
            // this process, since a pool from before a fork is replaced only by us.
            let w = unsafe { &*winner };
            if w.pid == pid {
                &w.pool
            } else {
                pool()
            }
        }
    }
}

fn build() -> ThreadPool {
    ThreadPoolBuilder::new()
        .thread_name(|i| format!("pounce-layers-{i}"))
        .build()
        .unwrap_or_else(|e| panic!("could not start the native solver's thread pool: {e}"))
}

/// Threads of the current pool.
pub fn threads() -> usize {
    pool().current_num_threads().max(1)
}
