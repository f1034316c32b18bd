"""Content fingerprints: the same numbers give the same hash whatever the file format or order.

Dense: sha256 over a version tag, the little-endian dtype, the shape, then the C-order bytes fed
in row blocks (no full copy of F-order data). Sparse: canonical CSR (duplicates summed, indices
sorted), with indptr and indices as int64 and the data in the little-endian dtype.
Entries (observed entries, duplicates kept): sorted canonically by (index_0, …, index_{N-1},
value) first, so the hash depends on the entries, not on the file's order or format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from .handle import ArrayHandle
from .sparse import Entries

VERSION_TAG = "rankwise-fingerprint/1"
BLOCK_BYTES = 8 * 1024 * 1024


def _canonical_dtype(dtype: np.dtype) -> np.dtype:
    # Byte order is storage, not content: '>f8' and '<f8' holding the same values agree.
    return np.dtype(dtype).newbyteorder("<")


def _header(kind: str, dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    dims = ",".join(str(int(s)) for s in shape)
    return f"{VERSION_TAG}|{kind}|{_canonical_dtype(dtype).str}|({dims})|".encode()


class Fingerprinter:
    """Incremental fingerprint: feed the row blocks in order, then ``hexdigest()``.

    Lets a streaming algorithm hash the data during a pass it makes anyway.
    """

    def __init__(self, dtype: Any, shape: tuple[int, ...], *, sparse: bool) -> None:
        self.canon = _canonical_dtype(dtype)
        self.header = _header("csr" if sparse else "dense", dtype, shape)
        self.sparse = sparse
        if sparse:
            self.parts = [hashlib.sha256(), hashlib.sha256(), hashlib.sha256()]
            self.parts[0].update(np.zeros(1, dtype="<i8").tobytes())
            self.offset = 0
        else:
            self.h = hashlib.sha256(self.header)

    def update(self, block: Any) -> None:
        if not self.sparse:
            self.h.update(memoryview(np.ascontiguousarray(block, dtype=self.canon)).cast("B"))
            return
        csr = _canonical_csr(block)
        h_ptr, h_idx, h_data = self.parts
        h_ptr.update((csr.indptr[1:].astype("<i8") + self.offset).tobytes())
        h_idx.update(csr.indices.astype("<i8").tobytes())
        h_data.update(np.ascontiguousarray(csr.data, dtype=self.canon).tobytes())
        self.offset += int(csr.indptr[-1])

    def hexdigest(self) -> str:
        if not self.sparse:
            return "sha256:" + self.h.hexdigest()
        h = hashlib.sha256(self.header)
        for part in self.parts:
            h.update(part.digest())
        return "sha256:" + h.hexdigest()


def _digest(dtype: np.dtype, shape: tuple[int, ...], blocks: Iterable[Any], sparse: bool) -> str:
    fp = Fingerprinter(dtype, shape, sparse=sparse)
    for block in blocks:
        fp.update(block)
    return fp.hexdigest()


def _canonical_csr(block: Any) -> Any:
    csr = block.tocsr()
    if csr is block or not csr.has_canonical_format:
        csr = csr.copy()  # never mutate the caller's matrix
        csr.sum_duplicates()
    return csr


def _row_blocks(a: np.ndarray, block_bytes: int) -> Iterable[np.ndarray]:
    if a.ndim == 0:
        yield a
        return
    row_bytes = max(a[:1].nbytes, 1)
    rows = max(block_bytes // row_bytes, 1)
    for start in range(0, a.shape[0], rows):
        yield a[start : start + rows]


def _is_scipy_sparse(obj: Any) -> bool:
    return type(obj).__module__.startswith("scipy.sparse")


def fingerprint_entries(entries: Entries, *, block_entries: int = 1 << 20) -> str:
    """'sha256:<hex>' of stored entries, independent of their order and storage format.

    The entries are put in canonical order (lexicographic by index_0 … index_{N-1}, then by
    value, so duplicates are ordered too); the sort costs 8 bytes per entry, the gathered
    copies `block_entries` at a time. Duplicates are kept, never summed: two files observing
    the same entry a different number of times differ. The dtype and shape are hashed too.
    """
    canon = _canonical_dtype(entries.values.dtype)
    order = np.lexsort((entries.values, *reversed(entries.indices)))
    h = hashlib.sha256(_header("entries", entries.values.dtype, entries.shape))
    h.update(f"{entries.nnz}|".encode())
    for array, dtype in [*((i, np.dtype("<i8")) for i in entries.indices), (entries.values, canon)]:
        for start in range(0, len(order), block_entries):
            part = array[order[start : start + block_entries]]
            h.update(np.ascontiguousarray(part, dtype=dtype).tobytes())
    return "sha256:" + h.hexdigest()


def fingerprint(array: Any, *, block_bytes: int = BLOCK_BYTES) -> str:
    """'sha256:<hex>' of an ndarray, a scipy sparse matrix/array, Entries or an ArrayHandle
    (streamed; a sparse tensor handle is hashed from its entries)."""
    if isinstance(array, Entries):
        return fingerprint_entries(array)
    if isinstance(array, ArrayHandle) and array.sparse and array.ndim != 2:
        return fingerprint_entries(array.read_entries())
    if isinstance(array, ArrayHandle):
        rows = array.block_rows(block_bytes)
        blocks = (block for _, block in array.iter_blocks(rows))
        return _digest(array.dtype, array.shape, blocks, array.sparse)
    if _is_scipy_sparse(array):
        if array.ndim != 2:
            raise ValueError("sparse fingerprints need a 2-D matrix")
        return _digest(array.dtype, array.shape, [array], True)
    a = np.asarray(array)
    return _digest(a.dtype, a.shape, _row_blocks(a, block_bytes), False)


def fingerprint_many(arrays: dict[str, Any]) -> str:
    """'sha256:<hex>' of named arrays (e.g. the cores of a result): names and fingerprints
    in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(f"{name}={fingerprint(arrays[name])};".encode())
    return "sha256:" + h.hexdigest()
