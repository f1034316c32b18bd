"""Nonnegative matrix factorisation (NMF) and semi-NMF.

``X ≈ W H`` with ``W`` (m×k) and ``H`` (k×n). NMF keeps both factors nonnegative; semi-NMF
(Ding, Li & Jordan 2010, ``X ≈ F Gᵀ`` with ``G ≥ 0`` and ``F`` free) is returned in the same
layout, ``W = F`` (free sign) and ``H = Gᵀ`` (nonnegative), so that every NMF output reads
the same way.

Objectives (what ``metrics["objective"]`` and the history report)
-----------------------------------------------------------------
* Frobenius: ``½‖X − WH‖²_F`` over the observed entries
  ``+ l1_w·ΣW + l1_h·ΣH + ½·l2_w‖W‖²_F + ½·l2_h‖H‖²_F``.
* KL: the generalised Kullback–Leibler divergence ``Σ x log(x/y) − x + y`` (``y = WH``, over
  the observed entries) plus the same penalties.
* semi-NMF: ``½‖X − WH‖²_F`` (no penalties).

Convergence is on the relative decrease of the objective per sweep (``tol``) through the
shared :func:`rankwise.core.loop.run_loop`; one sweep updates all columns of ``W``, then all
rows of ``H``.

Solvers
-------
* ``hals`` (default for Frobenius): fast HALS (Cichocki & Phan 2009) — every column of ``W``
  is the exact minimiser with the others fixed, computed from the Gram products ``X Hᵀ`` and
  ``H Hᵀ``, formed once per half-sweep. Following Gillis & Glineur (2012, "Accelerated
  multiplicative updates and HALS"), a half-sweep repeats its column updates while they stay
  cheap next to the products (a deterministic flop model, no timing) and still move the
  factor (each repeat must change it by more than 10% of the first). Entries are clipped at
  exact zero (so sparsity is real and the KKT check exact); a column of ``W`` or row of ``H``
  that becomes entirely zero is set to a tiny floor (``eps·typical entry``) so that its Gram
  diagonal stays positive and it can come back (the "zero-locking" of HALS).
* ``mu``: Lee–Seung multiplicative updates for Frobenius and KL (β = 1). L1 penalties enter
  the denominators (a valid majoriser, as in scikit-learn); KL with an L2 penalty uses the
  exact minimiser of the separable majoriser, ``2a/(b + √(b² + 4·l2·a))``, so it stays
  monotone. Exact zeros (e.g. from ``init="nndsvd"``) cannot move under MU.

Every sweep decreases the objective in exact arithmetic (HALS: exact block minimisation; MU and
semi-NMF: majorise–minimise). The Frobenius objective is tracked from the Gram products,
``‖X‖² − 2·tr(HᵀWᵀX) + tr(WᵀW·HHᵀ)``, whose rounding is about ``(k+2)·eps·‖X‖²``; when the fit
falls within 100 times that of zero the sweep computes the residual explicitly instead, and
without penalties a residual at the rounding floor (relative error ≤ 10·(k+2)·eps) is reported
as objective 0, which ends the loop (stop reason "fit at the rounding floor"). The objective
and error of the returned factors are recomputed exactly (explicit residual in row blocks,
float64 sums) at the end, with the KKT check: the largest projected-gradient entry of each
factor relative to the largest entry of its data term (``X Hᵀ``, ``Xᵀ W``; for KL
``(X/WH) Hᵀ``, …), entries ≤ 1e-8 of their column's largest counting as at the bound.

Small problems (products under ``SMALL_PRODUCT_FLOPS``) run BLAS single-threaded: the column
updates are many small calls, and waking BLAS threads for each costs more than they save.

Missing entries (dense NaN): masked NMF
---------------------------------------
The objective covers the observed entries only. The Frobenius loss runs a *masked HALS*: the
residual ``E = M ⊙ (X − WH)`` is kept explicitly and column ``j`` of ``W`` is updated row by
row to the exact minimiser over the observed entries,
``w_ij ← max(0, (E_i·h_j + w_ij·d_ij − l1)/(d_ij + l2))`` with ``d_ij = Σ_l M_il h_jl²``,
followed by a rank-one update of ``E`` (then likewise for the rows of ``H``). It keeps HALS's
exact block minimisation, hence monotonicity and its speed of convergence (weighted MU
converges far more slowly), at O(mnk) per sweep and three m×n arrays (data, mask, residual).
``solver="mu"`` and the KL loss use the masked multiplicative updates instead. A row (column)
with no observed entry carries no information: its row of ``W`` (column of ``H``) is set to
zero, predicting 0, and a warning says how many there are. The NNDSVD initialisation uses the
SVD of the zero-filled matrix divided by the observed fraction (the unbiased estimate of ``X``
used in matrix completion).

Sparse input (SciPy sparse): stored entries are the data and the others are zeros (not
missing). It is never densified: the products are ``X @ Hᵀ`` and ``Xᵀ @ W``, the KL ratio
``X/(WH)`` is evaluated at the stored entries only, and the exact residual at the end is
formed in row blocks of ``W·H`` (not of ``X``).

Conventions
-----------
* Rows of ``H`` have unit ℓ2 norm and ``W`` absorbs the scale (unregularised problems only:
  with penalties the scale is part of the optimum and is left as the solver found it), then
  components are ordered by descending ``‖W_:,i‖·‖H_i,:‖`` (stable sort: ties keep their order).
  A component below rounding (``‖W_:,i‖·‖H_i,:‖ ≤ eps·‖X‖``, e.g. switched off by an L1
  penalty) is returned as exact zeros, last.
* Data so extreme that its squares would overflow (float64 beyond 2^±400, float32 beyond
  2^±40) is scaled by an exact power of four; W and H are scaled back, the objectives stay
  those of the scaled data (a warning says by how much: they may not fit in a float).
* One ``numpy.random.Generator`` reaches every random step (randomised SVD of the
  initialisation, random initialisations, restarts): the same seed gives the same bytes.
* Restarts (``n_init > 1``): the first uses ``init``; later ones use ``random`` when ``init``
  is deterministic (``nndsvd``, ``nndsvda``, semi-NMF ``svd``), otherwise ``init`` with fresh
  random draws. The restart with the lowest final objective is kept (the first on ties).
* float32 input is computed and returned in float32; integers and booleans in float64.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from . import randomized
from .checkpoint import Checkpointable
from .errors import BudgetError, DataError, ParameterError
from .errors import human_bytes as _human
from .linalg import eps as _eps
from .linalg import thin_svd
from .loop import restart_rows, run_restarts
from .loop import stop_reason as loop_stop_reason
from .operator import as_operator, dense_matmat, dense_rmatmat
from .result import Result
from .validate import (
    check_matrix_shape,
    count_nonfinite,
    is_sparse,
    safe_exponent,
    working_dtype,
)

SOLVERS = ("auto", "hals", "mu")
LOSSES = ("frobenius", "kl")
INITS = ("auto", "nndsvd", "nndsvda", "nndsvdar", "random")
SEMI_INITS = ("svd", "random")

# Gillis & Glineur (2012): a HALS half-sweep repeats its cheap column updates at most
# 1 + α·ρ times, ρ = 1 + (cost of the products)/(cost of one pass of column updates), and
# stops repeating once a pass changes the factor by less than δ times the first pass did.
INNER_ALPHA = 0.5
INNER_DELTA = 0.1
MAX_INNER = 20
# Flop-equivalent of one NumPy call in that cost model (~1 µs at a few GFlop/s): for small
# factors the interpreter, not the arithmetic, bounds a pass of column updates.
CALL_FLOPS = 10_000
# The Gram identity for ‖X − WH‖² loses its digits once the fit is within this many
# rounding units (k+2)·eps·‖X‖² of zero; then the residual is computed explicitly.
_IDENTITY_MARGIN = 100.0
# NNDSVD's SVD: by the Gram matrix of the short side while min(m, n) ≤ SVD_GRAM_DIM and
# ≤ SVD_GRAM_FACTOR·(k + oversampling) (its m·n·min(m, n) flops then undercut the ~10 passes
# of 2·m·n·(k + p) flops of a randomized finder); else randomized.
SVD_GRAM_DIM = 1000
SVD_GRAM_FACTOR = 8
SVD_OVERSAMPLE = 10
NNDSVD_CUT = 1e-6
# Row blocks of the explicit residual (W·H rows formed block by block).
RESIDUAL_BLOCK_BYTES = 8 << 20
# An explicit residual of sparse input forms W·H in row blocks: m·n·k flops, affordable
# up to this many entries; beyond, the nonzero formula below is used (its bound stated).
SPARSE_EXACT_ENTRIES = 1 << 28
# Entries of a factor at or below this fraction of their column's largest entry count as
# being at the bound 0 in the KKT check (MU approaches zeros geometrically, never exactly).
_KKT_BOUND_REL = 1e-8
# Entries of W·H are floored at this fraction of the mean of X before the KL ratio X/(WH).
_KL_FLOOR_REL = 1e-12
# Below this many flops per product (X·Hᵀ, or a Gram product for sparse X), BLAS threads cost
# more in wake-ups than they save (and on a busy machine their spinning competes with the
# interpreter that drives the column updates): the solver then runs BLAS single-threaded.
# Measured on digits (1797×64, k = 10): 2.3× faster single-threaded on 2 cores.
SMALL_PRODUCT_FLOPS = 5e7


@dataclass(frozen=True)
class Regularisation:
    l1_w: float = 0.0
    l1_h: float = 0.0
    l2_w: float = 0.0
    l2_h: float = 0.0

    @property
    def any(self) -> bool:
        return any(v != 0.0 for v in (self.l1_w, self.l1_h, self.l2_w, self.l2_h))

    def scaled(self, s: float, loss: str) -> Regularisation:
        """The same problem for data multiplied by ``s`` (factors by √s)."""
        if s == 1.0 or not self.any:
            return self
        # s^1.5 by exact powers (s = 4^j): a float power overflows for the largest scales
        a, b = (s * math.sqrt(s), s) if loss == "frobenius" else (math.sqrt(s), 1.0)
        out = Regularisation(self.l1_w * a, self.l1_h * a, self.l2_w * b, self.l2_h * b)
        if not all(math.isfinite(v) for v in out.as_dict().values()):
            e = round(math.log2(s))
            raise DataError(f"the penalties are out of floating-point range for data of magnitude "
                            f"near 2^{-e} (rescaled to unit size they become infinite); rescale "
                            "the data or drop the penalties")  # fmt: skip
        return out

    def penalty(self, w, ht) -> float:
        out = 0.0
        if self.l1_w:
            out += self.l1_w * float(np.sum(w, dtype=np.float64))
        if self.l1_h:
            out += self.l1_h * float(np.sum(ht, dtype=np.float64))
        if self.l2_w:
            out += 0.5 * self.l2_w * _sumsq(w)
        if self.l2_h:
            out += 0.5 * self.l2_h * _sumsq(ht)
        return out

    def as_dict(self) -> dict:
        return {"l1_w": self.l1_w, "l1_h": self.l1_h, "l2_w": self.l2_w, "l2_h": self.l2_h}


# --- parameters and memory ------------------------------------------------------------------


def check_parameters(*, rank=None, solver: str = "auto", loss: str = "frobenius",
                     init: str = "auto", l1_w: float = 0.0, l1_h: float = 0.0,
                     l2_w: float = 0.0, l2_h: float = 0.0, tol: float = 1e-4,
                     max_iter: int = 200, n_init: int = 1, semi: bool = False) -> None:  # fmt: skip
    """Refuse invalid parameters (callers run this before reading any data)."""
    if rank is not None and (isinstance(rank, bool) or int(rank) != rank or rank < 1):
        raise ParameterError(f"rank must be a positive integer, got {rank}")
    if semi:
        if init not in SEMI_INITS:
            raise ParameterError(f"unknown semi-NMF init {init!r}; choose from "
                                 f"{', '.join(SEMI_INITS)}")  # fmt: skip
    else:
        if solver not in SOLVERS:
            raise ParameterError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
        if loss not in LOSSES:
            raise ParameterError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        if init not in INITS:
            raise ParameterError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
        if loss == "kl" and solver == "hals":
            raise ParameterError(
                "the KL loss needs the multiplicative-update solver (solver 'mu' or "
                "'auto'); HALS minimises the Frobenius loss"
            )
        for name, v in (("l1_w", l1_w), ("l1_h", l1_h), ("l2_w", l2_w), ("l2_h", l2_h)):
            if not (math.isfinite(v) and v >= 0):
                raise ParameterError(f"{name} must be finite and ≥ 0, got {v}")
    if not (math.isfinite(float(tol)) and float(tol) >= 0):
        raise ParameterError(f"tol must be finite and ≥ 0, got {tol}")
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer ≥ 0, got {max_iter}")
    if isinstance(n_init, bool) or int(n_init) != n_init or n_init < 1:
        raise ParameterError(f"n_init must be an integer ≥ 1, got {n_init}")


def estimate_bytes(shape, dtype, *, rank: int, sparse: bool = False, nnz: int | None = None,
                   masked: bool = False, loss: str = "frobenius", solver: str = "hals",
                   semi: bool = False, n_init: int = 1) -> int:  # fmt: skip
    """Peak bytes of the input in memory plus the working set, before anything is allocated.

    Counts the input, the factors with their products and buffers (and a kept copy of the
    best restart), the masked mode's filled data, mask and residual (plus a rank-one
    temporary), the KL arrays ``W·H`` and ``X/(WH)`` (dense) or their values at the stored
    entries (sparse), the SVD of the initialisation and the blocks of the final residual.
    """
    m, n = (int(s) for s in shape)
    k = max(1, min(int(rank), m, n))
    w = np.dtype(dtype).itemsize
    nnz = int(nnz or 0)
    stored = nnz * (w + 8) + (m + 1) * 8 if sparse else m * n * w
    factors = 8 * (m + n) * k * w + (2 if n_init > 1 else 0) * (m + n) * k * w
    extra = 0
    dense_mn = m * n * w
    if masked:
        # filled data, float mask, residual or W·H, a temporary; the NaN mask (bool)
        extra += 4 * dense_mn + m * n
        if solver == "mu" or loss == "kl":
            extra += dense_mn  # W·H and the ratio / masked product
    elif loss == "kl" and not semi:
        if sparse:
            extra += 4 * nnz * w + 2 * min(nnz, 1 << 16) * k * w + nnz * 8
        else:
            extra += 3 * dense_mn  # W·H, X/(WH) and the x·log(x/y) terms
    ell = min(m, n, k + SVD_OVERSAMPLE)
    if not sparse and min(m, n) <= min(SVD_GRAM_DIM, SVD_GRAM_FACTOR * ell):
        r = min(m, n)
        init = m * n * 8 + (m + n) * r * 8 + 4 * r * r * 8
    else:
        init = 4 * (m + n) * ell * w + (nnz * 8 if sparse else 0)
    resid = 2 * RESIDUAL_BLOCK_BYTES + 2 * min(RESIDUAL_BLOCK_BYTES, m * n * w)
    return int(stored + factors + max(extra + resid, init))


# --- data ------------------------------------------------------------------------------------


class _Data:
    """The matrix as the solvers see it: observed values (0 at missing entries), the mask in
    masked mode, norms over the observed entries, and the two products."""

    def __init__(self, x, mask, *, n_missing: int, empty_rows, empty_cols):
        self.x = x
        self.mask = mask
        self.sparse = is_sparse(x)
        self.shape = tuple(int(s) for s in x.shape)
        self.dtype = x.dtype
        self.n_missing = int(n_missing)
        self.empty_rows = empty_rows
        self.empty_cols = empty_cols
        vals = x.data if self.sparse else x
        self.norm_sq = _sumsq(vals)
        self.total = _sum64(vals)
        m, n = self.shape
        self.n_obs = (m * n - self.n_missing) if not self.sparse else m * n
        self.nnz = int(x.nnz) if self.sparse else m * n
        self._coords = None

    @property
    def masked(self) -> bool:
        return self.mask is not None

    def matmat(self, ht):
        """X @ Hᵀ (m×k, F-ordered)."""
        if self.sparse:
            return np.asfortranarray(self.x @ ht)
        return dense_matmat(self.x, ht)

    def rmatmat(self, w):
        """Xᵀ @ W (n×k, F-ordered)."""
        if self.sparse:
            return np.asfortranarray(self.x.T @ w)
        return dense_rmatmat(self.x, w)

    def coords(self):
        """Row and column index of every stored entry (sparse)."""
        if self._coords is None:
            x = self.x
            rows = np.repeat(np.arange(self.shape[0], dtype=np.intp), np.diff(x.indptr))
            self._coords = (rows, np.asarray(x.indices, dtype=np.intp))
        return self._coords

    def values_at_nonzeros(self, w, ht, out=None):
        """(W·H) at the stored entries, in chunks (never an nnz×k temporary)."""
        rows, cols = self.coords()
        nnz = rows.shape[0]
        out = np.empty(nnz, dtype=w.dtype) if out is None else out
        step = max(1, (8 << 20) // max(1, 2 * w.shape[1] * w.itemsize))
        for s in range(0, nnz, step):
            e = min(nnz, s + step)
            np.einsum("ij,ij->i", w[rows[s:e]], ht[cols[s:e]], out=out[s:e])
        return out

    def row_blocks(self):
        m, n = self.shape
        step = max(1, RESIDUAL_BLOCK_BYTES // max(1, n * self.dtype.itemsize))
        for s in range(0, m, step):
            yield s, min(m, s + step)

    def exact_affordable(self) -> bool:
        return not self.sparse or self.shape[0] * self.shape[1] <= SPARSE_EXACT_ENTRIES

    def residual_sq(self, w, ht) -> tuple[float, str, float]:
        """(‖M⊙(X − WH)‖², how, absolute rounding bound on it), accumulated in float64."""
        m, n = self.shape
        k = w.shape[1]
        htt = np.ascontiguousarray(ht.T)
        if self.sparse and not self.exact_affordable():
            # ‖X − WH‖² = Σ_nz (x − y)² + (‖WH‖² − Σ_nz y²): only the second term, the mass
            # of W·H off the stored entries, suffers cancellation.
            y = self.values_at_nonzeros(w, ht)
            r = np.asarray(self.x.data, np.float64) - y
            y64 = np.asarray(y, np.float64)
            wh_sq = _dot64(w.T @ w, ht.T @ ht)
            off = wh_sq - float(y64 @ y64)
            bound = 4.0 * (k + 2) * _eps(w.dtype) * wh_sq
            return float(r @ r) + max(off, 0.0), "stored-entry residual + Gram identity", bound
        total = 0.0
        x = self.x
        for s, e in self.row_blocks():
            blk = w[s:e] @ htt
            if self.sparse:
                ip = x.indptr[s : e + 1]
                local = np.repeat(np.arange(e - s), np.diff(ip))
                sl = slice(ip[0], ip[-1])
                blk[local, x.indices[sl]] -= x.data[sl]
            else:
                np.subtract(blk, x[s:e], out=blk)
                if self.mask is not None:
                    blk *= self.mask[s:e]
            v = blk.astype(np.float64, copy=False).ravel()
            total += float(v @ v)
        bound = 2.0 * (k + 2) * _eps(w.dtype) * (math.sqrt(total) + 1e-300) * math.sqrt(
            self.norm_sq)  # fmt: skip
        return total, "explicit residual (row blocks)", bound


def _sumsq(v) -> float:
    """Σ v² accumulated in float64 (row blocks for large arrays)."""
    v = np.asarray(v)
    if v.size <= _SUMSQ_BLOCK and (v.flags.c_contiguous or v.flags.f_contiguous):
        f = v.ravel(order="K")
        f = f if f.dtype == np.float64 else f.astype(np.float64)
        return float(f @ f)
    if v.ndim != 2:
        v = v.reshape(v.shape[0], -1) if v.ndim > 1 else v.reshape(-1, 1)
    step = max(1, _SUMSQ_BLOCK // max(1, v.shape[1]))
    return float(sum(_sumsq(np.ascontiguousarray(v[s : s + step]))
                     for s in range(0, v.shape[0], step)))  # fmt: skip


_SUMSQ_BLOCK = 1 << 20


def _sum64(v) -> float:
    return float(np.sum(v, dtype=np.float64))


def _dot64(a, b) -> float:
    """Σ a ⊙ b in float64 (small arrays)."""
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _prepare(a, *, method: str, allow_nan: bool):
    """Check shape, dtype and finiteness without copying; return (a, working dtype, sparse,
    number of NaN)."""
    if not is_sparse(a):
        a = np.asarray(a)
    check_matrix_shape(a.shape, method=method)
    wdt = working_dtype(a.dtype, method=method)
    sparse = is_sparse(a)
    nan, inf = count_nonfinite(a)
    if inf:
        raise DataError(f"input holds {inf} infinite value(s); {method} needs finite data")
    if nan and sparse:
        raise DataError(
            f"sparse input holds {nan} NaN value(s); in sparse input the stored entries are the"
            " data and the others zeros, so NaN cannot mark a missing entry"
        )
    if nan and not allow_nan:
        raise DataError(f"input holds {nan} NaN value(s); {method} needs complete data")
    size = a.shape[0] * a.shape[1]
    if nan and nan == size:
        raise DataError(f"every entry of the input is NaN (missing); {method} needs data")
    return a, wdt, sparse, nan


def _convert(a, wdt, sparse):
    if sparse:
        import scipy.sparse as sp

        x = sp.csr_array(a)
        if x.dtype != wdt:
            x = x.astype(wdt)
        if not x.has_canonical_format:
            x = x.copy()  # the input's arrays may be shared: never modify them
            x.sum_duplicates()
        return x
    x = np.asarray(a)
    return x if x.dtype == wdt else x.astype(wdt)


def _check_nonnegative(x, sparse: bool, nan: int, method: str) -> None:
    if sparse:
        vals = x.data
        if vals.size == 0:
            return
        amin = float(vals.min())
        count = int(np.count_nonzero(vals < 0)) if amin < 0 else 0
    else:
        amin = float(np.nanmin(x) if nan else x.min())
        count = 0
        if amin < 0:
            step = max(1, (8 << 20) // max(1, x.shape[1]))
            for s in range(0, x.shape[0], step):
                count += int(np.count_nonzero(x[s : s + step] < 0))
    if amin < 0:
        raise DataError(
            f"{method} needs nonnegative data; the input holds {count} negative value(s), the "
            f"smallest {amin:.6g} (semi-NMF accepts mixed signs)"
        )


def _abs_max(x, sparse: bool, nan: int) -> float:
    v = x.data if sparse else x
    if v.size == 0:
        return 0.0
    hi = np.nanmax(v) if nan else np.max(v)
    lo = np.nanmin(v) if nan else np.min(v)
    return float(max(abs(float(hi)), abs(float(lo))))


def _power_of_four_scale(amax: float, dtype) -> float:
    """Exact power of four bringing max|X| near 1 when the data is extreme for the working
    dtype (beyond 2^±400 in float64, 2^±40 in float32: the Gram products' squares would
    overflow or vanish), else 1.0."""
    if amax == 0.0 or not math.isfinite(amax):
        return 1.0
    e = int(np.frexp(amax)[1])
    if abs(e) <= safe_exponent(dtype):
        return 1.0
    cap = np.finfo(dtype).maxexp - 2  # 2^k stays finite in the working dtype (subnormal maxima)
    return float(np.ldexp(1.0, min(-2 * (e // 2), cap - cap % 2)))


def _build_data(x, wdt, sparse, nan, scale):
    m, n = x.shape
    if scale != 1.0:
        x = x * wdt.type(scale)  # a new array: the input is never modified
    if not nan:
        empty = np.zeros(0, dtype=np.intp)
        return _Data(x, None, n_missing=0, empty_rows=empty, empty_cols=empty)
    observed = ~np.isnan(x)
    xf = np.where(observed, x, wdt.type(0))
    empty_rows = np.flatnonzero(~observed.any(axis=1))
    empty_cols = np.flatnonzero(~observed.any(axis=0))
    mask = observed.astype(wdt)
    del observed
    return _Data(np.ascontiguousarray(xf), np.ascontiguousarray(mask), n_missing=nan,
                 empty_rows=empty_rows, empty_cols=empty_cols)  # fmt: skip


def _blas_threads(d: _Data, k: int):
    """(context manager, description) for the BLAS threads of the solve."""
    m, n = d.shape
    flops = max(0.0 if d.sparse else 2.0 * m * n * k, 2.0 * (m + n) * k * k)
    if flops < SMALL_PRODUCT_FLOPS:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas"), "1 (small products)"
    return contextlib.nullcontext(), "as configured"


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --- initialisation --------------------------------------------------------------------------


def svd_from_gram(g, k: int, tall: bool, times, rtimes):
    """Leading k triplets of A from the Gram ``g`` of its short side (AᵀA when ``tall``, else
    AAᵀ), with ``times(V) = A V`` and ``rtimes(U) = Aᵀ U`` forming the other side."""
    import scipy.linalg as sla

    lam, vec = sla.eigh(np.asarray(g, np.float64), check_finite=False)
    lam, vec = lam[::-1][:k], vec[:, ::-1][:, :k]
    s = np.sqrt(np.maximum(lam, 0.0))
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    if tall:
        return times(vec) * inv, s, vec.T
    return vec, s, (rtimes(vec) * inv).T


def _leading_svd(d: _Data, k: int, rng):
    """Leading k singular triplets (for the initialisation, where ~sqrt(eps) accuracy of the
    trailing values does not matter): an eigendecomposition of the Gram matrix of the short
    side when that side is small (m·n·min(m, n) flops, less than a randomized finder's
    passes), else a randomized range finder with adaptive power iterations (sparse data
    stays sparse)."""

    m, n = d.shape
    short = min(m, n)
    if not d.sparse and short <= SVD_GRAM_DIM and short <= SVD_GRAM_FACTOR * (k + SVD_OVERSAMPLE):
        x = d.x
        g = (x.T @ x) if n <= m else (x @ x.T)
        u, s, vt = svd_from_gram(g, k, n <= m, lambda v: x @ v.astype(x.dtype),
                                 lambda v: (v.T.astype(x.dtype) @ x).T)  # fmt: skip
    else:
        fact = randomized.fixed_rank(as_operator(d.x), k, oversample=SVD_OVERSAMPLE,
                                     power_iters=None, rng=rng)  # fmt: skip
        ub, s, vt, _ = thin_svd(np.ascontiguousarray(fact.right))
        u, s, vt = fact.left @ ub[:, :k], s[:k], vt[:k]
    if d.masked:  # the SVD of the zero-filled data over the observed fraction
        s = s * (m * n / max(1, d.n_obs))
    return u, s, vt


def _nndsvd(u, s, vt, variant: str, mean: float, rng, dtype):
    """NNDSVD of Boutsidis & Gallopoulos (2008), with scikit-learn's fills of its zeros:
    ``nndsvda`` the data mean, ``nndsvdar`` small random values (mean/100·|N(0,1)|)."""
    m, k = u.shape
    n = vt.shape[1]
    u = np.asarray(u, np.float64)
    vt = np.asarray(vt, np.float64)
    s = np.asarray(s, np.float64)
    w = np.zeros((m, k))
    h = np.zeros((k, n))
    s0 = math.sqrt(max(float(s[0]), 0.0))
    w[:, 0] = s0 * np.abs(u[:, 0])
    h[0] = s0 * np.abs(vt[0])
    for j in range(1, k):
        x, y = u[:, j], vt[j]
        xp, yp = np.maximum(x, 0), np.maximum(y, 0)
        xn, yn = np.maximum(-x, 0), np.maximum(-y, 0)
        xpn, ypn = np.linalg.norm(xp), np.linalg.norm(yp)
        xnn, ynn = np.linalg.norm(xn), np.linalg.norm(yn)
        if xpn * ypn >= xnn * ynn:
            uu, vv, a, b = xp, yp, xpn, ypn
        else:
            uu, vv, a, b = xn, yn, xnn, ynn
        sigma = a * b
        if sigma <= 0.0 or s[j] <= 0.0:
            continue  # no nonnegative part: left zero (filled below for nndsvda/r)
        lam = math.sqrt(float(s[j]) * sigma)
        w[:, j] = lam * uu / a
        h[j] = lam * vv / b
    # scikit-learn zeroes entries below 1e-6 (absolute); the same cut relative to a typical
    # factor entry √(mean/k) keeps it for data of any scale
    cut = NNDSVD_CUT * math.sqrt(max(mean, 0.0) / k)
    w[w < cut] = 0.0
    h[h < cut] = 0.0
    if variant == "nndsvda":
        w[w == 0] = mean
        h[h == 0] = mean
    elif variant == "nndsvdar":
        zw, zh = w == 0, h == 0
        w[zw] = np.abs(mean * rng.standard_normal(int(zw.sum())) / 100)
        h[zh] = np.abs(mean * rng.standard_normal(int(zh.sum())) / 100)
    return np.asfortranarray(w, dtype=dtype), np.asfortranarray(h.T, dtype=dtype)


def restart_init(d, k: int, r: int, init: str, rng, svd_cache: dict, mean: float, wdt,
                 leading_svd=None):  # fmt: skip
    """(W, Hᵀ, name) to start restart ``r``: ``init`` for the first, random for later ones
    when ``init`` is NNDSVD (the same start again would give the same run); the leading SVD
    behind NNDSVD (``leading_svd(d, k, rng)``, this module's by default) is computed once
    into ``svd_cache``."""
    name = "random" if r > 0 and init in ("nndsvd", "nndsvda") else init
    if name == "random":
        w, ht = _random_init(d, k, rng)
    else:
        if "svd" not in svd_cache:
            svd_cache["svd"] = (leading_svd or _leading_svd)(d, k, rng)
        w, ht = _nndsvd(*svd_cache["svd"], name, mean, rng, wdt)
    return w, ht, name


def _random_init(d: _Data, k: int, rng):
    """scikit-learn's random init: sqrt(mean/k)·|N(0,1)| entries."""
    m, n = d.shape
    mean = d.total / max(1, d.n_obs)
    avg = math.sqrt(max(mean, 0.0) / k)
    h = avg * np.abs(rng.standard_normal((k, n)))
    w = avg * np.abs(rng.standard_normal((m, k)))
    return np.asfortranarray(w, dtype=d.dtype), np.asfortranarray(h.T, dtype=d.dtype)


# --- HALS ------------------------------------------------------------------------------------


def _inner_limit(product_flops: float, rows: int, k: int) -> int:
    """Gillis–Glineur's bound 1 + α·ρ on the repeated column passes of one half-sweep."""
    one_pass = 2.0 * rows * k * k + 4.0 * rows * k + 3.0 * k * CALL_FLOPS
    rho = 1.0 + product_flops / one_pass
    return max(1, min(MAX_INNER, int(1 + INNER_ALPHA * rho)))


def _floor_for(d: _Data, k: int) -> float:
    """A tiny positive value for a factor entry: eps times a typical entry √(mean/k)."""
    mean = d.total / max(1, d.n_obs)
    return float(_eps(d.dtype) * math.sqrt(max(mean, np.finfo(d.dtype).tiny) / k))


def _revive(f, floor: float) -> int:
    """Set columns that are entirely zero to ``floor``; return how many."""
    dead = ~np.any(f > 0, axis=0)
    if dead.any():
        f[:, dead] = floor
    return int(dead.sum())


def _hals_update(f, num, gram, l1: float, l2: float, passes: int, floor: float, buf,
                 on_pass=None) -> int:  # fmt: skip
    """Update every column of ``f`` (rows×k, F-ordered) in place: column j becomes
    ``max(0, (num_j − l1 − Σ_{i≠j} f_i gram_ij) / (gram_jj + l2))``, the exact minimiser of
    ½‖X − f·otherᵀ‖² + penalties over that column. Returns the number of passes made.
    ``on_pass(f)``, when given, sees ``f`` after each pass and replaces the stopping rule
    (True stops): the Dask engine takes that decision over all row blocks."""
    k = f.shape[1]
    dg = np.diagonal(gram) + l2
    dg = np.where(dg > 0, dg, 1)
    p = (num - l1) / dg
    q = gram / dg
    np.fill_diagonal(q, 0)
    qt = np.ascontiguousarray(q.T)  # row j = column j of q
    first = None
    done = 0
    for t in range(passes):
        old = f.copy(order="F") if passes > 1 and on_pass is None else None
        for j in range(k):
            np.dot(f, qt[j], out=buf)
            np.subtract(p[:, j], buf, out=buf)
            np.maximum(buf, 0, out=f[:, j])
        done = t + 1
        if on_pass is not None:
            if on_pass(f):
                break
        elif passes > 1:
            old -= f
            delta = float(np.sqrt(_sumsq(old)))
            if t == 0:
                first = delta
            elif delta <= INNER_DELTA * first:
                break
    _revive(f, floor)
    return done


class _GramFit:
    """Frobenius fit from Gram products, with the explicit residual near zero."""

    def __init__(self, d: _Data, k: int):
        self.d = d
        self.gamma = (k + 2) * _eps(d.dtype) * d.norm_sq
        self.explicit = 0

    def fit(self, cross: float, wh_sq: float, w, ht) -> float:
        f = 0.5 * (self.d.norm_sq - 2.0 * cross + wh_sq)
        if f < 0.5 * _IDENTITY_MARGIN * self.gamma and self.d.exact_affordable():
            f = 0.5 * self.d.residual_sq(w, ht)[0]
            self.explicit += 1
        return max(f, 0.0)


class _HALS(Checkpointable):
    name = "hals"
    STATE = ("w", "ht", "hht", "aht", "passes_done", "gram_fit.explicit")

    def __init__(self, d: _Data, w, ht, reg: Regularisation, floor: float):
        self.d, self.reg, self.floor = d, reg, floor
        self.w = np.asfortranarray(w)
        self.ht = np.asfortranarray(ht)
        _revive(self.w, floor)
        _revive(self.ht, floor)
        m, n = d.shape
        k = self.w.shape[1]
        self.k = k
        self.hht = self.ht.T @ self.ht
        self.aht = d.matmat(self.ht)  # kept for the first sweep
        prod = 2.0 * d.nnz * k
        self.passes_w = _inner_limit(prod + 2.0 * n * k * k, m, k)
        self.passes_h = _inner_limit(prod + 2.0 * m * k * k, n, k)
        self.buf_m = np.empty(m, dtype=d.dtype)
        self.buf_n = np.empty(n, dtype=d.dtype)
        self.gram_fit = _GramFit(d, k)
        self.passes_done = [0, 0]

    def objective0(self) -> tuple[float, float]:
        cross = _dot64(self.aht, self.w)
        fit = self.gram_fit.fit(cross, _dot64(self.w.T @ self.w, self.hht), self.w, self.ht)
        return fit + self.reg.penalty(self.w, self.ht), fit

    def sweep(self, it: int):
        d, reg = self.d, self.reg
        aht = self.aht if self.aht is not None else d.matmat(self.ht)
        self.aht = None
        self.passes_done[0] += _hals_update(self.w, aht, self.hht, reg.l1_w, reg.l2_w,
                                            self.passes_w, self.floor, self.buf_m)  # fmt: skip
        del aht
        atw = d.rmatmat(self.w)
        wtw = self.w.T @ self.w
        self.passes_done[1] += _hals_update(self.ht, atw, wtw, reg.l1_h, reg.l2_h,
                                            self.passes_h, self.floor, self.buf_n)  # fmt: skip
        self.hht = self.ht.T @ self.ht
        fit = self.gram_fit.fit(_dot64(atw, self.ht), _dot64(wtw, self.hht), self.w, self.ht)
        return _report(d, fit, reg, self.w, self.ht)

    def details(self) -> dict:
        return {"max_passes": {"W": self.passes_w, "H": self.passes_h},
                "passes": {"W": self.passes_done[0], "H": self.passes_done[1]},
                "explicit_residual_sweeps": self.gram_fit.explicit}  # fmt: skip


# A residual below this many rounding units (k+2)·eps·‖X‖ is noise: the fit cannot improve
# (HALS on exact data bottoms out near 2.5·eps·‖X‖ in float64 and in float32, measured).
_FLOOR_MARGIN = 10.0


def _report(d: _Data, fit: float, reg, w, ht):
    """(objective, history extras) of a Frobenius sweep. Without penalties, a fit at the
    rounding floor (relative error ≤ 10·(k+2)·eps) is reported as objective 0, which stops
    the loop: further sweeps only move rounding noise."""
    rel = math.sqrt(2.0 * fit / d.norm_sq) if d.norm_sq > 0 else 0.0
    extras = {"relative_error": rel}
    if reg is not None and reg.any:
        return fit + reg.penalty(w, ht), extras
    if rel <= _FLOOR_MARGIN * (w.shape[1] + 2) * _eps(d.dtype):
        extras["at_rounding_floor"] = True
        return 0.0, extras
    return fit, extras


class _MaskedHALS(Checkpointable):
    """HALS on the observed entries with an explicit masked residual (see module docstring)."""

    name = "hals"
    STATE = ("w", "ht", "e")

    def __init__(self, d: _Data, w, ht, reg: Regularisation, floor: float):
        self.d, self.reg, self.floor = d, reg, floor
        self.w = np.asfortranarray(w)
        self.ht = np.asfortranarray(ht)
        self.w[d.empty_rows] = 0
        self.ht[d.empty_cols] = 0
        _revive(self.w, floor)
        _revive(self.ht, floor)
        m, n = d.shape
        self.e = np.ascontiguousarray(self.w @ self.ht.T)
        np.subtract(d.x, self.e, out=self.e)
        self.e *= d.mask
        self.tmp = np.empty((m, n), dtype=d.dtype)

    def objective0(self):
        fit = 0.5 * _sumsq(self.e)
        return fit + self.reg.penalty(self.w, self.ht), fit

    def _pass(self, f, g, l1, l2, rows_side: bool):
        d, e, tmp, mask = self.d, self.e, self.tmp, self.d.mask
        for j in range(f.shape[1]):
            h = g[:, j]
            if rows_side:  # f = W (m×k), g = Hᵀ
                num = e @ h
                den = mask @ (h * h)
            else:  # f = Hᵀ (n×k), g = W
                num = h @ e
                den = (h * h) @ mask
            old = f[:, j].copy()
            num += old * den
            num -= l1
            den += l2
            new = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            np.maximum(new, 0, out=new)
            if not new.any():
                new[:] = self.floor
                if rows_side:
                    new[d.empty_rows] = 0
                else:
                    new[d.empty_cols] = 0
            delta = new - old
            f[:, j] = new
            if rows_side:
                np.multiply.outer(delta, h, out=tmp)
            else:
                np.multiply.outer(h, delta, out=tmp)
            tmp *= mask
            e -= tmp

    def sweep(self, it: int):
        reg = self.reg
        self._pass(self.w, self.ht, reg.l1_w, reg.l2_w, True)
        self._pass(self.ht, self.w, reg.l1_h, reg.l2_h, False)
        fit = 0.5 * _sumsq(self.e)
        return _report(self.d, fit, reg, self.w, self.ht)

    def details(self) -> dict:
        return {"variant": "masked HALS (explicit residual on observed entries)"}


# --- multiplicative updates ----------------------------------------------------------------


def _tiny(dtype) -> float:
    return float(np.finfo(dtype).tiny)


class _MUFrobenius(Checkpointable):
    name = "mu"

    @property
    def STATE(self):  # noqa: N802 - the Checkpointable attribute, per variant
        if self.d.masked:
            return ("w", "ht", "wh")
        return ("w", "ht", "hht", "aht", "gram_fit.explicit")

    def __init__(self, d: _Data, w, ht, reg: Regularisation, floor: float):
        self.d, self.reg = d, reg
        self.w = np.asfortranarray(w)
        self.ht = np.asfortranarray(ht)
        self.tiny = _tiny(d.dtype)
        k = self.w.shape[1]
        if d.masked:
            self.wh = self._masked_wh()
        else:
            self.hht = self.ht.T @ self.ht
            self.aht = d.matmat(self.ht)
            self.gram_fit = _GramFit(d, k)

    def _masked_wh(self):
        wh = np.ascontiguousarray(self.w @ self.ht.T)
        wh *= self.d.mask
        return wh

    def _masked_fit(self) -> float:
        r = self.wh - self.d.x
        return 0.5 * _sumsq(r)

    def objective0(self):
        if self.d.masked:
            fit = self._masked_fit()
        else:
            cross = _dot64(self.aht, self.w)
            fit = self.gram_fit.fit(cross, _dot64(self.w.T @ self.w, self.hht), self.w, self.ht)
        return fit + self.reg.penalty(self.w, self.ht), fit

    def _mult(self, f, num, den, l1, l2):
        if l2:
            den = den + l2 * f
        if l1:
            den = den + l1
        np.maximum(den, self.tiny, out=den)
        f *= num / den

    def sweep(self, it: int):
        d, reg = self.d, self.reg
        if d.masked:
            num = dense_matmat(d.x, self.ht)
            den = dense_matmat(self.wh, self.ht)
            self._mult(self.w, num, den, reg.l1_w, reg.l2_w)
            self.wh = self._masked_wh()
            num = dense_rmatmat(d.x, self.w)
            den = dense_rmatmat(self.wh, self.w)
            self._mult(self.ht, num, den, reg.l1_h, reg.l2_h)
            self.wh = self._masked_wh()
            fit = self._masked_fit()
        else:
            aht = self.aht if self.aht is not None else d.matmat(self.ht)
            self.aht = None
            self._mult(self.w, aht, self.w @ self.hht, reg.l1_w, reg.l2_w)
            del aht
            atw = d.rmatmat(self.w)
            wtw = self.w.T @ self.w
            self._mult(self.ht, atw, self.ht @ wtw, reg.l1_h, reg.l2_h)
            self.hht = self.ht.T @ self.ht
            fit = self.gram_fit.fit(_dot64(atw, self.ht), _dot64(wtw, self.hht), self.w, self.ht)
        return _report(d, fit, reg, self.w, self.ht)

    def details(self) -> dict:
        if self.d.masked:
            return {"variant": "masked multiplicative updates"}
        return {"explicit_residual_sweeps": self.gram_fit.explicit}


class _MUKL(Checkpointable):
    """Lee–Seung multiplicative updates for the generalised KL divergence."""

    name = "mu"
    STATE = ("w", "ht")

    def restore(self, state: dict) -> None:
        super().restore(state)
        self._ratio()  # a function of W and H alone: recomputed to the same bytes

    def __init__(self, d: _Data, w, ht, reg: Regularisation, floor: float):
        self.d, self.reg = d, reg
        self.w = np.asfortranarray(w)
        self.ht = np.asfortranarray(ht)
        self.tiny = _tiny(d.dtype)
        mean = d.total / max(1, d.n_obs)
        self.yfloor = max(_KL_FLOOR_REL * mean, self.tiny)
        self._ratio()

    def _ratio(self):
        """X/(WH) at the observed entries (0 elsewhere) and the objective's parts."""
        from scipy.special import xlogy

        d = self.d
        if d.sparse:
            import scipy.sparse as sp

            y = d.values_at_nonzeros(self.w, self.ht)
            np.maximum(y, self.yfloor, out=y)
            x = d.x
            ratio = x.data / y
            self.r = sp.csr_array((ratio, x.indices, x.indptr), shape=x.shape)
            self.xlog = float(np.sum(xlogy(x.data, ratio), dtype=np.float64))  # 0 at stored 0
            sum_y = _dot64(self.w.sum(axis=0), self.ht.sum(axis=0))
            xy = float(np.dot(x.data.astype(np.float64), y))
            wh_sq = _dot64(self.w.T @ self.w, self.ht.T @ self.ht)
            self.fro_sq = max(d.norm_sq - 2.0 * xy + wh_sq, 0.0)
        else:
            y = np.ascontiguousarray(self.w @ self.ht.T)
            np.maximum(y, self.yfloor, out=y)
            if d.masked:
                y *= d.mask
                sum_y = _sum64(y)
                np.maximum(y, self.yfloor, out=y)  # missing entries: x = 0, any y
            else:
                sum_y = _sum64(y)
            r = d.x / y
            self.xlog = float(np.sum(xlogy(d.x, r), dtype=np.float64))
            if d.masked:
                y *= d.mask
            np.subtract(y, d.x, out=y)
            self.fro_sq = _sumsq(y)
            self.r = r
        self.kl = self.xlog - self.d.total + sum_y

    def objective0(self):
        return self.kl + self.reg.penalty(self.w, self.ht), self.kl

    def _update(self, f, num, den, l1, l2):
        a = f * num
        den = den + l1 if l1 else den
        if l2:
            root = np.sqrt(den * den + 4.0 * l2 * a)
            den = den + root
            a *= 2.0
        np.divide(a, den, out=f, where=den > 0)
        f[np.broadcast_to(den <= 0, f.shape)] = 0

    def sweep(self, it: int):
        d, reg = self.d, self.reg
        if d.masked:
            den_w = dense_matmat(d.mask, self.ht)
        else:
            den_w = np.broadcast_to(self.ht.sum(axis=0), self.w.shape)
        num_w = self._rmul_rows()
        self._update(self.w, num_w, den_w, reg.l1_w, reg.l2_w)
        self._ratio()
        if d.masked:
            den_h = dense_rmatmat(d.mask, self.w)
        else:
            den_h = np.broadcast_to(self.w.sum(axis=0), self.ht.shape)
        num_h = self._rmul_cols()
        self._update(self.ht, num_h, den_h, reg.l1_h, reg.l2_h)
        self._ratio()
        rel = math.sqrt(self.fro_sq / d.norm_sq) if d.norm_sq > 0 else 0.0
        return self.kl + reg.penalty(self.w, self.ht), {"relative_error": rel}

    def _rmul_rows(self):
        """(X/(WH)) @ Hᵀ."""
        if self.d.sparse:
            return np.asfortranarray(self.r @ self.ht)
        return dense_matmat(self.r, self.ht)

    def _rmul_cols(self):
        """(X/(WH))ᵀ @ W."""
        if self.d.sparse:
            return np.asfortranarray(self.r.T @ self.w)
        return dense_rmatmat(self.r, self.w)

    def details(self) -> dict:
        return {"wh_floor": self.yfloor}


# --- semi-NMF -------------------------------------------------------------------------------


class _Semi(Checkpointable):
    """Ding, Li & Jordan (2010): F = X G (GᵀG)⁻¹ by least squares, then
    G ← G ⊙ √(((XᵀF)⁺ + G(FᵀF)⁻) / ((XᵀF)⁻ + G(FᵀF)⁺))."""

    name = "semi-nmf"
    STATE = ("w", "ht", "a", "rank_deficient", "gram_fit.explicit")

    def __init__(self, d: _Data, ht):
        self.d = d
        self.ht = np.asfortranarray(ht)
        self.k = self.ht.shape[1]
        self.gram_fit = _GramFit(d, self.k)
        self.tiny = _tiny(d.dtype)
        self.rank_deficient = 0
        # W for the initial H, and Xᵀ W, kept for the first sweep
        self._solve_w()
        self.a = self.d.rmatmat(self.w)

    def objective0(self):
        b = self.w.T @ self.w
        fit = self.gram_fit.fit(_dot64(self.a, self.ht), _dot64(b, self.ht.T @ self.ht),
                                self.w, self.ht)  # fmt: skip
        return fit, fit

    def _solve_w(self):
        """W = X Hᵀ (H Hᵀ)⁻¹ as X·pinv(H): QR of Hᵀ (no squared condition number), then the
        pseudo-inverse of the small triangle by its SVD (handles a rank-deficient H)."""
        import scipy.linalg as sla

        q, r = sla.qr(self.ht, mode="economic", check_finite=False)
        xq = self.d.matmat(np.asfortranarray(q))
        u, s, vt = sla.svd(r, check_finite=False)
        keep = s > s[0] * self.k * _eps(self.d.dtype) if s[0] > 0 else np.zeros_like(s, bool)
        if not keep.all():
            self.rank_deficient += 1
        # pinv(R)ᵀ = U diag(1/s) Vᵀ over the kept values
        inv = (u[:, keep] / s[keep]) @ vt[keep]
        self.w = np.asfortranarray(xq @ inv.astype(self.d.dtype, copy=False))

    def sweep(self, it: int):
        if self.a is None:
            self._solve_w()
            self.a = self.d.rmatmat(self.w)
        w, ht, a = self.w, self.ht, self.a  # a = XᵀW (n×k)
        self.a = None
        b = w.T @ w
        ap, an = np.maximum(a, 0), np.maximum(-a, 0)
        bp, bn = np.maximum(b, 0), np.maximum(-b, 0)
        num = ap + ht @ bn
        den = an + ht @ bp
        np.maximum(den, self.tiny, out=den)
        ht *= np.sqrt(num / den)
        fit = self.gram_fit.fit(_dot64(a, ht), _dot64(b, ht.T @ ht), w, ht)
        return _report(self.d, fit, None, w, ht)

    def details(self) -> dict:
        return {"explicit_residual_sweeps": self.gram_fit.explicit,
                "rank_deficient_solves": self.rank_deficient}  # fmt: skip


# --- post-processing and certification -------------------------------------------------------


def _normalise(w, ht, rescale: bool, dead: float):
    """Unit ℓ2 rows of H (W absorbs the scale) when ``rescale``; then order components by
    descending ‖W_:,i‖·‖H_i,:‖ (stable). A component with ‖W_:,i‖·‖H_i,:‖ ≤ ``dead``
    (eps·‖X‖: below rounding, e.g. switched off by an L1 penalty and held at the floor) is
    returned as exact zeros, last."""
    wn = np.linalg.norm(np.asarray(w, np.float64), axis=0)
    hn = np.linalg.norm(np.asarray(ht, np.float64), axis=0)
    strength = wn * hn
    w = np.array(w, order="F", copy=True)
    ht = np.array(ht, order="F", copy=True)
    off = strength <= dead
    if off.any():
        w[:, off] = 0
        ht[:, off] = 0
        strength[off] = 0.0
        hn[off] = 0.0
    if rescale:
        s = np.where(hn > 0, hn, 1.0)
        ht /= s.astype(ht.dtype)
        w *= s.astype(w.dtype)
    order = np.argsort(-strength, kind="stable")
    return np.asfortranarray(w[:, order]), np.asfortranarray(ht[:, order])


def _projected_violation(f, grad, free: bool = False) -> float:
    """max |projected gradient|: |g| in the interior, max(−g, 0) at the bound 0."""
    if free:
        return float(np.max(np.abs(grad))) if grad.size else 0.0
    colmax = np.max(f, axis=0) if f.size else np.zeros(0)
    at_bound = f <= _KKT_BOUND_REL * colmax
    pg = np.where(at_bound, np.maximum(-grad, 0), np.abs(grad))
    return float(np.max(pg)) if pg.size else 0.0


def _gradients(d: _Data, w, ht, loss: str, reg: Regularisation):
    """(grad_W, grad_Hᵀ, scale_W, scale_H): gradients of the objective and the size of
    their data terms (what a relative violation is measured against)."""
    if loss == "kl":
        mean = d.total / max(1, d.n_obs)
        floor = max(_KL_FLOOR_REL * mean, _tiny(d.dtype))
        if d.sparse:
            import scipy.sparse as sp

            y = np.maximum(d.values_at_nonzeros(w, ht), floor)
            r = sp.csr_array((d.x.data / y, d.x.indices, d.x.indptr), shape=d.shape)
            rw, rh = np.asarray(r @ ht), np.asarray(r.T @ w)
            onew = np.broadcast_to(ht.sum(axis=0), w.shape)
            oneh = np.broadcast_to(w.sum(axis=0), ht.shape)
        else:
            y = np.maximum(w @ ht.T, floor)
            r = d.x / y
            rw, rh = r @ ht, r.T @ w
            if d.masked:
                onew, oneh = d.mask @ ht, d.mask.T @ w
            else:
                onew = np.broadcast_to(ht.sum(axis=0), w.shape)
                oneh = np.broadcast_to(w.sum(axis=0), ht.shape)
        gw = onew - rw
        gh = oneh - rh
        sw, sh = float(np.max(rw, initial=0.0)), float(np.max(rh, initial=0.0))
    elif d.masked:
        e = w @ ht.T
        np.subtract(d.x, e, out=e)
        e *= d.mask
        gw, gh = -(e @ ht), -(e.T @ w)
        sw = float(np.max(np.abs(d.x @ ht), initial=0.0))
        sh = float(np.max(np.abs(d.x.T @ w), initial=0.0))
    else:
        aht, atw = d.matmat(ht), d.rmatmat(w)
        gw = w @ (ht.T @ ht) - aht
        gh = ht @ (w.T @ w) - atw
        sw = float(np.max(np.abs(aht), initial=0.0))
        sh = float(np.max(np.abs(atw), initial=0.0))
    if reg.l1_w or reg.l2_w:
        gw = gw + reg.l1_w + reg.l2_w * w
    if reg.l1_h or reg.l2_h:
        gh = gh + reg.l1_h + reg.l2_h * ht
    return gw, gh, sw, sh


def _kl_exact(d: _Data, w, ht) -> float:
    """Generalised KL divergence over the observed entries, float64, blocked."""
    from scipy.special import xlogy

    mean = d.total / max(1, d.n_obs)
    floor = max(_KL_FLOOR_REL * mean, _tiny(d.dtype))
    if d.sparse:
        y = np.maximum(d.values_at_nonzeros(w, ht), floor).astype(np.float64)
        x = d.x.data.astype(np.float64)
        sum_y = _dot64(w.sum(axis=0), ht.sum(axis=0))
        return float(np.sum(xlogy(x, x / y))) - d.total + sum_y
    htt = np.ascontiguousarray(ht.T)
    total = 0.0
    for s, e in d.row_blocks():
        y = np.maximum(w[s:e] @ htt, floor).astype(np.float64)
        x = d.x[s:e].astype(np.float64)
        t = xlogy(x, x / y) - x + y
        if d.masked:
            t *= d.mask[s:e]
        total += float(t.sum())
    return total


def _certify(d: _Data, w, ht, loss: str, reg: Regularisation, semi: bool) -> dict:
    err_sq, how, bound = d.residual_sq(w, ht)
    norm = math.sqrt(d.norm_sq)
    rel = math.sqrt(err_sq) / norm if norm > 0 else 0.0
    out = {
        "relative_frobenius_error": rel,
        "error_method": how + (" over observed entries" if d.masked else ""),
        "error_bounds": [
            math.sqrt(max(err_sq - bound, 0.0)) / norm if norm > 0 else 0.0,
            math.sqrt(err_sq + bound) / norm if norm > 0 else 0.0,
        ],
        "norm_fro": norm,
    }
    if loss == "kl":
        kl = _kl_exact(d, w, ht)
        out["kl_divergence"] = kl
        out["objective"] = kl + reg.penalty(w, ht)
    else:
        out["objective"] = 0.5 * err_sq + reg.penalty(w, ht)
    gw, gh, sw, sh = _gradients(d, w, ht, loss, reg)
    kw = _projected_violation(w, gw, free=semi) / sw if sw > 0 else 0.0
    kh = _projected_violation(ht, gh) / sh if sh > 0 else 0.0
    out.update(kkt=max(kw, kh), kkt_W=kw, kkt_H=kh)
    out["min_W"] = float(np.min(w)) if w.size else 0.0
    out["min_H"] = float(np.min(ht)) if ht.size else 0.0
    return out


def factor_match(w_a, w_b) -> float:
    """Mean cosine of the columns of two nonnegative factors after optimal one-to-one
    matching (Hungarian algorithm on the cosine matrix), in [0, 1]; 1 means the same
    components."""
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(w_a, np.float64)
    b = np.asarray(w_b, np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    a = a / np.where(na > 0, na, 1.0)
    b = b / np.where(nb > 0, nb, 1.0)
    c = a.T @ b
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(min(1.0, np.mean(c[rows, cols])))  # cosines can round above 1


# --- drivers ------------------------------------------------------------------------------------


def _rank_info(rank: int, k: int, m: int, n: int) -> dict:
    return {"value": int(k), "rule": "rank", "threshold": int(rank),
            "max_rank": int(min(m, n)), "clamped": bool(rank > min(m, n)),
            "by_rule": [{"rule": "rank", "threshold": int(rank), "rank": int(k),
                         "given": True}]}  # fmt: skip


def _clamp(rank: int, m: int, n: int, warnings: list) -> int:
    r = min(m, n)
    if rank > r:
        warnings.append(f"rank {rank} exceeds min(m, n) = {r}; clamped to {r}")
        return r
    return int(rank)


def _budget(est: int, max_memory, what: str, m: int, n: int, dtype, sparse: bool) -> None:
    if max_memory is not None and est > max_memory:
        raise BudgetError(
            f"{what} needs about {_human(est)} for shape {m}×{n} {np.dtype(dtype)}"
            f"{' (sparse)' if sparse else ''} but the memory budget is {_human(max_memory)}"
        )


def _finish_result(runs, d, k, rank, scale, loss, reg_user, reg_work, semi, method,
                   reason, warnings, details) -> Result:  # fmt: skip
    m, n = d.shape
    order = sorted(range(len(runs)), key=lambda i: (runs[i].objective, i))
    best = runs[order[0]]
    rescale = not reg_work.any
    dead = _eps(d.dtype) * math.sqrt(d.norm_sq)
    w, ht = _normalise(*best.factors, rescale, dead)
    metrics = _certify(d, w, ht, loss, reg_work, semi)
    metrics["norm_fro"] /= scale
    # None marks a restart whose objective was not finite (JSON has no infinity)
    metrics["restart_objectives"] = [r.objective if math.isfinite(r.objective) else None
                                     for r in runs]  # fmt: skip
    if len(runs) > 1:
        w2, ht2 = _normalise(*runs[order[1]].factors, rescale, dead)
        # semi-NMF's W has free signs (cosines down to −1): its nonnegative H is compared
        metrics["factor_match"] = factor_match(ht, ht2) if semi else factor_match(w, w2)
        metrics["factor_match_restarts"] = [runs[order[0]].restart, runs[order[1]].restart]
    if scale != 1.0:
        # exact powers of two: H keeps unit rows and W takes the scale; unnormalised
        # (penalised) factors share it, as the penalties were transformed
        sw, sh = (scale, 1.0) if rescale else (math.sqrt(scale), math.sqrt(scale))
        w = w / w.dtype.type(sw)
        ht = ht / ht.dtype.type(sh)
        metrics["min_W"] /= sw
        metrics["min_H"] /= sh
        e = int(round(math.log2(scale)))
        warnings.append(f"entries of magnitude near 2^{-e} were scaled by 2^{e} (exactly) to "
                        "keep the Gram products finite; W and H are scaled back, objectives "
                        f"are those of the data times 2^{e}")  # fmt: skip
    restarts = restart_rows(runs)
    stop_reason = loop_stop_reason(best.loop)
    details = {
        **details,
        "restarts": restarts,
        "kept_restart": best.restart,
        "iterations": best.loop.iterations,
        "regularisation": reg_user.as_dict(),
        "normalisation": ("rows of H unit ℓ2 norm, W absorbs the scale; " if rescale else
                          "scale left as solved (penalties fix it); ")
        + "components by descending ‖W_:,i‖·‖H_i,:‖",
        "scale": scale,
    }  # fmt: skip
    arrays = {"W": np.ascontiguousarray(w), "H": np.ascontiguousarray(ht.T)}
    return Result(arrays=arrays, method=method, method_reason=reason, metrics=metrics,
                  details=details, history=best.loop.history, converged=best.loop.converged,
                  stop_reason=stop_reason, warnings=tuple(warnings),
                  rank=_rank_info(rank, k, m, n))  # fmt: skip


def _zero_result(shape, dtype, rank, k, method, reason, warnings, details, loss) -> Result:
    m, n = shape
    warnings.append("the data is all zeros: W and H are zero")
    metrics = {"relative_frobenius_error": 0.0, "error_method": "zero matrix",
               "error_bounds": [0.0, 0.0], "norm_fro": 0.0, "objective": 0.0,
               "kkt": 0.0, "kkt_W": 0.0, "kkt_H": 0.0, "min_W": 0.0, "min_H": 0.0,
               "restart_objectives": [0.0]}  # fmt: skip
    if loss == "kl":
        metrics["kl_divergence"] = 0.0
    return Result(arrays={"W": np.zeros((m, k), dtype), "H": np.zeros((k, n), dtype)},
                  method=method, method_reason=reason, metrics=metrics,
                  details={**details, "iterations": 0}, history=[], converged=True,
                  stop_reason="zero matrix", warnings=tuple(warnings),
                  rank=_rank_info(rank, k, m, n))  # fmt: skip


def nmf(a, rank: int, *, solver: str = "auto", loss: str = "frobenius", init: str = "auto",
        l1_w: float = 0.0, l1_h: float = 0.0, l2_w: float = 0.0, l2_h: float = 0.0,
        tol: float = 1e-4, max_iter: int = 200, n_init: int = 1, rng=None, callback=None,
        max_memory: int | None = None, resume: dict | None = None) -> Result:  # fmt: skip
    """Nonnegative matrix factorisation ``X ≈ W H`` (see the module docstring).

    ``a``: dense array (NaN marks a missing entry: masked NMF over the observed entries) or a
    SciPy sparse matrix (never densified). ``solver``: ``hals`` (Frobenius), ``mu`` (Frobenius
    or KL) or ``auto`` (HALS for Frobenius, MU for KL). ``init``: ``nndsvd``, ``nndsvda``,
    ``nndsvdar``, ``random`` or ``auto`` (``nndsvda``, as scikit-learn). ``tol``: relative
    decrease of the objective per sweep at which to stop. ``callback(event)`` sees every
    sweep (``event.extras["restart"]`` says which restart); returning True stops.
    ``resume``: an ``event.state()`` of an earlier run with the same data and parameters,
    continued from there to the same bytes.

    Returns a :class:`Result` with ``arrays = {"W": m×k, "H": k×n}``.
    """
    check_parameters(rank=rank, solver=solver, loss=loss, init=init, l1_w=l1_w, l1_h=l1_h,
                     l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter, n_init=n_init)  # fmt: skip
    rng = _as_rng(rng)
    a, wdt, sparse, nan = _prepare(a, method="nmf", allow_nan=True)
    m, n = (int(s) for s in a.shape)
    warnings: list[str] = []
    k = _clamp(int(rank), m, n, warnings)
    used = solver if solver != "auto" else ("mu" if loss == "kl" else "hals")
    masked = bool(nan)
    est = estimate_bytes((m, n), wdt, rank=k, sparse=sparse, nnz=a.nnz if sparse else None,
                         masked=masked, loss=loss, solver=used, n_init=n_init)  # fmt: skip
    est += 0 if (sparse or a.dtype == wdt) else m * n * wdt.itemsize
    _budget(est, max_memory, f"nmf --solver {used}", m, n, wdt, sparse)
    x = _convert(a, wdt, sparse)
    _check_nonnegative(x, sparse, nan, "nmf")
    scale = _power_of_four_scale(_abs_max(x, sparse, nan), wdt)
    d = _build_data(x, wdt, sparse, nan, scale)
    del x
    reg_user = Regularisation(float(l1_w), float(l1_h), float(l2_w), float(l2_h))
    reg = reg_user.scaled(scale, loss)
    init_used = "nndsvda" if init == "auto" else init
    if solver != "auto":
        reason = "requested"
    elif loss == "kl":
        reason = "KL loss: multiplicative updates (β = 1); HALS minimises the Frobenius loss"
    elif masked:
        reason = "Frobenius loss: HALS (exact column updates)"
    else:
        reason = "Frobenius loss: fast HALS (exact column updates from Gram products)"
    if masked:
        frac = nan / (m * n)
        kind = "masked HALS" if used == "hals" else "masked multiplicative updates"
        reason += f"; {nan} missing entries ({100 * frac:.1f}%): {kind} over the observed ones"
        if d.empty_rows.size or d.empty_cols.size:
            warnings.append(
                f"{d.empty_rows.size} row(s) and {d.empty_cols.size} column(s) have no observed "
                "entry: their rows of W / columns of H are set to zero (they predict 0)"
            )
    if sparse:
        reason += "; sparse input: sparse products, never densified"
    if used == "mu" and init_used == "nndsvd":
        warnings.append("init nndsvd leaves exact zeros, which multiplicative updates cannot "
                        "change; nndsvda fills them with the data mean")  # fmt: skip
    details = {"solver": used, "loss": loss, "init": init_used, "n_init": int(n_init),
               "masked": masked, "missing": int(nan), "sparse": sparse,
               "working_dtype": str(wdt), "estimate_bytes": int(est),
               "empty_rows": int(d.empty_rows.size),
               "empty_cols": int(d.empty_cols.size)}  # fmt: skip
    if d.norm_sq == 0.0:
        return _zero_result((m, n), wdt, int(rank), k, used, reason, warnings, details, loss)
    floor = _floor_for(d, k)
    mean = d.total / max(1, d.n_obs)
    svd_cache = {}

    def make(r):
        w, ht, name = restart_init(d, k, r, init_used, rng, svd_cache, mean, wdt)
        if used == "hals":
            cls = _MaskedHALS if masked else _HALS
        else:
            cls = _MUKL if loss == "kl" else _MUFrobenius
        return cls(d, w, ht, reg, floor), name

    ctx, details["blas_threads"] = _blas_threads(d, k)
    with ctx:
        runs = run_restarts(make, n_init=int(n_init), tol=float(tol), max_iter=int(max_iter),
                            callback=callback, factors=lambda s: (s.w, s.ht), rng=rng,
                            resume=resume)  # fmt: skip
        return _finish_result(runs, d, k, int(rank), scale, loss, reg_user, reg, False, used,
                              reason, warnings, details)  # fmt: skip


def semi_nmf(a, rank: int, *, init: str = "svd", tol: float = 1e-4, max_iter: int = 200,
             n_init: int = 1, rng=None, callback=None, max_memory: int | None = None,
             resume: dict | None = None) -> Result:  # fmt: skip
    """Semi-NMF (Ding, Li & Jordan 2010): ``X ≈ F Gᵀ`` with ``G ≥ 0`` and ``F`` free, for
    mixed-sign data. Returned as ``W = F`` (m×k, free sign) and ``H = Gᵀ`` (k×n, ≥ 0).

    ``init="svd"``: ``Hᵀ = |V_k|`` (columns scaled to a largest entry 1) + 0.2, Ding et al.'s
    offset of their k-means indicators; ``random``: uniform [0.2, 1.2). ``W`` follows by least
    squares in the first sweep. Dense or sparse input; NaN is a data error.
    """
    check_parameters(rank=rank, init=init, tol=tol, max_iter=max_iter, n_init=n_init,
                     semi=True)  # fmt: skip
    rng = _as_rng(rng)
    a, wdt, sparse, nan = _prepare(a, method="semi-NMF", allow_nan=False)
    m, n = (int(s) for s in a.shape)
    warnings: list[str] = []
    k = _clamp(int(rank), m, n, warnings)
    est = estimate_bytes((m, n), wdt, rank=k, sparse=sparse, nnz=a.nnz if sparse else None,
                         semi=True, n_init=n_init)  # fmt: skip
    est += 0 if (sparse or a.dtype == wdt) else m * n * wdt.itemsize
    _budget(est, max_memory, "nmf --semi", m, n, wdt, sparse)
    x = _convert(a, wdt, sparse)
    scale = _power_of_four_scale(_abs_max(x, sparse, 0), wdt)
    d = _build_data(x, wdt, sparse, 0, scale)
    del x
    reason = ("semi-NMF (Ding, Li & Jordan): least-squares W, multiplicative nonnegative H"
              + ("; sparse input: sparse products, never densified" if sparse else ""))  # fmt: skip
    details = {"solver": "semi-nmf", "loss": "frobenius", "init": init, "n_init": int(n_init),
               "masked": False, "missing": 0, "sparse": sparse, "working_dtype": str(wdt),
               "estimate_bytes": int(est)}  # fmt: skip
    if d.norm_sq == 0.0:
        return _zero_result((m, n), wdt, int(rank), k, "semi-nmf", reason, warnings, details,
                            "frobenius")  # fmt: skip
    svd_cache = {}

    def make(r):
        name = init if r == 0 else "random"
        if name == "svd":
            if "svd" not in svd_cache:
                svd_cache["svd"] = _leading_svd(d, k, rng)
            v = np.abs(np.asarray(svd_cache["svd"][2], np.float64).T)
            top = v.max(axis=0)
            v = v / np.where(top > 0, top, 1.0) + 0.2
        else:
            v = rng.random((n, k)) + 0.2
        return _Semi(d, np.asfortranarray(v, dtype=wdt)), name

    ctx, details["blas_threads"] = _blas_threads(d, k)
    with ctx:
        runs = run_restarts(make, n_init=int(n_init), tol=float(tol), max_iter=int(max_iter),
                            callback=callback, factors=lambda s: (s.w, s.ht), rng=rng,
                            resume=resume)  # fmt: skip
        return _finish_result(runs, d, k, int(rank), scale, "frobenius", Regularisation(),
                              Regularisation(), True, "semi-nmf", reason, warnings,
                              details)  # fmt: skip


__all__ = ["nmf", "semi_nmf", "estimate_bytes", "check_parameters", "factor_match",
           "SOLVERS", "LOSSES", "INITS", "SEMI_INITS"]  # fmt: skip
