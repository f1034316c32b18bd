"""NMF of a dask array (the Dask engine): fast HALS for the Frobenius loss, by row blocks.

The data is split in row blocks (all columns), each held by an actor on a worker
(:mod:`rankwise.core.dask_blocks`). ``W`` is row-blocked with the data and stays on the
workers; ``H`` (k×n) is small, kept on the client and sent with each step.
A sweep is the local engine's (:class:`rankwise.core.nmf._HALS`) with the same update rule,
:func:`~rankwise.core.nmf._hals_update`, run on each block:

* W half-sweep — each block forms ``X_i Hᵀ`` and updates its rows of W column by column with
  the Gram ``HHᵀ``. Every row of W is independent, except the two global decisions of the
  local half-sweep, which the client takes from per-block figures: how many repeated passes
  (a pass must move W by more than 10% of what the first moved, summed over all blocks) and
  which columns died (all zero in every block: set to the floor). The blocks run a few passes
  ahead and keep the intermediate W's, so a half-sweep is usually one round trip.
* H half-sweep — the blocks' ``X_iᵀ W_i`` and ``W_iᵀ W_i`` are summed on the client, which
  updates H with ``_hals_update`` exactly as the local engine does.
* The objective comes from the same Gram identity (the explicit residual, summed over the
  blocks, when the identity cannot resolve it); the loop, restarts, normalisation, the
  final certification (exact residual and KKT check, from distributed products) and the report
  are the local engine's (:func:`~rankwise.core.loop.run_restarts`,
  :func:`~rankwise.core.nmf._finish_result`).

The initialisations are the local engine's too, from the same seeded generator: NNDSVD from
:func:`~rankwise.core.randomized.fixed_rank` (or the Gram of the short side) on an operator
whose products run on the blocks, or the random one. What differs is the order of floating
point sums across blocks, so iterates agree to rounding, and so (up to a sweep more or less
where the stopping test is a tie) do the results: tested to 1e-6 in the objective.

Only the Frobenius loss with HALS, dense complete data (no NaN), and NMF (not semi-NMF) run
here; the client holds H, the n×k products and, at the start and the end, W (m×k).
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import randomized
from .dask_blocks import RowBlocks, add_all
from .errors import DataError, ParameterError
from .linalg import eps as _eps
from .loop import run_restarts
from .nmf import (
    INNER_DELTA,
    RESIDUAL_BLOCK_BYTES,
    SVD_GRAM_DIM,
    SVD_GRAM_FACTOR,
    SVD_OVERSAMPLE,
    Regularisation,
    _clamp,
    _dot64,
    _finish_result,
    _floor_for,
    _GramFit,
    _hals_update,
    _inner_limit,
    _power_of_four_scale,
    _report,
    _revive,
    _sumsq,
    _zero_result,
    check_parameters,
    restart_init,
    svd_from_gram,
)
from .operator import dense_matmat, dense_rmatmat
from .validate import working_dtype

# Passes a block runs ahead of the client's decision; the next half-sweep runs one more than
# the last one needed.
SPECULATE = 3


# --- steps (run by the blocks' actors on the workers) ---------------------------------------


def _prepare(raw, wdt):
    x = np.asarray(raw)
    return x if x.dtype == wdt else x.astype(wdt)


def _stats(raw) -> dict:
    x = np.asarray(raw)
    out = {"nan": 0, "inf": 0, "neg": 0, "min": 0.0, "amax": 0.0, "norm_sq": 0.0, "total": 0.0}
    if x.size == 0:
        return out
    if x.dtype.kind in "fc":
        out["nan"] = int(np.count_nonzero(np.isnan(x)))
        out["inf"] = int(np.count_nonzero(np.isinf(x)))
        if out["nan"] or out["inf"]:
            return out
    lo, hi = float(np.min(x)), float(np.max(x))
    out.update(min=lo, amax=max(abs(lo), abs(hi)), neg=int(np.count_nonzero(x < 0)) if lo < 0
               else 0, norm_sq=_sumsq(x), total=float(np.sum(x, dtype=np.float64)))  # fmt: skip
    return out


def _set_w(x, state, w):
    return {"w": np.asfortranarray(w)}, None


def _get_w(x, state):
    return state["w"]


def _first(x, state, ht, pen_w):
    """X_i Hᵀ (kept for the first sweep) and this block's part of the initial objective."""
    aht = dense_matmat(x, ht)
    w = state["w"]
    pen = pen_w.penalty(w, w[:0]) if pen_w is not None else 0.0
    return {"w": w, "aht": aht}, (_dot64(aht, w), w.T @ w, pen)


def _w_passes(x, state, ht, hht, l1, l2, passes, start):
    """``passes`` HALS passes over this block's rows of W from the W after ``start`` passes;
    keeps every intermediate W and returns (Σ(ΔW)² per pass, alive columns per pass)."""
    snaps = state["snapshots"][: start + 1] if start else [state["w"]]
    aht = state.get("aht")
    if aht is None:
        aht = dense_matmat(x, ht)
    w = snaps[-1].copy(order="F")
    diff = np.empty_like(w, order="F")
    deltas, alive = [], []

    def record(f):
        np.subtract(snaps[-1], f, out=diff)
        deltas.append(_sumsq(diff))
        alive.append(np.max(f, axis=0) > 0)  # W ≥ 0: a column lives if its max is > 0
        snaps.append(f.copy(order="F"))
        return False  # every pass asked for: the client picks how many count

    # the local update rule; floor 0: dead columns are revived globally, by the client
    _hals_update(w, aht, hht, l1, l2, passes, 0.0, np.empty(w.shape[0], dtype=w.dtype),
                 on_pass=record)  # fmt: skip
    return {"w": state["w"], "aht": aht, "snapshots": snaps}, (deltas, alive)


def _w_finish(x, state, done, dead, floor, pen_w):
    """W after ``done`` passes with the dead columns at the floor; its products for the H
    half-sweep."""
    w = state["snapshots"][done]
    if dead.any():
        w[:, dead] = floor
    pen = pen_w.penalty(w, w[:0]) if pen_w is not None else 0.0
    return {"w": w}, (dense_rmatmat(x, w), w.T @ w, pen)


def _residual(x, state, w, ht, step):
    """Σ (W_i Hᵀ − X_i)² in float64, in row blocks of ``step`` (W: given, or the state's)."""
    w = state["w"] if w is None else w
    htt = np.ascontiguousarray(ht.T)
    total = 0.0
    for s in range(0, x.shape[0], step):
        blk = w[s : s + step] @ htt
        np.subtract(blk, x[s : s + step], out=blk)
        v = blk.astype(np.float64, copy=False).ravel()
        total += float(v @ v)
    return total


def _matmat(x, state, h):
    return dense_matmat(x, h)


def _rmatmat(x, state, w):
    return dense_rmatmat(x, w)


def _gram(x, state):
    return x.T @ x


# --- the data as the local solver's helpers see it --------------------------------------------


class _StateW:
    """Marks W as the blocks' own (what ``_GramFit`` hands back to ``residual_sq``)."""

    def __init__(self, k: int):
        self.shape = (None, k)


class _BlockData:
    """What :mod:`rankwise.core.nmf`'s helpers read of its ``_Data``, for data in row blocks
    on the workers: norms from the first pass, products and residuals by the blocks."""

    sparse = False
    masked = False
    mask = None
    x = None
    n_missing = 0

    def __init__(self, blocks: RowBlocks, shape, wdt, norm_sq: float, total: float):
        self.blocks = blocks
        self.shape = tuple(shape)
        self.dtype = wdt
        self.norm_sq, self.total = norm_sq, total
        m, n = shape
        self.n_obs = self.nnz = m * n
        self.empty_rows = self.empty_cols = np.zeros(0, dtype=np.intp)

    def _rows_of(self, w) -> list:
        """W's rows per block (None: the blocks' own W)."""
        if isinstance(w, _StateW):
            return [(None,)] * len(self.blocks)
        return [(np.asfortranarray(w[s:e]),) for s, e in self.blocks.row_ranges()]

    def matmat(self, h):
        """X·H (m×k) on the client (the initialisation, the final KKT check)."""
        return np.asfortranarray(np.concatenate(self.blocks.apply(_matmat, h), axis=0))

    def rmatmat(self, w):
        """Xᵀ W (n×k), summed over the blocks."""
        parts = self.blocks.apply(_rmatmat, per_block=self._rows_of(w))
        return np.asfortranarray(add_all(parts))

    def exact_affordable(self) -> bool:
        return True

    def residual_sq(self, w, ht):
        """(‖X − WH‖², how, rounding bound) as :meth:`rankwise.core.nmf._Data.residual_sq`."""
        n = self.shape[1]
        k = ht.shape[1]
        step = max(1, RESIDUAL_BLOCK_BYTES // max(1, n * self.dtype.itemsize))
        total = float(sum(self.blocks.apply(_residual, ht, step, per_block=self._rows_of(w))))
        bound = 2.0 * (k + 2) * _eps(self.dtype) * (math.sqrt(total) + 1e-300) * math.sqrt(
            self.norm_sq)  # fmt: skip
        return total, "explicit residual (row blocks on the workers)", bound


class _BlockOperator:
    """The operator protocol (:mod:`rankwise.core.operator`) on the blocks, for
    :func:`rankwise.core.randomized.fixed_rank`: products by the blocks, on the client."""

    def __init__(self, d: _BlockData):
        self.d = d
        self.shape, self.dtype = d.shape, d.dtype

    def matmat(self, x):
        return self.d.matmat(x)

    def rmatmat(self, y):
        return self.d.rmatmat(y)

    def fro_norm_sq(self) -> float:
        return self.d.norm_sq


def _wide_gram(d: _BlockData) -> np.ndarray:
    """X Xᵀ of a matrix with few rows (≤ SVD_GRAM_DIM): the blocks' rows on the client."""
    x = np.concatenate(d.blocks.apply(lambda x, st: x), axis=0)
    return x @ x.T


def _leading_svd(d: _BlockData, k: int, rng):
    """:func:`rankwise.core.nmf._leading_svd` on the blocks (same paths, same draws)."""

    from .linalg import thin_svd

    m, n = d.shape
    short = min(m, n)
    if short <= SVD_GRAM_DIM and short <= SVD_GRAM_FACTOR * (k + SVD_OVERSAMPLE):
        g = add_all(d.blocks.apply(_gram)) if n <= m else _wide_gram(d)
        return svd_from_gram(g, k, n <= m, lambda v: d.matmat(v.astype(d.dtype)),
                             lambda v: d.rmatmat(v.astype(d.dtype)))  # fmt: skip
    fact = randomized.fixed_rank(_BlockOperator(d), k, oversample=SVD_OVERSAMPLE,
                                 power_iters=None, rng=rng)  # fmt: skip
    ub, s, vt, _ = thin_svd(np.ascontiguousarray(fact.right))
    return fact.left @ ub[:, :k], s[:k], vt[:k]


# --- the solver ------------------------------------------------------------------------------


class _DaskHALS:
    """:class:`rankwise.core.nmf._HALS` with W in row blocks on the workers."""

    name = "hals"

    def __init__(self, d: _BlockData, w, ht, reg: Regularisation, floor: float):
        self.d, self.reg, self.floor = d, reg, floor
        b = d.blocks
        w = np.asfortranarray(w)
        self.ht = np.asfortranarray(ht)
        _revive(w, floor)
        _revive(self.ht, floor)
        m, n = d.shape
        k = w.shape[1]
        self.k = k
        b.step(_set_w, per_block=[(w[s:e],) for s, e in b.row_ranges()], data=False)
        self.hht = self.ht.T @ self.ht
        prod = 2.0 * d.nnz * k
        self.passes_w = _inner_limit(prod + 2.0 * n * k * k, m, k)
        self.passes_h = _inner_limit(prod + 2.0 * m * k * k, n, k)
        self.buf_n = np.empty(n, dtype=d.dtype)
        self.gram_fit = _GramFit(d, k)
        self.passes_done = [0, 0]
        self.ahead = min(self.passes_w, SPECULATE)
        self.pen_w = Regularisation(l1_w=reg.l1_w, l2_w=reg.l2_w) if reg.any else None
        self.pen_h = Regularisation(l1_h=reg.l1_h, l2_h=reg.l2_h) if reg.any else None
        self.w = _StateW(k)

    def gather_w(self) -> np.ndarray:
        return np.asfortranarray(np.concatenate(self.d.blocks.apply(_get_w, data=False)))

    def _penalty(self, pen_w: float) -> float:
        return pen_w + self.pen_h.penalty(self.ht[:0], self.ht) if self.reg.any else 0.0

    def objective0(self) -> tuple[float, float]:
        b = self.d.blocks
        cross, wtw, pen_w = add_all(b.step(_first, self.ht, self.pen_w))
        fit = self.gram_fit.fit(cross, _dot64(wtw, self.hht), self.w, self.ht)
        return fit + self._penalty(pen_w), fit

    def _w_half_sweep(self) -> tuple[int, np.ndarray]:
        """The W passes: (passes done, dead columns)."""
        b, reg = self.d.blocks, self.reg
        deltas, alive, start = [], [], 0
        while True:
            todo = min(self.ahead, self.passes_w) - start
            # X is read for X_i Hᵀ only; continuations reuse it
            parts = b.step(_w_passes, self.ht, self.hht, reg.l1_w, reg.l2_w, todo, start,
                           data=start == 0)  # fmt: skip
            deltas += [math.sqrt(sum(p[0][t] for p in parts)) for t in range(todo)]
            alive += [np.logical_or.reduce([p[1][t] for p in parts]) for t in range(todo)]
            start += todo
            done = None
            if self.passes_w == 1:
                done = 1
            else:  # the local rule: stop after the first pass moving W ≤ δ × the first one
                for t in range(1, len(deltas)):
                    if deltas[t] <= INNER_DELTA * deltas[0]:
                        done = t + 1
                        break
                if done is None and start >= self.passes_w:
                    done = self.passes_w
            if done is not None:
                self.ahead = min(self.passes_w, done + 1)
                return done, ~alive[done - 1]
            self.ahead = min(self.passes_w, start + SPECULATE)

    def sweep(self, it: int):
        reg, b = self.reg, self.d.blocks
        done, dead = self._w_half_sweep()
        self.passes_done[0] += done
        atw, wtw, pen_w = add_all(b.step(_w_finish, done, dead, self.floor, self.pen_w))
        atw = np.asfortranarray(atw)
        self.passes_done[1] += _hals_update(self.ht, atw, wtw, reg.l1_h, reg.l2_h,
                                            self.passes_h, self.floor, self.buf_n)  # fmt: skip
        self.hht = self.ht.T @ self.ht
        fit = self.gram_fit.fit(_dot64(atw, self.ht), _dot64(wtw, self.hht), self.w, self.ht)
        obj, extras = _report(self.d, fit, None, self.ht, self.ht)
        if self.reg.any:  # as _report with penalties (its W part summed over the blocks)
            return fit + self._penalty(pen_w), {"relative_error": extras["relative_error"]}
        return obj, extras

    def details(self) -> dict:
        return {"max_passes": {"W": self.passes_w, "H": self.passes_h},
                "passes": {"W": self.passes_done[0], "H": self.passes_done[1]},
                "explicit_residual_sweeps": self.gram_fit.explicit}  # fmt: skip


# --- entry point ------------------------------------------------------------------------------


def nmf(a, rank: int, *, solver: str = "auto", loss: str = "frobenius", init: str = "auto",
        l1_w: float = 0.0, l1_h: float = 0.0, l2_w: float = 0.0, l2_h: float = 0.0,
        tol: float = 1e-4, max_iter: int = 200, n_init: int = 1, rng=None, callback=None,
        persist: bool | None = None, also=None, on_first_pass=None):  # fmt: skip
    """NMF of the dask array ``a`` (row blocks holding every column) by fast HALS on the
    current Dask client; parameters and result as :func:`rankwise.core.nmf.nmf` (see the
    module docstring for what runs here). ``persist``: keep the blocks in worker memory
    (default: when they take at most half of it). ``also``: a dask collection over the same
    chunks computed in the first pass, its value handed to ``on_first_pass``."""
    check_parameters(rank=rank, solver=solver, loss=loss, init=init, l1_w=l1_w, l1_h=l1_h,
                     l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter, n_init=n_init)  # fmt: skip
    if solver == "mu" or loss == "kl":
        raise ParameterError("the dask engine's nmf is fast HALS for the Frobenius loss; "
                             "multiplicative updates and the KL loss run on the local "
                             "engine")  # fmt: skip
    if a.ndim != 2 or 0 in a.shape:
        raise DataError(f"nmf needs a non-empty matrix, got shape {tuple(a.shape)}")
    if len(a.chunks[1]) != 1:
        raise ParameterError("the dask nmf needs row blocks holding every column")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    wdt = working_dtype(np.dtype(a.dtype), method="nmf")
    m, n = (int(s) for s in a.shape)
    warnings: list[str] = []
    k = _clamp(int(rank), m, n, warnings)
    blocks = RowBlocks(a, lambda raw: _prepare(raw, wdt), also=also, persist=persist)
    stats, extra = blocks.first_pass(_stats)
    nan, inf = sum(s["nan"] for s in stats), sum(s["inf"] for s in stats)
    if inf:
        raise DataError(f"input holds {inf} infinite value(s); nmf needs finite data")
    if nan:
        raise DataError(f"input holds {nan} NaN value(s): masked NMF (NaN = missing) runs on "
                        "the local engine")  # fmt: skip
    neg = sum(s["neg"] for s in stats)
    if neg:
        amin = min(s["min"] for s in stats)
        raise DataError(f"nmf needs nonnegative data; the input holds {neg} negative value(s), "
                        f"the smallest {amin:.6g} (semi-NMF accepts mixed signs)")  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(extra)
    scale = _power_of_four_scale(max(s["amax"] for s in stats), wdt)
    norm_sq = sum(s["norm_sq"] for s in stats) * scale * scale  # exact: a power of four
    total = sum(s["total"] for s in stats) * scale
    if scale != 1.0:  # rare (extreme data): exact powers of four, as the local engine
        blocks.transform(lambda x: x * wdt.type(scale))
    d = _BlockData(blocks, (m, n), wdt, norm_sq, total)
    reg_user = Regularisation(float(l1_w), float(l1_h), float(l2_w), float(l2_h))
    reg = reg_user.scaled(scale, loss)
    init_used = "nndsvda" if init == "auto" else init
    reason = ("requested" if solver != "auto" else "Frobenius loss: fast HALS (exact column "
              "updates from Gram products)")  # fmt: skip
    reason += (f"; dask engine: W in {len(blocks)} row blocks on the workers, H on the "
               "client")  # fmt: skip
    details = {"solver": "hals", "loss": loss, "init": init_used, "n_init": int(n_init),
               "masked": False, "missing": 0, "sparse": False, "working_dtype": str(wdt),
               "estimate_bytes": 0, "empty_rows": 0, "empty_cols": 0, "engine": "dask",
               "blocks": len(blocks), "block_rows": int(a.chunks[0][0]),
               "data_on_workers": blocks.where}  # fmt: skip
    if d.norm_sq == 0.0:
        res = _zero_result((m, n), wdt, int(rank), k, "hals", reason, warnings, details, loss)
        res.details["stages"] = blocks.stages
        return res
    floor = _floor_for(d, k)
    mean = d.total / max(1, d.n_obs)
    svd_cache = {}

    def make(r):
        t0 = time.perf_counter()
        w, ht, name = restart_init(d, k, r, init_used, rng, svd_cache, mean, wdt,
                                   leading_svd=_leading_svd)  # fmt: skip
        blocks.stage(f"initialisation ({name})", t0, name != "random" and not blocks.persist)
        return _DaskHALS(d, w, ht, reg, floor), name

    t0 = time.perf_counter()
    rounds0, stages0 = blocks.rounds, len(blocks.stages)
    runs = run_restarts(make, n_init=int(n_init), tol=float(tol), max_iter=int(max_iter),
                        callback=callback, factors=lambda s: (s.gather_w(), s.ht),
                        rng=rng)  # fmt: skip
    sweeps = sum(r.loop.iterations for r in runs)
    blocks.stage(f"HALS: {sweeps} sweep(s), {blocks.rounds - rounds0} steps on the blocks",
                 t0, not blocks.persist)  # fmt: skip
    # the initialisations ran inside: count them once
    blocks.stages[-1]["seconds"] = round(max(0.0, blocks.stages[-1]["seconds"] - sum(
        st["seconds"] for st in blocks.stages[stages0:-1])), 4)  # fmt: skip
    t0 = time.perf_counter()
    res = _finish_result(runs, d, k, int(rank), scale, loss, reg_user, reg, False, "hals",
                         reason, warnings, details)  # fmt: skip
    blocks.stage("certification (exact residual, KKT)", t0, not blocks.persist)
    res.details["stages"] = blocks.stages
    res.details["rounds"] = blocks.rounds
    return res


__all__ = ["nmf"]
