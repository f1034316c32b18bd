"""The operator protocol through which large matrices are reached.

An operator has ``shape``, ``dtype``, ``matmat(X) = A @ X``, ``rmatmat(Y) = A.T @ Y``,
``row_blocks(rows)`` and ``fro_norm_sq()``. Randomized and Krylov methods only need these,
so the same code runs on dense arrays, sparse matrices and (later) chunked files.
"""

from __future__ import annotations

import math

import numpy as np

from .threads import sum_in_order
from .validate import is_sparse

_BLOCK_BYTES = 64 << 20


def dense_matmat(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a @ x`` for a tall C-ordered ``a`` and a thin ``x``, computed as ``(xᵀ aᵀ)ᵀ``: OpenBLAS
    runs that orientation 30–40% faster for thin right-hand sides (measured, benchmarks/).
    The result is F-ordered."""
    return (x.T @ a.T).T


def dense_rmatmat(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``aᵀ @ y`` as ``(yᵀ a)ᵀ``: avoids OpenBLAS's slow long-inner-dimension kernel for the
    transposed operand (up to 2× faster for thin ``y``). The result is F-ordered."""
    return (y.T @ a).T


def _block_rows(ncols: int, itemsize: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, ncols * itemsize))


class DenseOperator:
    kind = "dense"

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype

    def matmat(self, x):
        return dense_matmat(self.a, x)

    def rmatmat(self, y):
        return dense_rmatmat(self.a, y)

    def row_blocks(self, rows: int | None = None):
        rows = rows or _block_rows(self.shape[1], self.dtype.itemsize)
        for start in range(0, self.shape[0], rows):
            yield start, self.a[start : start + rows]

    def fro_norm_sq(self) -> float:
        total = 0.0
        for _, blk in self.row_blocks():
            v = np.asarray(blk, dtype=np.float64).ravel()
            total += float(v @ v)
        return total

    def column_mean(self) -> np.ndarray:
        return np.mean(self.a, axis=0, dtype=np.float64)

    def dense(self) -> np.ndarray:
        return self.a


class SparseOperator:
    kind = "sparse"

    def __init__(self, a):
        self.a = a.tocsr()
        self.shape = self.a.shape
        self.dtype = self.a.dtype

    def matmat(self, x):
        return np.asarray(self.a @ x)

    def rmatmat(self, y):
        return np.asarray(self.a.T @ y)

    def row_blocks(self, rows: int | None = None):
        rows = rows or _block_rows(self.shape[1], self.dtype.itemsize)
        for start in range(0, self.shape[0], rows):
            yield start, self.a[start : start + rows].toarray()

    def fro_norm_sq(self) -> float:
        v = np.asarray(self.a.data, dtype=np.float64)
        return float(v @ v)

    def column_mean(self) -> np.ndarray:
        sums = np.asarray(self.a.sum(axis=0, dtype=np.float64)).ravel()
        return sums / self.shape[0]

    def dense(self) -> np.ndarray:
        return self.a.toarray()


class CenteredOperator:
    """``A - 1 μᵀ`` applied implicitly, so sparse data stays sparse."""

    kind = "centered"

    def __init__(self, base, mean: np.ndarray):
        self.base = base
        self.shape = base.shape
        self.dtype = base.dtype
        self.mean = np.asarray(mean, dtype=base.dtype)

    def matmat(self, x):
        y = self.base.matmat(x)
        y -= self.mean @ x
        return y

    def rmatmat(self, y):
        z = self.base.rmatmat(y)
        z -= np.outer(self.mean, y.sum(axis=0))
        return z

    def row_blocks(self, rows: int | None = None):
        for start, blk in self.base.row_blocks(rows):
            yield start, blk - self.mean

    def fro_norm_sq(self) -> float:
        mu = np.asarray(self.mean, dtype=np.float64)
        if isinstance(self.base, SparseOperator):
            # Per column: stored entries minus μ_j, plus (m - nnz_j) zeros at distance μ_j.
            # No subtraction of two large norms, so no cancellation when the mean dominates.
            csc = self.base.a.tocsc()
            counts = np.diff(csc.indptr)
            cols = np.repeat(np.arange(self.shape[1]), counts)
            d = np.asarray(csc.data, dtype=np.float64) - mu[cols]
            return float(d @ d + ((self.shape[0] - counts) * mu**2).sum())
        total = 0.0
        for _, blk in self.base.row_blocks():
            v = (np.asarray(blk, dtype=np.float64) - mu).ravel()
            total += float(v @ v)
        return total

    def dense(self) -> np.ndarray:
        out = np.array(self.base.dense(), dtype=self.dtype, copy=True)
        out -= self.mean
        return out


def as_operator(a, *, center: bool = False):
    """Wrap an in-memory array or sparse matrix; with ``center`` subtract its column mean."""
    if hasattr(a, "matmat") and hasattr(a, "fro_norm_sq"):
        op = a
    elif is_sparse(a):
        op = SparseOperator(a)
    else:
        op = DenseOperator(np.asarray(a))
    if center:
        op = CenteredOperator(op, op.column_mean())
    return op


def to_scipy_linear_operator(op):
    from scipy.sparse.linalg import LinearOperator

    return LinearOperator(
        shape=op.shape,
        dtype=op.dtype,
        matvec=lambda v: op.matmat(np.asarray(v).reshape(-1, 1)).ravel(),
        rmatvec=lambda v: op.rmatmat(np.asarray(v).reshape(-1, 1)).ravel(),
        matmat=op.matmat,
        rmatmat=op.rmatmat,
    )


class BlockOperator:
    """A matrix read as row blocks from a source (a chunked file), never held whole.

    ``source`` needs ``shape``, ``dtype`` and ``iter_blocks(rows)`` yielding
    ``(start, block)`` with dense ndarrays or sparse CSR blocks. The next block is read in a
    background thread while BLAS works on the current one (BLAS and most decoders release the
    GIL). ``on_block(start, block)`` (optional) sees every raw block of the first pass — the
    CLI hashes the content there instead of reading the file once more.
    """

    kind = "blocks"

    def __init__(self, source, *, block_rows: int, dtype, on_first_pass=None, prefetch=True):
        self.source = source
        self.shape = tuple(int(s) for s in source.shape)
        self.dtype = np.dtype(dtype)
        self.block_rows = int(block_rows)
        self.prefetch = prefetch
        self.passes = 0
        self.bytes_read = 0
        self.scale = 1.0  # an exact power of two applied to every block (extreme data)
        self.pass_seconds: list[float] = []  # wall time of each complete pass
        self._on_first_pass = on_first_pass
        self._checked = False
        self._buffers: list[np.ndarray] = []  # one block buffer per worker of a parallel pass
        from .threads import blas_threads

        # Those in force now, kept: a caller may hold BLAS to one thread between passes, and
        # the passes must still get their workers (or, sequential, their BLAS threads).
        self.threads = blas_threads()

    @property
    def parallel(self) -> bool:
        """Whether passes are split among workers on one BLAS thread each. The caller should
        then hold BLAS to one thread between passes as well: an OpenBLAS worker spins for
        ~0.1 s after each threaded call, taking a core from the next pass (measured 0.06–0.1 s
        per pass of 0.4–0.6 s)."""
        return self._slots() > 1

    # Every public product is one pass over the source.
    def _blocks(self, work_checks: bool = False):
        import time

        from .validate import check_finite

        hook = self._on_first_pass if self.passes == 0 else None
        check = not (self._checked or work_checks)
        self.passes += 1
        t0 = time.perf_counter()
        for start, raw in _prefetched(self._source_blocks(), self.prefetch, hook, self.threads):
            blk = raw if is_sparse(raw) else np.asarray(raw)
            self.bytes_read += blk.data.nbytes if is_sparse(blk) else blk.nbytes
            if blk.dtype != self.dtype:
                blk = blk.astype(self.dtype)
            if self.scale != 1.0:
                blk = blk * self.scale
            if check:
                check_finite(blk, method="svd")
            yield start, blk
        self._checked = True
        self.pass_seconds.append(time.perf_counter() - t0)

    def _source_blocks(self):
        # Three reused buffers (one computed on, one queued, one being read) when the source
        # can fill them: no allocation, page faults or heap growth per block.
        try:
            return self.source.iter_blocks(self.block_rows, ring=3 if self.prefetch else 1)
        except TypeError:  # a source without buffer reuse
            return self.source.iter_blocks(self.block_rows)

    def _slots(self) -> int:
        """Workers of a pass: one per BLAS thread (at most MAX_SLOTS) when the source reads
        row ranges into buffers, else 1 (the prefetching sequential pass)."""
        if not self.prefetch or not getattr(self.source, "reads_row_ranges", bool)():
            return 1
        return max(1, min(MAX_SLOTS, self.threads, -(-self.shape[0] // self.block_rows)))

    def _pass(self, work, slots: int, *, work_checks: bool = False) -> None:
        """One pass calling ``work(slot, start, block)`` for every block. The first pass checks
        that the data is finite, unless ``work_checks`` says ``work`` does (a sum of squares
        that comes out finite proves it for free: :class:`_ColumnStats`).

        With ``slots`` > 1, this thread and ``slots − 1`` others each read and compute their
        own blocks (block i goes to slot i mod slots, in order), every BLAS call on one
        thread: on two cores that beats a reader thread feeding two-thread BLAS (which also
        needs the data twice through memory), and the slot of a block never depends on timing,
        so per-slot sums added in slot order are deterministic. Reads are serialised (engines
        differ in thread safety); computing overlaps them."""
        if slots <= 1:
            for start, blk in self._blocks(work_checks):
                work(0, start, blk)
            return
        import threading
        import time

        from .threads import run_slots
        from .validate import check_finite

        m, rows = self.shape[0], self.block_rows
        read = self.source.row_reader(rows, buffers=slots)
        hook = self._on_first_pass if self.passes == 0 else None
        check = not (self._checked or work_checks)
        self.passes += 1
        starts = range(0, m, rows)
        lock, stop = threading.Lock(), threading.Event()

        while len(self._buffers) < slots:  # kept for the next pass: no page faults again
            self._buffers.append(np.empty((min(rows, m), *self.shape[1:]), self.source.dtype))

        def run(slot):
            buf = self._buffers[slot]
            for start in starts[slot::slots]:
                if stop.is_set():
                    return
                raw = buf[: min(start + rows, m) - start]
                with lock:
                    read(start, start + raw.shape[0], raw)
                if hook is not None:
                    hook(start, raw)
                blk = raw if raw.dtype == self.dtype else raw.astype(self.dtype)
                if self.scale != 1.0:
                    blk = blk * self.scale
                if check:
                    check_finite(blk, method="svd")
                work(slot, start, blk)

        t0 = time.perf_counter()
        run_slots(run, slots, stop)
        self.bytes_read += m * int(np.prod(self.shape[1:])) * self.source.dtype.itemsize
        self._checked = True
        self.pass_seconds.append(time.perf_counter() - t0)

    def matmat(self, x):
        out = np.empty((self.shape[0], x.shape[1]), dtype=np.result_type(self.dtype, x.dtype))

        def work(slot, start, blk):
            out[start : start + blk.shape[0]] = _mm(blk, x)

        self._pass(work, self._slots())
        return out

    def rmatmat(self, y):
        slots = self._slots()
        parts = [np.zeros((self.shape[1], y.shape[1]), dtype=np.result_type(self.dtype, y.dtype))
                 for _ in range(slots)]  # fmt: skip

        def work(slot, start, blk):
            parts[slot] += _rmm(blk, y[start : start + blk.shape[0]])

        self._pass(work, slots)
        return sum_in_order(parts)

    def row_blocks(self, rows: int | None = None):
        for start, blk in self._blocks():
            yield start, blk.toarray() if is_sparse(blk) else blk

    def gram_pass(self, w, *, keep: bool = False, stats: bool = False, center_stats: bool = True,
                  out=None):  # fmt: skip
        """One pass: ``Z = AᵀA W``; with ``keep`` also ``Y = A W``; with ``stats``
        ``‖A‖_F²`` and the magnitude of A (:class:`_ColumnStats`), and with ``center_stats``
        too the column means and ``‖A − 1μᵀ‖_F²`` per column (Chan's pairwise update, no
        cancellation); the stats also check the data for NaN and Inf. Returns
        (Z, Y or None, colsum of A W, stats or None). Blocks are worked on in sub-blocks
        that stay in cache, so each is read from memory once for both products."""
        m, n = self.shape
        rdt = np.result_type(self.dtype, w.dtype)
        slots = self._slots()
        y = None
        if keep:  # reuse the caller's buffer: one m×ℓ array for the whole run
            fits = out is not None and out.shape == (m, w.shape[1]) and out.dtype == rdt
            y = out if fits else np.empty((m, w.shape[1]), dtype=rdt)
        zs = [np.zeros((n, w.shape[1]), dtype=rdt) for _ in range(slots)]
        ysums = [np.zeros(w.shape[1], dtype=np.float64) for _ in range(slots)]
        accs = None
        if stats:
            accs = [_ColumnStats(n, centered=center_stats, dtype=self.dtype) for _ in range(slots)]
        sub, mm, rmm = _gram_kernels(n, w.shape[1], self.dtype.itemsize)

        def work(slot, start, blk):
            z, ysum = zs[slot], ysums[slot]
            step, f, g = (blk.shape[0], _mm, _rmm) if is_sparse(blk) else (sub, mm, rmm)
            for i in range(0, blk.shape[0], step):
                part = blk[i : i + step]
                yb = f(part, w)
                z += g(part, yb)
                ysum += yb.sum(axis=0, dtype=np.float64)
                if keep:
                    y[start + i : start + i + part.shape[0]] = yb

        def work_with_stats(slot, start, blk):
            accs[slot].update(blk)  # first: it also checks the data (an Inf raises here)
            work(slot, start, blk)

        self._pass(work_with_stats if stats else work, slots, work_checks=stats)
        acc = None
        if accs is not None:
            acc = accs[0]
            for other in accs[1:]:
                acc.merge(other)
        return sum_in_order(zs), y, sum_in_order(ysums), acc

    def _stats(self, centered: bool):
        slots = self._slots()
        accs = [_ColumnStats(self.shape[1], centered=centered, dtype=self.dtype)
                for _ in range(slots)]  # fmt: skip
        self._pass(lambda slot, start, blk: accs[slot].update(blk), slots, work_checks=True)
        for other in accs[1:]:
            accs[0].merge(other)
        return accs[0]

    def fro_norm_sq(self) -> float:
        return self._stats(False).raw_sq

    def column_mean(self) -> np.ndarray:
        return self._stats(True).mean


# Workers of a parallel pass (beyond three, reading serialised by the lock gains little), and
# the sub-blocks of a Gram pass with a wide W (see _gram_kernels).
MAX_SLOTS = 3
SUB_BLOCK_BYTES = 2 << 20


def _gram_kernels(n: int, ell: int, itemsize: int):
    """Sub-block rows and the two products of a Gram pass over dense blocks.

    Both products of a thin ``W`` are bound by OpenBLAS packing the sub-block, not by flops;
    for ℓ ≤ 48 the plain orientation on sub-blocks of ~5 MiB/ℓ (128–512 KiB, in L2 for the
    second product) runs 1.2–1.8× faster than 2 MiB ones, measured on one thread for n from 128
    to 2048 (benchmarks/README.md); wider ``W`` keeps 2 MiB and the transposed orientation."""
    if ell <= 48:
        size = min(512 << 10, max(128 << 10, (5 << 20) // max(1, ell)))
        return max(1, size // max(1, n * itemsize)), np.matmul, _plain_rmm
    return max(1, SUB_BLOCK_BYTES // max(1, n * itemsize)), dense_matmat, dense_rmatmat


def _plain_rmm(a, y):
    return a.T @ y


def _mm(blk, x):
    return np.asarray(blk @ x) if is_sparse(blk) else dense_matmat(blk, x)


def _rmm(blk, y):
    return np.asarray(blk.T @ y) if is_sparse(blk) else dense_rmatmat(blk, y)


class _ColumnStats:
    """Running ‖A‖_F², the magnitude of A and (``centered``) column means and centred sums of
    squares over row blocks (Chan et al.'s pairwise update). :meth:`update` also checks each
    block for NaN and Inf.

    ``magnitude`` serves the decision to rescale extreme data (:func:`power_of_two_scale`,
    whose safe exponent E is 400 for float64 and 40 for float32 work): it is max |A| exactly
    when a block's sum of squares s of N entries lies outside [N·2^(20−2E), 2^(2E−20)];
    inside, every |a| ≤ √s ≤ 2^(E−10) and max |a| ≥ √(s/N) ≥ 2^(10−E), so nothing would be
    rescaled and √s stands in for the block's max without another scan of the block.
    """

    def __init__(self, n: int, *, centered: bool = True, dtype=np.float64):
        from .validate import safe_exponent

        self.centered = centered
        e = safe_exponent(dtype)
        self._tiny, self._huge = 2.0 ** (20 - 2 * e), 2.0 ** (2 * e - 20)
        self.count = 0
        self.mean = np.zeros(n)
        self.m2 = np.zeros(n)
        self.raw_sq = 0.0
        self.magnitude = 0.0

    def update(self, blk) -> None:
        b = blk.shape[0]
        if is_sparse(blk):
            d = np.asarray(blk.data, dtype=np.float64)
            self._add_squares(blk, float(d @ d), d.size)
            if not self.centered:
                self.count += b
                return
            csc = blk.tocsc()
            counts = np.diff(csc.indptr)
            bmean = np.asarray(blk.sum(axis=0, dtype=np.float64)).ravel() / b
            cols = np.repeat(np.arange(blk.shape[1]), counts)
            dev = np.asarray(csc.data, dtype=np.float64) - bmean[cols]
            bm2 = np.bincount(cols, weights=dev * dev, minlength=blk.shape[1])
            bm2 += (b - counts) * bmean**2
        else:
            x = np.asarray(blk, dtype=np.float64)
            flat = x.ravel()
            self._add_squares(blk, float(flat @ flat), flat.size)
            if not self.centered:
                self.count += b
                return
            bmean = x.mean(axis=0)
            bm2 = np.zeros_like(bmean)
            step = max(1, (1 << 20) // max(1, 8 * x.shape[1]))
            for i in range(0, b, step):  # deviations a cache-sized piece at a time
                d = x[i : i + step] - bmean
                bm2 += np.einsum("ij,ij->j", d, d)
        self._add(b, bmean, bm2)

    def _add_squares(self, blk, sq: float, size: int) -> None:
        from .validate import abs_max, check_finite

        if not math.isfinite(sq):  # NaN or Inf in the block, or squares that overflow
            check_finite(blk, method="svd")
        if math.isfinite(sq) and size * self._tiny <= sq <= self._huge:
            self.magnitude = max(self.magnitude, math.sqrt(sq))
        else:
            self.magnitude = max(self.magnitude, abs_max(blk))
        self.raw_sq += sq

    def _add(self, b: int, bmean: np.ndarray, bm2: np.ndarray) -> None:
        total = self.count + b
        if total == 0:
            return
        delta = bmean - self.mean
        self.mean += delta * (b / total)
        self.m2 += bm2 + delta**2 * (self.count * b / total)
        self.count = total

    def merge(self, other: _ColumnStats) -> None:
        self.raw_sq += other.raw_sq
        self.magnitude = max(self.magnitude, other.magnitude)
        if self.centered:
            self._add(other.count, other.mean, other.m2)
        else:
            self.count += other.count

    @property
    def centered_sq(self) -> float:
        return float(self.m2.sum())


def _prefetched(blocks, enabled: bool, hook, threads: int):
    """Iterate ``blocks`` one step ahead in a thread (bounded: one block in flight).

    While the reader thread runs, BLAS gets one thread fewer: the reader needs a core of its
    own, and on two cores one BLAS thread plus the reader beat two BLAS threads by ~30%
    (benchmarks/)."""
    if not enabled:
        for start, blk in blocks:
            if hook is not None:
                hook(start, blk)
            yield start, blk
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in blocks:
                if hook is not None:
                    hook(*item)
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    from threadpoolctl import threadpool_limits

    limit = threadpool_limits(limits=max(1, threads - 1), user_api="blas")
    t = threading.Thread(target=work, name="rankwise-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
        limit.restore_original_limits()
