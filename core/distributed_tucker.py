"""Tucker decomposition of a dask array (the Dask engine): the mode Grams are summed on the
workers, only Grams, small projected slabs and factors come to the client.

ST-HOSVD is sequential (mode n works on the tensor already truncated in the modes before it),
and the mode-0 Gram of a tensor split into slabs along axis 0 needs products between slabs.
So the engine runs the two-pass HOSVD-style variant of :mod:`rankwise.core.tucker` (the one
its local streaming path runs, through the same :func:`~rankwise.core.tucker.two_pass_hosvd`:
same rank rules, certification and report):

* pass 1 (workers): each slab's Grams of modes 1…N-1 and ‖slab‖², summed over the slabs by a
  tree; for modes whose tail threshold a Gram cannot resolve, an R factor of the slabs'
  unfoldings instead (TSQR); the client takes their eigenvectors (T-HOSVD for these modes:
  every factor from X itself, all in one pass);
* pass 2 (workers): every slab projected on those factors, ``Z = X ×_{n≥1} U_nᵀ``
  (``I_0 × R_1 × …``), gathered on the client; mode 0 is finished on ``Z`` exactly and
  ``core = Z ×_0 U_0ᵀ``;
* pass 3, only when ‖X‖² − ‖core‖² cannot resolve the error: the explicit residual, summed
  on the workers.

Guarantee (T-HOSVD argument for modes ≥ 1, exact for mode 0):
``‖X − T‖² ≤ Σ_{n≥1} tail_n(X) + tail_0(Z)``, so ``tol=ε`` (every tail ≤ ε²‖X‖²/N) still gives
``‖X − T‖ ≤ ε‖X‖``. The budget rule (it needs the mode-0 spectrum of X) and HOOI need the
tensor in one process: the local engine.
"""

from __future__ import annotations

import numpy as np

from . import tensor as T
from .distributed import _Passes
from .errors import DataError, ParameterError
from .tucker import HINT_ORDER, _expand_ranks, check_parameters, two_pass_hosvd
from .validate import abs_max, working_dtype

# Partial results combined per task of the reduction tree.
TREE_FANIN = 4


def _slab(blk, scale: float, wdt) -> np.ndarray:
    b = np.ascontiguousarray(blk, dtype=wdt)
    return b * wdt.type(scale) if scale != 1.0 else b


def _slab_grams(blk, scale: float, tsqr: tuple, wdt) -> dict:
    """One slab's part of pass 1 (runs on a worker)."""
    blk = np.asarray(blk)
    bad = int(np.count_nonzero(~np.isfinite(blk))) if blk.dtype.kind in "fc" else 0
    if bad:
        return {"bad": bad}
    amax = abs_max(blk)
    b = _slab(blk, scale, wdt)
    grams = {}
    for n in range(1, b.ndim):
        if n in tsqr:
            acc = T.StreamingR(b.shape[n])
            acc.add(np.moveaxis(b, n, -1).reshape(-1, b.shape[n]))
            grams[n] = acc.r
        else:
            grams[n] = T.mode_gram(b, n)
    return {"bad": 0, "amax": amax, "norm_sq": T.sq_norm(b), "grams": grams}


def _combine(parts: list, tsqr: tuple) -> dict:
    """Sum of slab results (R factors: the R of the stacked ones)."""
    bad = sum(p["bad"] for p in parts)
    if bad:
        return {"bad": bad}
    out = {"bad": 0, "amax": max(p["amax"] for p in parts),
           "norm_sq": sum(p["norm_sq"] for p in parts), "grams": {}}  # fmt: skip
    for n in parts[0]["grams"]:
        if n in tsqr:
            acc = T.StreamingR(parts[0]["grams"][n].shape[1])
            for p in parts:
                acc.add(p["grams"][n])
            out["grams"][n] = acc.r
        else:
            out["grams"][n] = sum(p["grams"][n] for p in parts)
    return out


def tree_reduce(parts: list, combine, fanin: int = TREE_FANIN):
    """A delayed tree over ``parts`` (delayed objects): the partial results meet on the
    workers, and one value comes to the client."""
    import dask

    while len(parts) > 1:
        parts = [dask.delayed(combine, pure=False)(parts[i : i + fanin])
                 for i in range(0, len(parts), fanin)]  # fmt: skip
    return parts[0]


def _slab_residual(blk, scale: float, wdt, core, factors) -> float:
    b = _slab(blk, scale, wdt)
    d = np.asarray(b, dtype=np.float64) - T.tucker_rows(core, factors, 0, b.shape[0])
    d = d.reshape(-1)
    return float(d @ d)


class _DaskPasses:
    """The passes of :func:`rankwise.core.tucker.two_pass_hosvd` on the workers."""

    method = "hosvd-dask"

    def __init__(self, a, wdt, also, on_first_pass):
        self.a, self.wdt = a, wdt
        self.blocks = list(a.to_delayed(optimize_graph=False).ravel())
        self.starts = np.concatenate([[0], np.cumsum(a.chunks[0])]).astype(int)
        self.also, self.on_first_pass = also, on_first_pass
        self.passes = _Passes()

    def _compute(self, *things):
        import dask

        # unoptimised graphs keep the read tasks' keys, so the digests share the pass's reads
        return dask.compute(*things, optimize_graph=False)

    def grams(self, scale: float, tsqr: set):
        import dask

        tsqr = tuple(sorted(tsqr))
        parts = [dask.delayed(_slab_grams, pure=False)(b, scale, tsqr, self.wdt)
                 for b in self.blocks]  # fmt: skip
        total = tree_reduce(parts, lambda ps: _combine(ps, tsqr))
        first = scale == 1.0 and self.also is not None
        what = "Grams of modes 1…N-1 and ‖X‖" + (" (rescaled)" if scale != 1.0 else "")
        out, extra = self.passes.run(
            what, lambda: self._compute(total, self.also if first else None))  # fmt: skip
        if out["bad"]:
            raise DataError(f"the input holds {out['bad']} NaN/Inf value(s); tucker needs "
                            "finite data (NaN marks a missing entry: use complete)")  # fmt: skip
        if first and self.on_first_pass is not None:
            self.on_first_pass(extra)
            self.on_first_pass = None
        grams = {}
        for n, g in out["grams"].items():
            if n in tsqr:
                acc = T.StreamingR(g.shape[1])
                acc.r = g
                grams[n] = acc
            else:
                grams[n] = g
        return grams, out["norm_sq"], out["amax"]

    def project(self, factors, scale: float, zshape) -> np.ndarray:
        mats = {n: np.ascontiguousarray(factors[n].T) for n in range(1, len(zshape))}
        wdt = self.wdt
        z = self.a.map_blocks(
            lambda b: T.multi_mode_product(_slab(b, scale, wdt), mats),
            chunks=(self.a.chunks[0], *((r,) for r in zshape[1:])), dtype=wdt,
        )  # fmt: skip
        return np.asarray(self.passes.run("Z = X ×_{n≥1} U_nᵀ", lambda: z.compute()))

    def residual_sq(self, core, factors, scale: float) -> float:
        import dask

        parts = []
        for i, b in enumerate(self.blocks):
            s0, s1 = int(self.starts[i]), int(self.starts[i + 1])
            own = [np.ascontiguousarray(factors[0][s0:s1]), *factors[1:]]  # this slab's rows
            parts.append(dask.delayed(_slab_residual, pure=False)(b, scale, self.wdt, core, own))
        total = tree_reduce(parts, sum)
        return float(self.passes.run("explicit residual", lambda: self._compute(total)[0]))

    def details(self) -> dict:
        return {"engine": "dask", "blocks": len(self.blocks),
                "block_rows": int(self.a.chunks[0][0]), "passes": self.passes.reads,
                "stages": self.passes.stages}  # fmt: skip

    def reason(self) -> str:
        n = self.a.ndim
        return (f"dask engine: T-HOSVD for modes 1…{n - 1} (their Grams summed on the workers "
                "over slabs, one pass), then mode 0 sequentially on Z = X ×_{n≥1} U_nᵀ (slabs "
                "projected on the workers, second pass): ‖X − T‖² ≤ Σ_{n≥1} tail_n(X) + "
                "tail_0(Z)")  # fmt: skip


def tucker(a, *, ranks=None, tol: float | None = None, svd: str = "auto",
           max_memory: int | None = None, also=None, on_first_pass=None):  # fmt: skip
    """Tucker decomposition of the dask array ``a`` (slabs along axis 0, every other axis
    whole in each chunk) with fixed ``ranks`` or a guaranteed ``tol`` (module docstring);
    computes on the current dask scheduler. ``max_memory`` bounds what the client holds (the
    Grams and ``Z``). ``also``: a dask collection over the same chunks computed during pass 1,
    its value handed to ``on_first_pass`` (the input's block digests)."""
    if ranks is None and tol is None:
        raise ParameterError("the dask engine's tucker takes ranks or tol (the budget rule "
                             "needs the mode-0 spectrum of X: the local engine)")  # fmt: skip
    check_parameters(ranks=ranks, tol=tol, svd=svd)
    shape = T.check_tensor_shape(a.shape, method="tucker", min_order=3, hint=HINT_ORDER)
    if any(len(c) != 1 for c in a.chunks[1:]):
        raise ParameterError("the dask tucker needs slabs along axis 0 holding every other "
                             "axis whole (one chunk along each)")  # fmt: skip
    wdt = working_dtype(np.dtype(a.dtype), method="tucker")
    warnings: list[str] = []
    req = fixed = None
    if ranks is not None:
        req = _expand_ranks(ranks, len(shape))
        fixed = [min(r, i) for r, i in zip(req, shape, strict=True)]
        if fixed != req:
            warnings.append(f"ranks {tuple(req)} clamped to {tuple(fixed)} (R_n ≤ I_n)")
    if max_memory is not None:
        grams = sum(i * i for i in shape[1:]) * 8 * (1 + TREE_FANIN)
        if grams > max_memory:
            from .errors import BudgetError

            raise BudgetError(f"the mode Grams of modes 1…{len(shape) - 1} need about "
                              f"{T.human(grams)} on the client but the memory budget is "
                              f"{T.human(max_memory)}")  # fmt: skip
    passes = _DaskPasses(a, wdt, also, on_first_pass)
    return two_pass_hosvd(passes, shape, wdt, fixed, req, tol, max_memory, svd, warnings)


__all__ = ["tucker", "tree_reduce"]
