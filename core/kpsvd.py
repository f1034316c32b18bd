"""Kronecker-product SVD (Van Loan & Pitsianis 1993): ``A ≈ Σ_i S_i A_i ⊗ B_i``.

For ``A`` of shape (m1·m2) × (n1·n2) the rearrangement ``R(A)`` of shape (m1·n1) × (m2·n2)
has one row per block ``A[i1·m2:(i1+1)·m2, j1·n2:(j1+1)·n2]``, at row ``i1·n1 + j1``, holding
that block flattened row-major (column ``i2·n2 + j2``). Since
``(A_i ⊗ B_i)[i1·m2 + i2, j1·n2 + j2] = A_i[i1, j1] · B_i[i2, j2]``, a Kronecker product
rearranges to the rank-one matrix ``vec(A_i) vec(B_i)ᵀ`` and the best sum of r Kronecker
products is the rank-r truncated SVD of ``R(A)``: ``A_i`` is the i-th left singular vector
reshaped to m1×n1, ``B_i`` the i-th right singular vector reshaped to m2×n2.

Conventions
-----------
* ``S`` descending; every ``A_i`` and ``B_i`` has unit Frobenius norm, and the ``vec(A_i)``
  (and the ``vec(B_i)``) are orthonormal.
* Signs follow :func:`rankwise.core.linalg.svd_flip` applied to R's left factor: the entry of
  largest magnitude of every ``A_i`` is positive (the first one on ties); ``B_i`` follows.
* The rearrangement is a permutation of the entries, hence an isometry: the error of the
  Kronecker sum equals the error of the truncated SVD of ``R(A)``,
  ``‖A − Σ S_i A_i ⊗ B_i‖_F² = ‖R(A)‖_F² − Σ S_i²``, and no Kronecker product is ever formed.

Rank: a :class:`~rankwise.core.rank.RankRule` (``rank``, ``energy``, ``tol``, …) or the elbow
of the Kronecker spectrum (:func:`elbow_rank`). ``rank["by_rule"]`` lists the rank of the
shared rules and of the elbow (rule ``"elbow"``).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BudgetError, ParameterError
from .linalg import eps
from .rank import RankRule, Spectrum, ranks_by_rule
from .result import Result
from .validate import as_float_matrix, check_finite, check_matrix_shape, is_sparse

# Singular values below this many ulps of σ₁ (times √ of the larger side of R) are rounding:
# the elbow treats them as one flat floor so that their scatter cannot create a false knee.
ELBOW_FLOOR_ULPS = 10.0
# A knee must lie at least this far below the chord (in the unit square) to count.
ELBOW_MIN_DISTANCE = 1e-3


def parse_block(block, shape) -> tuple[int, int, int, int]:
    """Check ``block = (m1, n1)`` against ``shape = (m, n)``; return (m1, n1, m2, n2)."""
    try:
        m1, n1 = (int(b) for b in block)
        ok = all(int(b) == b for b in block)
    except (TypeError, ValueError):
        raise ParameterError(
            f"block must be two positive integers (m1, n1), got {block!r}"
        ) from None
    if not ok or m1 < 1 or n1 < 1:
        raise ParameterError(f"block must be two positive integers (m1, n1), got {block!r}")
    m, n = (int(s) for s in shape)
    bad = []
    if m % m1:
        bad.append(f"{m} rows are not divisible by m1 = {m1}")
    if n % n1:
        bad.append(f"{n} columns are not divisible by n1 = {n1}")
    if bad:
        raise ParameterError(
            f"kpsvd block {m1}x{n1} does not tile the {m}×{n} matrix: " + " and ".join(bad)
        )
    return m1, n1, m // m1, n // n1


def rearrange(a, m1: int, n1: int):
    """Van Loan–Pitsianis rearrangement R(A), (m1·n1) × (m2·n2); sparse stays sparse."""
    m, n = a.shape
    m2, n2 = m // m1, n // n1
    if is_sparse(a):
        import scipy.sparse as sp

        coo = sp.coo_array(a)
        r, c = coo.coords if hasattr(coo, "coords") else (coo.row, coo.col)
        r = np.asarray(r, dtype=np.int64)
        c = np.asarray(c, dtype=np.int64)
        rows = (r // m2) * n1 + c // n2
        cols = (r % m2) * n2 + c % n2
        return sp.csr_array((coo.data, (rows, cols)), shape=(m1 * n1, m2 * n2))
    a = np.asarray(a)
    return np.ascontiguousarray(a.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3)).reshape(
        m1 * n1, m2 * n2
    )


def kron_sum(s, a_factors, b_factors) -> np.ndarray:
    """Σ S_i A_i ⊗ B_i as a dense matrix (for tests and small checks only)."""
    r, m1, n1 = a_factors.shape
    _, m2, n2 = b_factors.shape
    out = np.einsum("r,rij,rkl->ikjl", s, a_factors, b_factors)
    return out.reshape(m1 * m2, n1 * n2)


def elbow_rank(s, *, floor_rel: float) -> tuple[int, dict]:
    """Rank at the knee of a descending spectrum ``s``.

    The log-spectrum ``log max(s_i, floor_rel·s_1)`` is mapped to the unit square (index to
    [0, 1], log value to [0, 1]) and the knee is the point farthest *below* the chord from
    the first to the last point (Kneedle on a log scale). The rank is the number of values
    before the knee: for a spectrum that drops from a plateau to the rounding floor it is
    the number of values above the drop; for a decay that flattens into noise, the index
    where it flattens. Values below ``floor_rel·s_1`` count as zero (they are rounding).
    Without a knee (a straight or concave log-spectrum, or fewer than 3 values) every value
    above the floor is kept.

    The SoKA paper names an "elbow-point criterion" without a formula we could check; this
    is the documented rule rankwise uses.
    """
    s = np.asarray(s, dtype=np.float64)
    n = len(s)
    info = {"method": "max distance below the chord of the log-spectrum (unit square)",
            "floor_relative": float(floor_rel), "values": int(n)}  # fmt: skip
    if n == 0 or not s[0] > 0:
        info["knee"] = False
        return 1, info
    floor = floor_rel * s[0]
    above = max(1, int(np.count_nonzero(s > floor)))
    y = np.log(np.maximum(s, floor))
    span = y[0] - y[-1]
    if n < 3 or span <= 0:
        info["knee"] = False
        return above, info
    x = np.arange(n) / (n - 1)
    dist = (1.0 - x) - (y - y[-1]) / span  # chord minus curve: > 0 below the chord
    e = int(np.argmax(dist[1:])) + 1
    info["knee_distance"] = float(dist[e])
    if dist[e] < ELBOW_MIN_DISTANCE:
        info["knee"] = False
        return above, info
    info["knee"] = True
    return max(1, min(e, above)), info


def estimate_bytes(
    shape,
    dtype,
    block,
    *,
    rule: RankRule | None,
    elbow: bool,
    method: str,
    sparse: bool = False,
    nnz: int | None = None,
    oversample: int = 10,
) -> int:
    """Working set beyond the input: the rearranged copy plus the SVD of it."""
    from .svd import plan

    m1, n1, m2, n2 = parse_block(block, shape)
    rshape = (m1 * n1, m2 * n2)
    svd_rule = RankRule("rank", min(rshape)) if elbow else rule
    p = plan(rshape, dtype, rule=svd_rule, method=_svd_method(method, elbow), sparse=sparse,
             nnz=nnz, oversample=oversample)  # fmt: skip
    return int(p.estimate_bytes)


def _svd_method(method: str, elbow: bool) -> str:
    if not elbow:
        return method
    if method not in ("auto", "exact"):
        raise ParameterError(
            f"the elbow rule needs the whole Kronecker spectrum: use method exact, not {method}"
        )
    return "exact"


def kpsvd(a, block, *, rule: RankRule | None = None, elbow: bool = False, method: str = "auto",
          rng: np.random.Generator | int | None = None, oversample: int = 10,
          power_iters: int | None = None, max_memory: int | None = None,
          callback=None) -> Result:  # fmt: skip
    """Kronecker-product SVD of ``a`` with ``block = (m1, n1)``: ``a ≈ Σ S_i A_i ⊗ B_i``.

    Exactly one of ``rule`` (a rank rule: fixed rank, energy, tol, …) and ``elbow=True``
    chooses the number of terms. ``method`` is that of
    :func:`rankwise.core.svd.truncated_svd` applied to the rearranged matrix (the elbow needs
    the whole spectrum and runs the exact SVD). ``max_memory`` bounds the rearranged copy
    and the SVD's working set (the input is already in memory).

    Returns a :class:`Result` with arrays ``S`` (r), ``A`` (r×m1×n1), ``B`` (r×m2×n2).
    """
    from .svd import plan, truncated_svd

    if elbow and rule is not None:
        raise ParameterError("give either a rank rule or the elbow criterion, not both")
    if not elbow and rule is None:
        raise ParameterError("kpsvd needs a rank rule (rank, energy, tol, …) or elbow=True")
    check_matrix_shape(a.shape, method="kpsvd")
    m1, n1, m2, n2 = parse_block(block, a.shape)
    a = as_float_matrix(a, method="kpsvd")
    check_finite(a, method="kpsvd")
    sparse = is_sparse(a)
    rshape = (m1 * n1, m2 * n2)
    p_max = min(rshape)
    svd_method = _svd_method(method, elbow)
    svd_rule = RankRule("rank", p_max) if elbow else rule
    input_bytes = (a.data.nbytes + a.indices.nbytes + a.indptr.nbytes) if sparse else a.nbytes
    budget = None if max_memory is None else max_memory - input_bytes
    if budget is not None and budget <= 0:
        raise BudgetError(f"kpsvd: the input alone ({input_bytes} bytes) exceeds the memory "
                          f"budget of {max_memory} bytes")  # fmt: skip
    p = plan(rshape, a.dtype, rule=svd_rule, method=svd_method, sparse=sparse,
             nnz=a.nnz if sparse else None, oversample=oversample,
             max_memory=budget)  # fmt: skip
    ra = rearrange(a, m1, n1)
    res = truncated_svd(ra, svd_rule, method=svd_method, rng=rng, oversample=oversample,
                        power_iters=power_iters, max_memory=budget, callback=callback,
                        planned=p)  # fmt: skip
    del ra
    computed = np.asarray(res.metrics["singular_values_computed"], dtype=np.float64)
    complete = len(computed) >= p_max
    floor_rel = ELBOW_FLOOR_ULPS * math.sqrt(max(rshape)) * eps(res.S.dtype)
    warnings = list(res.warnings)
    k_elbow, elbow_info = (None, {"note": "needs the whole Kronecker spectrum; only the "
                                  f"leading {len(computed)} values were computed"})  # fmt: skip
    if complete:
        k_elbow, elbow_info = elbow_rank(computed, floor_rel=floor_rel)
    metrics = dict(res.metrics)
    if elbow:
        k = k_elbow
        u, s, vt = res.U[:, :k], res.S[:k], res.Vt[:k]
        spec = Spectrum(s=computed, total_sq=float(np.sum(computed**2)), max_rank=p_max,
                        complete=True)  # fmt: skip
        _retruncate_metrics(metrics, spec, k, res.S.dtype)
        by_rule = ranks_by_rule(spec, RankRule("rank", k))[1:]  # the reference rows only
        rank = {"value": int(k), "rule": "elbow", "threshold": float(floor_rel),
                "max_rank": int(p_max), "clamped": False}  # fmt: skip
        rows = [{"rule": "elbow", "threshold": float(floor_rel), "rank": int(k), "given": True}]
        rank["by_rule"] = rows + by_rule
    else:
        u, s, vt = res.U, res.S, res.Vt
        k = len(s)
        rank = {**res.rank, "by_rule": list(res.rank["by_rule"])}
        rank["by_rule"].append({"rule": "elbow", "threshold": float(floor_rel),
                                "rank": None if k_elbow is None else int(k_elbow),
                                "given": False})  # fmt: skip
    a_fac = np.ascontiguousarray(u.T).reshape(k, m1, n1)
    b_fac = np.ascontiguousarray(vt).reshape(k, m2, n2)
    details = {
        "block": [m1, n1],
        "factor_shapes": {"A": [m1, n1], "B": [m2, n2]},
        "rearranged_shape": list(rshape),
        "sign_convention": "svd_flip on R(A)'s left factor: largest |entry| of each A_i > 0",
        "elbow": elbow_info,
        "svd": {"method": res.method, "method_reason": res.method_reason, **res.details},
    }
    reason = f"Van Loan–Pitsianis rearrangement to {rshape[0]}×{rshape[1]}, then {res.method} SVD"
    return Result(
        arrays={"S": np.ascontiguousarray(s), "A": a_fac, "B": b_fac},
        method="van_loan_pitsianis",
        method_reason=f"{reason} ({res.method_reason})",
        metrics=metrics,
        details=details,
        history=res.history,
        converged=res.converged,
        stop_reason=res.stop_reason,
        warnings=tuple(warnings),
        rank=rank,
    )


def _retruncate_metrics(metrics: dict, spec: Spectrum, k: int, dtype) -> None:
    """Exact-path metrics for a rank chosen after the SVD (the spectrum is complete)."""
    total = spec.norm_sq
    metrics["singular_values"] = [float(x) for x in spec.s[:k]]
    if total == 0.0:
        return
    err = math.sqrt(float(spec.tail_sq()[k]) / total)
    slack = 10.0 * math.sqrt(len(spec.s)) * eps(dtype)
    metrics["relative_frobenius_error"] = err
    metrics["error_method"] = "spectrum tail (exact)"
    metrics["error_bounds"] = [max(err - slack, 0.0), err + slack]
    metrics["explained_energy"] = 1.0 - err**2
    nxt = float(spec.s[k]) if k < len(spec.s) else 0.0
    metrics["spectral_residual"] = {"value": nxt, "relative": nxt / float(spec.s[0]),
                                    "method": "σ_{k+1} of the exact spectrum"}  # fmt: skip
