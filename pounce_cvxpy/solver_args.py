"""The `solver_args` POUNCE understands, and what it does with diffcp's and SCS's.

Options are merged in this order (later wins): `PounceSolver(**options)` (for the string
`solver="pounce"` these are the layer's `solver_args=`), then the per-call
`layer(..., solver_args=...)`.

Our options:

| key             | default | meaning                                                     |
|-----------------|---------|-------------------------------------------------------------|
| `tol`           | core's  | interior-point stopping tolerance                           |
| `max_iter`      | core's  | interior-point iteration limit                              |
| `time_limit`    | core's  | wall-clock limit per problem, seconds (None: no limit)      |
| `backward`      | core's  | KKT adjoint: "auto", "dense" (Torch) or "sparse" (native)   |
| `dense_max_dim` | core's  | "auto" takes the dense adjoint up to n + m = this           |
| `on_failure`    | core's  | "raise": SolverError naming the batch index and status;     |
|                 |         | "nan": that item's outputs are NaN, its gradient zero       |
| `warm_start`    | False   | start each solve from the previous call's solution (same    |
|                 |         | batch size); cvxpylayers 1.2 accepts `layer(warm_start=...)`|
|                 |         | only for MOREAU, so this is the switch for POUNCE           |

"core's" defaults are those of `pounce_kkt.SolveOptions`, the one source of truth; as read
from it when this module was imported: {core_defaults} (tol=None: chosen per problem
from its cones, see `SolveOptions`).
A failure raises `pounce_cvxpy.LayerSolverError`, which is both a `pounce_kkt.SolverError`
and a `diffcp.SolverError`.

Arguments written for diffcp / SCS, accepted so existing code runs unchanged. Each one
gives a warning the first time it is seen in a process, saying what happened to it:

| key                                   | what POUNCE does                                     |
|---------------------------------------|------------------------------------------------------|
| `eps`                                 | translated: `tol = eps`                              |
| `eps_abs`, `eps_rel`                  | translated: `tol = min(eps_abs, eps_rel)`            |
| `time_limit_secs`                     | translated: `time_limit = time_limit_secs`           |
| `raise_on_error`                      | translated: False gives `on_failure = "nan"`         |
| `max_iters`                           | ignored: counts ADMM iterations (thousands), not     |
|                                       | interior-point ones; use `max_iter`                  |
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

Any other key raises `ValueError` naming it, so a typo never passes silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pounce_kkt import SolveOptions

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
    "solve_method": "the forward is always POUNCE's interior-point method",
    "n_jobs_forward": "the batch runs on one native thread pool",
    "n_jobs_backward": "the batch runs on one native thread pool",
    "verbose": "POUNCE's batch solve prints nothing",
    "write_data_filename": "POUNCE's batch solve writes no files",
    "log_csv_filename": "POUNCE's batch solve writes no files",
    "use_quad_obj": "it is a cvxpy canonicalisation key, used when the layer was built",
    **{k: "it is an ADMM (SCS) setting with no interior-point meaning" for k in _ADMM_ONLY},
}

_TRANSLATED = ("eps", "eps_abs", "eps_rel", "time_limit_secs", "raise_on_error")
_OURS = ("tol", "max_iter", "time_limit", "backward", "dense_max_dim", "on_failure", "warm_start")

_warned: set[str] = set()

# The defaults quoted in the module docstring come from SolveOptions itself, never restated.
__doc__ = __doc__.replace("{core_defaults}", ", ".join(
    f"{f.name}={f.default!r}" for f in fields(SolveOptions)))


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"pounce: solver_args[{key!r}] {message}", UserWarning, stacklevel=4)


@dataclass(frozen=True)
class PounceArgs:
    """Resolved options of one solve: overrides of the core's `SolveOptions`, and warm_start."""

    core: Mapping[str, Any] = field(default_factory=dict)
    warm_start: bool = False

    def solve_options(self) -> SolveOptions:
        """The core's options for this solve (its defaults where not overridden)."""
        return SolveOptions(**self.core)

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
    for key, value in solver_args.items():
        if key in _IGNORED:
            _warn_once(key, f"is ignored: {_IGNORED[key]}.")
        elif key in ("eps", "eps_abs", "eps_rel"):
            _warn_once(key, "is translated to POUNCE's tol (tol = min of eps, eps_abs, eps_rel).")
        elif key == "time_limit_secs":
            _warn_once(key, "is translated to POUNCE's time_limit (seconds).")
            core["time_limit"] = float(value)
        elif key == "raise_on_error":
            _warn_once(key, "is translated to POUNCE's on_failure ('raise' or 'nan').")
            core["on_failure"] = "raise" if value else "nan"
        elif key == "warm_start":
            warm_start = bool(value)
        elif key in _OURS:
            core[key] = value
        else:
            known = sorted((*_OURS, *_TRANSLATED, *_IGNORED))
            raise ValueError(f"unknown solver_args key {key!r} for POUNCE; known keys: {known}")
    eps = [float(solver_args[k]) for k in ("eps", "eps_abs", "eps_rel") if k in solver_args]
    if eps and "tol" not in solver_args:
        core["tol"] = min(eps)
    args = PounceArgs(core=core, warm_start=warm_start)
    try:
        args.solve_options()
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid solver_args for POUNCE: {err}") from err
    return args
