"""Sparse COO groups shared by the HDF5 and Zarr readers.

A group holds `data` (1-D), `shape` (N non-negative integers) and one 1-D integer index array
per mode: `row`, `col` for a matrix, or `index_0` … `index_{N-1}` for any order N ≥ 2. Other
members are ignored (and named in the notes); a group that mixes the namings, has a gap in the
index_k sequence or looks like CSR is refused with the reason.

Components are read in bounded chunks and validated as they arrive: index arrays must be
integers within the declared shape, and all components must have the same length.
read() gives a 2-D group as a canonical CSR (duplicates summed); read_entries() gives the stored
entries of any order in file order, duplicates kept (completion needs them raw).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import check_budget
from .errors import DataError
from .handle import ArrayHandle

SPARSE_MEMBERS = ("row", "col", "data", "shape")  # the matrix naming (kept for importers)
MATRIX_INDEX = ("row", "col")

# Entries read per component slice: 4 Mi entries ≈ 32 MiB per int64 component.
ENTRY_CHUNK = 1 << 22

_INDEX_K = re.compile(r"index_(0|[1-9][0-9]*)")
_CSR_MEMBERS = ("indices", "indptr")
_EXPECTED = "expected 'row' and 'col', or 'index_0' … 'index_{N-1}', next to 'data' and 'shape'"


@dataclass(frozen=True, eq=False)
class Entries:
    """Stored entries of a sparse input: entry e is values[e] at (indices[0][e], …).

    File order, duplicates kept, never summed; `indices` are int64 (one array per mode),
    `values` keep the stored dtype. eq=False: numpy arrays have no single truth value.
    """

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.shape):
            raise ValueError(f"{len(self.indices)} index arrays for shape {self.shape}")
        n = len(self.values)
        if any(len(i) != n for i in self.indices):
            raise ValueError("index and value arrays have different lengths")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nnz(self) -> int:
        """Stored entries (duplicates counted)."""
        return len(self.values)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype


def entries_nbytes(nnz: int, ndim: int, dtype: np.dtype) -> int:
    """Bytes of an Entries: int64 indices per mode plus the values."""
    return int(nnz) * (8 * int(ndim) + np.dtype(dtype).itemsize)


@dataclass(frozen=True)
class SparseLayout:
    """The members of a COO group: index members in mode order, or why it is refused."""

    index: tuple[str, ...] = ()
    problem: str | None = None
    ignored: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.index, "data", "shape")


def _index_like(name: str) -> bool:
    return name in MATRIX_INDEX or name in _CSR_MEMBERS or name.startswith("index")


def sparse_layout(names: Iterable[str]) -> SparseLayout | None:
    """The layout of a group with these member names; None when it is no sparse group.

    A group is sparse when it has `data`, `shape` and at least one index-like member (`row`,
    `col`, `index…`, CSR's `indices`/`indptr`); a malformed one gets a layout with a problem,
    so it is listed and refused as one array instead of silently read as separate arrays.
    """
    names = set(names)
    if not {"data", "shape"} <= names:
        return None
    like = sorted(n for n in names if _index_like(n))
    if not like:
        return None
    ignored = tuple(sorted(names - set(like) - {"data", "shape"}))

    def refuse(why: str) -> SparseLayout:
        return SparseLayout(problem=f"sparse group {why}; {_EXPECTED}", ignored=ignored)

    def quoted(items: Iterable[str]) -> str:
        return ", ".join(f"'{n}'" for n in items)

    csr = [n for n in like if n in _CSR_MEMBERS]
    if csr:
        return refuse(f"looks like CSR/CSC ({quoted(csr)}), which is not read")
    matrix = [n for n in like if n in MATRIX_INDEX]
    indexed = [n for n in like if n not in MATRIX_INDEX]
    if matrix and indexed:
        return refuse(f"mixes two namings ({quoted(matrix)} and {quoted(indexed)})")
    if matrix:
        if len(matrix) == 1:
            other = "col" if matrix[0] == "row" else "row"
            return refuse(f"has '{matrix[0]}' but no '{other}'")
        return SparseLayout(index=MATRIX_INDEX, ignored=ignored)
    bad = [n for n in indexed if not _INDEX_K.fullmatch(n)]
    if bad:
        return refuse(f"has index members not named index_<k>: {quoted(bad)}")
    modes = sorted(int(n.removeprefix("index_")) for n in indexed)
    missing = sorted(set(range(modes[-1] + 1)) - set(modes))
    if missing:
        gap = quoted(f"index_{k}" for k in missing)
        return refuse(f"has a gap in its index members: {gap} missing")
    if len(modes) < 2:
        return refuse("has a single index member 'index_0' (at least 2 modes are needed)")
    return SparseLayout(index=tuple(f"index_{k}" for k in modes), ignored=ignored)


def layout_notes(layout: SparseLayout) -> list[str]:
    """The describe() notes of a COO group."""
    if len(layout.index) == 2:
        note = f"sparse COO group ({', '.join(layout.members)}); duplicates are summed on read"
    else:
        members = f"{layout.index[0]} … {layout.index[-1]}, data, shape"
        note = (
            f"sparse COO tensor ({members}): read as entries only (read_entries, duplicates kept)"
        )
    notes = [note]
    if layout.ignored:
        notes.append("other members ignored: " + ", ".join(layout.ignored))
    return notes


def csr_nbytes(nnz: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
    # Worst case int64 indices (scipy picks int32 when it can).
    nrows = int(shape[0]) if shape else 0
    return (nrows + 1) * 8 + int(nnz) * (8 + np.dtype(dtype).itemsize)


def coo_to_csr_nbytes(nnz: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Peak bytes of building a CSR from COO: int64 row/col + data, plus the CSR itself."""
    return int(nnz) * (16 + np.dtype(dtype).itemsize) + csr_nbytes(nnz, shape, dtype)


def validate_shape_values(values: np.ndarray, where: str, ndim: int = 2) -> tuple[int, ...]:
    """The `shape` member must be `ndim` non-negative integers (one per index member)."""
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise DataError(f"{where}: sparse 'shape' must hold integers, not {values.dtype}")
    if values.shape != (ndim,):
        raise DataError(
            f"{where}: sparse 'shape' must hold {ndim} integers (one per index member), "
            f"found shape {values.shape}"
        )
    if (values < 0).any():
        raise DataError(f"{where}: sparse 'shape' {values.tolist()} has a negative extent")
    return tuple(int(v) for v in values)


def validate_members(
    shapes: dict[str, tuple[int, ...]],
    dtypes: dict[str, np.dtype],
    where: str,
    index: tuple[str, ...] = MATRIX_INDEX,
) -> int:
    """Check component ranks, lengths and index dtypes from metadata; return nnz."""
    components = (*index, "data")
    for member in components:
        if len(shapes[member]) != 1:
            raise DataError(f"{where}: sparse '{member}' must be 1-D, found shape {shapes[member]}")
    lengths = {m: shapes[m][0] for m in components}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{m} {n}" for m, n in lengths.items())
        raise DataError(f"{where}: sparse components have different lengths ({listed})")
    for member in index:
        if np.dtype(dtypes[member]).kind not in "iu":
            raise DataError(
                f"{where}: sparse '{member}' indices must be integers, not {dtypes[member]}"
            )
    if shapes["shape"] != (len(index),):
        raise DataError(
            f"{where}: sparse 'shape' must hold {len(index)} integers (one per index member), "
            f"found shape {shapes['shape']}"
        )
    return lengths["data"]


def check_indices(idx: np.ndarray, extent: int, member: str, where: str, offset: int) -> None:
    if idx.size == 0:
        return
    lo, hi = idx.min(), idx.max()
    if lo < 0 or hi >= extent:
        bad = lo if lo < 0 else hi
        pos = offset + int(np.flatnonzero(idx == bad)[0])
        raise DataError(
            f"{where}: sparse '{member}' index {int(bad)} at entry {pos} "
            f"is out of range [0, {extent})"
        )


def build_csr(row: np.ndarray, col: np.ndarray, data: np.ndarray, shape: tuple[int, int]) -> Any:
    """Canonical CSR: duplicates summed, indices sorted."""
    import scipy.sparse as sp

    csr = sp.coo_array((data, (row, col)), shape=shape).tocsr()
    csr.sum_duplicates()  # also sorts the indices
    return csr


class SparseCOOHandle(ArrayHandle):
    """Handle on a COO group; engines provide `_slice(member, start, stop)`."""

    entry_chunk = ENTRY_CHUNK  # entries per component slice (tests lower it)

    def __init__(self, *, index_members: tuple[str, ...] = MATRIX_INDEX, **kwargs: Any) -> None:
        super().__init__(sparse=True, **kwargs)
        self.index_members = tuple(index_members)

    @abstractmethod
    def _slice(self, member: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) of the COO member (an index member or ``data``)."""

    @property
    def read_nbytes(self) -> int:
        # A tensor is only read as entries.
        return super().read_nbytes if self.ndim == 2 else self.entries_nbytes

    def _checked_entries(self, start: int, stop: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Entries [start, stop): int64 indices (one per mode) validated, and the values."""
        parts = []
        for extent, member in zip(self.shape, self.index_members, strict=True):
            idx = np.asarray(self._slice(member, start, stop))
            if len(idx) != stop - start:
                raise DataError(f"{self.location}: sparse components ended early at entry {start}")
            check_indices(idx, extent, member, self.location, start)
            parts.append(idx.astype(np.int64, copy=False))
        data = np.asarray(self._slice("data", start, stop))
        if len(data) != stop - start:
            raise DataError(f"{self.location}: sparse components ended early at entry {start}")
        return parts, data

    def _refuse_tensor(self) -> None:
        if self.ndim != 2:
            raise DataError(
                f"{self.location}: a {self.ndim}-D sparse tensor can only be read as its "
                "entries (by `rankwise complete`), not as a matrix"
            )

    def read(self, max_bytes: int | None = None) -> Any:
        self._refuse_tensor()  # before the budget: no size makes it readable
        return super().read(max_bytes)

    def _read(self) -> Any:
        self._before_blocks()
        nnz = self.nnz or 0
        row = np.empty(nnz, dtype=np.int64)
        col = np.empty(nnz, dtype=np.int64)
        data = np.empty(nnz, dtype=self.dtype)
        for start in range(0, nnz, self.entry_chunk):
            stop = min(start + self.entry_chunk, nnz)
            (row[start:stop], col[start:stop]), data[start:stop] = self._checked_entries(
                start, stop
            )
        return build_csr(row, col, data, self.shape)  # type: ignore[arg-type]

    def _read_entries(self) -> Entries:
        self._before_blocks()
        nnz = self.nnz or 0
        indices = tuple(np.empty(nnz, dtype=np.int64) for _ in self.shape)
        values = np.empty(nnz, dtype=self.dtype)
        for start in range(0, nnz, self.entry_chunk):
            stop = min(start + self.entry_chunk, nnz)
            parts, values[start:stop] = self._checked_entries(start, stop)
            for out, part in zip(indices, parts, strict=True):
                out[start:stop] = part
        return Entries(indices=indices, values=values, shape=self.shape)

    def scan(self, *, max_bytes: int | None = None) -> dict[str, int]:
        """For a tensor: NaN/Inf among the stored values, and "nnz" = stored entries
        (duplicates counted: summing them would need a sort). Indices are validated."""
        if self.ndim == 2:
            return super().scan(max_bytes=max_bytes)
        self._check_open()
        self._check_extents()
        per_entry = 16 * self.ndim + self.dtype.itemsize  # stored slice + int64 copy
        check_budget(
            self.entry_chunk * per_entry,
            self._budget(max_bytes),
            where=self.location,
            what="scanning the sparse entries in chunks",
        )
        self._before_blocks()
        nnz = self.nnz or 0
        nan = inf = 0
        for start in range(0, nnz, self.entry_chunk):
            _, data = self._checked_entries(start, min(start + self.entry_chunk, nnz))
            if self.dtype.kind in "fc":
                nan += int(np.count_nonzero(np.isnan(data)))
                inf += int(np.count_nonzero(np.isinf(data)))
        return {"nan": nan, "inf": inf, "nnz": nnz}

    def _sparse_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, Any]]:
        self._refuse_tensor()
        m, n = self.shape
        if budget is None or self.read_nbytes <= budget:
            yield from super()._sparse_blocks(rows, budget)
            return
        # Over budget: one pass over the entries per row block. Slow but bounded by the chunk
        # size plus the entries of one block.
        check_budget(
            self.entry_chunk * (16 + self.dtype.itemsize) * 2,
            budget,
            where=self.location,
            what="streaming the sparse entries in chunks",
        )
        self._before_blocks()
        nnz = self.nnz or 0
        for start in range(0, m, rows):
            stop = min(start + rows, m)
            parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for lo in range(0, nnz, self.entry_chunk):
                (row, col), data = self._checked_entries(lo, min(lo + self.entry_chunk, nnz))
                keep = (row >= start) & (row < stop)
                if keep.any():
                    parts.append((row[keep] - start, col[keep], data[keep]))
            if parts:
                row, col, data = (np.concatenate(p) for p in zip(*parts, strict=True))
            else:
                row = col = np.empty(0, dtype=np.int64)
                data = np.empty(0, dtype=self.dtype)
            yield start, build_csr(row, col, data, (stop - start, n))
