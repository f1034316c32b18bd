"""Solver state that survives a restart of the process.

An iterative solver's state at an iteration boundary is a tree of dicts and lists whose
leaves are numbers, strings, None, booleans and NumPy arrays. :func:`pack` splits such a tree
into a JSON-able skeleton and a flat dict of arrays (so it can be written without pickles) and
:func:`unpack` puts it back together exactly: arrays keep their dtype, shape and memory order,
floats round-trip through ``repr``, so a resumed solver repeats the same arithmetic and gives
the same bytes as an uninterrupted run.

Solvers list the attributes that make up their state in ``STATE`` (dotted names reach into
helper objects); :func:`capture` and :func:`restore` copy them out and back in. Everything
else a solver holds is either the input (recomputed identically on resume) or scratch space.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

_ARRAY = "__array__"
_TUPLE = "__tuple__"


def pack(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(skeleton, arrays): arrays replaced by ``{"__array__": key}`` references."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node, path):
        if isinstance(node, np.ndarray):
            key = "/".join(path) or "root"
            arrays[key] = node
            return {_ARRAY: key}
        if isinstance(node, np.generic):
            return node.item()
        if isinstance(node, dict):
            for k in node:
                if not isinstance(k, str) or k in (_ARRAY, _TUPLE):
                    raise TypeError(f"checkpoint keys must be plain strings, got {k!r}")
            return {k: walk(v, [*path, k]) for k, v in node.items()}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, [*path, str(i)]) for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, [*path, str(i)]) for i, v in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(f"cannot checkpoint a {type(node).__name__} at {'/'.join(path)}")

    return walk(tree, []), arrays


def unpack(skeleton: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The tree :func:`pack` split (KeyError when an array is missing)."""

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {_ARRAY}:
                return arrays[node[_ARRAY]]
            if set(node) == {_TUPLE}:
                return tuple(walk(v) for v in node[_TUPLE])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


def _resolve(obj, name: str):
    *outer, last = name.split(".")
    for part in outer:
        obj = getattr(obj, part)
    return obj, last


def _copy(value):
    if isinstance(value, np.ndarray):
        return value.copy(order="K")
    return copy.deepcopy(value)


def capture(obj, names) -> dict:
    """Copies of the attributes ``names`` of ``obj`` (dotted names allowed)."""
    out = {}
    for name in names:
        owner, attr = _resolve(obj, name)
        out[name] = _copy(getattr(owner, attr))
    return out


def restore(obj, state: dict, names) -> None:
    """Set the attributes ``names`` of ``obj`` from a :func:`capture` of the same solver."""
    missing = [n for n in names if n not in state]
    if missing:
        raise KeyError(f"checkpoint state lacks {', '.join(missing)}")
    for name in names:
        owner, attr = _resolve(obj, name)
        value = _copy(state[name])  # owned and writable: the solver updates it in place
        current = getattr(owner, attr)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(owner, attr, value)


class Checkpointable:
    """Mixin: ``state()`` and ``restore(state)`` over the attributes listed in ``STATE``."""

    STATE: tuple[str, ...] = ()

    def state(self) -> dict:
        return capture(self, self.STATE)

    def restore(self, state: dict) -> None:
        restore(self, state, self.STATE)


def rng_state(rng: np.random.Generator | None):
    return None if rng is None else copy.deepcopy(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator | None, state) -> None:
    if rng is not None and state is not None:
        rng.bit_generator.state = state


__all__ = ["pack", "unpack", "capture", "restore", "Checkpointable", "rng_state",
           "set_rng_state"]  # fmt: skip
