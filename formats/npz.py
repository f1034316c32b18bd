"""NPZ engine: members opened through zipfile; headers parsed before any decompression.

The declared shape is budget-checked before a byte of data is inflated, and the member's
declared uncompressed size must cover it (a decompression bomb cannot get past the budget and
a lying header cannot make us allocate more than the member can hold).
"""

from __future__ import annotations

import contextlib
import errno
import json
import lzma
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .budget import check_budget, shape_text
from .dtypes import dtype_name, dtype_refusal
from .errors import DataError, InputMissingError, StorageError, UsageError
from .handle import ArrayHandle, RefusedError, cap_list, one_line, os_errors, refused_entry
from .npy import read_header, readinto_exact
from .uri import URI

FORMAT = "npz"
ATTRS_KEY = "__attrs__"  # root attributes written by rankwise, JSON in a 0-d unicode array
MAX_ATTRS_BYTES = 16 * 1024 * 1024
_COMPRESSION = {
    zipfile.ZIP_STORED: None,
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}


# RuntimeError: encrypted member; NotImplementedError: unsupported compression.
_MEMBER_DECODE = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    RuntimeError,
)


@contextlib.contextmanager
def member_errors(where: str) -> Iterator[None]:
    try:
        with os_errors(where, _MEMBER_DECODE, "corrupt or unsupported zip member"):
            yield
    except StorageError as exc:
        cause = exc.__cause__
        if _corrupt_os_error(cause):
            raise DataError(
                f"{where}: corrupt or unsupported zip member ({one_line(cause)})"
            ) from cause
        raise


def _corrupt_os_error(exc: BaseException | None) -> bool:
    """OSErrors that come from the archive's content, not from the storage: a decoder's
    OSError without an errno, or a corrupt directory offset that makes zipfile seek before
    the start of the file (EINVAL)."""
    if type(exc) is not OSError:
        return False
    return exc.errno is None or exc.errno == errno.EINVAL


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path, "r")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from exc
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        # NotImplementedError: a directory entry needing a zip version Python cannot read
        raise DataError(f"{path}: not a valid NPZ (zip) file ({one_line(exc)})") from exc
    except OSError as exc:
        if _corrupt_os_error(exc):
            raise DataError(f"{path}: not a valid NPZ (zip) file ({one_line(exc)})") from exc
        raise StorageError(f"{path}: cannot be opened ({exc.strerror or one_line(exc)})") from exc


def members(zf: zipfile.ZipFile, *, with_attrs: bool = False) -> dict[str, zipfile.ZipInfo]:
    """Keys as numpy names them ('U.npy' -> 'U'), in archive order."""
    out = {}
    for info in zf.infolist():
        if not info.filename or info.is_dir():  # is_dir() fails on an empty name
            continue
        key = info.filename.removesuffix(".npy")
        if key == ATTRS_KEY and not with_attrs:
            continue
        out[key] = info
    return out


# The dictionary an LZMA member's header asks for is allocated before a byte is decoded; with
# no budget given (listing) it is capped at the largest preset's (64 MiB) times four.
LZMA_DICT_CAP = 256 * 1024 * 1024


def check_lzma_dictionary(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str,
                          budget: int | None) -> None:  # fmt: skip
    """An LZMA member declares its dictionary size (up to 4 GiB) in 9 bytes: refuse one
    that does not fit the budget, before zipfile's decoder allocates it."""
    if info.compress_type != zipfile.ZIP_LZMA or not zf.filename:
        return
    with member_errors(where), open(zf.filename, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return  # zipfile reports the bad header itself
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        head = f.read(9)  # version (2), properties size (2), lc/lp/pb (1), dictionary (4)
    if len(head) < 9:
        return
    dictionary = int.from_bytes(head[5:9], "little")
    check_budget(
        dictionary,
        LZMA_DICT_CAP if budget is None else budget,
        where=where,
        what="the dictionary its LZMA compression declares",
    )


class NpzHandle(ArrayHandle):
    format = FORMAT

    def __init__(
        self,
        *,
        zf: zipfile.ZipFile,
        info: zipfile.ZipInfo,
        key: str,
        uri: URI,
        owns_zip: bool = False,
        **kw: Any,
    ) -> None:
        location = f"{uri.path}:{key}"
        check_lzma_dictionary(zf, info, location, kw.get("max_bytes"))
        with member_errors(location), zf.open(info) as f:
            header = read_header(f, location)
        reason = dtype_refusal(header.dtype)
        if reason:
            raise RefusedError(location, reason)
        notes = []
        if info.file_size < header.end:
            notes.append(
                f"truncated: member holds {info.file_size} bytes, header declares {header.end}"
            )
        super().__init__(
            uri=uri,
            location=location,
            name=key,
            shape=header.shape,
            dtype=header.dtype,
            compression=_COMPRESSION.get(info.compress_type, f"zip method {info.compress_type}"),
            order="F" if header.fortran else "C",
            notes=notes,
            **kw,
        )
        self._zf: zipfile.ZipFile | None = zf
        self._owns_zip = owns_zip  # close the archive with the handle (open_handle only)
        self._info = info
        self._header = header

    def _check_sizes(self) -> None:
        if self._info.file_size < self._header.end:
            raise DataError(
                f"{self.location}: truncated member: {self._info.file_size} bytes but the header "
                f"declares {self._header.end} (shape {shape_text(self.shape)} "
                f"{dtype_name(self.dtype)})"
            )

    @contextlib.contextmanager
    def _data_stream(self) -> Iterator[Any]:
        """The member positioned at its first data byte; at the end zipfile checks the CRC."""
        assert self._zf is not None
        self._check_sizes()
        with member_errors(self.location), self._zf.open(self._info) as f:
            read_header(f, self.location)
            yield f
            f.read(1)  # reach end of member: zipfile verifies the CRC there

    def _read(self) -> np.ndarray:
        with self._data_stream() as f:
            out = np.empty(self.shape, dtype=self.dtype, order="F" if self._header.fortran else "C")
            readinto_exact(f, out.T if self._header.fortran else out, self.location)
        return out

    def _dense_blocks(self, rows: int, budget: int | None) -> Iterator[tuple[int, np.ndarray]]:
        nrows = self.shape[0]
        if self._header.fortran:
            # Rows are not contiguous in an F-order member: one budget-checked read.
            full = self.read(budget)
            for start in range(0, nrows, rows):
                yield start, full[start : min(start + rows, nrows)]
            return
        self._check_block_budget(rows, budget)
        with self._data_stream() as f:  # decompress once, front to back
            for start in range(0, nrows, rows):
                stop = min(start + rows, nrows)
                block = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
                readinto_exact(f, block, self.location)
                yield start, block

    def close(self) -> None:
        if self._zf is not None and self._owns_zip:
            self._zf.close()
        self._zf = None
        super().close()


def open_handle(uri: URI, *, max_bytes: int | None = None) -> ArrayHandle:
    zf = open_zip(uri.path)
    try:
        found = members(zf)
        uris = [f"{uri.path}:{k}" for k in found]
        if uri.key is None:
            if not found:
                raise InputMissingError(f"{uri.path}: holds no arrays")
            if len(found) > 1:
                raise UsageError(
                    f"{uri.path}: holds {len(found)} arrays, name one: {cap_list(uris)}"
                )
            key = next(iter(found))
        else:
            key = uri.key.removesuffix(".npy")
            if key not in found:
                raise InputMissingError(
                    f"{uri.path}: no array '{uri.key}' (arrays in file: {cap_list(uris)})"
                )
        return NpzHandle(
            zf=zf, info=found[key], key=key, uri=uri, owns_zip=True, max_bytes=max_bytes
        )
    except BaseException:
        zf.close()
        raise


def list_entries(path: Path) -> list[dict[str, Any]]:
    with open_zip(path) as zf:
        uri = URI(str(path), path, None)
        out = []
        for key, info in members(zf).items():
            try:
                out.append(NpzHandle(zf=zf, info=info, key=key, uri=uri).describe())
            except DataError as exc:
                reason = getattr(exc, "reason", None) or one_line(exc)
                out.append(refused_entry(name=key, uri=f"{path}:{key}", fmt=FORMAT, reason=reason))
        return out


# -- writing ---------------------------------------------------------------------------------


def _write_one(zf: zipfile.ZipFile, member: str, arr: np.ndarray) -> None:
    import numpy.lib.format as npf

    # Fixed timestamp: the same arrays give the same bytes.
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    with zf.open(info, "w", force_zip64=True) as f:
        npf.write_array(f, arr, allow_pickle=False)


def write_arrays(
    staging: Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    checkpoint: Callable[[], None] = lambda: None,
) -> None:
    with open(staging, "xb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                _write_one(zf, name + ".npy", arr)
                checkpoint()
            _write_one(zf, ATTRS_KEY + ".npy", np.array(json.dumps(dict(attrs))))
        raw.flush()


def _read_attrs(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> dict:
    if info.file_size > MAX_ATTRS_BYTES:
        raise DataError(
            f"{where}: {ATTRS_KEY} member is implausibly large ({info.file_size} bytes)"
        )
    check_lzma_dictionary(zf, info, where, None)
    with member_errors(where), zf.open(info) as f:
        header = read_header(f, where)
        if header.dtype.kind != "U" or header.shape != ():
            raise DataError(f"{where}: {ATTRS_KEY} must be a 0-d unicode array")
        if header.nbytes > MAX_ATTRS_BYTES:  # the declared string length is untrusted too
            raise DataError(f"{where}: {ATTRS_KEY} declares {header.nbytes} bytes of text")
        out = np.empty((), dtype=header.dtype)
        readinto_exact(f, out, where)
    try:
        attrs = json.loads(str(out[()]))
    except ValueError as exc:
        raise DataError(f"{where}: {ATTRS_KEY} is not valid JSON ({one_line(exc)})") from exc
    if not isinstance(attrs, dict):
        raise DataError(f"{where}: {ATTRS_KEY} must hold a JSON object")
    return attrs


def read_result(path: Path, *, max_bytes: int | None = None) -> tuple[dict[str, Any], dict]:
    with open_zip(path) as zf:
        uri = URI(str(path), path, None)
        arrays = {}
        attrs: dict = {}
        for key, info in members(zf, with_attrs=True).items():
            if key == ATTRS_KEY:
                attrs = _read_attrs(zf, info, f"{path}:{key}")
            else:
                arrays[key] = NpzHandle(
                    zf=zf, info=info, key=key, uri=uri, max_bytes=max_bytes
                ).read()
        return arrays, attrs
