"""MatrixMarket engine (scipy.io / fast_matrix_market).

The header is read with mminfo and checked against the budget and against the file size
before the body is parsed: the parser preallocates from the declared entry count, so a
one-line file declaring 10^12 entries would otherwise ask for terabytes.

read_entries() of a coordinate file: the entries in file order, duplicates kept; a symmetric,
skew-symmetric or hermitian file also gives the mirror of each off-diagonal entry (value,
negated value, conjugate), appended after the stored entries in their order, as the matrix
means. Pattern files give the value 1.0 (as read() does); `field` tells callers it was one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, InputMissingError, StorageError
from .handle import ArrayHandle, one_line, os_errors, refused_entry
from .sparse import Entries, coo_to_csr_nbytes, entries_nbytes
from .uri import URI

FORMAT = "mtx"
_FIELD_DTYPES = {
    "real": np.float64,
    "double": np.float64,
    "integer": np.int64,
    "pattern": np.float64,  # pattern entries are read as 1.0
    "complex": np.complex128,
}
# Each stored value needs at least one character plus a separator.
MIN_BYTES_PER_VALUE = 2


def _stored_values(rows: int, cols: int, entries: int, fmt: str, symmetry: str) -> int:
    """Values physically present in the file (array format stores one triangle if symmetric)."""
    if fmt == "coordinate":
        return entries
    if symmetry in ("symmetric", "hermitian"):
        return rows * (rows + 1) // 2
    if symmetry == "skew-symmetric":
        return rows * (rows - 1) // 2
    return rows * cols


class MtxHandle(ArrayHandle):
    format = FORMAT

    def __init__(self, *, uri: URI, max_bytes: int | None = None) -> None:
        import scipy.io

        path = uri.path
        where = str(path)
        try:
            with open(path, "rb"):
                pass
            rows, cols, entries, fmt, field, symmetry = scipy.io.mminfo(str(path))
        except FileNotFoundError as exc:
            raise InputMissingError(f"{where}: no such file") from exc
        except PermissionError as exc:
            raise InputMissingError(f"{where}: cannot be read (permission denied)") from exc
        except OSError as exc:
            raise StorageError(
                f"{where}: cannot be read ({exc.strerror or one_line(exc)})"
            ) from exc
        except OverflowError as exc:
            # fast_matrix_market parses the size line into int64.
            raise DataError(
                f"{where}: malformed MatrixMarket header (a size on the size line does not fit "
                f"in a 64-bit integer: {one_line(exc)})"
            ) from exc
        except (ValueError, RuntimeError, IndexError, TypeError) as exc:
            raise DataError(f"{where}: malformed MatrixMarket header ({one_line(exc)})") from exc
        if field not in _FIELD_DTYPES:
            raise DataError(f"{where}: malformed MatrixMarket header (unknown field {field!r})")
        if fmt == "array" and field == "pattern":
            raise DataError(f"{where}: malformed MatrixMarket header (array cannot be pattern)")
        if min(rows, cols, entries) < 0:
            raise DataError(f"{where}: malformed MatrixMarket header (negative size)")
        if symmetry != "general" and rows != cols:
            raise DataError(f"{where}: {symmetry} matrix must be square, header says {rows}×{cols}")
        dtype = np.dtype(_FIELD_DTYPES[field])
        self.field = field  # e.g. "pattern": the values are not data
        self._stored = _stored_values(rows, cols, entries, fmt, symmetry)
        self._symmetry = symmetry
        self._mm_format = fmt
        sparse = fmt == "coordinate"
        notes = [f"MatrixMarket {fmt} {field} {symmetry}"]
        if field == "pattern":
            notes.append("pattern entries are read as 1.0")
        if sparse and symmetry != "general":
            notes.append(
                f"nnz={entries} counts the stored triangle; read() expands the {symmetry} part "
                f"(up to {2 * entries} entries)"
            )
        super().__init__(
            uri=uri,
            location=where,
            name=path.name,
            shape=(rows, cols),
            dtype=dtype,
            sparse=sparse,
            nnz=entries if sparse else None,
            order=None if sparse else "F",  # array format lists values column by column
            notes=notes,
            max_bytes=max_bytes,
        )
        self._path = path

    @property
    def read_nbytes(self) -> int:
        if not self.sparse:
            return self.nbytes
        return coo_to_csr_nbytes(self._expanded_nnz(), self.shape, self.dtype)

    def _expanded_nnz(self) -> int:
        # Symmetric parts are mirrored on read: up to twice the stored entries.
        return (self.nnz or 0) * (1 if self._symmetry == "general" else 2)

    @property
    def entries_nbytes(self) -> int:
        # The parser's coordinates may be int32 and are copied to int64: 8 more per entry.
        expanded = self._expanded_nnz()
        return entries_nbytes(expanded, 2, self.dtype) + 8 * expanded

    def _dense_blocks(self, rows: int, budget: int | None) -> Any:
        # The text parser cannot seek to a row: one budget-checked read, then row slices.
        full = self.read(budget)
        for start in range(0, self.shape[0], rows):
            yield start, full[start : min(start + rows, self.shape[0])]

    def _parse(self) -> Any:
        """The whole file through scipy.io.mmread (symmetric parts mirrored, nothing summed)."""
        import scipy.io

        # After the budget check (done by read()): a header may claim more values than the
        # file can hold, and the parser would preallocate for all of them.
        with os_errors(self.location):
            size = os.stat(self._path).st_size
        if self._stored > size // MIN_BYTES_PER_VALUE + 1:
            raise DataError(
                f"{self.location}: header declares {self._stored} values but the file has only "
                f"{size} bytes"
            )

        try:
            if self._mm_format == "array":
                # scipy's fast parser segfaulted on a fuzzed dense (array) body in CI; the
                # pure-Python reader parses the same format without native code
                from scipy.io import _mmio

                out = _mmio.mmread(str(self._path))
            else:
                out = scipy.io.mmread(str(self._path), spmatrix=False)
        except PermissionError as exc:
            raise InputMissingError(f"{self.location}: cannot be read (permission denied)") from exc
        except OSError as exc:
            raise StorageError(
                f"{self.location}: I/O error while reading ({exc.strerror or one_line(exc)})"
            ) from exc
        except (ValueError, RuntimeError, IndexError, OverflowError, TypeError) as exc:
            # TypeError: the pure-Python array reader on a malformed value
            raise DataError(
                f"{self.location}: malformed MatrixMarket data ({one_line(exc)})"
            ) from exc
        return out

    def _read(self) -> Any:
        out = self._parse()
        if not self.sparse:
            return np.asarray(out, dtype=self.dtype)
        csr = out.tocsr()
        csr.sum_duplicates()
        if csr.dtype != self.dtype:
            csr = csr.astype(self.dtype)
        return csr

    def _read_entries(self) -> Entries:
        out = self._parse()
        row, col = (np.asarray(c).astype(np.int64, copy=False) for c in out.coords)
        values = np.asarray(out.data).astype(self.dtype, copy=False)
        return Entries(indices=(row, col), values=values, shape=self.shape)


def open_handle(uri: URI, *, max_bytes: int | None = None) -> ArrayHandle:
    return MtxHandle(uri=uri, max_bytes=max_bytes)


def list_entries(path: Path) -> list[dict[str, Any]]:
    try:
        return [MtxHandle(uri=URI(str(path), path, None)).describe()]
    except DataError as exc:
        return [refused_entry(name=path.name, uri=str(path), fmt=FORMAT, reason=one_line(exc))]
