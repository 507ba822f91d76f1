"""pounce_cvxpy.solver_args: ours, the translated diffcp/SCS keys, the ignored ones."""

from __future__ import annotations

import warnings

import pytest

from pounce_cvxpy import solver_args as sa
from pounce_cvxpy.solver_args import PounceArgs, resolve


@pytest.fixture(autouse=True)
def _fresh_warnings():
    sa._warned.clear()
    yield
    sa._warned.clear()


def test_ours_pass_through_to_solve_options():
    args = resolve(PounceArgs(), {"tol": 1e-7, "max_iter": 31, "time_limit": 2.5,
                                  "backward": "dense", "on_failure": "nan", "warm_start": True,
                                  "refine": False})
    opts = args.solve_options()
    assert (opts.tol, opts.max_iter, opts.time_limit) == (1e-7, 31, 2.5)
    assert (opts.backward, opts.on_failure, args.warm_start) == ("dense", "nan", True)
    assert opts.refine is False and resolve(PounceArgs(), {}).solve_options().refine is True


def test_later_arguments_override_earlier_ones():
    base = resolve(PounceArgs(), {"tol": 1e-6, "on_failure": "nan"})
    args = resolve(base, {"tol": 1e-8})
    assert args.solve_options().tol == 1e-8
    assert args.on_failure == "nan"


@pytest.mark.parametrize(
    "given, field, expected",
    [
        ({"eps": 1e-7}, "tol_cap", 1e-7),
        ({"eps_abs": 1e-6, "eps_rel": 1e-8}, "tol_cap", 1e-8),
        ({"tol_gap_abs": 1e-13, "tol_feas": 1e-12}, "tol_cap", 1e-13),
        ({"feastol": 1e-10}, "tol_cap", 1e-10),
        ({"time_limit_secs": 3.0}, "time_limit", 3.0),
        ({"raise_on_error": False}, "on_failure", "nan"),
        ({"raise_on_error": True}, "on_failure", "raise"),
    ],
)
def test_translated_keys(given, field, expected):
    with pytest.warns(UserWarning, match="translated"):
        args = resolve(PounceArgs(), given)
    assert getattr(args.solve_options(), field) == expected


def test_explicit_tol_wins_over_eps():
    with pytest.warns(UserWarning, match="translated"):
        args = resolve(PounceArgs(), {"eps": 1e-3, "tol": 1e-9})
    assert args.solve_options().tol == 1e-9


@pytest.mark.parametrize("key", sorted(sa._IGNORED))
def test_ignored_keys_warn_once_and_change_nothing(key):
    with pytest.warns(UserWarning, match=f"'{key}'.*ignored"):
        args = resolve(PounceArgs(), {key: 1})
    assert args == PounceArgs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve(PounceArgs(), {key: 2})  # second time: silent


def test_every_table_key_is_in_the_module_docstring():
    for key in (*sa._IGNORED, *sa._TRANSLATED, *sa._OURS):
        assert f"`{key}`" in sa.__doc__, key


@pytest.mark.parametrize(
    "given, match",
    [
        ({"tolerance": 1e-6}, "unknown solver_args key 'tolerance'"),
        ({"tol": -1.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"backward": "lsqr"}, "backward"),
        ({"on_failure": "ignore"}, "on_failure"),
    ],
)
def test_bad_arguments_raise_naming_the_key(given, match):
    with pytest.raises(ValueError, match=match):
        resolve(PounceArgs(), given)


def test_docstring_quotes_the_core_defaults():
    """The table's "core's" defaults are read from SolveOptions, not restated by hand."""
    import dataclasses

    from pounce_kkt import SolveOptions

    for f in dataclasses.fields(SolveOptions):
        assert f"{f.name}={f.default!r}" in sa.__doc__, f.name


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 1e-9, 1e-12])
def test_a_foreign_eps_never_loosens_the_per_class_tol(eps):
    """SCS's eps caps our tol: tighter tightens, looser keeps the class default."""
    from pounce_kkt import ConeDims
    from pounce_kkt.conic import TOL_CONIC, TOL_QP

    with pytest.warns(UserWarning, match="upper bound"):
        opts = resolve(PounceArgs(), {"eps": eps}).solve_options()
    assert opts.tol_for(ConeDims(l=3)) == min(eps, TOL_QP)
    assert opts.tol_for(ConeDims(l=1, q=(3,))) == min(eps, TOL_CONIC)


def test_one_warning_per_call_names_every_new_key():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve(PounceArgs(), {"eps": 1e-5, "max_iters": 10, "verbose": True,
                               "acceleration_lookback": 0})
    assert len(caught) == 1
    text = str(caught[0].message)
    for key in ("eps", "max_iters", "verbose", "acceleration_lookback"):
        assert repr(key) in text
    assert caught[0].filename == __file__, "the warning should point at the caller's line"
