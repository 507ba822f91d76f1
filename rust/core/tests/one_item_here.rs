//! A batch of one item (one chunk) runs on the calling thread, forward (batch.rs) and adjoint
//! (kkt_adjoint.rs), and starts no rayon pool (rayon's global pool included, which any
//! parallel iterator used off a pool thread would start): the binding runs such batches on
//! the caller's thread. Seen through the thread an injected item panic reports from, and
//! the process's thread count.
mod common;

use common::{one_row_lp, solve_lps};
use pounce_layers_core::batch::{ForwardWorkspaces, RunControl};
use pounce_layers_core::cancel::{Cancel, TestPanic};
use pounce_layers_core::kkt_adjoint::{adjoint_batch, AdjointInput, AdjointWorkspaces, KktPattern};
use pounce_layers_core::options::BackendOptions;
use pounce_layers_core::pool;
use std::sync::{Arc, Mutex};

/// Threads (by name) on which an injected item panic happened.
fn record_panicking_threads() -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map_or("", |s| s.as_str());
        if msg.starts_with("test panic in batch item") {
            let name = std::thread::current().name().unwrap_or("").to_string();
            log.lock().unwrap().push(name);
        }
        prev(info);
    }));
    seen
}

/// Threads of this process (Linux: /proc/self/task), `None` elsewhere.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

#[test]
fn one_item_runs_on_the_calling_thread() {
    let seen = record_panicking_threads();
    pool::threads(); // our pool, which the batches ask for its size
    let before = thread_count();
    // min x s.t. x >= -1 (row -x + s = 1): x = -1, y = 1.
    let st = one_row_lp();
    let (av, q, b) = ([-1.0], [1.0], [1.0]);
    let (fwd, adj) = (ForwardWorkspaces::new(), AdjointWorkspaces::new());
    let pat = KktPattern::new(&st);
    let caller = "one-item-caller";
    let (x, statuses, solved) = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(caller.into())
            .spawn_scoped(s, || {
                let ok = solve_lps(&st, 1e-9, (&av, &q, &b), &RunControl::default(), &fwd);
                let ctl = RunControl {
                    test_panic: TestPanic::Item(0),
                    ..Default::default()
                };
                let failed = solve_lps(&st, 1e-9, (&av, &q, &b), &ctl, &fwd);
                let (h_diag, ones) = ([1.0], [1.0]);
                let ainp = AdjointInput {
                    bsz: 1,
                    p: None,
                    a: &av,
                    h_diag: &h_diag,
                    h_blocks: &[],
                    x: &ok.xs,
                    y: &ok.ys,
                    gx: &ones,
                    gy: &ones,
                    gs: &ones,
                    ok: &[true],
                    kept: &[],
                };
                let (c, t) = (Cancel::default(), TestPanic::Item(0));
                let bo = BackendOptions::default();
                let g = adjoint_batch(&st, &pat, &bo, &ainp, &c, t, &adj);
                (ok.xs, [ok.outs[0].status, failed.outs[0].status], g.solved)
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert!((x[0] + 1.0).abs() < 1e-7, "x = {x:?}");
    assert_eq!(statuses, ["optimal", "numerical_failure"]);
    assert_eq!(solved, [false]);
    let _ = std::panic::take_hook();
    assert_eq!(*seen.lock().unwrap(), [caller, caller]);
    assert_eq!(thread_count(), before, "no thread outlives the calls");
}
