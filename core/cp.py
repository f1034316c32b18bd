"""CP (CANDECOMP/PARAFAC) decomposition of a dense tensor of order N ≥ 3.

``X ≈ [[λ; A_0, …, A_{N-1}]] = Σ_r λ_r a_0r ∘ a_1r ∘ … ∘ a_{N-1,r}`` with ``weights`` λ (R,) and
``factors/n`` = A_n (I_n × R), TensorLy's layout.

Objective (what ``metrics["objective"]`` and the history report): ``½‖X − [[λ; A]]‖²_F``.
Convergence is on its relative decrease per sweep (``tol``) through the shared
:func:`rankwise.core.loop.run_loop`; one sweep updates every mode once, in the order 0 … N−1.

Solvers
-------
* ``cp-als`` (default): alternating least squares. Mode n's update solves the normal equations
  ``A_n V_n = M_n`` with ``V_n = ⊛_{k≠n} A_kᵀA_k`` (Hadamard product of the factor Grams, R×R,
  float64) by Cholesky (``scipy.linalg.cho_factor``); when the factorisation fails or LAPACK's
  condition estimate (``pocon``) is below ``100·R·eps``, by the pseudo-inverse of ``V_n`` from
  its eigendecomposition (eigenvalues below ``R·eps·λ_max`` dropped: the minimum-norm
  least-squares solution). ``details["solves"]`` counts each path.
* ``cp-hals`` (``nonneg=True``): nonnegative CP by HALS. Each column of ``A_n`` becomes the exact
  minimiser with the others fixed, ``max(0, (M_n[:, j] − Σ_{i≠j} a_i V_n[i, j]) / V_n[j, j])``,
  from the same MTTKRP and Hadamard Gram; a mode repeats these cheap column passes while they
  stay cheap next to its share of the MTTKRP and still move the factor (Gillis & Glineur's
  rule, as in :mod:`rankwise.core.nmf`). Entries are clipped at exact zero; a column that
  becomes entirely zero is set to a tiny floor (``eps·‖X‖/√(R·I_n)``) so that it can come back
  (HALS's "zero-locking"). Negative input is a data error.

MTTKRP by a two-level dimension tree
------------------------------------
The modes are split once into a left group ``0 … p−1`` and a right group ``p … N−1`` (the split
with the smallest larger side). With ``X`` C-ordered, ``X₂ = X.reshape(∏left, ∏right)`` is a view.
Each sweep makes two GEMMs over the whole tensor, both on that view (nothing is copied):

1. ``T_L = X₂ · KR(A_p … A_{N-1})`` (∏left × R): the right-group factors contracted at once;
   the MTTKRP of every left mode follows from ``T_L`` by contracting the other left modes
   (batched matrix–vector products over R, ``∏left·R`` flops each);
2. after the left modes are updated, ``T_R = X₂ᵀ · KR(A_0 … A_{p−1})`` likewise for the right
   modes.

The partial Khatri–Rao products involve only one group (``∏group × R``, about ``R·√∏I`` for a
balanced split — 400 kB for 200³ at R = 10); the full Khatri–Rao product of the other N−1 modes
is never formed and no unfolding is copied. A sweep costs ``4·R·∏I`` flops in the GEMMs,
against ``2·R·∏I`` per mode (``2N·R·∏I`` per sweep) for a mode-by-mode MTTKRP.

Line search (``linesearch=True``)
---------------------------------
Bro's extrapolation as in Acar et al.'s and TensorLy's CP-ALS: from sweep 3 on, after the
sweep the point ``P + s·(A − P)`` (``P`` the factors before the sweep, ``A`` after it; the scale
carried by the last mode; for ``nonneg`` clipped at 0) is tried with ``s = k^(1/3)`` at sweep k,
and kept only if its objective is lower than the sweep's. After 4 consecutive rejections the
root grows by one (``k^(1/4)``, …: shorter steps). The accepted objective therefore never
increases. Trying a step costs one GEMM (``T_L`` at the extrapolated point), which the next
sweep reuses when the step is accepted.

Fit and error
-------------
The objective is tracked from inner products every sweep, ``½(‖X‖² − 2⟨X, [[λ; A]]⟩ +
‖[[λ; A]]‖²)``, with ``⟨X, [[λ; A]]⟩`` from the last mode's MTTKRP and ``‖[[λ; A]]‖² =
λᵀ(⊛_n A_nᵀA_n)λ``: no reconstruction. Its rounding is about ``(R+N)·eps·‖X‖²``; when the fit falls
within 100 times that of zero the sweep computes the residual explicitly instead, and a
residual at the rounding floor (relative error ≤ ``10·(R+N)·eps``) is reported as objective 0,
which ends the loop ("fit at the rounding floor"). The returned factors are certified at the
end by the explicit residual (blocks of rows of ``X₂`` against ``(KR(left)·λ)·KR(right)ᵀ``,
float64 sums), with a rounding bound, and by a first-order check: the largest entry of the
gradient of each factor (for ``nonneg`` the projected gradient, entries ≤ 1e-8 of their
column's largest counting as at the bound 0), relative to the largest entry of its MTTKRP.

Initialisation
--------------
* ``hosvd`` (``auto``): the leading R eigenvectors U_n of each mode Gram ``X_(n)X_(n)ᵀ``
  (float64 ``eigh``), formed by BLAS rank-k updates on views of the tensor (mode 0 and N−1:
  one syrk on the C-ordered reshape; a middle mode: one per slice, or per block of slices
  copied to the unfolding's layout when slices are thin or many). When I_n exceeds the other modes'
  product the Gram of the short side is used and the vectors recovered by one more pass. When
  R > I_n the missing columns are random. The bases are then refined as in Tensorlab's
  ``cpd`` (compression, then an algebraic start): the core ``G = X ×_0 U_0ᵀ ⋯ ×_{N−1} U_{N−1}ᵀ``
  (R^N entries; its first projection is one GEMM on the tensor's view) gets its own CP
  ``[[B_0 … B_{N−1}]]`` — CP-ALS with line search from a GEVD start (the generalized
  eigenvectors of two slice combinations, exact for an exact core) and two random starts,
  each tried for ``CORE_TRIAL_ITER`` sweeps, the best continued to ``CORE_TOL`` — and the
  factors start as ``U_n B_n``. On exact or well-separated data that is already the answer
  (one or two sweeps of the full tensor remain); on collinear factors (a swamp) the core's
  cheap sweeps replace most of the full tensor's (measured: 500+ → 3 sweeps). The refinement
  is skipped (``details["hosvd"]`` says why) when R exceeds a dimension, R^N > 2^18, or
  2R > max(I_0, I_{N−1}); ``nonneg`` uses the absolute values of the bases instead.
* ``random``: standard normal factors (``nonneg``: uniform on [0, 1)).
Both start with the least-squares weights of the initial factors (``nonneg``: a common weight
when those have a negative entry).
Restarts (``n_init > 1``): the first uses ``init``, the others ``random``; the restart with the
lowest final objective is kept (the first on ties) and ``metrics["factor_match"]`` compares the
two best (:func:`factor_match`).

Conventions
-----------
* Every factor column has unit ℓ2 norm and the scale is in ``weights`` (≥ 0), sorted descending
  (stable). Sign: for each component, pairs of columns are flipped so that in every mode but
  the last the entry of largest magnitude (the first on ties) is positive; the last mode
  absorbs the sign. A component whose weight is below rounding (``≤ eps·‖X‖``) is returned
  with weight 0 and zero columns, last.
* Data so extreme that its squares would overflow (or vanish in) the Gram products (float64
  beyond 2^±400, float32 beyond 2^±40) is scaled by an exact power of two; weights are scaled
  back, objectives stay those of the scaled data (a warning says by how much).
* The rank is clamped (with a warning) to ``∏I / max I_n``, the largest rank any tensor of the
  shape can have; it may exceed every I_n.
* One ``numpy.random.Generator`` reaches every random step: the same seed gives the same bytes.
* float32 input is computed (the tensor products) and returned in float32, integers and
  booleans in float64; the small R×R algebra and the factors run in float64 throughout.
* Memory: the input (C-ordered in its working dtype: anything else is converted once), plus
  ``O(R·(∏left + ∏right) + R·ΣI_n)`` for the tree and factors, the mode Grams and the first
  core projection (≤ half the input) of the initialisation, and blocks of
  ``RESIDUAL_BLOCK_BYTES``; no full-size temporary.
* BLAS threads: the solve runs single-threaded except for the tensor-sized products (MTTKRP
  GEMMs, mode Grams, core projection, residual blocks), which use the threads configured when
  ``cp`` is called (all single-threaded when those products are small).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .checkpoint import Checkpointable
from .errors import BudgetError, DataError, ParameterError
from .errors import human_bytes as _human
from .linalg import eps as _eps
from .loop import restart_rows, run_loop, run_restarts
from .loop import stop_reason as loop_stop_reason
from .result import Result
from .validate import count_nonfinite, is_sparse, power_of_two_scale, working_dtype

INITS = ("auto", "hosvd", "random")

# Line search (Bro 1998; Acar et al.): first tried after this many sweeps, step k^(1/root) at
# sweep k, root grown by one after this many consecutive rejections.
LS_START = 3
LS_ROOT = 3.0
LS_MAX_FAIL = 4
# Cholesky of V_n is used while LAPACK's reciprocal condition estimate is ≥ this many R·eps;
# below it (or when Cholesky fails) the pseudo-inverse, dropping eigenvalues < R·eps·λ_max.
RCOND_FACTOR = 100.0
# HALS column passes per mode (Gillis & Glineur 2012, as in nmf.py): at most 1 + α·ρ with
# ρ = 1 + (the mode's share of the MTTKRP flops)/(flops of one pass), stopping once a pass
# changes the factor by less than δ times the first pass did.
INNER_ALPHA = 0.5
INNER_DELTA = 0.1
MAX_INNER = 20
CALL_FLOPS = 10_000
# The inner-product identity for ‖X − [[λ; A]]‖² loses its digits once the fit is within this
# many rounding units (R+N)·eps·‖X‖² of zero; then the residual is computed explicitly.
_IDENTITY_MARGIN = 100.0
# A residual below this many rounding units (R+N)·eps·‖X‖ is noise: the fit cannot improve.
_FLOOR_MARGIN = 10.0
# Blocks of the explicit residual and of the copied slices of a thin middle-mode unfolding.
RESIDUAL_BLOCK_BYTES = 8 << 20
GRAM_BLOCK_BYTES = 8 << 20
# A middle-mode Gram runs one syrk per slice X[i] (I_n × b) while b is at least SLICE_MIN_COLS
# and there are at most SLICE_MAX_CALLS slices; otherwise slices are gathered into blocks
# first (one copy of each block), which keeps the calls few and wide.
SLICE_MIN_COLS = 128
SLICE_MAX_CALLS = 4096
# Entries of a nonnegative factor at or below this fraction of their column's largest entry
# count as being at the bound 0 in the KKT check.
_KKT_BOUND_REL = 1e-8
# Below this many flops per MTTKRP GEMM, BLAS threads cost more in wake-ups than they save
# (see nmf.py); the solver then runs BLAS single-threaded.
SMALL_PRODUCT_FLOPS = 5e7
_SUMSQ_BLOCK = 1 << 20
# HOSVD init refinement: CP of the compressed core X ×_n U_nᵀ (R^N entries, at most this many)
# from this many starts (GEVD, then random), each tried for CORE_TRIAL_ITER sweeps; the best
# goes on to this tolerance or CORE_MAX_ITER sweeps in all (core sweeps cost ~0.3 ms at R = 10,
# and a converged core spares the full tensor hundreds of sweeps in a swamp — measured).
CORE_MAX_ENTRIES = 1 << 18
CORE_RESTARTS = 3
CORE_TOL = 1e-12
CORE_TRIAL_ITER = 200
CORE_MAX_ITER = 5000


# --- parameters and memory ------------------------------------------------------------------


def check_parameters(*, rank=None, nonneg: bool = False, init: str = "auto", tol: float = 1e-8,
                     max_iter: int = 500, n_init: int = 1,
                     linesearch: bool = True) -> None:  # fmt: skip
    """Refuse invalid parameters (callers run this before reading any data)."""
    if rank is not None and (isinstance(rank, bool) or not _is_int(rank) or rank < 1):
        raise ParameterError(f"rank must be a positive integer, got {rank!r}")
    if init not in INITS:
        raise ParameterError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    if not isinstance(nonneg, (bool, np.bool_)):
        raise ParameterError(f"nonneg must be a boolean, got {nonneg!r}")
    if not isinstance(linesearch, (bool, np.bool_)):
        raise ParameterError(f"linesearch must be a boolean, got {linesearch!r}")
    try:
        tol_ok = math.isfinite(float(tol)) and float(tol) >= 0
    except (TypeError, ValueError):
        tol_ok = False
    if not tol_ok:
        raise ParameterError(f"tol must be finite and ≥ 0, got {tol!r}")
    if isinstance(max_iter, bool) or not _is_int(max_iter) or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer ≥ 0, got {max_iter!r}")
    if isinstance(n_init, bool) or not _is_int(n_init) or n_init < 1:
        raise ParameterError(f"n_init must be an integer ≥ 1, got {n_init!r}")


def _is_int(v) -> bool:
    try:
        return int(v) == v
    except (TypeError, ValueError, OverflowError):
        return False


def max_rank(shape) -> int:
    """∏I / max I_n: every tensor of this shape has CP rank at most this."""
    dims = [int(s) for s in shape]
    return int(math.prod(dims) // max(dims)) if dims else 0


def split_modes(shape) -> int:
    """p such that the groups 0…p−1 and p…N−1 have the most balanced products (the smallest
    larger side; the first such p on ties)."""
    dims = [int(s) for s in shape]
    best, best_p = None, 1
    for p in range(1, len(dims)):
        cost = max(math.prod(dims[:p]), math.prod(dims[p:]))
        if best is None or cost < best:
            best, best_p = cost, p
    return best_p


def estimate_bytes(shape, dtype, rank: int, *, nonneg: bool = False, n_init: int = 1,
                   init: str = "auto", copy: bool = False) -> int:  # fmt: skip
    """Peak bytes of the input in memory plus the working set, before anything is allocated.

    Counts the input (twice with ``copy``: conversion to the working dtype, C order or an
    exact rescaling), the factors in float64 (current, before the sweep, extrapolated, best
    restart) and their working-dtype copies, the tree's partial Khatri–Rao products and
    partial MTTKRPs (both groups, plus the line search's), the initialisation's mode Grams with
    their eigendecomposition and its first core projection, and the blocks of the final
    residual and of the finiteness scan.
    """
    dims = [int(s) for s in shape]
    r = max(1, min(int(rank), max(1, max_rank(dims))))
    w = np.dtype(dtype).itemsize
    size = math.prod(dims)
    stored = size * w * (2 if copy else 1)
    p = split_modes(dims)
    nl, nr = math.prod(dims[:p]), math.prod(dims[p:])
    factors = (8 * 5 + 2 * w) * sum(dims) * r + (8 * sum(dims) * r if n_init > 1 else 0)
    # KR and partial of each group; contraction temporaries; the line search's T_L
    tree = r * w * (2 * nl + 2 * nr + max(nl, nr) + nl)
    # blocks never exceed the tensor itself (in float64)
    resid = 2 * min(RESIDUAL_BLOCK_BYTES, 8 * size) + r * w * (nl + nr)
    init_b = 0
    if init in ("auto", "hosvd"):
        rest = [size // d for d in dims]
        side = max(min(d, o) for d, o in zip(dims, rest, strict=True))
        init_b = 4 * side * side * 8 + 2 * min(GRAM_BLOCK_BYTES, size * w)
        if not nonneg and not _compression_refused(dims, r, 0):
            # the first projection (R·∏I/I_first, working dtype and float64) and a copy
            init_b = max(init_b, r * (size // max(dims[0], dims[-1])) * (w + 16))
    scan = min(size, (64 << 20) // w)  # isfinite mask of one scan block
    return int(stored + factors + max(tree + resid, init_b, scan))


# --- Khatri–Rao products and the dimension tree ------------------------------------------------


def _kr_t(mats_t) -> np.ndarray:
    """Transposed Khatri–Rao product (R × ∏I_k, C-ordered) of factors given transposed
    (R × I_k each), row index in C order (the last mode fastest), as X's reshapes need."""
    k = mats_t[0]
    r = k.shape[0]
    for b in mats_t[1:]:
        k = (k[:, :, None] * b[:, None, :]).reshape(r, -1)
    return np.ascontiguousarray(k)


def _contract_group(t, dims, mats_t, j) -> np.ndarray:
    """MTTKRP of mode ``j`` of a group from the group's partial ``t`` (R × ∏dims, C-ordered):
    contract every other mode of the group with its factor (R × I_k, transposed), trailing
    modes first, then leading ones — each a batched matrix–vector product over R.
    Returns R × dims[j]."""
    r = t.shape[0]
    if len(dims) == 1:
        return t
    cur = t.reshape(r, -1)
    rest = list(dims)
    for k in range(len(dims) - 1, j, -1):  # the last axis of cur is mode k
        cur = np.matmul(cur.reshape(r, -1, rest[-1]), mats_t[k][:, :, None])
        rest.pop()
        cur = cur.reshape(r, -1)
    for k in range(j):  # the first axis of cur (after R) is mode k
        cur = np.matmul(mats_t[k][:, None, :], cur.reshape(r, rest[0], -1))
        rest.pop(0)
        cur = cur.reshape(r, -1)
    return cur


class _Tree:
    """The two-level dimension tree over a C-ordered tensor (see the module docstring)."""

    def __init__(self, x: np.ndarray):
        self.shape = tuple(int(s) for s in x.shape)
        self.n = len(self.shape)
        self.p = split_modes(self.shape)
        self.left = self.shape[: self.p]
        self.right = self.shape[self.p :]
        self.nl, self.nr = math.prod(self.left), math.prod(self.right)
        self.x2 = x.reshape(self.nl, self.nr)  # a view: x is C-ordered
        self.gemms = 0
        self.many = contextlib.nullcontext  # BLAS threads for the tensor-sized products

    def t_left(self, mats_t) -> np.ndarray:
        """R × ∏left: ``(X₂ · KR(right))ᵀ`` as ``KR(right)ᵀ · X₂ᵀ`` (OpenBLAS runs the thin
        operand on the left faster; see operator.dense_matmat)."""
        self.gemms += 1
        k = _kr_t(mats_t[self.p :])
        with self.many():
            return k @ self.x2.T

    def t_right(self, mats_t) -> np.ndarray:
        """R × ∏right: ``(X₂ᵀ · KR(left))ᵀ = KR(left)ᵀ · X₂``."""
        self.gemms += 1
        k = _kr_t(mats_t[: self.p])
        with self.many():
            return k @ self.x2

    def m_left(self, t, mats_t, n) -> np.ndarray:
        return _contract_group(t, self.left, mats_t[: self.p], n)

    def m_right(self, t, mats_t, n) -> np.ndarray:
        return _contract_group(t, self.right, mats_t[self.p :], n - self.p)

    def all_mttkrp(self, mats_t) -> list:
        """MTTKRP of every mode for fixed factors (transposed, R × I_n), each R × I_n."""
        t = self.t_left(mats_t)
        out = [self.m_left(t, mats_t, n) for n in range(self.p)]
        t = self.t_right(mats_t)
        out += [self.m_right(t, mats_t, n) for n in range(self.p, self.n)]
        return out

    def sweep_flops(self, r: int) -> float:
        return 4.0 * r * self.nl * self.nr

    def residual_sq(self, mats_t, lam) -> float:
        """‖X − [[λ; A]]‖² by blocks of X₂ against ``(KR(left)·λ)·KR(right)ᵀ``, float64 sums."""
        dt = self.x2.dtype
        kl = np.ascontiguousarray((_kr_t(mats_t[: self.p]) * lam.astype(dt)[:, None]).T)
        kr = _kr_t(mats_t[self.p :])
        w = dt.itemsize
        cols = max(1, min(self.nr, RESIDUAL_BLOCK_BYTES // w))
        rows = max(1, min(self.nl, RESIDUAL_BLOCK_BYTES // (cols * w)))
        buf = np.empty((rows, cols), dtype=dt)
        total = 0.0
        for s in range(0, self.nl, rows):
            e = min(self.nl, s + rows)
            for c in range(0, self.nr, cols):
                ce = min(self.nr, c + cols)
                blk = buf[: e - s, : ce - c]
                with self.many():
                    np.matmul(kl[s:e], kr[:, c:ce], out=blk)
                np.subtract(blk, self.x2[s:e, c:ce], out=blk)
                total += _sumsq(blk)
        return total


def mttkrp(x, factors, mode: int) -> np.ndarray:
    """``X_(mode) · KR(A_k, k ≠ mode)`` (I_mode × R, TensorLy's unfolding and Khatri–Rao
    order) through the dimension tree, in ``x``'s working dtype: no Khatri–Rao product of the
    other modes, no copy of an unfolding (``x`` C-ordered)."""
    x = np.asarray(x)
    wdt = working_dtype(x.dtype, method="mttkrp")
    x = np.ascontiguousarray(x, dtype=wdt)
    if x.ndim < 2:
        raise DataError(f"mttkrp needs a tensor of order ≥ 2, got shape {x.shape}")
    mode = int(mode)
    if not 0 <= mode < x.ndim:
        raise ParameterError(f"mode must be in [0, {x.ndim}), got {mode}")
    mats_t = [np.ascontiguousarray(np.asarray(a, dtype=wdt).T) for a in factors]
    tree = _Tree(x)
    if mode < tree.p:
        return np.ascontiguousarray(tree.m_left(tree.t_left(mats_t), mats_t, mode).T)
    return np.ascontiguousarray(tree.m_right(tree.t_right(mats_t), mats_t, mode).T)


# --- data ------------------------------------------------------------------------------------


def _sumsq(v) -> float:
    """Σ v² accumulated in float64, in flat blocks (a float64 block at most 8 MB)."""
    v = np.asarray(v)
    if not v.flags.c_contiguous:
        if v.ndim == 2:
            return float(sum(_sumsq(v[i]) for i in range(v.shape[0])))
        v = np.ascontiguousarray(v)
    f = v.reshape(-1)
    total = 0.0
    for s in range(0, f.size, _SUMSQ_BLOCK):
        c = f[s : s + _SUMSQ_BLOCK]
        c = c if c.dtype == np.float64 else c.astype(np.float64)
        total += float(c @ c)
    return total


class _Data:
    def __init__(self, x: np.ndarray, rank: int):
        self.x = x
        self.shape = tuple(int(s) for s in x.shape)
        self.dtype = x.dtype
        self.r = rank
        self.tree = _Tree(x)
        self.norm_sq = _sumsq(x)
        self.total = float(np.sum(x, dtype=np.float64))
        n = len(self.shape)
        self.unit = (rank + n) * _eps(self.dtype)  # rounding unit of the identity, relative

    def residual_sq(self, mats_t, lam) -> tuple[float, str, float]:
        """(‖X − [[λ; A]]‖², how, absolute bound on its rounding). Each entry of the model is
        a sum of R products of N factors: its error is at most (R+N+1)·eps·(|x| + Σ_r λ_r
        |a_0r|⋯|a_{N-1,r}|), whose norm is ≤ (R+N+1)·eps·(‖X‖ + Σ_r λ_r ‖a_0r‖⋯‖a_{N-1,r}‖)."""
        total = self.tree.residual_sq(mats_t, lam)
        norms = np.ones(len(lam))
        for m in mats_t:
            norms *= np.linalg.norm(np.asarray(m, np.float64), axis=1)
        delta = ((len(lam) + len(self.shape) + 1) * _eps(self.dtype)
                 * (math.sqrt(self.norm_sq) + float(np.abs(lam) @ norms)))  # fmt: skip
        bound = 2.0 * math.sqrt(total) * delta + delta * delta
        return total, "explicit residual (row blocks, float64 sums)", bound


def _prepare(x):
    """Check type, order, shape, dtype and finiteness; return (C-ordered array in the working
    dtype, working dtype, whether it was copied)."""
    if is_sparse(x):
        raise DataError("cp needs a dense tensor; sparse input is a matrix (use svd or nmf)")
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"cp needs a tensor of order ≥ 3; got {x.ndim}-D shape {x.shape}")
    if x.ndim == 2:
        raise DataError(
            f"cp needs a tensor of order ≥ 3; got a matrix of shape {x.shape}: the CP "
            "decomposition of a matrix is a low-rank factorisation, use svd (or nmf)"
        )
    if 0 in x.shape:
        raise DataError(f"cp needs a non-empty tensor; got shape {x.shape}")
    wdt = working_dtype(x.dtype, method="cp")
    copied = not (x.dtype == wdt and x.flags.c_contiguous)
    return x, wdt, copied


def _convert(x, wdt):
    x = np.ascontiguousarray(x, dtype=wdt)
    nan, inf = count_nonfinite(x)
    if inf:
        raise DataError(f"input holds {inf} infinite value(s); cp needs finite data")
    if nan:
        raise DataError(
            f"input holds {nan} NaN value(s); cp needs complete data (tensor completion is a "
            "separate method)"
        )
    return x


_CONTROLLER = []


def _controller():
    if not _CONTROLLER:
        import scipy.linalg  # noqa: F401  (load SciPy's own BLAS before the controller looks)
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


class _Blas:
    """BLAS threads: the solve runs single-threaded (its R×R algebra, eigh and batched
    matrix–vector products are small: waking threads for them costs more than they save, and
    on a busy machine spinning threads can slow them tenfold — measured), and the
    tensor-sized products (MTTKRP GEMMs, mode Grams, residual blocks) with the threads that
    were configured when ``cp`` was called — unless those products are small too."""

    def __init__(self, tree: _Tree, r: int):
        self.ctl = _controller()
        infos = [i for i in self.ctl.info() if i.get("user_api") == "blas"]
        self.threads = max([int(i.get("num_threads") or 1) for i in infos] or [1])
        self.small = 2.0 * r * tree.nl * tree.nr < SMALL_PRODUCT_FLOPS or self.threads <= 1

    def solve(self):
        return self.ctl.limit(limits=1, user_api="blas")

    def many(self):
        if self.small:
            return contextlib.nullcontext()
        return self.ctl.limit(limits=self.threads, user_api="blas")

    def describe(self) -> str:
        if self.small:
            return "1 (small products)"
        return f"{self.threads} for the tensor-sized products, 1 for the small algebra"


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --- initialisation ---------------------------------------------------------------------------


def _slices(x: np.ndarray, n: int):
    """(a, I_n, b): X as a C-ordered 3-way view around mode n."""
    shape = x.shape
    a = math.prod(shape[:n])
    b = math.prod(shape[n + 1 :])
    return x.reshape(a, shape[n], b)


def _unfolding_column_blocks(x: np.ndarray, n: int):
    """Blocks of columns of the unfolding X_(n) (I_n × c each), views where the layout
    allows: the whole reshape for modes 0 and N−1, single slices X[i] for a middle mode with
    wide slices, else blocks of slices copied to the unfolding's layout (≤ GRAM_BLOCK_BYTES)."""
    x3 = _slices(x, n)
    a, i_n, b = x3.shape
    if a == 1:
        yield x3[0]
    elif b == 1:
        yield x3[:, :, 0].T
    elif b >= SLICE_MIN_COLS and a <= SLICE_MAX_CALLS:
        for i in range(a):
            yield x3[i]
    else:
        step = max(1, GRAM_BLOCK_BYTES // max(1, i_n * b * x.itemsize))
        for s in range(0, a, step):
            blk = x3[s : s + step]
            yield np.ascontiguousarray(blk.transpose(1, 0, 2)).reshape(i_n, -1)


def _unfolding_row_blocks(x: np.ndarray, n: int):
    """(start, rows of X_(n)) in blocks (views for modes 0 and N−1, else block copies)."""
    x3 = _slices(x, n)
    a, i_n, b = x3.shape
    row_bytes = max(1, a * b * x.itemsize)
    step = max(1, GRAM_BLOCK_BYTES // row_bytes)
    for s in range(0, i_n, step):
        if a == 1:
            yield s, x3[0, s : s + step]
        elif b == 1:
            yield s, x3[:, s : s + step, 0].T
        else:
            blk = x3[:, s : s + step, :]
            yield s, np.ascontiguousarray(blk.transpose(1, 0, 2)).reshape(blk.shape[1], -1)


def _leading_vectors(x: np.ndarray, n: int, r: int,
                     many=contextlib.nullcontext) -> tuple[np.ndarray, str]:  # fmt: skip
    """Up to r leading left singular vectors of X_(n) (float64, orthonormal columns) from
    the eigendecomposition of a Gram matrix; fewer when the unfolding has fewer columns."""
    import scipy.linalg as sla

    i_n = x.shape[n]
    cols = x.size // i_n
    if i_n <= cols:
        g = np.zeros((i_n, i_n))
        with many():
            for blk in _unfolding_column_blocks(x, n):
                g += blk @ blk.T  # syrk on the view
        lam, vec = sla.eigh(g, check_finite=False, overwrite_a=True)
        k = min(r, i_n)
        return np.ascontiguousarray(vec[:, ::-1][:, :k]), "mode Gram"
    k_mat = np.zeros((cols, cols))
    with many():
        for _, rows in _unfolding_row_blocks(x, n):
            k_mat += rows.T @ rows
    lam, vec = sla.eigh(k_mat, check_finite=False, overwrite_a=True)
    k = min(r, cols)
    lam, vec = lam[::-1][:k], vec[:, ::-1][:, :k]
    s = np.sqrt(np.maximum(lam, 0.0))
    keep = s > s[0] * cols * _eps(np.float64) if s.size and s[0] > 0 else np.zeros(k, bool)
    vec, s = vec[:, keep], s[keep]
    u = np.empty((i_n, vec.shape[1]))
    v = vec.astype(x.dtype)
    with many():
        for start, rows in _unfolding_row_blocks(x, n):
            u[start : start + rows.shape[0]] = rows @ v
    u /= s
    return u, "Gram of the short side"


def _unit_columns(a: np.ndarray) -> np.ndarray:
    nrm = np.linalg.norm(a, axis=0)
    return a / np.where(nrm > 0, nrm, 1.0)


def _hosvd_init(x: np.ndarray, r: int, rng, nonneg: bool, many=contextlib.nullcontext):
    """(factors, details): HOSVD bases, refined through the CP of the compressed core when
    that is possible and cheap (module docstring)."""
    factors, how, padded = [], [], 0
    for n in range(x.ndim):
        u, kind = _leading_vectors(x, n, r, many)
        how.append(kind)
        if u.shape[1] < r:
            extra = rng.standard_normal((x.shape[n], r - u.shape[1]))
            padded += r - u.shape[1]
            u = np.concatenate([u, _unit_columns(extra)], axis=1)
        factors.append(u)
    info = {"per_mode": how, "random_columns": padded}
    if nonneg:
        info["compressed_core"] = "not used (nonnegative factors: absolute values of the bases)"
        return [np.ascontiguousarray(_unit_columns(np.abs(f))) for f in factors], info
    why_not = _compression_refused(x.shape, r, padded)
    if why_not:
        info["compressed_core"] = f"not used ({why_not})"
        return [np.ascontiguousarray(f) for f in factors], info
    with many():
        core = _project_core(x, factors)
    b, core_info = _core_cp(core, r, rng)
    info["compressed_core"] = core_info
    start = [_unit_columns(u @ bn) for u, bn in zip(factors, b, strict=True)]
    return [np.ascontiguousarray(a) for a in start], info


def _compression_refused(shape, r: int, padded: int) -> str:
    """Why the core refinement of the HOSVD init does not apply ('' when it does)."""
    if padded or any(r > s for s in shape):
        return "rank exceeds a dimension"
    if r ** len(shape) > CORE_MAX_ENTRIES:
        return f"core of R^N = {r}^{len(shape)} entries is too large"
    if 2 * r > max(shape[0], shape[-1]):
        return "the first projection would not shrink the tensor"
    return ""


def _project_core(x: np.ndarray, bases) -> np.ndarray:
    """G = X ×_0 U_0ᵀ ×_1 … (R^N, float64): the first projection on the larger of modes 0 and
    N−1 by one GEMM on the C-ordered view, the others on the (R/I_n times smaller) result."""
    n = x.ndim
    dt = x.dtype
    if x.shape[0] >= x.shape[-1]:
        y = bases[0].T.astype(dt) @ x.reshape(x.shape[0], -1)  # (R, I_1 … I_{N-1})
        y = np.moveaxis(np.asarray(y, np.float64).reshape((-1, *x.shape[1:])), 0, -1)
        order = list(range(1, n))
    else:
        y = x.reshape(-1, x.shape[-1]) @ bases[-1].astype(dt)  # (I_0 … I_{N-2}, R)
        y = np.asarray(y, np.float64).reshape((*x.shape[:-1], -1))
        order = list(range(n - 1))
    for k in order:  # contract the leading axis; its R axis goes last
        y = np.tensordot(y, bases[k], axes=([0], [0]))
    if x.shape[0] < x.shape[-1]:
        y = np.moveaxis(y, 0, -1)
    return np.ascontiguousarray(y)


def _gevd_start(core: np.ndarray, r: int):
    """Algebraic CP of an R×R×… core by a generalized eigendecomposition (Sanchez &
    Kowalski; Tensorlab's cpd_gevd), exact for an exact rank-R core with nonsingular
    factors: with the core as R×R×M (M = R^{N−2}) and S_1, S_2 its two dominant slice
    combinations (S_k = B_0 D_k B_1ᵀ), the eigenvectors of the pencil (S_1, S_2) give
    B_1 = X⁻ᵀ and B_0 ∝ S_1 X; the rest follows by least squares and, for N ≥ 4, a rank-one
    approximation per component. None when the pencil is singular."""
    import scipy.linalg as sla

    n = core.ndim
    g3 = core.reshape(r * r, -1)
    if g3.shape[1] < 2:
        return None
    _, _, vt = sla.svd(g3, full_matrices=False, check_finite=False)
    s1 = (g3 @ vt[0]).reshape(r, r)
    s2 = (g3 @ vt[1]).reshape(r, r)
    try:
        mu, x = sla.eig(s1, s2, check_finite=False)
        # real bases of the eigenvectors: a complex pair gives its real and imaginary parts
        xr = np.empty((r, r))
        j = 0
        while j < r:
            if abs(mu[j].imag) > 0 and j + 1 < r:
                xr[:, j], xr[:, j + 1] = x[:, j].real, x[:, j].imag
                j += 2
            else:
                xr[:, j] = x[:, j].real
                j += 1
        b1 = sla.inv(xr, check_finite=False).T
    except (np.linalg.LinAlgError, ValueError):
        return None
    b0 = s1 @ xr
    if not (np.all(np.isfinite(b0)) and np.all(np.isfinite(b1))):
        return None
    kr = (b0[:, None, :] * b1[None, :, :]).reshape(r * r, r)
    c = sla.lstsq(kr, g3, check_finite=False)[0].T  # (M × R)
    rest = []
    if n == 3:
        rest = [c]
    else:
        dims = core.shape[2:]
        rest = [np.empty((s, r)) for s in dims]
        for k in range(r):
            t = c[:, k].reshape(dims)
            for m in range(len(dims)):
                unf = np.moveaxis(t, m, 0).reshape(dims[m], -1)
                u = sla.svd(unf, full_matrices=False, check_finite=False)[0]
                rest[m][:, k] = u[:, 0]
    out = [_unit_columns(b0), _unit_columns(b1)] + [_unit_columns(a) for a in rest]
    if any(not np.all(np.isfinite(a)) for a in out):
        return None
    return [np.ascontiguousarray(a) for a in out]


def _core_cp(core: np.ndarray, r: int, rng):
    """CP-ALS (line search) of the small core from the GEVD start and random starts: each is
    tried for CORE_TRIAL_ITER sweeps, the best (the first on ties) continues."""
    d = _Data(core, r)
    starts = []
    gevd = _gevd_start(core, r)
    if gevd is not None:
        starts.append(("gevd", gevd))
    while len(starts) < CORE_RESTARTS:
        starts.append(("random", _random_init(core.shape, r, rng, False)))
    runs = []
    for _, start in starts:  # a trial of each start, then the best one on to convergence
        s = _Solver(d, start, nonneg=False, linesearch=True)
        obj0 = s.objective0()
        loop = run_loop(s.sweep, tol=CORE_TOL, max_iter=CORE_TRIAL_ITER, initial_objective=obj0)
        obj = loop.objective if math.isfinite(loop.objective) else math.inf
        runs.append((obj, len(runs), s, loop))
    obj, k, s, loop = min(runs, key=lambda t: (t[0], t[1]))
    if not loop.converged and loop.iterations == CORE_TRIAL_ITER:
        loop = run_loop(s.sweep, tol=CORE_TOL, max_iter=CORE_MAX_ITER,
                        start_iteration=loop.iterations, history=loop.history)  # fmt: skip
        obj = loop.objective if math.isfinite(loop.objective) else obj
    sweeps = [run[3].iterations for run in runs]
    best = (obj, s.f)
    rel = math.sqrt(2.0 * max(best[0], 0.0) / d.norm_sq) if d.norm_sq > 0 else 0.0
    info = {"shape": list(core.shape), "starts": [name for name, _ in starts],
            "trial_sweeps": sweeps, "kept_start": k, "sweeps": loop.iterations,
            "relative_error_of_core": rel}  # fmt: skip
    return best[1], info


def _random_init(shape, r: int, rng, nonneg: bool):
    out = []
    for d in shape:
        a = rng.random((d, r)) if nonneg else rng.standard_normal((d, r))
        out.append(np.ascontiguousarray(_unit_columns(a)))
    return out


# --- the solver ------------------------------------------------------------------------------


def _hadamard(grams, skip=None) -> np.ndarray:
    r = grams[0].shape[0]
    v = np.ones((r, r))
    for k, g in enumerate(grams):
        if k != skip:
            v *= g
    return v


def _inner_limit(share_flops: float, rows: int, r: int) -> int:
    one_pass = 2.0 * rows * r * r + 4.0 * rows * r + 3.0 * r * CALL_FLOPS
    rho = 1.0 + share_flops / one_pass
    return max(1, min(MAX_INNER, int(1 + INNER_ALPHA * rho)))


class _Solver(Checkpointable):
    """CP-ALS / CP-HALS state: unit-column float64 factors ``f`` and weights ``lam``."""

    STATE = ("f", "lam", "g", "mats_t", "t_left", "solves", "explicit", "ls", "_ls_fail",
             "passes_done", "revived", "last_rel", "tree.gemms")  # fmt: skip

    def __init__(self, d: _Data, factors, *, nonneg: bool, linesearch: bool):
        self.d = d
        self.tree = d.tree
        self.nonneg = nonneg
        self.linesearch = linesearch
        self.n = len(d.shape)
        self.r = d.r
        self.f = [np.ascontiguousarray(a, dtype=np.float64) for a in factors]
        self.lam = np.ones(self.r)
        self.g = [a.T @ a for a in self.f]
        self.mats_t = [self._cast(a) for a in self.f]
        self.t_left = None  # T_L for the current right-group factors, when known
        self.solves = {"cholesky": 0, "pinv": 0}
        self.explicit = 0
        self.ls = {"tried": 0, "accepted": 0, "root": LS_ROOT}
        self._ls_fail = 0
        self.gamma = d.unit * d.norm_sq
        norm = math.sqrt(d.norm_sq)
        self.floor = [float(_eps(d.dtype) * norm / math.sqrt(self.r * s)) for s in d.shape]
        share = self.tree.sweep_flops(self.r) / self.n
        self.passes = [_inner_limit(share, s, self.r) for s in d.shape]
        self.passes_done = [0] * self.n
        self.revived = 0
        self.last_rel = None

    def _cast(self, a):
        return np.ascontiguousarray(a.T, dtype=self.d.dtype)

    # -- objective --

    def _fit(self, inner: float, model_sq: float, f, lam) -> tuple[float, bool]:
        """(½‖X − [[λ; A]]‖², explicit?) from the identity, or the explicit residual near 0."""
        val = 0.5 * (self.d.norm_sq - 2.0 * inner + model_sq)
        if val < 0.5 * _IDENTITY_MARGIN * self.gamma:
            self.explicit += 1
            mats_t = [self._cast(a) for a in f]
            return 0.5 * self.d.residual_sq(mats_t, lam)[0], True
        return max(val, 0.0), False

    def _model_sq(self, grams, lam) -> float:
        return float(lam @ _hadamard(grams) @ lam)

    def objective0(self) -> float:
        """Objective of the initial factors with their least-squares weights (the solution of
        (⊛_n A_nᵀA_n)·λ = (⟨X, a_0r ∘ … ∘ a_{N-1,r}⟩)_r); for ``nonneg`` a common weight when
        those have a negative entry. Keeps T_L for the first sweep."""
        t = self.tree.t_left(self.mats_t)
        m0 = np.asarray(self.tree.m_left(t, self.mats_t, 0), np.float64)
        b = np.sum(m0.T * self.f[0], axis=0)  # ⟨X, rank-one term r⟩
        h = _hadamard(self.g)
        lam = np.linalg.lstsq(h, b, rcond=None)[0]
        if not np.all(np.isfinite(lam)) or (self.nonneg and np.any(lam < 0)):
            msq1 = float(np.sum(h))
            c = float(np.sum(b)) / msq1 if msq1 > 0 else 1.0
            lam = np.full(self.r, c if c > 0 else 1.0)
        neg = lam < 0
        if neg.any():  # flip those columns of mode 0 (T_L does not involve it)
            self.f[0][:, neg] *= -1.0
            self.g[0] = self.f[0].T @ self.f[0]
            self.mats_t[0] = self._cast(self.f[0])
            b[neg] = -b[neg]
            lam = np.abs(lam)
        self.lam = lam
        self.t_left = t
        fit, _ = self._fit(float(lam @ b), self._model_sq(self.g, lam), self.f, self.lam)
        return fit

    # -- updates --

    def _solve(self, v, m) -> np.ndarray:
        """A with A·V = M (M is I_n × R), by Cholesky or the pseudo-inverse of V."""
        import scipy.linalg as sla

        r = v.shape[0]
        limit = RCOND_FACTOR * r * _eps(np.float64)
        try:
            c, low = sla.cho_factor(v, lower=False, check_finite=False)
            anorm = float(np.max(np.sum(np.abs(v), axis=0)))
            rcond, info = sla.lapack.dpocon(c, anorm)
            if info == 0 and rcond >= limit:
                self.solves["cholesky"] += 1
                return sla.cho_solve((c, low), m.T, check_finite=False).T
        except np.linalg.LinAlgError:
            pass
        self.solves["pinv"] += 1
        w, q = sla.eigh(v, check_finite=False)
        top = float(w[-1]) if w.size else 0.0
        keep = w > r * _eps(np.float64) * top if top > 0 else np.zeros_like(w, bool)
        qk = q[:, keep]
        return (m @ qk) / w[keep] @ qk.T

    def _hals(self, n, a, m, v) -> np.ndarray:
        """Column-wise exact nonnegative updates of a (I_n × R, F-ordered copy)."""
        r = self.r
        dg = np.diagonal(v).copy()
        dg[dg <= 0] = 1.0
        p = m / dg
        q = v / dg
        np.fill_diagonal(q, 0.0)
        qt = np.ascontiguousarray(q.T)
        a = np.asfortranarray(a)
        buf = np.empty(a.shape[0])
        passes = self.passes[n]
        first = None
        for t in range(passes):
            old = a.copy(order="F") if passes > 1 else None
            for j in range(r):
                np.dot(a, qt[j], out=buf)
                np.subtract(p[:, j], buf, out=buf)
                np.maximum(buf, 0.0, out=a[:, j])
            self.passes_done[n] += 1
            if passes > 1:
                old -= a
                delta = float(np.linalg.norm(old))
                if t == 0:
                    first = delta
                elif delta <= INNER_DELTA * first:
                    break
        dead = ~np.any(a > 0, axis=0)
        if dead.any():
            a[:, dead] = self.floor[n]
            self.revived += int(dead.sum())
        return np.ascontiguousarray(a)

    def _update(self, n: int, m_t) -> np.ndarray:
        """Update mode n from its MTTKRP (R × I_n); return the unnormalised factor."""
        m = np.asarray(m_t, np.float64).T
        v = _hadamard(self.g, skip=n)
        if self.nonneg:
            a = self._hals(n, self.f[n] * self.lam, m, v)
        else:
            a = self._solve(v, m)
        nrm = np.linalg.norm(a, axis=0)
        self.lam = nrm
        self.f[n] = np.ascontiguousarray(a / np.where(nrm > 0, nrm, 1.0))
        self.g[n] = self.f[n].T @ self.f[n]
        self.mats_t[n] = self._cast(self.f[n])
        return a

    def sweep(self, it: int):
        tree = self.tree
        prev = None
        if self.linesearch and it + 1 >= LS_START:
            prev = ([a.copy() for a in self.f], self.lam.copy())
        t = self.t_left if self.t_left is not None else tree.t_left(self.mats_t)
        self.t_left = None
        for n in range(tree.p):
            self._update(n, tree.m_left(t, self.mats_t, n))
        del t
        t = tree.t_right(self.mats_t)
        a = m = None
        for n in range(tree.p, self.n):
            m = tree.m_right(t, self.mats_t, n)
            a = self._update(n, m)
        del t
        inner = float(np.sum(np.asarray(m, np.float64).T * a))
        fit, explicit = self._fit(inner, self._model_sq(self.g, self.lam), self.f, self.lam)
        extras = {"linesearch_tried": None, "linesearch_step": None}
        if prev is not None and not explicit:
            fit = self._line_search(it + 1, prev, fit, extras)
        return self._report(fit, extras)

    def _line_search(self, k: int, prev, fit: float, extras: dict) -> float:
        s = k ** (1.0 / self.ls["root"])
        pf, plam = prev
        last = self.n - 1
        cand, lam = [], np.ones(self.r)
        for n in range(self.n):
            if n < last:
                c = pf[n] + s * (self.f[n] - pf[n])
            else:
                c = pf[n] * plam + s * (self.f[n] * self.lam - pf[n] * plam)
            if self.nonneg:
                np.maximum(c, 0.0, out=c)
            nrm = np.linalg.norm(c, axis=0)
            if not np.all(nrm > 0):
                return fit  # a component vanished: not a useful candidate
            cand.append(np.ascontiguousarray(c / nrm))
            lam *= nrm
        self.ls["tried"] += 1
        extras["linesearch_tried"] = s
        mats_t = [self._cast(a) for a in cand]
        t = self.tree.t_left(mats_t)
        m0 = np.asarray(self.tree.m_left(t, mats_t, 0), np.float64)
        inner = float(np.sum(m0.T * cand[0] * lam))
        grams = [a.T @ a for a in cand]
        val = 0.5 * (self.d.norm_sq - 2.0 * inner + self._model_sq(grams, lam))
        if val < fit and val >= 0.5 * _IDENTITY_MARGIN * self.gamma:
            self.f, self.lam, self.g, self.mats_t = cand, lam, grams, mats_t
            self.t_left = t
            self.ls["accepted"] += 1
            self._ls_fail = 0
            extras["linesearch_step"] = s
            return val
        self._ls_fail += 1
        if self._ls_fail >= LS_MAX_FAIL:
            self.ls["root"] += 1.0
            self._ls_fail = 0
        return fit

    def _report(self, fit: float, extras: dict):
        d = self.d
        rel = math.sqrt(2.0 * fit / d.norm_sq) if d.norm_sq > 0 else 0.0
        extras["relative_error"] = rel
        self.last_rel = rel
        if rel <= _FLOOR_MARGIN * d.unit:
            extras["at_rounding_floor"] = True
            return 0.0, extras
        return fit, extras

    def details(self) -> dict:
        out = {"solves": dict(self.solves), "explicit_residual_sweeps": self.explicit,
               "linesearch_steps": {"tried": self.ls["tried"], "accepted": self.ls["accepted"],
                                    "final_root": self.ls["root"]},
               "mttkrp_gemms": self.tree.gemms}  # fmt: skip
        if self.nonneg:
            out["max_passes"] = list(self.passes)
            out["passes"] = list(self.passes_done)
            out["revived_columns"] = self.revived
        return out


# --- post-processing and certification -------------------------------------------------------


def _normalise(f, lam, dead: float):
    """The output convention (module docstring): unit columns, weights ≥ 0 sorted descending,
    sign pairs flipped so that each mode but the last has a positive largest entry."""
    f = [np.array(a, dtype=np.float64, order="C", copy=True) for a in f]
    lam = np.array(lam, dtype=np.float64, copy=True)
    for i, a in enumerate(f):
        nrm = np.linalg.norm(a, axis=0)
        ok = nrm > 0
        a[:, ok] /= nrm[ok]
        lam = lam * np.where(ok, nrm, 0.0)
        f[i] = a
    neg = lam < 0
    if neg.any():
        lam[neg] = -lam[neg]
        f[-1][:, neg] *= -1.0
    r = lam.shape[0]
    cols = np.arange(r)
    for a in f[:-1]:
        idx = np.argmax(np.abs(a), axis=0)
        flip = a[idx, cols] < 0
        a[:, flip] *= -1.0
        f[-1][:, flip] *= -1.0
    off = ~(lam > dead)
    if off.any():
        lam[off] = 0.0
        for a in f:
            a[:, off] = 0.0
    order = np.argsort(-lam, kind="stable")
    return [np.ascontiguousarray(a[:, order]) for a in f], lam[order]


def _certify(d: _Data, f, lam, nonneg: bool) -> dict:
    """Exact relative error with its rounding bound, and the first-order check."""
    mats_t = [np.ascontiguousarray(a.T) for a in f]
    err_sq, how, bound = d.residual_sq(mats_t, lam)
    norm = math.sqrt(d.norm_sq)
    rel = math.sqrt(err_sq) / norm if norm > 0 else 0.0
    out = {
        "relative_frobenius_error": rel,
        "error_method": how,
        "error_bounds": [
            math.sqrt(max(err_sq - bound, 0.0)) / norm if norm > 0 else 0.0,
            math.sqrt(err_sq + bound) / norm if norm > 0 else 0.0,
        ],
        "norm_fro": norm,
        "fit": 1.0 - rel,
        "objective": 0.5 * err_sq,
    }
    f64 = [np.asarray(a, np.float64) for a in f]
    grams = [a.T @ a for a in f64]
    ms = d.tree.all_mttkrp(mats_t)
    per_mode = []
    for n, m_t in enumerate(ms):
        m = np.asarray(m_t, np.float64).T
        grad = (f64[n] * lam) @ _hadamard(grams, skip=n) - m
        scale = float(np.max(np.abs(m), initial=0.0))
        if nonneg:
            colmax = np.max(f64[n], axis=0)
            at_bound = f64[n] <= _KKT_BOUND_REL * colmax
            viol = np.where(at_bound, np.maximum(-grad, 0.0), np.abs(grad))
        else:
            viol = np.abs(grad)
        v = float(np.max(viol, initial=0.0))
        per_mode.append(v / scale if scale > 0 else 0.0)
    key = "kkt" if nonneg else "stationarity"
    out[key] = max(per_mode)
    out[f"{key}_per_mode"] = per_mode
    if nonneg:
        out["min_factor_entry"] = float(min(float(np.min(a)) for a in f64))
    return out


def factor_match(factors_a, factors_b) -> float:
    """Congruence of two CP models: the mean over components, after the best one-to-one
    matching (Hungarian algorithm), of the product over modes of |cos| between matched
    columns; unmatched components (different ranks) count 0. In [0, 1]; 1 means the same
    components up to scaling, sign and order. Weights are ignored."""
    from scipy.optimize import linear_sum_assignment

    fa = [np.asarray(a, np.float64) for a in factors_a]
    fb = [np.asarray(b, np.float64) for b in factors_b]
    if len(fa) != len(fb):
        raise ParameterError(f"factor_match needs models of the same order ({len(fa)} ≠ {len(fb)})")
    ra, rb = fa[0].shape[1], fb[0].shape[1]
    if ra == 0 or rb == 0:
        return 0.0
    c = np.ones((ra, rb))
    for a, b in zip(fa, fb, strict=True):
        if a.shape[0] != b.shape[0]:
            raise ParameterError(f"factor_match needs equal mode sizes ({a.shape} vs {b.shape})")
        c *= np.abs(_unit_columns(a).T @ _unit_columns(b))
    rows, cols = linear_sum_assignment(c, maximize=True)
    # |cos| of unit columns can round above 1: the score is documented in [0, 1]
    return float(min(1.0, np.sum(c[rows, cols]) / max(ra, rb)))


# --- driver ---------------------------------------------------------------------------------


def _rank_info(rank: int, r: int, bound: int) -> dict:
    return {"value": int(r), "rule": "rank", "threshold": int(rank), "max_rank": int(bound),
            "clamped": bool(rank > bound),
            "by_rule": [{"rule": "rank", "threshold": int(rank), "rank": int(r),
                         "given": True}]}  # fmt: skip


def cp(x, rank: int, *, nonneg: bool = False, init: str = "auto", tol: float = 1e-8,
       max_iter: int = 500, n_init: int = 1, linesearch: bool = True, rng=None, callback=None,
       max_memory: int | None = None, resume: dict | None = None) -> Result:  # fmt: skip
    """CP decomposition ``X ≈ [[λ; A_0, …, A_{N-1}]]`` of a dense tensor of order N ≥ 3 (see
    the module docstring).

    ``nonneg``: nonnegative factors by HALS (the data must be nonnegative). ``init``:
    ``hosvd`` (``auto``) or ``random``. ``tol``: relative decrease of the objective per sweep at
    which to stop. ``linesearch``: Bro's extrapolation after each sweep. ``n_init``: restarts,
    the best kept. ``callback(event)`` sees every sweep (``event.extras["restart"]`` says which
    restart); returning True stops. ``max_memory``: bytes; a larger estimate is a BudgetError.
    ``resume``: an ``event.state()`` of an earlier run with the same data and parameters.

    Returns a :class:`Result` with ``arrays = {"weights": (R,), "factors/n": I_n × R}``.
    """
    check_parameters(rank=rank, nonneg=nonneg, init=init, tol=tol, max_iter=max_iter,
                     n_init=n_init, linesearch=linesearch)  # fmt: skip
    rng = _as_rng(rng)
    nonneg, linesearch = bool(nonneg), bool(linesearch)
    a, wdt, copied = _prepare(x)
    shape = tuple(int(s) for s in a.shape)
    warnings: list[str] = []
    bound = max_rank(shape)
    r = int(rank)
    if r > bound:
        warnings.append(f"rank {r} exceeds the largest CP rank of shape {shape} "
                        f"(∏I/max I_n = {bound}); clamped to {bound}")  # fmt: skip
        r = bound
    init_used = "hosvd" if init == "auto" else init
    est = estimate_bytes(shape, wdt, r, nonneg=nonneg, n_init=n_init, init=init_used,
                         copy=copied)  # fmt: skip
    if max_memory is not None and est > max_memory:
        raise BudgetError(f"cp needs about {_human(est)} for shape {'×'.join(map(str, shape))} "
                          f"{wdt} but the memory budget is {_human(max_memory)}")  # fmt: skip
    xw = _convert(a, wdt)
    del a
    if nonneg:
        amin = float(np.min(xw))
        if amin < 0:
            count = int(sum(np.count_nonzero(blk < 0) for blk in xw))
            raise DataError(f"cp with nonneg=True needs nonnegative data; the input holds {count}"
                            f" negative value(s), the smallest {amin:.6g}")  # fmt: skip
    amax = float(max(abs(float(np.max(xw))), abs(float(np.min(xw)))))
    scale = power_of_two_scale(amax, wdt)
    if scale != 1.0:
        xw = xw * wdt.type(scale)  # a new array: the input is never modified
        e = int(round(math.log2(scale)))
        warnings.append(f"entries of magnitude near 2^{-e} were scaled by 2^{e} (exactly) to keep "
                        "the Gram products finite; weights are scaled back, objectives are those "
                        f"of the data times 2^{e}")  # fmt: skip
    method = "cp-hals" if nonneg else "cp-als"
    if nonneg:
        reason = ("nonnegative CP: HALS (exact column updates from the MTTKRP and the Hadamard "
                  "Gram)")  # fmt: skip
    else:
        reason = ("CP-ALS: normal equations through the Hadamard product of factor Grams, "
                  "Cholesky (pseudo-inverse when ill-conditioned)")  # fmt: skip
    reason += "; MTTKRP by a two-level dimension tree (two GEMMs per sweep, no Khatri–Rao "
    reason += "product of the other modes, no unfolding copied)"
    if linesearch:
        reason += "; Bro's line search"
    d = _Data(xw, r)
    details = {"solver": method, "init": init_used, "n_init": int(n_init),
               "linesearch": linesearch, "working_dtype": str(wdt), "estimate_bytes": int(est),
               "input_copied": bool(copied or scale != 1.0),
               "tree": {"split": d.tree.p, "left_modes": list(range(d.tree.p)),
                        "right_modes": list(range(d.tree.p, len(shape))),
                        "gemm_flops_per_sweep": d.tree.sweep_flops(r),
                        "mode_by_mode_flops_per_sweep": 2.0 * len(shape) * r * math.prod(shape)},
               "scale": scale}  # fmt: skip
    rank_info = _rank_info(int(rank), r, bound)
    if d.norm_sq == 0.0:
        return _zero_result(shape, wdt, r, method, reason, warnings, details, rank_info)
    hosvd_cache = {}

    def make(k):
        name = init_used if k == 0 else "random"
        if name == "hosvd":
            if "f" not in hosvd_cache:
                hosvd_cache["f"], details["hosvd"] = _hosvd_init(d.x, r, rng, nonneg,
                                                                 d.tree.many)  # fmt: skip
            factors = [a.copy() for a in hosvd_cache["f"]]
        else:
            factors = _random_init(shape, r, rng, nonneg)
        return _Solver(d, factors, nonneg=nonneg, linesearch=linesearch), name

    blas = _Blas(d.tree, r)
    d.tree.many = blas.many
    details["blas_threads"] = blas.describe()
    with blas.solve():
        runs = run_restarts(make, n_init=int(n_init), tol=float(tol), max_iter=int(max_iter),
                            callback=callback, factors=lambda s: (s.f, s.lam), rng=rng,
                            resume=resume)  # fmt: skip
        return _finish(runs, d, r, scale, nonneg, method, reason, warnings, details, rank_info)


def _finish(runs, d: _Data, r, scale, nonneg, method, reason, warnings, details,
            rank_info) -> Result:  # fmt: skip
    order = sorted(range(len(runs)), key=lambda i: (runs[i].objective, i))
    best = runs[order[0]]
    dead = _eps(d.dtype) * math.sqrt(d.norm_sq)
    f, lam = _normalise(*best.factors, dead)
    f = [a.astype(d.dtype) for a in f]
    lam_w = lam.astype(d.dtype)
    metrics = _certify(d, f, np.asarray(lam_w, np.float64), nonneg)
    metrics["norm_fro"] /= scale
    shape = d.shape
    n_par = r * (1 + sum(shape))
    metrics["n_parameters"] = int(n_par)
    metrics["compression_ratio"] = math.prod(shape) / n_par
    # None marks a restart whose objective was not finite (JSON has no infinity)
    metrics["restart_objectives"] = [run.objective if math.isfinite(run.objective) else None
                                     for run in runs]  # fmt: skip
    if len(runs) > 1:
        f2, _ = _normalise(*runs[order[1]].factors, dead)
        metrics["factor_match"] = factor_match(f, f2)
        metrics["factor_match_restarts"] = [runs[order[0]].restart, runs[order[1]].restart]
    if scale != 1.0:
        lam_w = (np.asarray(lam_w, np.float64) / scale).astype(d.dtype)
    restarts = restart_rows(runs)
    stop_reason = loop_stop_reason(best.loop)
    details = {
        **details,
        **best.details,
        "restarts": restarts,
        "kept_restart": best.restart,
        "iterations": best.loop.iterations,
        "normalisation": ("unit ℓ2 factor columns, scale in weights (≥ 0, descending); each "
                          "mode but the last has a positive largest entry per column"),
    }  # fmt: skip
    arrays = {"weights": np.ascontiguousarray(lam_w)}
    for n, a in enumerate(f):
        arrays[f"factors/{n}"] = np.ascontiguousarray(a)
    return Result(arrays=arrays, method=method, method_reason=reason, metrics=metrics,
                  details=details, history=best.loop.history, converged=best.loop.converged,
                  stop_reason=stop_reason, warnings=tuple(warnings), rank=rank_info)  # fmt: skip


def _zero_result(shape, dtype, r, method, reason, warnings, details, rank_info) -> Result:
    warnings.append("the data is all zeros: weights and factors are zero")
    metrics = {"relative_frobenius_error": 0.0, "error_method": "zero tensor",
               "error_bounds": [0.0, 0.0], "norm_fro": 0.0, "fit": 1.0, "objective": 0.0,
               "n_parameters": int(r * (1 + sum(shape))),
               "compression_ratio": math.prod(shape) / (r * (1 + sum(shape))),
               "restart_objectives": [0.0]}  # fmt: skip
    arrays = {"weights": np.zeros(r, dtype)}
    for n, s in enumerate(shape):
        arrays[f"factors/{n}"] = np.zeros((s, r), dtype)
    return Result(arrays=arrays, method=method, method_reason=reason, metrics=metrics,
                  details={**details, "iterations": 0}, history=[], converged=True,
                  stop_reason="zero tensor", warnings=tuple(warnings), rank=rank_info)  # fmt: skip


__all__ = ["cp", "estimate_bytes", "check_parameters", "factor_match", "mttkrp", "max_rank",
           "split_modes", "INITS"]  # fmt: skip
