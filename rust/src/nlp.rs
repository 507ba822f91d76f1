//! The NLP interior-point solve used by the Theseus adapter (`pounce_theseus`).
//!
//! `nlp_solve` (in `nlp/tnlp_bridge.rs`) implements POUNCE's `TNLP` trait over a Python
//! object. The trait lives in `pounce-nlp` and the restoration phase in
//! `pounce-restoration`; pounce-algorithm 0.14.0 re-exports neither (`use pounce_nlp::TNLP`
//! fails with E0433 when only pounce-algorithm is a dependency), so the bridge is compiled
//! only when the crate's `nlp` feature brings those two crates in as direct dependencies.
//! `HAVE_NLP` tells Python which build it is talking to.
// The `nlp` feature is declared by the manifest that enables the bridge; without it the
// cfg is unknown to rustc's check-cfg, which is expected here.
#![allow(unexpected_cfgs)]
use pyo3::prelude::*;

#[cfg(feature = "nlp")]
#[path = "nlp/tnlp_bridge.rs"]
mod tnlp_bridge;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(feature = "nlp")]
    m.add_function(wrap_pyfunction!(tnlp_bridge::nlp_solve, m)?)?;
    m.add("HAVE_NLP", cfg!(feature = "nlp"))?;
    Ok(())
}
