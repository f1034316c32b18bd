"""Shared tensor utilities: mode Grams, mode products, blocked reconstruction residuals,
parameter counts and the slab passes over a file handle.

Layout and names
----------------
Tensors are C-ordered NumPy arrays of shape ``(I_0, …, I_{N-1})``. The mode-``n`` unfolding
``X_(n)`` (``I_n × ∏_{m≠n} I_m``) is never copied whole: viewing the tensor as
``(P, I_n, Q)`` with ``P = ∏_{m<n} I_m`` and ``Q = ∏_{m>n} I_m`` (a reshape, no copy),

* ``X_(n) X_(n)ᵀ = Σ_p X[p] X[p]ᵀ`` (the Gram: one BLAS syrk on the view for the first and
  last modes, a loop of syrk over the leading index ``p`` for the middle modes, or syrk on
  small transposed blocks when the slices ``X[p]`` are too thin for BLAS to run well);
* ``X ×_n M`` (``M`` of shape ``J × I_n``) is ``M @ X[p]`` for every ``p``: one GEMM on the
  view for the first and last modes, a batched GEMM (``np.matmul`` broadcasting over ``p``)
  for the middle ones, or, when ``Q`` is tiny, one GEMM with ``Mᵀ ⊗ I_Q`` (a small
  ``I_n Q × J Q`` matrix) on the ``(P, I_n Q)`` view.

Precision
---------
Grams are accumulated in float64 whatever the data's dtype: float32 blocks are widened in
bounded buffers (a product of two float32 numbers is exact in float64), so the eigenvalues of
a float32 tensor's Gram are as accurate as those of a float64 one. Norms and residuals are
float64 sums over blocks. Mode products keep the working dtype (float32 stays float32).

Eigenvalues of a Gram are accurate to about ``n·eps·λ_max`` in absolute terms (``n`` the
Gram's size, eps of float64): smaller ones are rounding (:func:`gram_resolution`).

Slab passes
-----------
A large tensor is reached through a handle with ``shape``, ``dtype`` and
``iter_blocks(rows)`` yielding ``(start, block)`` slabs along axis 0 (``rankwise.formats``
handles, or :class:`ArraySlabs` for an in-memory array). The Gram of any mode ``n ≥ 1`` and
every product over modes ``≥ 1`` are sums, or row-local maps, over slabs; the Gram of mode 0
is not (it needs products between slabs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import DataError, human_bytes
from .validate import count_nonfinite, working_dtype

human = human_bytes  # byte counts in messages (tucker, tt)

# Widened (float32 → float64) or transposed copies for the Gram are made in buffers of at most
# this many bytes.
GRAM_BLOCK_BYTES = 8 << 20
# A middle-mode slice X[p] (I_n × Q) at least this big is multiplied in place (a view); below,
# slices are gathered into transposed blocks first (many tiny BLAS calls are slow).
VIEW_SLICE_BYTES = 256 << 10
# Mode products with Q ≤ this use one GEMM with the small Kronecker factor Mᵀ ⊗ I_Q.
KRON_MAX_Q = 4
# Slabs of the blocked residual and of the reconstruction (float64 bytes per slab).
RESIDUAL_BLOCK_BYTES = 8 << 20
# A tail of eigenvalues of an n×n Gram is known to about n·eps·λ_max; a rank rule needs its
# threshold this many times above that to be decided by the Gram (else an SVD is used).
RESOLVE_MARGIN = 100.0


# --- checks and conversions --------------------------------------------------------------------


def check_tensor_shape(shape, *, method: str, min_order: int, hint: str = "") -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) < min_order:
        raise DataError(
            f"{method} needs a tensor of order ≥ {min_order}; got {len(shape)}-D shape "
            f"{shape}{hint}"
        )
    if 0 in shape:
        raise DataError(f"{method} needs a non-empty tensor; got shape {shape}")
    return shape


def as_float_tensor(x, *, method: str) -> tuple[np.ndarray, np.dtype, str | None]:
    """``x`` in its working dtype and C order; returns (array, dtype, why a copy was made)."""
    x = np.asarray(x)
    wdt = working_dtype(x.dtype, method=method)
    why = None
    if x.dtype != wdt:
        why = f"converted from {x.dtype} to {wdt}"
    elif not x.flags.c_contiguous:
        why = "copied to C order"
    if why is not None:
        x = np.ascontiguousarray(x, dtype=wdt)
    return x, wdt, why


def check_finite_tensor(x, *, method: str) -> None:
    nan, inf = count_nonfinite(x)
    if inf:
        raise DataError(f"input holds {inf} infinite value(s); {method} needs finite data")
    if nan:
        raise DataError(
            f"input holds {nan} NaN value(s); {method} needs complete data"
            " (NaN marks a missing entry: use a completion method)"
        )


# --- views -------------------------------------------------------------------------------------


def split3(shape, n: int) -> tuple[int, int, int]:
    """(P, I_n, Q) with P = ∏_{m<n} I_m and Q = ∏_{m>n} I_m."""
    shape = tuple(int(s) for s in shape)
    return math.prod(shape[:n]), shape[n], math.prod(shape[n + 1 :])


# --- Grams ---------------------------------------------------------------------------------------


def mode_gram(x: np.ndarray, n: int, *, out: np.ndarray | None = None,
              block_bytes: int = GRAM_BLOCK_BYTES) -> np.ndarray:  # fmt: skip
    """``X_(n) X_(n)ᵀ`` in float64 (added to ``out`` when given), without an unfolding copy.

    ``x`` must be C-contiguous. float64 data is multiplied in place (views); other dtypes are
    widened block by block in buffers of at most ``block_bytes``.
    """
    p_, i_, q_ = split3(x.shape, n)
    g = np.zeros((i_, i_), dtype=np.float64) if out is None else out
    x3 = x.reshape(p_, i_, q_)
    f64 = x.dtype == np.float64
    if f64 and p_ == 1:
        a = x3[0]
        g += a @ a.T  # numpy calls syrk for a @ a.T
        return g
    if f64 and q_ == 1:
        a = x3[:, :, 0]
        g += a.T @ a
        return g
    if f64 and i_ * q_ * 8 >= VIEW_SLICE_BYTES:
        for p in range(p_):
            a = x3[p]
            g += a @ a.T
        return g
    # Gather blocks (I_n × b·q) widened to float64: over p when a slice is small, over
    # column ranges of each slice otherwise.
    row_bytes = i_ * 8
    if i_ * q_ * 8 <= block_bytes:
        b = max(1, min(p_, block_bytes // max(1, i_ * q_ * 8)))
        buf = np.empty((i_, b, q_), dtype=np.float64)
        for p0 in range(0, p_, b):
            nb = min(b, p_ - p0)
            blk = buf if nb == b else np.empty((i_, nb, q_), dtype=np.float64)
            np.copyto(blk, x3[p0 : p0 + nb].transpose(1, 0, 2))
            m = blk.reshape(i_, nb * q_)
            g += m @ m.T
        return g
    c = max(1, block_bytes // row_bytes)
    buf = np.empty((i_, c), dtype=np.float64)
    for p in range(p_):
        for q0 in range(0, q_, c):
            nc = min(c, q_ - q0)
            m = buf if nc == c else np.empty((i_, nc), dtype=np.float64)
            np.copyto(m, x3[p, :, q0 : q0 + nc])
            g += m @ m.T
    return g


def gram_eig(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD Gram: eigenvalues descending (negative rounding
    clipped to 0) and eigenvectors as columns, signs fixed by :func:`fix_signs`."""
    import scipy.linalg as sla

    lam, u = sla.eigh(g, check_finite=False)
    lam = np.maximum(lam[::-1], 0.0)
    u = np.ascontiguousarray(u[:, ::-1])
    return lam, fix_signs(u)


def gram_resolution(lam_max: float, n: int) -> float:
    """Absolute accuracy of the eigenvalues of an n×n float64 Gram with largest λ_max."""
    return float(n) * float(np.finfo(np.float64).eps) * float(lam_max)


def below_resolution(lam: np.ndarray) -> int:
    """How many eigenvalues are at the Gram's rounding level (only known to be ≈ 0)."""
    if lam.size == 0 or lam[0] <= 0:
        return int(lam.size)
    return int(np.count_nonzero(lam < gram_resolution(lam[0], lam.size)))


def fix_signs(u: np.ndarray) -> np.ndarray:
    """Make the entry of largest magnitude of every column positive (the first on ties);
    ``u`` is changed in place and returned."""
    if u.size == 0:
        return u
    idx = np.argmax(np.abs(u), axis=0)
    s = np.sign(u[idx, np.arange(u.shape[1])])
    s[s == 0] = 1
    u *= s.astype(u.dtype)
    return u


class StreamingR:
    """R factor of a tall matrix whose row blocks arrive one at a time (TSQR on a flat tree):
    ``R ← R-factor of [R; block]``, in float64. ``RᵀR`` is the Gram of all the rows, but the
    singular values of ``R`` are those of the matrix to about ``eps·σ_max`` (a Gram only
    resolves them to ``√(n·eps)·σ_max``): the streamed SVD path for small tolerances."""

    def __init__(self, n: int):
        self.n = int(n)
        self.r: np.ndarray | None = None

    def add(self, block: np.ndarray) -> None:
        import scipy.linalg as sla

        b = np.asarray(block, dtype=np.float64).reshape(-1, self.n)
        stack = b if self.r is None else np.concatenate([self.r, b], axis=0)
        if stack.base is not None or not stack.flags.writeable:
            stack = stack.copy()
        r = sla.qr(stack, mode="r", overwrite_a=True, check_finite=False)[0]
        self.r = np.ascontiguousarray(r[: self.n])

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """(squared singular values descending, right singular vectors as columns with fixed
        signs) of the accumulated matrix: the eigen-pairs of its Gram, accurately."""
        import scipy.linalg as sla

        r = self.r if self.r is not None else np.zeros((0, self.n))
        if r.shape[0] == 0:
            return np.zeros(0), np.eye(self.n)
        _, s, vt = sla.svd(r, full_matrices=True, check_finite=False)
        lam = np.zeros(self.n)
        lam[: s.size] = np.asarray(s, np.float64) ** 2
        return lam, fix_signs(np.ascontiguousarray(vt.T))


def svd_needed(tol: float | None, parts: int, n: int) -> bool:
    """Whether a tail threshold ``tol²‖X‖²/parts`` is below what an n×n Gram resolves for any
    λ_max ≤ ‖X‖² (decidable before the data is read)."""
    if tol is None:
        return False
    eps64 = float(np.finfo(np.float64).eps)
    return tol * tol / max(1, parts) < RESOLVE_MARGIN * n * eps64


# --- mode products ---------------------------------------------------------------------------


def mode_product(x: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    """``X ×_n M`` for ``M`` of shape (J, I_n): a new C-ordered tensor with I_n replaced by J.

    ``M`` is cast to ``x``'s dtype. No unfolding is copied (see the module docstring)."""
    m = np.asarray(m, dtype=x.dtype)
    p_, i_, q_ = split3(x.shape, n)
    j_ = m.shape[0]
    shape = (*x.shape[:n], j_, *x.shape[n + 1 :])
    if p_ == 1:
        return (m @ x.reshape(i_, q_)).reshape(shape)
    if q_ == 1:
        return np.ascontiguousarray(x.reshape(p_, i_) @ m.T).reshape(shape)
    if q_ <= KRON_MAX_Q:
        k = np.kron(m.T, np.eye(q_, dtype=x.dtype))  # (I_n q) × (J q)
        return (x.reshape(p_, i_ * q_) @ k).reshape(shape)
    out = np.matmul(m, x.reshape(p_, i_, q_))
    return out.reshape(shape)


def multi_mode_product(x: np.ndarray, mats: dict[int, np.ndarray]) -> np.ndarray:
    """``X ×_n M_n`` over the modes in ``mats``, the largest reduction first (fewest flops)."""
    order = sorted(mats, key=lambda n: (mats[n].shape[0] / x.shape[n], n))
    y = x
    for n in order:
        y = mode_product(y, mats[n], n)
    return y


# --- norms, reconstruction and residuals ---------------------------------------------------


def sq_norm(x: np.ndarray) -> float:
    """‖x‖² as a float64 sum over blocks (no full-size temporary)."""
    flat = x.reshape(-1)
    step = max(1, RESIDUAL_BLOCK_BYTES // 8)
    total = 0.0
    for s in range(0, flat.size, step):
        v = np.asarray(flat[s : s + step], dtype=np.float64)
        total += float(v @ v)
    return total


def tucker_rows(core: np.ndarray, factors: Sequence[np.ndarray], s0: int, s1: int,
                dtype=np.float64) -> np.ndarray:  # fmt: skip
    """Rows ``s0:s1`` (along axis 0) of the Tucker tensor ``core ×_0 U_0 ×_1 U_1 …``."""
    y = mode_product(np.asarray(core, dtype=dtype), np.asarray(factors[0][s0:s1], dtype), 0)
    for n in range(1, len(factors)):
        y = mode_product(y, np.asarray(factors[n], dtype=dtype), n)
    return y


def tt_rows(cores: Sequence[np.ndarray], s0: int, s1: int, dtype=np.float64) -> np.ndarray:
    """Rows ``s0:s1`` (along axis 0) of the TT tensor with cores ``r_{k-1} × I_k × r_k``."""
    left = np.asarray(cores[0][0, s0:s1, :], dtype=dtype)
    for c in cores[1:]:
        r = c.shape[0]
        left = left.reshape(-1, r) @ np.asarray(c, dtype=dtype).reshape(r, -1)
    shape = (s1 - s0, *(c.shape[1] for c in cores[1:]))
    return left.reshape(shape)


def tucker_to_dense(core, factors, dtype=np.float64) -> np.ndarray:
    return tucker_rows(core, factors, 0, factors[0].shape[0], dtype)


def tt_to_dense(cores, dtype=np.float64) -> np.ndarray:
    return tt_rows(cores, 0, cores[0].shape[1], dtype)


def slab_rows(shape, itemsize: int = 8, block_bytes: int = RESIDUAL_BLOCK_BYTES) -> int:
    """Rows along axis 0 whose slab holds about ``block_bytes`` (at least one row)."""
    row = max(1, math.prod(shape[1:]) * itemsize)
    return int(max(1, min(shape[0], block_bytes // row)))


def residual_sq(x, rows_fn, *, rows: int | None = None) -> float:
    """``‖X − T‖²`` in float64, slab by slab; ``rows_fn(s0, s1)`` returns ``T[s0:s1]`` in
    float64 and ``x`` is an array or a slab source."""
    shape = tuple(int(s) for s in x.shape)
    rows = rows or slab_rows(shape)
    total = 0.0
    for s0, blk in iter_slabs(x, rows):
        d = np.asarray(blk, dtype=np.float64) - rows_fn(s0, s0 + blk.shape[0])
        d = d.reshape(-1)
        total += float(d @ d)
    return total


# --- parameter counts ------------------------------------------------------------------------


def tucker_parameters(shape, ranks) -> int:
    return int(math.prod(ranks) + sum(i * r for i, r in zip(shape, ranks, strict=True)))


def tt_parameters(shape, ranks) -> int:
    """``ranks`` are the N+1 bond ranks (r_0 = r_N = 1)."""
    return int(sum(ranks[k] * shape[k] * ranks[k + 1] for k in range(len(shape))))


# --- slab sources ----------------------------------------------------------------------------


def is_slab_source(x) -> bool:
    return hasattr(x, "iter_blocks") and hasattr(x, "shape") and not isinstance(x, np.ndarray)


class ArraySlabs:
    """An in-memory array seen as a slab source (for tests and forced streaming)."""

    def __init__(self, a, chunk_rows: int | None = None):
        self.a = np.asarray(a)
        self.shape, self.dtype = self.a.shape, self.a.dtype
        self.chunks = None if chunk_rows is None else (int(chunk_rows), *self.a.shape[1:])
        self.blocks_served = 0

    def iter_blocks(self, rows: int):
        for start in range(0, self.shape[0], rows):
            self.blocks_served += 1
            yield start, self.a[start : start + rows]


def iter_slabs(x, rows: int, *, prefetch: bool = False, hook=None) -> Iterator:
    """(start, slab) along axis 0 of an array or a slab source; with ``prefetch`` the next
    slab of a source is read in a thread while the current one is used."""
    if not is_slab_source(x):
        a = np.asarray(x)
        for start in range(0, a.shape[0], rows):
            blk = a[start : start + rows]
            if hook is not None:
                hook(start, blk)
            yield start, blk
        return
    from .operator import _prefetched
    from .threads import blas_threads

    try:
        blocks = x.iter_blocks(rows, ring=3 if prefetch else 1)
    except TypeError:  # a source without buffer reuse
        blocks = x.iter_blocks(rows)
    yield from _prefetched(blocks, prefetch, hook, blas_threads())


def stream_rows(shape, itemsize: int, max_memory: int | None, chunk_rows: int | None,
                block_bytes: int = 64 << 20, share: int = 16) -> int:  # fmt: skip
    """Rows per slab: at most ``block_bytes`` and ``max_memory/share``, rounded to whole
    storage chunks along axis 0 so that every chunk is decoded once per pass."""
    cap = block_bytes if max_memory is None else min(block_bytes, max_memory // share)
    row = max(1, math.prod(shape[1:]) * itemsize)
    rows = max(1, cap // row)
    if chunk_rows:
        c = int(chunk_rows)
        rows = max(c, (rows // c) * c)
    return int(min(rows, shape[0]))


def gather(source, shape, hook=None) -> np.ndarray:
    """Read a slab source whole (the caller checked the memory budget)."""
    rows = stream_rows(
        shape,
        np.dtype(source.dtype).itemsize,
        None,
        int(source.chunks[0]) if getattr(source, "chunks", None) else None,
    )
    out = np.empty(shape, dtype=np.dtype(source.dtype))
    for start, blk in iter_slabs(source, rows, hook=hook):
        out[start : start + blk.shape[0]] = blk
    return out


def resolution_warnings(steps, warnings, what: str) -> None:
    """Warn when kept columns come from Gram eigenvalues at the rounding level (their
    directions are then arbitrary within that level); the counts are in the steps anyway."""
    for s in steps:
        resolved = len(s["spectrum_sq"]) - s["below_resolution"]
        if s["below_resolution"] and s["rank"] > resolved:
            warnings.append(
                f"{what} {s.get('mode', s.get('bond'))}: rank {s['rank']} keeps "
                f"{s['rank'] - resolved} direction(s) whose Gram eigenvalues are below its "
                "rounding level (n·eps·λ_max): the data has no resolved structure there"
            )


__all__ = [
    "ArraySlabs",
    "StreamingR",
    "as_float_tensor",
    "below_resolution",
    "check_finite_tensor",
    "check_tensor_shape",
    "fix_signs",
    "gather",
    "gram_eig",
    "gram_resolution",
    "is_slab_source",
    "iter_slabs",
    "mode_gram",
    "mode_product",
    "multi_mode_product",
    "residual_sq",
    "resolution_warnings",
    "slab_rows",
    "split3",
    "sq_norm",
    "svd_needed",
    "stream_rows",
    "tt_parameters",
    "tt_rows",
    "tt_to_dense",
    "tucker_parameters",
    "tucker_rows",
    "tucker_to_dense",
]


class ScaledSlabs:
    """A slab source whose slabs are converted to ``wdt`` and multiplied by ``scale``."""

    def __init__(self, src, scale, wdt):
        self.src, self.scale, self.wdt = src, scale, wdt
        self.shape, self.dtype = src.shape, wdt

    def iter_blocks(self, rows):
        for start, blk in iter_slabs(self.src, rows):
            yield start, np.asarray(blk, dtype=self.wdt) * self.wdt.type(self.scale)
