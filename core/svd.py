"""Truncated SVD / PCA: exact LAPACK, tall-skinny QR, randomized range finders, Lanczos
(block Lanczos of :mod:`rankwise.core.krylov`, ARPACK as its fallback) and streaming over row
blocks of a file.

Conventions
-----------
* ``A ≈ U diag(S) Vt`` with ``S`` descending; with ``center`` the column mean ``mean``
  is removed first (PCA: rows are samples, columns are features).
* Signs follow :func:`rankwise.core.linalg.svd_flip` (largest-magnitude entry of every
  column of ``U`` positive).
* At least one component is always returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import krylov, randomized
from .errors import BudgetError, ParameterError
from .errors import human_bytes as _human
from .linalg import eps, orth, orthogonality_loss, qr_tall, svd_flip, tall_svd, thin_svd
from .operator import (
    BlockOperator,
    CenteredOperator,
    DenseOperator,
    SparseOperator,
    as_operator,
    dense_matmat,
    dense_rmatmat,
    to_scipy_linear_operator,
)
from .rank import RankRule, Spectrum, ranks_by_rule, select_rank
from .validate import (
    abs_max,
    as_float_matrix,
    check_finite,
    check_matrix_shape,
    is_sparse,
    power_of_two_scale,
    working_dtype,
)

METHODS = ("auto", "exact", "randomized", "lanczos", "streaming")

# Below this min(m, n) a dense LAPACK SVD beats every iterative method.
SMALL_DIM = 500
# Randomized pays off while the sketch stays below this fraction of min(m, n): its
# 2(q+1) passes of 2mnℓ flops undercut an exact SVD's ~6–8 mn·min(m, n) only for
# ℓ ≲ min(m, n)/4.
RANDOMIZED_MAX_FRACTION = 0.25
# From this aspect ratio on, the exact SVD goes through a tall-skinny QR (CholeskyQR2):
# ~5mn² BLAS-3 flops against gesdd's bidiagonalisation.
TALL_RATIO = 4
# Densify sparse input for the exact path only below this many dense bytes.
SPARSE_DENSIFY_BYTES = 256 << 20
# Row blocks of the streaming method: at most this, and at most 1/16 of the budget (two
# are in flight, plus a converted copy when the stored dtype is not the working one).
STREAM_BLOCK_BYTES = 64 << 20
STREAM_BUDGET_SHARE = 16
# The norm identity resolves err² only down to ~gamma; below this many gammas the error
# is certified by an explicit residual instead (1% relative accuracy of the error).
_IDENTITY_MARGIN = 50.0
# Block size of the power method that estimates ‖A − UΣVᵀ‖₂, and the row blocks its fused
# products walk through (small enough to stay in cache between A·w and Aᵀ·y).
SPECTRAL_BLOCK = 8
RESIDUAL_BLOCK_BYTES = 2 << 20


@dataclass(frozen=True)
class Plan:
    method: str
    reason: str
    estimate_bytes: int
    working_dtype: str
    block_rows: int | None = None


@dataclass(frozen=True)
class SVDResult:
    U: np.ndarray
    S: np.ndarray
    Vt: np.ndarray
    mean: np.ndarray | None
    rank: dict
    method: str
    method_reason: str
    details: dict
    metrics: dict
    history: list = field(default_factory=list)
    converged: bool = True
    stop_reason: str = ""
    warnings: tuple = ()

    @property
    def arrays(self) -> dict:
        out = {"U": self.U, "S": self.S, "Vt": self.Vt}
        if self.mean is not None:
            out["mean"] = self.mean
        return out


def is_block_source(a) -> bool:
    return hasattr(a, "iter_blocks") and not isinstance(a, np.ndarray) and not is_sparse(a)


def stream_block_rows(shape, itemsize: int, max_memory: int | None, chunk_rows=None) -> int:
    """Rows per block: ≤ STREAM_BLOCK_BYTES and ≤ budget/16, a multiple of the storage
    chunk's rows so that every chunk is decoded once per pass."""
    m, n = (int(s) for s in shape)
    cap = STREAM_BLOCK_BYTES
    if max_memory is not None:
        cap = min(cap, max_memory // STREAM_BUDGET_SHARE)
    rows = max(1, cap // max(1, n * itemsize))
    if chunk_rows:
        c = int(chunk_rows)
        rows = max(c, (rows // c) * c)
    return int(min(rows, m))


def estimate_bytes(method: str, shape, dtype, *, sparse: bool, nnz: int | None,
                   rank: int | None, oversample: int, center: bool, block_rows: int | None = None,
                   max_memory: int | None = None) -> int:  # fmt: skip
    """Peak bytes of the input in memory plus the method's working set (for ``lanczos``, of
    the largest basis that fits ``max_memory``, see :func:`krylov.fit_budget`)."""
    m, n = (int(s) for s in shape)
    r = min(m, n)
    w = np.dtype(dtype).itemsize
    # Accuracy rules grow the basis adaptively and check the budget as they go; plan for
    # the first couple of blocks.
    ell = min(r, rank + oversample if rank else 128)
    if method == "streaming":
        rows = block_rows or stream_block_rows(shape, w, None)
        # two raw blocks in flight, a converted copy and the block products
        blocks = 3 * rows * n * w + 3 * rows * ell * w
        return blocks + randomized.streaming_bytes(m, n, ell, w, min(rank or ell, r))
    stored = (int(nnz or 0) * (w + 4) + (m + 1) * 8) if sparse else m * n * w
    if method == "exact":
        dense = m * n * w
        if max(m, n) >= TALL_RATIO * r and not sparse:
            # Q1 and U next to the input; the n×n factors are small
            return stored + (dense if center else 0) + 2 * dense + 6 * r * r * w
        # densified or centred copy, LAPACK's working copy, U and Vt, workspace
        extra = (dense if (sparse or center) else 0) + dense + (m + n) * r * w + 4 * r * r * w
        return stored + extra
    if method == "lanczos":
        # the block Krylov solver (ARPACK, its fallback, needs less); accuracy rules double
        # the rank from 16, planned for the first few doublings
        k = max(1, min(rank if rank else ell, r - 1))
        threads = krylov.default_threads()
        try:
            sz, threads, _ = krylov.fit_budget(m, n, k, w, threads, max_memory, stored)
        except BudgetError:  # report what the default basis would need
            sz = krylov.sizes(k, r)
        return stored + krylov.working_bytes(m, n, k, w, threads, sz)
    # randomized: Q, a sketch and B plus the small SVD
    return stored + 3 * (m + n) * ell * w + 2 * ell * ell * w


def plan(shape, dtype, *, rule: RankRule, method: str = "auto", sparse: bool = False,
         nnz: int | None = None, center: bool = False, oversample: int = 10,
         max_memory: int | None = None, streamable: bool = False,
         chunk_rows: int | None = None) -> Plan:  # fmt: skip
    """Choose the method (when ``auto``) and check it fits the memory budget, before any
    data is read. ``streamable`` says the input can be read in row blocks (a chunked
    dense file); then an input too large for memory is streamed instead of refused."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    check_matrix_shape(shape, method="svd")
    wdt = working_dtype(dtype, method="svd")
    m, n = (int(s) for s in shape)
    r = min(m, n)
    k = min(int(rule.value), r) if rule.kind == "rank" else None
    rows = stream_block_rows(shape, wdt.itemsize, max_memory, chunk_rows)

    def est(meth):
        return estimate_bytes(meth, shape, wdt, sparse=sparse, nnz=nnz, rank=k,
                              oversample=oversample, center=center, block_rows=rows,
                              max_memory=max_memory)  # fmt: skip

    def fits(meth):
        return max_memory is None or est(meth) <= max_memory

    if method == "lanczos" and ((k is not None and k >= r) or r < 2):
        raise ParameterError(f"lanczos needs a rank below min(m, n) = {r}; use --method exact")
    if method == "streaming" and sparse:
        raise ParameterError("streaming reads dense row blocks; sparse input is in memory")
    if method != "auto":
        chosen, reason = method, "requested"
    else:
        chosen, reason = _auto(m, n, wdt, sparse, k, rule, oversample, fits)
        if not fits(chosen) and streamable and not sparse:
            need = est(chosen)
            chosen = "streaming"
            reason = (
                f"in memory the input and working set need about {_human(need)}, more than "
                f"the memory budget of {_human(max_memory)}: streaming row blocks of {rows} "
                "rows, one pass over the file per power iteration"
            )
    if not fits(chosen):
        hint = "" if streamable or chosen == "streaming" else " (only chunked dense files stream)"
        raise BudgetError(
            f"svd --method {chosen} needs about {_human(est(chosen))} for shape {m}×{n} "
            f"{wdt}{' (sparse)' if sparse else ''} but the memory budget is "
            f"{_human(max_memory)}{hint}"
        )
    return Plan(chosen, reason, est(chosen), str(wdt), rows if chosen == "streaming" else None)


def _auto(m, n, wdt, sparse, k, rule, oversample, fits):
    r = min(m, n)
    dense_bytes = m * n * wdt.itemsize
    if sparse:
        small = dense_bytes <= SPARSE_DENSIFY_BYTES and fits("exact")
        if small and (k is None or r <= 2 * SMALL_DIM):
            return "exact", (
                f"sparse but small ({m}×{n}, {_human(dense_bytes)} dense): densified, "
                "dense LAPACK is exact and fastest at this size"
            )
        if k is not None and k < r - 1 and r > 2:
            return "lanczos", (
                f"sparse input with fixed rank {k} ≪ min(m, n) = {r}: block Lanczos on the "
                "sparse operator (thick restarts, block products split over threads), never "
                "densified; it matches ARPACK's accuracy in less time, while the randomized "
                "range finder is faster but leaves σ_k off by up to ~10% on flat spectra"
            )
        return "randomized", (
            "sparse input with an accuracy rule: adaptive randomized range finder on the "
            "sparse operator, never densified"
        )
    tall = max(m, n) >= TALL_RATIO * r
    if r <= SMALL_DIM or (tall and k is None and fits("exact")):
        shape_txt = "tall-skinny" if tall else "small"
        return "exact", (
            f"{shape_txt} matrix ({m}×{n}): exact SVD"
            + (" through CholeskyQR2 of the long side" if tall else " by LAPACK")
        )
    if k is not None:
        ell = k + oversample
        if ell <= RANDOMIZED_MAX_FRACTION * r:
            return "randomized", (
                f"rank {k} + oversampling {oversample} ≤ {RANDOMIZED_MAX_FRACTION:g}·min(m, n)"
                f" = {RANDOMIZED_MAX_FRACTION * r:g}: randomized range finder needs fewer flops"
            )
        if not fits("exact") and fits("randomized"):
            return "randomized", "exact SVD does not fit the memory budget: randomized"
        return "exact", (
            f"rank {k} + oversampling is a large fraction of min(m, n) = {r}: "
            "an exact SVD is cheaper than a large sketch"
        )
    if fits("exact"):
        return "exact", (
            f"accuracy rule ({rule.kind}) on a dense matrix that fits the memory budget: "
            "exact LAPACK gives the whole spectrum"
        )
    return "randomized", "exact SVD does not fit the memory budget: adaptive randomized"


def check_parameters(
    *, oversample: int = 10, power_iters: int | None = None, block_size: int | None = None,
    spectral_iters: int | None = None,
) -> None:  # fmt: skip
    """Refuse invalid numeric parameters (callers run this before reading any data)."""
    if oversample < 0:
        raise ParameterError(f"oversample must be ≥ 0, got {oversample}")
    if power_iters is not None and power_iters < 0:
        raise ParameterError(f"power iterations must be ≥ 0, got {power_iters}")
    if block_size is not None and block_size < 1:
        raise ParameterError(f"block size must be ≥ 1, got {block_size}")
    if spectral_iters is not None and spectral_iters < 0:
        raise ParameterError(f"spectral iterations must be ≥ 0, got {spectral_iters}")


def truncated_svd(a, rule: RankRule, *, method: str = "auto", center: bool = False,
                  rng: np.random.Generator | int | None = None, oversample: int = 10,
                  power_iters: int | None = None, block_size: int | None = None,
                  max_memory: int | None = None, spectral_iters: int | None = None,
                  block_rows: int | None = None, on_first_pass=None, callback=None,
                  planned: Plan | None = None, resume: dict | None = None,
                  overwrite_a: bool = False) -> SVDResult:  # fmt: skip
    """Truncated SVD of a dense array, a sparse matrix or a row-block source.

    A row-block source (anything with ``shape``, ``dtype`` and ``iter_blocks(rows)``, such
    as a chunked file handle) is streamed and never loaded whole, unless the plan finds it
    fits in memory; ``on_first_pass(start, block)`` sees every raw block of the first pass.
    ``power_iters=None`` lets the randomized methods stop iterating when the error estimate
    settles. ``spectral_iters`` power iterations estimate ‖A − UΣVᵀ‖₂ (default 2 in memory,
    1 when streaming). ``callback(event)`` runs after each step of the iterative methods;
    returning True stops the solver (the result then says ``converged=False``). ``planned``
    is the :func:`plan` a caller already made before reading (its method and reason are
    kept). Data whose magnitude would overflow or underflow squared norms is scaled by an
    exact power of two internally. ``resume``: a streaming run's ``event["state"]()``, on
    the same unchanged source with the same parameters (streaming only). ``overwrite_a``: a
    dense ``a`` may be destroyed (the tall-skinny exact path then allocates no m×n array).
    """
    import contextlib

    with contextlib.ExitStack() as scope:  # holds what a branch enters until the result
        return _truncated_svd(
            a, rule, scope=scope, method=method, center=center, rng=rng, oversample=oversample,
            power_iters=power_iters, block_size=block_size, max_memory=max_memory,
            spectral_iters=spectral_iters, block_rows=block_rows, on_first_pass=on_first_pass,
            callback=callback, planned=planned, resume=resume, overwrite_a=overwrite_a,
        )  # fmt: skip


def _truncated_svd(a, rule: RankRule, *, scope, method, center, rng, oversample, power_iters,
                   block_size, max_memory, spectral_iters, block_rows, on_first_pass,
                   callback, planned, resume, overwrite_a) -> SVDResult:  # fmt: skip
    check_parameters(oversample=oversample, power_iters=power_iters, block_size=block_size,
                     spectral_iters=spectral_iters)  # fmt: skip
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    source = a if is_block_source(a) else None
    if source is None:
        a = as_float_matrix(a, method="svd")
        check_finite(a, method="svd")
        if method == "streaming":
            source = _ArraySource(a)
    else:
        check_matrix_shape(source.shape, method="svd")
        if method not in ("auto", "streaming"):
            raise ParameterError(f"a row-block source is streamed; --method {method} needs it "
                                 "in memory")  # fmt: skip
    shape = tuple(int(s) for s in (source.shape if source is not None else a.shape))
    dtype = source.dtype if source is not None else a.dtype
    sparse = source is None and is_sparse(a)
    m, n = shape
    r = min(m, n)
    warnings: list[str] = []
    if rule.kind == "rank" and rule.value > r:
        warnings.append(f"rank {int(rule.value)} exceeds min(m, n) = {r}; clamped to {r}")
    p = planned or plan(shape, dtype, rule=rule, method=method, sparse=sparse,
                        nnz=a.nnz if sparse else None, center=center, oversample=oversample,
                        max_memory=max_memory, streamable=source is not None,
                        chunk_rows=_chunk_rows(source))  # fmt: skip
    if source is not None and p.method != "streaming":
        if is_block_source(a):  # it fits after all: gather the blocks (the plan checked)
            a = _gather(source, p, max_memory, on_first_pass)
            sparse = is_sparse(a)
        source = None
    wdt = np.dtype(p.working_dtype)
    used, reason = p.method, p.reason
    if resume is not None and used != "streaming":
        raise ParameterError(f"only the streaming method resumes; this run is {used}")
    scale = 1.0
    fact = None
    if used == "streaming":
        op = BlockOperator(source, block_rows=block_rows or p.block_rows, dtype=wdt,
                           on_first_pass=on_first_pass)  # fmt: skip
        if op.parallel and rule.kind == "rank" and int(rule.value) + oversample <= 64:
            # the steps between passes too (see BlockOperator.parallel): with a thin basis
            # they are small; a wider or growing one keeps its threads for its m×ℓ steps
            from .threads import one_blas_thread

            scope.enter_context(one_blas_thread())
        fact = randomized.streaming(op, rule, oversample=oversample, power_iters=power_iters,
                                    rng=rng, center=center, max_memory=max_memory,
                                    warnings=warnings, callback=callback,
                                    resume=resume)  # fmt: skip
        scale = op.scale
        mean = None if fact.mean is None else fact.mean
        if center:
            op = CenteredOperator(op, fact.mean)
    else:
        scale = power_of_two_scale(abs_max(a), a.dtype)
        if scale != 1.0:
            a = a * scale
        op = as_operator(a, center=center)
        mean = np.asarray(op.mean, dtype=a.dtype) if center else None
    if scale != 1.0:
        warnings.append(f"entries of magnitude near 2^{-int(np.log2(scale))} were scaled by "
                        f"2^{int(np.log2(scale))} (exactly) to keep the norms finite")  # fmt: skip
    work_rule = rule.scaled(scale)
    # With auto, an accuracy rule that needs a basis beyond a quarter of min(m, n) is
    # cheaper by an exact SVD, when that fits.
    exact_fits = used != "streaming" and (
        max_memory is None
        or estimate_bytes("exact", shape, wdt, sparse=sparse, nnz=a.nnz if sparse else None,
                          rank=None, oversample=oversample, center=center) <= max_memory
    )  # fmt: skip
    max_basis = int(RANDOMIZED_MAX_FRACTION * r) if (method == "auto" and exact_fits) else r
    err_sq = None
    try:
        if used == "exact":
            u, s, vt, spec, details = _exact(a, op, sparse=sparse, center=center, rule=work_rule,
                                             overwrite=overwrite_a or scale != 1.0)  # fmt: skip
        elif used == "lanczos":
            base = a.data.nbytes + a.indices.nbytes + a.indptr.nbytes if sparse else a.nbytes
            u, s, vt, spec, details, err_sq = _lanczos(
                op, work_rule, rng, callback, max_basis, max_memory=max_memory, base_bytes=base
            )
        else:
            if fact is None and rule.kind == "rank":
                fact = randomized.fixed_rank(op, min(int(rule.value), r), oversample=oversample,
                                             power_iters=power_iters, rng=rng,
                                             callback=callback)  # fmt: skip
            elif fact is None:
                base = a.data.nbytes + a.indices.nbytes + a.indptr.nbytes if sparse else a.nbytes
                fact = randomized.adaptive_qb(
                    op, work_rule, power_iters=2 if power_iters is None else power_iters,
                    rng=rng, block=block_size, max_memory=max_memory, base_bytes=base,
                    warnings=warnings, callback=callback, max_basis=max_basis,
                )  # fmt: skip
            u, s, vt, spec, details, err_sq = _finish(fact, work_rule)
    except randomized.BasisLimit as exc:
        reason += f"; switched to exact: {exc}"
        used = "exact"
        u, s, vt, spec, details = _exact(a, op, sparse=sparse, center=center)
    k = select_rank(spec, work_rule)
    if k is None:  # the spectrum computed cannot meet the rule; keep all of it
        k = len(s)
        warnings.append(f"{rule.kind} = {rule.value:g} not reached within the computed rank {k}")
    u, s, vt = u[:, :k], s[:k], vt[:k]
    if err_sq is not None:
        err_sq = err_sq[k]
    u, vt = svd_flip(np.ascontiguousarray(u), np.ascontiguousarray(vt))
    if spectral_iters is None:
        spectral_iters = 1 if used == "streaming" else 2
    metrics = _certify(op, u, s, vt, spec, used, k, err_sq, rng, spectral_iters)
    details["spectral_iters"] = None if used == "exact" else int(spectral_iters)
    metrics["singular_values_computed"] = [float(x) for x in spec.s]
    by_rule = ranks_by_rule(spec, work_rule)
    by_rule[0]["threshold"] = rule.value
    if scale != 1.0:
        s = s / scale
        mean = None if mean is None else mean / scale
        _unscale_metrics(metrics, scale)
    base_op = op.base if isinstance(op, CenteredOperator) else op
    if isinstance(base_op, BlockOperator):
        details["passes"] = base_op.passes
        details["bytes_read"] = int(base_op.bytes_read)
        details["pass_seconds"] = [round(t, 4) for t in base_op.pass_seconds]
    rank = {
        "value": int(k),
        "rule": rule.kind,
        "threshold": rule.value,
        "max_rank": int(r),
        "clamped": bool(rule.kind == "rank" and rule.value > r),
        "by_rule": by_rule,
    }
    history = details.pop("history", [])
    converged = details.pop("converged", True)
    stop_reason = details.pop("stop_reason", "direct method")
    details = {"working_dtype": p.working_dtype, "estimate_bytes": p.estimate_bytes,
               "scale": scale, **details}  # fmt: skip
    return SVDResult(
        U=u, S=np.ascontiguousarray(s, dtype=wdt), Vt=vt,
        mean=None if mean is None else np.asarray(mean, dtype=wdt), rank=rank, method=used,
        method_reason=reason, details=details, metrics=metrics, history=history,
        converged=converged, stop_reason=stop_reason, warnings=tuple(warnings),
    )  # fmt: skip


def _unscale_metrics(metrics: dict, scale: float) -> None:
    metrics["norm_fro"] /= scale
    for key in ("singular_values", "singular_values_computed"):
        metrics[key] = [x / scale for x in metrics[key]]
    spec = metrics["spectral_residual"]
    for key in ("value", "upper_bound", "sketch_sigma_next", "power_estimate"):
        if spec.get(key) is not None:
            spec[key] /= scale


class _ArraySource:
    """An in-memory array seen as a row-block source (``--method streaming`` on a read array)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype = a, a.shape, a.dtype
        self.chunks = None

    def iter_blocks(self, rows):
        for start in range(0, self.shape[0], rows):
            yield start, self.a[start : start + rows]


def _gather(source, p: Plan, max_memory, on_first_pass):
    rows = stream_block_rows(source.shape, np.dtype(p.working_dtype).itemsize, max_memory,
                             _chunk_rows(source))  # fmt: skip
    parts = []
    for start, blk in source.iter_blocks(rows):
        if on_first_pass is not None:
            on_first_pass(start, blk)
        parts.append(blk)
    if parts and is_sparse(parts[0]):
        import scipy.sparse as sp

        a = sp.vstack(parts, format="csr")
    else:
        a = np.concatenate(parts, axis=0)
    a = as_float_matrix(a, method="svd")
    check_finite(a, method="svd")
    return a


def _chunk_rows(source):
    chunks = getattr(source, "chunks", None) if source is not None else None
    return int(chunks[0]) if chunks else None


# --- exact -----------------------------------------------------------------------------


def _exact(a, op, *, sparse, center, rule=None, overwrite=False):
    m, n = a.shape
    r = min(m, n)
    owned = sparse or center  # op.dense() is then a fresh array
    mat = op.dense() if owned else a
    if max(m, n) >= TALL_RATIO * r and not sparse:

        def select(sv):  # the rank is known before U is formed
            spec = Spectrum(s=sv, total_sq=0.0, max_rank=r, complete=True)
            return select_rank(spec, rule) if rule is not None else r

        u, s, vt, driver = tall_svd(mat, select=select, overwrite=owned or overwrite)
    elif owned:
        u, s, vt, driver = thin_svd(mat, overwrite=True, recompute=op.dense)
    else:
        u, s, vt, driver = thin_svd(a)
    spec = Spectrum(s=s, total_sq=float(np.sum(s.astype(np.float64) ** 2)), max_rank=r,
                    complete=True)  # fmt: skip
    details = {"lapack_driver": driver, "densified": bool(sparse)}
    return u, s, vt, spec, details


# --- randomized: finishing a factorisation ----------------------------------------------


def _finish(fact: randomized.Factorisation, rule: RankRule):
    """SVD of the small factor. Returns u, s, vt, the spectrum and the error² for every k
    from the norm identity, which is exact for these factorisations (see randomized)."""
    if fact.left_orthonormal:  # A ≈ Q B
        ub, s, vt, driver = thin_svd(np.ascontiguousarray(fact.right))
        u = fact.left @ ub
        how = f"{driver} of B"
    else:  # A ≈ Y Wᵀ, W orthonormal: Y = Q R, R = Ur Σ Ṽᵀ
        q, rr, qr_how = qr_tall(fact.left, overwrite=True)
        ur, s, vtr, driver = thin_svd(rr)
        u = q @ ur
        vt = vtr @ fact.right
        how = f"{qr_how} of A·W + {driver} of R"
    m, n = u.shape[0], vt.shape[1]
    r = min(m, n)
    spec = Spectrum(s=s, total_sq=fact.total_sq, max_rank=r, complete=len(s) >= r)
    s2 = np.concatenate([[0.0], np.cumsum(np.asarray(s, np.float64) ** 2)])
    err_sq = np.maximum(fact.total_sq - s2, 0.0)
    details = {**fact.details, "small_svd": how, "history": fact.history,
               "converged": fact.converged, "stop_reason": fact.stop_reason}  # fmt: skip
    return u, s, vt, spec, details, err_sq


# --- Lanczos ---------------------------------------------------------------------------

# "block": thick-restarted block Lanczos on the Gram operator (rankwise.core.krylov), with
# ARPACK as the fallback when it does not converge; "arpack": scipy.sparse.linalg.svds only.
LANCZOS_SOLVER = "block"


def _lanczos(op, rule, rng, callback, max_basis: int, *, max_memory=None, base_bytes=0,
             solver: str | None = None):  # fmt: skip
    """Leading singular triplets by a Lanczos method; for accuracy rules the rank doubles
    until the rule is met. Returns u, s, vt, the spectrum, details and the error² per rank
    (None when it has to be computed from the factors).

    ``solver="block"`` (the default, LANCZOS_SOLVER) runs the block Krylov solver of
    :mod:`rankwise.core.krylov` and falls back to ARPACK when that does not converge within
    its product limit; ``"arpack"`` runs ``scipy.sparse.linalg.svds`` only. ``details["solver"]``
    says which ran."""
    m, n = op.shape
    r = min(m, n)
    solver = solver or LANCZOS_SOLVER
    total = op.fro_norm_sq()
    k = min(int(rule.value), r - 1) if rule.kind == "rank" else min(16, r - 1)
    if total == 0.0:  # Lanczos cannot start on a zero operator; every basis is optimal
        k = max(1, k)
        u, vt = np.eye(m, k, dtype=op.dtype), np.eye(k, n, dtype=op.dtype)
        spec = Spectrum(s=np.zeros(k, dtype=op.dtype), total_sq=0.0, max_rank=r, complete=False)
        return (u, spec.s, vt, spec,
                {"solver": "none (zero matrix)", "stop_reason": "zero matrix"}, None)  # fmt: skip
    history: list = []
    stop_reason = ""
    converged = True
    extra: dict = {}
    while True:
        err_sq = None
        status = "arpack"
        if solver == "block":
            # Rank rules also report σ_{k+1}, σ_{k+2} (lower estimates); accuracy rules see
            # only converged values, so that an underestimate cannot end the rank early.
            fact, status = krylov.gram_svd(
                op, k, rng=rng, total=total, max_memory=max_memory, base_bytes=base_bytes,
                extra=krylov.FINAL_EXTRA if rule.kind == "rank" else 0,
                callback=callback if rule.kind == "rank" else None,
            )  # fmt: skip
            if status == "not converged":
                extra = {"solver": "arpack",
                         "fallback_reason": f"block Lanczos: {fact.stop_reason}"}  # fmt: skip
            else:
                with _small_blas(fact):
                    u, s, vt, spec, fdet, err_sq = _finish(fact, rule)
                extra = {key: val for key, val in fdet.items()
                         if key not in ("history", "converged", "stop_reason")}  # fmt: skip
                how = fact.stop_reason
                history.extend({**ev, "rank": int(k), "step": len(history) + 1}
                               for ev in fdet["history"])  # fmt: skip
        else:
            extra = {"solver": "arpack"}
        if extra["solver"] == "arpack":
            u, s, vt, spec = _arpack(op, k, rng, total)
            how = "ARPACK converged" + (" (fallback)" if solver == "block" else "")
            history.append({"step": len(history) + 1, "rank": int(k), "solver": "arpack"})
        if status == "stopped":
            converged, stop_reason = False, "stopped by callback"
            break
        if rule.kind == "rank":
            stop_reason = how
            break
        if select_rank(spec, rule) is not None:
            stop_reason = f"{rule.kind} met with {k} singular triplets"
            break
        if k >= r - 1:
            converged = False
            stop_reason = f"{rule.kind} not met below min(m, n) - 1 = {r - 1} triplets"
            break
        if callback is not None and callback(dict(history[-1])):
            converged, stop_reason = False, "stopped by callback"
            break
        k = min(2 * k, r - 1)
        if k > max_basis:
            raise randomized.BasisLimit(
                f"{rule.kind} needs more than {max_basis} Lanczos triplets (min(m, n) = {r})"
            )
    details = {**extra, "history": history, "converged": converged,
               "stop_reason": stop_reason}  # fmt: skip
    return u, s, vt, spec, details, err_sq


def _small_blas(fact):
    """One BLAS thread for finishing a thin factorisation (a QR or SVD of ℓ ≤ 64 columns and
    an m×ℓ·ℓ×ℓ product): threads gain little there and, spinning on a shared machine, cost
    up to 10× (measured 0.58 s against 0.035 s on the sparse benchmark)."""
    import contextlib

    from .threads import one_blas_thread

    if min(fact.left.shape[1], fact.right.shape[0]) > 64:
        return contextlib.nullcontext()
    return one_blas_thread()


def _arpack(op, k, rng, total):
    """ARPACK (scipy.sparse.linalg.svds, tol=0) on the matrix or the operator."""
    from scipy.sparse.linalg import svds

    m, n = op.shape
    r = min(m, n)
    # The matrix itself when it has one (scipy's own products), else the operator.
    lin = op.a if isinstance(op, SparseOperator | DenseOperator) else to_scipy_linear_operator(op)
    v0 = randomized.gaussian(rng, (r,), op.dtype)
    u, s, vt = svds(lin, k=k, v0=v0, tol=0, solver="arpack", return_singular_vectors=True)
    order = np.argsort(s)[::-1]
    u, s, vt = u[:, order], s[order], vt[order]
    return u, s, vt, Spectrum(s=s, total_sq=total, max_rank=r, complete=False)


# --- certification ---------------------------------------------------------------------


def _certify(op, u, s, vt, spec: Spectrum, method: str, k: int, err_sq, rng,
             spectral_iters: int) -> dict:  # fmt: skip
    total = spec.norm_sq
    out = {
        "norm_fro": math.sqrt(total),
        "singular_values": [float(x) for x in s],
        "orthogonality_loss": {"U": orthogonality_loss(u), "V": orthogonality_loss(vt.T)},
    }
    if total == 0.0:
        out.update(relative_frobenius_error=0.0, error_method="zero matrix",
                   error_bounds=[0.0, 0.0], explained_energy=1.0,
                   spectral_residual={"value": 0.0, "relative": 0.0,
                                      "method": "zero matrix"})  # fmt: skip
        return out
    if method == "exact":
        err_sq = float(spec.tail_sq()[k])
        err = math.sqrt(err_sq / total)
        # A backward-stable SVD reproduces A to ~eps·‖A‖ times a modest size factor, which
        # the written factors carry on top of the truncation error.
        slack = 10.0 * math.sqrt(len(spec.s)) * eps(u.dtype)
        out.update(relative_frobenius_error=err, error_method="spectrum tail (exact)",
                   error_bounds=[max(err - slack, 0.0), err + slack])  # fmt: skip
        nxt = float(spec.s[k]) if k < len(spec.s) else 0.0
        out["spectral_residual"] = {"value": nxt, "relative": nxt / float(spec.s[0]),
                                    "method": "σ_{k+1} of the exact spectrum"}  # fmt: skip
    else:
        gamma = 10.0 * (k + 1) * eps(u.dtype) * total
        if err_sq is not None:
            how = "norm identity ‖A‖² − Σ_{i≤k} σᵢ² (exact for the range-finder factorisation)"
        else:
            # ‖A − UΣVᵀ‖² = ‖A‖² − 2 Σ σᵢ uᵢᵀ A vᵢ + Σ σᵢ² for orthonormal U, V: one pass.
            av = op.matmat(np.ascontiguousarray(vt.T))
            uav = np.einsum("ij,ij->j", np.asarray(u, np.float64), np.asarray(av, np.float64))
            cross = float(uav @ np.asarray(s, np.float64))
            s64 = np.asarray(s, dtype=np.float64)
            err_sq = total - 2.0 * cross + float(s64 @ s64)
            how = "norm identity ‖A‖² − 2ΣσᵢuᵢᵀAvᵢ + Σσᵢ²"
        if err_sq < _IDENTITY_MARGIN * gamma and _residual_affordable(op):
            err_sq = _explicit_residual_sq(op, u, s, vt)
            gamma = 4.0 * eps(np.float64) * total + 2.0 * eps(u.dtype) * total
            how = "explicit residual (row blocks, float64)"
        err_sq = max(err_sq, 0.0)
        lo = math.sqrt(max(err_sq - gamma, 0.0) / total)
        hi = math.sqrt((err_sq + gamma) / total)
        out.update(relative_frobenius_error=math.sqrt(err_sq / total), error_method=how,
                   error_bounds=[lo, hi])  # fmt: skip
        nxt = float(spec.s[k]) if k < len(spec.s) else None
        out["spectral_residual"] = _spectral_residual(op, u, s, vt, rng, spectral_iters,
                                                      math.sqrt(err_sq), nxt)  # fmt: skip
    out["explained_energy"] = 1.0 - out["relative_frobenius_error"] ** 2
    return out


def _spectral_residual(op, u, s, vt, rng, iters: int, fro: float, sketch_next=None) -> dict:
    """Lower estimate of ‖R‖₂, R = A − UΣVᵀ, bracketed by the Frobenius error above.

    Block Krylov on RᵀR: the iterates W₀, W₁ = orth(RᵀR W₀), … span a Krylov space and
    Rayleigh–Ritz over all of it (not only the last block) gives the estimate; every
    Ritz value is ≤ ‖R‖₂². ``sketch_next`` = σ_{k+1} of the sketch, also ≤ ‖R‖₂.
    """
    s1 = float(s[0]) if len(s) else 1.0
    floor = float(sketch_next) if sketch_next is not None else 0.0
    out = {"upper_bound": fro, "sketch_sigma_next": sketch_next}
    if iters == 0:
        value = floor if sketch_next is not None else None
        out.update(value=value, relative=None if value is None else value / s1,
                   method="σ_{k+1} of the sketch (a lower bound); no power iterations")  # fmt: skip
        return out
    import scipy.linalg as sla

    n = op.shape[1]
    b = min(SPECTRAL_BLOCK, n)
    sv = np.asarray(s, dtype=u.dtype)[:, None]
    w = orth(randomized.gaussian(rng, (n, b), u.dtype))
    ws, zs = [], []
    for _ in range(iters):
        z = _residual_gram(op, u, sv, vt, w)
        ws.append(w)
        zs.append(z)
        w = orth(z.copy())  # orth may reuse its argument's buffer
    # Orthonormal basis Q = K V Σ⁻¹ of the Krylov blocks K (rank-revealing: dependent
    # directions dropped), so RᵀR Q = Z V Σ⁻¹ with the products Z already computed.
    kq, ks, kvt = sla.svd(np.hstack(ws), full_matrices=False, check_finite=False)
    keep = ks > 1e3 * eps(u.dtype) * ks[0]
    q = kq[:, keep]
    h = q.T @ (np.hstack(zs) @ (kvt[keep].T / ks[keep]))
    ritz = sla.eigvalsh((h + h.T) / 2, check_finite=False)
    est = math.sqrt(max(float(ritz[-1]), 0.0))
    value = max(est, floor)
    out.update(value=value, relative=value / s1, power_estimate=est,
               method=f"block Krylov Rayleigh–Ritz on RᵀR ({b} vectors, {iters} product(s)), "
                      "max with σ_{k+1} of the sketch; a lower estimate of ‖R‖₂")  # fmt: skip
    return out


def _residual_gram(op, u, sv, vt, w):
    """RᵀR W for R = A − UΣVᵀ: two products in memory, one pass over a streamed file."""
    c = sv * (vt @ w)  # ΣVᵀW
    centered = isinstance(op, CenteredOperator)
    base = op.base if centered else op
    if isinstance(base, BlockOperator):
        blocks = base._blocks()
    elif isinstance(base, DenseOperator):
        # Small row blocks stay in cache between the two products: one read of A.
        rows = max(1, (RESIDUAL_BLOCK_BYTES // max(1, base.shape[1] * base.dtype.itemsize)))
        blocks = base.row_blocks(rows)
    else:
        y = op.matmat(w) - u @ c
        return op.rmatmat(y) - vt.T @ (sv * (u.T @ y))
    shift = op.mean @ w if centered else None
    z = np.zeros((op.shape[1], w.shape[1]), dtype=u.dtype)
    uty = np.zeros((u.shape[1], w.shape[1]), dtype=u.dtype)
    ysum = np.zeros(w.shape[1], dtype=u.dtype)
    for start, blk in blocks:
        rows = slice(start, start + blk.shape[0])
        yb = dense_matmat(blk, w) - u[rows] @ c
        if shift is not None:
            yb -= shift
            ysum += yb.sum(axis=0)
        z += dense_rmatmat(blk, yb)
        uty += u[rows].T @ yb
    if shift is not None:
        z -= np.outer(op.mean, ysum)
    return z - vt.T @ (sv * uty)


def _residual_affordable(op) -> bool:
    # A residual pass densifies row blocks: fine for dense data in memory, and for sparse
    # data only while m·n stays modest; a streamed file would cost one more pass.
    m, n = op.shape
    kind = getattr(op, "base", op).kind
    return kind == "dense" or (kind == "sparse" and m * n <= 1 << 28)


def _explicit_residual_sq(op, u, s, vt) -> float:
    sv = np.asarray(s, np.float64)[:, None] * np.asarray(vt, np.float64)
    u64 = np.asarray(u, np.float64)
    total = 0.0
    for start, blk in op.row_blocks():
        rb = np.asarray(blk, np.float64) - u64[start : start + blk.shape[0]] @ sv
        total += float(np.einsum("ij,ij->", rb, rb))
    return total


__all__ = ["METHODS", "Plan", "SVDResult", "plan", "truncated_svd", "estimate_bytes",
           "is_block_source", "stream_block_rows", "BudgetError"]  # fmt: skip
