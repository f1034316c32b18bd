"""The one loop every iterative solver runs: initialise → update sweep → convergence
tracker → callback.

A solver supplies ``sweep(iteration) -> objective`` (one full update of its factors) and
keeps its own state; the loop owns iteration counting, the convergence test, the history,
timing and the callback, so checkpoints and progress hook in at one place for every method.
The callback sees a :class:`LoopEvent`; returning True stops the solver at this iteration
boundary (the state is then consistent, so it can be saved and resumed). ``event.state()``
is that state (loop progress plus what the solver's ``state`` function gives), and the
``resume`` argument of :func:`run_loop` / :func:`run_restarts` continues from it: the
resumed run repeats the remaining sweeps exactly, so it ends with the same bytes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .checkpoint import rng_state, set_rng_state
from .errors import ParameterError


@dataclass(frozen=True)
class LoopEvent:
    iteration: int  # 1-based: sweeps done so far
    objective: float
    relative_change: float | None  # (previous − current)/|previous|; None on the first sweep
    elapsed: float  # seconds since the loop started
    extras: dict = field(default_factory=dict)
    # () -> the resumable state at this boundary (a tree for core.checkpoint.pack); None
    # when the solver cannot be resumed
    state: Callable[[], dict] | None = None


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
             initial_objective: float | None = None, state: Callable[[], dict] | None = None,
             resume: dict | None = None) -> LoopResult:  # fmt: skip
    """Run ``sweep`` until the relative decrease of the objective falls below ``tol``.

    ``sweep`` returns the objective after the sweep, or ``(objective, extras)`` with
    per-iteration figures to record. ``initial_objective`` (the objective before the
    first sweep) lets the first sweep be tested too. ``start_iteration`` and ``history``
    continue an interrupted run. A non-finite objective stops with ``converged=False``.
    ``state()`` gives the solver's part of ``event.state()``; ``resume`` is the ``"loop"``
    part of such a state (the solver restores its own part before calling this).
    """
    if max_iter < 0:
        raise ParameterError(f"max_iter must be ≥ 0, got {max_iter}")
    if not tol >= 0:
        raise ParameterError(f"tol must be ≥ 0, got {tol}")
    if resume is not None:
        start_iteration = int(resume["iteration"])
        history = [dict(h) for h in resume["history"]]
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
        snapshot = None
        if state is not None:

            def snapshot(_it=it):
                return {"loop": {"iteration": _it, "history": copy.deepcopy(history)},
                        **state()}  # fmt: skip

        event = LoopEvent(it, objective, change, time.perf_counter() - t0, dict(extras),
                          snapshot)  # fmt: skip
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


def run_restarts(make, *, n_init: int, tol: float, max_iter: int, callback, factors,
                 rng=None, resume: dict | None = None) -> list[RestartRun]:  # fmt: skip
    """Run ``make(restart) -> (solver, init_name)`` ``n_init`` times through :func:`run_loop`.

    The solver has ``sweep``, ``objective0()`` (the objective before the first sweep, or a
    tuple starting with it) and ``details()``; ``factors(solver)`` picks the arrays to keep.
    Every history row and callback event carries its ``restart``; a callback stop ends all.
    Solvers with ``state()``/``restore()`` (core.checkpoint.Checkpointable) can be resumed:
    ``event.state()`` then holds the finished restarts, the current one and ``rng``'s state,
    and ``resume`` (such a state) continues from it.
    """
    runs: list[RestartRun] = []
    current = loop_state = None
    if resume is not None:
        runs = [_run_from_state(x) for x in resume["runs"]]
        current, loop_state = resume["current"], resume["loop"]
        for r in range(len(runs)):
            make(r)  # replayed for their side effects (caches, details); rng is reset below
    for r in range(len(runs), n_init):
        solver, init_name = make(r)
        loop_resume = None
        if current is not None:
            # make() rebuilt the solver (and drew from rng); the saved state replaces both
            init_name, obj0, loop_resume = current["init"], current["obj0"], loop_state
            solver.restore(current["solver"])
            set_rng_state(rng, current["rng"])
            current = None
        else:
            obj0 = solver.objective0()
            obj0 = obj0[0] if isinstance(obj0, tuple) else obj0
        cb = state = None
        if callback is not None:

            def cb(event, _r=r):
                event.extras["restart"] = _r
                return callback(event)

            if hasattr(solver, "state"):

                def state(_r=r, _s=solver, _init=init_name, _obj0=obj0):
                    return {"runs": [_run_state(x) for x in runs],
                            "current": {"restart": _r, "init": _init, "obj0": _obj0,
                                        "solver": _s.state(), "rng": rng_state(rng)}}  # fmt: skip

        loop = run_loop(solver.sweep, tol=tol, max_iter=max_iter, callback=cb,
                        initial_objective=obj0, state=state, resume=loop_resume)  # fmt: skip
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


def _run_state(run: RestartRun) -> dict:
    return {"restart": run.restart, "init": run.init, "factors": list(run.factors),
            "objective": run.objective, "initial_objective": run.initial_objective,
            "loop": {"iterations": run.loop.iterations, "objective": run.loop.objective,
                     "history": copy.deepcopy(run.loop.history),
                     "converged": run.loop.converged, "stop_reason": run.loop.stop_reason},
            "details": copy.deepcopy(run.details)}  # fmt: skip


def _run_from_state(s: dict) -> RestartRun:
    return RestartRun(s["restart"], s["init"], tuple(s["factors"]), s["objective"],
                      s["initial_objective"], LoopResult(**s["loop"]), s["details"])  # fmt: skip


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
