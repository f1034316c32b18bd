"""Tucker decomposition: ST-HOSVD with fixed ranks, an error tolerance or a parameter budget;
HOOI refinement; a two-pass HOSVD-style variant for tensors streamed from a file.

``X ≈ core ×_0 U_0 ×_1 U_1 … ×_{N-1} U_{N-1}`` with ``core`` of shape ``R_0 × … × R_{N-1}``
and factors ``U_n`` (``I_n × R_n``), as TensorLy's ``tucker_to_tensor((core, factors))``.
Output names: ``core``, ``factors/0`` … ``factors/N-1``.

Conventions
-----------
* Factors have orthonormal columns, ordered by descending singular value of the unfolding they
  were computed from (the mode-``n`` unfolding of the partly truncated tensor in ST-HOSVD, of
  ``X ×_{m≠n} U_mᵀ`` in HOOI), and the entry of largest magnitude of every column is positive
  (the first one on ties). The core is ``X ×_n U_nᵀ`` for every mode (an orthogonal
  projection), so ``‖X − T‖² = ‖X‖² − ‖core‖²``.
* Ranks: ``R_n > I_n`` is clamped to ``I_n`` (with a warning) before the run; a mode with
  ``R_n > ∏_{m≠n} R_m`` (more columns than the core can use) is reduced after the ST-HOSVD,
  losslessly (the core's mode-n unfolding has no more rank), so the requested run's error bound
  holds (a warning says so).
* Tensors of order < 3 are refused (the Tucker decomposition of a matrix is its SVD).
* float32 input is computed and returned in float32 (Grams and norms accumulate in float64);
  integers and booleans become float64; NaN/Inf are data errors. float64 data so extreme that
  its squares would overflow (beyond 2^±400) is scaled by an exact power of two internally.
* Every path is deterministic (no random step): ``rng`` is accepted for a uniform signature.

Algorithms
----------
* ST-HOSVD (Vannieuwenhoven, Vandebril & Meerbergen 2012): modes in order 0 … N-1; for each,
  the leading eigenvectors of the Gram ``Y_(n) Y_(n)ᵀ`` of the current (already truncated)
  tensor ``Y``, then ``Y ← Y ×_n U_nᵀ``. The Gram is formed by GEMM on reshaped views
  (:mod:`rankwise.core.tensor`); when ``I_n`` exceeds the product ``K`` of the other current
  dimensions, the thin SVD of the (tall) unfolding is used instead (Gram of the short side).
  In exact arithmetic ``‖X − T‖² = Σ_n tail_n`` with ``tail_n`` the eigenvalues discarded in
  step ``n``.
* ``tol=ε``: each step keeps the fewest columns with ``tail_n ≤ ε²‖X‖²/N``, which guarantees
  ``‖X − T‖ ≤ ε‖X‖``. A Gram's eigenvalues are known to about ``I_n·eps·λ_max``
  (:func:`rankwise.core.tensor.gram_resolution`); when ``ε²‖X‖²/N`` is less than 100 times
  that, the step uses the SVD of the unfolding instead (``svd="auto"``), whose small singular
  values are accurate to ``eps·σ_max``; the path of every mode is reported.
* ``budget=P``: the core shape maximising the kept energy ``Σ_n Σ_{i≤R_n} σ_{n,i}²`` (the
  mode spectra of ``X``) subject to ``∏R_n + Σ I_n R_n ≤ P`` and ``R_n ≤ ∏_{m≠n} R_m``
  (Ghadiri, Fahrbach, Fu & Mirrokni 2023, "Tucker packing"). Minimising the discarded energy
  ``Σ_n tail_n(X)`` minimises the HOSVD error bound ``‖X − T‖² ≤ Σ_n tail_n(X)`` (which
  ST-HOSVD also satisfies); since any Tucker approximation of shape R has error
  ``≥ max_n tail_n(X) ≥ Σ_n tail_n(X)/N``, the exact packing optimum has error at most
  ``√N`` times (in norm) the best error of any shape within the budget (the paper's
  guarantee). ``budget_search="exhaustive"`` solves the packing exactly (for each shape of the
  first N−1 modes the last rank is the largest that fits, vectorised); ``"greedy"`` (default)
  adds, from ``(1, …, 1)``, the rank increment (one mode, or two at once where
  ``R_n ≤ ∏_{m≠n} R_m`` requires it) with the best energy gain per added parameter, while it
  fits. The report gives the chosen shape, the estimated error ``√(Σ_n tail_n(X))/‖X‖`` and
  the achieved one.
* ``method="hooi"``: higher-order orthogonal iteration from the ST-HOSVD factors, through
  :func:`rankwise.core.loop.run_loop`; each mode update maximises ``‖core‖`` with the other
  factors fixed, so the fit is monotone (up to rounding); objective = squared relative error.
* Streaming (a handle larger than ``max_memory``, or ``streaming=True``): a HOSVD-style
  variant in two passes over slabs along axis 0. Pass 1 sums the Grams of modes 1 … N-1
  over slabs (and ‖X‖²); pass 2 projects every slab on those modes, giving
  ``Z = X ×_{n≥1} U_nᵀ`` (``I_0 × R_1 × …``) in memory; mode 0 is then finished on ``Z``
  (its Gram, or the SVD of the tall ``Z_(0)``) and ``core = Z ×_0 U_0ᵀ``. Guarantee:
  ``‖X − T‖² ≤ Σ_{n≥1} tail_n(X) + tail_0(Z)`` (the first part by the HOSVD argument, the
  second exactly), so ``tol=ε`` with every tail ``≤ ε²‖X‖²/N`` still gives
  ``‖X − T‖ ≤ ε‖X‖``. The mode-0 Gram of ``X`` would need products between slabs, so the
  budget rule and HOOI need the tensor in memory.

Error certification
-------------------
``relative_frobenius_error`` is exact: from the identity ``‖X‖² − ‖core‖²`` (float64 sums)
when the error is large enough for the identity to resolve it (``err² ≥ 50·γ`` with the
rounding ``γ = 10·(Σ I_n)·eps·‖X‖²``), else from an explicit residual computed slab by slab in
float64 (one more pass when streaming). ``error_method`` says which, ``error_bounds`` brackets
it by the rounding.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import tensor as T
from .checkpoint import Checkpointable
from .errors import BudgetError, ParameterError
from .linalg import eps as _eps
from .linalg import orthogonality_loss, tall_svd, thin_svd
from .loop import run_loop
from .rank import REFERENCE_THRESHOLDS
from .result import Result
from .validate import abs_max, power_of_two_scale, working_dtype

METHODS = ("sthosvd", "hooi")
BUDGET_SEARCHES = ("greedy", "exhaustive")
SVD_PATHS = ("auto", "gram", "svd")
# The exhaustive search enumerates the shapes of the first N-1 modes (vectorised); beyond this
# many it refuses (use greedy).
EXHAUSTIVE_MAX_SHAPES = 20_000_000
EXHAUSTIVE_CHUNK = 1_000_000
# The identity ‖X‖² − ‖core‖² certifies the error when err² ≥ IDENTITY_MARGIN·γ.
IDENTITY_MARGIN = 50.0
# Mode spectra longer than this are cut in the report (the rank rules use all of them).
REPORT_SPECTRUM = 1024
HINT_ORDER = "; the Tucker decomposition of a matrix is its SVD: use svd"


# --- parameters --------------------------------------------------------------------------------


def check_parameters(*, ranks=None, tol=None, budget=None, method: str = "sthosvd",
                     budget_search: str = "greedy", tol_iter: float = 1e-8,
                     max_iter: int = 100, svd: str = "auto") -> str:  # fmt: skip
    """Refuse invalid parameters (callers run this before reading data); returns the rule."""
    given = [name for name, v in (("ranks", ranks), ("tol", tol), ("budget", budget))
             if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ParameterError(
            "tucker needs exactly one of ranks, tol and budget"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if budget_search not in BUDGET_SEARCHES:
        raise ParameterError(f"unknown budget search {budget_search!r}; choose from "
                             f"{', '.join(BUDGET_SEARCHES)}")  # fmt: skip
    if svd not in SVD_PATHS:
        raise ParameterError(f"unknown svd path {svd!r}; choose from {', '.join(SVD_PATHS)}")
    if tol is not None and not (isinstance(tol, int | float) and 0 < tol < 1):
        raise ParameterError(f"tol must be in (0, 1), got {tol}")
    if budget is not None and (isinstance(budget, bool) or int(budget) != budget or budget < 1):
        raise ParameterError(f"budget must be a positive integer number of parameters, got "
                             f"{budget}")  # fmt: skip
    if ranks is not None:
        seq = [ranks] if np.ndim(ranks) == 0 else list(ranks)
        for r in seq:
            if isinstance(r, bool) or int(r) != r or r < 1:
                raise ParameterError(f"ranks must be positive integers, got {ranks}")
    if not (math.isfinite(float(tol_iter)) and tol_iter >= 0):
        raise ParameterError(f"tol_iter must be finite and ≥ 0, got {tol_iter}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer ≥ 0, got {max_iter}")
    return given[0]


def _expand_ranks(ranks, order: int) -> list[int]:
    if np.ndim(ranks) == 0:
        return [int(ranks)] * order
    ranks = [int(r) for r in ranks]
    if len(ranks) != order:
        raise ParameterError(f"ranks has {len(ranks)} entries for a tensor of order {order}")
    return ranks


def clamp_ranks(shape, ranks) -> list[int]:
    """``R_n ≤ I_n`` and ``R_n ≤ ∏_{m≠n} R_m`` (a larger R_n cannot be used by the core)."""
    r = [min(int(a), int(i)) for a, i in zip(ranks, shape, strict=True)]
    changed = True
    while changed:
        changed = False
        for n in range(len(r)):
            cap = math.prod(r[:n] + r[n + 1 :])
            if r[n] > cap:
                r[n] = cap
                changed = True
    return r


def max_ranks(shape) -> list[int]:
    return clamp_ranks(shape, shape)


def estimate_bytes(
    shape,
    dtype,
    *,
    ranks=None,
    streaming: bool = False,
    max_memory: int | None = None,
    chunk_rows: int | None = None,
) -> int:
    """Peak bytes of the working set besides an in-memory input (in memory), or in all
    (streaming). Unknown ranks (tol, budget) are taken at their largest."""
    shape = tuple(int(s) for s in shape)
    wdt = working_dtype(dtype, method="tucker")
    w = wdt.itemsize
    r = clamp_ranks(shape, ranks if ranks is not None else shape)
    grams = sum(min(i, math.prod(shape) // i) ** 2 for i in shape) * 8
    if streaming:
        rows = T.stream_rows(shape, max(w, np.dtype(dtype).itemsize), max_memory, chunk_rows)
        row = math.prod(shape[1:])
        # three raw slabs in flight (prefetch ring), a converted one and its projection
        slabs = 3 * rows * row * np.dtype(dtype).itemsize + 2 * rows * row * w
        z = shape[0] * math.prod(r[1:]) * w
        grams = sum(i * i for i in shape[1:]) * 8
        return int(slabs + grams + z + min(T.GRAM_BLOCK_BYTES, rows * row * 8))
    size = math.prod(shape)
    first = r[0] * size // shape[0]
    conv = size * w if np.dtype(dtype) != wdt else 0
    blocks = 4 * min(T.GRAM_BLOCK_BYTES, size * w) + 2 * min(T.RESIDUAL_BLOCK_BYTES, size * 8)
    return int(conv + first + grams + blocks)


def in_memory_bytes(shape, dtype, *, ranks=None) -> int:
    """Peak bytes of an in-memory run, the tensor in the working dtype included."""
    wdt = working_dtype(dtype, method="tucker")
    return math.prod(int(s) for s in shape) * wdt.itemsize + estimate_bytes(
        shape, dtype, ranks=ranks
    )


# --- the budget rule (Tucker packing) -------------------------------------------------------


def _cum_energy(spectra_sq) -> list[np.ndarray]:
    """cum[n][r] = energy kept by rank r in mode n (r = 0 … len)."""
    return [np.concatenate([[0.0], np.cumsum(np.asarray(s, np.float64))]) for s in spectra_sq]


def choose_core_shape(shape, spectra_sq, budget: int, *, search: str = "greedy") -> dict:
    """Core shape maximising ``Σ_n Σ_{i≤R_n} λ_{n,i}`` (λ = squared mode singular values)
    within ``∏R_n + Σ I_n R_n ≤ budget`` and ``R_n ≤ ∏_{m≠n} R_m``.

    Returns ``{"ranks", "parameters", "kept_energy", "discarded_energy", "search",
    "evaluated"}``; ParameterError when even ``(1, …, 1)`` exceeds the budget.
    """
    shape = [int(s) for s in shape]
    cum = _cum_energy(spectra_sq)
    # Ranks beyond the spectrum's length gain nothing: cap there (≤ I_n).
    caps = [min(i, len(c) - 1) for i, c in zip(shape, cum, strict=True)]
    minimum = 1 + sum(shape)
    if budget < minimum:
        raise ParameterError(
            f"a budget of {budget} parameters is below the smallest Tucker model of shape "
            f"{tuple(shape)} (core 1×…×1 and one column per factor: {minimum} parameters)"
        )
    if search == "exhaustive":
        ranks, evaluated = _exhaustive(shape, caps, cum, budget)
    else:
        ranks, evaluated = _greedy(shape, caps, cum, budget)
    kept = float(sum(c[r] for c, r in zip(cum, ranks, strict=True)))
    return {"ranks": [int(r) for r in ranks], "parameters": T.tucker_parameters(shape, ranks),
            "kept_energy": kept,
            "discarded_energy": float(sum(c[-1] - c[r] for c, r in zip(cum, ranks, strict=True))),
            "search": search, "evaluated": int(evaluated)}  # fmt: skip


def _feasible(r, shape, caps, budget) -> bool:
    if any(a < 1 or a > c for a, c in zip(r, caps, strict=True)):
        return False
    p = math.prod(r)
    if any(a * a > p for a in r):  # R_n ≤ ∏_{m≠n} R_m  ⇔  R_n² ≤ ∏ R
        return False
    return T.tucker_parameters(shape, r) <= budget


def _greedy(shape, caps, cum, budget):
    n_modes = len(shape)
    r = [1] * n_modes
    evaluated = 0
    moves = [(n,) for n in range(n_modes)] + list(itertools.combinations(range(n_modes), 2))
    params = T.tucker_parameters(shape, r)
    while True:
        best = None
        for mv in moves:
            cand = list(r)
            for n in mv:
                cand[n] += 1
            evaluated += 1
            if not _feasible(cand, shape, caps, budget):
                continue
            gain = sum(cum[n][cand[n]] - cum[n][r[n]] for n in mv)
            cost = T.tucker_parameters(shape, cand) - params
            if gain <= 0.0:
                continue
            key = (gain / cost, -cost)
            if best is None or key > best[0]:
                best = (key, cand)
        if best is None:
            break
        r = best[1]
        params = T.tucker_parameters(shape, r)
    # Exchange phase: move one rank unit out of a mode into one or two others while that
    # keeps more energy within the budget (each accepted move strictly gains: it ends).
    exchanges = [((a,), b) for a in range(n_modes) for b in moves if a not in b]
    while True:
        best = None
        for (a,), mv in exchanges:
            cand = list(r)
            cand[a] -= 1
            for n in mv:
                cand[n] += 1
            evaluated += 1
            if not _feasible(cand, shape, caps, budget):
                continue
            gain = sum(cum[n][cand[n]] - cum[n][r[n]] for n in range(n_modes))
            if gain <= 0.0:
                continue
            key = (gain, -T.tucker_parameters(shape, cand))
            if best is None or key > best[0]:
                best = (key, cand)
        if best is None:
            return r, evaluated
        r = best[1]


def _exhaustive(shape, caps, cum, budget):
    """Exact packing optimum: every shape of the first N-1 modes, the last rank the largest
    that fits (the kept energy grows with it), the smallest one reaching the same energy."""
    n_modes = len(shape)
    rest = sum(shape)
    # R_n·I_n ≤ budget − (the other modes at rank 1) − 1
    hi = [max(0, min(c, (budget - 1 - rest + i) // i)) for i, c in zip(shape, caps, strict=True)]
    count = math.prod(hi[:-1])
    if count > EXHAUSTIVE_MAX_SHAPES:
        raise ParameterError(
            f"the exhaustive core-shape search would enumerate {count} shapes (limit "
            f"{EXHAUSTIVE_MAX_SHAPES}); use the greedy search"
        )
    i_last = shape[-1]
    cum_last = cum[-1]
    best_key, best = None, None
    prefix_dims = hi[:-1]
    for start in range(0, count, EXHAUSTIVE_CHUNK):
        idx = np.arange(start, min(count, start + EXHAUSTIVE_CHUNK), dtype=np.int64)
        rs = np.stack(np.unravel_index(idx, prefix_dims), axis=1) + 1  # (k, N-1)
        prod = np.ones(len(idx), dtype=np.float64)
        for j in range(n_modes - 1):
            prod *= rs[:, j]
        lin = rs @ np.asarray(shape[:-1], dtype=np.int64)
        room = budget - lin
        with np.errstate(divide="ignore", invalid="ignore"):
            r_last = np.floor(room / (prod + i_last))
        r_last = np.minimum(np.minimum(r_last, caps[-1]), prod)
        # R_n ≤ ∏_{m≠n} R_m for the prefix modes: R_last ≥ R_n² / ∏prefix
        lo = np.ones(len(idx))
        for j in range(n_modes - 1):
            lo = np.maximum(lo, np.ceil(rs[:, j].astype(np.float64) ** 2 / prod))
        ok = (r_last >= lo) & (r_last >= 1)
        if not ok.any():
            continue
        rs, r_last, lo, prod, lin = rs[ok], r_last[ok].astype(np.int64), lo[ok], prod[ok], lin[ok]
        # smallest last rank with the same energy as the largest that fits
        target = cum_last[r_last]
        r_min = np.searchsorted(cum_last, target, side="left")
        r_last = np.maximum(r_min, lo.astype(np.int64))
        energy = cum_last[r_last].copy()
        for j in range(n_modes - 1):
            energy += cum[j][rs[:, j]]
        params = prod * r_last + lin + i_last * r_last
        # best: most energy, then fewest parameters, then first in enumeration order
        order = np.lexsort((np.arange(len(energy)), params, -energy))
        k = order[0]
        key = (float(energy[k]), -float(params[k]))
        if best_key is None or key > best_key:
            best_key = key
            best = [int(v) for v in rs[k]] + [int(r_last[k])]
    if best is None:
        return [1] * n_modes, count
    return best, count


def packing_lower_bound(shape, spectra_sq, budget: int) -> float:
    """``min over feasible shapes of max_n tail_n(X)``: a lower bound on the squared error of
    the best Tucker approximation within the budget (brute force, for small tests)."""
    cum = _cum_energy(spectra_sq)
    caps = [min(i, len(c) - 1) for i, c in zip(shape, cum, strict=True)]
    best = math.inf
    for r in itertools.product(*(range(1, c + 1) for c in caps)):
        if _feasible(list(r), shape, caps, budget):
            best = min(best, max(c[-1] - c[a] for c, a in zip(cum, r, strict=True)))
    return best


# --- per-mode subspaces ------------------------------------------------------------------------


def _unfolding_copy(y: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(y, n, 0)).reshape(y.shape[n], -1)


def _leading(y: np.ndarray, n: int, path: str, resolve: float | None = None):
    """Spectrum (squared singular values, descending) and left singular vectors of Y_(n).

    ``path``: ``gram`` (eigh of the I_n×I_n Gram), ``svd`` (thin SVD of the unfolding, or of
    its short side) or ``auto`` (the Gram while I_n ≤ K = ∏ other dims, else the SVD; with
    ``resolve`` = a tail threshold the Gram cannot resolve, the SVD). Returns
    (λ, U, description)."""
    i_n = y.shape[n]
    k = y.size // i_n
    use_svd = path == "svd" or (path == "auto" and i_n > k)
    how = None
    if not use_svd:
        g = T.mode_gram(y, n)
        lam, u = T.gram_eig(g)
        lam = lam[: min(i_n, k)]
        how = f"eigh of the {i_n}×{i_n} Gram"
        if (path == "auto" and resolve is not None and lam.size and lam[0] > 0
                and resolve < T.RESOLVE_MARGIN * T.gram_resolution(lam[0], i_n)):  # fmt: skip
            use_svd = True
            how = None
        else:
            return lam, np.asarray(u[:, : lam.size], dtype=y.dtype), how
    p_, _, q_ = T.split3(y.shape, n)
    if q_ == 1:  # last mode: the (K × I_n) view; U = right singular vectors
        a = y.reshape(p_, i_n)
        if a.shape[0] >= 4 * a.shape[1] and y.dtype == np.float64:
            _, s, vt, drv = tall_svd(a)
        else:
            _, s, vt, drv = thin_svd(a)
        u = np.ascontiguousarray(vt.T)
        src = f"{p_}×{i_n} view"
    else:
        a = y.reshape(i_n, q_) if p_ == 1 else _unfolding_copy(y, n)
        src = f"{a.shape[0]}×{a.shape[1]} " + ("view" if p_ == 1 else "unfolding (copied)")
        if a.shape[0] >= 4 * a.shape[1] and y.dtype == np.float64:
            u, s, _, drv = tall_svd(a)
        else:
            u, s, _, drv = thin_svd(a)
    lam = np.asarray(s, np.float64) ** 2
    reason = " (Gram cannot resolve the tail)" if path == "auto" and i_n <= k else ""
    return lam, T.fix_signs(np.ascontiguousarray(u)), f"{drv} SVD of the {src}{reason}"


def _tail(lam: np.ndarray) -> np.ndarray:
    """tail[k] = Σ_{i≥k} λ_i for k = 0 … len (reverse cumulative: no cancellation)."""
    return np.concatenate([np.cumsum(lam[::-1])[::-1], [0.0]])


def _rank_for(lam: np.ndarray, threshold: float) -> int:
    tail = _tail(lam)
    ok = np.flatnonzero(tail <= threshold)
    return max(1, int(ok[0])) if ok.size else len(lam)


# --- ST-HOSVD ----------------------------------------------------------------------------------


def _sthosvd(x, *, ranks=None, tol_sq=None, path="auto", first=None):
    """Sequential truncation over modes 0 … N-1. ``ranks``: fixed; ``tol_sq``: per-mode tail
    threshold (absolute). ``first``: (λ, U, how) of mode 0 already computed on ``x``.
    Returns (core, factors, steps)."""
    y = x
    factors, steps = [], []
    for n in range(x.ndim):
        resolve = tol_sq if ranks is None else None
        if n == 0 and first is not None:
            lam, u, how = first
        else:
            lam, u, how = _leading(y, n, path, resolve)
        if ranks is not None:
            r = max(1, min(int(ranks[n]), lam.size))
        else:
            r = min(_rank_for(lam, tol_sq), lam.size)
        tail = float(_tail(lam)[r])
        un = np.ascontiguousarray(u[:, :r])
        steps.append(
            {
                "mode": n,
                "rank": int(r),
                "path": how,
                "of": "X" if n == 0 else f"X truncated in modes 0…{n - 1}",
                "discarded_energy": tail,
                "spectrum_sq": lam,
                "below_resolution": T.below_resolution(lam) if "eigh" in how else 0,
            }
        )
        factors.append(un)
        y = T.mode_product(y, un.T, n)
    return y, factors, steps


def _compress_redundant(core, factors, warnings: list) -> tuple[np.ndarray, list]:
    """Lossless reduction of modes with ``R_n > ∏_{m≠n} R_m``: the core's mode-n unfolding
    then has rank ≤ ∏_{m≠n} R_m, so its leading eigenvectors span it exactly and
    ``U_n ← U_n V``, ``core ← core ×_n Vᵀ`` change nothing but the parameter count. (This is
    how ranks beyond that bound are clamped: after the ST-HOSVD with the requested ranks, so
    its error bound still holds.)"""
    before = list(core.shape)
    factors = list(factors)
    changed = True
    while changed:
        changed = False
        for n in range(core.ndim):
            cap = math.prod(core.shape[:n] + core.shape[n + 1 :])
            if core.shape[n] <= cap:
                continue
            _, v = T.gram_eig(T.mode_gram(np.ascontiguousarray(core), n))
            v = np.ascontiguousarray(v[:, :cap], dtype=core.dtype)
            w = factors[n] @ v
            signs = np.sign(w[np.argmax(np.abs(w), axis=0), np.arange(cap)])
            signs[signs == 0] = 1
            v *= signs.astype(v.dtype)
            factors[n] = np.ascontiguousarray(w * signs.astype(w.dtype))
            core = T.mode_product(core, v.T, n)
            changed = True
    if list(core.shape) != before:
        warnings.append(
            f"ranks {tuple(before)} reduced (clamped) to {tuple(core.shape)} without loss: "
            "R_n ≤ ∏_{m≠n} R_m bounds the rank the core can use in mode n"
        )
    return core, factors


# --- HOOI --------------------------------------------------------------------------------------


class _HOOI(Checkpointable):
    STATE = ("factors", "core")

    def __init__(self, x, factors, norm_sq, path):
        self.x, self.factors, self.norm_sq, self.path = x, list(factors), norm_sq, path
        self.core = None

    def sweep(self, it: int):
        x, f = self.x, self.factors
        n_modes = x.ndim
        for n in range(n_modes):
            y = T.multi_mode_product(x, {m: f[m].T for m in range(n_modes) if m != n})
            r = f[n].shape[1]
            _, u, _ = _leading(y, n, "gram" if self.path == "gram" else
                               ("svd" if self.path == "svd" else "auto"))  # fmt: skip
            f[n] = np.ascontiguousarray(u[:, :r])
            if n == n_modes - 1:
                self.core = T.mode_product(y, f[n].T, n)
        core_sq = T.sq_norm(self.core)
        obj = max(self.norm_sq - core_sq, 0.0) / self.norm_sq
        return obj, {"relative_error": math.sqrt(obj)}


# --- certification -----------------------------------------------------------------------------


def _certify(x, core, factors, norm_sq, *, residual_ok: bool, dtype):
    """(err², method, γ) with the identity when it resolves the error, else explicitly."""
    core_sq = T.sq_norm(core)
    err_sq = norm_sq - core_sq
    gamma = 10.0 * sum(x.shape) * _eps(dtype) * norm_sq
    if err_sq >= IDENTITY_MARGIN * gamma or not residual_ok:
        how = "identity ‖X‖² − ‖core‖² (orthonormal factors; float64 sums)"
        if err_sq < IDENTITY_MARGIN * gamma:
            how += "; below the identity's resolution, an upper bound"
        return max(err_sq, 0.0), how, gamma
    err_sq = T.residual_sq(x, lambda s0, s1: T.tucker_rows(core, factors, s0, s1))
    gamma = 4.0 * _eps(np.float64) * norm_sq + 2.0 * _eps(dtype) * norm_sq
    return err_sq, "explicit residual (slabs along axis 0, float64)", gamma


def _bounds(err_sq, gamma, norm_sq):
    if norm_sq == 0.0:
        return [0.0, 0.0]
    return [math.sqrt(max(err_sq - gamma, 0.0) / norm_sq), math.sqrt((err_sq + gamma) / norm_sq)]


def _core_spectra(core) -> list[np.ndarray]:
    c = np.asarray(core, dtype=np.float64)
    return [T.gram_eig(T.mode_gram(c, n))[0] for n in range(c.ndim)]


def _tol_rows(given_rule, given_value, shape, norm_sq, err_sq, core, full_spectra):
    """Ranks each reference tol gives: from the spectra of every mode of X (T-HOSVD tail
    rule, valid for ST-HOSVD) when known, else from the result's core (a further truncation
    T' of T: ‖X − T'‖² = ‖X − T‖² + ‖T − T'‖², possible for thresholds above the error)."""
    rows = []
    n_modes = len(shape)
    core_spec = None
    for tau in REFERENCE_THRESHOLDS["tol"]:
        if given_rule == "tol" and tau == given_value:
            continue
        row = {"rule": "tol", "threshold": tau, "given": False}
        if full_spectra is not None:
            thr = tau**2 * norm_sq / n_modes
            r = [min(_rank_for(s, thr), len(s)) for s in full_spectra]
            row.update(ranks=r, basis="tail rule on the mode spectra of X")
        elif tau**2 * norm_sq > err_sq:
            if core_spec is None:
                core_spec = _core_spectra(core)
            thr = (tau**2 * norm_sq - err_sq) / n_modes
            r = [min(_rank_for(s, thr), len(s)) for s in core_spec]
            row.update(ranks=r, basis="further truncation of the result (core spectra)")
        else:
            row.update(ranks=None, basis="below the achieved error: needs a run with this tol")
        rows.append(row)
    return rows


def _spectra_report(spectra) -> dict:
    out = {}
    for n, lam in spectra.items():
        s = np.sqrt(np.maximum(np.asarray(lam, np.float64), 0.0))
        out[str(n)] = [float(v) for v in s[:REPORT_SPECTRUM]]
    return out


# --- entry point -------------------------------------------------------------------------------


def tucker(x, *, ranks=None, tol: float | None = None, budget: int | None = None,
           method: str = "sthosvd", budget_search: str = "greedy", tol_iter: float = 1e-8,
           max_iter: int = 100, svd: str = "auto", rng=None, callback=None,
           max_memory: int | None = None, streaming: bool | None = None,
           on_first_pass=None, resume: dict | None = None) -> Result:  # fmt: skip
    """Tucker decomposition of ``x`` (an array, or a slab source such as a file handle with
    ``shape``, ``dtype`` and ``iter_blocks(rows)``); see the module docstring.

    Exactly one of ``ranks`` (an int for every mode or one per mode), ``tol`` (relative
    Frobenius error guaranteed by ST-HOSVD's tail rule) and ``budget`` (number of parameters
    ``∏R_n + Σ I_n R_n``). ``method="hooi"`` refines the ST-HOSVD factors of that shape
    (``tol_iter``: relative decrease of the squared error per sweep at which to stop;
    ``callback(event)`` sees every sweep and may stop it). ``svd`` chooses how mode subspaces
    are computed (``auto``: Gram/eigh unless the Gram cannot resolve the tail or the mode is
    longer than the rest). ``max_memory`` bounds the working set; a source that does not fit
    is streamed (``streaming=True`` forces it; ``on_first_pass(start, slab)`` sees every raw
    slab of the first pass). ``resume``: an ``event.state()`` of an interrupted HOOI run
    with the same data and parameters.

    Returns a :class:`Result` with arrays ``core`` and ``factors/0`` … ``factors/N-1``.
    """
    rule = check_parameters(ranks=ranks, tol=tol, budget=budget, method=method,
                            budget_search=budget_search, tol_iter=tol_iter, max_iter=max_iter,
                            svd=svd)  # fmt: skip
    source = x if T.is_slab_source(x) else None
    shape = T.check_tensor_shape(x.shape if source is not None else np.shape(x),
                                 method="tucker", min_order=3, hint=HINT_ORDER)  # fmt: skip
    n_modes = len(shape)
    dtype = np.dtype(x.dtype) if source is not None else np.asarray(x).dtype
    wdt = working_dtype(dtype, method="tucker")
    warnings: list[str] = []
    req = None
    if ranks is not None:
        req = _expand_ranks(ranks, n_modes)
        fixed = [min(r, i) for r, i in zip(req, shape, strict=True)]
        if fixed != req:
            warnings.append(f"ranks {tuple(req)} clamped to {tuple(fixed)} (R_n ≤ I_n)")
    else:
        fixed = None
    chunk_rows = None
    if source is not None and getattr(source, "chunks", None):
        chunk_rows = int(source.chunks[0])
    if streaming is None:
        streaming = False
        if source is not None and max_memory is not None:
            need = in_memory_bytes(shape, dtype, ranks=fixed)
            streaming = need > max_memory
            if streaming and (rule == "budget" or method == "hooi"):
                raise BudgetError(
                    f"tucker {'--budget' if rule == 'budget' else '--method hooi'} needs the "
                    f"tensor in memory (about {T.human(need)}) but the memory budget is "
                    f"{T.human(max_memory)}; the streamed variant supports ranks and tol"
                )
    if streaming:
        if rule == "budget":
            raise ParameterError("the budget rule needs the mode-0 spectrum of X, which a "
                                 "streamed tensor cannot give (products between slabs); use "
                                 "ranks or tol, or load the tensor")  # fmt: skip
        if method == "hooi":
            raise ParameterError("HOOI needs the tensor in memory; the streamed variant is "
                                 "HOSVD-style (ranks or tol)")  # fmt: skip
        src = source if source is not None else T.ArraySlabs(np.asarray(x))
        return _streaming(src, shape, dtype, wdt, fixed, req, tol, max_memory, chunk_rows,
                          svd, warnings, on_first_pass)  # fmt: skip
    # --- in memory
    if source is not None:
        est = in_memory_bytes(shape, dtype, ranks=fixed)
        if max_memory is not None and est > max_memory:
            raise BudgetError(f"tucker needs about {T.human(est)} for shape {shape} {wdt} but "
                              f"the memory budget is {T.human(max_memory)}")  # fmt: skip
        x = T.gather(source, shape, on_first_pass)
    x, wdt, copied = T.as_float_tensor(x, method="tucker")
    T.check_finite_tensor(x, method="tucker")
    if max_memory is not None and source is None:
        est = x.nbytes + estimate_bytes(shape, dtype, ranks=fixed)
        if est > max_memory:
            raise BudgetError(f"tucker needs about {T.human(est)} for shape {shape} {wdt} "
                              f"(input included) but the memory budget is "
                              f"{T.human(max_memory)}")  # fmt: skip
    scale = power_of_two_scale(abs_max(x), wdt)
    if scale != 1.0:
        x = x * wdt.type(scale)
        e = int(round(math.log2(scale)))
        warnings.append(f"entries of magnitude near 2^{-e} were scaled by 2^{e} (exactly) to "
                        "keep the norms finite; the core is scaled back")  # fmt: skip
    return _in_memory(
        x,
        rule,
        fixed,
        req,
        tol,
        budget,
        method,
        budget_search,
        tol_iter,
        max_iter,
        svd,
        callback,
        warnings,
        copied,
        scale,
        source is not None,
        resume,
    )


def _zero_result(shape, wdt, ranks, rule, threshold, warnings, method, details) -> Result:
    r = clamp_ranks(shape, ranks if ranks is not None else [1] * len(shape))
    warnings.append("the tensor is all zeros: the core is zero")
    arrays = {"core": np.zeros(r, dtype=wdt)}
    for n, (i, k) in enumerate(zip(shape, r, strict=True)):
        arrays[f"factors/{n}"] = np.eye(i, k, dtype=wdt)
    params = T.tucker_parameters(shape, r)
    metrics = {"relative_frobenius_error": 0.0, "error_method": "zero tensor",
               "error_bounds": [0.0, 0.0], "norm_fro": 0.0, "a_priori_error_bound": 0.0,
               "ranks": r, "n_parameters": params,
               "compression_ratio": math.prod(shape) / params}  # fmt: skip
    rank = {"value": r, "rule": rule, "threshold": threshold, "max_rank": max_ranks(shape),
            "clamped": False, "by_rule": [{"rule": rule, "threshold": threshold, "ranks": r,
                                           "given": True}]}  # fmt: skip
    return Result(arrays=arrays, method=method, method_reason="zero tensor", metrics=metrics,
                  details=details, warnings=tuple(warnings), rank=rank,
                  stop_reason="zero tensor")  # fmt: skip


def _threshold(rule, req, tol, budget):
    return {"ranks": req, "tol": tol, "budget": budget}[rule]


def _in_memory(x, rule, fixed, req, tol, budget, method, budget_search, tol_iter, max_iter,
               svd, callback, warnings, copied, scale, gathered,
               resume=None) -> Result:  # fmt: skip
    shape = x.shape
    n_modes = x.ndim
    wdt = x.dtype
    norm_sq = T.sq_norm(x)
    details = {"working_dtype": str(wdt), "mode_order": list(range(n_modes)),
               "svd_path": svd, "scale": scale, "input_copy": copied,
               "gathered_from_source": gathered}  # fmt: skip
    threshold = _threshold(rule, req, tol, budget)
    name = "hooi" if method == "hooi" else "st-hosvd"
    if norm_sq == 0.0:
        return _zero_result(shape, wdt, fixed, rule, threshold, warnings, name, details)
    full_spectra = None
    first = None
    budget_info = None
    if rule == "budget":
        full = [_leading(x, n, svd) for n in range(n_modes)]
        # eigenvalues at the rounding level count as zero: no parameters spent on them
        full_spectra = [np.where(f[0] < T.gram_resolution(f[0][0], f[0].size), 0.0, f[0])
                        for f in full]  # fmt: skip
        budget_info = choose_core_shape(shape, full_spectra, int(budget), search=budget_search)
        fixed = budget_info["ranks"]
        first = full[0]
        # the estimate (HOSVD bound) counts every discarded eigenvalue, rounding included
        raw = sum(float(_tail(f[0])[r]) for f, r in zip(full, fixed, strict=True))
        budget_info["discarded_energy"] = raw
        budget_info["estimated_error"] = math.sqrt(raw / norm_sq)
        details["budget"] = budget_info
    if rule == "tol" and wdt == np.float32 and tol < 1e3 * _eps(np.float32):
        warnings.append(f"tol = {tol:g} is near float32 precision: the guarantee holds up to "
                        "float32 rounding of the projections")  # fmt: skip
    tol_sq = None if rule != "tol" else tol**2 * norm_sq / n_modes
    core, factors, steps = _sthosvd(x, ranks=fixed, tol_sq=tol_sq, path=svd, first=first)
    core, factors = _compress_redundant(core, factors, warnings)
    ranks_used = [f.shape[1] for f in factors]
    tail_sum = sum(s["discarded_energy"] for s in steps)
    history, converged, stop = [], True, "direct method"
    reason = ("ST-HOSVD (sequential truncation, modes 0…N-1) with mode subspaces from Gram "
              "eigendecompositions (GEMM on reshaped views)")  # fmt: skip
    hooi_info = None
    if method == "hooi":
        init_obj = max(norm_sq - T.sq_norm(core), 0.0) / norm_sq
        solver = _HOOI(x, factors, norm_sq, svd)
        if resume is not None:
            solver.restore(resume["solver"])
        loop = run_loop(solver.sweep, tol=float(tol_iter), max_iter=int(max_iter),
                        callback=callback, initial_objective=init_obj,
                        state=lambda: {"solver": solver.state()},
                        resume=None if resume is None else resume["loop"])  # fmt: skip
        if loop.iterations > 0 and solver.core is not None:
            factors, core = solver.factors, solver.core
        history, converged, stop = loop.history, loop.converged, loop.stop_reason
        hooi_info = {"iterations": loop.iterations, "initial_relative_error": math.sqrt(init_obj)}
        details["hooi"] = hooi_info
        reason = f"HOOI refinement of the ST-HOSVD factors of shape {tuple(ranks_used)}"
    err_sq, how, gamma = _certify(x, core, factors, norm_sq, residual_ok=True, dtype=wdt)
    err = math.sqrt(err_sq / norm_sq)
    if rule == "tol" and err > tol * (1 + 1e-6) + math.sqrt(gamma / norm_sq):
        warnings.append(f"achieved error {err:.3g} exceeds tol {tol:g} beyond rounding")
    T.resolution_warnings(steps, warnings, "mode")
    if rule == "tol":
        a_priori = tol
    elif rule == "budget":
        a_priori = budget_info["estimated_error"]
    else:
        a_priori = math.sqrt(tail_sum / norm_sq)
    params = T.tucker_parameters(shape, ranks_used)
    spectra = {s["mode"]: s["spectrum_sq"] for s in steps}
    if full_spectra is not None:
        spectra = {n: f[0] for n, f in enumerate(full)}
    inv = 1.0 / scale
    metrics = {
        "relative_frobenius_error": err, "error_method": how,
        "error_bounds": _bounds(err_sq, gamma, norm_sq),
        "norm_fro": math.sqrt(norm_sq) * inv,
        "a_priori_error_bound": a_priori,
        "a_priori_kind": {"tol": "guaranteed by the ST-HOSVD tail rule (ε)",
                          "budget": "√(Σ_n tail_n(X))/‖X‖: HOSVD bound from the mode spectra",
                          "ranks": "√(Σ discarded eigenvalues)/‖X‖: the ST-HOSVD error in "
                                   "exact arithmetic"}[rule],
        "tail_sum_error": math.sqrt(tail_sum / norm_sq),
        "ranks": ranks_used, "n_parameters": params,
        "compression_ratio": math.prod(shape) / params,
        "mode_singular_values": {k: [v * inv for v in vals]
                                 for k, vals in _spectra_report(spectra).items()},
        "mode_spectra_of": ("X (every mode)" if full_spectra is not None else
                            "the tensor truncated in the earlier modes (ST-HOSVD steps)"),
        "orthogonality_loss": {f"factors/{n}": orthogonality_loss(f)
                               for n, f in enumerate(factors)},
    }  # fmt: skip
    if budget_info is not None:
        metrics["estimated_error"] = budget_info["estimated_error"]
    if hooi_info is not None:
        metrics["hooi_initial_error"] = hooi_info["initial_relative_error"]
    details["steps"] = [{k: v for k, v in s.items() if k != "spectrum_sq"} for s in steps]
    details["paths"] = sorted({s["path"] for s in steps})
    rows = [{"rule": rule, "threshold": threshold, "ranks": ranks_used, "given": True}]
    if rule != "ranks":
        rows.append({"rule": "ranks", "threshold": None, "ranks": ranks_used, "given": False,
                     "basis": "the shape this run chose"})  # fmt: skip
    rows += _tol_rows(rule, tol, shape, norm_sq, err_sq, core, full_spectra)
    rank = {"value": ranks_used, "rule": rule, "threshold": threshold,
            "max_rank": max_ranks(shape), "clamped": bool(req is not None and req != ranks_used),
            "by_rule": rows}  # fmt: skip
    arrays = {"core": np.ascontiguousarray(core * wdt.type(inv)) if scale != 1.0 else core}
    for n, f in enumerate(factors):
        arrays[f"factors/{n}"] = np.ascontiguousarray(f)
    return Result(arrays=arrays, method=name, method_reason=reason, metrics=metrics,
                  details=details, history=history, converged=converged, stop_reason=stop,
                  warnings=tuple(warnings), rank=rank)  # fmt: skip


# --- streaming ---------------------------------------------------------------------------------


def _streaming(src, shape, dtype, wdt, fixed, req, tol, max_memory, chunk_rows, svd,
               warnings, hook) -> Result:  # fmt: skip
    n_modes = len(shape)
    rows = T.stream_rows(shape, max(np.dtype(dtype).itemsize, wdt.itemsize), max_memory,
                         chunk_rows)  # fmt: skip
    if max_memory is not None:
        need = estimate_bytes(shape, dtype, ranks=fixed, streaming=True, max_memory=max_memory,
                              chunk_rows=chunk_rows)  # fmt: skip
        if fixed is None:  # Z is not known before pass 1 (checked after it)
            need -= shape[0] * math.prod(shape[1:]) * wdt.itemsize
        if need > max_memory:
            raise BudgetError(
                f"streamed tucker needs about {T.human(need)} (slabs of {rows} "
                f"rows, the Grams of modes 1…{n_modes - 1}, the projected "
                f"tensor) but the memory budget is {T.human(max_memory)}"
            )
    passes = _SlabPasses(src, shape, wdt, rows, hook)
    return two_pass_hosvd(passes, shape, wdt, fixed, req, tol, max_memory, svd, warnings)


class _SlabPasses:
    """The passes of :func:`two_pass_hosvd` over a slab source, in this process (slabs along
    axis 0, the next one read in a thread while the current one is used)."""

    method = "hosvd-streaming"

    def __init__(self, src, shape, wdt, rows: int, hook):
        self.src, self.shape, self.wdt, self.rows, self.hook = src, shape, wdt, rows, hook
        self.pass_seconds: list[float] = []
        self.bytes_read = 0

    def grams(self, scale: float, tsqr: set):
        """({mode n ≥ 1: its Gram summed over slabs, or a T.StreamingR for modes in
        ``tsqr``}, ‖X‖², max |X|), the slabs multiplied by ``scale``."""
        import time

        shape, wdt = self.shape, self.wdt
        grams = {n: (T.StreamingR(shape[n]) if n in tsqr else np.zeros((shape[n], shape[n])))
                 for n in range(1, len(shape))}  # fmt: skip
        norm_sq, amax = 0.0, 0.0
        t0 = time.perf_counter()
        hook = self.hook if scale == 1.0 else None
        for _, raw in T.iter_slabs(self.src, self.rows, prefetch=True, hook=hook):
            blk = np.asarray(raw)
            self.bytes_read += blk.nbytes
            T.check_finite_tensor(blk, method="tucker")
            amax = max(amax, abs_max(blk))
            blk = np.ascontiguousarray(blk, dtype=wdt)
            if scale != 1.0:
                blk = blk * wdt.type(scale)
            norm_sq += T.sq_norm(blk)
            for n in range(1, len(shape)):
                if n in tsqr:
                    grams[n].add(np.moveaxis(blk, n, -1).reshape(-1, shape[n]))
                else:
                    T.mode_gram(blk, n, out=grams[n])
        self.pass_seconds.append(time.perf_counter() - t0)
        return grams, norm_sq, amax

    def project(self, factors, scale: float, zshape) -> np.ndarray:
        """``Z = X ×_{n≥1} U_nᵀ`` slab by slab."""
        import time

        z = np.empty(zshape, dtype=self.wdt)
        t0 = time.perf_counter()
        for start, raw in T.iter_slabs(self.src, self.rows, prefetch=True):
            blk = np.ascontiguousarray(raw, dtype=self.wdt)
            self.bytes_read += blk.nbytes
            if scale != 1.0:
                blk = blk * self.wdt.type(scale)
            z[start : start + blk.shape[0]] = T.multi_mode_product(
                blk, {n: factors[n].T for n in range(1, len(self.shape))}
            )
        self.pass_seconds.append(time.perf_counter() - t0)
        return z

    def residual_sq(self, core, factors, scale: float) -> float:
        import time

        t0 = time.perf_counter()
        scaled = T.ScaledSlabs(self.src, scale, self.wdt) if scale != 1.0 else self.src
        out = T.residual_sq(scaled, lambda s0, s1: T.tucker_rows(core, factors, s0, s1),
                            rows=self.rows)  # fmt: skip
        self.pass_seconds.append(time.perf_counter() - t0)
        return out

    def details(self) -> dict:
        return {"streaming": True, "slab_rows": int(self.rows),
                "passes": len(self.pass_seconds), "bytes_read": int(self.bytes_read),
                "pass_seconds": [round(t, 4) for t in self.pass_seconds]}  # fmt: skip

    def reason(self) -> str:
        return (f"streamed HOSVD-style: Grams of modes 1…{len(self.shape) - 1} summed over "
                f"slabs of {self.rows} rows (pass 1), those modes projected slab by slab "
                "(pass 2), mode 0 finished in memory")  # fmt: skip


def two_pass_hosvd(passes, shape, wdt, fixed, req, tol, max_memory, svd, warnings) -> Result:
    """The HOSVD-style variant of the module docstring ("Streaming") over the passes of
    ``passes`` (:class:`_SlabPasses` here, the workers' passes on the Dask engine): the rank
    rules, mode 0 on ``Z``, the certification and the report are the same for both."""
    n_modes = len(shape)
    grams_bytes = sum(i * i for i in shape[1:]) * 8
    # modes whose tail threshold a summed Gram cannot resolve get a TSQR R factor instead
    tsqr = {
        n
        for n in range(1, n_modes)
        if svd == "svd" or (svd == "auto" and T.svd_needed(tol, n_modes, shape[n]))
    }
    grams, norm_sq, amax = passes.grams(1.0, tsqr)
    scale = power_of_two_scale(amax, wdt)
    if scale != 1.0:
        grams, norm_sq, _ = passes.grams(scale, tsqr)
        e = int(round(math.log2(scale)))
        warnings.append(f"entries of magnitude near 2^{-e} were scaled by 2^{e} (exactly) to "
                        "keep the norms finite; the core is scaled back")  # fmt: skip
    details = {"working_dtype": str(wdt), "svd_path": svd, "scale": scale}
    rule = "ranks" if fixed is not None else "tol"
    threshold = req if fixed is not None else tol
    if norm_sq == 0.0:
        details.update(passes.details())
        return _zero_result(shape, wdt, fixed, rule, threshold, warnings, passes.method,
                            details)  # fmt: skip
    tol_sq = None if fixed is not None else tol**2 * norm_sq / n_modes
    factors = [None] * n_modes
    steps = []
    spectra = {}
    for n in range(1, n_modes):
        acc = grams.pop(n)
        if n in tsqr:
            lam, u = acc.eig()
            how = f"SVD of the {shape[n]}×{shape[n]} R factor accumulated over slabs (TSQR)"
        else:
            lam, u = T.gram_eig(acc)
            how = f"eigh of the {shape[n]}×{shape[n]} Gram summed over slabs"
        k = math.prod(shape) // shape[n]
        lam = lam[: min(shape[n], k)]
        if fixed is not None:
            r = max(1, min(fixed[n], lam.size))
        else:
            r = min(_rank_for(lam, tol_sq), lam.size)
            if (
                n not in tsqr
                and lam[0] > 0
                and tol_sq < T.RESOLVE_MARGIN * T.gram_resolution(lam[0], shape[n])
            ):
                warnings.append(f"mode {n}: the tol threshold is below what the summed Gram "
                                "resolves; the rank decision is limited by rounding")  # fmt: skip
        factors[n] = np.ascontiguousarray(u[:, :r], dtype=wdt)
        spectra[n] = lam
        steps.append(
            {
                "mode": n,
                "rank": int(r),
                "path": how,
                "of": "X",
                "discarded_energy": float(_tail(lam)[r]),
                "spectrum_sq": lam,
                "below_resolution": 0 if n in tsqr else T.below_resolution(lam),
            }
        )
    zshape = (shape[0], *(f.shape[1] for f in factors[1:]))
    zbytes = math.prod(zshape) * wdt.itemsize
    if max_memory is not None and zbytes + grams_bytes > max_memory:
        raise BudgetError(f"streamed tucker: the projected tensor {zshape} needs "
                          f"{T.human(zbytes)}, more than the memory budget of "
                          f"{T.human(max_memory)}; use smaller ranks or a larger tol")  # fmt: skip
    z = passes.project(factors, scale, zshape)
    lam, u, how = _leading(z, 0, svd, tol_sq)
    if fixed is not None:
        r0 = max(1, min(fixed[0], lam.size))
    else:
        r0 = min(_rank_for(lam, tol_sq), lam.size)
    factors[0] = np.ascontiguousarray(u[:, :r0], dtype=wdt)
    spectra[0] = lam
    steps.insert(
        0,
        {
            "mode": 0,
            "rank": int(r0),
            "path": how,
            "of": "Z = X ×_{n≥1} U_nᵀ",
            "discarded_energy": float(_tail(lam)[r0]),
            "spectrum_sq": lam,
            "below_resolution": T.below_resolution(lam) if "eigh" in how else 0,
        },
    )
    core = T.mode_product(z, factors[0].T, 0)
    core, factors = _compress_redundant(core, factors, warnings)
    del z
    core_sq = T.sq_norm(core)
    err_sq = norm_sq - core_sq
    gamma = 10.0 * sum(shape) * _eps(wdt) * norm_sq
    how_err = "identity ‖X‖² − ‖core‖² (orthonormal factors; float64 sums)"
    if err_sq < IDENTITY_MARGIN * gamma:
        err_sq = passes.residual_sq(core, factors, scale)
        gamma = 4.0 * _eps(np.float64) * norm_sq + 2.0 * _eps(wdt) * norm_sq
        how_err = "explicit residual (one more pass over slabs, float64)"
    err_sq = max(err_sq, 0.0)
    err = math.sqrt(err_sq / norm_sq)
    T.resolution_warnings(steps, warnings, "mode")
    tail_sum = sum(s["discarded_energy"] for s in steps)
    ranks_used = [f.shape[1] for f in factors]
    params = T.tucker_parameters(shape, ranks_used)
    inv = 1.0 / scale
    if fixed is None and err > tol * (1 + 1e-6) + math.sqrt(gamma / norm_sq):
        warnings.append(f"achieved error {err:.3g} exceeds tol {tol:g} beyond rounding")
    metrics = {
        "relative_frobenius_error": err, "error_method": how_err,
        "error_bounds": _bounds(err_sq, gamma, norm_sq), "norm_fro": math.sqrt(norm_sq) * inv,
        "a_priori_error_bound": tol if fixed is None else math.sqrt(tail_sum / norm_sq),
        "a_priori_kind": ("guaranteed: every tail ≤ ε²‖X‖²/N and "
                          "‖X − T‖² ≤ Σ_{n≥1} tail_n(X) + tail_0(Z)" if fixed is None else
                          "√(Σ_{n≥1} tail_n(X) + tail_0(Z))/‖X‖, an upper bound"),
        "tail_sum_error": math.sqrt(tail_sum / norm_sq),
        "ranks": ranks_used, "n_parameters": params,
        "compression_ratio": math.prod(shape) / params,
        "mode_singular_values": {k: [v * inv for v in vals]
                                 for k, vals in _spectra_report(spectra).items()},
        "mode_spectra_of": "X for modes 1…N-1 (Grams summed over slabs); Z for mode 0",
        "orthogonality_loss": {f"factors/{n}": orthogonality_loss(f)
                               for n, f in enumerate(factors)},
    }  # fmt: skip
    details.update(passes.details())
    details.update(steps=[{k: v for k, v in s.items() if k != "spectrum_sq"} for s in steps],
                   paths=sorted({s["path"] for s in steps}))  # fmt: skip
    rows_by = [{"rule": rule, "threshold": threshold, "ranks": ranks_used, "given": True}]
    rows_by += _tol_rows(rule, tol, shape, norm_sq, err_sq, core, None)
    rank = {"value": ranks_used, "rule": rule, "threshold": threshold,
            "max_rank": max_ranks(shape), "clamped": bool(req is not None and req != ranks_used),
            "by_rule": rows_by}  # fmt: skip
    arrays = {"core": np.ascontiguousarray(core * wdt.type(inv)) if scale != 1.0 else core}
    for n, f in enumerate(factors):
        arrays[f"factors/{n}"] = f
    return Result(
        arrays=arrays,
        method=passes.method,
        method_reason=passes.reason(),
        metrics=metrics,
        details=details,
        warnings=tuple(warnings),
        rank=rank,
    )


def tucker_to_tensor(core, factors, dtype=np.float64) -> np.ndarray:
    """Dense ``core ×_0 U_0 ×_1 U_1 …`` (small tensors and tests)."""
    return T.tucker_to_dense(core, factors, dtype)


__all__ = ["tucker", "check_parameters", "choose_core_shape", "clamp_ranks", "estimate_bytes",
           "packing_lower_bound", "tucker_to_tensor", "METHODS", "BUDGET_SEARCHES"]  # fmt: skip
