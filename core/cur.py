"""CUR / interpolative decomposition: ``A ≈ C U R`` with ``C`` actual columns and ``R``
actual rows of ``A``.

Selection
---------
* Columns: the first k pivots of a column-pivoted QR (LAPACK geqp3). ``method="exact"``
  pivots ``A`` itself (dense; O(mn·min(m, n))). ``method="randomized"`` pivots the ℓ×n matrix
  ``B = QᵀA`` of a randomized range finder ``Q`` (ℓ = k + oversample, ``power_iters`` subspace
  iterations; Halko, Martinsson & Tropp 2011; Voronin & Martinsson 2017): the pivoted QR sees
  every column of A through its coordinates in the dominant subspace, for O(mnℓ) work.
* Rows: Q-DEIM (Drmač & Gugercin 2016) on the chosen columns: the first k pivots of a
  column-pivoted QR of ``Q_Cᵀ`` where ``C = Q_C R_C``. The rows are those that best
  interpolate the column space of ``C``, which is what ``U`` must map into.
* ``U = C⁺ A R⁺``, the choice that minimises ``‖A − C U R‖_F`` for the chosen C and R, computed
  from thin QR factors ``C = Q_C R_C``, ``Rᵀ = Q_R R_R`` as ``U = R_C⁺ (Q_Cᵀ A Q_R) R_R⁺ᵀ`` with
  least-squares solves of the small triangular factors (rank-deficient ones are handled by
  the minimum-norm solution; no pseudo-inverse of C is formed).

Conventions
-----------
* ``rows`` and ``cols`` are sorted ascending (int64) and ``C = A[:, cols]``,
  ``R = A[rows, :]`` in that order; the pivot order (most important first) is in
  ``details["cols_pivot_order"]`` / ``details["rows_pivot_order"]``.
* Sparse input is never densified by the randomized method: ``C`` and ``R`` are dense slices
  (m×k and k×n), and A is only reached through products.
* Deterministic for a given ``rng`` (the random sketch is the only random step).

Metrics: the relative Frobenius error of ``CUR`` (from the norm identity below, or an
explicit float64 residual when the identity's rounding would dominate), the optimal rank-k
error from :func:`rankwise.core.svd.truncated_svd` and their ratio.
"""

from __future__ import annotations

import math

import numpy as np

from . import randomized
from .errors import BudgetError, ParameterError
from .linalg import eps
from .operator import as_operator
from .rank import RankRule
from .result import Result
from .validate import abs_max, as_float_matrix, check_finite, is_sparse, power_of_two_scale

METHODS = ("randomized", "exact")
# Below this many rounding units the norm identity cannot resolve the error; an explicit
# residual certifies it instead (as in rankwise.core.svd).
_IDENTITY_MARGIN = 50.0
# The exact method densifies sparse input only below this many dense bytes.
SPARSE_DENSIFY_BYTES = 256 << 20


def estimate_bytes(shape, dtype, rank: int, *, method: str = "randomized", sparse: bool = False,
                   oversample: int = 10) -> int:  # fmt: skip
    """Working set beyond the input (the reference SVD plans its own)."""
    m, n = (int(s) for s in shape)
    k = min(int(rank), m, n)
    w = np.dtype(dtype).itemsize
    ell = min(m, n, k + oversample)
    small = (m + n) * k * (w + 8) + 8 * k * k * 8  # C, R, their float64 QR factors, U
    if method == "exact":
        return small + m * n * w * (2 if sparse else 1)  # geqp3's copy (+ the densified A)
    return small + 3 * (m + n) * ell * w + 2 * ell * n * 8  # range finder + pivoted QR of B


def cur(a, rank: int, *, oversample: int = 10, power_iters: int | None = 1,
        rng: np.random.Generator | int | None = None, method: str = "randomized",
        compare_optimal: bool = True, optimal_method: str = "auto",
        max_memory: int | None = None) -> Result:  # fmt: skip
    """CUR decomposition of ``a`` with ``rank`` columns and rows.

    ``optimal_method`` is the :func:`~rankwise.core.svd.truncated_svd` method of the rank-k
    reference error (``auto``: exact LAPACK when small, else a randomized SVD whose error is
    an upper bound of the optimum within its stated bounds); ``compare_optimal=False`` skips
    it. Returns a :class:`Result` with arrays ``C``, ``U``, ``R``, ``rows``, ``cols``.
    """
    from .svd import truncated_svd

    if method not in METHODS:
        raise ParameterError(f"unknown CUR method {method!r}; choose from {', '.join(METHODS)}")
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ParameterError(f"rank must be a positive integer, got {rank}")
    if oversample < 0:
        raise ParameterError(f"oversample must be ≥ 0, got {oversample}")
    if power_iters is not None and power_iters < 0:
        raise ParameterError(f"power iterations must be ≥ 0, got {power_iters}")
    a = as_float_matrix(a, method="cur")
    check_finite(a, method="cur")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    sel_rng, ref_rng = rng.spawn(2)
    sparse = is_sparse(a)
    wdt = a.dtype
    m, n = a.shape
    r = min(m, n)
    k = min(int(rank), r)
    warnings = []
    if rank > r:
        warnings.append(f"rank {int(rank)} exceeds min(m, n) = {r}; clamped to {r}")
    if max_memory is not None:
        need = estimate_bytes(a.shape, wdt, k, method=method, sparse=sparse,
                              oversample=oversample)  # fmt: skip
        stored = (a.data.nbytes + a.indices.nbytes + a.indptr.nbytes) if sparse else a.nbytes
        if stored + need > max_memory:
            raise BudgetError(
                f"cur --method {method} needs about {stored + need} bytes for shape {m}×{n} "
                f"{wdt} but the memory budget is {max_memory}"
            )
    if method == "exact" and sparse and m * n * wdt.itemsize > SPARSE_DENSIFY_BYTES:
        raise BudgetError(f"exact CUR pivots the dense matrix ({m}×{n}); use the randomized "
                          "method for large sparse input")  # fmt: skip

    scale = power_of_two_scale(abs_max(a), wdt)
    work = a * scale if scale != 1.0 else a
    if scale != 1.0:
        warnings.append(f"entries of magnitude near 2^{-int(np.log2(scale))} were scaled by "
                        f"2^{int(np.log2(scale))} (exactly) to keep the norms finite")  # fmt: skip
    op = as_operator(work)
    total = op.fro_norm_sq()
    details: dict = {"index_order": "ascending (pivot order in *_pivot_order)"}
    history: list = []

    # --- columns -----------------------------------------------------------------------
    if method == "exact":
        dense = work.toarray() if sparse else work
        cols_piv = _pivots(dense, k)
        details["column_selection"] = "column-pivoted QR of A (LAPACK geqp3)"
        reason = "deterministic column-pivoted QR of the whole matrix"
    else:
        fact = randomized.fixed_rank(op, k, oversample=oversample, power_iters=power_iters,
                                     rng=sel_rng)  # fmt: skip
        cols_piv = _pivots(fact.right, k)
        details["column_selection"] = (
            "column-pivoted QR of QᵀA, Q from a randomized range finder "
            f"(sketch {fact.details['sketch_size']}, {fact.details['power_iters']} power "
            "iteration(s))"
        )
        details["sketch"] = fact.details
        history = fact.history
        reason = (f"randomized column-pivoted QR: O(mnℓ) with ℓ = "
                  f"{fact.details['sketch_size']}, A reached only through products")  # fmt: skip
        del fact
    cols = np.sort(cols_piv).astype(np.int64)
    c_work = _columns(work, cols)
    qc, rc = _thin_qr(c_work)

    # --- rows (Q-DEIM on the column basis) ---------------------------------------------
    rows_piv = _pivots(np.ascontiguousarray(qc.T), k)
    rows = np.sort(rows_piv).astype(np.int64)
    details["row_selection"] = "Q-DEIM: column-pivoted QR of Q_Cᵀ, C = Q_C R_C"
    r_work = _rows(work, rows)
    qr_, rr = _thin_qr(r_work.T)

    # --- U = C⁺ A R⁺ -------------------------------------------------------------------
    aq = np.asarray(op.matmat(np.ascontiguousarray(qr_.astype(wdt))), dtype=np.float64)
    mid = qc.T @ aq  # Q_Cᵀ A Q_R, k×k
    cond = eps(wdt) * max(m, n)
    x = _lstsq(rc, mid, cond)  # R_C⁺ M
    u64 = _lstsq(rr, x.T, cond).T  # R_C⁺ M R_R⁺ᵀ
    # ‖A − CUR‖² = ‖A‖² − 2⟨M, T⟩ + ‖T‖², T = R_C U R_Rᵀ (Q_C, Q_R orthonormal)
    t = rc @ u64 @ rr.T
    err_sq = total - 2.0 * float(np.sum(mid * t)) + float(np.sum(t * t))
    gamma = 10.0 * (k + 1) * eps(wdt) * total
    how = "norm identity ‖A‖² − 2⟨Q_CᵀAQ_R, T⟩ + ‖T‖², T = R_C U R_Rᵀ"
    if err_sq < _IDENTITY_MARGIN * gamma and residual_affordable(op):
        err_sq = residual_sq(op, c_work, u64 @ np.asarray(r_work, dtype=np.float64))
        gamma = 4.0 * eps(np.float64) * total + 2.0 * eps(wdt) * total
        how = "explicit residual (row blocks, float64)"
    err_sq = max(err_sq, 0.0)
    if total > 0:
        err = math.sqrt(err_sq / total)
        bounds = [math.sqrt(max(err_sq - gamma, 0.0) / total), math.sqrt((err_sq + gamma) / total)]
    else:
        err, bounds, how = 0.0, [0.0, 0.0], "zero matrix"

    metrics = {
        "relative_frobenius_error": err,
        "error_method": how,
        "error_bounds": bounds,
        "norm_fro": math.sqrt(total) / scale,
        "explained_energy": 1.0 - err**2,
        "condition_C": _cond(rc),
        "condition_R": _cond(rr),
        "rows": rows.tolist(),
        "cols": cols.tolist(),
    }
    rank_info = {"value": int(k), "rule": "rank", "threshold": int(rank), "max_rank": int(r),
                 "clamped": bool(rank > r)}  # fmt: skip
    rank_info["by_rule"] = [{"rule": "rank", "threshold": int(rank), "rank": int(k),
                             "given": True}]  # fmt: skip
    if compare_optimal:
        ref = truncated_svd(a, RankRule("rank", k), method=optimal_method, rng=ref_rng,
                            max_memory=max_memory)  # fmt: skip
        opt = float(ref.metrics["relative_frobenius_error"])
        metrics["optimal_relative_error"] = opt
        metrics["optimal_error_bounds"] = list(ref.metrics["error_bounds"])
        metrics["optimal_error_method"] = f"{ref.method} SVD: {ref.metrics['error_method']}"
        # None: the optimum is exact (zero) but CUR is not, an unbounded ratio
        metrics["error_ratio"] = err / opt if opt > 0 else (1.0 if err == 0 else None)
        rank_info["by_rule"] = ref.rank["by_rule"]
        details["optimal_svd"] = {"method": ref.method, "method_reason": ref.method_reason}
    details["cols_pivot_order"] = np.asarray(cols_piv, dtype=np.int64).tolist()
    details["rows_pivot_order"] = np.asarray(rows_piv, dtype=np.int64).tolist()
    details["working_dtype"] = str(wdt)
    details["scale"] = scale

    c_out = c_work if scale == 1.0 else _columns(a, cols)
    r_out = r_work if scale == 1.0 else _rows(a, rows)
    u_out = np.ascontiguousarray((u64 * scale).astype(wdt))
    return Result(
        arrays={"C": np.ascontiguousarray(c_out), "U": u_out, "R": np.ascontiguousarray(r_out),
                "rows": rows, "cols": cols},
        method=method,
        method_reason=reason,
        metrics=metrics,
        details=details,
        history=history,
        converged=True,
        stop_reason="direct method",
        warnings=tuple(warnings),
        rank=rank_info,
    )  # fmt: skip


def _pivots(x: np.ndarray, k: int) -> np.ndarray:
    """First k pivots of a column-pivoted QR of ``x`` (LAPACK geqp3)."""
    import scipy.linalg as sla

    _, piv = sla.qr(x, mode="r", pivoting=True, check_finite=False)
    return np.asarray(piv[:k], dtype=np.int64)


def _thin_qr(x) -> tuple[np.ndarray, np.ndarray]:
    """Householder thin QR in float64 (C may be rank-deficient: no Cholesky QR here)."""
    import scipy.linalg as sla

    q, r = sla.qr(np.asarray(x, dtype=np.float64), mode="economic", check_finite=False)
    return q, r


def _lstsq(r: np.ndarray, b: np.ndarray, cond: float) -> np.ndarray:
    """Minimum-norm solution of ``r x = b`` with singular values below cond·σ₁ dropped."""
    import scipy.linalg as sla

    return sla.lstsq(r, b, cond=cond, check_finite=False, lapack_driver="gelsd")[0]


def _cond(r: np.ndarray) -> float | None:
    """2-norm condition number; None when singular (JSON has no infinity)."""
    import scipy.linalg as sla

    s = sla.svdvals(r, check_finite=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else None


def _columns(a, cols) -> np.ndarray:
    if is_sparse(a):
        return np.ascontiguousarray(a[:, cols].toarray())
    return np.ascontiguousarray(a[:, cols])


def _rows(a, rows) -> np.ndarray:
    if is_sparse(a):
        return np.ascontiguousarray(a[rows, :].toarray())
    return np.ascontiguousarray(a[rows, :])


# --- residuals shared with the other factorizations --------------------------------------


def residual_affordable(op) -> bool:
    """An explicit residual densifies row blocks: fine for dense data, and for sparse data
    while m·n stays modest (the rule of rankwise.core.svd)."""
    m, n = op.shape
    return op.kind == "dense" or (op.kind == "sparse" and m * n <= 1 << 28)


def residual_sq(op, left: np.ndarray, right: np.ndarray, weights=None) -> float:
    """``Σ w_ij (A − left @ right)_ij²`` in float64 over row blocks (``w = 1`` without
    ``weights``; ``weights`` is an m-vector of row weights or an m×n array)."""
    if not hasattr(op, "row_blocks"):
        op = as_operator(op)
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    m, n = op.shape
    rows = max(1, (4 << 20) // max(1, 8 * n))
    total = 0.0
    for start, blk in op.row_blocks(rows):
        stop = start + blk.shape[0]
        rb = np.asarray(blk, dtype=np.float64) - left[start:stop] @ right
        if weights is None:
            total += float(np.einsum("ij,ij->", rb, rb))
        else:
            w = np.asarray(weights[start:stop], dtype=np.float64)
            w = w[:, None] if w.ndim == 1 else w
            total += float(np.einsum("ij,ij,ij->", w, rb, rb))
    return total


__all__ = ["METHODS", "cur", "estimate_bytes", "residual_sq", "residual_affordable"]
