"""Weighted low-rank approximation.

Row/column weights (closed form)
--------------------------------
:func:`weighted_svd` minimises ``‖D_r^{1/2} (A − L) D_c^{1/2}‖_F`` over rank-k ``L`` for
positive row weights ``r`` (m) and column weights ``c`` (n), as Fisher-weighted SVD does with
row importances (Hsu et al., "Language model compression with weighted low-rank
factorization"). With ``Ã = D_r^{1/2} A D_c^{1/2} = U' Σ V'ᵀ`` the optimum is
``L = U Σ Vᵀ`` with ``U = D_r^{-1/2} U'`` and ``Vᵀ = V'ᵀ D_c^{-1/2}`` (Eckart–Young applied to
Ã, since ``X ↦ D_r^{1/2} X D_c^{1/2}`` is a bijection preserving rank).

* ``A ≈ U diag(S) Vt``; ``U`` is orthonormal in the ``D_r`` inner product (``Uᵀ D_r U = I``),
  ``V`` in the ``D_c`` one (``Vt D_c Vtᵀ = I``) — not in the Euclidean one.
* ``S`` are the singular values of Ã; a rank rule (energy, tol, …) applies to that
  weighted spectrum, and the certified ``relative_frobenius_error`` is the weighted one,
  ``‖D_r^{1/2}(A − L)D_c^{1/2}‖ / ‖D_r^{1/2} A D_c^{1/2}‖``. The unweighted
  ``‖A − L‖_F / ‖A‖_F`` is reported as ``unweighted_relative_error``.
* Signs: :func:`rankwise.core.linalg.svd_flip` on the weighted factor ``U'``, so the entry
  of largest magnitude of each column of ``D_r^{1/2} U`` is positive.

Elementwise weights (iterative)
-------------------------------
:func:`elementwise_weighted_svd` minimises ``f(L) = Σ w_ij (a_ij − l_ij)²`` over rank-k ``L``
for ``W ≥ 0`` (zero = ignore the entry), by the EM iteration of Srebro & Jaakkola (2003):
with ``W̃ = W / max W ∈ [0, 1]``,

    L_{t+1} = argmin_{rank k} ‖X_t − L‖_F,   X_t = W̃ ⊙ A + (1 − W̃) ⊙ L_t.

Since ``f̃(L) ≤ ‖X_t − L‖² + c_t`` with equality at ``L_t`` (f̃ the objective with W̃), every
step that does not increase ``‖X_t − L‖`` decreases f: the objective is monotone. The M-step
is either an exact rank-k SVD of ``X_t`` (``m_step="exact"``) or one warm-started subspace
iteration ``Q = orth(X_t V_t)``, ``L_{t+1} = Q Qᵀ X_t`` (``m_step="subspace"``, O(mnk) per
sweep), which is also monotone: ``‖X_t − QQᵀX_t‖ ≤ ‖X_t − X_t V_t V_tᵀ‖ ≤ ‖X_t − L_t‖``.
"""

from __future__ import annotations

import math

import numpy as np

from .cur import residual_affordable, residual_sq
from .errors import BudgetError, DataError, ParameterError
from .linalg import eps, orthogonality_loss, svd_flip, thin_svd
from .loop import run_loop
from .operator import as_operator
from .rank import RankRule
from .result import Result
from .validate import (
    as_float_matrix,
    check_finite,
    check_matrix_shape,
    is_sparse,
    working_dtype,
)

M_STEPS = ("auto", "exact", "subspace")
# auto: exact LAPACK SVD of X_t per sweep while min(m, n) is at most this.
EXACT_M_STEP_DIM = 200
# The solver stops once the weighted relative error is below this many ulps × √max(m, n).
ROUNDING_ULPS = 10.0


def _check_weights(w, length: int, name: str, shape) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind not in "fiub":
        raise DataError(f"{name} must be numeric, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != length:
        axis = "rows" if name == "row_weights" else "columns"
        raise DataError(f"{name} has shape {w.shape} but the matrix has shape {tuple(shape)}: "
                        f"one weight per {axis[:-1]} ({length}) is needed")  # fmt: skip
    w = w.astype(np.float64)
    bad = ~np.isfinite(w)
    if bad.any():
        raise DataError(f"{name} holds {int(bad.sum())} non-finite value(s)")
    if not (w > 0).all():
        raise DataError(f"{name} must be positive; {int((w <= 0).sum())} value(s) are ≤ 0 "
                        f"(smallest {float(w.min()):g})")  # fmt: skip
    return w


def weighted_svd(a, rule: RankRule, *, row_weights=None, col_weights=None,
                 max_memory: int | None = None, **svd_kw) -> Result:  # fmt: skip
    """Closed-form weighted truncated SVD; ``svd_kw`` go to
    :func:`rankwise.core.svd.truncated_svd` (``method``, ``rng``, ``oversample``, …).

    Returns a :class:`Result` with arrays ``U`` (m×k), ``S`` (k), ``Vt`` (k×n).
    """
    from .svd import plan, truncated_svd

    if svd_kw.get("center"):
        raise ParameterError("weighted SVD does not centre the data (a weighted mean would be "
                             "needed); centre it first")  # fmt: skip
    check_matrix_shape(getattr(a, "shape", ()), method="weighted svd")
    a = as_float_matrix(a, method="weighted svd")
    check_finite(a, method="weighted svd")
    m, n = a.shape
    wdt = a.dtype
    r = np.ones(m) if row_weights is None else _check_weights(row_weights, m, "row_weights",
                                                               a.shape)  # fmt: skip
    c = np.ones(n) if col_weights is None else _check_weights(col_weights, n, "col_weights",
                                                               a.shape)  # fmt: skip
    sr = np.sqrt(r).astype(wdt)
    sc = np.sqrt(c).astype(wdt)
    for name, sq in (("row_weights", sr), ("col_weights", sc)):
        tiny = np.finfo(wdt).tiny
        if not (np.isfinite(sq).all() and (sq >= tiny).all() and (sq <= 1 / tiny).all()):
            raise DataError(f"{name} span more than {wdt} can scale by (their square roots "
                            "underflow or overflow); rescale the weights")  # fmt: skip
    sparse = is_sparse(a)
    stored = (a.data.nbytes + a.indices.nbytes + a.indptr.nbytes) if sparse else a.nbytes
    planned = None
    if max_memory is not None:
        budget = max_memory - stored
        if budget <= 0:
            raise BudgetError(f"weighted svd: the input alone ({stored} bytes) exceeds the "
                              f"memory budget of {max_memory} bytes")  # fmt: skip
        planned = plan(a.shape, wdt, rule=rule, method=svd_kw.get("method", "auto"),
                       sparse=sparse, nnz=a.nnz if sparse else None,
                       oversample=svd_kw.get("oversample", 10), max_memory=budget)  # fmt: skip
    if sparse:
        scaled = a.multiply(sr[:, None]).multiply(sc[None, :]).tocsr()
    else:
        scaled = a * sr[:, None]
        scaled *= sc[None, :]
    res = truncated_svd(scaled, rule, max_memory=None if max_memory is None else budget,
                        planned=planned, **svd_kw)  # fmt: skip
    del scaled
    u = np.ascontiguousarray(res.U / sr[:, None])
    vt = np.ascontiguousarray(res.Vt / sc[None, :])
    s = res.S
    metrics = dict(res.metrics)
    metrics["error_weighting"] = "relative_frobenius_error is ‖D_r^½(A − USVt)D_c^½‖/‖D_r^½AD_c^½‖"
    # orthogonality_loss (from the SVD of the scaled matrix) is that of D_r^½U and D_c^½V:
    # the loss of orthonormality of U, V in the weighted inner products.
    metrics["weighted_relative_error"] = metrics["relative_frobenius_error"]
    metrics["orthogonality_inner_products"] = "D_r for U, D_c for V"
    metrics["unweighted_relative_error"], metrics["unweighted_error_method"] = _unweighted_error(
        a, u, s, vt
    )
    metrics["row_weights"] = _summary(r) if row_weights is not None else None
    metrics["col_weights"] = _summary(c) if col_weights is not None else None
    details = {**res.details, "svd_method": res.method,
               "orthonormality": "Uᵀ D_r U = I and Vt D_c Vtᵀ = I (weighted inner products)",
               "sign_convention": "svd_flip on D_r^½ U"}  # fmt: skip
    return Result(
        arrays={"U": u, "S": s, "Vt": vt},
        method=f"weighted_{res.method}",
        method_reason=f"closed form: SVD of D_r^½ A D_c^½ by {res.method} ({res.method_reason})",
        metrics=metrics,
        details=details,
        history=res.history,
        converged=res.converged,
        stop_reason=res.stop_reason,
        warnings=res.warnings,
        rank=res.rank,
    )


def _rounding_bounds(err_sq: float, norm_sq: float, dtype) -> list[float]:
    """Relative error bounds from the rounding of an explicit residual: the factors' entries
    carry eps(dtype), the float64 sums eps(float64)."""
    if norm_sq <= 0:
        return [0.0, 0.0]
    gamma = (4.0 * eps(np.float64) + 2.0 * eps(dtype)) * norm_sq
    return [math.sqrt(max(err_sq - gamma, 0.0) / norm_sq), math.sqrt((err_sq + gamma) / norm_sq)]


def _summary(w: np.ndarray) -> dict:
    return {"min": float(w.min()), "max": float(w.max()), "mean": float(w.mean())}


def _unweighted_error(a, u, s, vt) -> tuple[float, str]:
    """‖A − U diag(S) Vt‖_F / ‖A‖_F for non-orthonormal U, V."""
    op = as_operator(a)
    total = op.fro_norm_sq()
    if total == 0.0:
        return 0.0, "zero matrix"
    left = np.asarray(u, np.float64) * np.asarray(s, np.float64)
    right = np.asarray(vt, np.float64)
    if residual_affordable(op):
        return math.sqrt(residual_sq(op, left, right) / total), "explicit residual (float64)"
    # ‖A − LR‖² = ‖A‖² − 2 tr(Lᵀ A Rᵀ) + tr((LᵀL)(RRᵀ))
    ar = np.asarray(op.matmat(np.ascontiguousarray(right.T.astype(u.dtype))), np.float64)
    gram = float(np.sum((left.T @ left) * (right @ right.T)))
    err_sq = total - 2.0 * float(np.sum(left * ar)) + gram
    return math.sqrt(max(err_sq, 0.0) / total), "norm identity (sparse input)"


# --- elementwise weights -------------------------------------------------------------------


def estimate_bytes(shape, dtype) -> int:
    """Working set of the elementwise solver beyond the input: W̃, W̃⊙A, the dense copy of A,
    X_t and L_t (the M-step's SVD works on X_t's size again in the exact variant)."""
    m, n = (int(s) for s in shape)
    w = np.dtype(dtype).itemsize
    return 5 * m * n * w


def elementwise_weighted_svd(a, weights, rank: int, *, tol: float = 1e-7, max_iter: int = 500,
                             rng: np.random.Generator | int | None = None,
                             callback=None, m_step: str = "auto", init="svd",
                             max_memory: int | None = None,
                             resume: dict | None = None) -> Result:  # fmt: skip
    """Rank-``rank`` minimiser of ``Σ w_ij (a_ij − l_ij)²`` for ``W ≥ 0`` by EM.

    ``a`` may hold NaN (or anything) where the weight is 0; elsewhere it must be finite.
    ``init`` is ``"svd"`` (rank-k SVD of W̃⊙A: zero-filled where W is 0), ``"random"`` (a
    random rank-k start from ``rng``) or a tuple ``(U, S, Vt)`` to continue from (resume).
    Stops when the relative decrease of the objective is ≤ ``tol`` or after ``max_iter``
    sweeps; ``callback(event)`` (a :class:`~rankwise.core.loop.LoopEvent`) may stop it, and
    ``event.extras["factors"]`` holds the current ``(U, S, Vt)`` — pass them back as ``init``
    to continue. ``resume``: an ``event.state()`` of an interrupted run with the same data and
    parameters, continued to the same bytes. The history keeps only the scalars.

    Returns a :class:`Result` with arrays ``U``, ``S``, ``Vt`` (``U``, ``V`` orthonormal,
    :func:`~rankwise.core.linalg.svd_flip` signs) and the objective per sweep in ``history``.
    """
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ParameterError(f"rank must be a positive integer, got {rank}")
    if m_step not in M_STEPS:
        raise ParameterError(f"unknown m_step {m_step!r}; choose from {', '.join(M_STEPS)}")
    check_matrix_shape(getattr(a, "shape", ()), method="elementwise weighted svd")
    wdt = working_dtype(a.dtype, method="elementwise weighted svd")
    m, n = (int(x) for x in a.shape)
    if max_memory is not None:
        need = estimate_bytes(a.shape, wdt) + m * n * wdt.itemsize
        if need > max_memory:
            raise BudgetError(f"elementwise weighted svd works on dense m×n arrays: about "
                              f"{need} bytes for {m}×{n} {wdt}, budget {max_memory}")  # fmt: skip
    w = weights.toarray() if is_sparse(weights) else np.asarray(weights)
    if w.shape != (m, n):
        raise DataError(f"weights have shape {w.shape} but the matrix has shape {(m, n)}; "
                        "elementwise weights need the same shape")  # fmt: skip
    if w.dtype.kind not in "fiub":
        raise DataError(f"weights must be numeric, got dtype {w.dtype}")
    w = w.astype(wdt)
    if not np.isfinite(w).all():
        raise DataError(f"weights hold {int((~np.isfinite(w)).sum())} non-finite value(s) "
                        "(NaN or ±Inf); use weight 0 to ignore an entry")  # fmt: skip
    if (w < 0).any():
        raise DataError(f"weights must be ≥ 0; {int((w < 0).sum())} are negative")
    wmax = float(w.max())
    if wmax <= 0:
        raise DataError("every weight is zero: nothing to fit")
    w /= wdt.type(wmax)
    a = as_float_matrix(a.toarray() if is_sparse(a) else a, method="elementwise weighted svd")
    a = np.array(a, dtype=wdt, copy=True)
    ignored = w == 0
    finite = np.isfinite(a)
    if np.isinf(a).any():
        raise DataError("input holds infinite value(s); elementwise weighted svd needs finite "
                        "data where the weight is positive")  # fmt: skip
    if not (finite | ignored).all():
        raise DataError(
            f"input holds {int((~finite & ~ignored).sum())} NaN value(s) where the weight is "
            "positive (NaN is allowed only where the weight is 0)"
        )
    a[ignored] = 0.0
    r = min(m, n)
    k = min(int(rank), r)
    warnings = []
    if rank > r:
        warnings.append(f"rank {int(rank)} exceeds min(m, n) = {r}; clamped to {r}")
    step = m_step if m_step != "auto" else ("exact" if r <= EXACT_M_STEP_DIM else "subspace")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    wa = w * a  # W̃⊙A, fixed
    norm_w = float(np.sum(w.astype(np.float64) * a.astype(np.float64) ** 2))

    def objective(u, s, vt) -> float:
        return residual_sq(a, u * s, vt, weights=w)

    # --- initial point ---
    if isinstance(init, tuple):
        u, s, vt = (np.asarray(x, dtype=wdt) for x in init)
        if u.shape != (m, k) or s.shape != (k,) or vt.shape != (k, n):
            raise ParameterError(f"init factors must have shapes {(m, k)}, {(k,)}, {(k, n)}")
        how_init = "given factors"
    elif init == "svd":
        u, s, vt = _rank_k(wa, k)
        how_init = "rank-k SVD of W̃⊙A (zero where the weight is 0)"
    elif init == "random":
        u = np.linalg.qr(rng.standard_normal((m, k)))[0].astype(wdt)
        vt = np.linalg.qr(rng.standard_normal((n, k)))[0].T.astype(wdt)
        s = np.full(k, math.sqrt(norm_w / k) if norm_w > 0 else 1.0, dtype=wdt)
        how_init = "random orthonormal factors"
    else:
        raise ParameterError(f"init must be 'svd', 'random' or (U, S, Vt), got {init!r}")
    state = {"u": u, "s": s, "vt": vt}
    f0 = objective(u, s, vt)

    history: list = []
    start = 0
    if resume is not None:  # the sweep pops the factors from this very list: fill it in place
        state.update({k: v.copy() for k, v in resume["solver"].items()})
        history.extend(dict(h) for h in resume["loop"]["history"])
        start = int(resume["loop"]["iteration"])

    def sweep(_it):
        if history:  # the factors ride on the event for the callback only, not the history
            history[-1].pop("factors", None)
        lt = (state["u"] * state["s"]) @ state["vt"]
        x = wa + (1 - w) * lt  # X_t = W̃⊙A + (1 − W̃)⊙L_t
        del lt
        if step == "exact":
            u, s, vt = _rank_k(x, k)
        else:
            u, s, vt = _subspace_step(x, state["vt"])
        state.update(u=u, s=s, vt=vt)
        f = objective(u, s, vt)
        rel = math.sqrt(f / norm_w) if norm_w > 0 else 0.0
        return f, {"weighted_relative_error": rel, "factors": (u, s, vt)}

    # A planted exact fit drives f to zero geometrically, so its relative change never falls
    # below tol: stop once the weighted relative error is at the rounding level.
    floor = (ROUNDING_ULPS * eps(wdt) * math.sqrt(max(m, n))) ** 2 * norm_w
    at_floor = []

    def stop(event) -> bool | None:
        if event.objective <= floor:
            at_floor.append(event.iteration)
            return True
        return callback(event) if callback is not None else None

    def snapshot():
        return {"solver": {k: v.copy() for k, v in state.items()}}

    loop = run_loop(sweep, tol=tol, max_iter=max_iter, callback=stop, initial_objective=f0,
                    history=history, start_iteration=start, state=snapshot)  # fmt: skip
    if history:
        history[-1].pop("factors", None)
    if at_floor:
        loop.converged = True
        loop.stop_reason = "weighted relative error at the rounding level"
    u, s, vt = state["u"], state["s"], state["vt"]
    u, vt = svd_flip(np.ascontiguousarray(u), np.ascontiguousarray(vt))
    f = loop.objective if loop.history else f0
    observed = ~ignored
    diff = (a - (u.astype(np.float64) * s) @ vt.astype(np.float64))[observed]
    norm_obs = float(np.sum(a[observed].astype(np.float64) ** 2))
    metrics = {
        "objective": float(f),
        "objective_definition": "Σ w_ij (a_ij − l_ij)² with w scaled by 1/max(W)",
        "weighted_relative_error": math.sqrt(f / norm_w) if norm_w > 0 else 0.0,
        "relative_frobenius_error": math.sqrt(f / norm_w) if norm_w > 0 else 0.0,
        "error_method": "explicit weighted residual (float64)",
        "error_bounds": _rounding_bounds(f, norm_w, wdt),
        "unweighted_relative_error_on_support": (
            math.sqrt(float(diff @ diff) / norm_obs) if norm_obs > 0 else 0.0
        ),
        "weights_max": wmax,
        "ignored_entries": int(ignored.sum()),
        "norm_fro": math.sqrt(norm_obs),
        "singular_values": [float(x) for x in s],
        "orthogonality_loss": {"U": orthogonality_loss(u), "V": orthogonality_loss(vt.T)},
    }
    details = {"algorithm": "EM (Srebro & Jaakkola 2003)", "m_step": step, "init": how_init,
               "iterations": loop.iterations, "tol": tol, "max_iter": max_iter,
               "working_dtype": str(wdt)}  # fmt: skip
    reason = ("exact rank-k SVD of X_t per sweep (small matrix)" if step == "exact" else
              "one warm-started subspace iteration per sweep: O(mnk), still monotone")  # fmt: skip
    return Result(
        arrays={"U": u, "S": np.ascontiguousarray(s, dtype=wdt), "Vt": vt},
        method="em",
        method_reason=reason,
        metrics=metrics,
        details=details,
        history=loop.history,
        converged=loop.converged,
        stop_reason=loop.stop_reason,
        warnings=tuple(warnings),
        rank={"value": int(k), "rule": "rank", "threshold": int(rank), "max_rank": int(r),
              "clamped": bool(rank > r),
              "by_rule": [{"rule": "rank", "threshold": int(rank), "rank": int(k),
                           "given": True}]},
    )  # fmt: skip


def _rank_k(x: np.ndarray, k: int):
    u, s, vt, _ = thin_svd(x)
    return np.ascontiguousarray(u[:, :k]), s[:k].copy(), np.ascontiguousarray(vt[:k])


def _subspace_step(x: np.ndarray, vt: np.ndarray):
    """Q = orth(X Vᵀᵀ), then the SVD of QᵀX: the rank-k L = QQᵀX and its factors."""
    import scipy.linalg as sla

    q, _ = sla.qr(x @ vt.T, mode="economic", check_finite=False)
    ub, s, vt_new, _ = thin_svd(np.ascontiguousarray(q.T @ x))
    return np.ascontiguousarray(q @ ub), s, np.ascontiguousarray(vt_new)
