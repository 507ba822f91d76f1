"""The `solver_args` POUNCE understands, and what it does with diffcp's and SCS's.

Options are merged in this order (later wins): `PounceSolver(**options)` (for the string
`solver="pounce"` these are the layer's `solver_args=`), then the per-call
`layer(..., solver_args=...)`.

Our options:

| key             | default | meaning                                                     |
|-----------------|---------|-------------------------------------------------------------|
| `tol`           | core's  | interior-point stopping tolerance                           |
| `tol_cap`       | core's  | upper bound on the tol chosen per problem class (where the  |
|                 |         | foreign tolerances below go)                                |
| `max_iter`      | core's  | interior-point iteration limit                              |
| `time_limit`    | core's  | wall-clock limit of the whole batch call, seconds (None: no |
|                 |         | limit); items not started by then end "time_limit"          |
| `backward`      | core's  | KKT adjoint: "auto", "dense" (Torch) or "sparse" (native)   |
| `dense_max_dim` | core's  | "auto" takes the dense adjoint up to n + m = this           |
| `on_failure`    | core's  | "raise": SolverError naming the batch index and status;     |
|                 |         | "nan": that item's outputs are NaN, its gradient zero       |
| `on_inaccurate` | core's  | an item solved only to "optimal_inaccurate": "warn" names   |
|                 |         | the items and residuals, "raise" makes it a SolverError,    |
|                 |         | "ignore"; per-item statuses: `last_solve_info(layer)`       |
| `refine`        | core's  | Newton refinement of each solved item (True); False keeps   |
|                 |         | the interior-point point as returned                        |
| `engine`        | core's  | forward engine: "auto", "ipm" or "active_set"; QP: active-  |
|                 |         | set steps from each item's previous active rows (from none  |
|                 |         | on a first call), POUNCE's active set warm from its         |
|                 |         | previous solve, the IPM where they fail; SOC, PSD,          |
|                 |         | exp, power: each item's previous answer refined by Newton   |
|                 |         | (pounce_kkt/kept_newton.py); "ipm": always the IPM          |
| `warm_start`    | False   | True: start each solve from this thread's previous solution |
|                 |         | of the same batch size (CPU); "auto": only when every item's|
|                 |         | canonical data moved by at most WARM_AUTO_REL (1e-2) of its |
|                 |         | size since then (a training step on the same items), else   |
|                 |         | cold. Off by default: a warm-started solve ends elsewhere   |
|                 |         | within tol, so outputs would depend on the previous call.   |
|                 |         | cvxpylayers 1.2 accepts `layer(warm_start=...)` only for    |
|                 |         | MOREAU, so this is the switch for POUNCE                    |
|                 |         | (benchmarks/warm_start_training.py)                         |

"core's" defaults are those of `pounce_kkt.SolveOptions`, the one source of truth; as read
from it when this module was imported: {core_defaults} (tol=None: chosen per problem
from its cones, see `SolveOptions`).
A failure raises `pounce_cvxpy.LayerSolverError`, which is both a `pounce_kkt.SolverError`
and a `diffcp.SolverError`.

Arguments written for diffcp / SCS (and for the Clarabel and ECOS back ends diffcp passes
its keywords to), accepted so existing code runs unchanged. The first time a key is seen in
a process, a warning says what happened to it:

| key                                   | what POUNCE does                                     |
|---------------------------------------|------------------------------------------------------|
| `eps`, `eps_abs`, `eps_rel` (SCS),    | translated: `tol_cap` = the smallest of them, an     |
| `tol_gap_abs`, `tol_gap_rel`,         | upper bound on the tol chosen per problem class: a   |
| `tol_feas`, `tol_ktratio` (Clarabel), | tighter value tightens the solve, a looser one (SCS's|
| `feastol`, `abstol`, `reltol` (ECOS)  | 1e-4..1e-5 are first-order settings) changes nothing,|
|                                       | so gradients keep their accuracy; an explicit `tol`  |
|                                       | wins over all of them                                |
| `time_limit_secs`                     | translated: `time_limit = time_limit_secs`           |
| `raise_on_error`                      | translated: False gives `on_failure = "nan"`         |
| `max_iters`                           | ignored: counts ADMM iterations (thousands), not     |
|                                       | interior-point ones; use `max_iter`                  |
| `tol_infeas_abs`, `tol_infeas_rel`,   | ignored: infeasibility-detection and "inaccurate"    |
| `feastol_inacc`, `abstol_inacc`,      | thresholds of Clarabel and ECOS                      |
| `reltol_inacc`                        |                                                      |
| `mode`                                | ignored: the backward is the KKT adjoint (`backward`)|
| `solve_method`                        | ignored: the forward is always POUNCE's IPM          |
| `n_jobs_forward`, `n_jobs_backward`   | ignored: the batch runs on one native thread pool    |
| `acceleration_lookback`,              | ignored: ADMM (SCS) settings with no IPM meaning     |
| `acceleration_interval`, `alpha`,     |                                                      |
| `scale`, `adaptive_scale`, `rho_x`,   |                                                      |
| `normalize`, `use_indirect`,          |                                                      |
| `linear_solver`, `warm_starts`        |                                                      |
| `verbose`, `write_data_filename`,     | ignored: POUNCE's batch solve prints nothing         |
| `log_csv_filename`                    |                                                      |
| `use_quad_obj`                        | ignored at solve time (a cvxpy canonicalisation key) |

Any other key raises `ValueError` naming it, so a typo never passes silently. All the
translated and ignored keys of one call share ONE warning (each key is reported the first
time it is seen in a process), attributed to the user's line, past our frames and those of
cvxpylayers, diffcp, cvxpy and torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pounce_kkt import SolveOptions
from pounce_kkt.user_warnings import warn_user

_ADMM_ONLY = (
    "acceleration_lookback",
    "acceleration_interval",
    "alpha",
    "scale",
    "adaptive_scale",
    "rho_x",
    "normalize",
    "use_indirect",
    "linear_solver",
    "warm_starts",
)

# Why each foreign key is ignored; the warning quotes it.
_IGNORED: dict[str, str] = {
    "max_iters": "it counts ADMM iterations, not interior-point ones; use max_iter",
    "mode": "the backward is the KKT adjoint; choose it with backward='auto'|'dense'|'sparse'",
    "solve_method": "the forward is POUNCE's (choose its QP engine with engine=)",
    "n_jobs_forward": "the batch runs on one native thread pool",
    "n_jobs_backward": "the batch runs on one native thread pool",
    "verbose": "POUNCE's batch solve prints nothing",
    "write_data_filename": "POUNCE's batch solve writes no files",
    "log_csv_filename": "POUNCE's batch solve writes no files",
    "use_quad_obj": "it is a cvxpy canonicalisation key, used when the layer was built",
    **{k: "it is an infeasibility-detection or 'inaccurate' threshold of Clarabel or ECOS"
       for k in ("tol_infeas_abs", "tol_infeas_rel", "feastol_inacc", "abstol_inacc",
                 "reltol_inacc")},
    **{k: "it is an ADMM (SCS) setting with no interior-point meaning" for k in _ADMM_ONLY},
}

# A foreign solver's stopping tolerances: each becomes an upper bound on our tol (tol_cap).
_TOLERANCES = ("eps", "eps_abs", "eps_rel", "tol_gap_abs", "tol_gap_rel", "tol_feas",
               "tol_ktratio", "feastol", "abstol", "reltol")
_TRANSLATED = (*_TOLERANCES, "time_limit_secs", "raise_on_error")
_OURS = ("tol", "tol_cap", "max_iter", "time_limit", "backward", "dense_max_dim", "on_failure",
         "on_inaccurate", "refine", "warm_start", "engine")

_warned: set[str] = set()

# The defaults quoted in the module docstring come from SolveOptions itself, never restated.
__doc__ = __doc__.replace("{core_defaults}", ", ".join(
    f"{f.name}={f.default!r}" for f in fields(SolveOptions)))


def _warn_new(notes: dict[str, str]) -> None:
    """One warning for the keys of `notes` not reported before in this process."""
    new = {k: v for k, v in notes.items() if k not in _warned}
    if not new:
        return
    _warned.update(new)
    by_note: dict[str, list[str]] = {}
    for key, note in new.items():
        by_note.setdefault(note, []).append(repr(key))
    warn_user("pounce: options written for another solver: "
              + "; ".join(f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} {note}"
                          for note, keys in by_note.items())
              + " (see pounce_cvxpy/solver_args.py)")


@dataclass(frozen=True)
class PounceArgs:
    """Resolved options of one solve: overrides of the core's `SolveOptions`, and warm_start."""

    core: Mapping[str, Any] = field(default_factory=dict)
    warm_start: bool | str = False

    def solve_options(self) -> SolveOptions:
        """The core's options for this solve (its defaults where not overridden); built on
        the first call and kept (both are frozen), so a layer's calls without per-call
        solver_args reuse one."""
        options = self.__dict__.get("_options")
        if options is None:
            options = SolveOptions(**self.core)
            object.__setattr__(self, "_options", options)
        return options

    @property
    def on_failure(self) -> str:
        """"raise" or "nan", as the core will apply it."""
        return self.solve_options().on_failure


def resolve(base: PounceArgs, solver_args: Mapping[str, Any] | None) -> PounceArgs:
    """Return `base` updated by `solver_args` (ours, translated and ignored keys, see module doc).

    Raises `ValueError` naming a key that is unknown or has an invalid value (the values
    of ours are checked by the core's `SolveOptions`).
    """
    if not solver_args:
        return base
    core: dict[str, Any] = dict(base.core)
    warm_start = base.warm_start
    notes: dict[str, str] = {}
    for key, value in solver_args.items():
        if key in _IGNORED:
            notes[key] = f"ignored: {_IGNORED[key]}"
        elif key in _TOLERANCES:
            notes[key] = ("translated to an upper bound on POUNCE's tol (tol_cap): a "
                          "tighter value tightens the solve, a looser one changes nothing")
        elif key == "time_limit_secs":
            notes[key] = "translated to POUNCE's time_limit (seconds)"
            core["time_limit"] = float(value)
        elif key == "raise_on_error":
            notes[key] = "translated to POUNCE's on_failure ('raise' or 'nan')"
            core["on_failure"] = "raise" if value else "nan"
        elif key == "warm_start":
            if value != "auto" and not isinstance(value, (bool, int)):
                raise ValueError(f"invalid solver_args for POUNCE: warm_start must be True, "
                                 f"False or 'auto'; got {value!r}")
            warm_start = value if value == "auto" else bool(value)
        elif key in _OURS:
            core[key] = value
        else:
            known = sorted((*_OURS, *_TRANSLATED, *_IGNORED))
            raise ValueError(f"unknown solver_args key {key!r} for POUNCE; known keys: {known}")
    _warn_new(notes)
    eps = [float(v) for k, v in solver_args.items() if k in _TOLERANCES and v is not None]
    if eps:
        core["tol_cap"] = min(eps)
    args = PounceArgs(core=core, warm_start=warm_start)
    try:
        args.solve_options()
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid solver_args for POUNCE: {err}") from err
    return args
