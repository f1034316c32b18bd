"""The shared solver loop: convergence test, history, callback, resumption."""

from __future__ import annotations

import math

import pytest

from rankwise.core.errors import ParameterError
from rankwise.core.loop import run_loop


def geometric(start=1.0, ratio=0.5, floor=1.0):
    """Objective floor + start·ratio^k: relative changes shrink geometrically."""
    return lambda it: floor + start * ratio ** (it + 1)


def test_stops_when_relative_change_is_below_tol():
    res = run_loop(geometric(), tol=1e-6, max_iter=100, initial_objective=2.0)
    # change_k = 0.5^(k+1) / (1 + 0.5^k) ≈ 2^-(k+1): below 1e-6 first at k ≈ 20
    first = next(k for k in range(1, 100) if 0.5 ** (k + 1) / (1 + 0.5**k) <= 1e-6)
    assert res.converged and res.iterations == first + 1
    assert [h["iteration"] for h in res.history] == list(range(1, res.iterations + 1))
    assert res.history[0]["relative_change"] == pytest.approx((2.0 - 1.5) / 2.0)


def test_max_iter_and_extras():
    res = run_loop(lambda it: (1.0 / (it + 1), {"rank": 3}), tol=0.0, max_iter=5)
    assert not res.converged and res.iterations == 5 and "max_iter" in res.stop_reason
    assert all(h["rank"] == 3 for h in res.history)


def test_callback_stops_and_run_resumes_where_it_stopped():
    f = geometric()
    res = run_loop(f, tol=1e-9, max_iter=50, callback=lambda ev: ev.iteration == 4)
    assert res.stop_reason == "stopped by callback" and res.iterations == 4
    rest = run_loop(f, tol=1e-9, max_iter=50, start_iteration=res.iterations,
                    history=list(res.history))  # fmt: skip
    full = run_loop(f, tol=1e-9, max_iter=50)
    assert rest.iterations == full.iterations and rest.objective == full.objective
    assert [h["objective"] for h in rest.history] == [h["objective"] for h in full.history]


def test_non_finite_objective_stops():
    res = run_loop(lambda it: math.nan if it == 2 else 1.0 / (it + 1), tol=0.0, max_iter=10)
    assert not res.converged and res.iterations == 3 and "not finite" in res.stop_reason


def test_bad_parameters():
    with pytest.raises(ParameterError):
        run_loop(lambda it: 1.0, tol=-1.0, max_iter=3)
    with pytest.raises(ParameterError):
        run_loop(lambda it: 1.0, tol=0.1, max_iter=-1)
