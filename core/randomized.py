"""Randomized range finders (Halko, Martinsson & Tropp 2011; Yu, Gu & Li 2018).

Each finder returns a low-rank factorisation ``A ≈ L R`` whose error is known exactly from
norms: for ``L`` with orthonormal columns and ``R = Lᵀ A`` (or ``L = A W`` and ``R = Wᵀ`` with
orthonormal ``W``), ``‖A − (L R)_k‖_F² = ‖A‖_F² − Σ_{i≤k} σ_i(L R)²``. The SVD of the small
factor finishes the job in :mod:`rankwise.core.svd`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import rng_state, set_rng_state
from .errors import BudgetError
from .linalg import eps, orth
from .rank import RankRule, Spectrum, select_rank
from .validate import power_of_two_scale

# Adaptive subspace iteration stops once one more iteration improves the rank-k error
# estimate by less than this fraction of it. Convergence is geometric, so the error left is
# a small multiple of the last improvement: across decaying, slowly decaying, flat-tailed and
# stepped spectra the result stayed within 0.3% of the optimal error (benchmarks/).
POWER_TOL = 5e-3
MAX_POWER_ITERS = 10


class BasisLimit(Exception):
    """The rule needs a basis larger than the caller allowed (an exact SVD is cheaper)."""


# A cut chosen by a singular-value threshold must leave this many computed values after it:
# the trailing values of a sketch are underestimates and would stop the rank too early.
SV_RULE_MARGIN = 8


def _rule_met(spec: Spectrum, rule: RankRule) -> bool:
    k = select_rank(spec, rule)
    if k is None:
        return False
    if rule.kind in ("rel_sv", "abs_sv") and not spec.complete:
        return k <= len(spec.s) - SV_RULE_MARGIN
    return True


@dataclass
class Factorisation:
    """``A ≈ left @ right`` plus what it cost and how it went."""

    left: np.ndarray  # m×ℓ: orthonormal Q, or A W
    right: np.ndarray  # ℓ×n: Qᵀ A, or Wᵀ (orthonormal rows)
    total_sq: float  # ‖A‖_F²
    left_orthonormal: bool
    details: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    converged: bool = True
    stop_reason: str = ""
    mean: np.ndarray | None = None  # column mean, when the finder centred implicitly


def gaussian(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)


def _svdvals(x: np.ndarray) -> np.ndarray:
    import scipy.linalg as sla

    return sla.svdvals(x, check_finite=False)


def _rank_k_error_sq(total: float, s: np.ndarray, k: int) -> float:
    s64 = np.asarray(s[:k], dtype=np.float64)
    return max(total - float(s64 @ s64), 0.0)


def _error_bound_sq(rule: RankRule, total: float) -> float | None:
    """The largest ‖A − A_k‖_F² a rule accepts, or None for singular-value rules."""
    if rule.kind == "tol":
        return rule.value**2 * total
    if rule.kind == "energy":
        return (1.0 - rule.value) * total
    if rule.kind == "abs_frob":
        return rule.value**2
    return None


def fixed_rank(op, k: int, *, oversample: int, power_iters: int | None, rng, callback=None):
    """Subspace iteration with ``k + oversample`` columns (Halko et al., Alg. 4.4).

    ``power_iters=None`` iterates until the rank-k error estimate, available for free from
    the singular values of ``AᵀQ`` after every pass, stops improving (relative change below
    POWER_TOL, at most MAX_POWER_ITERS); an integer runs exactly that many iterations.
    Every step re-orthonormalises (CholeskyQR2, Householder when ill-conditioned).
    """
    m, n = op.shape
    r = min(m, n)
    ell = min(r, k + oversample)
    adaptive = power_iters is None
    limit = MAX_POWER_ITERS if adaptive else int(power_iters)
    total = op.fro_norm_sq()
    floor = 10.0 * (k + 1) * eps(op.dtype) * total
    q = orth(op.matmat(gaussian(rng, (n, ell), op.dtype)))
    history, prev, it = [], None, 0
    while True:
        z = op.rmatmat(q)  # n×ℓ, and B = zᵀ
        err_sq = _rank_k_error_sq(total, _svdvals(z), k)
        err = math.sqrt(err_sq / total) if total > 0 else 0.0
        history.append({"step": it, "power_iters": it, "relative_error": err})
        if it >= limit:
            stop = f"{it} power iteration(s) {'(the most allowed)' if adaptive else 'as asked'}"
            break
        if adaptive and prev is not None and prev - err <= POWER_TOL * err:
            stop = f"error estimate settled after {it} power iteration(s)"
            break
        if adaptive and err_sq <= floor:
            stop = f"error estimate at its rounding floor after {it} power iteration(s)"
            break
        if callback is not None and callback(dict(history[-1])):
            stop = "stopped by callback"
            break
        prev = err
        q = orth(op.matmat(orth(z)))
        it += 1
    details = {
        "oversample": int(oversample),
        "power_iters": it,
        "power_iters_mode": "adaptive" if adaptive else "fixed",
        "sketch_size": int(ell),
        "passes": 2 * it + 2 + 1,  # + the norm pass
    }
    return Factorisation(q, np.ascontiguousarray(z.T), total, True, details, history,
                         stop != "stopped by callback", stop)  # fmt: skip


def adaptive_qb(
    op, rule: RankRule, *, power_iters: int, rng, block: int | None, max_memory: int | None,
    base_bytes: int, warnings: list, callback=None, max_basis: int | None = None,
):  # fmt: skip
    """Blocked adaptive QB with an error indicator (randQB_EI, Yu, Gu & Li 2018).

    ``‖A − QB‖_F² = ‖A‖_F² − ‖B‖_F²`` gives the error of the current basis for free, so the
    basis grows block by block until the rank rule is met.
    """
    m, n = op.shape
    r = min(m, n)
    dt = op.dtype
    block = block or max(8, min(64, r // 20 or 1))
    total = op.fro_norm_sq()
    qmat = np.empty((m, 0), dtype=dt)
    bmat = np.empty((0, n), dtype=dt)
    left = total
    history: list = []
    stop, converged = "", False
    floor = 10 * eps(dt) * total  # rounding floor of the indicator
    while True:
        ell = qmat.shape[1]
        b = min(block, r - ell)
        if max_basis is not None and ell + b > max_basis and ell + b < r:
            raise BasisLimit(
                f"{rule.kind} = {rule.value:g} needs a basis larger than {ell} of min(m, n) = {r}"
            )
        if max_memory is not None:
            need = base_bytes + 3 * (m + n) * (ell + b) * dt.itemsize
            if need > max_memory:
                raise BudgetError(
                    f"adaptive randomized SVD needs a basis larger than {ell + b} to meet "
                    f"{rule.kind} = {rule.value:g} (about {need / 2**20:.1f} MiB) but the "
                    f"memory budget is {max_memory / 2**20:.1f} MiB; raise --max-memory or "
                    "relax the rule"
                )
        omega = gaussian(rng, (n, b), dt)
        y = op.matmat(omega)
        if ell:
            y -= qmat @ (bmat @ omega)
        qi = orth(y)
        for _ in range(power_iters):
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
        left -= float(np.sum(np.asarray(bi, dtype=np.float64) ** 2))
        ell = qmat.shape[1]
        full = ell >= r
        err = math.sqrt(max(left, 0.0) / total) if total > 0 else 0.0
        event = {"step": len(history) + 1, "basis_size": int(ell), "relative_error": err}
        history.append(event)
        # The singular values of B are needed only once the indicator says the rule may hold.
        bound = _error_bound_sq(rule, total)
        need_s = bound is None or left <= bound or full
        spec = Spectrum(s=_svdvals(bmat) if need_s else np.empty(0), total_sq=total,
                        max_rank=r, complete=full)  # fmt: skip
        if need_s and _rule_met(spec, rule):
            converged, stop = True, f"{rule.kind} met with basis size {ell}"
            break
        if full:
            converged, stop = True, "basis reached min(m, n)"
            break
        if rule.kind in ("tol", "energy", "abs_frob") and left <= floor:
            warnings.append(
                f"{rule.kind} = {rule.value:g} is below the rounding floor of the randomized "
                "error indicator; the error is certified by an explicit residual"
            )
            stop = "error indicator at its rounding floor"
            break
        if callback is not None and callback(dict(event)):
            stop = "stopped by callback"
            break
    details = {
        "power_iters": int(power_iters),
        "power_iters_mode": "fixed",
        "block_size": int(block),
        "sketch_size": int(qmat.shape[1]),
        "passes": len(history) * (2 * power_iters + 2) + 1,
    }
    return Factorisation(qmat, bmat, total, True, details, history, converged, stop)


def streaming(op, rule: RankRule, *, oversample: int, power_iters: int | None, rng,
              center: bool, max_memory: int | None, warnings: list, callback=None,
              resume: dict | None = None):  # fmt: skip
    """Subspace iteration on the Gram operator, one pass over the data per iteration.

    Every pass over the row blocks computes ``Y = A W`` and ``Z = AᵀY = AᵀA W`` together,
    so ``q`` power iterations cost ``q + 2`` reads of the file instead of ``2q + 3``. The
    first pass also gathers the column means and ``‖A‖_F²`` (Chan's pairwise update) and
    checks the data. Rayleigh–Ritz values ``eig(WᵀZ) = σ(AW)²`` give the error of
    ``A ≈ (AW)Wᵀ`` after every pass for free. With an accuracy rule the basis doubles until
    the rule is met. Centring is applied implicitly: ``A_cᵀA_c W = AᵀAW − μ (1ᵀAW)``.

    After every pass but the last, ``callback(event)`` gets the event dict with
    ``event["state"]()``: what continues the run from there (the sketch, the pass counters,
    the statistics of the first pass, ``rng``). ``resume`` (such a state, on the same
    unchanged source) continues without redoing the passes behind it, to the same bytes.
    """
    import scipy.linalg as sla

    m, n = op.shape
    r = min(m, n)
    dt = op.dtype
    fixed_k = min(int(rule.value), r) if rule.kind == "rank" else None
    ell = min(r, fixed_k + oversample if fixed_k else max(32, oversample))
    adaptive = power_iters is None
    limit = MAX_POWER_ITERS if adaptive else int(power_iters)
    if resume is None:
        omega = gaussian(rng, (n, ell), dt)
        with np.errstate(over="ignore", invalid="ignore"):  # extreme data is redone scaled
            z, _, ysum, stats = op.gram_pass(omega, stats=True, center_stats=center)
        scale = power_of_two_scale(stats.magnitude, op.dtype)
        if scale != 1.0:  # squares overflow or underflow: redo the pass on exactly scaled data
            op.scale = scale
            rule = rule.scaled(scale)
            z, _, ysum, stats = op.gram_pass(omega, stats=True, center_stats=center)
        mean = stats.mean if center else None
        total = stats.centered_sq if center else stats.raw_sq
        if center:
            z -= np.outer(mean, ysum).astype(z.dtype)
        w = orth(z)
        history: list = []
        prev, it, grown = None, 0, 0
    else:  # the state after a callback: as if "prev = err; w = orth(z); it += 1" just ran
        op.passes, op.bytes_read, op.scale = resume["passes"], resume["bytes_read"], resume["scale"]
        op.pass_seconds, op._checked = list(resume["pass_seconds"]), True
        if op.scale != 1.0:
            rule = rule.scaled(op.scale)
        mean, total, history = resume["mean"], resume["total"], resume["history"]
        prev, it, grown = resume["err"], resume["it"] + 1, resume["grown"]
        w = orth(resume["z"].copy())
        set_rng_state(rng, resume["rng"])
    stop, converged = "", True
    y = None
    while True:
        _check_streaming_budget(m, n, w.shape[1], dt, max_memory, rule)
        z, y, ysum, _ = op.gram_pass(w, keep=True, out=y)
        if center:
            z -= np.outer(mean, ysum).astype(z.dtype)
            y -= (mean @ w).astype(y.dtype)
        ritz = np.sort(np.maximum(sla.eigvalsh(w.T @ z, check_finite=False), 0))[::-1]
        s_est = np.sqrt(ritz)
        k = fixed_k if fixed_k else len(s_est)
        err_sq = _rank_k_error_sq(total, s_est, k)
        err = math.sqrt(err_sq / total) if total > 0 else 0.0
        event = {"step": len(history) + 1, "basis_size": int(w.shape[1]), "power_iters": it,
                 "relative_error": err, "pass": op.passes}  # fmt: skip
        history.append(event)
        settled = (
            it >= limit
            or (adaptive and prev is not None and prev - err <= POWER_TOL * err)
            or err_sq <= 10.0 * (k + 1) * eps(dt) * total
        )
        if settled and fixed_k is None:
            spec = Spectrum(s=s_est, total_sq=total, max_rank=r, complete=w.shape[1] >= r)
            if not _rule_met(spec, rule) and w.shape[1] < r:
                # Grow: keep the converged directions, add as many fresh ones.
                extra = min(w.shape[1], r - w.shape[1])
                w = orth(np.hstack([w, gaussian(rng, (n, extra), dt)]))
                prev, it, grown = None, 0, grown + 1
                continue
        if settled:
            what = "rule met" if fixed_k is None else "error estimate settled"
            stop = f"{what} after pass {op.passes}"
            break
        if callback is not None:

            def state(_z=z, _err=err, _it=it, _grown=grown):
                return {"z": _z.copy(), "err": _err, "it": _it, "grown": _grown, "mean": mean,
                        "total": total, "history": copy.deepcopy(history),
                        "passes": op.passes, "bytes_read": int(op.bytes_read),
                        "pass_seconds": list(op.pass_seconds), "scale": op.scale,
                        "rng": rng_state(rng)}  # fmt: skip

            if callback({**event, "state": state}):
                stop, converged = "stopped by callback", False
                break
        prev = err
        w = orth(z)
        it += 1
    details = {
        "oversample": int(oversample),
        "power_iters": it,
        "power_iters_mode": "adaptive" if adaptive else "fixed",
        "sketch_size": int(w.shape[1]),
        "basis_growths": grown,
        "passes": op.passes,
        "block_rows": op.block_rows,
        "bytes_read": int(op.bytes_read),
    }
    return Factorisation(y, np.ascontiguousarray(w.T), total, False, details, history,
                         converged, stop, mean)  # fmt: skip


def streaming_bytes(m: int, n: int, ell: int, itemsize: int, k: int) -> int:
    """Working set of :func:`streaming` besides the block buffers: Y = A·W (one buffer, QR'd
    in place at the end), Z, W and a temporary, U, and the small matrices."""
    return (m * ell + 4 * n * ell) * itemsize + m * k * itemsize + 4 * ell * ell * 8


def _check_streaming_budget(m, n, ell, dt, max_memory, rule):
    if max_memory is None:
        return
    need = streaming_bytes(m, n, ell, dt.itemsize, min(ell, m, n))
    if need > max_memory:
        raise BudgetError(
            f"streaming SVD needs a basis of {ell} columns for {rule.kind} = {rule.value:g} "
            f"(about {need / 2**20:.1f} MiB besides the row blocks) but the memory budget is "
            f"{max_memory / 2**20:.1f} MiB; raise --max-memory or lower the rank"
        )
