"""Matrix completion: softImpute-ALS and regularised alternating minimisation, on the observed
entries only (see :mod:`rankwise.core.complete` for inputs, hold-out, baseline and metrics).

Both methods fit ``M = A Bᵀ`` (rank ≤ k) to the training entries Ω by minimising

    F(A, B) = ½‖P_Ω(X − A Bᵀ)‖²_F + λ/2 (‖A‖²_F + ‖B‖²_F),

whose minimum over factorisations of a given M is ``½‖P_Ω(X − M)‖² + λ‖M‖_*`` (the nuclear
norm): ``reg`` = λ means the same for both. ``F`` is the objective in ``history`` and
``metrics["objective"]`` (the latter for the returned U·S·Vt, in the nuclear-norm form); the
loop stops when its relative decrease per sweep is ≤ ``tol`` (:func:`rankwise.core.loop.run_loop`).

λ: ``reg`` when given (> 0), otherwise ``REG_DEFAULT·λ_max`` with ``λ_max = σ₁(P_Ω(X))``, the
smallest λ at which the nuclear-norm solution is 0. ``λ_max`` is estimated by the randomized
subspace iteration of the initialisation (``POWER_ITERS`` power iterations, ``k + 10``
vectors; the estimate is a lower bound accurate to a few digits). The default is a small ridge:
the rank cap k is then the main regulariser, and exactly low-rank data is recovered up to a
bias of about ``REG_DEFAULT`` relative; noisy data wants a larger λ, which the hold-out error
tells.

Nothing of size m×n is formed. The residual on Ω is a sampled product (row-wise dot products
of gathered factor rows, in chunks of ``CHUNK_ENTRIES``); products with ``P_Ω(·)`` go through
one SciPy CSR matrix on the fixed pattern whose values are swapped. Rows and columns with no
training entry are dropped and returned as zero rows of U / V (they predict 0).

softimpute — softImpute-ALS (Hastie, Mazumder, Lee & Zadeh 2015, Algorithm 3.1)
--------------------------------------------------------------------------------
State ``A = U D``, ``B = V D`` (U, V orthonormal, D diagonal). With
``X* = P_Ω(X − ABᵀ) + ABᵀ`` (sparse plus low rank, never formed), the B step is the ridge
solution ``B̃ᵀ = (D² + λI)⁻¹ D Uᵀ X* = (D² + λI)⁻¹ D (Uᵀ R + D² Vᵀ)`` with R the residual on Ω,
then the SVD ``B̃D = Ũ D̃² Ṽᵀ`` gives ``V ← Ũ, D ← D̃, U ← U Ṽ``; the A step is the same on
Xᵀ. Each half step minimises a majoriser of F and the re-balancing through the SVD can only
lower the penalty, so F never increases (the paper's Section 5). A sweep costs two sampled
products and two sparse products over Ω, O(|Ω|k), and two thin SVDs of (m or n)×k,
O((m+n)k²). After the loop: ``M = X* V = R V + U D²``, its SVD ``M = Û Σ R̂ᵀ`` and the output
``U = Û``, ``S = (Σ − λ)₊``, ``Vt = (V R̂)ᵀ`` (step 5 of the algorithm). ``history`` also
records ``model_change`` = ‖ΔABᵀ‖²_F/‖ABᵀ‖²_F (the paper's stopping figure, from k×k traces).

``reg_path = n``: a decreasing path ``λ_j = λ_max·(λ/λ_max)^(j/n)``, j = 1…n, each solved from
the previous one's factors (warm start), the intermediate ones to ``max(tol, PATH_TOL)``; each
history entry carries its ``reg`` and ``stage``. F is monotone within a stage. At the start of a
stage, components that a larger λ had driven to (near) zero are lifted to ``REVIVE·D_max`` so
that they can grow again (a zero component of softImpute-ALS stays zero).

Initialisation (``init``): ``spectral`` (``auto``) — the leading k singular triplets of
``P_Ω(X)/p̂`` (p̂ = |Ω|/(mn), the unbiased estimate of X) from the same randomized subspace
iteration, their scale then fitted by least squares on Ω (Σ/p̂ overestimates it when sampling
is sparse), ``U = U_s``, ``D = √Σ_s``, ``V = V_s``; ``random`` — the paper's start, U with
orthonormal Gaussian columns, D = I, V = 0.

Speed of convergence: each softImpute-ALS step fills the missing entries with the current
model (its EM flavour), so the rate falls with the observed fraction: at 10% observed and a
small λ it takes a few hundred cheap sweeps (measured on 3000×1000, rank 10: 250 to a
held-out error of 1e-4), where altmin takes about ten more expensive ones.

altmin — regularised alternating least squares with row-wise solves
-------------------------------------------------------------------
A sweep sets every row of A to its exact minimiser given B, ``(B_Ωiᵀ B_Ωi + λI) a_i =
B_Ωiᵀ x_Ωi``, then every row of B likewise, then re-balances the pair (QR of A and B, SVD of
``R_A R_Bᵀ``: ``A = Q_A U_s Σ^½``, ``B = Q_B V_s Σ^½``), which keeps ``ABᵀ`` and minimises
``‖A‖² + ‖B‖²`` for it. Each step is an exact block minimisation and the re-balancing lowers
the penalty, so F never increases; re-balancing also removes the slow drift of ALS along the
flat ``(AT, BT⁻ᵀ)`` directions at small λ (measured: 2000+ sweeps without it, 17 with it).

* ``solver="exact"``: the k×k normal equations of all rows are formed and solved in batches:
  rows grouped by their number of observations (:class:`~rankwise.core.complete.Groups`),
  each group's entries gathered into a padded ``g × L × k`` block, ``G = BᵀB`` and the right
  sides by batched GEMMs, and ``numpy.linalg.solve`` on the stacked systems. O(|Ω|k² + (m+n)k³)
  per sweep, memory O(|Ω|) for the groups plus blocks of ``GROUP_BYTES``.
* ``solver="cg"``: the row problems are solved approximately by ``cg_steps`` steps of
  preconditioned conjugate gradients, warm-started from the current rows, in the spirit of
  Gu, Song, Yin & Zhang (2023), "Low Rank Matrix Completion via Robust Alternating
  Minimization in Nearly Linear Time". The Gram matrices are never formed: a step applies all
  ``G_i`` at once with one sampled product (``t = P_Ω(P Bᵀ)``) and one sparse product
  (``t·B``), O(|Ω|k); the residual on Ω is updated along. The preconditioner replaces the
  paper's per-row sketches by the expected Gram: ``M_i = S_i C S_i`` with ``S_i² =
  diag(G_i) + λ`` (exact, from one sparse product with ``B∘B``) and ``C`` the correlation
  matrix of ``p̂·BᵀB + λI`` (uniform sampling makes ``G_i ≈ (|Ω_i|/n)·BᵀB``), applied by a
  k×k GEMM: O(|Ω|k + (m+n)k²) per sweep, no O(|Ω|k²) term. CG from a warm start never raises
  a row's quadratic, so F stays monotone here too.

The output is the re-balanced pair's SVD: ``U = Q_A U_s``, ``S = Σ``, ``Vt = (Q_B V_s)ᵀ``.
Initialisation: ``spectral`` (``auto``) ``A = U_s Σ_s^½``, ``B = V_s Σ_s^½`` from the SVD of
``P_Ω(X)/p̂`` (Jain, Netrapalli & Sanghavi 2013), scaled as above; ``random``: Gaussian factors
at the data's scale.

History
-------
Each entry has ``objective``, ``relative_change`` (from the loop), ``rmse`` on the training
entries and, when a test set is given, ``test_rmse`` and ``test_relative_error`` of the current
iterate (one sampled product over the test entries); softimpute adds ``reg``, ``stage`` and
``model_change``.

Conventions
-----------
Singular values descending (zeros, for components that λ switched off, last with their
orthonormal vectors kept); signs by :func:`rankwise.core.linalg.svd_flip` (the largest entry
of each column of U positive). The rank is clamped to min(m′, n′) (rows / columns with
observations) with a warning. Data whose observed values are all 0 gives the zero model.
BLAS runs single-threaded during the solve (every dense product is O((m+n)k²) or k×k; with
threads it was 1.7–2.3× slower on 2 cores); the sparse and sampled products are
single-threaded anyway.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpointable
from .complete import (
    OVERSAMPLE,
    Groups,
    Observed,
    Problem,
    as_rng,
    budget,
    check_clip,
    check_parameters,
    count_observed,
    estimate_bytes,
    evaluate,
    holdout_split,
    input_shape,
    observations,
    predict_arrays,
    rowdot,
    solve_spd,
)
from .errors import DataError, ParameterError
from .linalg import orthogonality_loss, qr_tall, svd_flip, tall_svd, thin_svd
from .loop import run_loop
from .result import Result
from .validate import is_sparse, working_dtype

REG_DEFAULT = 1e-6
PATH_TOL = 1e-4
REVIVE = 1e-3
POWER_ITERS = 2


# --- data --------------------------------------------------------------------------------------


class _Matrix:
    """Training entries of a matrix (compressed indices, row-major) and the products on them."""

    def __init__(self, prob: Problem):
        import scipy.sparse as sp

        self.prob = prob
        self.m, self.n = prob.dims
        self.rows, self.cols = prob.idx
        self.vals = prob.vals
        self.nnz = prob.nnz
        idt = np.int32 if max(self.nnz, self.m, self.n) < 2**31 - 1 else np.int64
        indptr = np.zeros(self.m + 1, dtype=idt)
        np.cumsum(prob.counts[0], out=indptr[1:])
        self.csr = sp.csr_array((np.zeros(self.nnz), self.cols.astype(idt), indptr),
                                shape=(self.m, self.n))  # fmt: skip
        self._ones = None

    def mm(self, data: np.ndarray, f: np.ndarray) -> np.ndarray:
        """P_Ω(values = data) @ f."""
        self.csr.data = data
        return self.csr @ f

    def rmm(self, data: np.ndarray, f: np.ndarray) -> np.ndarray:
        """P_Ω(values = data)ᵀ @ f."""
        self.csr.data = data
        return self.csr.T @ f

    @property
    def ones(self) -> np.ndarray:
        if self._ones is None:
            self._ones = np.ones(self.nnz)
        return self._ones

    def residual(self, a: np.ndarray, b: np.ndarray, out=None) -> np.ndarray:
        """x − (a bᵀ) on Ω."""
        out = rowdot(a, b, self.rows, self.cols, out)
        np.subtract(self.vals, out, out=out)
        return out


def _leading(mat: _Matrix, k: int, rng) -> tuple:
    """Leading k singular triplets of P_Ω(X) by randomized subspace iteration."""
    from .linalg import orth

    ell = min(k + OVERSAMPLE, mat.m, mat.n)
    q = orth(mat.mm(mat.vals, rng.standard_normal((mat.n, ell))))
    for _ in range(POWER_ITERS):
        q = orth(mat.rmm(mat.vals, q))
        q = orth(mat.mm(mat.vals, q))
    w = mat.rmm(mat.vals, q)  # Xᵀ Q = W: X ≈ Q Wᵀ
    v, s, zt, _ = tall_svd(w)
    u = q @ zt.T
    return u[:, :k], s[:k], v[:, :k], float(s[0]) if s.size else 0.0


def _sumsq(a) -> float:
    a = np.asarray(a).ravel()
    return float(a @ a)


# --- softImpute-ALS ----------------------------------------------------------------------------


class _SoftImpute(Checkpointable):
    STATE = ("u", "d", "v", "lam", "resid")

    def __init__(self, mat: _Matrix, u, d, v, lam: float, tracker=None):
        self.mat = mat
        self.tracker = tracker
        self.u, self.d, self.v = u, d, v
        self.lam = lam
        self.resid = mat.residual(u * (d * d), v)

    def objective(self) -> float:
        return 0.5 * _sumsq(self.resid) + self.lam * _sumsq(self.d)

    def _step(self, fixed, d, solved, product):
        """One half step: the ridge solve for the ``solved`` side given the ``fixed`` one
        (both orthonormal, factors ``fixed·D`` and ``solved·D``), then the SVD
        re-parametrisation. Returns (solved, D, fixed) updated."""
        d2 = d * d
        tilde = (product(self.resid, fixed) * d + solved * (d2 * d)) / (d2 + self.lam)
        w, s, zt, _ = tall_svd(tilde * d)
        return w, np.sqrt(s), fixed @ zt.T

    def sweep(self, it: int):
        mat = self.mat
        u0, d0, v0 = self.u, self.d, self.v
        v, d, u = self._step(u0, d0, v0, mat.rmm)  # B step: V, D, U ← U Ṽ
        mat.residual(u * (d * d), v, out=self.resid)
        u, d, v = self._step(v, d, u, mat.mm)  # A step: U, D, V ← V Ṽ
        mat.residual(u * (d * d), v, out=self.resid)
        self.u, self.d, self.v = u, d, v
        extras = {"rmse": math.sqrt(_sumsq(self.resid) / mat.nnz), "reg": self.lam,
                  "model_change": _model_change(u0, d0, v0, u, d, v)}  # fmt: skip
        if self.tracker is not None:
            t = self.tracker
            extras.update(t.extras(rowdot(u * (d * d), v, t.idx[0], t.idx[1])))
        return self.objective(), extras

    def revive(self) -> int:
        floor = REVIVE * float(np.max(self.d, initial=0.0))
        low = self.d < floor
        if low.any() and floor > 0:
            self.d = np.where(low, floor, self.d)
            self.mat.residual(self.u * (self.d * self.d), self.v, out=self.resid)
        return int(np.count_nonzero(low))

    def final(self):
        """Step 5 of Algorithm 3.1: SVD of X*V, singular values soft-thresholded by λ."""
        d2 = self.d * self.d
        m = self.mat.mm(self.resid, self.v) + self.u * d2
        uu, s, rt, _ = tall_svd(m)
        return uu, np.maximum(s - self.lam, 0.0), self.v @ rt.T


def _model_change(u0, d0, v0, u, d, v) -> float | None:
    """‖U0 D0² V0ᵀ − U D² Vᵀ‖²_F / ‖U0 D0² V0ᵀ‖²_F from k×k products (general U, V: the
    random start has V = 0)."""
    a0, a1 = d0 * d0, d * d

    def inner(ua, aa, va, ub, ab, vb):
        return float(np.sum((ua.T @ ub) * (va.T @ vb) * np.outer(aa, ab)))

    old = inner(u0, a0, v0, u0, a0, v0)
    new = inner(u, a1, v, u, a1, v)
    if old <= 0.0:  # from the zero model (random start): no relative change to give
        return None if new > 0 else 0.0
    return max(old - 2.0 * inner(u0, a0, v0, u, a1, v) + new, 0.0) / old


# --- alternating minimisation -----------------------------------------------------------------


def _balance(a: np.ndarray, b: np.ndarray):
    """(A, B, U, S, V): the same A Bᵀ = U S Vᵀ with A = U S^½, B = V S^½ (minimal
    ‖A‖² + ‖B‖²)."""
    qa, ra, _ = qr_tall(a)
    qb, rb, _ = qr_tall(b)
    us, s, vt, _ = thin_svd(ra @ rb.T)
    u, v = qa @ us, qb @ vt.T
    rs = np.sqrt(s)
    return u * rs, v * rs, u, s, v


class _AltMin(Checkpointable):
    STATE = ("a", "b", "resid", "last")

    def __init__(self, mat: _Matrix, a, b, lam: float, solver: str, cg_steps: int,
                 tracker=None):  # fmt: skip
        self.mat = mat
        self.tracker = tracker
        self.a, self.b = a, b
        self.lam = lam
        self.solver = solver
        self.cg_steps = cg_steps
        self.resid = mat.residual(a, b)
        if solver == "exact":
            k = a.shape[1]
            self.groups = (Groups(mat.rows, mat.prob.counts[0], mat.nnz, k),
                           Groups(mat.cols, mat.prob.counts[1], mat.nnz, k))  # fmt: skip
            self.other = (np.append(mat.cols, mat.n), np.append(mat.rows, mat.m))
            self.vals_ext = np.append(mat.vals, 0.0)
        self.last = None

    def objective(self) -> float:
        return 0.5 * _sumsq(self.resid) + 0.5 * self.lam * (_sumsq(self.a) + _sumsq(self.b))

    def _exact(self, side: int, other: np.ndarray, out: np.ndarray) -> None:
        k = other.shape[1]
        ext = np.vstack([other, np.zeros((1, k))])
        oidx = self.other[side]
        for g, pos in self.groups[side].chunks:
            f = ext[oidx[pos]]  # g × L × k, padding rows are zero
            ft = f.transpose(0, 2, 1)
            out[g] = solve_spd(ft @ f, (ft @ self.vals_ext[pos][:, :, None])[:, :, 0], self.lam)

    def _cg(self, side: int) -> None:
        mat, lam = self.mat, self.lam
        if side == 0:
            f, o, mm, ent = self.a, self.b, mat.mm, mat.rows

            def sampled(p, out):
                return rowdot(p, o, mat.rows, mat.cols, out)
        else:
            f, o, mm, ent = self.b, self.a, mat.rmm, mat.cols

            def sampled(p, out):
                return rowdot(o, p, mat.rows, mat.cols, out)

        k = f.shape[1]
        r = mm(self.resid, o) - lam * f  # −gradient of every row problem
        scale = np.sqrt(mm(mat.ones, o * o) + lam)  # S_i = √(diag G_i + λ)
        c = (mat.nnz / (mat.m * mat.n)) * (o.T @ o) + lam * np.eye(k)
        cd = np.sqrt(np.diag(c))
        cinv = np.linalg.inv(c / np.outer(cd, cd))

        def prec(v):
            return ((v / scale) @ cinv) / scale

        z = prec(r)
        p = z.copy()
        rz = np.einsum("ij,ij->i", r, z)
        t = np.empty(mat.nnz)
        for step in range(self.cg_steps):
            sampled(p, t)
            q = mm(t, o) + lam * p
            pq = np.einsum("ij,ij->i", p, q)
            alpha = np.divide(rz, pq, out=np.zeros_like(rz), where=pq > 0)
            f += alpha[:, None] * p
            self.resid -= alpha[ent] * t  # the residual follows the rows' moves
            if step == self.cg_steps - 1:
                break
            r -= alpha[:, None] * q
            z = prec(r)
            rz_new = np.einsum("ij,ij->i", r, z)
            beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
            p = z + beta[:, None] * p
            rz = rz_new

    def sweep(self, it: int):
        if self.solver == "exact":
            self._exact(0, self.b, self.a)
            self._exact(1, self.a, self.b)
        else:
            self._cg(0)
            self._cg(1)
        self.a, self.b, *self.last = _balance(self.a, self.b)
        self.mat.residual(self.a, self.b, out=self.resid)  # exact, no drift
        extras = {"rmse": math.sqrt(_sumsq(self.resid) / self.mat.nnz)}
        if self.tracker is not None:
            t = self.tracker
            extras.update(t.extras(rowdot(self.a, self.b, t.idx[0], t.idx[1])))
        return self.objective(), extras

    def final(self):
        if self.last is None:
            _, _, *self.last = _balance(self.a, self.b)
        return self.last


# --- shared driver -----------------------------------------------------------------------------


def _input_dtype(x):
    if isinstance(x, Observed):
        return x.dtype
    if isinstance(x, tuple) and len(x) == 3:
        return np.asarray(x[1]).dtype
    return x.dtype


@dataclass
class _Setup:
    """What every matrix solver shares: the split, the compressed problem, its products and
    the report being assembled."""

    train: Observed
    test: Observed | None
    split: object
    wdt: np.dtype
    prob: Problem
    mat: _Matrix
    rank: int
    k: int
    clip: tuple | None
    warnings: list
    details: dict


def _setup(x, rank, method, *, holdout, test, rng, seed, clip, max_memory, solver="exact",
           init="auto") -> _Setup:  # fmt: skip
    shape = input_shape(x)
    if len(shape) != 2:
        hint = " (use the cp method for tensors)" if len(shape) > 2 else ""
        raise DataError(f"{method} needs a matrix; got {len(shape)}-D shape {shape}{hint}")
    if holdout is not None and test is not None:
        raise ParameterError("give either holdout or test, not both")
    wdt = working_dtype(_input_dtype(x), method=method)
    nnz = count_observed(x)
    dense = not (isinstance(x, (Observed, tuple)) or is_sparse(x))
    est = estimate_bytes(shape, wdt, rank, nnz=nnz, method=method, solver=solver,
                         dense_input=dense, holdout=holdout is not None)  # fmt: skip
    budget(est, max_memory, method, shape, wdt)
    obs = observations(x, method=method)
    split = None
    if holdout is not None:
        split = holdout_split(obs, holdout, rng)
        train, test_obs = split.train, split.test
    else:
        train = obs
        test_obs = observations(test, method=method) if test is not None else None
        if test_obs is not None and test_obs.shape != obs.shape:
            raise DataError(f"the test entries have shape {test_obs.shape}, the training "
                            f"entries {obs.shape}")  # fmt: skip
    prob = Problem(train)
    warnings: list[str] = []
    k = int(rank)
    bound = min(prob.dims)
    if k > bound:
        warnings.append(f"rank {k} exceeds min(observed rows, observed columns) = {bound}; "
                        f"clamped to {bound}")  # fmt: skip
        k = bound
    er, ec = prob.empty
    if er or ec:
        warnings.append(f"{er} row(s) and {ec} column(s) have no training entry: their rows of "
                        "U / columns of Vt are zero (the model predicts 0 there)")  # fmt: skip
    details = {"init": "spectral" if init == "auto" else init, "working_dtype": str(wdt),
               "compute_dtype": "float64", "estimate_bytes": int(est), "source": train.source,
               "seed": int(seed) if isinstance(seed, (int, np.integer)) else None,
               "blas_threads": 1}  # fmt: skip
    return _Setup(train, test_obs, split, wdt, prob, _Matrix(prob), int(rank), k, clip, warnings,
                  details)  # fmt: skip


def _single_blas():
    """BLAS single-threaded for the solve: every dense product here is O((m+n)k²) or a k×k
    system, and on 2 cores BLAS threads cost more in wake-ups than they save (measured 1.7–2.3×
    slower with them on 3000×1000, k = 10)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _lambda(st: _Setup, reg, init: str, rng, need_lmax: bool):
    """(λ, λ_max or nan, spectral triplets (U, Σ/p̂, V) or None)."""
    mat = st.mat
    trip, lmax = None, math.nan
    if init == "spectral" or need_lmax:
        u, s, v, lmax = _leading(mat, st.k, rng)
        s = s / (mat.nnz / (mat.m * mat.n))
        # Σ/p̂ overestimates the scale when sampling is sparse (the sampling noise adds to the
        # top singular values); the least-squares factor on Ω fixes the start's scale.
        fit = rowdot(u * s, v, mat.rows, mat.cols)
        num, den = float(fit @ mat.vals), float(fit @ fit)
        if num > 0 and den > 0:
            s = s * (num / den)
        trip = (u, s, v)
    lam = float(reg) if reg is not None else REG_DEFAULT * lmax
    st.details.update({"reg": lam, "reg_rule": "given" if reg is not None else
                       f"{REG_DEFAULT:g}·λ_max",
                       "lambda_max": lmax if math.isfinite(lmax) else None})  # fmt: skip
    return lam, lmax, (trip if init == "spectral" else None)


def _finish(st: _Setup, method, reason, u, s, v, lam, history, converged, stop) -> Result:
    prob, train, test = st.prob, st.train, st.test
    u = np.ascontiguousarray(prob.embed(0, u))
    vt = np.ascontiguousarray(prob.embed(1, v).T)
    u, vt = svd_flip(u, vt)
    arrays = {"U": u.astype(st.wdt), "S": np.ascontiguousarray(s).astype(st.wdt),
              "Vt": vt.astype(st.wdt)}  # fmt: skip
    pred = predict_arrays(arrays, train.index)
    metrics = evaluate(arrays, train, test, st.clip, train_pred=pred)
    resid = train.values.astype(np.float64) - pred
    s64 = arrays["S"].astype(np.float64)
    m, n = train.shape
    n_test = test.nnz if test is not None else 0
    metrics.update({
        "objective": 0.5 * _sumsq(resid) + lam * float(np.sum(s64)),
        "reg": lam, "lambda_max": st.details.get("lambda_max"),
        "n_observed": train.nnz + n_test, "n_train": train.nnz, "n_test": n_test,
        "observed_fraction": (train.nnz + n_test) / (m * n),
        "empty_rows": prob.empty[0], "empty_cols": prob.empty[1],
        "holdout": st.split.info() if st.split is not None else None,
        "clip": list(st.clip) if st.clip is not None else None,
        "orthogonality_loss": max(orthogonality_loss(arrays["U"]),
                                  orthogonality_loss(arrays["Vt"].T)),
        "n_parameters": int(st.k * (m + n + 1)),
    })  # fmt: skip
    r_eff = int(np.count_nonzero(s64 > 0))
    rank_info = {"value": r_eff, "rule": "rank", "threshold": st.rank,
                 "max_rank": int(min(m, n)), "clamped": bool(st.k < st.rank)}  # fmt: skip
    if r_eff < st.k:
        st.warnings.append(f"{st.k - r_eff} of {st.k} singular values are 0 at λ = {lam:.3g} "
                           "(returned last, with orthonormal vectors)")  # fmt: skip
    return Result(arrays=arrays, method=method, method_reason=reason, metrics=metrics,
                  details=st.details, history=history, converged=converged, stop_reason=stop,
                  warnings=tuple(st.warnings), rank=rank_info)  # fmt: skip


def _zero_model(st: _Setup, method: str, reg) -> Result:
    st.warnings.append("every observed value is 0: the model is 0")
    m, n = st.prob.dims
    u = np.zeros((m, st.k))
    u[np.arange(st.k), np.arange(st.k)] = 1.0  # orthonormal placeholders for S = 0
    v = np.zeros((n, st.k))
    v[np.arange(st.k), np.arange(st.k)] = 1.0
    st.details["iterations"] = 0
    lam = float(reg) if reg is not None else 0.0
    return _finish(st, method, "the observed values are all zero", u, np.zeros(st.k), v, lam,
                   [], True, "zero data")  # fmt: skip


# --- public functions --------------------------------------------------------------------------


def softimpute(x, rank: int, *, reg: float | None = None, reg_path: int | None = None,
               tol: float = 1e-7, max_iter: int = 1000, init: str = "auto", test=None,
               holdout: float | None = None, clip=None, rng=None, callback=None,
               max_memory: int | None = None, resume: dict | None = None) -> Result:  # fmt: skip
    """softImpute-ALS matrix completion (see the module docstring).

    ``x``: dense matrix with NaN for missing entries, SciPy sparse matrix (stored entries are
    observed), a COO triple ``((rows, cols), values, shape)`` or an :class:`Observed`.
    ``rank``: the rank cap k. ``reg``: λ (default ``REG_DEFAULT·λ_max``). ``reg_path``: solve
    a geometric path of that many λ values from λ_max down to λ, warm-started. ``tol``:
    relative decrease of the objective per sweep at which to stop; ``max_iter``: sweeps per λ.
    ``test`` (observed entries) or ``holdout`` (a fraction split off with ``rng``) adds held-out
    metrics; ``clip=(lo, hi)`` clips predictions in the metrics. ``callback(event)`` sees every
    sweep; returning True stops. ``max_memory``: bytes; a larger estimate is a BudgetError.
    ``resume``: an ``event.state()`` of an interrupted run with the same data and parameters.

    Returns a :class:`Result` with ``arrays = {"U": m×k, "S": k, "Vt": k×n}``.
    """
    check_parameters(method="softimpute", rank=rank, reg=reg, reg_path=reg_path, tol=tol,
                     max_iter=max_iter, init=init, holdout=holdout, clip=clip)  # fmt: skip
    seed, rng = rng, as_rng(rng)
    st = _setup(x, rank, "softimpute", holdout=holdout, test=test, rng=rng, seed=seed,
                clip=check_clip(clip), max_memory=max_memory, init=init)  # fmt: skip
    st.details.update({"solver": "softimpute-als",
                       "cost_per_sweep": "2 sampled + 2 sparse products over Ω (O(|Ω|k)), 2 thin "
                                         "SVDs of (m or n)×k (O((m+n)k²))"})  # fmt: skip
    if st.prob.norm_sq == 0.0:
        return _zero_model(st, "softimpute", reg)
    init = st.details["init"]
    lam_end, lmax, trip = _lambda(st, reg, init, rng, reg is None or reg_path is not None)
    n = int(reg_path) if reg_path is not None else 1
    path = [lmax * (lam_end / lmax) ** (j / n) for j in range(1, n)] + [lam_end]
    if trip is not None:
        u, d, v = trip[0], np.sqrt(trip[1]), trip[2]
    else:  # Algorithm 3.1's start
        u = np.linalg.qr(rng.standard_normal((st.mat.m, st.k)))[0]
        d, v = np.ones(st.k), np.zeros((st.mat.n, st.k))
    with _single_blas():
        solver = _SoftImpute(st.mat, u, d, v, path[0], st.prob.tracker(st.test))
        history, stages, loop = _run_path(solver, path, float(tol), int(max_iter), callback,
                                          resume)  # fmt: skip
        u, s, v = solver.final()
    st.details.update({"reg_path": path if len(path) > 1 else None, "stages": stages,
                       "iterations": loop.iterations, "path_tol": PATH_TOL})  # fmt: skip
    reason = ("softImpute-ALS (Hastie et al. 2015, Algorithm 3.1) on the sparse-plus-low-rank "
              "representation: O(|Ω|k + (m+n)k²) per sweep")  # fmt: skip
    if len(path) > 1:
        reason += f"; warm-started λ path of {len(path)} values"
    return _finish(st, "softimpute", reason, u, s, v, lam_end, history, loop.converged,
                   loop.stop_reason)  # fmt: skip


def _run_path(solver: _SoftImpute, path, tol, max_iter, callback, resume=None):
    """One run_loop per λ of the path (history numbered across them); ``resume`` continues
    an interrupted one (its state holds the stage, the finished stages and the solver)."""
    history, stages, total, loop = [], [], 0, None
    first, revived, loop_resume = 0, 0, None
    if resume is not None:
        p = resume["path"]
        first, history, stages = p["stage"], p["history"], p["stages"]
        total, revived = p["total"], p["revived"]
        solver.restore(resume["solver"])
        loop_resume = resume["loop"]
    for j, lam in enumerate(path):
        if j < first:
            continue
        if j > first or loop_resume is None:
            revived = 0
            if j > 0:
                solver.lam = lam
                revived = solver.revive()

        def state(_j=j, _revived=revived, _total=total):
            return {"solver": solver.state(),
                    "path": {"stage": _j, "history": copy.deepcopy(history),
                             "stages": copy.deepcopy(stages), "total": _total,
                             "revived": _revived}}  # fmt: skip

        stage_tol = tol if j == len(path) - 1 else max(tol, PATH_TOL)

        def sweep(it, _j=j):
            obj, extras = solver.sweep(it)
            extras["stage"] = _j
            return obj, extras

        loop = run_loop(sweep, tol=stage_tol, max_iter=total + max_iter, callback=callback,
                        start_iteration=total, history=[], min_iter=total + 1,
                        initial_objective=solver.objective(), state=state,
                        resume=loop_resume)  # fmt: skip
        loop_resume = None
        history.extend(loop.history)
        stages.append({"reg": lam, "iterations": loop.iterations - total, "tol": stage_tol,
                       "converged": loop.converged, "stop_reason": loop.stop_reason,
                       "objective": loop.objective, "revived_components": revived})  # fmt: skip
        total = loop.iterations
        if loop.stop_reason == "stopped by callback":
            break
    return history, stages, loop


def altmin(x, rank: int, *, reg: float | None = None, solver: str = "exact", cg_steps: int = 3,
           tol: float = 1e-7, max_iter: int = 300, init: str = "auto", test=None,
           holdout: float | None = None, clip=None, rng=None, callback=None,
           max_memory: int | None = None, resume: dict | None = None) -> Result:  # fmt: skip
    """Regularised alternating least squares with row-wise solves (module docstring).

    ``solver``: ``exact`` (batched k×k solves) or ``cg`` (``cg_steps`` preconditioned CG steps
    per row problem, warm-started: Õ(|Ω|k) per sweep). Other parameters as :func:`softimpute`.

    Returns a :class:`Result` with ``arrays = {"U": m×k, "S": k, "Vt": k×n}``.
    """
    check_parameters(method="altmin", rank=rank, reg=reg, tol=tol, max_iter=max_iter,
                     solver=solver, cg_steps=cg_steps, init=init, holdout=holdout,
                     clip=clip)  # fmt: skip
    seed, rng = rng, as_rng(rng)
    st = _setup(x, rank, "altmin", holdout=holdout, test=test, rng=rng, seed=seed,
                clip=check_clip(clip), max_memory=max_memory, solver=solver, init=init)  # fmt: skip
    st.details["solver"] = f"altmin-{solver}"
    if solver == "cg":
        st.details["cg_steps"] = int(cg_steps)
        st.details["cost_per_sweep"] = (
            f"{2 * cg_steps + 1} sampled + {2 * cg_steps + 4} sparse products over Ω (O(|Ω|k)), "
            "O((m+n)k²) preconditioning and re-balancing")  # fmt: skip
        reason = (
            f"alternating minimisation, row problems by {cg_steps} preconditioned CG "
            "steps, warm-started (after Gu, Song, Yin & Zhang 2023): Õ(|Ω|k) per sweep"
        )
    else:
        st.details["cost_per_sweep"] = (
            "batched normal equations O(|Ω|k²), solves O((m+n)k³), "
            "1 sampled product, re-balancing O((m+n)k²)"
        )
        reason = "alternating minimisation with exact row-wise k×k solves (batched)"
    if st.prob.norm_sq == 0.0:
        return _zero_model(st, "altmin", reg)
    init = st.details["init"]
    lam, _, trip = _lambda(st, reg, init, rng, reg is None)
    if trip is not None:
        rs = np.sqrt(trip[1])
        a, b = trip[0] * rs, trip[2] * rs
    else:  # Gaussian factors whose product has the data's scale
        sd = math.sqrt(math.sqrt(st.prob.norm_sq / st.prob.nnz) / math.sqrt(st.k))
        a = rng.standard_normal((st.mat.m, st.k)) * sd
        b = rng.standard_normal((st.mat.n, st.k)) * sd
    with _single_blas():
        a, b, *_ = _balance(a, b)
        state = _AltMin(st.mat, np.ascontiguousarray(a), np.ascontiguousarray(b), lam, solver,
                        int(cg_steps), st.prob.tracker(st.test))  # fmt: skip
        obj0 = state.objective()
        if resume is not None:
            state.restore(resume["solver"])
        loop = run_loop(state.sweep, tol=float(tol), max_iter=int(max_iter), callback=callback,
                        initial_objective=obj0, state=lambda: {"solver": state.state()},
                        resume=None if resume is None else resume["loop"])  # fmt: skip
        u, s, v = state.final()
    st.details["iterations"] = loop.iterations
    if solver == "exact":
        st.details["padded_entries"] = [g.padded for g in state.groups]
    return _finish(st, "altmin", reason, u, s, v, lam, loop.history, loop.converged,
                   loop.stop_reason)  # fmt: skip


__all__ = ["softimpute", "altmin", "REG_DEFAULT", "PATH_TOL"]
