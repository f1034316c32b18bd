"""Proper orthogonal decomposition (POD) of snapshot matrices, incremental enrichment, HAPOD
merging and projection checks.

A snapshot matrix ``X`` is dofs × snapshots (n × m, one column per snapshot). With an inner
product ``⟨x, y⟩_M = xᵀ M y`` (``mass``: a sparse symmetric positive definite n×n matrix;
``weights``: its diagonal), POD finds the M-orthonormal basis ``V`` (n × N, ``VᵀMV = I``)
minimising ``Σ_j ‖a_j − V Vᵀ M a_j‖²_M`` over the columns ``a_j`` of ``A = X`` (or of
``X − x̄ 1ᵀ`` with ``center``; ``x̄`` is the mean snapshot, output ``mean``). Its singular values
``σ`` are those of ``M^{1/2} A``; ``V`` holds the left singular vectors ``M^{-1/2} U``.

Conventions
-----------
* Outputs ``basis`` (n × N), ``singular_values`` (N, descending) and ``mean`` (n, only with
  ``center``), in the working dtype: float32 stays float32 (Grams and small matrices are
  float64 whatever the input), integers become float64.
* Signs: the entry of largest magnitude of every basis column is positive (the first on
  ties), as :func:`rankwise.core.linalg.svd_flip`.
* Rank rules are :class:`rankwise.core.rank.RankRule` (``CRITERIA`` maps the CLI names
  ``rel-frob|abs-frob|energy|rel-sv|abs-sv`` to ``tol|abs_frob|energy|rel_sv|abs_sv``); all
  rules are applied to the spectrum of ``M^{1/2}A``. A fixed rank above the number of snapshots
  (or dofs) is a ParameterError, not a silent clamp.
* Every path is deterministic; only ``method="randomized"`` draws from ``rng``.

Methods
-------
* ``snapshots`` — method of snapshots: ``G = AᵀMA`` (float64; syrk for the Euclidean and
  diagonal inner products, accumulated over row blocks), ``G = W Λ Wᵀ`` (eigh), modes
  ``A W_N Λ_N^{-1/2}``. Those modes lose orthonormality like ``eps·σ₁²/σ_N²`` and their small
  singular values are known only to the Gram's resolution ``γ = m·eps·λ₁`` (absolute, in λ).
  So when ``‖VᵀMV − I‖_max`` exceeds ``reortho_tol`` the ``k = N + oversample`` leading
  directions ``A W_k`` are M-orthonormalised (CholeskyQR2 in the M inner product, shifted
  CholeskyQR3 when ill-conditioned) to ``Q`` and the snapshots are projected once more:
  ``B = QᵀMA`` (one more pass), ``B = U_B Σ W_Bᵀ``, ``V = Q U_B[:, :N]``. This Rayleigh–Ritz
  pass is one step of subspace iteration started from the Gram's eigenvectors: the kept
  singular values come out accurate to ``eps·σ₁`` absolute (not ``eps·σ₁²/σ``), and the basis
  orthonormal to rounding. Modes whose ``λ`` is below ``RESOLVE·γ`` are not formed from the
  Gram: ``auto`` switches to ``svd`` then, an explicit ``snapshots`` keeps them with a warning.
* ``svd`` — thin SVD of ``M^{1/2}A`` without a square root of M: Euclidean and diagonal
  weights scale rows by ``√w`` and use LAPACK (through CholeskyQR2 of the long side when tall,
  :func:`rankwise.core.linalg.tall_svd`); a sparse mass matrix uses an M-orthonormal QR
  ``A = QR`` (CholeskyQR2, or shifted CholeskyQR3 (Fukaya et al. 2020) when the condition
  number exceeds what CholeskyQR2 handles) and the SVD of ``R`` — scipy has no sparse
  Cholesky, and this needs only products with M. With more snapshots than dofs and a mass
  matrix, M is factorised densely (n is then small).
* ``randomized`` — Euclidean and diagonal inner products reuse
  :mod:`rankwise.core.randomized` (fixed rank: subspace iteration; accuracy rules: adaptive
  randQB_EI); with a sparse mass matrix a subspace iteration in the M inner product (the basis
  doubles until the rule is met; errors from the exact identity ``‖A‖²_M − ‖B‖²``).
* ``auto`` — the method of snapshots for tall matrices (n ≥ 4m; the Gram is the cheapest
  exact route), falling back to ``svd`` when the rule's cut lies below the Gram's resolution;
  ``randomized`` for a fixed rank ``N + oversample ≤ m/4`` on large data; ``svd`` otherwise.
  ``method_reason`` says which and why.
* Snapshot sets larger than ``max_memory`` (a row-block source with ``shape``, ``dtype`` and
  ``iter_blocks(rows)``, such as a file handle) run the method of snapshots in 2–3 passes over
  row blocks: the Gram (with a sparse mass matrix, ``XᵀMX`` needs each block and its neighbour:
  M's bandwidth must not exceed the block rows), the modes ``A W``, and the Rayleigh–Ritz
  projection when needed. Centring is block-local (the mean is over snapshots, per dof).

Inner products
--------------
``mass`` must be symmetric with a positive diagonal; positive definiteness is proved by strict
diagonal dominance (Gershgorin) when it holds, else by the inertia of an LDLᵀ factorisation
(SuperLU with symmetric diagonal pivoting: the pivots of a symmetric matrix factorised without
row interchanges are the D of LDLᵀ, all positive iff SPD) while ``nnz`` is at most
``MASS_CHECK_MAX_NNZ``; beyond that a negative eigenvalue of the Gram beyond its rounding is
still caught. ``details["inner_product"]`` says what was verified.

Metrics
-------
``singular_values`` (all computed; with ``snapshots`` the ones past the Rayleigh–Ritz block
are the Gram's, ``singular_values_accurate`` says how many lead accurately),
``relative_frobenius_error`` and ``discarded_energy`` (``Σ_{i>N} σ_i²``, kept so that
:func:`enrich` and :func:`merge` can carry the error bound), per-snapshot relative projection
errors ``‖a_j − VVᵀMa_j‖_M / ‖a_j‖_M`` (mean, worst and which; from the right singular
vectors: ``e_j² = Σ_{i>N} σ_i² w_{ji}²``, no cancellation), and ``orthogonality_loss``
``‖VᵀMV − I‖_max``.

Enrichment and merging
----------------------
* :func:`enrich` / :class:`IncrementalPOD` — incremental SVD (Brand 2006): new snapshots are
  projected on the current basis (classical Gram–Schmidt twice, in the M inner product), the
  residual is M-orthonormalised, and the SVD of the small bordered matrix
  ``[[Σ, C], [0, R]]`` updates the basis; only the stored basis and singular values are used.
  The basis is kept as ``V = V₀ U'`` (V₀ M-orthonormal, grown by the new directions; U' small)
  so a one-snapshot update costs O(n·N) instead of O(n·N²); V₀ is compressed when it has
  grown to twice the basis. Every truncation's discarded energy ``d`` is added up: with
  ``D = Σ d``, ``‖Z‖²_M = Σσ² + D`` exactly and ``‖(I − P)Z‖²_M ≤ D`` for all snapshots Z
  seen (the SVD splits each bordered matrix into orthogonal kept and discarded parts).
  Intermediate truncations discard at most ``omega²`` times the rule's error budget, so the
  final rule — applied once at the end to the spectrum with ``D`` included — sees a basis
  that differs from the batch POD's by ``sin θ ≲ omega²·budget/gap``.
* :func:`merge` — HAPOD (Himpe, Leibner & Rave 2018): POD of ``[V₁Σ₁, …, V_kΣ_k]``; with the
  parts' own discarded energies ``D_i`` and the root's ``d``, the error bound is
  ``‖(I − P)X‖²_M ≤ Σ D_i + d`` and ``‖X‖²_M = Σ σ² + Σ D_i``.
"""

from __future__ import annotations

import math

import numpy as np

from . import tensor as T
from .errors import BudgetError, DataError, ParameterError
from .errors import human_bytes as _human
from .linalg import cholqr_max_cond, qr_tall, tall_svd, thin_svd
from .operator import dense_matmat
from .rank import RankRule, Spectrum, ranks_by_rule, select_rank
from .result import Result
from .validate import is_sparse, working_dtype

METHODS = ("auto", "svd", "snapshots", "randomized")
CRITERIA = {
    "rel-frob": "tol",
    "abs-frob": "abs_frob",
    "energy": "energy",
    "rel-sv": "rel_sv",
    "abs-sv": "abs_sv",
}
# Tall enough (n ≥ TALL_RATIO·m) for the Gram route to be the cheapest exact one.
TALL_RATIO = 4
# A Gram eigenvalue below RESOLVE·γ (γ = m·eps·λ₁) does not give a usable mode direction.
RESOLVE = 10.0
# Randomized pays off for a fixed rank with N + oversample ≤ m/4, once the data is large.
RANDOMIZED_MAX_FRACTION = 0.25
RANDOMIZED_MIN_ENTRIES = 1 << 22
# Positive definiteness of a mass matrix is proved by an LDLᵀ while nnz stays below this.
MASS_CHECK_MAX_NNZ = 20_000_000
# Symmetry of a mass matrix is checked to this relative tolerance.
SYMMETRY_RTOL = 1e-12
# Per-snapshot errors are listed in details up to this many snapshots.
REPORT_SNAPSHOTS = 100_000
# enrich: intermediate truncations discard at most OMEGA² times the rule's error budget.
OMEGA = 1e-4
# In-memory Gram: row blocks of this many bytes when blocks must be converted or scaled.
GRAM_BLOCK_BYTES = 4 << 20


def rule_from(
    criterion: str | None = None, tol: float | None = None, rank: int | None = None
) -> RankRule:
    """The rank rule of ``--tol EPS --criterion C`` or ``--rank N`` (exactly one of them)."""
    if (tol is None) == (rank is None):
        raise ParameterError("give exactly one of a tolerance and a rank")
    if rank is not None:
        return RankRule("rank", rank)
    criterion = criterion or "rel-frob"
    if criterion not in CRITERIA:
        raise ParameterError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    return RankRule(CRITERIA[criterion], float(tol))


def _eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


# --- inner products ----------------------------------------------------------------------------


class InnerProduct:
    """``⟨x, y⟩ = xᵀMy`` with M the identity, a positive diagonal or a sparse SPD matrix."""

    def __init__(self, n: int, kind: str = "euclidean", weights=None, mass=None, check=None):
        self.n, self.kind = int(n), kind
        self.w = weights  # float64 (n,) or None
        self.sqrt_w = None if weights is None else np.sqrt(weights)
        self.m = mass  # csr float64 or None
        self.check = check or "identity"
        self._ldl = None

    def ldl(self) -> _LDL:
        """M = F Fᵀ (sparse LDLᵀ; computed once)."""
        if self._ldl is None:
            self._ldl = _LDL(self.m)
        return self._ldl

    @property
    def euclidean(self) -> bool:
        return self.kind == "euclidean"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """M x (float64 for a mass matrix; x's dtype otherwise)."""
        if self.kind == "euclidean":
            return x
        if self.kind == "diagonal":
            w = self.w if x.ndim == 1 else self.w[:, None]
            return x * w.astype(x.dtype, copy=False)
        return np.asarray(self.m @ x)

    def gram(self, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """aᵀ M b in float64."""
        a64 = np.asarray(a, dtype=np.float64)
        if b is None:
            if self.kind == "euclidean":
                return a64.T @ a64
            if self.kind == "diagonal":
                s = a64 * self.sqrt_w[:, None]
                return s.T @ s
            g = a64.T @ np.asarray(self.m @ a64)
            return (g + g.T) / 2
        return a64.T @ self.apply(np.asarray(b, dtype=np.float64))

    def sq_norms(self, a: np.ndarray) -> np.ndarray:
        a64 = np.asarray(a, dtype=np.float64)
        if a64.ndim == 1:
            a64 = a64[:, None]
        return np.einsum("ij,ij->j", a64, np.asarray(self.apply(a64), dtype=np.float64))

    def describe(self) -> dict:
        out = {"kind": self.kind, "check": self.check}
        if self.kind == "sparse":
            out["nnz"] = int(self.m.nnz)
            out["bandwidth"] = self.bandwidth
        return out

    @property
    def bandwidth(self) -> int:
        if self.m is None:
            return 0
        coo = self.m.tocoo()
        return int(np.max(np.abs(coo.row - coo.col))) if coo.nnz else 0


def inner_product(n: int, *, mass=None, weights=None, check: bool = True) -> InnerProduct:
    """Validate ``mass`` (sparse or dense n×n SPD) or ``weights`` (n positive values)."""
    if isinstance(mass, InnerProduct):  # already validated (local bases reuse it)
        if mass.n != n:
            raise DataError(f"the inner product is for {mass.n} dofs but the snapshots have {n}")
        return mass
    if mass is not None and weights is not None:
        raise ParameterError("give a mass matrix or weights, not both")
    if weights is not None:
        w = np.asarray(weights)
        if w.dtype.kind not in "fiub":
            raise DataError(f"weights must be numeric, got dtype {w.dtype}")
        if w.ndim != 1 or w.shape[0] != n:
            raise DataError(
                f"weights have shape {w.shape} but the snapshots have {n} dofs: "
                "one weight per dof (row) is needed"
            )
        w = w.astype(np.float64)
        if not np.isfinite(w).all():
            raise DataError(f"weights hold {int((~np.isfinite(w)).sum())} non-finite value(s)")
        if not (w > 0).all():
            raise DataError(f"weights must be positive; {int((w <= 0).sum())} value(s) are ≤ 0")
        return InnerProduct(n, "diagonal", weights=w, check="positive weights")
    if mass is None:
        return InnerProduct(n)
    import scipy.sparse as sp

    if not is_sparse(mass):
        mass = np.asarray(mass)
        if mass.dtype.kind not in "fiub":
            raise DataError(f"the mass matrix must be numeric, got dtype {mass.dtype}")
    if mass.ndim != 2 or tuple(mass.shape) != (n, n):
        raise DataError(
            f"the mass matrix has shape {tuple(mass.shape)} but the snapshots have "
            f"{n} dofs: it must be {n}×{n}"
        )
    mm = sp.csr_matrix(mass, dtype=np.float64)
    mm.sum_duplicates()
    mm.eliminate_zeros()
    if not np.isfinite(mm.data).all():
        raise DataError("the mass matrix holds non-finite values")
    amax = float(np.max(np.abs(mm.data))) if mm.nnz else 0.0
    asym = abs(mm - mm.T)
    if asym.nnz and float(asym.max()) > SYMMETRY_RTOL * amax:
        raise DataError(
            f"the mass matrix is not symmetric (max |M − Mᵀ| = {float(asym.max()):.3g}"
            f", max |M| = {amax:.3g})"
        )
    mm = ((mm + mm.T) * 0.5).tocsr()
    diag = mm.diagonal()
    if not (diag > 0).all():
        raise DataError(
            f"the mass matrix is not positive definite: {int((diag <= 0).sum())} "
            "diagonal entr(y/ies) ≤ 0"
        )
    how = "symmetric, positive diagonal"
    factor = None
    if check:
        off = np.asarray(abs(mm).sum(axis=1)).ravel() - diag
        if (diag > off).all():
            how = "SPD: strictly diagonally dominant with a positive diagonal (Gershgorin)"
        elif mm.nnz <= MASS_CHECK_MAX_NNZ:
            factor, how = _ldl_inertia(mm)
        else:
            how += (
                f"; nnz > {MASS_CHECK_MAX_NNZ}: definiteness checked only on the snapshots' "
                "span (the Gram must have no negative eigenvalue beyond rounding)"
            )
    ip = InnerProduct(n, "sparse", mass=mm, check=how)
    ip._ldl = factor
    return ip


class _LDL:
    """``M = F Fᵀ`` with ``F = P L D^{1/2}`` from SuperLU run without row interchanges
    (``Pᵀ M P = L U`` and, M being symmetric, ``U = D Lᵀ``): a sparse Cholesky substitute."""

    def __init__(self, mm):
        from scipy.sparse.linalg import splu

        try:
            lu = splu(
                mm.tocsc(),
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
        except RuntimeError as exc:  # exactly singular
            raise DataError(f"the mass matrix is singular, not positive definite ({exc})") from exc
        if not np.array_equal(lu.perm_r, lu.perm_c):
            raise DataError(
                "the mass matrix is not positive definite (its factorisation needed "
                "off-diagonal pivots)"
            )
        d = lu.U.diagonal()
        bad = int(np.count_nonzero(d <= 0))
        if bad:
            raise DataError(
                f"the mass matrix is not positive definite: its LDLᵀ has {bad} "
                "non-positive pivot(s)"
            )
        self.perm = lu.perm_c
        self.lt = lu.L.T.tocsr()  # unit upper
        self.sqrt_d = np.sqrt(d)
        self.nnz = int(lu.L.nnz)

    def ft(self, a: np.ndarray) -> np.ndarray:
        """Fᵀ a = D^{1/2} Lᵀ Pᵀ a (float64)."""
        b = np.empty(a.shape)
        b[self.perm] = a
        return np.asarray(self.lt @ b) * self.sqrt_d[:, None]

    def f_inv_t(self, u: np.ndarray) -> np.ndarray:
        """F⁻ᵀ u = P L⁻ᵀ D^{-1/2} u (float64)."""
        from scipy.sparse.linalg import spsolve_triangular

        y = np.asarray(u, dtype=np.float64) / self.sqrt_d[:, None]
        x = spsolve_triangular(self.lt, y, lower=False, unit_diagonal=True)
        return np.asarray(x)[self.perm]


def _ldl_inertia(mm):
    """Prove M SPD by the signs of the pivots of a factorisation without row interchanges."""
    return _LDL(
        mm
    ), "SPD: all pivots of a symmetric LDLᵀ (SuperLU, no row interchanges) are positive"


# --- M-orthonormalisation ----------------------------------------------------------------------


def _chol_upper(g: np.ndarray):
    import scipy.linalg as sla

    try:
        return sla.cholesky(g, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def _solve_r(y: np.ndarray, r: np.ndarray) -> np.ndarray:
    import scipy.linalg as sla

    # Y R⁻¹ through the explicit small inverse: one gemm (the second pass repairs rounding)
    rinv = sla.solve_triangular(r, np.eye(r.shape[0]), lower=False, check_finite=False)
    return y @ rinv.astype(y.dtype, copy=False)


def m_orth(y: np.ndarray, ip: InnerProduct):
    """``Y = Q R`` with ``QᵀMQ = I`` (Y tall, full column rank up to rounding).

    Euclidean: :func:`rankwise.core.linalg.qr_tall`; diagonal weights: the same on ``√w·Y``;
    a mass matrix: CholeskyQR2 in the M inner product while ``cond(R)`` allows it, else
    shifted CholeskyQR3 (a shift ``s = 11(nk + k(k+1))·eps·‖G‖`` makes the first Cholesky
    succeed, two unshifted passes then restore orthonormality). Returns (Q, R, how)."""
    if ip.kind == "euclidean":
        q, r, how = qr_tall(np.array(y, copy=True), overwrite=True)
        return q, r, how
    if ip.kind == "diagonal":
        s = ip.sqrt_w[:, None].astype(y.dtype)
        q, r, how = qr_tall(y * s, overwrite=True)
        return q / s, r, how
    import scipy.linalg as sla

    n, k = y.shape
    y64 = np.asarray(y, dtype=np.float64)
    g = ip.gram(y64)
    r1 = _chol_upper(g)
    how = "cholesky_qr2 (M inner product)"
    if r1 is not None:
        sv = sla.svdvals(r1, check_finite=False)
        if not (sv[-1] > 0 and sv[0] / sv[-1] <= cholqr_max_cond(np.float64)):
            r1 = None
    if r1 is None:
        norm = float(np.max(np.abs(sla.eigvalsh(g, check_finite=False)))) if k else 0.0
        shift = 11.0 * (n * k + k * (k + 1)) * _eps(np.float64) * max(norm, 1e-300)
        r1 = _chol_upper(g + shift * np.eye(k))
        if r1 is None:
            raise DataError(
                "M-orthonormalisation failed: the mass matrix is not positive "
                "definite on the snapshots' span"
            )
        how = "shifted cholesky_qr3 (M inner product)"
    q = _solve_r(y64, r1)
    r = r1
    for _ in range(2 if how.startswith("shifted") else 1):
        r2 = _chol_upper(ip.gram(q))
        if r2 is None:
            raise DataError(
                "M-orthonormalisation broke down: the mass matrix is not positive "
                "definite on the snapshots' span"
            )
        q = _solve_r(q, r2)
        r = r2 @ r
    return q.astype(y.dtype, copy=False), r, how


def orthogonality_loss(v: np.ndarray, ip: InnerProduct) -> float:
    """‖VᵀMV − I‖_max (float64)."""
    if v.size == 0:
        return 0.0
    g = ip.gram(v)
    g[np.diag_indices_from(g)] -= 1.0
    return float(np.max(np.abs(g)))


def _flip(v: np.ndarray, *others) -> None:
    """Largest-magnitude entry of every column of v positive; ``others`` (k×… rows or …×k
    columns given as (array, axis)) follow."""
    if v.shape[1] == 0:
        return
    idx = np.argmax(np.abs(v), axis=0)
    s = np.sign(v[idx, np.arange(v.shape[1])])
    s[s == 0] = 1
    v *= s.astype(v.dtype)
    for arr, axis in others:
        if axis == 0:
            arr *= s[:, None].astype(arr.dtype)
        else:
            arr *= s[None, :].astype(arr.dtype)


# --- snapshot access ---------------------------------------------------------------------------


class _Data:
    """The snapshots A (= X or X − x̄1ᵀ) in memory or as row blocks of a source."""

    def __init__(self, x, *, wdt, center: bool, rows: int, hook=None):
        self.src = x
        self.source = T.is_slab_source(x)
        self.shape = tuple(int(s) for s in x.shape)
        self.wdt = np.dtype(wdt)
        self.center = center
        self.rows = int(rows)
        self.hook = hook
        self.passes = 0
        self.bytes_read = 0
        self.mean = None
        self.amax = 0.0
        if not self.source:
            a = np.asarray(x)
            a = a if a.dtype == self.wdt else a.astype(self.wdt)
            if center:
                mean = a.mean(axis=1, dtype=np.float64)
                a = a - mean.astype(self.wdt)[:, None]
                self.mean = mean
            self.a = a

    def blocks(self):
        """(start, block of A in the working dtype); for a source, one pass over the file."""
        if not self.source:
            for start in range(0, self.shape[0], self.rows):
                yield start, self.a[start : start + self.rows]
            return
        first = self.passes == 0
        self.passes += 1
        for start, raw in T.iter_slabs(
            self.src, self.rows, prefetch=True, hook=self.hook if first else None
        ):
            blk = np.asarray(raw)
            self.bytes_read += blk.nbytes
            if first:
                from .validate import abs_max, check_finite

                check_finite(blk, method="pod")
                self.amax = max(self.amax, abs_max(blk))
            blk = np.array(blk, dtype=self.wdt, copy=True)  # ring buffers are reused
            if self.center:
                if first:
                    mu = blk.mean(axis=1, dtype=np.float64)
                    if self.mean is None:
                        self.mean = np.empty(self.shape[0])
                    self.mean[start : start + blk.shape[0]] = mu
                blk -= self.mean[start : start + blk.shape[0], None].astype(self.wdt)
            yield start, blk

    def gram(self, ip: InnerProduct) -> np.ndarray:
        """AᵀMA in float64."""
        m = self.shape[1]
        if not self.source:
            a = self.a
            if ip.kind == "euclidean" and a.dtype == np.float64:
                return a.T @ a  # syrk
            if ip.kind == "sparse":
                return ip.gram(a)
        g = np.zeros((m, m))
        if ip.kind == "sparse":
            return self._banded_gram(ip)
        step = self.rows if self.source else max(1, GRAM_BLOCK_BYTES // (8 * m))
        it = (
            self.blocks()
            if self.source
            else ((s, self.a[s : s + step]) for s in range(0, self.shape[0], step))
        )
        for start, blk in it:
            b = np.asarray(blk, dtype=np.float64)
            if ip.kind == "diagonal":
                b = b * ip.sqrt_w[start : start + b.shape[0], None]
            g += b.T @ b
        return g

    def _banded_gram(self, ip: InnerProduct) -> np.ndarray:
        """Σ over blocks of A_iᵀ M_ii A_i + A_iᵀ M_{i,i−1} A_{i−1} + transpose (M's bandwidth
        ≤ block rows, so no other block pair interacts)."""
        m = self.shape[1]
        g = np.zeros((m, m))
        prev, p0 = None, 0
        mm = ip.m
        for start, blk in self.blocks():
            b = np.asarray(blk, dtype=np.float64)
            stop = start + b.shape[0]
            g += b.T @ np.asarray(mm[start:stop, start:stop] @ b)
            if prev is not None:
                c = b.T @ np.asarray(mm[start:stop, p0:start] @ prev)
                g += c + c.T
            prev, p0 = b, start
        return (g + g.T) / 2

    def times(self, w: np.ndarray) -> np.ndarray:
        """A @ W (n×k) in the working dtype."""
        w = np.asarray(w, dtype=self.wdt)
        if not self.source:
            return np.ascontiguousarray(dense_matmat(self.a, w))
        out = np.empty((self.shape[0], w.shape[1]), dtype=self.wdt)
        for start, blk in self.blocks():
            out[start : start + blk.shape[0]] = blk @ w
        return out

    def rtimes(self, y: np.ndarray) -> np.ndarray:
        """Aᵀ Y (m×k) in float64 (Y given in full, n×k)."""
        if not self.source:
            # plain aᵀy: measured 3–6× faster than (yᵀa)ᵀ for this shape (n ≫ m > k)
            return np.asarray(self.a.T @ np.asarray(y, dtype=self.wdt), np.float64)
        out = np.zeros((self.shape[1], y.shape[1]))
        for start, blk in self.blocks():
            out += blk.T @ np.asarray(y[start : start + blk.shape[0]], dtype=self.wdt)
        return out

    def dense(self) -> np.ndarray:
        return self.a


# --- the POD paths -----------------------------------------------------------------------------


class _Decomp:
    """What a path returns: basis columns (≥ N), singular values, right singular vectors
    (for per-snapshot errors), and how accurate they are."""

    def __init__(
        self,
        v,
        s_all,
        w,
        *,
        total,
        accurate: int,
        complete: bool,
        details: dict,
        warnings=(),
        floor_sq=0.0,
    ):
        self.v = v  # n × k (k ≥ N), M-orthonormal
        self.s_all = np.asarray(s_all, dtype=np.float64)  # every singular value computed
        self.w = w  # m × k' right singular vectors (k' ≥ N) or None
        self.total = float(total)  # ‖A‖²_M
        self.accurate = int(accurate)
        self.complete = bool(complete)
        self.details = details
        self.warnings = list(warnings)
        self.floor_sq = floor_sq  # absolute resolution of the per-snapshot error² (or array)
        self.outside_sq = None  # per snapshot, energy outside the computed space (RR path)


class Chooser:
    """A rank rule applied to a spectrum whose total energy has ``extra`` more than Σσ² (the
    energy earlier truncations discarded: enrich, merge)."""

    def __init__(self, rule: RankRule, extra: float = 0.0):
        self.kind, self.value, self.rule, self.extra = rule.kind, rule.value, rule, float(extra)

    def spectrum(self, s, total: float, max_rank: int, complete: bool) -> Spectrum:
        if self.extra > 0:
            return Spectrum(
                s=s, total_sq=float(total) + self.extra, max_rank=max_rank, complete=False
            )
        return Spectrum(s=s, total_sq=total, max_rank=max_rank, complete=complete)


def _rank_of(spec: Spectrum, rule, warnings: list) -> int:
    if isinstance(rule, Chooser):
        spec = rule.spectrum(spec.s, spec.norm_sq, spec.max_rank, spec.complete)
        rule = rule.rule
    k = select_rank(spec, rule)
    if k is None:
        k = len(spec.s)
        warnings.append(
            f"{rule.kind} = {rule.value:g} not reached within the {k} computed "
            "singular values; all are kept"
        )
    return int(min(k, len(spec.s)))


def _snapshots_path(
    data: _Data,
    ip: InnerProduct,
    rule: RankRule,
    *,
    oversample: int,
    reortho_tol: float,
    strict: bool,
    warnings: list,
):
    """Method of snapshots with a Rayleigh–Ritz pass when the modes are not orthonormal.
    Returns a _Decomp, or None when ``strict`` and the rule's cut is below the resolution."""
    import scipy.linalg as sla

    n, m = data.shape
    g = data.gram(ip)
    norms_sq = np.maximum(np.diag(g).copy(), 0.0)
    # divide and conquer: 1.8× faster than syevr on graded POD Grams (measured, 1 thread),
    # whose many eigenvalues at the rounding level slow the MRRR path down
    lam, w = sla.eigh(g, driver="evd", check_finite=False)
    lam, w = lam[::-1].copy(), w[:, ::-1].copy()
    lam1 = max(float(lam[0]), 0.0)
    gamma = T.gram_resolution(lam1, m)
    if ip.kind == "sparse" and lam[-1] < -100.0 * max(gamma, 1e-300) and lam1 > 0:
        raise DataError(
            f"the mass matrix is not positive definite on the snapshots' span: the "
            f"Gram XᵀMX has an eigenvalue {lam[-1]:.3g} (λ_max {lam1:.3g})"
        )
    lam = np.maximum(lam, 0.0)
    if lam1 == 0.0:
        raise DataError("all snapshots are zero: POD has no basis to give")
    r = min(n, m)
    s = np.sqrt(lam[:r])
    total = float(norms_sq.sum())
    spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=True)
    nk = _rank_of(spec, rule, warnings)
    resolved = int(np.count_nonzero(lam[:r] > RESOLVE * gamma))
    unresolved = nk > resolved
    if unresolved and strict:
        return None
    if unresolved:
        warnings.append(
            f"modes {resolved + 1}…{nk} have σ below the Gram's resolution "
            f"(σ ≤ {math.sqrt(RESOLVE * gamma):.3g}); their directions are rounding "
            "noise — use method svd for them"
        )
    details = {
        "gram": f"{m}×{m} float64",
        "eigh": "LAPACK syevd",
        "gram_resolution": {
            "lambda": gamma,
            "sigma": math.sqrt(gamma),
            "relative_sigma": math.sqrt(gamma / lam1),
            "resolved_modes": resolved,
        },
    }
    # Form the k = N + oversample leading directions at once: the Rayleigh–Ritz pass, when
    # needed, uses them all (one step of subspace iteration sharpens the first N).
    k = min(r, nk + max(0, oversample))
    scale = 1.0 / np.sqrt(np.maximum(lam[:k], gamma))
    y = data.times(w[:, :k] * scale)
    loss = orthogonality_loss(y[:, :nk], ip)
    details["modes_loss"] = loss
    if loss <= reortho_tol:
        details["rayleigh_ritz"] = False
        return _Decomp(
            y, s, w, total=total, accurate=resolved, complete=True, details=details, floor_sq=gamma
        )
    q, _, how = m_orth(y, ip)
    mq = q if ip.kind == "euclidean" else ip.apply(np.asarray(q, dtype=np.float64))
    b = data.rtimes(mq).T  # k × m: QᵀMA
    ub, sb, wbt = sla.svd(b, full_matrices=False, check_finite=False)
    v = q @ ub.astype(q.dtype)
    details.update(rayleigh_ritz=True, rayleigh_ritz_size=int(k), orthonormalisation=how)
    # The RR values are accurate; the Gram's fill in the rest of the spectrum.
    s_all = np.concatenate([sb, s[k:]]) if k < r else sb
    outside = np.maximum(norms_sq - np.einsum("ij,i->j", wbt**2, sb**2), 0.0)
    dec = _Decomp(
        v,
        s_all,
        wbt.T,
        total=total,
        accurate=k,
        complete=False,
        details=details,
        floor_sq=10.0 * _eps(np.float64) * k * norms_sq,
    )
    dec.outside_sq = outside  # energy of each snapshot outside the RR space
    return dec


def _svd_path(data: _Data, ip: InnerProduct, rule: RankRule, warnings: list):
    """Thin SVD of M^{1/2}A (see the module docstring)."""
    n, m = data.shape
    a = data.dense()
    r = min(n, m)

    def select(sv):  # the rank is known before U is formed
        spec = Spectrum(s=sv, total_sq=0.0, max_rank=r, complete=True)
        return _rank_of(spec, rule, [])

    def svd_of(b):
        if n >= TALL_RATIO * m:
            return tall_svd(b, select=select)
        u, s, vt, how = thin_svd(b)
        return u, s, vt, f"LAPACK {how}"

    if ip.kind in ("euclidean", "diagonal"):
        aw = a if ip.kind == "euclidean" else a * ip.sqrt_w[:, None].astype(a.dtype)
        u, s, vt, how = svd_of(aw)
        if ip.kind == "diagonal":
            u = u / ip.sqrt_w[:, None].astype(u.dtype)
        details = {"svd": how}
    else:
        f = ip.ldl()
        af = f.ft(np.asarray(a, dtype=np.float64)).astype(a.dtype, copy=False)
        u, s, vt, how = svd_of(af)
        u = f.f_inv_t(u).astype(a.dtype, copy=False)
        details = {"svd": f"sparse LDLᵀ M = F Fᵀ (nnz(L) = {f.nnz}), SVD of Fᵀ A by {how}"}
    s64 = np.asarray(s, dtype=np.float64)
    total = float(np.sum(s64**2))
    return _Decomp(
        u,
        s64,
        np.asarray(vt, np.float64).T,
        total=total,
        accurate=len(s64),
        complete=True,
        details=details,
    )


def _randomized_path(
    data: _Data,
    ip: InnerProduct,
    rule: RankRule,
    *,
    oversample: int,
    power_iters,
    rng,
    max_memory,
    warnings: list,
):
    import scipy.linalg as sla

    from . import randomized
    from .operator import as_operator

    n, m = data.shape
    a = data.dense()
    r = min(n, m)
    if ip.kind in ("euclidean", "diagonal"):
        aw = a if ip.kind == "euclidean" else a * ip.sqrt_w[:, None].astype(a.dtype)
        op = as_operator(aw)
        if rule.kind == "rank":
            fact = randomized.fixed_rank(
                op, int(rule.value), oversample=oversample, power_iters=power_iters, rng=rng
            )
        else:
            fact = randomized.adaptive_qb(
                op,
                rule,
                power_iters=2 if power_iters is None else power_iters,
                rng=rng,
                block=None,
                max_memory=max_memory,
                base_bytes=aw.nbytes,
                warnings=warnings,
            )
        ub, s, vt = sla.svd(
            np.asarray(fact.right, np.float64), full_matrices=False, check_finite=False
        )
        u = fact.left @ ub.astype(fact.left.dtype)
        if ip.kind == "diagonal":
            u = u / ip.sqrt_w[:, None].astype(u.dtype)
        details = {
            **fact.details,
            "finder": "rankwise.core.randomized",
            "stop_reason": fact.stop_reason,
        }
        return _Decomp(
            u, s, vt.T, total=fact.total_sq, accurate=len(s), complete=len(s) >= r, details=details
        )
    # Subspace iteration in the M inner product; the basis doubles for accuracy rules.
    total = float(ip.sq_norms(a).sum())
    q_iters = 2 if power_iters is None else int(power_iters)
    ell = min(r, int(rule.value) + oversample if rule.kind == "rank" else max(16, oversample))
    history = []
    while True:
        y = data.times(randomized.gaussian(rng, (m, ell), np.float64))
        for _ in range(q_iters):
            q, _, _ = m_orth(y, ip)
            z = data.rtimes(ip.apply(np.asarray(q, np.float64)))
            y = data.times(np.linalg.qr(z)[0])
        q, _, how = m_orth(y, ip)
        b = data.rtimes(ip.apply(np.asarray(q, np.float64))).T
        ub, s, vt = sla.svd(b, full_matrices=False, check_finite=False)
        spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=ell >= r)
        err = math.sqrt(max(total - float(np.sum(s**2)), 0.0) / total) if total else 0.0
        history.append({"step": len(history) + 1, "basis_size": int(ell), "relative_error": err})
        if rule.kind == "rank" or ell >= r:
            break
        if randomized._rule_met(spec, rule):
            need = min(r, _rank_of(spec, rule, []) + oversample)
            if ell >= need:
                break
            ell = need  # the last kept values need oversampling to be accurate
            continue
        ell = min(r, 2 * ell)
    u = q @ ub.astype(q.dtype)
    details = {
        "finder": "subspace iteration in the M inner product",
        "power_iters": q_iters,
        "sketch_size": int(ell),
        "orthonormalisation": how,
        "history": history,
    }
    return _Decomp(u, s, vt.T, total=total, accurate=len(s), complete=ell >= r, details=details)


# --- pod ---------------------------------------------------------------------------------------


def estimate_bytes(
    shape,
    dtype,
    *,
    method: str,
    ip_kind: str = "euclidean",
    center=False,
    rank: int | None = None,
    streaming: bool = False,
    rows: int = 0,
) -> int:
    """Peak bytes of the working set (the input included when in memory)."""
    n, m = (int(s) for s in shape)
    w = np.dtype(dtype).itemsize
    k = min(n, m) if rank is None else min(n, m, rank + 10)
    small = 4 * m * m * 8
    if streaming:  # blocks in flight, the Gram, the modes and their orthonormalised copy
        k = min(n, m, (rank + 10) if rank is not None else 16)
        return 3 * rows * m * 8 + small + 2 * n * k * 8
    data = n * m * w * (2 if center else 1)
    if method == "svd":
        extra = n * m * 8 * (2 if ip_kind == "sparse" else 1) + (
            n * m * w if ip_kind == "diagonal" else 0
        )
        return data + extra + small
    if method == "randomized":
        return data + (n * m * w if ip_kind == "diagonal" else 0) + 4 * (n + m) * k * 8 + small
    return data + (n * m * 8 if ip_kind == "sparse" else 0) + 3 * n * k * 8 + small


def _choose(shape, rule: RankRule, ip: InnerProduct, oversample: int):
    n, m = shape
    if rule.kind == "rank":
        k = int(rule.value)
        if k + oversample <= RANDOMIZED_MAX_FRACTION * m and n * m >= RANDOMIZED_MIN_ENTRIES:
            return "randomized", (
                f"fixed rank {k} + oversampling {oversample} ≤ "
                f"{RANDOMIZED_MAX_FRACTION:g}·m = {RANDOMIZED_MAX_FRACTION * m:g}"
                " on large data: a randomized range finder needs fewer flops"
            )
    if n >= TALL_RATIO * m:
        return "snapshots", (
            f"tall snapshot matrix ({n} dofs ≥ {TALL_RATIO}·{m} snapshots): "
            "method of snapshots (m×m Gram + eigh, Rayleigh–Ritz pass when the "
            "modes need re-orthonormalising)"
        )
    return "svd", (
        f"not tall ({n} dofs, {m} snapshots): thin SVD"
        + (" of the M-orthonormal QR's R factor" if ip.kind == "sparse" else "")
    )


def pod(
    x,
    rule: RankRule,
    *,
    method: str = "auto",
    center: bool = False,
    mass=None,
    weights=None,
    rng: np.random.Generator | int | None = None,
    oversample: int = 10,
    power_iters: int | None = None,
    max_memory: int | None = None,
    streaming: bool | None = None,
    reortho_tol: float | None = None,
    on_first_pass=None,
    check_mass: bool = True,
) -> Result:
    """POD of the snapshot matrix ``x`` (n dofs × m snapshots; an array or a row-block source
    with ``shape``, ``dtype`` and ``iter_blocks(rows)``). See the module docstring.

    ``reortho_tol`` (default ``1000·eps`` of the working dtype) is the orthonormality loss above
    which the method of snapshots re-orthonormalises with its Rayleigh–Ritz pass. A source is
    streamed when it does not fit ``max_memory`` (``streaming=True`` forces it).
    """
    if not isinstance(rule, RankRule):
        raise ParameterError("rule must be a RankRule (see rule_from)")
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if oversample < 0:
        raise ParameterError(f"oversample must be ≥ 0, got {oversample}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    source = T.is_slab_source(x)
    if not source:
        x = np.asarray(x) if not is_sparse(x) else x
        if is_sparse(x):
            x = x.toarray()  # snapshots are dense fields; sparse storage is densified
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 2:
        raise DataError(f"pod needs a 2-D snapshot matrix (dofs × snapshots); got shape {shape}")
    if 0 in shape:
        raise DataError(f"pod needs a non-empty snapshot matrix; got shape {shape}")
    n, m = shape
    wdt = working_dtype(x.dtype, method="pod")
    if rule.kind == "rank" and int(rule.value) > min(n, m):
        raise ParameterError(
            f"rank {int(rule.value)} exceeds the number of "
            f"{'snapshots' if m <= n else 'dofs'} ({min(n, m)})"
        )
    ip = inner_product(n, mass=mass, weights=weights, check=check_mass)
    if not source:
        from .validate import check_finite

        check_finite(x, method="pod")
    reortho_tol = 1000.0 * _eps(wdt) if reortho_tol is None else float(reortho_tol)
    warnings: list[str] = []
    chunk_rows = int(x.chunks[0]) if source and getattr(x, "chunks", None) else None
    rows = T.stream_rows(shape, 8, max_memory, chunk_rows)
    k_est = int(rule.value) if rule.kind == "rank" else None
    in_mem = estimate_bytes(
        shape,
        wdt,
        method="snapshots" if method == "auto" else method,
        ip_kind=ip.kind,
        center=center,
        rank=k_est,
    )
    if streaming is None:
        streaming = source and max_memory is not None and in_mem > max_memory
    if streaming:
        if method not in ("auto", "snapshots"):
            raise ParameterError(
                f"a streamed snapshot set runs the method of snapshots; method "
                f"{method} needs the snapshots in memory"
            )
        if ip.kind == "sparse" and ip.bandwidth > rows:
            raise BudgetError(
                f"streaming with a mass matrix pairs each block of {rows} rows with its "
                f"neighbour, but the mass matrix has bandwidth {ip.bandwidth}; renumber the dofs "
                "(e.g. reverse Cuthill–McKee) or raise --max-memory"
            )
        need = estimate_bytes(shape, wdt, method="snapshots", streaming=True, rows=rows, rank=k_est)
        if max_memory is not None and need > max_memory:
            raise BudgetError(
                f"streamed POD needs about {_human(need)} (Gram {m}×{m}, blocks, "
                f"the basis) but the memory budget is {_human(max_memory)}"
            )
        data = _Data(x, wdt=wdt, center=center, rows=rows, hook=on_first_pass)
        used = "snapshots"
        reason = (
            (
                f"the snapshots need about {_human(in_mem)} in memory, more than the budget "
                f"{_human(max_memory)}: method of snapshots streamed over row blocks of {rows}"
                " rows"
            )
            if max_memory is not None
            else "streaming requested: method of snapshots over row blocks"
        )
    else:
        if max_memory is not None and in_mem > max_memory:
            raise BudgetError(
                f"pod needs about {_human(in_mem)} for {n}×{m} {wdt} but the memory"
                f" budget is {_human(max_memory)}"
            )
        if source:
            x = T.gather(x, shape, on_first_pass)
            from .validate import check_finite

            check_finite(x, method="pod")
        data = _Data(x, wdt=wdt, center=center, rows=rows)
        if method == "auto":
            used, reason = _choose(shape, rule, ip, oversample)
        else:
            used, reason = method, "requested"
    if used == "randomized" and ip.kind == "sparse" and rule.kind != "rank":
        reason += "; the M-inner-product subspace iteration doubles its basis until the rule holds"
    if used == "snapshots":
        dec = _snapshots_path(
            data,
            ip,
            rule,
            oversample=oversample,
            reortho_tol=reortho_tol,
            strict=method == "auto" and not streaming,
            warnings=warnings,
        )
        if dec is None:
            used = "svd"
            reason += (
                "; the rule's cut lies below the Gram's resolution, so it switched to the "
                "thin SVD (accurate small singular values)"
            )
            dec = _svd_path(data, ip, rule, warnings)
    elif used == "svd":
        dec = _svd_path(data, ip, rule, warnings)
    else:
        dec = _randomized_path(
            data,
            ip,
            rule,
            oversample=oversample,
            power_iters=power_iters,
            rng=rng,
            max_memory=max_memory,
            warnings=warnings,
        )
    return _finish(data, ip, rule, dec, used, reason, warnings, wdt, center, streaming)


def _finish(data, ip, rule, dec: _Decomp, used, reason, warnings, wdt, center, streaming):
    n, m = data.shape
    r = min(n, m)
    warnings = warnings + dec.warnings
    s_all = dec.s_all
    spec = Spectrum(
        s=s_all, total_sq=dec.total, max_rank=r, complete=dec.complete or len(s_all) >= r
    )
    if dec.total == 0.0:
        raise DataError("all snapshots are zero: POD has no basis to give")
    nk = _rank_of(spec, rule, warnings)
    nk = min(nk, dec.v.shape[1])
    v = np.ascontiguousarray(dec.v[:, :nk], dtype=wdt)
    s = s_all[:nk]
    # per-snapshot errors e_j² = Σ_{i>N} σ_i² w_ji² (+ what lies outside the computed space)
    w2 = None if dec.w is None else np.asarray(dec.w, np.float64) ** 2
    s2 = s_all[: (w2.shape[1] if w2 is not None else 0)] ** 2
    if w2 is not None and (dec.complete or dec.outside_sq is not None):
        err_sq = w2[:, nk:] @ s2[nk:]
        if dec.outside_sq is not None:
            err_sq = err_sq + dec.outside_sq
            how = (
                "Σ_{N<i≤k} σ_i² w_ji² in the Rayleigh–Ritz space + ‖a_j‖² − ‖Qᵀ M a_j‖² "
                "outside it (float64)"
            )
        else:
            how = "Σ_{i>N} σ_i² w_ji² (right singular vectors, no cancellation)"
        norms_sq = data_sq_norms(data, ip) if dec.outside_sq is None else None
        if norms_sq is None:
            norms_sq = err_sq + w2[:, :nk] @ s2[:nk]
    else:
        norms_sq = data_sq_norms(data, ip)
        err_sq = np.maximum(norms_sq - w2[:, :nk] @ s2[:nk], 0.0)
        how = "‖a_j‖² − Σ_{i≤N} σ_i² w_ji² (identity)"
        dec.floor_sq = 10.0 * _eps(np.float64) * len(s2) * norms_sq
    floor = np.broadcast_to(np.asarray(dec.floor_sq, dtype=np.float64), (m,))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(norms_sq > 0, np.sqrt(err_sq / np.where(norms_sq > 0, norms_sq, 1)), 0.0)
    loss = orthogonality_loss(v, ip)
    tail = spec.tail_sq()
    discarded = float(tail[nk]) if nk < len(tail) else 0.0
    if not spec.complete:
        discarded = max(dec.total - float(np.sum(s_all[:nk] ** 2)), 0.0)
    _flip(v)
    worst = int(np.argmax(rel))
    metrics = {
        "singular_values": [float(x) for x in s_all],
        "singular_values_accurate": int(min(dec.accurate, len(s_all))),
        "norm_fro": math.sqrt(dec.total),
        "relative_frobenius_error": math.sqrt(discarded / dec.total),
        "discarded_energy": discarded,
        "error_method": "tail of the spectrum (Σ_{i>N} σ_i²)"
        if spec.complete
        else "identity ‖A‖²_M − Σ_{i≤N} σ_i²",
        "projection_error": {
            "mean": float(rel.mean()),
            "worst": float(rel[worst]),
            "worst_snapshot": worst,
            "method": how,
            "resolution": float(np.sqrt(np.max(floor / np.where(norms_sq > 0, norms_sq, np.inf))))
            if floor.any()
            else 0.0,
        },
        "orthogonality_loss": loss,
    }
    by_rule = ranks_by_rule(spec, rule)
    rank = {
        "value": int(nk),
        "rule": rule.kind,
        "threshold": rule.value,
        "max_rank": int(r),
        "clamped": False,
        "by_rule": by_rule,
    }
    details = {
        "working_dtype": str(wdt),
        "inner_product": ip.describe(),
        "centered": center,
        "streaming": bool(streaming),
        **dec.details,
    }
    details.pop("history", None)
    if data.source:
        details.update(passes=data.passes, bytes_read=int(data.bytes_read), block_rows=data.rows)
    if m <= REPORT_SNAPSHOTS:
        details["per_snapshot_projection_errors"] = [float(e) for e in rel]
    arrays = {"basis": v, "singular_values": np.asarray(s, dtype=wdt)}
    if center:
        arrays["mean"] = np.asarray(data.mean, dtype=wdt)
    return Result(
        arrays=arrays,
        method=used,
        method_reason=reason,
        metrics=metrics,
        details=details,
        warnings=tuple(warnings),
        rank=rank,
    )


def data_sq_norms(data: _Data, ip: InnerProduct) -> np.ndarray:
    """‖a_j‖²_M for every snapshot (float64; one pass when streamed)."""
    if ip.kind == "sparse" and not data.source:
        return ip.sq_norms(data.dense())
    out = np.zeros(data.shape[1])
    prev, p0 = None, 0
    for start, blk in data.blocks():
        b = np.asarray(blk, np.float64)
        stop = start + b.shape[0]
        if ip.kind == "sparse":
            out += np.einsum("ij,ij->j", b, np.asarray(ip.m[start:stop, start:stop] @ b))
            if prev is not None:
                out += 2 * np.einsum("ij,ij->j", b, np.asarray(ip.m[start:stop, p0:start] @ prev))
            prev, p0 = b, start
            continue
        if ip.kind == "diagonal":
            b = b * ip.sqrt_w[start:stop, None]
        out += np.einsum("ij,ij->j", b, b)
    return out


# --- enrichment (incremental SVD) -----------------------------------------------------------


def _check_basis(basis, singular_values, n: int | None, ip: InnerProduct | None, what: str):
    v = np.asarray(basis)
    s = np.asarray(singular_values)
    if v.ndim != 2:
        raise DataError(f"{what}: the basis must be 2-D (dofs × modes); got shape {v.shape}")
    if n is not None and v.shape[0] != n:
        raise DataError(f"{what}: the basis has {v.shape[0]} dofs but the snapshots have {n}")
    if s.ndim != 1 or s.shape[0] != v.shape[1]:
        raise DataError(f"{what}: {s.shape} singular values for a basis of {v.shape[1]} modes")
    wdt = working_dtype(v.dtype, method=what)
    v64 = np.asarray(v, dtype=np.float64)
    s64 = np.asarray(s, dtype=np.float64)
    if not (np.isfinite(v64).all() and np.isfinite(s64).all()):
        raise DataError(f"{what}: the basis or its singular values hold NaN or Inf")
    if (s64 < 0).any() or (np.diff(s64) > 1e-12 * (s64[0] if s64.size else 0)).any():
        raise DataError(f"{what}: singular values must be non-negative and descending")
    if ip is not None and v.shape[1]:
        loss = orthogonality_loss(v64, ip)
        tol = max(1e-6, 100 * math.sqrt(_eps(wdt)))
        if loss > tol:
            raise DataError(
                f"{what}: the basis is not orthonormal in the given inner product "
                f"(‖VᵀMV − I‖_max = {loss:.3g}); was it built with another mass matrix?"
            )
    return v64, s64, wdt


class IncrementalPOD:
    """Brand's incremental SVD in the M inner product (see the module docstring).

    ``add(y)`` takes one snapshot (n,) or a block (n × p); ``result()`` applies the rule once
    more to the spectrum with the discarded energy included and returns the basis.
    """

    def __init__(
        self,
        n: int,
        rule: RankRule,
        *,
        mass=None,
        weights=None,
        basis=None,
        singular_values=None,
        discarded_energy: float = 0.0,
        omega: float = OMEGA,
        dtype=np.float64,
        ip: InnerProduct | None = None,
    ):
        if not isinstance(rule, RankRule):
            raise ParameterError("rule must be a RankRule (see rule_from)")
        if not 0 < omega <= 1:
            raise ParameterError(f"omega must be in (0, 1], got {omega}")
        if not (math.isfinite(discarded_energy) and discarded_energy >= 0):
            raise ParameterError(f"discarded energy must be finite and ≥ 0, got {discarded_energy}")
        self.n, self.rule, self.omega = int(n), rule, float(omega)
        self.ip = ip or inner_product(self.n, mass=mass, weights=weights)
        self.dtype = np.dtype(dtype)
        if basis is None:
            v, s = np.zeros((self.n, 0)), np.zeros(0)
        else:
            v, s, _ = _check_basis(basis, singular_values, self.n, self.ip, "enrich")
        cap = max(32, 2 * v.shape[1] + 16)
        self.v0 = np.zeros((self.n, cap), order="F")
        self.v0[:, : v.shape[1]] = v
        self.n0 = v.shape[1]
        self.u = np.eye(v.shape[1])
        self.s = s.copy()
        self.discarded = float(discarded_energy)
        self.initial_discarded = float(discarded_energy)
        self.seen = 0
        self.updates = 0
        self.compressions = 0
        self.dropped_directions = 0

    # -- the bordered update
    def add(self, y) -> None:
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != self.n:
            raise DataError(
                f"enrich: snapshots of {y.shape[0] if y.ndim else 0} dofs for a basis of {self.n}"
            )
        if not np.isfinite(y).all():
            raise DataError("enrich: the new snapshots hold NaN or Inf")
        if y.shape[1] == 0:
            return
        ip = self.ip
        v0 = self.v0[:, : self.n0]
        my = ip.apply(y)
        c = v0.T @ my
        r = y - v0 @ c
        ynorm_sq = np.einsum("ij,ij->j", y, my)
        # Classical Gram–Schmidt twice ("twice is enough"), skipped when the first pass kept
        # most of the snapshot (Kahan's criterion).
        mr = ip.apply(r)
        rnorm_sq = np.einsum("ij,ij->j", r, mr)
        if self.n0 and (rnorm_sq < 0.5 * ynorm_sq).any():
            c2 = v0.T @ mr
            r -= v0 @ c2
            c += c2
            mr = ip.apply(r)
            rnorm_sq = np.einsum("ij,ij->j", r, mr)
        tiny = (10.0 * _eps(np.float64)) ** 2 * float(np.max(ynorm_sq))
        if y.shape[1] == 1:
            rho = math.sqrt(max(float(rnorm_sq[0]), 0.0))
            if rho * rho > tiny:
                q, rr = r / rho, np.array([[rho]])
            else:
                q, rr = np.zeros((self.n, 0)), np.zeros((0, 1))
                self.dropped_directions += 1
        else:
            q, rr = self._block_residual(r, mr, tiny)
        p_new = q.shape[1]
        nb = self.s.shape[0]
        k = np.zeros((self.n0 + p_new, nb + y.shape[1]))
        k[: self.n0, :nb] = self.u * self.s
        k[: self.n0, nb:] = c
        k[self.n0 :, nb:] = rr
        import scipy.linalg as sla

        uk, sk, _ = sla.svd(k, full_matrices=False, check_finite=False)
        keep = self._intermediate_keep(sk)
        self.discarded += float(np.sum(sk[keep:] ** 2))
        self._append(q)
        self.u = uk[:, :keep]
        self.s = sk[:keep]
        self.seen += y.shape[1]
        self.updates += 1
        if self.n0 > max(2 * keep, keep + 16):
            self._compress()

    def _block_residual(self, r, mr, tiny):
        """M-orthonormal basis of the residual block, dropping directions at rounding level."""
        import scipy.linalg as sla

        h = r.T @ mr
        mu, z = sla.eigh((h + h.T) / 2, check_finite=False)
        good = mu > max(tiny, 1e3 * _eps(np.float64) * max(float(mu[-1]), 0.0))
        self.dropped_directions += int(np.count_nonzero(~good))
        if not good.any():
            return np.zeros((self.n, 0)), np.zeros((0, r.shape[1]))
        q = r @ (z[:, good] / np.sqrt(mu[good]))
        v0 = self.v0[:, : self.n0]
        if self.n0:  # one more projection: q must be orthogonal to V₀ to rounding
            q -= v0 @ (v0.T @ self.ip.apply(q))
        q, _, _ = m_orth(q, self.ip)
        rr = q.T @ mr
        return q, rr

    def _intermediate_keep(self, sk) -> int:
        """How many modes an intermediate truncation keeps (≤ omega²·budget discarded)."""
        k = len(sk)
        if k == 0:
            return 0
        s2 = sk.astype(np.float64) ** 2
        floor = (10.0 * _eps(np.float64)) * sk[0] * math.sqrt(max(k, 1))
        keep = int(np.count_nonzero(sk > floor))
        total = float(s2.sum()) + self.discarded
        rule = self.rule
        tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
        if rule.kind in ("tol", "abs_frob", "energy"):
            if rule.kind == "tol":
                budget = rule.value**2 * total
            elif rule.kind == "energy":
                budget = (1.0 - rule.value) * total
            else:
                budget = rule.value**2
            allowed = self.omega**2 * budget - (self.discarded - self.initial_discarded)
            ok = np.flatnonzero(tail[: keep + 1] <= max(allowed, 0.0))
            keep = int(ok[0]) if ok.size else keep
        elif rule.kind in ("rel_sv", "abs_sv"):
            cut = self.omega * rule.value * (sk[0] if rule.kind == "rel_sv" else 1.0)
            keep = min(keep, int(np.count_nonzero(sk > cut)))
        else:
            keep = min(keep, int(rule.value) + max(int(rule.value), 16))
        return max(1, keep)

    def _append(self, q):
        p = q.shape[1]
        if not p:
            return
        if self.n0 + p > self.v0.shape[1]:  # grow (U' refers to the current columns)
            grown = np.zeros((self.n, max(2 * self.v0.shape[1], self.n0 + p)), order="F")
            grown[:, : self.n0] = self.v0[:, : self.n0]
            self.v0 = grown
        self.v0[:, self.n0 : self.n0 + p] = q
        self.n0 += p

    def _compress(self):
        """V₀ ← V₀ U', U' ← I (BLAS-3; V₀ stays M-orthonormal to rounding)."""
        k = self.u.shape[1]
        if self.n0 == k and np.array_equal(self.u, np.eye(k)):
            return
        v = self.v0[:, : self.n0] @ self.u
        self.v0[:, :k] = v
        self.n0 = k
        self.u = np.eye(k)
        self.compressions += 1

    # -- the final basis
    def result(self) -> Result:
        self._compress()
        v = self.v0[:, : self.n0].copy()
        s = self.s.copy()
        warnings: list[str] = []
        loss = orthogonality_loss(v, self.ip)
        reortho = False
        if loss > 1000 * _eps(np.float64) and v.shape[1]:
            # Drift of many updates: re-orthonormalise, then rotate so that V Σ is unchanged
            # in its kept part (the SVD of R Σ).
            import scipy.linalg as sla

            q, rq, _ = m_orth(v, self.ip)
            ub, s, _ = sla.svd(rq * s, full_matrices=False, check_finite=False)
            v = q @ ub
            reortho = True
        total = float(np.sum(s**2)) + self.discarded
        max_rank = min(self.n, v.shape[1] + 0) if v.shape[1] else 1
        spec = Spectrum(s=s, total_sq=total, max_rank=max(1, max_rank), complete=False)
        if total == 0.0:
            raise DataError("enrich: all snapshots are zero: there is no basis to give")
        nk = select_rank(spec, self.rule)
        if nk is None:
            nk = len(s)
            warnings.append(
                f"{self.rule.kind} = {self.rule.value:g} cannot be met: the energy "
                "discarded before already exceeds the budget; every mode is kept"
            )
        nk = min(nk, len(s))
        final_discard = float(np.sum(s[nk:] ** 2))
        d_total = self.discarded + final_discard
        v = np.ascontiguousarray(v[:, :nk])
        s = s[:nk]
        _flip(v)
        loss = orthogonality_loss(v, self.ip)
        rank = {
            "value": int(nk),
            "rule": self.rule.kind,
            "threshold": self.rule.value,
            "max_rank": int(max_rank),
            "clamped": False,
            "by_rule": ranks_by_rule(spec, self.rule),
        }
        metrics = {
            "singular_values": [float(x) for x in s],
            "norm_fro": math.sqrt(total),
            "discarded_energy": d_total,
            "error_bound": {
                "absolute": math.sqrt(d_total),
                "relative": math.sqrt(d_total / total) if total else 0.0,
                "kind": "‖(I − VVᵀM)Z‖_M ≤ √(Σ discarded energies), Z every snapshot "
                "seen (including those behind the input basis when its "
                "discarded energy was given)",
            },
            "orthogonality_loss": loss,
        }
        details = {
            "updates": self.updates,
            "snapshots_added": self.seen,
            "compressions": self.compressions,
            "dropped_directions": self.dropped_directions,
            "inner_product": self.ip.describe(),
            "omega": self.omega,
            "intermediate_discarded_energy": self.discarded - self.initial_discarded,
            "reorthonormalized": reortho,
        }
        arrays = {"basis": v.astype(self.dtype), "singular_values": s.astype(self.dtype)}
        reason = (
            "incremental SVD (Brand 2006): project, M-orthonormalise the residual, SVD of "
            "the bordered matrix; basis kept as V₀U'"
        )
        return Result(
            arrays=arrays,
            method="incremental",
            method_reason=reason,
            metrics=metrics,
            details=details,
            warnings=tuple(warnings),
            rank=rank,
        )


def enrich(
    basis,
    singular_values,
    new_snapshots,
    rule: RankRule,
    *,
    mass=None,
    weights=None,
    discarded_energy: float = 0.0,
    columns_per_update: int | None = None,
    omega: float = OMEGA,
) -> Result:
    """Add ``new_snapshots`` (n × p) to a POD basis without the old snapshots.

    ``basis`` (n × N, M-orthonormal) and ``singular_values`` (N) are what :func:`pod` wrote;
    ``discarded_energy`` what it reported (``metrics["discarded_energy"]``), so that the rule
    and the error bound cover every snapshot since the first. ``columns_per_update=1`` runs
    Brand's one-snapshot update per column; None updates with the whole block at once.
    Returns a :class:`Result` with ``basis`` and ``singular_values``; metrics add the
    relative projection errors of the new snapshots on the input basis (``new_snapshots``).
    """
    ip = None
    v = np.asarray(basis)
    if v.ndim != 2:
        raise DataError(f"enrich: the basis must be 2-D (dofs × modes); got shape {v.shape}")
    n = v.shape[0]
    ip = inner_product(n, mass=mass, weights=weights)
    v64, s64, wdt = _check_basis(basis, singular_values, n, ip, "enrich")
    y = np.asarray(new_snapshots)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise DataError(f"enrich: new snapshots of shape {y.shape} for a basis of {n} dofs")
    if y.shape[1] == 0:
        raise DataError("enrich: no new snapshots")
    working_dtype(y.dtype, method="enrich")
    y = np.asarray(y, dtype=np.float64)
    if not np.isfinite(y).all():
        raise DataError("enrich: the new snapshots hold NaN or Inf")
    if columns_per_update is not None and columns_per_update < 1:
        raise ParameterError(f"columns_per_update must be ≥ 1, got {columns_per_update}")
    before = _relative_errors(v64, y, ip)
    inc = IncrementalPOD(
        n,
        rule,
        basis=v64,
        singular_values=s64,
        ip=ip,
        omega=omega,
        discarded_energy=discarded_energy,
        dtype=wdt,
    )
    step = y.shape[1] if columns_per_update is None else int(columns_per_update)
    for j in range(0, y.shape[1], step):
        inc.add(y[:, j : j + step])
    res = inc.result()
    res.metrics["new_snapshots"] = {
        "projection_error_before": {
            "mean": float(before.mean()),
            "worst": float(before.max()),
            "worst_snapshot": int(np.argmax(before)),
        }
    }
    res.details["columns_per_update"] = step
    return res


def _relative_errors(v: np.ndarray, x: np.ndarray, ip: InnerProduct) -> np.ndarray:
    """‖x_j − V Vᵀ M x_j‖_M / ‖x_j‖_M for every column (explicit residual, float64; 0 for a
    zero column)."""
    x = np.asarray(x, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    c = v.T @ ip.apply(x) if v.shape[1] else np.zeros((0, x.shape[1]))
    r = x - v @ c
    num = ip.sq_norms(r)
    den = ip.sq_norms(x)
    out = np.zeros(x.shape[1])
    nz = den > 0
    out[nz] = np.sqrt(np.maximum(num[nz], 0.0) / den[nz])
    return out


# --- merging (HAPOD) -------------------------------------------------------------------------


def merge(parts, rule: RankRule, *, mass=None, weights=None) -> Result:
    """HAPOD merge of bases computed on separate snapshot sets (see the module docstring).

    ``parts``: a sequence of ``(basis, singular_values)`` or
    ``(basis, singular_values, discarded_energy)``. Returns ``basis`` and
    ``singular_values`` with the error bound in ``metrics["error_bound"]``.
    """
    if not isinstance(rule, RankRule):
        raise ParameterError("rule must be a RankRule (see rule_from)")
    parts = list(parts)
    if not parts:
        raise ParameterError("merge needs at least one basis")
    n = np.asarray(parts[0][0]).shape[0]
    ip = inner_product(n, mass=mass, weights=weights)
    cols, ds, wdts = [], [], []
    for i, part in enumerate(parts):
        if len(part) not in (2, 3):
            raise ParameterError("each part is (basis, singular_values[, discarded_energy])")
        v, s, wdt = _check_basis(part[0], part[1], n, ip, f"merge (part {i})")
        d = float(part[2]) if len(part) == 3 else 0.0
        if not (math.isfinite(d) and d >= 0):
            raise DataError(f"merge (part {i}): discarded energy must be finite and ≥ 0")
        cols.append(v * s)
        ds.append(d)
        wdts.append(wdt)
    b = np.hstack(cols)
    if b.shape[1] == 0:
        raise DataError("merge: the bases have no modes")
    wdt = np.result_type(*wdts)
    d_parts = float(sum(ds))
    chooser = Chooser(rule, d_parts)
    data = _Data(b, wdt=np.float64, center=False, rows=max(1, (4 << 20) // (8 * b.shape[1])))
    warnings: list[str] = []
    nb, m = b.shape
    dec = None
    if nb >= TALL_RATIO * m:
        dec = _snapshots_path(
            data,
            ip,
            chooser,
            oversample=10,
            reortho_tol=1e3 * _eps(np.float64),
            strict=True,
            warnings=warnings,
        )
        how = "method of snapshots on [V₁Σ₁, …]"
    if dec is None:
        dec = _svd_path(data, ip, chooser, warnings)
        how = "thin SVD of [V₁Σ₁, …]"
    r = min(nb, m)
    spec = chooser.spectrum(dec.s_all, dec.total, r, True)
    nk = min(_rank_of(spec, rule, warnings), dec.v.shape[1])
    s = dec.s_all[:nk]
    d_root = max(dec.total - float(np.sum(s**2)), 0.0)
    total = dec.total + d_parts
    v = np.ascontiguousarray(dec.v[:, :nk], dtype=np.float64)
    _flip(v)
    bound = d_parts + d_root
    metrics = {
        "singular_values": [float(x) for x in dec.s_all],
        "norm_fro": math.sqrt(total),
        "discarded_energy": bound,
        "error_bound": {
            "absolute": math.sqrt(bound),
            "relative": math.sqrt(bound / total) if total else 0.0,
            "parts_discarded_energy": ds,
            "merge_discarded_energy": d_root,
            "kind": "HAPOD: ‖(I − VVᵀM)X‖²_M ≤ Σ D_i + d (Himpe, Leibner & Rave 2018)",
        },
        "orthogonality_loss": orthogonality_loss(v, ip),
    }
    rank = {
        "value": int(nk),
        "rule": rule.kind,
        "threshold": rule.value,
        "max_rank": int(r),
        "clamped": False,
        "by_rule": ranks_by_rule(spec, rule),
    }
    details = {
        "parts": len(parts),
        "modes_in": [int(c.shape[1]) for c in cols],
        "path": how,
        "inner_product": ip.describe(),
    }
    arrays = {"basis": v.astype(wdt), "singular_values": s.astype(wdt)}
    return Result(
        arrays=arrays,
        method="hapod",
        method_reason="POD of the stacked V_iΣ_i",
        metrics=metrics,
        details=details,
        warnings=tuple(warnings),
        rank=rank,
    )


# --- projection checks -----------------------------------------------------------------------


def project(
    basis, snapshots, *, mass=None, weights=None, medoids=None, dissimilarity: str = "sine"
) -> Result:
    """Relative projection errors ``‖x_j − VVᵀMx_j‖_M / ‖x_j‖_M`` of ``snapshots`` (n × m).

    ``basis`` is one basis, or a sequence/dict of local bases; these need ``medoids`` (n × K,
    the :func:`rankwise.core.local.local_pod` output): each snapshot is assigned to its nearest
    medoid (``dissimilarity`` ``sine`` or ``euclidean``, in the M inner product) and measured
    against that cluster's basis; the cluster whose basis projects it best is reported too.
    Arrays: ``projection_errors`` (m), plus ``assigned`` and ``best_cluster`` for local bases.
    """
    x = np.asarray(snapshots)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or 0 in x.shape:
        raise DataError(f"project needs a non-empty 2-D snapshot matrix; got shape {x.shape}")
    working_dtype(x.dtype, method="project")
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise DataError("project: the snapshots hold NaN or Inf")
    n, m = x.shape
    ip = inner_product(n, mass=mass, weights=weights)
    local = isinstance(basis, dict) or (isinstance(basis, list | tuple))
    if not local:
        v = np.asarray(basis)
        if v.ndim != 2 or v.shape[0] != n:
            raise DataError(f"project: a basis of shape {v.shape} for snapshots of {n} dofs")
        err = _relative_errors(v, x, ip)
        worst = int(np.argmax(err))
        metrics = {
            "mean": float(err.mean()),
            "worst": float(err[worst]),
            "worst_snapshot": worst,
            "orthogonality_loss": orthogonality_loss(np.asarray(v, np.float64), ip),
        }
        return Result(
            arrays={"projection_errors": err},
            method="project",
            method_reason="explicit residual in float64",
            metrics=metrics,
            details={"inner_product": ip.describe(), "modes": int(v.shape[1])},
        )
    keys = sorted(basis) if isinstance(basis, dict) else list(range(len(basis)))
    bases = [np.asarray(basis[k]) for k in keys]
    for k, v in zip(keys, bases, strict=True):
        if v.ndim != 2 or v.shape[0] != n:
            raise DataError(f"project: basis {k} has shape {v.shape}; snapshots have {n} dofs")
    errs = np.stack([_relative_errors(v, x, ip) for v in bases])  # K × m
    best = np.argmin(errs, axis=0)
    if medoids is None:
        assigned = best
        how = "no medoids: each snapshot measured against its best basis"
    else:
        med = np.asarray(medoids, dtype=np.float64)
        if med.ndim != 2 or med.shape != (n, len(bases)):
            raise DataError(f"project: medoids of shape {med.shape}; expected ({n}, {len(bases)})")
        d = dissimilarities(x, ip, kind=dissimilarity, other=med)
        assigned = np.argmin(d, axis=1)
        how = f"nearest medoid ({dissimilarity} dissimilarity)"
    err = errs[assigned, np.arange(m)]
    best_err = errs[best, np.arange(m)]
    worst = int(np.argmax(err))
    metrics = {
        "mean": float(err.mean()),
        "worst": float(err[worst]),
        "worst_snapshot": worst,
        "best_cluster": {"mean": float(best_err.mean()), "worst": float(best_err.max())},
        "assignment_is_best": float(np.mean(assigned == best)),
        "per_cluster": [
            {
                "cluster": int(k),
                "snapshots": int(np.sum(assigned == i)),
                "mean": float(err[assigned == i].mean()) if np.any(assigned == i) else None,
            }
            for i, k in enumerate(keys)
        ],
    }
    arrays = {
        "projection_errors": err,
        "assigned": np.asarray(keys)[assigned].astype(np.int64),
        "best_cluster": np.asarray(keys)[best].astype(np.int64),
    }
    return Result(
        arrays=arrays,
        method="project-local",
        method_reason=how,
        metrics=metrics,
        details={"inner_product": ip.describe(), "clusters": len(bases)},
    )


def dissimilarities(x: np.ndarray, ip: InnerProduct, *, kind: str = "sine", other=None):
    """Pairwise dissimilarities between the columns of x (and of ``other`` when given).

    ``sine``: ``√(1 − cos²θ)`` with ``cos θ = ⟨x, y⟩_M / (‖x‖_M‖y‖_M)`` (scale-invariant; a
    zero snapshot is at distance 1 from everything but itself); ``euclidean``: ``‖x − y‖_M``.
    Both from Gram entries: distances below ~√eps of the norms are rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    y = x if other is None else np.asarray(other, dtype=np.float64)
    g = ip.gram(x, y)
    nx = np.sqrt(np.maximum(ip.sq_norms(x), 0.0))
    ny = nx if other is None else np.sqrt(np.maximum(ip.sq_norms(y), 0.0))
    if kind == "sine":
        with np.errstate(invalid="ignore", divide="ignore"):
            c = g / np.outer(nx, ny)
        c = np.where(np.outer(nx > 0, ny > 0), c, 0.0)
        d = np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0))
    elif kind == "euclidean":
        d = np.sqrt(np.maximum(nx[:, None] ** 2 + ny[None, :] ** 2 - 2.0 * g, 0.0))
    else:
        raise ParameterError(f"unknown dissimilarity {kind!r}; choose sine or euclidean")
    if other is None:
        np.fill_diagonal(d, 0.0)
    return d
