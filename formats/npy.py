"""NPY engine: header parsed without loading; data read with plain file reads.

Plain reads (not mmap) for read() so an I/O error is an OSError rather than a SIGBUS; row
blocks of C-order files are read at their offset, F-order files through a read-only memmap.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .budget import dense_nbytes, shape_text
from .dtypes import dtype_name, dtype_refusal
from .errors import DataError, InputMissingError, StorageError
from .handle import ArrayHandle, RefusedError, one_line, os_errors
from .uri import URI

FORMAT = "npy"
READ_CHUNK = 16 * 1024 * 1024
MAX_HEADER_BYTES = 10000  # numpy's default max_header_size


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # bytes from the start of the stream to the first data byte

    @property
    def nbytes(self) -> int:
        return dense_nbytes(self.shape, self.dtype)

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


def read_header(f: IO[bytes], where: str) -> NpyHeader:
    """Parse magic + header only (numpy's public parser; never unpickles)."""
    import tokenize

    import numpy.lib.format as npf

    start = f.tell()
    try:
        version = npf.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise DataError(f"{where}: unsupported NPY format version {version[0]}.{version[1]}")
        # numpy reads the declared header length before checking it: 4 GiB for a v2 header.
        size_field = f.read(2 if version == (1, 0) else 4)
        length = int.from_bytes(size_field, "little")
        if length > MAX_HEADER_BYTES:
            raise DataError(
                f"{where}: malformed NPY header (declares {length} header bytes, "
                f"more than the {MAX_HEADER_BYTES} numpy accepts)"
            )
        head = io.BytesIO(size_field + f.read(length))
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(head)
        else:
            # 3.0 differs only by a UTF-8 header (structured field names), refused anyway.
            shape, fortran, dtype = npf.read_array_header_2_0(head)
    except (
        ValueError,
        EOFError,
        SyntaxError,
        TypeError,
        UnicodeDecodeError,
        tokenize.TokenError,  # numpy re-tokenizes a header it cannot parse (unbalanced brackets)
    ) as exc:
        raise DataError(f"{where}: malformed NPY header ({one_line(exc)})") from exc
    if not isinstance(shape, tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise DataError(f"{where}: malformed NPY header (invalid shape {shape!r})")
    return NpyHeader(tuple(shape), bool(fortran), np.dtype(dtype), f.tell() - start)


def readinto_exact(f: IO[bytes], out: np.ndarray, where: str) -> None:
    """Fill `out` (contiguous) from `f`; a short read means the data was truncated."""
    if not out.flags.c_contiguous:  # reshape would copy and the data would be lost
        raise ValueError("readinto_exact needs a C-contiguous buffer")
    view = memoryview(out.reshape(-1).view(np.uint8))
    pos, total = 0, view.nbytes
    while pos < total:  # straight into the buffer: no temporary, no page faults per read
        got = f.readinto(view[pos : pos + min(READ_CHUNK, total - pos)])
        if not got:
            raise DataError(f"{where}: truncated data (ended after {pos} of {total} bytes)")
        pos += got


def open_input(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot be opened ({exc.strerror or one_line(exc)})") from exc


class NpyHandle(ArrayHandle):
    format = FORMAT

    def __init__(self, *, uri: URI, max_bytes: int | None = None) -> None:
        path = uri.path
        with open_input(path) as f, os_errors(str(path)):
            header = read_header(f, str(path))
            size = os.fstat(f.fileno()).st_size
        reason = dtype_refusal(header.dtype)
        if reason:
            raise RefusedError(str(path), reason)
        notes = []
        if size < header.end:
            notes.append(f"truncated: file has {size} bytes, header declares {header.end}")
        super().__init__(
            uri=uri,
            location=str(path),
            name=path.name,
            shape=header.shape,
            dtype=header.dtype,
            order="F" if header.fortran else "C",
            notes=notes,
            max_bytes=max_bytes,
        )
        self._path = path
        self._header = header

    def _open_complete(self) -> IO[bytes]:
        """Open the file and check (now, not at open time) that it holds all declared data."""
        f = open_input(self._path)
        size = os.fstat(f.fileno()).st_size
        if size < self._header.end:
            f.close()
            raise DataError(
                f"{self.location}: truncated file: {size} bytes but the header declares "
                f"{self._header.end} (shape {shape_text(self.shape)} {dtype_name(self.dtype)})"
            )
        return f

    def _read(self) -> np.ndarray:
        with self._open_complete() as f, os_errors(self.location):
            f.seek(self._header.offset)
            out = np.empty(self.shape, dtype=self.dtype, order="F" if self._header.fortran else "C")
            flat = out.T if self._header.fortran else out  # C-contiguous view of the stored bytes
            readinto_exact(f, flat, self.location)
            return out

    def _dense_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, np.ndarray]]:
        self._check_block_budget(rows, budget)
        nrows = self.shape[0]
        with self._open_complete() as f, os_errors(self.location):
            if self._header.fortran and self.nbytes:
                mm: Any = np.memmap(
                    f,
                    dtype=self.dtype,
                    mode="r",
                    offset=self._header.offset,
                    shape=self.shape,
                    order="F",
                )
                try:
                    for start in range(0, nrows, rows):
                        yield start, np.array(mm[start : min(start + rows, nrows)])
                finally:
                    del mm
                return
            row_bytes = dense_nbytes(self.shape[1:], self.dtype)
            for start in range(0, nrows, rows):
                stop = min(start + rows, nrows)
                f.seek(self._header.offset + start * row_bytes)
                block = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
                readinto_exact(f, block, self.location)
                yield start, block

    def _read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        with self._open_complete() as f, os_errors(self.location):
            if self._header.fortran:
                mm: Any = np.memmap(f, dtype=self.dtype, mode="r", offset=self._header.offset,
                                    shape=self.shape, order="F")  # fmt: skip
                try:
                    np.copyto(out, mm[start:stop])
                finally:
                    del mm
                return
            f.seek(self._header.offset + start * dense_nbytes(self.shape[1:], self.dtype))
            readinto_exact(f, out, self.location)


def open_handle(uri: URI, *, max_bytes: int | None = None) -> ArrayHandle:
    return NpyHandle(uri=uri, max_bytes=max_bytes)


def list_entries(path: Path) -> list[dict[str, Any]]:
    from .handle import refused_entry

    try:
        return [NpyHandle(uri=URI(str(path), path, None)).describe()]
    except RefusedError as exc:
        return [refused_entry(name=path.name, uri=str(path), fmt=FORMAT, reason=exc.reason)]
    except DataError as exc:
        return [refused_entry(name=path.name, uri=str(path), fmt=FORMAT, reason=one_line(exc))]
