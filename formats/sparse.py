"""Sparse COO groups (`row`, `col`, `data`, `shape`) shared by the HDF5 and Zarr readers.

Components are read in bounded chunks and validated as they arrive: index arrays must be
integers within the declared shape, and all three must have the same length.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np

from .budget import check_budget
from .errors import DataError
from .handle import ArrayHandle

SPARSE_MEMBERS = ("row", "col", "data", "shape")

# Entries read per component slice: 4 Mi entries ≈ 32 MiB per int64 component.
ENTRY_CHUNK = 1 << 22


def csr_nbytes(nnz: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
    # Worst case int64 indices (scipy picks int32 when it can).
    nrows = int(shape[0]) if shape else 0
    return (nrows + 1) * 8 + int(nnz) * (8 + np.dtype(dtype).itemsize)


def coo_to_csr_nbytes(nnz: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Peak bytes of building a CSR from COO: int64 row/col + data, plus the CSR itself."""
    return int(nnz) * (16 + np.dtype(dtype).itemsize) + csr_nbytes(nnz, shape, dtype)


def validate_shape_values(values: np.ndarray, where: str) -> tuple[int, int]:
    """The `shape` member must be two non-negative integers."""
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise DataError(f"{where}: sparse 'shape' must hold integers, not {values.dtype}")
    if values.shape != (2,):
        raise DataError(f"{where}: sparse 'shape' must hold 2 integers, found shape {values.shape}")
    if (values < 0).any():
        raise DataError(f"{where}: sparse 'shape' {values.tolist()} has a negative extent")
    return int(values[0]), int(values[1])


def validate_members(
    shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], where: str
) -> int:
    """Check component ranks, lengths and index dtypes from metadata; return nnz."""
    for member in ("row", "col", "data"):
        if len(shapes[member]) != 1:
            raise DataError(f"{where}: sparse '{member}' must be 1-D, found shape {shapes[member]}")
    lengths = {m: shapes[m][0] for m in ("row", "col", "data")}
    if len(set(lengths.values())) != 1:
        raise DataError(
            f"{where}: sparse components have different lengths "
            f"(row {lengths['row']}, col {lengths['col']}, data {lengths['data']})"
        )
    for member in ("row", "col"):
        if np.dtype(dtypes[member]).kind not in "iu":
            raise DataError(
                f"{where}: sparse '{member}' indices must be integers, not {dtypes[member]}"
            )
    if shapes["shape"] != (2,):
        raise DataError(
            f"{where}: sparse 'shape' must hold 2 integers, found shape {shapes['shape']}"
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

    def __init__(self, *, ncols_rows: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(shape=ncols_rows, sparse=True, **kwargs)

    @abstractmethod
    def _slice(self, member: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) of the COO member ``row``, ``col`` or ``data``."""

    def _checked_chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, n = self.shape
        row = np.asarray(self._slice("row", start, stop))
        col = np.asarray(self._slice("col", start, stop))
        data = np.asarray(self._slice("data", start, stop))
        if not (len(row) == len(col) == len(data) == stop - start):
            raise DataError(f"{self.location}: sparse components ended early at entry {start}")
        check_indices(row, m, "row", self.location, start)
        check_indices(col, n, "col", self.location, start)
        return row.astype(np.int64, copy=False), col.astype(np.int64, copy=False), data

    def _read(self) -> Any:
        self._before_blocks()
        nnz = self.nnz or 0
        row = np.empty(nnz, dtype=np.int64)
        col = np.empty(nnz, dtype=np.int64)
        data = np.empty(nnz, dtype=self.dtype)
        for start in range(0, nnz, self.entry_chunk):
            stop = min(start + self.entry_chunk, nnz)
            row[start:stop], col[start:stop], data[start:stop] = self._checked_chunk(start, stop)
        return build_csr(row, col, data, self.shape)  # type: ignore[arg-type]

    def _sparse_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, Any]]:
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
                row, col, data = self._checked_chunk(lo, min(lo + self.entry_chunk, nnz))
                keep = (row >= start) & (row < stop)
                if keep.any():
                    parts.append((row[keep] - start, col[keep], data[keep]))
            if parts:
                row, col, data = (np.concatenate(p) for p in zip(*parts, strict=True))
            else:
                row = col = np.empty(0, dtype=np.int64)
                data = np.empty(0, dtype=self.dtype)
            yield start, build_csr(row, col, data, (stop - start, n))
