"""Truncated SVD by thick-restarted block Lanczos on the Gram operator (``--method lanczos``).

The solver finds the ``k`` largest eigenpairs of ``G = AᵀA`` (``AAᵀ`` when the matrix is wide)
so that its basis lives on the short side only: on a sparse 200000×50000 matrix with 25
non-zeros per row, work on a dense basis costs as much as the sparse products, and a basis of
``min(m, n)`` rows is five times cheaper than one on both sides (Golub–Kahan).

* Products are block products, CSR × dense block (scipy's kernel, called on row ranges of the
  matrix without copying them): the indices are read once per block, not once per vector
  (6.9 ms per Gram vector at block size 4 against 13.7 ms for ARPACK's single-vector products
  on the benchmark matrix). With several threads the rows are cut into ranges of equal
  non-zero counts and every range computes its part of ``Aᵀ(A X)`` in a pool thread (the
  kernels release the GIL); the partial sums are added in range order, so the bytes do not
  depend on scheduling. BLAS runs single-threaded meanwhile: the tall dense products
  (Gram–Schmidt, restarts) are split over the same row ranges instead.
* Block Lanczos with full reorthogonalisation (classical Gram–Schmidt against the whole basis,
  a second pass when cancellation could make the first one lose orthogonality) builds
  ``G V = V H + V₊ R``; Rayleigh–Ritz is the eigen-decomposition of the small symmetric
  ``H``, after every block. A full basis is restarted thickly (Wu & Simon 2000, in block form):
  the best Ritz vectors and the pending block are kept and ``H`` becomes an arrow matrix, so no
  product is repeated. Rank-deficient blocks (invariant subspaces, exact low rank) continue
  with random directions.
* Stopping rule: the residual of a Ritz pair ``(θ, y = V x)`` is ``‖R x_last‖`` (free). A Ritz
  value with residual ``r`` and gap ``δ`` to the rest of the spectrum is within
  ``min(r, r²/δ)`` of an eigenvalue (Kato–Temple), its vector within an angle of sine ``r/δ``
  (Davis–Kahan); clusters use their joint residual and their gap to the rest, and the gap is
  taken to the other Ritz values less their own residuals. The wanted values have converged
  when every value bound is ≤ ``tol·θ`` and every angle bound ≤ ``vtol`` (or the residual is
  at the rounding floor ``64·eps·‖G‖``).
* A Krylov space started from ``b`` vectors holds at most ``b`` copies of a repeated
  eigenvalue. When ``b`` Ritz values agree (to ``1000·tol``) a random block is added for two
  more expansions before the stop is accepted, so that further copies show up.
* The result is finished two-sided: ``Q = orth(A W)`` over the leading Ritz vectors ``W``
  and ``B = QᵀA`` (one more product), so σ are singular values of ``B`` (not square roots of
  the Ritz values) and ``‖A − (QB)_k‖_F² = ‖A‖_F² − Σ_{i≤k} σ_i²`` holds exactly.

Accuracy (float64): ``tol = 1e-10`` bounds the relative error of σ_i² by 1e-10, so σ_i is
within ~5e-11 relative of the truth — a factor 200 below the 1e-8 promised against ARPACK
(``tol=0``), which leaves room for gaps the Ritz values misjudge; the benchmark measured
7e-13 against ARPACK, and a Frobenius error equal to ARPACK's within 2e-15 (it depends on σ²
only, to first order). ``vtol = 1e-4`` bounds the singular vectors' angles (the final
two-sided step improves them by σ_{ℓ+1}/σ_i where the spectrum has a gap). Like ARPACK on
``AᵀA``, singular values far below σ₁ are resolved to about eps·σ₁²/σ_i before the final step.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import BudgetError
from .errors import human_bytes as _human
from .linalg import eps, orth, qr_tall
from .operator import CenteredOperator, DenseOperator, SparseOperator, dense_matmat, dense_rmatmat
from .randomized import Factorisation, gaussian

# Relative accuracy of the Ritz values (of σ², so σ is twice as accurate) at which the solver
# stops: 1e-10 in float64 leaves a factor ~200 to the 1e-8 promised against ARPACK for the
# gap misestimates of the bound; in float32 the rounding floor (~eps·σ₁²) comes first.
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
# Bound on the sine of the angle between each Ritz vector (or cluster subspace) and the
# eigenvector(s) it approximates, residual/gap (Davis–Kahan). 1e-4 costs 136 products on the
# benchmark, 1e-6 160 and 1e-8 180: ARPACK-level vectors cost a third more time, and the
# singular values and the Frobenius error (the accuracy promised) do not need them.
VTOL = {np.dtype(np.float64): 1e-4, np.dtype(np.float32): 1e-2}
# Second Gram–Schmidt pass when the block left after the first is this small relative to the
# block before it (one pass loses about eps/ratio ≈ 2e-13 of orthogonality above it).
REORTH_RATIO = 1e-3
# A residual below this many eps·‖G‖ is at the rounding floor: it cannot shrink further.
FLOOR_FACTOR = 64.0
# Block size, basis size and restart size relative to the wanted rank k (tuned on the
# benchmark matrix and on planted spectra; see sizes()).
MIN_BLOCK = 2
MAX_BLOCK = 16
BLOCKS_PER_CYCLE = 9
# Expansions after the validation block joins before a stop is accepted (Ω, then GΩ), and
# how close to the stopping test (bound over target) it joins: about two expansions before
# the stop, so that the pending block's products in these expansions are not wasted.
VALIDATION_EXPANSIONS = 2
VALIDATE_AT = 10.0
# Ritz values closer than this many tol (relative) count as copies of one eigenvalue: copies
# converge to within tol of it; distinct eigenvalues that close behave alike in Krylov spaces.
CLUSTER_FACTOR = 1e3
# Give up (the caller falls back to ARPACK) after this many block products per wanted vector.
MAX_PRODUCTS_PER_VECTOR = 400
# Ritz vectors beyond k carried into the final factorisation (σ_{k+1} estimates for the report).
FINAL_EXTRA = 2
# Row ranges per thread of the products. More ranges than threads would balance the load when
# another process takes a core (the pool hands ranges to free threads), at the cost of one
# short-side partial sum per range; on the benchmark 2 per thread was no faster than 1.
# Partial sums are added in range order (deterministic).
CHUNKS_PER_THREAD = 1
# Below this many non-zeros (entries when dense) one thread does the products: waking threads
# costs more than it saves.
THREAD_MIN_NNZ = 200_000

try:  # the kernels behind scipy's CSR × dense product, on row ranges without copying them
    from scipy.sparse import _sparsetools as _st

    _csr_matvecs = _st.csr_matvecs
    _csc_matvecs = _st.csc_matvecs
except (ImportError, AttributeError):  # pragma: no cover - very old or very new scipy
    _csr_matvecs = _csc_matvecs = None


def default_tol(dtype) -> float:
    return TOL.get(np.dtype(dtype), 1e-5)


def default_vtol(dtype) -> float:
    return VTOL.get(np.dtype(dtype), 1e-4)


def default_threads() -> int:
    """The BLAS thread limit in force (the CLI's ``--threads``), else the usable CPUs."""
    try:
        from threadpoolctl import threadpool_info

        counts = [int(i.get("num_threads") or 1) for i in threadpool_info()
                  if i.get("user_api") == "blas"]  # fmt: skip
        if counts:
            return max(1, max(counts))
    except Exception:  # noqa: BLE001 - threadpoolctl is an optimisation here
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Sizes:
    block: int  # columns per block product
    basis: int  # Rayleigh–Ritz basis size before a restart
    keep: int  # Ritz vectors kept at a restart

    def as_dict(self) -> dict:
        return {"block": self.block, "basis": self.basis, "keep": self.keep}


def sizes(k: int, size: int, blocks_per_cycle: int = BLOCKS_PER_CYCLE) -> Sizes:
    """Block, basis and restart sizes for ``k`` wanted eigenpairs of a ``size``² operator.

    Small blocks converge in the fewest products (block Krylov theory; b = 4 for k = 20 took
    136 products against 250 for b = 10 on the benchmark) but scipy's block kernel costs more
    per vector below b ≈ 8 (11 ms per Gram vector at b = 2, 6.9 at b = 4, 4.3 at b = 12
    against 13.7 for a single vector): b = k/5 balances the two. Between restarts the basis
    grows by ``blocks_per_cycle`` blocks; the restart keeps k + max(b, k/3) Ritz vectors."""
    b = int(min(MAX_BLOCK, max(MIN_BLOCK, math.ceil(k / 5))))
    keep = k + max(b, math.ceil(k / 3))
    basis = keep + blocks_per_cycle * b
    if basis >= size:  # the basis can span the whole space: no restart is needed
        basis, b, keep = size, min(b, size), min(keep, size)
    return Sizes(b, basis, keep)


def fit_budget(m: int, n: int, k: int, itemsize: int, threads: int, max_memory: int | None,
               base_bytes: int = 0) -> tuple[Sizes, int, str]:  # fmt: skip
    """Sizes and threads that fit ``max_memory`` (with ``base_bytes`` already in use): the
    default ones, else fewer blocks between restarts (down to two: more restarts, more
    products), else one thread (no per-thread partial products). Raises BudgetError, before
    anything is allocated, when even that does not fit. Returns (sizes, threads, what was
    limited or "")."""
    size = min(m, n)
    tries = [(BLOCKS_PER_CYCLE, threads)]
    tries += [(c, threads) for c in range(BLOCKS_PER_CYCLE - 1, 1, -1)]
    if threads > 1:
        tries.append((2, 1))
    for cycle, th in tries:
        sz = sizes(k, size, cycle)
        need = base_bytes + working_bytes(m, n, k, itemsize, th, sz)
        if max_memory is None or need <= max_memory:
            what = "" if (cycle, th) == tries[0] else (
                f"memory budget: basis of {sz.basis} vectors, {th} thread(s)")  # fmt: skip
            return sz, th, what
    sz = sizes(k, size)
    need = base_bytes + working_bytes(m, n, k, itemsize, threads, sz)
    least = base_bytes + working_bytes(m, n, k, itemsize, 1, sizes(k, size, 2))
    raise BudgetError(
        f"block Lanczos for rank {k} needs about {_human(need)} (a basis of {sz.basis} vectors "
        f"of length {size}; at least {_human(least)} with a smaller basis) but the memory "
        f"budget is {_human(max_memory)}"
    )


def working_bytes(m: int, n: int, k: int, itemsize: int, threads: int = 1,
                  sz: Sizes | None = None) -> int:  # fmt: skip
    """Peak bytes of the solver besides the matrix (measured within 10% by tracemalloc on
    the benchmark and on a square sparse matrix).

    While iterating: the basis with the pending and a validation block, a restart copy of the
    kept vectors, and a block product (the long side's block, one short-side partial per row
    range). At the end: the Ritz vectors and their copy W, A·W and its CholeskyQR copy, then
    Q with the per-range partials of AᵀQ; then the caller's U = Q·Ũ and its copies (the
    rank-k slice, the sign rule's temporaries)."""
    size, other = min(m, n), max(m, n)
    sz = sz or sizes(k, size)
    b = sz.block
    ell = k + FINAL_EXTRA
    parts = CHUNKS_PER_THREAD * threads if threads > 1 else 1
    solve = (sz.basis + 2 * b + sz.keep) * size + other * b + (parts + 2) * size * b
    ritz = (sz.keep + ell) * size
    finish = max(ritz + 2 * ell * other, ritz + ell * other + (parts + 1) * size * ell,
                 4 * ell * other)  # fmt: skip
    small = 4 * (sz.basis + b) ** 2 * 8
    return max(solve, finish) * itemsize + small


class GramProducts:
    """``G X`` on the short side (``AᵀA X`` when m ≥ n, ``AAᵀ X`` otherwise) and the products
    to and from the long side at the end.

    In-memory sparse (CSR) and dense matrices, centred or not, are multiplied by row ranges in
    the thread pool: ``A X`` range by range, ``Aᵀ Y`` as partial sums over the ranges added in
    range order, and ``Aᵀ(A X)`` fused per range (no m×b array). The ranges hold equal numbers
    of non-zeros (rows for dense), ``CHUNKS_PER_THREAD`` per thread. Other operators use
    their own products, with the caller's BLAS threads."""

    def __init__(self, op, threads: int = 1, pool=None):
        self.op = op
        m, n = op.shape
        self.transposed = m < n
        self.size = min(m, n)
        self.dtype = np.dtype(op.dtype)
        self.threads = max(1, int(threads))
        centered = isinstance(op, CenteredOperator)
        base = op.base if centered else op
        self.mean = np.asarray(op.mean, dtype=self.dtype) if centered else None
        self.csr = base.a if isinstance(base, SparseOperator) else None
        self.dense = base.a if isinstance(base, DenseOperator) else None
        if self.dense is not None and self.dense.dtype != self.dtype:
            self.dense = None  # mixed dtypes: the operator's own products
        self.products = 0  # columns multiplied by A (and as many by Aᵀ)
        self.passes = 0  # reads of the matrix (a block product by A or Aᵀ is one)
        self.pool = pool
        self.ranges = [(0, m)]
        size = 0
        if self.csr is not None:
            a = self.csr
            if not a.has_sorted_indices:
                a.sort_indices()
            self.indptr, self.indices, self.data = a.indptr, a.indices, a.data
            size = a.nnz
            self.kernel = "sparsetools" if _csr_matvecs is not None else "scipy slices"
        elif self.dense is not None:
            size = self.dense.size
            self.kernel = "BLAS on row ranges"
        else:
            self.kernel = f"{type(base).__name__} products"
        if pool is not None and size >= THREAD_MIN_NNZ and m >= 2 * self.threads:
            parts = CHUNKS_PER_THREAD * self.threads
            if self.csr is not None:
                cuts = np.searchsorted(self.indptr, np.linspace(0, size, parts + 1)).tolist()
            else:
                cuts = np.linspace(0, m, parts + 1).astype(int).tolist()
            cuts[0], cuts[-1] = 0, m
            self.ranges = [(s, e) for s, e in zip(cuts[:-1], cuts[1:], strict=True) if e > s]

    @property
    def split(self) -> bool:
        return (self.csr is not None or self.dense is not None) and len(self.ranges) > 1

    @property
    def threads_used(self) -> int:
        return self.threads if self.split else 1

    # --- row-range kernels: out += A[s:e] x ; out += A[s:e]ᵀ y ---

    def _rows_mm(self, s, e, x, out):
        if self.dense is not None:
            out += dense_matmat(self.dense[s:e], x)
        elif _csr_matvecs is not None:
            _csr_matvecs(e - s, self.csr.shape[1], x.shape[1], self.indptr[s : e + 1],
                         self.indices, self.data, x.reshape(-1), out.reshape(-1))  # fmt: skip
        else:  # pragma: no cover - scipy without the kernels
            out += self.csr[s:e] @ x

    def _rows_rmm(self, s, e, y, out):
        if self.dense is not None:
            out += dense_rmatmat(self.dense[s:e], y)
        elif _csc_matvecs is not None:
            _csc_matvecs(self.csr.shape[1], e - s, y.shape[1], self.indptr[s : e + 1],
                         self.indices, self.data, y.reshape(-1), out.reshape(-1))  # fmt: skip
        else:  # pragma: no cover
            out += self.csr[s:e].T @ y

    def _map(self, fn):
        if self.pool is None or len(self.ranges) == 1:
            return [fn(s, e) for s, e in self.ranges]
        return list(self.pool.map(lambda se: fn(*se), self.ranges))

    def _mm(self, x):  # A x, x C-ordered n×b
        out = np.zeros((self.op.shape[0], x.shape[1]), dtype=self.dtype)
        self._map(lambda s, e: self._rows_mm(s, e, x, out[s:e]))
        if self.mean is not None:
            out -= self.mean @ x
        return out

    def _rmm(self, y):  # Aᵀ y, y C-ordered m×b
        def part(s, e):
            z = np.zeros((self.op.shape[1], y.shape[1]), dtype=self.dtype)
            self._rows_rmm(s, e, y[s:e], z)
            return z

        z = _ordered_sum(self._map(part))
        if self.mean is not None:
            z -= np.outer(self.mean, y.sum(axis=0))
        return z

    def _gram(self, x):  # Aᵀ(A x) fused per row range: no m×b array
        n = self.op.shape[1]
        shift = None if self.mean is None else self.mean @ x

        def part(s, e):
            y = np.zeros((e - s, x.shape[1]), dtype=self.dtype)
            self._rows_mm(s, e, x, y)
            if shift is not None:
                y -= shift
            z = np.zeros((n, x.shape[1]), dtype=self.dtype)
            self._rows_rmm(s, e, y, z)
            return z, (y.sum(axis=0) if shift is not None else None)

        parts = self._map(part)
        z = _ordered_sum([p[0] for p in parts])
        if shift is not None:
            z -= np.outer(self.mean, _ordered_sum([p[1] for p in parts]))
        return z

    def _own(self, fn, arg):
        """The operator's own product, with the BLAS threads of the caller."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads, user_api="blas"):
            return np.ascontiguousarray(fn(arg), dtype=self.dtype)

    # --- public products ---

    def matmat(self, x):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if self.csr is not None or self.dense is not None:
            return self._mm(x)
        return self._own(self.op.matmat, x)

    def rmatmat(self, y):
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if self.csr is not None or self.dense is not None:
            return self._rmm(y)
        return self._own(self.op.rmatmat, y)

    def gram(self, x):
        """``G x`` for a short-side block ``x``."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        self.products += x.shape[1]
        self.passes += 2
        if self.transposed:
            return self.matmat(self.rmatmat(x))
        if self.csr is not None or self.dense is not None:
            return self._gram(x)
        return self.rmatmat(self.matmat(x))

    def to_long_side(self, w):
        """``A w`` (m ≥ n) or ``Aᵀ w`` (m < n) for short-side vectors ``w``."""
        self.products += w.shape[1]
        self.passes += 1
        return self.rmatmat(w) if self.transposed else self.matmat(w)

    def from_long_side(self, y):
        """``Aᵀ y`` (m ≥ n) or ``A y`` (m < n) for long-side vectors ``y``."""
        self.products += y.shape[1]
        self.passes += 1
        return self.matmat(y) if self.transposed else self.rmatmat(y)


class RowSplit:
    """Dense products on tall blocks split over row ranges in the thread pool: ``aᵀb`` as an
    ordered sum of the ranges' parts, ``z -= a c`` and ``a c`` range by range. BLAS runs
    single-threaded inside (idle threads spinning in BLAS slow a shared machine down)."""

    MIN_ROWS = 4096  # per range; below that one thread is faster

    def __init__(self, rows: int, threads: int, pool):
        parts = max(1, min(threads, rows // self.MIN_ROWS)) if pool is not None else 1
        cuts = np.linspace(0, rows, parts + 1).astype(int).tolist()
        self.ranges = list(zip(cuts[:-1], cuts[1:], strict=True))
        self.pool = pool if parts > 1 else None

    def _map(self, fn):
        if self.pool is None:
            return [fn(s, e) for s, e in self.ranges]
        return list(self.pool.map(lambda se: fn(*se), self.ranges))

    def tdot(self, a, b):
        """aᵀ b (float64 when the inputs are)."""
        if self.pool is None:
            return a.T @ b
        return _ordered_sum(self._map(lambda s, e: a[s:e].T @ b[s:e]))

    def sub(self, z, a, c):
        """z -= a c, in place."""
        c = np.asarray(c, dtype=z.dtype)

        def part(s, e):
            z[s:e] -= a[s:e] @ c

        self._map(part)

    def mm(self, a, c, out):
        """out = a c (out may be a view of a's buffer only when it does not overlap a's
        range being read: callers pass a separate array)."""
        c = np.asarray(c, dtype=out.dtype)

        def part(s, e):
            np.matmul(a[s:e], c, out=out[s:e])

        self._map(part)
        return out


def _orth_rows(y, rows: RowSplit):
    """Orthonormal basis of a tall ``y`` by CholeskyQR2 with its Grams and products split
    over row ranges; Householder (:func:`orth`) when ``y`` is too ill-conditioned for it."""
    import scipy.linalg as sla

    from .linalg import cholqr_max_cond

    if rows.pool is None:
        return orth(y)
    for first in (True, False):
        try:
            r = sla.cholesky(rows.tdot(y, y), lower=False, check_finite=False)
        except np.linalg.LinAlgError:
            return orth(y)
        if first:
            sv = sla.svdvals(r, check_finite=False)
            if (
                not np.isfinite(sv).all()
                or sv[-1] <= 0
                or sv[0] / sv[-1] > cholqr_max_cond(y.dtype)
            ):
                return orth(y)
        rinv = sla.solve_triangular(r, np.eye(r.shape[0], dtype=r.dtype), check_finite=False)
        y = rows.mm(y, rinv, np.empty_like(y))
    return y


def _ordered_sum(parts):
    """Sum in list order (deterministic rounding), into the first part (a fresh array)."""
    out = parts[0]
    for p in parts[1:]:
        out += p
    return out


@dataclass
class EigResult:
    values: np.ndarray  # Ritz values of G, descending (float64)
    vectors: np.ndarray  # size × len(values), orthonormal columns
    residuals: np.ndarray  # ‖G y − θ y‖ per Ritz pair
    bounds: np.ndarray  # error bound of each Ritz value
    angles: np.ndarray  # bound on the sine of each Ritz vector's angle to its eigenvector
    converged: int  # leading Ritz values that met the test
    second_passes: int  # blocks that needed a second Gram–Schmidt pass
    restarts: int
    history: list
    stop_reason: str
    ok: bool


def _next_block(z, basis, gnorm, znorm, rng, width):
    """Orthonormal Q (⟂ ``basis``) and R with ``z = Q R`` up to dropped directions below the
    rounding floor; dropped directions are replaced by random ones (R rows zero), so the
    block keeps its width while the space has room. ``width`` = columns wanted."""
    import scipy.linalg as sla

    dt = z.dtype
    n = z.shape[0]
    room = n - basis.shape[1]
    width = min(width, room)
    if width <= 0:
        return np.empty((n, 0), dtype=dt), np.zeros((0, z.shape[1]))
    q, r, _ = qr_tall(z)
    uu, ss, vvt = sla.svd(np.asarray(r, dtype=np.float64), check_finite=False)
    thresh = FLOOR_FACTOR * eps(dt) * max(gnorm, znorm)
    rank = int(min(np.sum(ss > thresh), width))
    q = q @ uu[:, :rank].astype(dt)
    rmat = ss[:rank, None] * vvt[:rank]
    if rank and ss[rank - 1] < 1e-4 * max(znorm, np.finfo(np.float64).tiny):
        # Heavy cancellation: normalising the small remainder magnified the rounding left
        # along the basis. One more Gram–Schmidt pass restores orthogonality (the directions
        # lost are rounding, below the floor).
        q -= basis @ (basis.T @ q)
        q = orth(q)
    if rank < width:  # invariant subspace found (or rank-deficient G): continue at random
        fresh = gaussian(rng, (n, width - rank), dt)
        full = np.hstack([basis, q])
        for _ in range(2):
            fresh -= full @ (full.T @ fresh)
        fresh = orth(fresh)
        q = np.hstack([q, fresh])
        rmat = np.vstack([rmat, np.zeros((width - rank, z.shape[1]))])
    return np.ascontiguousarray(q), rmat


def _repeated(theta, b: int, rel: float) -> bool:
    """Whether ``b`` or more of the (descending) values agree to ``rel`` relative: a value
    repeated as often as the block is wide may be repeated more often."""
    if b <= 1:
        return len(theta) > 1
    scale = np.maximum(np.abs(theta[:-1]), np.finfo(np.float64).tiny)
    close = (theta[:-1] - theta[1:]) <= rel * scale
    run = 1
    for joined in close:
        run = run + 1 if joined else 1
        if run >= b:
            return True
    return False


def _bounds(theta, res, floor):
    """Error bound of every Ritz value, min(r, r²/gap), and bound on the sine of its vector's
    angle, r/gap, with clusters of Ritz values that their residuals cannot tell apart treated
    together (joint residual, gap to the rest). The gap is to the other Ritz values less their
    residuals (the eigenvalue each approximates lies within its residual); without another
    Ritz value to measure it against there is no gap: the bounds are r and 1."""
    d = np.abs(theta[:, None] - theta[None, :])
    close = d <= res[:, None] + res[None, :] + floor
    rc = np.sqrt(np.where(close, res[None, :] ** 2, 0.0).sum(axis=1))
    gap = np.where(close, np.inf, d - res[None, :]).min(axis=1)
    gap[~np.isfinite(gap)] = 0.0
    pos = gap > 0
    safe = np.where(pos, gap, 1.0)
    out = np.where(pos, np.minimum(rc, rc * rc / safe), rc)
    angle = np.where(pos, np.minimum(1.0, rc / safe), 1.0)
    return out, angle


def top_eigenpairs(gram, size: int, want: int, dtype, rng, *, sz: Sizes, tol: float,
                   vtol: float, max_products: int, callback=None,
                   rows: RowSplit | None = None) -> EigResult:  # fmt: skip
    """The ``want`` largest eigenpairs of the symmetric positive semi-definite ``gram``."""
    import scipy.linalg as sla

    dt = np.dtype(dtype)
    rows = rows or RowSplit(size, 1, None)
    b, big, keep = sz.block, sz.basis, sz.keep
    cols = big + 2 * b  # the basis, the pending block and room for a validation block
    v = np.empty((size, cols), dtype=dt, order="F")
    h = np.zeros((big, big))
    v[:, :b] = orth(gaussian(rng, (size, b), dt))
    c, nb = 0, b  # Rayleigh–Ritz basis v[:, :c]; next block v[:, c:c+nb]
    rnext = np.zeros((0, 0))
    gnorm = 0.0
    products = restarts = reorth = 0
    history: list = []
    best, stalls = math.inf, 0
    stop, ok = "", False
    validating = -1  # expansions left before a validated stop; -1: not validated yet
    while True:
        if nb > 0 and c + nb <= big:  # expand by one block, then Rayleigh–Ritz
            z = gram(v[:, c : c + nb])
            products += nb
            znorm = float(np.sqrt(np.max(np.einsum("ij,ij->j", z, z, dtype=np.float64))))
            gnorm = max(gnorm, znorm)
            basis = v[:, : c + nb]
            coef = np.asarray(rows.tdot(basis, z), np.float64)
            rows.sub(z, basis, coef)
            # One classical Gram–Schmidt pass leaves z orthogonal to the basis up to about
            # eps·‖z before‖; relative to what is left that is eps·κ. A second pass ("twice is
            # enough") only when κ could make that loss visible in the Ritz values.
            left = rows.tdot(z, z)
            smin = math.sqrt(max(float(np.linalg.eigvalsh(left)[0]), 0.0))
            if smin < REORTH_RATIO * znorm:
                coef2 = rows.tdot(basis, z)
                rows.sub(z, basis, coef2)
                coef += coef2
                reorth += 1
            e = c + nb
            h[:e, c:e] = coef
            h[c:e, :c] = coef[:c].T
            h[c:e, c:e] = (coef[c:e] + coef[c:e].T) / 2
            width = min(nb, cols - e)
            q, rnext = _next_block(z, basis, gnorm, znorm, rng, width)
            c, nb = e, q.shape[1]
            v[:, c : c + nb] = q
            validating -= validating > 0
        theta, x = sla.eigh(h[:c, :c], check_finite=False)
        theta, x = theta[::-1], x[:, ::-1]
        if rnext.size:  # G y − θ y = V₊ R x_last for y = V x
            res = np.linalg.norm(rnext @ x[c - rnext.shape[1] :], axis=0)
        else:
            res = np.zeros(c)
        floor = FLOOR_FACTOR * eps(dt) * max(gnorm, float(theta[0]) if c else 0.0)
        bnd, ang = _bounds(theta, res, floor)
        target = np.maximum(tol * np.abs(theta), floor)
        good = (((bnd <= target) & (ang <= vtol)) | (res <= floor))[:want]
        nconv = int(np.argmin(good)) if not good.all() else len(good)
        if c <= want and nb > 0:  # no Ritz value below the wanted ones to measure gaps
            nconv = min(nconv, c - 1)
        # how far the wanted values are from the test: bound over target, angle over vtol
        worst = float(np.max(np.maximum(bnd[:want] / np.maximum(target[:want], 1e-300),
                                        ang[:want] / vtol)))  # fmt: skip
        event = {"step": len(history) + 1, "products": products, "basis_size": int(c),
                 "converged": nconv, "distance_to_test": worst,
                 "max_residual": float(np.max(res[:want])) if want else 0.0}  # fmt: skip
        history.append(event)
        near = nconv >= want or worst <= VALIDATE_AT
        if (near and validating < 0 and nb > 0 and size - c - nb >= b
                and _repeated(theta[: want + 1], b, CLUSTER_FACTOR * tol)):  # fmt: skip
            # Validation: a Krylov space started from b vectors holds at most b copies of a
            # repeated eigenvalue (in exact arithmetic exactly b, so b equal Ritz values are
            # the sign), and a copy beyond them would be missed silently. A fresh random
            # block Ω joins the pending one for two more expansions (Ω, then GΩ enter the
            # basis); a missing copy then shows up as a new, unconverged Ritz value among the
            # wanted ones.
            fresh = gaussian(rng, (size, b), dt)
            full = v[:, : c + nb]
            for _ in range(2):
                fresh -= full @ (full.T @ fresh)
            v[:, c + nb : c + nb + b] = orth(fresh)
            rnext = np.vstack([rnext, np.zeros((b, rnext.shape[1]))])
            nb += b
            validating = VALIDATION_EXPANSIONS
            event["validation"] = "random block added"
            continue
        if nconv >= want and validating <= 0:  # validated, or no room to validate
            stop = (f"{want} Ritz values within tol {tol:g}, vectors within {vtol:g}, after "
                    f"{products} products")  # fmt: skip
            ok = True
            break
        if nb == 0:  # the basis spans the whole space: Rayleigh–Ritz is exact
            stop, ok = "basis spans the whole space", True
            break
        if products >= max_products:
            stop = f"{nconv} of {want} converged after {products} products (limit)"
            break
        if c + nb <= big:  # room for another block before the restart
            continue
        if worst < 0.5 * best:
            best, stalls = worst, 0
        else:
            stalls += 1
            if stalls >= 4 and worst < 1e3:  # stuck just above target: rounding-limited
                stop, ok = f"bounds stagnated at {worst:.3g}× the target (rounding)", True
                break
        if callback is not None and callback(dict(event)):
            stop = "stopped by callback"
            break
        # thick restart: keep the best Ritz vectors and the pending block
        kk = min(keep, c - 1)
        y = rows.mm(v[:, :c], x[:, :kk], np.empty((size, kk), dtype=dt, order="F"))
        v[:, :kk] = y
        del y  # not alive at the next restart
        v[:, kk : kk + nb] = v[:, c : c + nb].copy()
        s = rnext @ x[c - rnext.shape[1] :, :kk]
        h[:] = 0.0
        h[:kk, :kk] = np.diag(theta[:kk])
        h[kk : kk + nb, :kk] = s
        h[:kk, kk : kk + nb] = s.T
        c = kk
        restarts += 1
    out = min(c, max(want, keep))
    vectors = rows.mm(v[:, :c], x[:, :out], np.empty((size, out), dtype=dt, order="F"))
    return EigResult(theta, vectors, res, bnd, ang, nconv, reorth, restarts, history, stop, ok)


def gram_svd(op, k: int, *, rng, tol: float | None = None, vtol: float | None = None,
             threads: int | None = None, total: float | None = None, extra: int = FINAL_EXTRA,
             max_memory: int | None = None, base_bytes: int = 0,
             callback=None) -> tuple[Factorisation, str]:  # fmt: skip
    """Leading ``k`` singular triplets of the operator through its Gram matrix.

    Returns the factorisation ``A ≈ Q B`` with ``Q = orth(A W)`` and ``B = QᵀA`` over the
    ``k + extra`` leading Ritz vectors ``W`` (``A ≈ (A Q) Qᵀ`` with ``Q = orth(AᵀW)`` when
    wide; :func:`rankwise.core.svd._finish` takes the small SVD) and a status: "converged",
    "stopped" (by ``callback``, called at every restart) or "not converged" (the product
    limit; the caller may fall back to ARPACK). ``threads`` (default: the BLAS limit in
    force) row ranges are multiplied in parallel; the same seed and threads give the same
    bytes. Limits the basis, else raises BudgetError, before allocating, when the solver does
    not fit ``max_memory`` next to ``base_bytes``."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    m, n = op.shape
    size = min(m, n)
    dt = np.dtype(op.dtype)
    tol = default_tol(dt) if tol is None else float(tol)
    vtol = default_vtol(dt) if vtol is None else float(vtol)
    threads = default_threads() if threads is None else max(1, int(threads))
    sz, threads, limited = fit_budget(m, n, k, dt.itemsize, threads, max_memory, base_bytes)
    total = op.fro_norm_sq() if total is None else float(total)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        prod = GramProducts(op, threads, pool)
        # BLAS single-threaded throughout: the tall products are split over the pool's
        # threads by rows, the rest is small (BLAS threads spinning on small products slow a
        # shared machine down by up to 10×, measured).
        with threadpool_limits(limits=1, user_api="blas"):
            eig = top_eigenpairs(prod.gram, size, k, dt, rng, sz=sz, tol=tol, vtol=vtol,
                                 max_products=MAX_PRODUCTS_PER_VECTOR * max(k, 8),
                                 callback=callback, rows=RowSplit(size, threads, pool))  # fmt: skip
            stopped = eig.stop_reason == "stopped by callback"
            status = "converged" if eig.ok else ("stopped" if stopped else "not converged")
            ell = min(eig.vectors.shape[1], k + max(0, int(extra)))
            if status == "not converged":  # the caller falls back: no final step
                ell = 0
            w = np.ascontiguousarray(eig.vectors[:, :ell])
            # One two-sided step: Q = orth(A W) spans the left Ritz vectors; B = QᵀA (one
            # more product) carries the singular values without squaring and improves the
            # vectors by σ_{ℓ+1}/σ_i where the spectrum has a gap after ℓ.
            if ell:
                q = _orth_rows(prod.to_long_side(w), RowSplit(max(m, n), threads, pool))
                back = prod.from_long_side(q)
            else:
                q, back = np.zeros((max(m, n), 0), dt), np.zeros((size, 0), dt)
    finally:
        if pool is not None:
            pool.shutdown()
    theta = np.maximum(eig.values[:k], np.finfo(np.float64).tiny)
    details = {
        "solver": "block-lanczos",
        "tol": tol,
        "vtol": vtol,
        "sizes": sz.as_dict(),
        **({"limited_by": limited} if limited else {}),
        "restarts": eig.restarts,
        "second_gram_schmidt_passes": eig.second_passes,
        "products": prod.products,
        "passes": prod.passes,
        "threads": prod.threads_used,
        "kernel": prod.kernel,
        "gram_side": "AAᵀ" if prod.transposed else "AᵀA",
        # the largest residual ‖G y − θ y‖, relative error bound of θ = σ² and angle bound
        "ritz_residual_max": float(np.max(eig.residuals[:k])),
        "ritz_bound_max_rel": float(np.max(eig.bounds[:k] / theta)),
        "ritz_angle_max": float(np.max(eig.angles[:k])),
    }
    if prod.transposed:  # Q spans right vectors: A ≈ (A Q) Qᵀ
        fact = Factorisation(back, np.ascontiguousarray(q.T), total, False, details,
                             eig.history, eig.ok, eig.stop_reason)  # fmt: skip
    else:  # A ≈ Q (QᵀA)
        fact = Factorisation(q, np.ascontiguousarray(back.T), total, True, details,
                             eig.history, eig.ok, eig.stop_reason)  # fmt: skip
    return fact, status


__all__ = ["gram_svd", "top_eigenpairs", "GramProducts", "RowSplit", "sizes", "fit_budget",
           "working_bytes", "default_tol", "default_vtol", "default_threads"]  # fmt: skip
