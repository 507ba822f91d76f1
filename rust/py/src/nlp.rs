//! The NLP interior-point solve used by the Theseus adapter (`pounce_theseus`).
//!
//! `NlpProblem` (the handle of one NLP layout) and `nlp_solve` (one call) in
//! `nlp/tnlp_bridge.rs` implement POUNCE's `TNLP` trait over a Python object. The trait lives in `pounce-nlp` and the restoration phase in
//! `pounce-restoration`; pounce-algorithm 0.14.0 re-exports neither (`use pounce_nlp::TNLP`
//! fails with E0433 when only pounce-algorithm is a dependency), so the bridge is compiled
//! with the crate's `nlp` feature (on by default), which makes them direct dependencies.
//! `HAVE_NLP` tells Python which build it is talking to.
use pyo3::prelude::*;

#[cfg(feature = "nlp")]
#[path = "nlp/tnlp_bridge.rs"]
mod tnlp_bridge;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(feature = "nlp")]
    m.add_function(wrap_pyfunction!(tnlp_bridge::nlp_solve, m)?)?;
    #[cfg(feature = "nlp")]
    m.add_class::<tnlp_bridge::NlpProblem>()?;
    m.add("HAVE_NLP", cfg!(feature = "nlp"))?;
    Ok(())
}
