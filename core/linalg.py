"""Small dense linear-algebra building blocks shared by the algorithms."""

from __future__ import annotations

import numpy as np


def svd_flip(u: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fix the sign of each singular pair: the entry of largest magnitude in each column
    of ``u`` is made positive (the first such entry on ties), ``vt`` follows.

    This is scikit-learn's u-based ``svd_flip`` rule; it makes outputs reproducible
    byte for byte across methods that agree up to sign.
    """
    m, k = u.shape
    if k == 0:
        return u, vt
    # in row blocks: |U| of a tall U would be a full copy, reduced down strided columns
    best = np.full(k, -1.0)
    idx = np.zeros(k, dtype=np.int64)
    step = max(1, (1 << 16) // k)
    cols = np.arange(k)
    for start in range(0, m, step):
        blk = np.abs(u[start : start + step])
        i = np.argmax(blk, axis=0)
        v = blk[i, cols]
        better = v > best  # strict: the first largest entry wins, as one argmax would
        best[better] = v[better]
        idx[better] = i[better] + start
    signs = np.sign(u[idx, cols])
    signs[signs == 0] = 1
    signs = signs.astype(u.dtype)
    u *= signs
    vt *= signs[:, None]
    return u, vt


def thin_svd(a: np.ndarray, *, overwrite: bool = False, recompute=None):
    """Thin SVD by LAPACK gesdd, falling back to gesvd when gesdd does not converge.

    Returns ``(u, s, vt, driver)``. A C-ordered input with m ≤ n is factorised as its
    (F-ordered) transpose, which spares LAPACK a reordering copy. With ``overwrite`` the
    input may be destroyed; ``recompute()`` must then rebuild it for the fallback.
    """
    import scipy.linalg as sla

    # Transposing a C-ordered matrix gives LAPACK an F-ordered one without a copy; only
    # worth it when the transpose is not wide (LAPACK's wide paths are much slower).
    transpose = (a.flags.c_contiguous and not a.flags.f_contiguous and a.ndim == 2
                 and a.shape[0] <= a.shape[1])  # fmt: skip
    m = a.T if transpose else a

    def run(mat, driver, over):
        return sla.svd(
            mat, full_matrices=False, lapack_driver=driver, overwrite_a=over, check_finite=False
        )

    try:
        u, s, vt = run(m, "gesdd", overwrite)
        driver = "gesdd"
    except np.linalg.LinAlgError:
        if overwrite:
            if recompute is None:
                raise
            a = recompute()
            m = a.T if transpose else a
        u, s, vt = run(m, "gesvd", False)
        driver = "gesvd (gesdd did not converge)"
    if transpose:
        u, vt = vt.T, u.T
    return u, s, vt, driver


def orthogonality_loss(q: np.ndarray) -> float:
    """max |QᵀQ − I| for a matrix with orthonormal columns (computed in float64)."""
    if q.size == 0:
        return 0.0
    q64 = np.asarray(q, dtype=np.float64)
    g = q64.T @ q64
    g[np.diag_indices_from(g)] -= 1.0
    return float(np.max(np.abs(g)))


def eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


# --- tall-skinny QR -------------------------------------------------------------------------

# CholeskyQR2 is accurate while cond(Y) stays well below u^(-1/2) (Yamamoto et al. 2015;
# Fukaya et al. 2020): the Gram matrix squares the condition number and the second pass repairs
# orthogonality only if the first lost less than all of it. This margin puts the switch to
# Householder at cond ≈ 4.7e6 in float64 and ≈ 200 in float32.
CHOLQR_MARGIN = 0.05


def cholqr_max_cond(dtype) -> float:
    return CHOLQR_MARGIN / np.sqrt(eps(dtype) / 2)


def _gram_upper(y: np.ndarray) -> np.ndarray:
    """YᵀY by BLAS syrk (half the flops of gemm); only the upper triangle is valid."""
    from scipy.linalg.blas import get_blas_funcs

    (syrk,) = get_blas_funcs(("syrk",), (y,))
    if y.flags.c_contiguous:
        return syrk(1.0, y.T, trans=0, lower=0)  # (Yᵀ)(Yᵀ)ᵀ on the F-ordered transpose
    return syrk(1.0, y, trans=1, lower=0)


def _solve_right_upper(y: np.ndarray, r: np.ndarray, *, overwrite: bool) -> np.ndarray:
    """Y R⁻¹ for upper-triangular R by BLAS trsm, without reordering Y."""
    from scipy.linalg.blas import get_blas_funcs

    (trsm,) = get_blas_funcs(("trsm",), (y, r))
    r = np.asarray(r, dtype=y.dtype, order="F")
    if y.flags.c_contiguous:  # (Y R⁻¹)ᵀ = R⁻ᵀ Yᵀ, Yᵀ is F-ordered
        out = trsm(1.0, r, y.T, side=0, lower=0, trans_a=1, overwrite_b=overwrite)
        return out.T
    return trsm(1.0, r, y, side=1, lower=0, trans_a=0, overwrite_b=overwrite)


def _cholqr_steps(y: np.ndarray, *, overwrite: bool = False):
    """Two CholeskyQR passes without the last solve: returns (Q1, R1, R2) with
    Y = Q1 R1 and Q1 = Q R2, or None when Y is too ill-conditioned for them."""
    import scipy.linalg as sla

    limit = cholqr_max_cond(y.dtype)
    try:
        r1 = sla.cholesky(_gram_upper(y), lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    s = sla.svdvals(r1, check_finite=False)
    if not np.isfinite(s).all() or s[-1] <= 0 or s[0] / s[-1] > limit:
        return None
    # Q1 = Y R1⁻¹ as a product with the explicit inverse: gemm runs at twice trsm's speed
    # here, and the second CholeskyQR pass repairs the orthogonality either way.
    q1 = y @ sla.solve_triangular(r1, np.eye(r1.shape[0], dtype=r1.dtype), check_finite=False)
    try:
        r2 = sla.cholesky(_gram_upper(q1), lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    return q1, r1, r2


def qr_tall(y: np.ndarray, *, overwrite: bool = False):
    """Thin QR of a tall matrix: CholeskyQR2 (all BLAS-3) when the condition allows,
    Householder (LAPACK geqrf) otherwise. Returns (Q, R, how)."""
    import scipy.linalg as sla

    m, n = y.shape
    if m >= n:
        steps = _cholqr_steps(y, overwrite=overwrite)
        if steps is not None:
            q1, r1, r2 = steps
            q = _solve_right_upper(q1, r2, overwrite=True)
            return q, r2 @ r1, "cholesky_qr2"
    q, r = sla.qr(y, mode="economic", overwrite_a=overwrite, check_finite=False)
    return q, r, "householder"


def orth(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of a tall ``y`` (its own buffer may be reused)."""
    return qr_tall(y, overwrite=True)[0]


# Row blocks of the tall-skinny SVD: large enough for BLAS-3 efficiency, small enough that a
# block of A and its image stay in cache while the Gram of the image is accumulated.
TALL_BLOCK_BYTES = 4 << 20


def _row_step(m: int, n: int, itemsize: int) -> int:
    return max(1, min(m, TALL_BLOCK_BYTES // max(1, n * itemsize)))


def _tall_slots(m: int, step: int) -> int:
    """Threads for the row-block passes of :func:`tall_svd`: one per BLAS thread (two
    one-thread ``syrk`` calls on separate blocks run 1.6× faster than one two-thread call
    here), at most one per partial sum."""
    from .threads import blas_threads

    return max(1, min(-(-m // step), blas_threads(), TALL_PARTIAL_SUMS))


# Partial sums of a pass: block j adds into sum j mod TALL_PARTIAL_SUMS whatever the thread
# count, so the result has the same bits on any machine (a thread owns whole sums).
TALL_PARTIAL_SUMS = 8


def _row_pass(m: int, step: int, slots: int, fn) -> list:
    """``fn(i)`` for every row block ``i`` on ``slots`` threads; returns the non-None results
    summed into TALL_PARTIAL_SUMS partial sums (each in block order), in sum order."""
    import threading

    from .threads import run_slots

    starts = range(0, m, step)
    parts = min(TALL_PARTIAL_SUMS, len(starts))
    out: list = [None] * parts
    stop = threading.Event()

    def run(slot):
        for p in range(slot, parts, slots):
            acc = None
            for i in starts[p::parts]:
                if stop.is_set():
                    return
                r = fn(slot, i)
                if r is not None:  # r is fresh: safe to keep and add into
                    acc = r if acc is None else np.add(acc, r, out=acc)
            out[p] = acc

    run_slots(run, slots, stop)
    return [r for r in out if r is not None]


def _blocked_gram(y: np.ndarray, slots: int) -> np.ndarray:
    m, n = y.shape
    step = _row_step(m, n, y.itemsize)

    def gram(slot, i):
        b = y[i : i + step]
        return b.T @ b  # numpy recognises the pattern and calls syrk

    return _sum_parts(_row_pass(m, step, slots, gram), n, y.dtype)


def _sum_parts(parts: list, n: int, dtype) -> np.ndarray:
    from .threads import sum_in_order

    return sum_in_order(parts) if parts else np.zeros((n, n), dtype=dtype)  # m = 0: no blocks


def tall_svd(a: np.ndarray, select=None, *, overwrite: bool = False):
    """Thin SVD of a matrix with m ≫ n (or n ≫ m, by transposition) through CholeskyQR2.

    ``A = Q1 R1``, ``Q1 = Q R2``, ``R2 R1 = Ur Σ Vᵀ`` and ``U = Q1 (R2⁻¹ Ur)``: about 5mn²
    BLAS-3 flops in three passes over row blocks — the Gram of A; Q1's blocks with their Gram
    accumulated while still in cache; U overwriting Q1 in place — and one m×n allocation, or
    none with ``overwrite`` (Q1 then takes A's place: a fresh m×n array costs its page faults,
    up to a second per 320 MB on this VM). Each pass is split among one thread per BLAS
    thread (:mod:`rankwise.core.threads`). When the condition of R1 is too large for
    CholeskyQR2, LAPACK's SVD. ``select(s)``, if given, returns how many leading columns of U
    are wanted once the singular values are known (they come from the small R): the last pass
    then costs 2mnk instead of 2mn². Returns ``(u, s, vt, how)``.
    """
    import contextlib

    from .threads import one_blas_thread

    if a.shape[0] < a.shape[1]:
        u, s, vt, how = tall_svd(a.T)  # U is the short side here: nothing to save
        return vt.T, s, u.T, how
    overwrite = overwrite and a.flags.c_contiguous and a.flags.writeable
    step = _row_step(*a.shape, a.itemsize)
    slots = _tall_slots(a.shape[0], step)
    # The n×n steps run on one BLAS thread too when the passes are split and n is small: an
    # idle OpenBLAS worker spins for ~0.1 s after each threaded call, and would take a core
    # from the next pass (15% of the whole at 200000×200); at n = 1500 the O(n³) steps
    # themselves need the threads (1.43 s on one, 0.74 s on two).
    quiet = slots > 1 and a.shape[1] <= 512
    one = one_blas_thread() if quiet else contextlib.nullcontext()
    with one:
        out = _cholqr2_svd(a, select, overwrite, step, slots)
    if not isinstance(out, _Fallback):
        return out
    # LAPACK's own SVD (it starts with a Householder QR when m ≫ n), on every thread
    u, s, vt, driver = thin_svd(out.matrix)
    return u, s, vt, f"{driver} ({out.reason})"


class _Fallback:
    def __init__(self, matrix: np.ndarray, reason: str):
        self.matrix, self.reason = matrix, reason


def _cholqr2_svd(a, select, overwrite: bool, step: int, slots: int):
    """The CholeskyQR2 route of :func:`tall_svd`, or the matrix LAPACK should take instead."""
    import scipy.linalg as sla

    m, n = a.shape
    r1 = None
    try:
        r1 = sla.cholesky(_blocked_gram(a, slots), lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    if r1 is not None:
        sv = sla.svdvals(r1, check_finite=False)
        if not (
            np.isfinite(sv).all() and sv[-1] > 0 and sv[0] / sv[-1] <= cholqr_max_cond(a.dtype)
        ):
            r1 = None
    if r1 is None:
        return _Fallback(a, "condition too large for CholeskyQR2")
    r1inv = sla.solve_triangular(r1, np.eye(n, dtype=r1.dtype), check_finite=False)
    q1 = a if overwrite else np.empty((m, n), dtype=a.dtype)
    # in place, through a cached block per slot: a product may not alias its input
    scratch = [np.empty((min(step, m), n), dtype=a.dtype) for _ in range(slots)]

    def in_place_times(mat):  # the row blocks of Q1 ← Q1 · mat
        def block(slot, i):
            q1[i : i + step] = np.matmul(
                q1[i : i + step], mat, out=scratch[slot][: min(step, m - i)]
            )

        return block

    def q1_block(slot, i):
        if overwrite:
            blk = np.matmul(a[i : i + step], r1inv, out=scratch[slot][: min(step, m - i)])
            q1[i : i + step] = blk
        else:
            blk = np.matmul(a[i : i + step], r1inv, out=q1[i : i + step])
        return blk.T @ blk

    g2 = _sum_parts(_row_pass(m, step, slots, q1_block), n, a.dtype)
    try:
        r2 = sla.cholesky(g2, lower=False, check_finite=False)
    except np.linalg.LinAlgError:  # lost definiteness after all: start over the safe way
        if overwrite:  # A is gone: back from Q1 R1 (to ~ε·cond(A), within the check's bound)
            _row_pass(m, step, slots, in_place_times(r1))
            return _Fallback(q1, "CholeskyQR2 broke down; A rebuilt from Q1 R1")
        del q1
        return _Fallback(a, "CholeskyQR2 broke down")
    ur, s, vt, driver = thin_svd(r2 @ r1)
    k = n if select is None else max(1, min(n, int(select(s))))
    x = sla.solve_triangular(r2, ur[:, :k], lower=False, check_finite=False)
    if k == n:
        _row_pass(m, step, slots, in_place_times(x))
        return q1, s, vt, f"cholesky_qr2 + {driver} of R"
    u = np.empty((m, k), dtype=a.dtype)

    def u_block(slot, i):
        np.matmul(q1[i : i + step], x, out=u[i : i + step])

    _row_pass(m, step, slots, u_block)
    return u, s, vt, f"cholesky_qr2 + {driver} of R (U formed for the {k} kept columns)"
