"""Tensor completion: CP on the observed entries only (order N ≥ 3), by row-wise weighted ALS.

``X ≈ [[λ; A_0, …, A_{N-1}]]`` with ``weights`` λ (R,) and ``factors/n`` = A_n (I_n × R),
TensorLy's layout as in :mod:`rankwise.core.cp`; inputs, hold-out, baseline (global mean plus
per-mode biases), metrics and prediction are those of :mod:`rankwise.core.complete`.

Objective (``history``, ``metrics["objective"]``):

    F = ½ Σ_Ω (x − Σ_r Π_n A_n[i_n, r])² + reg/2 Σ_n ‖A_n‖²_F,

the CP-WOPT objective (Acar, Dunlavy, Kolda & Mørup 2011) plus a small ridge. CP-WOPT
minimises it by a first-order method over all factors; here each factor is instead updated
exactly in turn — weighted ALS: row i of A_n solves the R×R system
``(Σ_{l: i_n = i} z_l z_lᵀ + reg·I) a = Σ_l x_l z_l`` with ``z_l = ⊛_{m≠n} A_m[i_m(l), :]``, the
Hadamard product of the other factors' rows at that entry. The systems of all rows are
formed and solved in batches (entries grouped per row and padded, as for matrix altmin:
:class:`~rankwise.core.complete.Groups`): O(|Ω|·(N + R)·R) per mode, O(I_n·R³) for the solves,
no Khatri–Rao product and nothing of the full size. After each sweep the columns are
re-balanced (every mode's column r scaled to the geometric mean of their norms, which keeps
the model and minimises the ridge term): each step is an exact block minimisation, so F never
increases. The loop stops when its relative decrease per sweep is ≤ ``tol``.

``reg``: given (> 0), or ``REG_DEFAULT`` times the typical diagonal of a row system at the
data's scale, ``(|Ω|/max I_n)·(ms/R)^((N−1)/N)`` (ms = mean square of the observed values):
a ridge that keeps rows with fewer observations than R solvable and biases the fit by about
``REG_DEFAULT`` relative.

Initialisation: standard normal factors scaled so that the model's entries have the data's
mean square, drawn from the one Generator; with ``n_init`` > 1 each restart draws afresh and
the run with the lowest final objective is kept (the first on ties) — ALS from a random start
can stall in a swamp.

Slices with no training entry are dropped from the problem; their factor rows are returned as
zeros (the model predicts 0 there) and ``metrics["empty_slices"]`` counts them per mode.

Conventions (as :mod:`rankwise.core.cp`): unit-norm factor columns, weights ≥ 0 sorted
descending; for each component the entry of largest magnitude of every mode but the last is
positive (the last absorbs the sign); a component whose weight is below ``eps·max weight`` is
returned as zeros, last. Computed in float64, returned in the working dtype (float32 kept).
BLAS runs single-threaded (every product is small; see ``complete_matrix``).
"""

from __future__ import annotations

import math

import numpy as np

from .checkpoint import Checkpointable
from .complete import (
    Groups,
    Observed,
    Problem,
    as_rng,
    budget,
    check_clip,
    check_parameters,
    count_observed,
    cp_values,
    estimate_bytes,
    evaluate,
    holdout_split,
    input_shape,
    observations,
    solve_spd,
)
from .cp import _normalise
from .errors import DataError, ParameterError
from .linalg import eps as _eps
from .loop import run_restarts
from .result import Result
from .validate import is_sparse, working_dtype

REG_DEFAULT = 1e-9


def _sumsq(a) -> float:
    a = np.asarray(a).ravel()
    return float(a @ a)


class _CPSolver(Checkpointable):
    STATE = ("f", "resid")

    def __init__(self, prob: Problem, groups, factors, lam: float, tracker=None):
        self.prob = prob
        self.tracker = tracker
        self.groups = groups
        self.f = factors
        self.lam = lam
        n = len(factors)
        # index arrays with a sentinel that points at an appended zero row (padding)
        self.idx_ext = [np.append(prob.idx[m], prob.dims[m]) for m in range(n)]
        self.vals_ext = np.append(prob.vals, 0.0)
        self.resid = prob.vals - cp_values(np.ones(factors[0].shape[1]), factors, prob.idx)

    def objective(self) -> float:
        return 0.5 * _sumsq(self.resid) + 0.5 * self.lam * sum(_sumsq(a) for a in self.f)

    objective0 = objective

    def details(self) -> dict:
        return {}

    def _mode(self, n: int) -> None:
        r = self.f[0].shape[1]
        ext = [np.vstack([a, np.zeros((1, r))]) for a in self.f]
        others = [m for m in range(len(self.f)) if m != n]
        out = self.f[n]
        for g, pos in self.groups[n].chunks:
            z = ext[others[0]][self.idx_ext[others[0]][pos]]  # g × L × R
            for m in others[1:]:
                z *= ext[m][self.idx_ext[m][pos]]
            zt = z.transpose(0, 2, 1)
            out[g] = solve_spd(zt @ z, (zt @ self.vals_ext[pos][:, :, None])[:, :, 0], self.lam)

    def _balance(self) -> None:
        norms = np.array([np.linalg.norm(a, axis=0) for a in self.f])  # N × R
        alive = np.all(norms > 0, axis=0)
        target = np.exp(np.mean(np.log(np.where(alive, norms, 1.0)), axis=0))
        for i, a in enumerate(self.f):
            a *= np.where(alive, target / np.where(norms[i] > 0, norms[i], 1.0), 0.0)

    def sweep(self, it: int):
        for n in range(len(self.f)):
            self._mode(n)
        self._balance()
        self.resid = self.prob.vals - cp_values(np.ones(self.f[0].shape[1]), self.f,
                                                self.prob.idx)  # fmt: skip
        extras = {"rmse": math.sqrt(_sumsq(self.resid) / self.prob.nnz)}
        if self.tracker is not None:
            t = self.tracker
            extras.update(t.extras(cp_values(np.ones(self.f[0].shape[1]), self.f, t.idx)))
        return self.objective(), extras


# Modes longer than this get their leading eigenvectors by Lanczos instead of a dense eigh.
SPECTRAL_DENSE_MAX = 4000


def _spectral(prob, r: int, rng, sd: float):
    """Leading eigenvectors of each mode's Gram of the zero-filled tensor, from the sparse
    unfolding (never dense), with the diagonal's excess from sampling removed (observed
    fraction p: off-diagonal ≈ p²·XXᵀ, diagonal ≈ p·XXᵀ). A start near the planted
    subspaces where random starts can stall in a swamp; None when a mode's column index
    would overflow int64 (then the first run is random too)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    dims = prob.dims
    nd = len(dims)
    p = prob.nnz / math.prod(dims)
    out = []
    for n in range(nd):
        rest = [m for m in range(nd) if m != n]
        if math.prod(dims[m] for m in rest) >= 2**62:
            return None
        col = np.zeros(prob.nnz, dtype=np.int64)
        for m in rest:
            col = col * dims[m] + prob.idx[m]
        s = sp.csr_matrix((prob.vals, (prob.idx[n], col)),
                          shape=(dims[n], math.prod(dims[m] for m in rest)))  # fmt: skip
        g = (s @ s.T).tocsr()
        g = g - sp.diags((1.0 - p) * g.diagonal())
        k = min(r, dims[n])
        if dims[n] <= SPECTRAL_DENSE_MAX or k >= dims[n] - 1:
            w, v = np.linalg.eigh(g.toarray())
        else:
            w, v = eigsh(g, k=k, which="LA", v0=rng.standard_normal(dims[n]))
        v = v[:, np.argsort(w)[::-1][:k]]
        if k < r:  # fewer indices than the rank: random extra columns
            v = np.hstack([v, rng.standard_normal((dims[n], r - k)) / math.sqrt(dims[n])])
        out.append(v * sd * math.sqrt(dims[n]))
    return out


def _input_dtype(x):
    if isinstance(x, Observed):
        return x.dtype
    if isinstance(x, tuple) and len(x) == 3:
        return np.asarray(x[1]).dtype
    return x.dtype


def cp_complete(x, rank: int, *, reg: float | None = None, tol: float = 1e-9,
                max_iter: int = 500, n_init: int = 1, test=None, holdout: float | None = None,
                clip=None, rng=None, callback=None, max_memory: int | None = None,
                resume: dict | None = None) -> Result:  # fmt: skip
    """CP completion of a tensor of order N ≥ 3 from its observed entries (module docstring).

    ``x``: dense tensor with NaN for missing entries, a COO triple ``(indices, values, shape)``
    (one index array per mode) or an :class:`Observed`. ``rank``: R. ``reg``: the ridge
    (default relative, see above). ``n_init``: random restarts, the best kept. ``test`` /
    ``holdout`` / ``clip`` / ``callback`` / ``max_memory`` / ``resume`` as for matrix
    completion.

    Returns a :class:`Result` with ``arrays = {"weights": (R,), "factors/n": I_n × R}``.
    """
    check_parameters(method="cp", rank=rank, reg=reg, tol=tol, max_iter=max_iter,
                     n_init=n_init, holdout=holdout, clip=clip)  # fmt: skip
    if holdout is not None and test is not None:
        raise ParameterError("give either holdout or test, not both")
    clip = check_clip(clip)
    seed, rng = rng, as_rng(rng)
    shape = input_shape(x)
    if len(shape) < 3:
        raise DataError(f"cp completion needs a tensor of order ≥ 3; got {len(shape)}-D shape "
                        f"{shape} (use softimpute or altmin for matrices)")  # fmt: skip
    wdt = working_dtype(_input_dtype(x), method="cp completion")
    dense = not (isinstance(x, (Observed, tuple)) or is_sparse(x))
    est = estimate_bytes(shape, wdt, rank, nnz=count_observed(x), method="cp",
                         dense_input=dense, holdout=holdout is not None)  # fmt: skip
    budget(est, max_memory, "cp completion", shape, wdt)
    obs = observations(x, method="cp completion")
    split = None
    if holdout is not None:
        split = holdout_split(obs, holdout, rng)
        train, test_obs = split.train, split.test
    else:
        train = obs
        test_obs = observations(test, method="cp completion") if test is not None else None
        if test_obs is not None and test_obs.shape != obs.shape:
            raise DataError(f"the test entries have shape {test_obs.shape}, the training "
                            f"entries {obs.shape}")  # fmt: skip
    prob = Problem(train)
    r = int(rank)
    nd = len(shape)
    warnings: list[str] = []
    from .cp import max_rank

    bound = max_rank(shape)
    if r > bound:  # every tensor of this shape has CP rank ≤ ∏I/max I_n
        warnings.append(f"rank {r} exceeds the largest CP rank of shape {shape} "
                        f"(∏I/max I_n = {bound}); clamped to {bound}")  # fmt: skip
        r = bound
    if any(prob.empty):
        warnings.append(f"slices with no training entry per mode: {prob.empty}; their factor "
                        "rows are zero (the model predicts 0 there)")  # fmt: skip
    ms = prob.norm_sq / prob.nnz
    lam = float(reg) if reg is not None else (
        REG_DEFAULT * (prob.nnz / max(prob.dims)) * (ms / r) ** ((nd - 1) / nd))  # fmt: skip
    details = {"solver": "cp-wals", "init": "spectral, then random restarts",
               "n_init": int(n_init), "reg": lam,
               "reg_rule": "given" if reg is not None else f"{REG_DEFAULT:g}·typical row Gram",
               "working_dtype": str(wdt), "compute_dtype": "float64",
               "estimate_bytes": int(est), "source": train.source,
               "seed": int(seed) if isinstance(seed, (int, np.integer)) else None,
               "blas_threads": 1,
               "cost_per_sweep": "per mode O(|Ω|(N+R)R) batched normal equations and "
                                 "O(I_n R³) solves; 1 sampled product"}  # fmt: skip
    if prob.norm_sq == 0.0:
        warnings.append("every observed value is 0: the model is 0")
        factors = [np.zeros((d, r)) for d in prob.dims]
        return _finish(prob, factors, lam, wdt, train, test_obs, split, clip, r, nd, warnings,
                       {**details, "iterations": 0}, [], True, "zero data")  # fmt: skip
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        groups = [Groups(prob.idx[n], prob.counts[n], prob.nnz, r) for n in range(nd)]
        tracker = prob.tracker(test_obs)
        sd = (ms / r) ** (1.0 / (2 * nd))

        def make(restart):
            if restart == 0:
                factors, init = _spectral(prob, r, rng, sd), "spectral"
            else:
                factors, init = [rng.standard_normal((d, r)) * sd for d in prob.dims], "random"
            return _CPSolver(prob, groups, factors, lam, tracker), init

        runs = run_restarts(make, n_init=int(n_init), tol=float(tol), max_iter=int(max_iter),
                            callback=callback, factors=lambda s: (s.f,), rng=rng,
                            resume=resume)  # fmt: skip
    best = min(runs, key=lambda t: (t.objective, t.restart))
    loop = best.loop
    details.update({"iterations": loop.iterations, "kept_restart": best.restart,
                    "restart_objectives": [t.objective if math.isfinite(t.objective) else None
                                           for t in runs],
                    "padded_entries": [g.padded for g in groups]})  # fmt: skip
    return _finish(prob, best.factors[0], lam, wdt, train, test_obs, split, clip, r, nd,
                   warnings, details, loop.history, loop.converged, loop.stop_reason)  # fmt: skip


def _finish(prob, factors, lam, wdt, train, test, split, clip, r, nd, warnings, details,
            history, converged, stop) -> Result:  # fmt: skip
    full = [prob.embed(n, a) for n, a in enumerate(factors)]
    weights = np.prod([np.linalg.norm(a, axis=0) for a in full], axis=0)
    dead = _eps(np.float64) * float(np.max(weights, initial=0.0))
    f, w = _normalise(full, np.ones(r), dead)
    arrays = {"weights": np.ascontiguousarray(w.astype(wdt))}
    for n, a in enumerate(f):
        arrays[f"factors/{n}"] = np.ascontiguousarray(a.astype(wdt))
    out = [np.asarray(arrays[f"factors/{n}"], np.float64) for n in range(nd)]
    pred = cp_values(arrays["weights"].astype(np.float64), out, train.index)
    metrics = evaluate(arrays, train, test, clip, train_pred=pred)
    resid = train.values.astype(np.float64) - pred
    # the ridge term of the returned model at its balanced scale (weights spread evenly)
    pen = float(np.sum(np.asarray(arrays["weights"], np.float64) ** (2.0 / nd))) * nd
    n_test = test.nnz if test is not None else 0
    size = math.prod(train.shape)
    metrics.update({
        "objective": 0.5 * _sumsq(resid) + 0.5 * lam * pen,
        "reg": lam, "n_observed": train.nnz + n_test, "n_train": train.nnz, "n_test": n_test,
        "observed_fraction": (train.nnz + n_test) / size, "empty_slices": list(prob.empty),
        "holdout": split.info() if split is not None else None,
        "clip": list(clip) if clip is not None else None,
        "n_parameters": int(r * (1 + sum(train.shape))),
    })  # fmt: skip
    r_eff = int(np.count_nonzero(arrays["weights"] > 0))
    rank_info = {"value": r_eff, "rule": "rank", "threshold": r, "max_rank": None,
                 "clamped": False}  # fmt: skip
    details["normalisation"] = (
        "unit ℓ2 factor columns, scale in weights (≥ 0, descending); "
        "each mode but the last has a positive largest entry per column"
    )
    reason = ("CP on the observed entries (CP-WOPT objective) by row-wise weighted ALS: batched "
              "R×R normal equations per slice, O(|Ω|(N+R)R) per mode")  # fmt: skip
    return Result(arrays=arrays, method="cp", method_reason=reason, metrics=metrics,
                  details=details, history=history, converged=converged, stop_reason=stop,
                  warnings=tuple(warnings), rank=rank_info)  # fmt: skip


__all__ = ["cp_complete", "REG_DEFAULT"]
