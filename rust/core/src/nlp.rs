//! The pure part of the NLP bridge: POUNCE's NLP interior-point method (pounce-algorithm,
//! Ipopt's TNLP interface) configured from a list of options, with the restoration phase
//! wired in and an inner-serial feral backend, and the Ipopt-style status names. The
//! binding (rust/py/src/nlp/tnlp_bridge.rs) implements the TNLP over Python callbacks.
use pounce_algorithm::application::{
    default_backend_factory, feral_config_from_options, ma57_config_from_options,
};
use pounce_algorithm::batch::install_serial_feral_backend;
use pounce_algorithm::IpoptApplication;
use pounce_nlp::return_codes::ApplicationReturnStatus;
use pounce_nlp::tnlp::TNLP;
use pounce_restoration::resto_alg_builder::RestoAlgorithmBuilder;
use pounce_restoration::resto_inner_solver::{
    make_default_restoration_factory_provider, InnerBackendFactoryFactory,
};
use std::cell::RefCell;
use std::rc::Rc;

/// The current iterate inside an intermediate callback (for the TNLP's iteration hook).
pub use pounce_algorithm::intermediate::with_current_user_iterate;

/// Ipopt-style name of an application status (what the Python side maps to Theseus).
pub fn status_name(s: ApplicationReturnStatus) -> &'static str {
    use ApplicationReturnStatus as S;
    match s {
        S::SolveSucceeded => "solve_succeeded",
        S::SolvedToAcceptableLevel => "solved_to_acceptable_level",
        S::InfeasibleProblemDetected => "infeasible_problem_detected",
        S::SearchDirectionBecomesTooSmall => "search_direction_becomes_too_small",
        S::DivergingIterates => "diverging_iterates",
        S::UserRequestedStop => "user_requested_stop",
        S::FeasiblePointFound => "feasible_point_found",
        S::MaximumIterationsExceeded => "maximum_iterations_exceeded",
        S::RestorationFailed => "restoration_failed",
        S::ErrorInStepComputation => "error_in_step_computation",
        S::MaximumCpuTimeExceeded => "maximum_cpu_time_exceeded",
        S::MaximumWallTimeExceeded => "maximum_wall_time_exceeded",
        S::NotEnoughDegreesOfFreedom => "not_enough_degrees_of_freedom",
        S::InvalidProblemDefinition => "invalid_problem_definition",
        S::InvalidOption => "invalid_option",
        S::InvalidNumberDetected => "invalid_number_detected",
        S::UnrecoverableException => "unrecoverable_exception",
        S::NonIpoptExceptionThrown => "non_ipopt_exception_thrown",
        S::InsufficientMemory => "insufficient_memory",
        S::InternalError => "internal_error",
    }
}

/// A solver option value as passed from Python.
#[derive(Debug, Clone, PartialEq)]
pub enum OptValue {
    Str(String),
    Int(i32),
    Num(f64),
}

/// Set `options` on `app` and wire the restoration phase and the serial feral backend;
/// `Err` names the option POUNCE rejected.
pub fn configure(app: &mut IpoptApplication, options: &[(String, OptValue)]) -> Result<(), String> {
    for (k, v) in options {
        let r = match v {
            OptValue::Str(s) => app.options_mut().set_string_value(k, s, true, false),
            OptValue::Int(i) => app.options_mut().set_integer_value(k, *i, true, false),
            OptValue::Num(x) => app.options_mut().set_numeric_value(k, *x, true, false),
        };
        match r {
            Ok(true) => {}
            Ok(false) => return Err(format!("option {k} was rejected")),
            Err(e) => return Err(format!("option {k}: {e}")),
        }
    }
    app.initialize().map_err(|e| format!("initialize: {e}"))?;
    install_serial_feral_backend(app);
    // Restoration phase (and the linear solvers of its inner solves).
    let mut feral_cfg = feral_config_from_options(app.options());
    feral_cfg.parallel = Some(false);
    let opts = app.options().clone();
    let bff_mint = move || -> InnerBackendFactoryFactory {
        let feral_cfg = feral_cfg.clone();
        let opts = opts.clone();
        Box::new(move || {
            default_backend_factory(feral_cfg.clone(), ma57_config_from_options(&opts, ""))
        })
    };
    let provider = make_default_restoration_factory_provider(
        RestoAlgorithmBuilder::new(),
        app.algorithm_builder_from_options(),
        bff_mint,
    );
    app.set_restoration_factory_provider(provider);
    Ok(())
}

/// Solver options in the order they are set, with the key that identifies an application
/// configured with them.
#[derive(Debug, Clone, PartialEq)]
pub struct NlpOptions {
    list: Vec<(String, OptValue)>,
    key: String,
}

impl NlpOptions {
    pub fn new(list: Vec<(String, OptValue)>) -> Self {
        let key = format!("{list:?}");
        NlpOptions { list, key }
    }

    pub fn list(&self) -> &[(String, OptValue)] {
        &self.list
    }

    /// These options with `overrides` applied: an override of a name already set replaces
    /// its value in place, a new name is appended.
    pub fn with_overrides(&self, overrides: &[(String, OptValue)]) -> Self {
        if overrides.is_empty() {
            return self.clone();
        }
        let mut list = self.list.clone();
        for (k, v) in overrides {
            match list.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => list.push((k.clone(), v.clone())),
            }
        }
        Self::new(list)
    }
}

thread_local! {
    /// The last configured application of this thread with the key of the options it was
    /// configured with. pounce-algorithm supports solving again on one application (each
    /// solve resets its own state), and building one (registering every option, wiring the
    /// restoration phase) costs about 0.5 ms, a tenth of a small batch's whole solve.
    static APP_CACHE: RefCell<Option<(String, IpoptApplication)>> = const { RefCell::new(None) };
}

/// This thread's application for `options`: the cached one when its options were the same,
/// else a new one configured with them. Taken out of the cache while in use, so a solve
/// started from inside a callback builds its own.
fn take_app(options: &NlpOptions) -> Result<IpoptApplication, String> {
    match APP_CACHE.with(|c| c.borrow_mut().take()) {
        Some((k, app)) if k == options.key => Ok(app),
        _ => {
            let mut app = IpoptApplication::new();
            configure(&mut app, &options.list)?;
            Ok(app)
        }
    }
}

fn put_app(options: &NlpOptions, app: IpoptApplication) {
    APP_CACHE.with(|c| *c.borrow_mut() = Some((options.key.clone(), app)));
}

/// Check that POUNCE takes `options` (`Err` names the option it rejected), leaving this
/// thread's application configured with them for the next solve.
pub fn prepare(options: &NlpOptions) -> Result<(), String> {
    let app = take_app(options)?;
    put_app(options, app);
    Ok(())
}

/// What one solve reports besides what the TNLP itself recorded.
pub struct NlpRun {
    pub status: ApplicationReturnStatus,
    pub iterations: i32,
    pub kkt_error: f64,
    /// The option POUNCE rejected (the solve did not run).
    pub option_error: Option<String>,
}

/// Solve `tnlp` with an application configured with `options`, reusing this thread's last
/// application when its options were the same.
pub fn solve_tnlp(tnlp: Rc<RefCell<dyn TNLP>>, options: &NlpOptions) -> NlpRun {
    let mut app = match take_app(options) {
        Ok(app) => app,
        Err(msg) => {
            return NlpRun {
                status: ApplicationReturnStatus::InvalidOption,
                iterations: 0,
                kkt_error: f64::NAN,
                option_error: Some(msg),
            }
        }
    };
    let status = app.optimize_tnlp(tnlp);
    let stats = app.statistics();
    put_app(options, app);
    NlpRun {
        status,
        iterations: stats.iteration_count,
        kkt_error: stats.final_kkt_error,
        option_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_accepts_known_options_and_names_a_rejected_one() {
        let mut app = IpoptApplication::new();
        let ok = [
            ("tol".to_string(), OptValue::Num(1e-9)),
            ("max_iter".to_string(), OptValue::Int(50)),
            ("print_level".to_string(), OptValue::Int(0)),
        ];
        assert_eq!(configure(&mut app, &ok), Ok(()));
        let mut app = IpoptApplication::new();
        let bad = [("no_such_option".to_string(), OptValue::Int(1))];
        let err = configure(&mut app, &bad).unwrap_err();
        assert!(err.contains("no_such_option"), "{err}");
    }

    #[test]
    fn overrides_replace_in_place_and_append() {
        let base = NlpOptions::new(vec![
            ("tol".to_string(), OptValue::Num(1e-8)),
            ("max_iter".to_string(), OptValue::Int(50)),
        ]);
        assert_eq!(base.with_overrides(&[]), base);
        let o = base.with_overrides(&[
            ("max_iter".to_string(), OptValue::Int(7)),
            ("print_level".to_string(), OptValue::Int(0)),
        ]);
        assert_eq!(
            o.list(),
            &[
                ("tol".to_string(), OptValue::Num(1e-8)),
                ("max_iter".to_string(), OptValue::Int(7)),
                ("print_level".to_string(), OptValue::Int(0)),
            ]
        );
        assert_ne!(o, base);
        assert_eq!(o, NlpOptions::new(o.list().to_vec()));
    }

    #[test]
    fn prepare_names_a_rejected_option_and_accepts_known_ones() {
        let ok = NlpOptions::new(vec![("print_level".to_string(), OptValue::Int(0))]);
        assert_eq!(prepare(&ok), Ok(()));
        // Again on this thread: the cached application.
        assert_eq!(prepare(&ok), Ok(()));
        let bad = NlpOptions::new(vec![("tol".to_string(), OptValue::Str("x".into()))]);
        let err = prepare(&bad).unwrap_err();
        assert!(err.contains("tol"), "{err}");
    }

    #[test]
    fn status_names_are_ipopt_style() {
        assert_eq!(
            status_name(ApplicationReturnStatus::SolveSucceeded),
            "solve_succeeded"
        );
        assert_eq!(
            status_name(ApplicationReturnStatus::MaximumIterationsExceeded),
            "maximum_iterations_exceeded"
        );
    }
}
