"""ArrayHandle: the lazy view of one array that every reader returns."""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .budget import check_budget, dense_nbytes, human_bytes, shape_text
from .dtypes import dtype_name
from .errors import BudgetError, DataError, FormatsError, InputMissingError, StorageError
from .uri import URI

if TYPE_CHECKING:
    from .sparse import Entries

# Blocks used by scan()/fingerprint() when the caller does not choose: big enough to amortise
# per-call overhead, small enough to stay far below any sensible memory budget.
DEFAULT_BLOCK_BYTES = 32 * 1024 * 1024
# numpy cannot allocate more bytes, nor an extent larger, than its index type holds (it raises
# ValueError, not MemoryError); scipy's CSR also needs rows + 1 in its int64 index pointer.
MAX_ADDRESSABLE = int(np.iinfo(np.intp).max)


def one_line(exc: BaseException) -> str:
    """The first line of an exception message (library messages are often multi-line)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def os_errors(
    where: str, decode: tuple[type[BaseException], ...] = (), doing: str = "cannot decode"
) -> Iterator[None]:
    """Map errors raised while reading data: permission -> 66, other OSError -> 74, and the
    engine's own decoding failures (``decode``) -> 65."""
    try:
        yield
    except FormatsError:
        raise
    except PermissionError as exc:
        raise InputMissingError(f"{where}: cannot be read (permission denied)") from exc
    except decode as exc:  # before OSError: some decode errors subclass it (BadZipFile no)
        raise DataError(f"{where}: {doing} ({type(exc).__name__}: {one_line(exc)})") from exc
    except OSError as exc:
        if exc.errno is None:
            # Not from the system (which always gives an errno) but from a decoder: gzip's
            # BadGzipFile, bz2's "Invalid data stream".
            raise DataError(f"{where}: {doing} ({type(exc).__name__}: {one_line(exc)})") from exc
        raise StorageError(
            f"{where}: I/O error while reading ({exc.strerror or one_line(exc)})"
        ) from exc


class ArrayHandle(ABC):
    """Lazy handle on one array of a file or store.

    Opening and describe() read metadata only. read() budget-checks the declared size before
    allocating; iter_blocks()/scan() work in row blocks with bounded memory.
    Dense reads return numpy arrays in the stored dtype; sparse reads return a canonical
    scipy.sparse.csr_array (duplicates summed, indices sorted). Sparse handles also give their
    stored entries raw with read_entries() (the input of completion).
    """

    format: str = ""

    def __init__(
        self,
        *,
        uri: URI,
        location: str,
        name: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        sparse: bool = False,
        nnz: int | None = None,
        chunks: tuple[int, ...] | None = None,
        compression: str | None = None,
        order: str | None = None,
        notes: list[str] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.uri = uri
        self.location = location  # full URI of this array, used in every message
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.sparse = sparse
        self.nnz = nnz
        self.chunks = tuple(int(c) for c in chunks) if chunks is not None else None
        self.compression = compression
        self.order = order
        self.notes = list(notes or [])
        self.max_bytes = max_bytes
        self.closed = False

    # -- sizes -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Dense size: prod(shape) × itemsize (also for sparse arrays)."""
        return dense_nbytes(self.shape, self.dtype)

    @property
    def read_nbytes(self) -> int:
        """Peak bytes read() allocates: the dense size, or for sparse input the COO
        components (int64 indices) plus the CSR built from them."""
        if self.sparse:
            from .sparse import coo_to_csr_nbytes

            return coo_to_csr_nbytes(self.nnz or 0, self.shape, self.dtype)
        return self.nbytes

    @property
    def entries_nbytes(self) -> int:
        """Bytes read_entries() allocates: int64 indices per mode plus the values."""
        from .sparse import entries_nbytes

        return entries_nbytes(self.nnz or 0, self.ndim, self.dtype)

    def _what(self) -> str:
        if self.sparse:
            return (
                f"sparse {shape_text(self.shape)} {dtype_name(self.dtype)} with "
                f"{self.nnz} stored entries, as COO then CSR"
            )
        return f"shape {shape_text(self.shape)} {dtype_name(self.dtype)}"

    def _budget(self, max_bytes: int | None) -> int | None:
        return self.max_bytes if max_bytes is None else max_bytes

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"{self.location}: handle is closed")

    def _check_extents(self) -> None:
        """Declared extents numpy/scipy cannot represent are bad data, not an allocation."""
        too_big = any(s > MAX_ADDRESSABLE for s in self.shape) or (
            self.sparse and bool(self.shape) and self.shape[0] >= MAX_ADDRESSABLE
        )
        # numpy also refuses a dense shape whose non-zero extents span more bytes than it can
        # index, even when another extent is 0 and the array is empty
        nonzero = math.prod(int(s) for s in self.shape if s) * int(np.dtype(self.dtype).itemsize)
        too_big = too_big or (not self.sparse and nonzero > MAX_ADDRESSABLE)
        if too_big:
            raise DataError(
                f"{self.location}: declared shape {shape_text(self.shape)} is too large to "
                "index with 64-bit integers"
            )

    def _check_addressable(self, needed: int, what: str) -> None:
        self._check_extents()
        if needed > MAX_ADDRESSABLE:
            raise BudgetError(
                f"{self.location}: needs {human_bytes(needed)} ({what}), more than this "
                "machine can address"
            )

    # -- reading -----------------------------------------------------------------------------
    def read(self, max_bytes: int | None = None) -> Any:
        """The whole array; BudgetError before allocating when read_nbytes > max_bytes.

        `max_bytes` defaults to the budget given to open_array().
        """
        self._check_open()
        check_budget(
            self.read_nbytes, self._budget(max_bytes), where=self.location, what=self._what()
        )
        self._check_addressable(self.read_nbytes, self._what())
        try:
            return self._read()
        except MemoryError as exc:
            # No budget (or a budget larger than the machine): still a clear one-line error.
            raise BudgetError(
                f"{self.location}: out of memory reading it ({self._what()}, "
                f"{human_bytes(self.read_nbytes)}); set a memory budget or use row blocks"
            ) from exc

    def read_entries(self, max_bytes: int | None = None) -> Entries:
        """The stored entries of a sparse input in file order, validated, duplicates kept
        (never summed, never densified); BudgetError before allocating when entries_nbytes >
        max_bytes. Dense input has no entries: DataError."""
        self._check_open()
        if not self.sparse:
            raise DataError(f"{self.location}: dense input: missing entries are NaN; read() it")
        what = (
            f"{self.nnz} stored entries of a sparse {shape_text(self.shape)} "
            f"{dtype_name(self.dtype)}, {self.ndim} int64 indices and a value each"
        )
        check_budget(self.entries_nbytes, self._budget(max_bytes), where=self.location, what=what)
        self._check_addressable(self.entries_nbytes, what)
        try:
            return self._read_entries()
        except MemoryError as exc:
            raise BudgetError(
                f"{self.location}: out of memory reading {what} "
                f"({human_bytes(self.entries_nbytes)}); set a memory budget"
            ) from exc

    def iter_blocks(
        self, rows: int, *, max_bytes: int | None = None, ring: int = 0
    ) -> Iterator[tuple[int, Any]]:
        """Yield (start_row, block) along axis 0, `rows` rows at a time.

        With ``ring=N`` (dense arrays of engines that can read into a buffer) the blocks are
        views of N buffers allocated once and reused in turn: no allocation per block, but a
        block is overwritten N blocks later, so a consumer must be done with it by then.
        """
        self._check_open()
        rows = int(rows)
        if rows < 1:
            raise ValueError("rows must be a positive integer")
        budget = self._budget(max_bytes)
        self._check_extents()
        try:
            if self.sparse:
                yield from self._sparse_blocks(rows, budget)
                return
            if self.ndim == 0:
                yield 0, self.read(budget)
                return
            if self.shape[0] == 0:
                return
            if ring > 0 and self._can_read_into():
                yield from self._ring_blocks(rows, budget, ring)
                return
            yield from self._dense_blocks(rows, budget)
        except MemoryError as exc:
            raise BudgetError(
                f"{self.location}: out of memory reading blocks of {rows} rows ({self._what()}); "
                "set a memory budget or use smaller blocks"
            ) from exc

    def reads_row_ranges(self) -> bool:
        """Whether :meth:`row_reader` serves this array."""
        return not self.sparse and self.ndim > 0 and self.shape[0] > 0 and self._can_read_into()

    def row_reader(self, rows: int, *, buffers: int = 1, max_bytes: int | None = None):
        """``read(start, stop, out)`` filling ``out`` with rows [start, stop) of a dense array,
        in any order (for passes split among threads; the caller serialises the calls), after
        the checks :meth:`iter_blocks` makes for ``buffers`` blocks of ``rows`` rows. None when
        this engine cannot read a row range into a buffer."""
        self._check_open()
        if not self.reads_row_ranges():
            return None
        budget = self._budget(max_bytes)
        self._check_extents()
        self._check_block_budget(min(rows, self.shape[0]) * buffers, budget)
        self._before_blocks()

        def read(start: int, stop: int, out: np.ndarray) -> None:
            try:
                self._read_rows_into(start, stop, out)
            except MemoryError as exc:
                raise BudgetError(
                    f"{self.location}: out of memory reading rows {start}:{stop} "
                    f"({self._what()}); set a memory budget or use smaller blocks"
                ) from exc

        return read

    def _check_block_budget(self, rows: int, budget: int | None) -> None:
        step = min(rows, self.shape[0])
        needed = step * dense_nbytes(self.shape[1:], self.dtype)
        what = f"a block of {step} rows of shape {shape_text(self.shape)} {dtype_name(self.dtype)}"
        check_budget(needed, budget, where=self.location, what=what)
        self._check_addressable(needed, what)

    def block_rows(self, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
        """A row count whose dense block is about `block_bytes` (at least one row)."""
        if self.ndim == 0 or self.shape[0] == 0:
            return 1
        if self.sparse:
            # Aim at about block_bytes of stored entries per block.
            per_entry = self.dtype.itemsize + 16
            nnz = max(self.nnz or 0, 1)
            rows = block_bytes * self.shape[0] // (per_entry * nnz)
            return int(min(max(rows, 1), self.shape[0]))
        row_bytes = max(dense_nbytes(self.shape[1:], self.dtype), 1)
        return int(min(max(block_bytes // row_bytes, 1), self.shape[0]))

    def scan(self, *, max_bytes: int | None = None) -> dict[str, int]:
        """Count NaN, Inf and non-zero entries block by block.

        For sparse arrays "nnz" counts the stored entries of the canonical CSR (duplicates
        summed, symmetric parts expanded); explicit zeros stay, they are observed entries.
        """
        budget = self._budget(max_bytes)
        block_bytes = (
            DEFAULT_BLOCK_BYTES if budget is None else max(min(DEFAULT_BLOCK_BYTES, budget // 4), 1)
        )
        nan = inf = nnz = 0
        floating = self.dtype.kind in "fc"
        for _, block in self.iter_blocks(self.block_rows(block_bytes), max_bytes=budget):
            values = block.data if self.sparse else block
            if floating:
                nan += int(np.count_nonzero(np.isnan(values)))
                inf += int(np.count_nonzero(np.isinf(values)))
            nnz += int(block.nnz) if self.sparse else int(np.count_nonzero(values))
        return {"nan": nan, "inf": inf, "nnz": nnz}

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.location,
            "format": self.format,
            "shape": list(self.shape),
            "dtype": dtype_name(self.dtype),
            "sparse": self.sparse,
            "nnz": self.nnz,
            "chunks": list(self.chunks) if self.chunks is not None else None,
            "compression": self.compression,
            "order": self.order,
            "nbytes": self.nbytes,
            "read_nbytes": self.read_nbytes,
            "notes": list(self.notes),
        }

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ArrayHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "sparse " if self.sparse else ""
        return (
            f"<{type(self).__name__} {self.location} {kind}{shape_text(self.shape)} "
            f"{dtype_name(self.dtype)}>"
        )

    # -- engine hooks ------------------------------------------------------------------------
    @abstractmethod
    def _read(self) -> Any:
        """The whole array (the caller has checked the budget)."""

    def _read_entries(self) -> Entries:
        """The stored entries (sparse engines; the caller has checked the budget)."""
        raise DataError(f"{self.location}: this {self.format} reader cannot list stored entries")

    # Engines that read row ranges define ``_read_rows(start, stop)`` and use the default
    # ``_dense_blocks``; the others (NPY, NPZ, MatrixMarket) override ``_dense_blocks``.

    def _read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        # Engines that can decode straight into a buffer override this.
        out[...] = self._read_rows(start, stop)

    def _can_read_into(self) -> bool:
        cls = type(self)
        return cls._read_rows_into is not ArrayHandle._read_rows_into or hasattr(cls, "_read_rows")

    def _ring_blocks(self, rows: int, budget: int | None, ring: int):
        nrows = self.shape[0]
        step = min(rows, nrows)
        self._check_block_budget(step * ring, budget)
        self._before_blocks()
        bufs = [np.empty((step, *self.shape[1:]), dtype=self.dtype) for _ in range(ring)]
        for i, start in enumerate(range(0, nrows, rows)):
            stop = min(start + rows, nrows)
            out = bufs[i % ring][: stop - start]
            self._read_rows_into(start, stop, out)
            yield start, out

    def _before_blocks(self) -> None:
        """Checks an engine must run before the first block (e.g. missing Zarr chunks)."""
        return None  # nothing to check by default

    def _dense_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, np.ndarray]]:
        # Default: one engine read per block (engines that keep a stream open override).
        self._check_block_budget(rows, budget)
        self._before_blocks()
        nrows = self.shape[0]
        for start in range(0, nrows, rows):
            yield start, self._read_rows(start, min(start + rows, nrows))

    def _sparse_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, Any]]:
        # Default: one budget-checked CSR read, then row slices (engines that can stream override).
        csr = self.read(budget)
        for start in range(0, self.shape[0], rows):
            yield start, csr[start : min(start + rows, self.shape[0])]


def refused_entry(*, name: str, uri: str, fmt: str, reason: str) -> dict[str, Any]:
    """A list_arrays() entry for something that exists but will not be read."""
    return {
        "name": name,
        "uri": uri,
        "format": fmt,
        "shape": None,
        "dtype": None,
        "sparse": None,
        "nnz": None,
        "chunks": None,
        "compression": None,
        "order": None,
        "nbytes": None,
        "read_nbytes": None,
        "notes": [f"refused: {reason}"],
    }


def cap_list(items: list[str], limit: int = 20) -> str:
    """Comma list for messages, cut after `limit` items."""
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", … ({len(items) - limit} more)"
    return shown


class RefusedError(DataError):
    """Content that exists but is refused for safety; `reason` is used in list_arrays notes."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason
