"""Dense arrays, slices and row blocks rebuilt from the arrays of a rankwise result.

Every result kind is a contraction of small factors:

==================  ==========================================================================
kind                reconstruction
==================  ==========================================================================
``svd``             ``U·diag(S)·Vt`` (+ ``mean`` added to every row when present)
``nmf``             ``W·H``
``cur``             ``C·U·R``
``kpsvd``           ``Σ_i S_i A_i ⊗ B_i`` (shape ``(M1·M2, N1·N2)``)
``cp``              ``Σ_r w_r a_0r ∘ a_1r ∘ …`` (``weights``, ``factors/n``)
``tucker``          ``core ×_0 U_0 ×_1 U_1 …`` (``core``, ``factors/n``)
``tt``              ``G_0[i_0] G_1[i_1] …`` (``cores/k``, ``r_{k-1} × I_k × r_k``)
``complete``        as ``svd`` (matrix: ``U``, ``S``, ``Vt``) or ``cp`` (tensor)
==================  ==========================================================================

A basis (``rob pod``/``enrich``/``merge``) is not a model of the data: it approximates
snapshots only together with their coefficients, so it is refused here with a pointer to
:func:`projection_error` (``rankwise error``).

Selections and memory
---------------------
Any part of the array is computed from the selected rows of each factor only: the entry
``(i_0, …, i_{N-1})`` needs row ``i_n`` of factor ``n`` and nothing else, so a slice costs
the slice, never the whole array. The output is allocated once; it is filled in chunks of its
first axis whose temporaries stay below :data:`BLOCK_BYTES` (at least one row at a time).

* low-rank matrices: ``(U_sel·S)·Vt_sel`` by one GEMM per chunk, written in place;
* kpsvd: for a chunk of rows, the grid ``A_i[i1, J1] ⊗ B_i[i2, J2]`` over the distinct
  block columns ``J1``, ``J2`` of the selected columns (a batched GEMM over ``i``), then the
  selected columns gathered from it;
* cp: the modes are split in two groups ``0…p−1 | p…N−1`` (the split with the smallest
  selected products); the output, viewed as ``∏left × ∏right``, is
  ``(KR(left)·diag(w))·KR(right)ᵀ`` — one GEMM, Khatri–Rao products of each group only;
* tucker: mode products of the core with the selected factor rows, largest reduction first;
* tt: partial products from both ends meeting at the bond that keeps the intermediates
  smallest, then one GEMM.

Precision
---------
The output keeps the factors' dtype (float32 factors give float32; integers float64) unless
``dtype`` is given. :func:`error_stats` computes in float64 whatever the factors, and sums the
squared residual in float64 block by block; its rounding bound follows the one of the
decompositions' explicit residuals: every model entry is a sum of ``T`` products, so its
float64 error is at most ``T·eps·(|x| + Σ|terms|)``, whose norm is at most
``T·eps·(‖X‖ + Σ‖terms‖)`` (``Σ‖terms‖`` from the factors' norms).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError, ParameterError
from .tensor import multi_mode_product
from .validate import working_dtype

# Temporaries (and output) per chunk of the first axis.
BLOCK_BYTES = 8 << 20
# Entries evaluated at a time by entries_error (completion data given as entries).
ENTRY_CHUNK = 1 << 16

MODEL_KINDS = ("svd", "nmf", "cur", "kpsvd", "cp", "tucker", "tt", "complete")
BASIS_KINDS = ("rob pod", "rob enrich", "rob merge")
_NOT_MODELS = {
    "rob local": "it holds one basis per cluster; check snapshots with `rankwise rob project`",
    "rob deim": "it holds interpolation indices, not a model of the data",
    "rob project": "it holds projection errors, not a model of the data",
    "reconstruct": "it already is a dense array (read it directly)",
}
_EPS64 = float(np.finfo(np.float64).eps)


# --- selections --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Selection:
    """Per-mode index arrays; ``keep[n]`` is False for a single index (the axis is dropped,
    as in NumPy); ``text`` is the normalised spec (``start:stop[:step]`` or an index)."""

    index: tuple[np.ndarray, ...]
    keep: tuple[bool, ...]
    text: str

    @property
    def lens(self) -> tuple[int, ...]:
        return tuple(len(i) for i in self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(i) for i, k in zip(self.index, self.keep, strict=True) if k)


def full_selection(shape) -> Selection:
    shape = tuple(int(s) for s in shape)
    return Selection(
        tuple(np.arange(s, dtype=np.int64) for s in shape),
        (True,) * len(shape),
        ",".join(":" for _ in shape),
    )


def _slice_usage(spec: str, why: str) -> ParameterError:
    return ParameterError(
        f"--slice {spec!r}: {why} (one item per axis, separated by commas: START:STOP[:STEP] "
        "with any part omitted, or a single index; e.g. 0:10,:,5)"
    )


def _int(part: str, spec: str) -> int | None:
    part = part.strip()
    if part == "":
        return None
    try:
        return int(part)
    except ValueError:
        raise _slice_usage(spec, f"{part!r} is not an integer") from None


def parse_slice(spec: str, shape) -> Selection:
    """NumPy basic indexing from text: ``"0:10,:,5"``, ``"::2"``, ``"-1"``, ``"...,3"``.

    Stricter than NumPy, because a typo should not silently select something else: explicit
    bounds must lie within the axis (``-n ≤ start, stop ≤ n``, an index ``-n ≤ i < n``), and
    a selection that is empty is refused. Missing trailing items mean ``:``.
    """
    shape = tuple(int(s) for s in shape)
    items = [p.strip() for p in str(spec).split(",")]
    if any(p == "" for p in items):
        raise _slice_usage(spec, "empty item")
    if items.count("...") > 1:
        raise _slice_usage(spec, "more than one '...'")
    if "..." in items:
        at = items.index("...")
        fill = len(shape) - (len(items) - 1)
        if fill < 0:
            raise _slice_usage(spec, f"{len(items) - 1} items for {len(shape)} axes")
        items = items[:at] + [":"] * fill + items[at + 1 :]
    if len(items) > len(shape):
        raise _slice_usage(
            spec, f"{len(items)} items for an array of {len(shape)} axes (shape "
            f"{'×'.join(map(str, shape))})"
        )  # fmt: skip
    items += [":"] * (len(shape) - len(items))
    index, keep, text = [], [], []
    for axis, (item, n) in enumerate(zip(items, shape, strict=True)):
        if ":" not in item:
            i = _int(item, spec)
            if not -n <= i < n:
                raise _slice_usage(spec, f"index {i} is out of range for axis {axis} of "
                                         f"length {n}")  # fmt: skip
            i %= n
            index.append(np.array([i], dtype=np.int64))
            keep.append(False)
            text.append(str(i))
            continue
        parts = item.split(":")
        if len(parts) > 3:
            raise _slice_usage(spec, f"{item!r} has more than two ':'")
        start, stop = _int(parts[0], spec), _int(parts[1], spec)
        step = _int(parts[2], spec) if len(parts) == 3 else None
        if step == 0:
            raise _slice_usage(spec, f"step 0 in {item!r}")
        for name, v in (("start", start), ("stop", stop)):
            if v is not None and not -n <= v <= n:
                raise _slice_usage(spec, f"{name} {v} is out of range for axis {axis} of "
                                         f"length {n}")  # fmt: skip
        r = range(*slice(start, stop, step).indices(n))
        if len(r) == 0:
            raise _slice_usage(spec, f"{item!r} selects nothing on axis {axis} of length {n}")
        index.append(np.arange(r.start, r.stop, r.step, dtype=np.int64))
        keep.append(True)
        if r.start == 0 and r.stop == n and r.step == 1:
            text.append(":")
        else:
            stop_text = "" if r.stop < 0 else str(r.stop)
            text.append(f"{r.start}:{stop_text}" + ("" if r.step == 1 else f":{r.step}"))
    return Selection(tuple(index), tuple(keep), ",".join(text))


# --- models ------------------------------------------------------------------------------------


def _prod(values) -> int:
    return int(math.prod(int(v) for v in values))


def _numbered(arrays: dict, prefix: str, kind: str) -> list[np.ndarray]:
    keys = [k for k in arrays if k.startswith(prefix)]
    want = [f"{prefix}{i}" for i in range(len(keys))]
    if not keys or sorted(keys) != sorted(want):
        raise DataError(
            f"{kind} result: expected arrays {prefix}0 … {prefix}N-1, found "
            f"{', '.join(sorted(arrays)) or 'none'}"
        )
    return [np.asarray(arrays[k]) for k in want]


def _need(arrays: dict, names: Sequence[str], kind: str) -> list[np.ndarray]:
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"{kind} result: missing array(s) {', '.join(missing)} (found "
            f"{', '.join(sorted(arrays)) or 'none'})"
        )
    return [np.asarray(arrays[n]) for n in names]


def _shape_error(kind: str, text: str) -> DataError:
    return DataError(f"{kind} result: inconsistent factors: {text}")


def _dims(a: np.ndarray) -> str:
    return "×".join(map(str, a.shape)) or "scalar"


class _Model(ABC):
    """A result as a function of per-mode index arrays (every mode kept); each result kind
    implements the contraction hooks."""

    kind: str
    method: str  # short name of the contraction (the report's method.used)
    reason: str  # how it is computed
    shape: tuple[int, ...]
    dtype: np.dtype
    used: dict[str, np.ndarray]  # the arrays the model reads (fingerprints, parameters)

    def _finish(self) -> None:
        for name, a in self.used.items():
            if a.dtype.kind not in "biuf":
                raise DataError(f"{self.kind} result: array {name} has dtype {a.dtype}; "
                                "reconstruction needs real numbers")  # fmt: skip
        self.dtype = working_dtype(np.result_type(*self.used.values()), method="reconstruct")

    @property
    def n_parameters(self) -> int:
        return int(sum(a.size for a in self.used.values()))

    @abstractmethod
    def take(self, idx: Sequence[np.ndarray], dt: np.dtype, out: np.ndarray) -> None:
        """Write the block ``X[np.ix_(*idx)]`` into ``out`` (C-contiguous, dtype ``dt``)."""

    @abstractmethod
    def work_bytes(self, lens: Sequence[int], itemsize: int) -> int:
        """Temporaries of one :meth:`take` with these selection lengths (not the output)."""

    @abstractmethod
    def abs_norm(self) -> float:
        """An upper bound of ‖Σ|terms|‖_F, for the rounding bound of the residual."""

    @abstractmethod
    def terms(self) -> int:
        """Products summed (and accumulated) per entry, for the rounding bound."""

    def at(self, indices: Sequence[np.ndarray], dt: np.dtype) -> np.ndarray:
        """Model values at entries ``(indices[0][e], indices[1][e], …)``."""
        raise ParameterError(f"entry-wise evaluation is not available for {self.kind} results")


class _LowRank(_Model):
    """``left·right`` (+ a row vector): svd, complete (matrix), nmf, cur."""

    def __init__(self, kind: str, arrays: dict):
        self.kind = kind
        self.mean = None
        if kind == "nmf":
            w, h = _need(arrays, ("W", "H"), kind)
            self._check(w, h, "W", "H")
            self.used = {"W": w, "H": h}
            self.method, self.reason = "W·H", "W·H by one GEMM per block of rows"
            self._left = lambda i, dt: w[i].astype(dt, copy=False)
            self._right = lambda j, dt: h[:, j].astype(dt, copy=False)
            self._norm = lambda: float(
                np.linalg.norm(w.astype(np.float64), axis=0)
                @ np.linalg.norm(h.astype(np.float64), axis=1)
            )
            self.k = w.shape[1] if w.ndim == 2 else 0
        elif kind == "cur":
            c, u, r = _need(arrays, ("C", "U", "R"), kind)
            if c.ndim != 2 or u.ndim != 2 or r.ndim != 2:
                raise _shape_error(kind, f"C {_dims(c)}, U {_dims(u)}, R {_dims(r)}")
            if c.shape[1] != u.shape[0] or u.shape[1] != r.shape[0]:
                raise _shape_error(kind, f"C {_dims(c)}, U {_dims(u)}, R {_dims(r)} do not chain")
            self.used = {"C": c, "U": u, "R": r}
            self.method, self.reason = "C·U·R", "(C_rows·U)·R_cols by one GEMM per block of rows"
            self._left = lambda i, dt: c[i].astype(dt, copy=False) @ u.astype(dt, copy=False)
            self._right = lambda j, dt: r[:, j].astype(dt, copy=False)
            self._norm = lambda: float(
                np.linalg.norm(c.astype(np.float64)) * np.linalg.norm(u.astype(np.float64))
                * np.linalg.norm(r.astype(np.float64))
            )  # fmt: skip
            self.k = max(u.shape)
            self.shape = (int(c.shape[0]), int(r.shape[1]))
        else:  # svd, complete (matrix)
            u, s, vt = _need(arrays, ("U", "S", "Vt"), kind)
            self._check(u, vt, "U", "Vt")
            if s.ndim != 1 or s.shape[0] != u.shape[1]:
                raise _shape_error(kind, f"U {_dims(u)} but S {_dims(s)}")
            self.used = {"U": u, "S": s, "Vt": vt}
            if kind == "svd" and "mean" in arrays:
                mean = np.asarray(arrays["mean"])
                if mean.ndim != 1 or mean.shape[0] != vt.shape[1]:
                    raise _shape_error(kind, f"Vt {_dims(vt)} but mean {_dims(mean)}")
                self.mean = mean
                self.used["mean"] = mean
            self.method = "U·diag(S)·Vt" + (" + mean" if self.mean is not None else "")
            self.reason = ("(U_rows·diag(S))·Vt_cols by one GEMM per block of rows"
                           + (", the mean added to every row" if self.mean is not None
                              else ""))  # fmt: skip
            self._left = lambda i, dt: u[i].astype(dt, copy=False) * s.astype(dt, copy=False)
            self._right = lambda j, dt: vt[:, j].astype(dt, copy=False)
            self._norm = lambda: float(
                np.abs(s.astype(np.float64))
                @ (np.linalg.norm(u.astype(np.float64), axis=0)
                   * np.linalg.norm(vt.astype(np.float64), axis=1))
            ) + (0.0 if self.mean is None else float(
                np.linalg.norm(self.mean.astype(np.float64)) * math.sqrt(u.shape[0])))  # fmt: skip
            self.k = u.shape[1]
        self._finish()

    def _check(self, left, right, ln, rn):
        if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0]:
            raise _shape_error(self.kind, f"{ln} {_dims(left)} and {rn} {_dims(right)}")
        self.shape = (int(left.shape[0]), int(right.shape[1]))

    def take(self, idx, dt, out):
        np.matmul(self._left(idx[0], dt), self._right(idx[1], dt), out=out)
        if self.mean is not None:
            out += self.mean[idx[1]].astype(dt, copy=False)

    def work_bytes(self, lens, itemsize):
        p, q = lens
        return (2 * p * self.k + 2 * self.k * q + q) * itemsize

    def abs_norm(self):
        return self._norm()

    def terms(self):
        return int(self.k) + 2

    def at(self, indices, dt):
        i, j = indices
        left = self._left(i, dt)
        right = self._right(j, dt)
        v = np.einsum("ek,ke->e", left, right)
        if self.mean is not None:
            v += self.mean[j].astype(dt, copy=False)
        return v


class _Kron(_Model):
    """``Σ_i S_i A_i ⊗ B_i`` (kpsvd)."""

    def __init__(self, kind: str, arrays: dict):
        self.kind = kind
        s, a, b = _need(arrays, ("S", "A", "B"), kind)
        if s.ndim != 1 or a.ndim != 3 or b.ndim != 3 or not len(s) == a.shape[0] == b.shape[0]:
            raise _shape_error(kind, f"S {_dims(s)}, A {_dims(a)}, B {_dims(b)} (expected r, "
                                     "r×M1×N1, r×M2×N2)")  # fmt: skip
        self.s, self.a, self.b = s, a, b
        self.used = {"S": s, "A": a, "B": b}
        _, self.m1, self.n1 = (int(x) for x in a.shape)
        _, self.m2, self.n2 = (int(x) for x in b.shape)
        self.shape = (self.m1 * self.m2, self.n1 * self.n2)
        self.method = "Σ S_i A_i ⊗ B_i"
        self.reason = ("per block of rows, a batched GEMM over the Kronecker terms on the block "
                       "columns the selection touches; no Kronecker product is formed")  # fmt: skip
        self._finish()

    def _cols(self, j):
        j1, j2 = np.divmod(j, self.n2)
        u1, inv1 = np.unique(j1, return_inverse=True)
        u2, inv2 = np.unique(j2, return_inverse=True)
        return u1, inv1, u2, inv2

    def take(self, idx, dt, out):
        i1, i2 = np.divmod(idx[0], self.m2)
        u1, inv1, u2, inv2 = self._cols(idx[1])
        # gathered in one step (r×p×a, r×p×b): never the full block width
        sa = self.a[:, i1[:, None], u1].astype(dt) * self.s.astype(dt)[:, None, None]
        sb = self.b[:, i2[:, None], u2].astype(dt, copy=False)
        grid = np.matmul(sa.transpose(1, 2, 0), sb.transpose(1, 0, 2))  # p×a×b
        out[...] = grid[:, inv1, inv2]

    def work_bytes(self, lens, itemsize):
        p, q = lens
        r = len(self.s)
        a, b = min(self.n1, q), min(self.n2, q)
        return (p * a * b + 2 * r * p * (a + b) + p * q) * itemsize + 3 * q * 8

    def abs_norm(self):
        a = np.linalg.norm(self.a.astype(np.float64).reshape(len(self.s), -1), axis=1)
        b = np.linalg.norm(self.b.astype(np.float64).reshape(len(self.s), -1), axis=1)
        return float(np.abs(self.s.astype(np.float64)) @ (a * b))

    def terms(self):
        return len(self.s) + 2


def _kr(mats: Sequence[np.ndarray]) -> np.ndarray:
    """Khatri–Rao product (rows in C order of the modes: the first mode varies slowest)."""
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, m.shape[1])
    return out


class _CP(_Model):
    def __init__(self, kind: str, arrays: dict):
        self.kind = kind
        (w,) = _need(arrays, ("weights",), kind)
        fs = _numbered(arrays, "factors/", kind)
        r = w.shape[0] if w.ndim == 1 else -1
        if w.ndim != 1 or any(f.ndim != 2 or f.shape[1] != r for f in fs) or len(fs) < 2:
            raise _shape_error(kind, f"weights {_dims(w)}, factors "
                                     f"{', '.join(_dims(f) for f in fs)} (expected R and "
                                     "I_n×R, at least two modes)")  # fmt: skip
        self.w, self.f = w, fs
        self.used = {"weights": w, **{f"factors/{n}": f for n, f in enumerate(fs)}}
        self.shape = tuple(int(f.shape[0]) for f in fs)
        self.method = "Khatri–Rao split"
        self.reason = ("modes split in two groups; per block of rows "
                       "(KR(left)·diag(w))·KR(right)ᵀ by one GEMM, Khatri–Rao products of each "
                       "group's selected rows only")  # fmt: skip
        self._finish()

    @staticmethod
    def _split(lens) -> int:
        n = len(lens)
        return min(range(1, n), key=lambda p: (_prod(lens[:p]) + _prod(lens[p:]), p))

    def take(self, idx, dt, out):
        p = self._split([len(i) for i in idx])
        sel = [f[i].astype(dt, copy=False) for f, i in zip(self.f, idx, strict=True)]
        left = _kr(sel[:p]) * self.w.astype(dt, copy=False)
        right = _kr(sel[p:])
        np.matmul(left, right.T, out=out.reshape(left.shape[0], right.shape[0]))

    def work_bytes(self, lens, itemsize):
        p = self._split(lens)
        r = len(self.w)
        return 2 * (_prod(lens[:p]) + _prod(lens[p:])) * r * itemsize

    def abs_norm(self):
        norms = np.ones(len(self.w))
        for f in self.f:
            norms *= np.linalg.norm(f.astype(np.float64), axis=0)
        return float(np.abs(self.w.astype(np.float64)) @ norms)

    def terms(self):
        return len(self.w) + len(self.f) + 1

    def at(self, indices, dt):
        v = np.broadcast_to(self.w.astype(dt), (len(indices[0]), len(self.w))).copy()
        for f, i in zip(self.f, indices, strict=True):
            v *= f[i].astype(dt, copy=False)
        return v.sum(axis=1)


class _Tucker(_Model):
    def __init__(self, kind: str, arrays: dict):
        self.kind = kind
        (core,) = _need(arrays, ("core",), kind)
        fs = _numbered(arrays, "factors/", kind)
        ok = core.ndim == len(fs) and all(
            f.ndim == 2 and f.shape[1] == core.shape[n] for n, f in enumerate(fs)
        )
        if not ok:
            raise _shape_error(kind, f"core {_dims(core)}, factors "
                                     f"{', '.join(_dims(f) for f in fs)} (expected I_n×R_n "
                                     "for a core R_0×…)")  # fmt: skip
        self.core, self.f = core, fs
        self.used = {"core": core, **{f"factors/{n}": f for n, f in enumerate(fs)}}
        self.shape = tuple(int(f.shape[0]) for f in fs)
        self.method = "mode products"
        self.reason = ("per block of rows, the core multiplied by the selected rows of each "
                       "factor, largest reduction first")  # fmt: skip
        self._finish()

    def _mats(self, idx, dt):
        pairs = zip(self.f, idx, strict=True)
        return {n: f[i].astype(dt, copy=False) for n, (f, i) in enumerate(pairs)}

    def take(self, idx, dt, out):
        out[...] = multi_mode_product(self.core.astype(dt, copy=False), self._mats(idx, dt))

    def work_bytes(self, lens, itemsize):
        # Replay the order multi_mode_product uses; each step holds its input and output.
        shape = list(self.core.shape)
        order = sorted(range(len(lens)), key=lambda n: (lens[n] / shape[n], n))
        peak, cur = 0, _prod(shape)
        for n in order:
            shape[n] = lens[n]
            nxt = _prod(shape)
            peak = max(peak, cur + nxt)
            cur = nxt
        return (peak + _prod(self.core.shape) + sum(lens) * max(self.core.shape)) * itemsize

    def abs_norm(self):
        v = float(np.linalg.norm(self.core.astype(np.float64)))
        for f in self.f:
            v *= float(np.linalg.norm(f.astype(np.float64)))
        return v

    def terms(self):
        return int(sum(self.core.shape)) + len(self.f) + 1


class _TT(_Model):
    def __init__(self, kind: str, arrays: dict):
        self.kind = kind
        cs = _numbered(arrays, "cores/", kind)
        ok = all(c.ndim == 3 for c in cs) and cs[0].shape[0] == 1 and cs[-1].shape[2] == 1
        ok = ok and all(a.shape[2] == b.shape[0] for a, b in zip(cs, cs[1:], strict=False))
        if not ok:
            raise _shape_error(kind, f"cores {', '.join(_dims(c) for c in cs)} (expected "
                                     "r_{k-1}×I_k×r_k with r_0 = r_N = 1)")  # fmt: skip
        self.c = cs
        self.used = {f"cores/{k}": c for k, c in enumerate(cs)}
        self.shape = tuple(int(c.shape[1]) for c in cs)
        self.ranks = [1, *(int(c.shape[2]) for c in cs)]
        self.method = "TT contraction"
        self.reason = ("per block of rows, partial products of the selected core slices from "
                       "both ends, joined by one GEMM at the bond that keeps the intermediates "
                       "smallest")  # fmt: skip
        self._finish()

    def _plan(self, lens) -> tuple[int, int]:
        """(split s, peak intermediate entries): cores < s from the left, ≥ s from the right."""
        n, r = len(lens), self.ranks
        best = None
        for s in range(1, n) if n > 1 else [1]:
            peak = 0
            for k in range(1, s + 1):  # left partial over modes < k: ∏lens[:k] × r_k
                peak = max(peak, _prod(lens[:k]) * r[k])
            for k in range(s, n):  # right partial over modes ≥ k: r_k × ∏lens[k:]
                peak = max(peak, r[k] * _prod(lens[k:]))
            if best is None or peak < best[1]:
                best = (s, peak)
        return best

    def take(self, idx, dt, out):
        n = len(self.c)
        sel = [c[:, i, :].astype(dt, copy=False) for c, i in zip(self.c, idx, strict=True)]
        if n == 1:
            out[...] = sel[0][0, :, 0]
            return
        s, _ = self._plan([len(i) for i in idx])
        left = sel[0][0]  # p_0 × r_1
        for k in range(1, s):
            rk = sel[k].shape[0]
            left = left.reshape(-1, rk) @ sel[k].reshape(rk, -1)
        right = sel[-1][:, :, 0]  # r_{N-1} × p_{N-1}
        for k in range(n - 2, s - 1, -1):
            rk1 = sel[k].shape[2]
            right = sel[k].reshape(-1, rk1) @ right.reshape(rk1, -1)
        rs = self.ranks[s]
        left = left.reshape(-1, rs)
        right = right.reshape(rs, -1)
        np.matmul(left, right, out=out.reshape(left.shape[0], right.shape[1]))

    def work_bytes(self, lens, itemsize):
        _, peak = self._plan(list(lens))
        slices = sum(self.ranks[k] * lens[k] * self.ranks[k + 1] for k in range(len(lens)))
        return (2 * peak + slices) * itemsize

    def abs_norm(self):
        return float(math.prod(float(np.linalg.norm(c.astype(np.float64))) for c in self.c))

    def terms(self):
        return int(sum(self.ranks)) + len(self.c) + 1


def check_kind(kind) -> str:
    """The kind, or a clear error: ParameterError for results that are not models of the
    data (bases, indices), DataError for a file that is not a rankwise result."""
    if kind is None or kind == "":
        raise DataError("no 'kind' attribute: not a rankwise result (write it with a rankwise "
                        "command)")  # fmt: skip
    kind = str(kind)
    if kind in BASIS_KINDS:
        raise ParameterError(
            f"a {kind} result is a basis, not a model of the data: it reconstructs snapshots "
            "only together with their coefficients, so it needs the snapshots — use "
            "`rankwise error BASIS SNAPSHOTS` (projection error) or `rankwise rob project`"
        )
    if kind in _NOT_MODELS:
        raise ParameterError(f"a {kind} result cannot be reconstructed: {_NOT_MODELS[kind]}")
    if kind not in MODEL_KINDS:
        raise DataError(f"unknown result kind {kind!r}; reconstructible kinds: "
                        f"{', '.join(MODEL_KINDS)}")  # fmt: skip
    return kind


def model(arrays: dict, kind: str) -> _Model:
    """The model of a result (arrays by output name, ``kind`` its root attribute)."""
    kind = check_kind(kind)
    if kind in ("svd", "nmf", "cur"):
        return _LowRank(kind, arrays)
    if kind == "complete":
        if "U" in arrays:
            return _LowRank(kind, arrays)
        return _CP(kind, arrays)
    if kind == "kpsvd":
        return _Kron(kind, arrays)
    if kind == "cp":
        return _CP(kind, arrays)
    if kind == "tucker":
        return _Tucker(kind, arrays)
    return _TT(kind, arrays)


def _as_model(arrays, kind) -> _Model:
    return arrays if isinstance(arrays, _Model) else model(arrays, kind)


# --- public API ----------------------------------------------------------------------------------


def result_shape(arrays, kind: str) -> tuple[int, ...]:
    """Shape of the dense array the result describes (from the arrays alone)."""
    return tuple(_as_model(arrays, kind).shape)


def result_dtype(arrays, kind: str) -> np.dtype:
    return _as_model(arrays, kind).dtype


def _chunk_rows(m: _Model, lens: Sequence[int], itemsize: int) -> int:
    """The most rows of the selection whose chunk (output + temporaries) fits BLOCK_BYTES."""
    lens = list(lens)
    rest = _prod(lens[1:]) * itemsize

    def cost(p):
        return p * rest + m.work_bytes([p, *lens[1:]], itemsize)

    lo, hi = 1, max(1, lens[0])
    if cost(hi) <= BLOCK_BYTES:
        return hi
    while lo < hi:  # largest p with cost(p) ≤ BLOCK_BYTES (at least 1)
        mid = (lo + hi + 1) // 2
        if cost(mid) <= BLOCK_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return lo


def estimate_bytes(arrays, kind: str, selection: Selection | None = None, *,
                   dtype=None) -> int:  # fmt: skip
    """Bytes :func:`to_dense` (or :func:`take_slice` with ``selection``) allocates: the
    output plus the temporaries of one chunk (the factors themselves are not counted)."""
    m = _as_model(arrays, kind)
    sel = selection or full_selection(m.shape)
    dt = np.dtype(dtype or m.dtype)
    lens = sel.lens
    rows = _chunk_rows(m, lens, dt.itemsize)
    index = 16 * sum(lens)  # the index arrays and their per-factor splits
    return int(_prod(lens) * dt.itemsize + m.work_bytes([rows, *lens[1:]], dt.itemsize) + index)


def _fill(m: _Model, idx: Sequence[np.ndarray], dt: np.dtype, out: np.ndarray) -> None:
    rows = _chunk_rows(m, [len(i) for i in idx], dt.itemsize)
    for s in range(0, len(idx[0]), rows):
        e = min(len(idx[0]), s + rows)
        m.take([idx[0][s:e], *idx[1:]], dt, out[s:e])


def take_slice(arrays, kind: str, selection: Selection | str, *, dtype=None) -> np.ndarray:
    """The part of the dense array a selection (or slice text) picks, computed from the
    selected factor rows only; single indices drop their axis as in NumPy."""
    m = _as_model(arrays, kind)
    sel = parse_slice(selection, m.shape) if isinstance(selection, str) else selection
    if len(sel.index) != len(m.shape):
        raise ParameterError(f"selection of {len(sel.index)} axes for a {len(m.shape)}-D result")
    dt = np.dtype(dtype or m.dtype)
    out = np.empty(sel.lens, dtype=dt)
    _fill(m, sel.index, dt, out)
    return out.reshape(sel.shape)


def to_dense(arrays, kind: str, *, dtype=None) -> np.ndarray:
    """The whole dense array (check :func:`estimate_bytes` against a budget first)."""
    m = _as_model(arrays, kind)
    return take_slice(m, kind, full_selection(m.shape), dtype=dtype)


def blocks(arrays, kind: str, rows: int, *, dtype=None, start: int = 0,
           stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
    """``(start, X[start:start+rows])`` along axis 0, each block computed on its own."""
    m = _as_model(arrays, kind)
    dt = np.dtype(dtype or m.dtype)
    rows = max(1, int(rows))
    stop = m.shape[0] if stop is None else min(int(stop), m.shape[0])
    rest = [np.arange(s, dtype=np.int64) for s in m.shape[1:]]
    for s in range(int(start), stop, rows):
        e = min(stop, s + rows)
        out = np.empty((e - s, *m.shape[1:]), dtype=dt)
        _fill(m, [np.arange(s, e, dtype=np.int64), *rest], dt, out)
        yield s, out


# --- errors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorStats:
    """``‖X − X̂‖²`` and ``‖X‖²`` (float64 sums) over the entries compared, with an absolute
    bound ``bound_sq`` on the rounding of ``residual_sq``."""

    residual_sq: float
    norm_sq: float
    entries: int
    missing: int = 0
    bound_sq: float = 0.0
    # ‖X − 1·meanᵀ‖² for a centred svd: the norm its own report divides by
    centred_norm_sq: float | None = None

    @property
    def relative_centred(self) -> float | None:
        if self.centred_norm_sq is None or self.centred_norm_sq <= 0:
            return None
        return math.sqrt(self.residual_sq / self.centred_norm_sq)

    @property
    def relative(self) -> float | None:
        """‖X − X̂‖/‖X‖; 0 for an exact zero; None when X is zero but X̂ is not."""
        if self.norm_sq > 0:
            return math.sqrt(self.residual_sq / self.norm_sq)
        return 0.0 if self.residual_sq == 0 else None

    @property
    def bounds(self) -> list[float] | None:
        if self.norm_sq <= 0:
            return None if self.residual_sq else [0.0, 0.0]
        lo = max(self.residual_sq - self.bound_sq, 0.0)
        return [math.sqrt(lo / self.norm_sq), math.sqrt((self.residual_sq + self.bound_sq)
                                                        / self.norm_sq)]  # fmt: skip


def _bound(terms: int, norm_x: float, abs_model: float, residual_sq: float) -> float:
    delta = terms * _EPS64 * (norm_x + abs_model)
    return 2.0 * math.sqrt(residual_sq) * delta + delta * delta


def _finite_block(x: np.ndarray, skip_nan: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(float64 block, NaN mask or None, NaN count); Inf is always an error, NaN unless
    ``skip_nan`` (then it marks a missing entry)."""
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, None, 0
    inf = int(np.count_nonzero(np.isinf(x)))
    if inf:
        raise DataError(f"data holds {inf} infinite value(s)")
    nan = int(np.count_nonzero(bad))
    if not skip_nan:
        raise DataError(f"data holds {nan} NaN value(s); NaN marks a missing entry only for "
                        "completion and NMF results")  # fmt: skip
    return x, bad, nan


def error_stats(arrays, kind: str, data_blocks: Iterable[tuple[int, np.ndarray]], *,
                skip_nan: bool = False) -> ErrorStats:  # fmt: skip
    """``‖X − X̂‖`` and ``‖X‖`` in float64, block by block: ``data_blocks`` yields
    ``(start, block)`` along axis 0 (any block sizes, in order, covering every row once) and
    the reconstruction of the same rows is computed for each. With ``skip_nan``, NaN entries
    of the data are left out of both sums and counted."""
    m = _as_model(arrays, kind)
    rest = [np.arange(s, dtype=np.int64) for s in m.shape[1:]]
    dt = np.dtype(np.float64)
    res = norm = 0.0
    centred = None if getattr(m, "mean", None) is None else 0.0
    missing = 0
    seen = 0
    for start, blk in data_blocks:
        blk = np.asarray(blk)
        if blk.ndim != len(m.shape) or tuple(blk.shape[1:]) != tuple(m.shape[1:]):
            raise DataError(f"data block of shape {_dims(blk)} does not match the "
                            f"reconstruction's {'×'.join(map(str, m.shape))}")  # fmt: skip
        if start != seen:
            raise DataError(f"data blocks out of order: row {start} after {seen} rows")
        stop = start + blk.shape[0]
        if stop > m.shape[0]:
            raise DataError(f"data has more than the {m.shape[0]} rows of the reconstruction")
        x, mask, nan = _finite_block(blk, skip_nan)
        missing += nan
        xhat = np.empty(x.shape, dtype=dt)
        _fill(m, [np.arange(start, stop, dtype=np.int64), *rest], dt, xhat)
        np.subtract(x, xhat, out=xhat)
        if mask is not None:
            xhat[mask] = 0.0
            x = np.where(mask, 0.0, x)
        d = xhat.reshape(-1)
        v = x.reshape(-1)
        res += float(d @ d)
        norm += float(v @ v)
        if centred is not None:
            c = x - m.mean.astype(np.float64)
            if mask is not None:
                c[mask] = 0.0
            centred += float(np.einsum("ij,ij->", c, c))
        seen = stop
    if seen != m.shape[0]:
        raise DataError(f"data has {seen} rows; the reconstruction has {m.shape[0]}")
    entries = _prod(m.shape) - missing
    bound = _bound(m.terms(), math.sqrt(norm), m.abs_norm(), res)
    return ErrorStats(res, norm, entries, missing, bound, centred)


def relative_error(arrays, kind: str, data_blocks, *, skip_nan: bool = False) -> float | None:
    """``‖X − X̂‖_F / ‖X‖_F`` (float64) between data given as ``(start, block)`` row blocks
    and the reconstruction of the same rows (see :func:`error_stats`)."""
    return error_stats(arrays, kind, data_blocks, skip_nan=skip_nan).relative


def entries_error(arrays, kind: str, indices: Sequence[np.ndarray], values: np.ndarray,
                  ) -> ErrorStats:  # fmt: skip
    """The error over given entries only (the observed entries of a completion problem):
    ``Σ_e (x_e − x̂_e)²`` and ``Σ_e x_e²``, the model evaluated at the entries in chunks."""
    m = _as_model(arrays, kind)
    if len(indices) != len(m.shape):
        raise DataError(f"entries of a {len(indices)}-D array for a {len(m.shape)}-D result")
    values = np.asarray(values)
    res = norm = 0.0
    n = len(values)
    for s in range(0, n, ENTRY_CHUNK):
        e = min(n, s + ENTRY_CHUNK)
        x, _, _ = _finite_block(values[s:e], False)
        idx = [np.asarray(i[s:e], dtype=np.int64) for i in indices]
        for axis, (i, size) in enumerate(zip(idx, m.shape, strict=True)):
            if i.size and (i.min() < 0 or i.max() >= size):
                raise DataError(f"entry index out of range on axis {axis} (length {size})")
        d = x - m.at(idx, np.dtype(np.float64))
        res += float(d @ d)
        norm += float(x @ x)
    bound = _bound(m.terms(), math.sqrt(norm), m.abs_norm(), res)
    return ErrorStats(res, norm, n, 0, bound)


# --- bases ---------------------------------------------------------------------------------------


def projection_error(basis: np.ndarray, passes: Callable[[], Iterable], *,
                     mean: np.ndarray | None = None) -> dict:  # fmt: skip
    """Euclidean projection error of snapshots (dofs × snapshots, given in row blocks of
    dofs) on a basis: ``‖X_c − VVᵀX_c‖_F / ‖X_c‖_F`` with ``X_c = X − mean·1ᵀ``.

    Two passes (``passes()`` returns a fresh ``(start, block)`` iterator each time): the
    coefficients ``C = VᵀX_c`` (N × snapshots) are summed over the first, the residual
    ``X_c − V·C`` is formed explicitly in the second — the identity ``‖X_c‖² − ‖C‖²`` would
    lose the digits of small errors to cancellation. Returns the sums, the per-snapshot
    relative errors, and the orthogonality loss ``max|VᵀV − I|`` (large when the basis is
    orthonormal in another inner product: the projection is then not orthogonal here).
    """
    v = np.asarray(basis, dtype=np.float64)
    if v.ndim != 2:
        raise DataError(f"basis of shape {_dims(v)}: expected dofs × modes")
    mu = None if mean is None else np.asarray(mean, dtype=np.float64)
    if mu is not None and mu.shape != (v.shape[0],):
        raise DataError(f"mean of shape {_dims(mu)} for a basis of {v.shape[0]} dofs")

    def centred(passes_iter):
        seen = 0
        for start, blk in passes_iter:
            x, _, _ = _finite_block(blk, False)
            if x.ndim != 2:
                raise DataError(f"snapshots must be a matrix (dofs × snapshots), got "
                                f"{x.ndim}-D blocks")  # fmt: skip
            if start != seen or start + x.shape[0] > v.shape[0]:
                raise DataError(f"snapshot rows do not match the basis's {v.shape[0]} dofs")
            stop = start + x.shape[0]
            if mu is not None:
                x = x - mu[start:stop, None]
            seen = stop
            yield start, stop, x
        if seen != v.shape[0]:
            raise DataError(f"snapshots have {seen} dofs; the basis has {v.shape[0]}")

    coef = None
    col_sq = None
    for start, stop, x in centred(passes()):
        c = v[start:stop].T @ x
        coef = c if coef is None else coef + c
        s = np.einsum("ij,ij->j", x, x)
        col_sq = s if col_sq is None else col_sq + s
    if coef is None:
        raise DataError("no snapshots to project")
    res_col = np.zeros_like(col_sq)
    for start, stop, x in centred(passes()):
        d = x - v[start:stop] @ coef
        res_col += np.einsum("ij,ij->j", d, d)
    res, norm = float(res_col.sum()), float(col_sq.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(col_sq > 0, np.sqrt(res_col / np.where(col_sq > 0, col_sq, 1.0)), 0.0)
    gram = v.T @ v
    ortho = float(np.max(np.abs(gram - np.eye(v.shape[1])), initial=0.0))
    abs_model = float(np.linalg.norm(v)) * float(np.linalg.norm(coef))
    stats = ErrorStats(res, norm, int(v.shape[0] * len(col_sq)), 0,
                       _bound(v.shape[1] + 2, math.sqrt(norm), abs_model, res))  # fmt: skip
    worst = int(np.argmax(per)) if per.size else 0
    return {"stats": stats, "per_snapshot": per, "worst_snapshot": worst,
            "orthogonality_loss": ortho, "snapshots": int(len(col_sq))}  # fmt: skip


__all__ = [
    "BASIS_KINDS",
    "BLOCK_BYTES",
    "MODEL_KINDS",
    "ErrorStats",
    "Selection",
    "blocks",
    "check_kind",
    "entries_error",
    "error_stats",
    "estimate_bytes",
    "full_selection",
    "model",
    "parse_slice",
    "projection_error",
    "relative_error",
    "result_dtype",
    "result_shape",
    "take_slice",
    "to_dense",
]
