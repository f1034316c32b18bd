"""Truncated SVD / PCA: exact LAPACK, randomized range finders and Lanczos (ARPACK).

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

from .errors import BudgetError, DataError, ParameterError
from .linalg import eps, orth, orthogonality_loss, svd_flip, thin_svd
from .operator import as_operator, to_scipy_linear_operator
from .rank import RankRule, Spectrum, ranks_by_rule, select_rank
from .validate import as_float_matrix, check_finite, check_matrix_shape, is_sparse, working_dtype

METHODS = ("auto", "exact", "randomized", "lanczos")

# Below this min(m, n) a dense LAPACK SVD beats every iterative method.
SMALL_DIM = 500
# Randomized pays off while the sketch stays below this fraction of min(m, n): its
# 2(q+1) passes of 2mnℓ flops undercut gesdd's ~8mn·min(m, n) only for ℓ ≲ min(m, n)/4.
RANDOMIZED_MAX_FRACTION = 0.25
# Densify sparse input for the exact path only below this many dense bytes.
SPARSE_DENSIFY_BYTES = 256 << 20
# The norm identity resolves err² only down to ~gamma; below this many gammas the error
# is certified by an explicit residual instead (1% relative accuracy of the error).
_IDENTITY_MARGIN = 50.0


@dataclass(frozen=True)
class Plan:
    method: str
    reason: str
    estimate_bytes: int
    working_dtype: str


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


def default_power_iters(k: int, shape) -> int:
    # Same rule as scikit-learn's randomized_svd(n_iter="auto"): more passes when the
    # rank is a small fraction of the dimension, where spectral gaps are usually smaller.
    return 7 if k < 0.1 * min(shape) else 4


def estimate_bytes(
    method: str,
    shape,
    dtype,
    *,
    sparse: bool,
    nnz: int | None,
    rank: int | None,
    oversample: int,
    center: bool,
) -> int:
    """Peak bytes of the input in memory plus the method's working set."""
    m, n = (int(s) for s in shape)
    r = min(m, n)
    w = np.dtype(dtype).itemsize
    stored = (int(nnz or 0) * (w + 4) + (m + 1) * 8) if sparse else m * n * w
    if method == "exact":
        dense = m * n * w
        # densified copy (sparse) or centred copy, LAPACK's working copy, U and Vt, workspace
        extra = (dense if (sparse or center) else 0) + dense + (m + n) * r * w + 4 * r * r * w
        return stored + extra
    # Accuracy rules grow the basis adaptively and check the budget as they go; plan for
    # the first couple of blocks.
    ell = min(r, rank + oversample if rank else 128)
    if method == "lanczos":
        ncv = min(r, max(2 * ell + 1, 20))
        return stored + (m + n) * ell * w * 2 + ncv * r * 8
    # randomized: Q, a sketch and B plus the small SVD
    return stored + 3 * (m + n) * ell * w + 2 * ell * ell * w


def plan(
    shape,
    dtype,
    *,
    rule: RankRule,
    method: str = "auto",
    sparse: bool = False,
    nnz: int | None = None,
    center: bool = False,
    oversample: int = 10,
    max_memory: int | None = None,
) -> Plan:
    """Choose the method (when ``auto``) and check it fits the memory budget, before any
    data is read."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    check_matrix_shape(shape, method="svd")
    wdt = working_dtype(dtype, method="svd")
    m, n = (int(s) for s in shape)
    r = min(m, n)
    k = min(int(rule.value), r) if rule.kind == "rank" else None

    def est(meth):
        return estimate_bytes(
            meth, shape, wdt, sparse=sparse, nnz=nnz, rank=k, oversample=oversample, center=center
        )

    def fits(meth):
        return max_memory is None or est(meth) <= max_memory

    if method == "lanczos" and ((k is not None and k >= r) or r < 2):
        raise ParameterError(f"lanczos needs a rank below min(m, n) = {r}; use --method exact")
    if method != "auto":
        reason = "requested"
        chosen = method
    else:
        chosen, reason = _auto(m, n, wdt, sparse, k, rule, oversample, fits)
    if not fits(chosen):
        raise BudgetError(
            f"svd --method {chosen} needs about {_human(est(chosen))} for shape {m}×{n} "
            f"{wdt}{' (sparse)' if sparse else ''} but the memory budget is {_human(max_memory)}"
        )
    return Plan(chosen, reason, est(chosen), str(wdt))


def _auto(m, n, wdt, sparse, k, rule, oversample, fits):
    r = min(m, n)
    dense_bytes = m * n * wdt.itemsize
    if sparse:
        if r <= SMALL_DIM * 4 and dense_bytes <= SPARSE_DENSIFY_BYTES and fits("exact"):
            return "exact", (
                f"sparse but small ({m}×{n}, {_human(dense_bytes)} dense): densified, "
                "dense LAPACK is exact and fastest at this size"
            )
        if k is not None and k < r - 1 and r > 2:
            return "lanczos", (
                f"sparse input with fixed rank {k} ≪ min(m, n) = {r}: "
                "ARPACK Lanczos on the sparse operator, never densified"
            )
        return "randomized", (
            "sparse input with an accuracy rule: adaptive randomized range finder on the "
            "sparse operator, never densified"
        )
    if r <= SMALL_DIM:
        return "exact", f"small matrix (min(m, n) = {r} ≤ {SMALL_DIM}): dense LAPACK"
    if k is not None:
        ell = k + oversample
        if ell <= RANDOMIZED_MAX_FRACTION * r or not fits("exact"):
            return "randomized", (
                f"rank {k} + oversampling {oversample} ≤ {RANDOMIZED_MAX_FRACTION:g}·min(m, n)"
                f" = {RANDOMIZED_MAX_FRACTION * r:g}: randomized range finder needs fewer flops"
                if ell <= RANDOMIZED_MAX_FRACTION * r
                else "exact SVD does not fit the memory budget: randomized range finder"
            )
        return "exact", (
            f"rank {k} + oversampling is a large fraction of min(m, n) = {r}: "
            "dense LAPACK is cheaper than a large sketch"
        )
    if fits("exact"):
        return "exact", (
            f"accuracy rule ({rule.kind}) on a dense matrix that fits the memory budget: "
            "exact LAPACK gives the whole spectrum"
        )
    return "randomized", (
        "exact SVD does not fit the memory budget: adaptive randomized range finder"
    )


def truncated_svd(
    a,
    rule: RankRule,
    *,
    method: str = "auto",
    center: bool = False,
    rng: np.random.Generator | int | None = None,
    oversample: int = 10,
    power_iters: int | None = None,
    block_size: int | None = None,
    max_memory: int | None = None,
    callback=None,
) -> SVDResult:
    """Truncated SVD of a dense array or sparse matrix with the rank chosen by ``rule``.

    ``callback(event)`` is called after each step of the iterative methods with a dict;
    returning True stops the solver (the result then says ``converged=False``).
    """
    if oversample < 0:
        raise ParameterError(f"oversample must be ≥ 0, got {oversample}")
    if power_iters is not None and power_iters < 0:
        raise ParameterError(f"power iterations must be ≥ 0, got {power_iters}")
    if block_size is not None and block_size < 1:
        raise ParameterError(f"block size must be ≥ 1, got {block_size}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    a = as_float_matrix(a, method="svd")
    check_finite(a, method="svd")
    sparse = is_sparse(a)
    m, n = a.shape
    r = min(m, n)
    warnings: list[str] = []
    if rule.kind == "rank" and rule.value > r:
        warnings.append(f"rank {int(rule.value)} exceeds min(m, n) = {r}; clamped to {r}")
    p = plan(
        a.shape,
        a.dtype,
        rule=rule,
        method=method,
        sparse=sparse,
        nnz=a.nnz if sparse else None,
        center=center,
        oversample=oversample,
        max_memory=max_memory,
    )
    op = as_operator(a, center=center)
    mean = np.asarray(op.mean, dtype=a.dtype) if center else None
    if p.method == "exact":
        out = _exact(a, op, rule, sparse=sparse, center=center)
    elif p.method == "randomized":
        if rule.kind == "rank":
            k = min(int(rule.value), r)
            q = default_power_iters(k, a.shape) if power_iters is None else power_iters
            out = _randomized_fixed(op, k, oversample, q, rng)
        else:
            q = 2 if power_iters is None else power_iters
            base = a.data.nbytes + a.indices.nbytes + a.indptr.nbytes if sparse else a.nbytes
            out = _randomized_adaptive(
                op, rule, q, rng, block=block_size, max_memory=max_memory, callback=callback,
                warnings=warnings, base_bytes=base,
            )  # fmt: skip
    else:
        out = _lanczos(op, rule, rng, callback, warnings, oversample)
    u, s, vt, spec, details = out
    k = select_rank(spec, rule)
    if k is None:  # the spectrum computed cannot meet the rule; keep all of it
        k = len(s)
        warnings.append(f"{rule.kind} = {rule.value:g} not reached within the computed rank {k}")
    u, s, vt = u[:, :k], s[:k], vt[:k]
    u, vt = svd_flip(np.ascontiguousarray(u), np.ascontiguousarray(vt))
    metrics = _certify(op, u, s, vt, spec, p.method, k)
    metrics["singular_values_computed"] = [float(x) for x in spec.s]
    rank = {
        "value": int(k),
        "rule": rule.kind,
        "threshold": rule.value,
        "max_rank": int(r),
        "clamped": bool(rule.kind == "rank" and rule.value > r),
        "by_rule": ranks_by_rule(spec, rule),
    }
    history = details.pop("history", [])
    converged = details.pop("converged", True)
    stop_reason = details.pop("stop_reason", "direct method")
    details = {"working_dtype": p.working_dtype, "estimate_bytes": p.estimate_bytes, **details}
    return SVDResult(
        U=u,
        S=np.ascontiguousarray(s),
        Vt=vt,
        mean=mean,
        rank=rank,
        method=p.method,
        method_reason=p.reason,
        details=details,
        metrics=metrics,
        history=history,
        converged=converged,
        stop_reason=stop_reason,
        warnings=tuple(warnings),
    )


# --- exact -----------------------------------------------------------------------------


def _exact(a, op, rule, *, sparse, center):
    owned = sparse or center
    if owned:
        mat = op.dense()
        u, s, vt, driver = thin_svd(mat, overwrite=True, recompute=op.dense)
    else:
        u, s, vt, driver = thin_svd(a)
    spec = Spectrum(
        s=s, total_sq=float(np.sum(s.astype(np.float64) ** 2)), max_rank=min(a.shape), complete=True
    )
    details = {"lapack_driver": driver, "densified": bool(sparse)}
    return u, s, vt, spec, details


# --- randomized ------------------------------------------------------------------------


def _gaussian(rng, shape, dtype):
    return rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)


def _randomized_fixed(op, k, oversample, q, rng):
    """Halko–Martinsson–Tropp range finder with subspace iteration (Alg. 4.4)."""
    m, n = op.shape
    ell = min(min(m, n), k + oversample)
    qmat = orth(op.matmat(_gaussian(rng, (n, ell), op.dtype)))
    for _ in range(q):
        w = orth(op.rmatmat(qmat))
        qmat = orth(op.matmat(w))
    b = op.rmatmat(qmat).T
    ub, s, vt, driver = thin_svd(np.ascontiguousarray(b))
    u = qmat @ ub
    total = op.fro_norm_sq()
    spec = Spectrum(s=s, total_sq=total, max_rank=min(m, n), complete=ell == min(m, n))
    details = {
        "oversample": int(oversample),
        "power_iters": int(q),
        "sketch_size": int(ell),
        "passes": 2 * q + 2,
        "lapack_driver": driver,
        "stop_reason": "fixed rank: sketch of size rank + oversample",
    }
    return u, s, vt, spec, details


def _randomized_adaptive(op, rule, q, rng, *, block, max_memory, callback, warnings, base_bytes):
    """Blocked adaptive QB with an error indicator (Yu, Gu & Li 2018, randQB_EI).

    ``‖A − QB‖_F² = ‖A‖_F² − ‖B‖_F²`` gives the error of the current basis for free, so
    the basis grows block by block until the rank rule is met.
    """
    m, n = op.shape
    r = min(m, n)
    dt = op.dtype
    block = block or max(8, min(64, r // 20 or 1))
    total = op.fro_norm_sq()
    qmat = np.empty((m, 0), dtype=dt)
    bmat = np.empty((0, n), dtype=dt)
    energy_left = total
    history = []
    stop_reason = ""
    converged = False
    s = np.empty(0)
    floor = 10 * eps(dt) * total  # rounding floor of the indicator
    while True:
        ell = qmat.shape[1]
        b = min(block, r - ell)
        if max_memory is not None:
            need = base_bytes + 3 * (m + n) * (ell + b) * dt.itemsize
            if need > max_memory:
                raise BudgetError(
                    f"adaptive randomized SVD needs a basis larger than {ell + b} to meet "
                    f"{rule.kind} = {rule.value:g} (about {_human(need)}) but the memory "
                    f"budget is {_human(max_memory)}; raise --max-memory or relax the rule"
                )
        omega = _gaussian(rng, (n, b), dt)
        y = op.matmat(omega)
        if ell:
            y -= qmat @ (bmat @ omega)
        qi = orth(y)
        for _ in range(q):
            z = op.rmatmat(qi)
            if ell:
                z -= bmat.T @ (qmat.T @ qi)
            w = orth(z)
            y = op.matmat(w)
            if ell:
                y -= qmat @ (bmat @ w)
            qi = orth(y)
        if ell:  # re-orthogonalise against the basis so far (rounding drift)
            qi = orth(qi - qmat @ (qmat.T @ qi))
        bi = op.rmatmat(qi).T
        qmat = np.hstack([qmat, qi])
        bmat = np.vstack([bmat, bi])
        energy_left -= float(np.sum(np.asarray(bi, dtype=np.float64) ** 2))
        ell = qmat.shape[1]
        import scipy.linalg as sla

        s = sla.svdvals(bmat, check_finite=False)
        full = ell >= r
        spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=full)
        k = select_rank(spec, rule)
        err = math.sqrt(max(energy_left, 0.0) / total) if total > 0 else 0.0
        event = {"step": len(history) + 1, "basis_size": int(ell), "relative_error": err}
        history.append(event)
        if k is not None:
            converged, stop_reason = True, f"{rule.kind} met with basis size {ell}"
            break
        if full:
            stop_reason = "basis reached min(m, n)"
            converged = True
            break
        if rule.kind in ("tol", "energy", "abs_frob") and energy_left <= floor:
            warnings.append(
                f"{rule.kind} = {rule.value:g} is below the rounding floor of the randomized "
                "error indicator; the error is certified by an explicit residual"
            )
            stop_reason = "error indicator at its rounding floor"
            break
        if callback is not None and callback(dict(event)):
            stop_reason = "stopped by callback"
            break
    ub, s, vt, driver = thin_svd(np.ascontiguousarray(bmat))
    u = qmat @ ub
    spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=qmat.shape[1] >= r)
    details = {
        "power_iters": int(q),
        "block_size": int(block),
        "sketch_size": int(qmat.shape[1]),
        "passes": len(history) * (2 * q + 2),
        "lapack_driver": driver,
        "history": history,
        "converged": converged,
        "stop_reason": stop_reason,
    }
    return u, s, vt, spec, details


# --- Lanczos ---------------------------------------------------------------------------


def _lanczos(op, rule, rng, callback, warnings, oversample):
    """ARPACK (scipy.sparse.linalg.svds); for accuracy rules the rank doubles until met."""
    from scipy.sparse.linalg import svds

    m, n = op.shape
    r = min(m, n)
    lin = to_scipy_linear_operator(op)
    total = op.fro_norm_sq()
    k = min(int(rule.value), r - 1) if rule.kind == "rank" else min(16, r - 1)
    history = []
    stop_reason = ""
    converged = True
    while True:
        v0 = _gaussian(rng, (r,), op.dtype)
        u, s, vt = svds(lin, k=k, v0=v0, tol=0, solver="arpack", return_singular_vectors=True)
        order = np.argsort(s)[::-1]
        u, s, vt = u[:, order], s[order], vt[order]
        spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=False)
        history.append({"step": len(history) + 1, "rank": int(k)})
        if rule.kind == "rank":
            stop_reason = "ARPACK converged"
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
    details = {
        "solver": "arpack",
        "history": history,
        "converged": converged,
        "stop_reason": stop_reason,
        "ncv": "scipy default",
    }
    return u, s, vt, spec, details


# --- certification ---------------------------------------------------------------------


def _certify(op, u, s, vt, spec: Spectrum, method: str, k: int) -> dict:
    total = spec.norm_sq
    out = {
        "norm_fro": math.sqrt(total),
        "singular_values": [float(x) for x in s],
        "orthogonality_loss": {"U": orthogonality_loss(u), "V": orthogonality_loss(vt.T)},
    }
    if total == 0.0:
        out.update(
            relative_frobenius_error=0.0,
            error_method="zero matrix",
            error_bounds=[0.0, 0.0],
            explained_energy=1.0,
        )
        return out
    if method == "exact":
        err_sq = float(spec.tail_sq()[k])
        err = math.sqrt(err_sq / total)
        out.update(
            relative_frobenius_error=err,
            error_method="spectrum tail (exact)",
            error_bounds=[err, err],
        )
    else:
        # ‖A − UΣVᵀ‖² = ‖A‖² − 2 Σ σᵢ uᵢᵀ A vᵢ + Σ σᵢ² for orthonormal U, V: one pass.
        av = op.matmat(np.ascontiguousarray(vt.T))
        cross = float(
            np.einsum("ij,ij->j", np.asarray(u, np.float64), np.asarray(av, np.float64))
            @ np.asarray(s, np.float64)
        )
        s64 = np.asarray(s, dtype=np.float64)
        err_sq = total - 2.0 * cross + float(s64 @ s64)
        gamma = 10.0 * (k + 1) * eps(u.dtype) * total
        how = "norm identity ‖A‖² − 2ΣσᵢuᵢᵀAvᵢ + Σσᵢ²"
        if err_sq < _IDENTITY_MARGIN * gamma and _residual_affordable(op):
            err_sq = _explicit_residual_sq(op, u, s, vt)
            gamma = 4.0 * eps(np.float64) * total + 2.0 * eps(u.dtype) * total
            how = "explicit residual (row blocks, float64)"
        err_sq = max(err_sq, 0.0)
        lo = math.sqrt(max(err_sq - gamma, 0.0) / total)
        hi = math.sqrt((err_sq + gamma) / total)
        out.update(
            relative_frobenius_error=math.sqrt(err_sq / total),
            error_method=how,
            error_bounds=[lo, hi],
        )
    out["explained_energy"] = 1.0 - out["relative_frobenius_error"] ** 2
    return out


def _residual_affordable(op) -> bool:
    # A residual pass densifies row blocks: fine for dense data, and for sparse data only
    # while m·n stays modest.
    m, n = op.shape
    return op.kind == "dense" or getattr(op, "base", op).kind == "dense" or m * n <= 1 << 28


def _explicit_residual_sq(op, u, s, vt) -> float:
    sv = np.asarray(s, np.float64)[:, None] * np.asarray(vt, np.float64)
    u64 = np.asarray(u, np.float64)
    total = 0.0
    for start, blk in op.row_blocks():
        rb = np.asarray(blk, np.float64) - u64[start : start + blk.shape[0]] @ sv
        total += float(np.einsum("ij,ij->", rb, rb))
    return total


def _human(nbytes) -> str:
    if nbytes is None:
        return "unbounded"
    x = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if x < 1024 or unit == "PiB":
            return f"{x:.1f} {unit}" if unit != "B" else f"{int(x)} B"
        x /= 1024
    return f"{x:.1f} PiB"


__all__ = [
    "METHODS",
    "Plan",
    "SVDResult",
    "plan",
    "truncated_svd",
    "estimate_bytes",
    "default_power_iters",
    "DataError",
]
