"""The one loop every iterative solver runs: initialise → update sweep → convergence
tracker → callback.

A solver supplies ``sweep(iteration) -> objective`` (one full update of its factors) and
keeps its own state; the loop owns iteration counting, the convergence test, the history,
timing and the callback, so checkpoints and progress hook in at one place for every method.
The callback sees a :class:`LoopEvent`; returning True stops the solver at this iteration
boundary (the state is then consistent, so it can be saved and resumed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ParameterError


@dataclass(frozen=True)
class LoopEvent:
    iteration: int  # 1-based: sweeps done so far
    objective: float
    relative_change: float | None  # (previous − current)/|previous|; None on the first sweep
    elapsed: float  # seconds since the loop started
    extras: dict = field(default_factory=dict)


@dataclass
class LoopResult:
    iterations: int
    objective: float
    history: list
    converged: bool
    stop_reason: str


def run_loop(sweep: Callable[[int], float | tuple[float, dict]], *, tol: float, max_iter: int,
             callback: Callable[[LoopEvent], bool | None] | None = None, min_iter: int = 1,
             start_iteration: int = 0, history: list | None = None,
             initial_objective: float | None = None) -> LoopResult:  # fmt: skip
    """Run ``sweep`` until the relative decrease of the objective falls below ``tol``.

    ``sweep`` returns the objective after the sweep, or ``(objective, extras)`` with
    per-iteration figures to record. ``initial_objective`` (the objective before the
    first sweep) lets the first sweep be tested too. ``start_iteration`` and ``history``
    continue an interrupted run. A non-finite objective stops with ``converged=False``.
    """
    if max_iter < 0:
        raise ParameterError(f"max_iter must be ≥ 0, got {max_iter}")
    if not tol >= 0:
        raise ParameterError(f"tol must be ≥ 0, got {tol}")
    history = [] if history is None else history
    prev = initial_objective if not history else history[-1]["objective"]
    t0 = time.perf_counter()
    it = start_iteration
    objective = prev if prev is not None else math.nan
    while True:
        if it >= max_iter:
            return LoopResult(it, objective, history, False, f"max_iter = {max_iter} reached")
        out = sweep(it)
        objective, extras = out if isinstance(out, tuple) else (out, {})
        objective = float(objective)
        it += 1
        change = None
        if prev is not None and math.isfinite(prev):
            change = (prev - objective) / max(abs(prev), 1e-300)
        event = LoopEvent(it, objective, change, time.perf_counter() - t0, dict(extras))
        history.append({"iteration": it, "objective": objective, "relative_change": change,
                        **extras})  # fmt: skip
        if not math.isfinite(objective):
            return LoopResult(it, objective, history, False, "objective is not finite")
        if change is not None and it >= min_iter and abs(change) <= tol:
            return LoopResult(it, objective, history, True,
                              f"relative change {abs(change):.3g} ≤ tol {tol:g}")  # fmt: skip
        if objective == 0.0:
            return LoopResult(it, objective, history, True, "objective reached zero")
        if callback is not None and callback(event):
            return LoopResult(it, objective, history, False, "stopped by callback")
        prev = objective


AT_FLOOR = "fit at the rounding floor"


@dataclass
class RestartRun:
    restart: int
    init: str
    factors: tuple  # what the solver had at the end (its factor arrays)
    objective: float
    initial_objective: float | None
    loop: LoopResult
    details: dict


def run_restarts(make, *, n_init: int, tol: float, max_iter: int, callback,
                 factors) -> list[RestartRun]:  # fmt: skip
    """Run ``make(restart) -> (solver, init_name)`` ``n_init`` times through :func:`run_loop`.

    The solver has ``sweep``, ``objective0()`` (the objective before the first sweep, or a
    tuple starting with it) and ``details()``; ``factors(solver)`` picks the arrays to keep.
    Every history row and callback event carries its ``restart``; a callback stop ends all.
    """
    runs: list[RestartRun] = []
    for r in range(n_init):
        solver, init_name = make(r)
        obj0 = solver.objective0()
        obj0 = obj0[0] if isinstance(obj0, tuple) else obj0
        cb = None
        if callback is not None:

            def cb(event, _r=r):
                event.extras["restart"] = _r
                return callback(event)

        loop = run_loop(solver.sweep, tol=tol, max_iter=max_iter, callback=cb,
                        initial_objective=obj0)  # fmt: skip
        final = loop.objective if math.isfinite(loop.objective) else math.inf
        if loop.iterations == 0 and obj0 is not None:
            final = obj0
        for h in loop.history:
            h["restart"] = r
        runs.append(RestartRun(r, init_name, tuple(factors(solver)), final, obj0, loop,
                               solver.details()))  # fmt: skip
        if loop.stop_reason == "stopped by callback":
            break
    return runs


def restart_rows(runs) -> list[dict]:
    """One report row per restart of a solver with restarts (each run has ``restart``,
    ``init``, ``objective``, ``initial_objective``, ``loop``: a LoopResult, ``details``)."""
    return [{
        "restart": r.restart, "init": r.init, "iterations": r.loop.iterations,
        "objective": r.objective, "initial_objective": r.initial_objective,
        "converged": r.loop.converged, "stop_reason": r.loop.stop_reason, **r.details,
    } for r in runs]  # fmt: skip


def stop_reason(loop: LoopResult) -> str:
    """The loop's stop reason, or the rounding-floor one when its last sweep hit the floor."""
    if loop.history and loop.history[-1].get("at_rounding_floor"):
        return f"{AT_FLOOR}: relative error {loop.history[-1]['relative_error']:.3g}"
    return loop.stop_reason
