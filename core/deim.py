"""Discrete empirical interpolation: interpolation indices for a basis V (n × N).

A nonlinear term f is approximated from its entries at the indices P: ``f ≈ V (PᵀV)⁺ Pᵀ f``.
With V orthonormal, ``‖f − V(PᵀV)⁺Pᵀf‖₂ ≤ ‖(PᵀV)⁺‖₂ · ‖(I − VVᵀ) f‖₂``, so the *error
constant* ``‖(PᵀV)⁺‖₂ = 1/σ_min(PᵀV)`` is what an index set is judged by (for a basis that is
orthonormal in another inner product the factor is ``‖V(PᵀV)⁺‖₂``, reported as
``projector_norm``).

Methods
-------
* ``qdeim`` (default; Drmač & Gugercin 2016): the first N pivots of a column-pivoted QR of Vᵀ
  (LAPACK geqp3). Bound: ``‖(PᵀV)⁻¹‖₂ ≤ √(n − N + 1)·√(4^N + 6N − 1)/3`` (V orthonormal).
* ``deim`` (Chaturantabut & Sorensen 2010): greedy; the first index is argmax |v₁|, then for
  each next basis vector the index where its interpolation residual by the previous ones is
  largest (ties: the first index). Bound: ``(1 + √(2n))^{N−1} / ‖v₁‖_∞``.
* ``points > N`` (oversampling; least-squares "gappy" reconstruction): after the N indices of
  the method, each extra index is chosen greedily to raise ``σ_min(PᵀV)²`` the most according
  to the lower bound of Peherstorfer, Drmač & Gugercin (2020, GappyPOD+E): with ``PᵀV``'s Gram
  ``Z diag(λ) Zᵀ`` (λ₁ ≤ λ₂ ≤ …), ``g = λ₂ − λ₁`` and ``r = Zᵀ v_i`` for a candidate row
  ``v_i``, ``λ_min`` after adding it is at least
  ``λ₁ + ½[(g + ‖r‖²) − √((g + ‖r‖²)² − 4g r₁²)]`` (the rank-one update of the matrix with
  every λ ≥ λ₂ replaced by λ₂). Pivoted QR or the DEIM residual cannot be continued past N:
  the basis is exactly interpolated there and every residual is zero.

``indices`` (int64) are in selection order (most important first); ``details["sorted"]``
gives them ascending.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DataError, ParameterError
from .result import Result
from .validate import working_dtype

METHODS = ("qdeim", "deim")


def _check(basis) -> np.ndarray:
    v = np.asarray(basis)
    if v.ndim != 2 or 0 in v.shape:
        raise DataError(f"deim needs a non-empty 2-D basis (dofs × modes); got shape {v.shape}")
    working_dtype(v.dtype, method="deim")
    v = np.asarray(v, dtype=np.float64)
    if not np.isfinite(v).all():
        raise DataError("the basis holds NaN or Inf")
    n, k = v.shape
    if k > n:
        raise DataError(f"a basis of {k} modes in {n} dofs cannot have full column rank")
    return v


def qdeim_indices(v: np.ndarray) -> np.ndarray:
    import scipy.linalg as sla

    _, _, piv = sla.qr(v.T, mode="economic", pivoting=True, check_finite=False)
    return np.asarray(piv[: v.shape[1]], dtype=np.int64)


def deim_indices(v: np.ndarray) -> np.ndarray:
    import scipy.linalg as sla

    n, k = v.shape
    idx = [int(np.argmax(np.abs(v[:, 0])))]
    for j in range(1, k):
        pv = v[idx, :j]
        c = sla.solve(pv, v[idx, j], check_finite=False)
        res = v[:, j] - v[:, :j] @ c
        idx.append(int(np.argmax(np.abs(res))))
    return np.asarray(idx, dtype=np.int64)


def oversample(v: np.ndarray, idx: np.ndarray, points: int) -> np.ndarray:
    """Add indices up to ``points`` by the GappyPOD+E lower bound (module docstring)."""
    import scipy.linalg as sla

    n, k = v.shape
    chosen = list(int(i) for i in idx)
    taken = np.zeros(n, dtype=bool)
    taken[chosen] = True
    while len(chosen) < points:
        a = v[chosen]
        lam, z = sla.eigh(a.T @ a, check_finite=False)
        g = float(lam[1] - lam[0]) if k > 1 else 0.0
        r = v @ z
        rn = np.einsum("ij,ij->i", r, r)
        r1 = r[:, 0] ** 2
        t = g + rn
        gain = 0.5 * (t - np.sqrt(np.maximum(t * t - 4.0 * g * r1, 0.0)))
        gain[taken] = -np.inf
        if not np.isfinite(gain).any():
            break
        best = float(np.max(gain))
        if best <= 0.0:  # repeated λ₁: prefer the row with the most weight on its eigvector
            score = np.where(taken, -np.inf, r1)
            i = int(np.argmax(score))
        else:
            i = int(np.argmax(gain))
        chosen.append(i)
        taken[i] = True
    return np.asarray(chosen, dtype=np.int64)


def _log10_bound(method: str, n: int, k: int, v1_inf: float) -> float:
    if method == "qdeim":
        return 0.5 * math.log10(n - k + 1) + 0.5 * math.log10(4.0**k + 6 * k - 1) - math.log10(3)
    return (k - 1) * math.log10(1 + math.sqrt(2 * n)) - math.log10(v1_inf)


def deim(basis, *, method: str = "qdeim", points: int | None = None) -> Result:
    """Interpolation indices for ``basis`` (n × N); see the module docstring."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    v = _check(basis)
    n, k = v.shape
    if points is None:
        points = k
    if isinstance(points, bool) or int(points) != points or not k <= points <= n:
        raise ParameterError(
            f"points must be an integer with N = {k} ≤ points ≤ n = {n}, got {points}"
        )
    points = int(points)
    import scipy.linalg as sla

    sv = sla.svdvals(v, check_finite=False)
    if sv[-1] <= 1e3 * np.finfo(np.float64).eps * sv[0] * max(n, k):
        raise DataError(
            "the basis does not have full column rank (σ_min/σ_max = "
            f"{sv[-1] / sv[0]:.3g}); interpolation indices are undefined"
        )
    idx = qdeim_indices(v) if method == "qdeim" else deim_indices(v)
    how = (
        "first N pivots of a column-pivoted QR of Vᵀ (geqp3)"
        if method == "qdeim"
        else "greedy DEIM on the interpolation residuals"
    )
    if points > k:
        idx = oversample(v, idx, points)
        how += f"; {points - k} more by the GappyPOD+E eigenvalue bound"
    pv = v[idx]
    s = sla.svdvals(pv, check_finite=False)
    smin = float(s[-1])
    const = math.inf if smin == 0.0 else 1.0 / smin
    pinv = np.linalg.pinv(pv)
    proj = float(np.linalg.norm(v @ pinv, 2))
    ortho = float(np.max(np.abs(v.T @ v - np.eye(k))))
    lb = _log10_bound(method, n, k, float(np.max(np.abs(v[:, 0]))))
    metrics = {
        "error_constant": const,
        "sigma_min": smin,
        "condition": float(s[0] / smin) if smin > 0 else math.inf,
        "projector_norm": proj,
        "error_constant_bound": 10.0**lb if lb < 300 else math.inf,
        "error_constant_bound_log10": lb,
        "bound_applies": ortho <= 1e-8 and points == k,
        "basis_orthogonality_loss": ortho,
        "indices": [int(i) for i in idx],
    }
    details = {
        "method": method,
        "points": points,
        "modes": k,
        "dofs": n,
        "sorted": sorted(int(i) for i in idx),
        "bound": (
            "√(n−N+1)·√(4^N+6N−1)/3 (Drmač & Gugercin 2016)"
            if method == "qdeim"
            else "(1+√(2n))^(N−1)/‖v₁‖_∞ (Chaturantabut & Sorensen 2010)"
        ),
    }
    return Result(
        arrays={"indices": idx}, method=method, method_reason=how, metrics=metrics, details=details
    )
