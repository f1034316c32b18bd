"""HDF5 engine (h5py, read-only for inputs).

Safety: every link along a path is inspected with getlink=True so an external link is refused
before HDF5 follows it; datasets with external raw storage, virtual datasets mapping another
file, and non-numeric dtypes are refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .budget import check_budget, human_bytes, inflated_size, shape_text
from .dtypes import dtype_name, dtype_refusal
from .errors import DataError, FormatsError, InputMissingError, StorageError, UsageError
from .handle import ArrayHandle, RefusedError, cap_list, one_line, refused_entry
from .sparse import (
    SparseCOOHandle,
    SparseLayout,
    layout_notes,
    sparse_layout,
    validate_members,
    validate_shape_values,
)
from .uri import URI

FORMAT = "hdf5"
MAX_LINK_HOPS = 32
MAX_VIRTUAL_DEPTH = 8
# Root attribute naming the attributes stored as JSON text (values HDF5 cannot hold natively).
JSON_ATTRS_KEY = "_rankwise_json_attrs"
_ERRNO_RE = re.compile(r"errno = (\d+)")


def _h5py() -> Any:
    import h5py

    return h5py


# --hdf5-locking: "auto" locks where the file system can (no failure without flock: NFS,
# Lustre), "on" always (a failure to lock is an error), "off" never.
LOCKING = {"auto": "best-effort", "on": True, "off": False}
_locking = "auto"


def set_locking(mode: str) -> None:
    """HDF5 file locking for every open and write of this process: auto, on or off."""
    global _locking
    if mode not in LOCKING:
        raise UsageError(f"unknown HDF5 locking mode {mode!r}; choose from {', '.join(LOCKING)}")
    _locking = mode
    if mode != "auto":  # the library's environment variable overrides the file-access setting
        os.environ["HDF5_USE_FILE_LOCKING"] = "TRUE" if mode == "on" else "FALSE"


def _is_lock_error(exc: OSError) -> bool:
    return "unable to lock file" in str(exc)


def _lock_error(path, exc: OSError) -> StorageError:
    return StorageError(f"{path}: locked by another process (HDF5 file locking: "
                        f"{one_line(exc)}); rerun when the writer is done, or with "
                        "--hdf5-locking off if the file system's locks are unreliable")  # fmt: skip


def open_file(path: Path) -> Any:
    """Open an input read-only; permission problems are 'unreadable input', others bad data."""
    h5py = _h5py()
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot be opened ({exc.strerror or one_line(exc)})") from exc
    try:
        return h5py.File(path, "r", locking=LOCKING[_locking])
    except OSError as exc:
        if _is_lock_error(exc):
            raise _lock_error(path, exc) from exc
        raise DataError(f"{path}: not a valid HDF5 file ({one_line(exc)})") from exc
    except _H5PY_DECODE as exc:
        if not _raised_by_h5py(exc):
            raise
        raise DataError(
            f"{path}: not a valid HDF5 file ({type(exc).__name__}: {one_line(exc)})"
        ) from exc


def _close_quietly(f: Any) -> None:
    # Closing a corrupt file can fail too; the error being raised is the one to report.
    with contextlib.suppress(Exception):
        f.close()


# What h5py raises when HDF5 fails to decode a corrupt file, besides OSError: its error table
# maps HDF5 errors to these, and h5py's Python layer adds KeyError/TypeError of its own.
_H5PY_DECODE = (
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    NotImplementedError,
    IndexError,
    OverflowError,
    AttributeError,
)


def _raised_by_h5py(exc: BaseException) -> bool:
    """True when the innermost frame is h5py's (its Cython frames carry the module name):
    HDF5 failing on the file, not a bug of ours that happens to raise the same type."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__") or ""
    return module == "h5py" or module.startswith("h5py.")


@contextlib.contextmanager
def read_errors(where: str, doing: str = "cannot decode the stored data") -> Iterator[None]:
    """h5py reports both corrupt chunks and OS failures as OSError; an errno tells them apart.
    HDF5 failures on corrupt metadata come as other exception types: bad data too."""
    try:
        yield
    except FormatsError:
        raise
    except PermissionError as exc:
        raise InputMissingError(f"{where}: cannot be read (permission denied)") from exc
    except OSError as exc:
        msg = one_line(exc)
        match = _ERRNO_RE.search(str(exc))
        if (exc.errno not in (None, 0)) or (match and match.group(1) != "0"):
            raise StorageError(f"{where}: I/O error while reading ({msg})") from exc
        raise DataError(f"{where}: {doing} ({msg})") from exc
    except _H5PY_DECODE as exc:
        if not _raised_by_h5py(exc):
            raise
        raise DataError(f"{where}: {doing} ({type(exc).__name__}: {one_line(exc)})") from exc


def metadata_errors(where: str):
    """Errors while walking groups, links and dataset headers: corrupt metadata is bad data."""
    return read_errors(where, "corrupt HDF5 metadata")


def _split(name: str) -> list[str]:
    return [p for p in name.split("/") if p and p != "."]


def _canonical(name: str) -> str:
    return "/" + "/".join(_split(name))


class Resolver:
    """Walk a path link by link, refusing external and user-defined links."""

    def __init__(self, f: Any, path: Path) -> None:
        self.f = f
        self.path = path

    def resolve(self, name: str, *, listing: bool = False) -> Any:
        """The object at `name`; `listing` adds the file's arrays to a not-found message
        (only for the user's own key: walk() resolves soft links and must not recurse)."""
        h5py = _h5py()
        parts = _split(name)
        group, i, hops = self.f, 0, 0
        while i < len(parts):
            shown = "/" + "/".join(parts[: i + 1])
            link = group.get(parts[i], getlink=True)
            if link is None:
                where = f"{self.path}: no array or group '{_canonical(name)}'"
                if hops:
                    where += f" (a soft link points to the missing '{shown}')"
                if listing:
                    where += f" (arrays in file: {cap_list(self.array_uris())})"
                raise InputMissingError(where)
            if isinstance(link, h5py.ExternalLink):
                raise RefusedError(
                    f"{self.path}:{shown}",
                    f"external link to {link.filename}:{link.path} is refused",
                )
            if isinstance(link, h5py.SoftLink):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise RefusedError(f"{self.path}:{shown}", "too many soft links (a cycle?)")
                target = link.path
                base = target if target.startswith("/") else posixpath.join(group.name, target)
                parts = _split(posixpath.normpath(base)) + parts[i + 1 :]
                group, i = self.f, 0
                continue
            if not isinstance(link, h5py.HardLink):
                raise RefusedError(f"{self.path}:{shown}", "user-defined link is refused")
            obj = group[parts[i]]
            i += 1
            if i < len(parts):
                if not isinstance(obj, h5py.Group):
                    raise InputMissingError(
                        f"{self.path}: '{shown}' is a dataset, "
                        f"so '{_canonical(name)}' does not exist"
                    )
                group = obj
            else:
                return obj
        return group

    def array_uris(self) -> list[str]:
        return [f"{self.path}:{name}" for name, _, _ in walk(self.f, self)]


def _filters(dset: Any) -> list[tuple[int, int, tuple, str]]:
    dcpl = dset.id.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        code, flags, values, name = dcpl.get_filter(i)
        out.append((int(code), int(flags), tuple(values), name.decode("utf-8", "replace")))
    return out


def _compression(filters: list[tuple[int, int, tuple, str]]) -> str | None:
    h5z = _h5py().h5z
    names = []
    for code, _, values, name in filters:
        if code == h5z.FILTER_DEFLATE:
            names.append(f"gzip({values[0]})" if values else "gzip")
        elif code == h5z.FILTER_LZF:
            names.append("lzf")
        elif code == h5z.FILTER_SHUFFLE:
            names.append("shuffle")
        elif code == h5z.FILTER_SZIP:
            names.append("szip")
        elif code == h5z.FILTER_SCALEOFFSET:
            names.append("scaleoffset")
        elif code == h5z.FILTER_NBIT:
            names.append("nbit")
        elif code != h5z.FILTER_FLETCHER32:  # a checksum, not compression
            names.append(name or f"filter-{code}")
    return "+".join(names) or None


def _unavailable_filter(filters: list[tuple[int, int, tuple, str]]) -> str | None:
    # The pipeline's "optional" flag only says a chunk may have been stored unfiltered (h5py
    # marks gzip/lzf optional); filtered chunks still need the filter, so any gap is refused.
    h5z = _h5py().h5z
    for code, _, _, name in filters:
        if not h5z.filter_avail(code):
            return f"{name or 'filter'} (filter id {code})"
    return None


def _same_file(name: str, path: Path) -> bool:
    candidates = [name] if os.path.isabs(name) else [os.path.join(path.parent, name), name]
    for cand in candidates:
        with contextlib.suppress(OSError):
            if os.path.samefile(cand, path):
                return True
    return False


def _dtype_refusal(dtype: np.dtype) -> str | None:
    h5py = _h5py()
    if dtype.kind == "O":
        if h5py.check_string_dtype(dtype) is not None:
            return "variable-length string dtype is refused"
        if h5py.check_ref_dtype(dtype) is not None:
            return "reference dtype is refused"
        if h5py.check_vlen_dtype(dtype) is not None:
            return "variable-length dtype is refused"
        return "object dtype is refused"
    if dtype.kind == "S" and h5py.check_string_dtype(dtype) is not None:
        return "fixed-length string dtype is refused"
    if dtype.kind == "V" and not dtype.fields and dtype.subdtype is None:
        return "opaque dtype is refused"
    return dtype_refusal(dtype)


def dataset_refusal(dset: Any, resolver: Resolver, depth: int = 0) -> str | None:
    """Why this dataset must not be read, or None."""
    if dset.shape is None:
        return "empty dataset (null dataspace) holds no array"
    reason = _dtype_refusal(dset.dtype)
    if reason:
        return reason
    dcpl = dset.id.get_create_plist()
    if dcpl.get_external_count() > 0:
        ext = dcpl.get_external(0)[0].decode("utf-8", "replace")
        return f"raw data stored in external file {ext!r} is refused"
    if dset.is_virtual:
        for src in dset.virtual_sources():
            if src.file_name != "." and not _same_file(src.file_name, resolver.path):
                return (
                    f"virtual dataset mapping data from another file "
                    f"({src.file_name}:{src.dset_name}) is refused"
                )
            if depth >= MAX_VIRTUAL_DEPTH:
                return "virtual datasets nested too deeply"
            try:
                obj = resolver.resolve(src.dset_name)
            except FormatsError as exc:
                return f"virtual dataset source {src.dset_name}: {exc}"
            if not isinstance(obj, _h5py().Dataset):
                return f"virtual dataset source {src.dset_name} is not a dataset"
            inner = dataset_refusal(obj, resolver, depth + 1)
            if inner:
                return f"virtual dataset source {src.dset_name}: {inner}"
    return None


# zlib cannot inflate more than about 1032 bytes per stored byte.
_DEFLATE_MAX_RATIO = 1032


def check_chunks(dset: Any, filters: list, where: str, budget: int | None) -> None:
    """HDF5 decodes a chunk whole, and its deflate filter inflates a stored chunk for as long
    as the stream goes (growing its buffer) whatever the chunk's declared size: a 512 KiB
    file can make a read of 4 values allocate 512 MiB. So a chunk must fit the budget, and a
    stored chunk big enough to inflate past the budget must inflate to no more than a chunk
    (checked by inflating it with a bound; smaller stored chunks cannot exceed the budget)."""
    if budget is None or dset.chunks is None:
        return
    h5z = _h5py().h5z
    chunk_nbytes = math.prod(int(c) for c in dset.chunks) * dset.dtype.itemsize
    what = f"decoding one chunk of shape {shape_text(dset.chunks)} {dtype_name(dset.dtype)}"
    check_budget(chunk_nbytes, budget, where=where, what=what)
    codes = [code for code, *_ in filters]
    if h5z.FILTER_DEFLATE not in codes:
        return
    step = codes.index(h5z.FILTER_DEFLATE)
    later = codes[step + 1 :]
    if any(code != h5z.FILTER_FLETCHER32 for code in later):
        return  # another filter decodes first: the stored bytes are not the deflate stream
    limit = chunk_nbytes + chunk_nbytes // 64 + 4096  # incompressible data grows a little
    with read_errors(where):
        if dset.id.get_storage_size() * _DEFLATE_MAX_RATIO <= budget:
            return  # all the stored chunks together cannot inflate past the budget
    suspects: list[tuple[tuple[int, ...], int]] = []

    def visit(info: Any) -> None:
        if info.size * _DEFLATE_MAX_RATIO > budget and not info.filter_mask & (1 << step):
            suspects.append((tuple(info.chunk_offset), int(info.size)))

    with read_errors(where):
        if hasattr(dset.id, "chunk_iter"):
            dset.id.chunk_iter(visit)
        else:  # pragma: no cover - h5py < 3.8
            for i in range(dset.id.get_num_chunks()):
                visit(dset.id.get_chunk_info(i))
        for offset, size in suspects:
            if size > limit:
                raise DataError(
                    f"{where}: chunk at {offset} stores {human_bytes(size)} compressed, more "
                    f"than its {human_bytes(chunk_nbytes)} of data can take (a decompression "
                    "bomb?)"
                )
            _, raw = dset.id.read_direct_chunk(offset)
            stream = raw[: len(raw) - 4] if later else raw  # fletcher32 appends 4 bytes
            inflated = inflated_size("deflate", stream, limit)
            if inflated > limit:
                raise DataError(
                    f"{where}: chunk at {offset} inflates to at least "
                    f"{human_bytes(inflated)}, more than the {human_bytes(chunk_nbytes)} of a "
                    "chunk (a decompression bomb?)"
                )


class RawRows:
    """Rows of an unfiltered dataset read straight from the file with ``pread``.

    HDF5 reads each chunk through a chunk-sized temporary and copies it (an allocation, page
    faults and a copy per chunk); where the bytes on disk are the array's bytes — no filter,
    an integer or float type stored as numpy holds it, contiguous storage or chunks spanning
    whole rows — they go from the page cache into the caller's buffer. pread releases the GIL
    and needs no lock. Anything else (and chunks never written) is left to h5py.
    """

    MIN_CHUNK_BYTES = 64 << 10  # below this, h5py's per-chunk cost is no worse

    def __init__(self, dset: Any, path: Path, where: str, offset: int | None) -> None:
        self.dset, self.where, self.offset = dset, where, offset
        self.row_bytes = math.prod(dset.shape[1:]) * dset.dtype.itemsize
        self.chunk_rows = int(dset.chunks[0]) if dset.chunks else None
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    @classmethod
    def of(cls, dset: Any, path: Path, where: str) -> RawRows | None:
        try:
            h5py = _h5py()
            h5d = h5py.h5d
            if dset.ndim == 0 or dset.dtype.kind not in "fiu" or not hasattr(os, "preadv"):
                return None
            if dset.id.get_type() != h5py.h5t.py_create(dset.dtype):  # bytes need converting
                return None
            dcpl = dset.id.get_create_plist()
            if dcpl.get_nfilters() or dcpl.get_external_count():
                return None
            layout = dcpl.get_layout()
            if layout == h5d.CONTIGUOUS:
                offset = dset.id.get_offset()
                if offset is None or dset.id.get_storage_size() != dset.nbytes:
                    return None
                return cls(dset, path, where, int(offset))
            if layout == h5d.CHUNKED and tuple(dset.chunks[1:]) == tuple(dset.shape[1:]):
                row = math.prod(dset.shape[1:]) * dset.dtype.itemsize
                if dset.chunks[0] * row >= cls.MIN_CHUNK_BYTES:
                    return cls(dset, path, where, None)
        except Exception:  # noqa: BLE001 - any doubt: h5py reads it
            return None
        return None

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        if out.size == 0:
            return
        rows = out.reshape(stop - start, -1)
        if self.chunk_rows is None:
            self._pread(rows, self.offset + start * self.row_bytes)
            return
        c = self.chunk_rows
        for first in range(start // c * c, stop, c):
            a, b = max(first, start), min(first + c, stop)
            with read_errors(self.where):
                info = self.dset.id.get_chunk_info_by_coord((first,) + (0,) * (self.dset.ndim - 1))
            full = c * self.row_bytes
            if info.byte_offset is None or info.filter_mask or info.size != full:
                with read_errors(self.where):  # never written, or not what the layout says
                    self.dset.read_direct(
                        out, source_sel=np.s_[a:b], dest_sel=np.s_[a - start : b - start]
                    )
                continue
            self._pread(
                rows[a - start : b - start], info.byte_offset + (a - first) * self.row_bytes
            )

    def _pread(self, rows: np.ndarray, offset: int) -> None:
        view = memoryview(rows).cast("B")
        done = 0
        while done < view.nbytes:
            try:
                got = os.preadv(self.fd, [view[done:]], offset + done)
            except (OSError, OverflowError, ValueError) as exc:
                raise DataError(f"{self.where}: cannot read the data at byte {offset + done} "
                                f"({one_line(exc)})") from exc  # fmt: skip
            if got == 0:
                raise DataError(f"{self.where}: truncated file: the data at byte "
                                f"{offset + done} lies beyond its end")  # fmt: skip
            done += got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Unwritten:
    """Storage of a dataset that was never written (HDF5 would return the fill value)."""

    def __init__(self, dset: Any, where: str) -> None:
        self.dset = dset
        self.where = where
        self.missing, self.total, self.unit = self.count()

    def count(self) -> tuple[int, int, str]:
        """(missing, total, unit): one metadata call, never a per-chunk query."""
        h5d = _h5py().h5d
        dset = self.dset
        if dset.shape is None or math.prod(dset.shape) == 0:
            return 0, 0, "chunks"
        layout = dset.id.get_create_plist().get_layout()
        if layout == h5d.CHUNKED:
            grid = zip(dset.shape, dset.chunks, strict=True)
            total = math.prod(-(-int(s) // int(c)) for s, c in grid)
            get_num_chunks = getattr(dset.id, "get_num_chunks", None)
            if get_num_chunks is None:  # HDF5 < 1.10.5: cannot tell
                return 0, total, "chunks"
            return max(total - int(get_num_chunks()), 0), total, "chunks"
        if layout in (h5d.CONTIGUOUS, h5d.COMPACT):
            return (1 if dset.id.get_storage_size() == 0 else 0), 1, "storage"
        return 0, 0, "chunks"  # virtual: unmapped regions are fill values by design

    def note(self) -> str | None:
        if not self.missing:
            return None
        if self.unit == "storage":
            return "data never written (no storage allocated): read refused"
        return f"{self.missing} of {self.total} chunks never written: read refused"

    def check(self) -> None:
        # Counted again at read time: the file may have changed since it was opened.
        with read_errors(self.where):
            self.missing, self.total, self.unit = self.count()
            if not self.missing:
                return
            try:
                fill = self.dset.fillvalue
            except Exception:  # only for the message
                fill = "?"
        if self.unit == "storage":
            what = "the data was never written (no storage is allocated)"
        else:
            what = f"{self.missing} of {self.total} chunks were never written"
        raise DataError(
            f"{self.where}: {what}; HDF5 would return the fill value ({fill}) for them, but "
            "rankwise will not guess: rewrite the dataset with all of its data written"
        )


def _unwritten(dset: Any, where: str) -> Unwritten | None:
    """Unwritten storage of `dset`, or None when the chunk index cannot be read at open time
    (the read will report the error)."""
    try:
        return Unwritten(dset, where)
    except Exception:  # describe() must not fail on it
        return None


def sparse_group_layout(group: Any) -> SparseLayout | None:
    """The COO layout of a group (possibly refused), or None when it is no sparse group."""
    if any(group.get(m, getlink=True) is None for m in ("data", "shape")):
        return None
    return sparse_layout(group.keys())  # link names only: nothing is followed here


def is_sparse_group(group: Any) -> bool:
    return sparse_group_layout(group) is not None


class Hdf5DenseHandle(ArrayHandle):
    format = FORMAT

    def __init__(self, *, dset: Any, file: Any, resolver: Resolver, name: str, uri: URI, **kw: Any):
        location = f"{resolver.path}:{name}"
        reason = dataset_refusal(dset, resolver)
        if reason:
            raise RefusedError(location, reason)
        filters = _filters(dset)
        self._filters = filters
        self._missing_filter = _unavailable_filter(filters)
        dcpl = dset.id.get_create_plist()
        h5d = _h5py().h5d
        layout = {
            h5d.CONTIGUOUS: "contiguous",
            h5d.CHUNKED: "chunked",
            h5d.COMPACT: "compact",
            h5d.VIRTUAL: "virtual (same file)",
        }.get(dcpl.get_layout(), "unknown")
        notes = [f"layout: {layout}"]
        if any(code == _h5py().h5z.FILTER_FLETCHER32 for code, *_ in filters):
            notes.append("fletcher32 checksum")
        if self._missing_filter:
            notes.append(f"filter {self._missing_filter} is not available: data cannot be read")
        self._unwritten = _unwritten(dset, location)
        if self._unwritten is not None and self._unwritten.note():
            notes.append(self._unwritten.note())
        super().__init__(
            uri=uri,
            location=location,
            name=name,
            shape=dset.shape,
            dtype=dset.dtype,
            chunks=dset.chunks,
            compression=_compression(filters),
            order="C",
            notes=notes,
            **kw,
        )
        self._dset = dset
        self._file = file

    def _check_decodable(self) -> None:
        if self._missing_filter:
            raise DataError(
                f"{self.location}: compressed with {self._missing_filter}, which this HDF5 "
                "build cannot decode (install the plugin, e.g. hdf5plugin)"
            )

    def _check_written(self) -> None:
        if self._unwritten is None:  # the chunk index could not be read at open time
            with read_errors(self.location):
                self._unwritten = Unwritten(self._dset, self.location)
        self._unwritten.check()

    def read(self, max_bytes: int | None = None) -> Any:
        budget = self._budget(max_bytes)
        # The array's own size first (the clearer message), then the chunks it decodes.
        check_budget(self.read_nbytes, budget, where=self.location, what=self._what())
        check_chunks(self._dset, self._filters, self.location, budget)
        return super().read(max_bytes)

    def _before_blocks(self) -> None:
        self._check_decodable()
        self._check_written()
        # Blocks may be smaller than a chunk (decoded whole anyway): the handle's budget.
        check_chunks(self._dset, self._filters, self.location, self.max_bytes)

    def _read(self) -> np.ndarray:
        self._check_decodable()
        if self.nbytes:
            self._check_written()
        with read_errors(self.location):
            if self.nbytes == 0:
                return np.empty(self.shape, dtype=self.dtype)
            out = np.empty(self.shape, dtype=self.dtype)
            if out.ndim and self._raw_rows() is not None:
                self._raw.read(0, self.shape[0], out)
            else:
                self._dset.read_direct(out)
            return out

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        with read_errors(self.location):
            return np.asarray(self._dset[start:stop])

    def _read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        raw = self._raw_rows()
        if raw is not None and out.flags.c_contiguous and stop > start:
            raw.read(start, stop, out)
            return
        with read_errors(self.location):
            self._dset.read_direct(out, source_sel=np.s_[start:stop])

    def _raw_rows(self) -> RawRows | None:
        if not hasattr(self, "_raw"):
            self._raw = RawRows.of(self._dset, self.uri.path, self.location)
        return self._raw

    def close(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()
            self._raw = None
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        super().close()


class Hdf5SparseHandle(SparseCOOHandle):
    format = FORMAT

    def __init__(
        self, *, group: Any, file: Any, resolver: Resolver, name: str, uri: URI, **kw: Any
    ):
        h5py = _h5py()
        location = f"{resolver.path}:{name}"
        layout = sparse_group_layout(group)
        if layout is None or layout.problem:
            raise RefusedError(location, layout.problem if layout else "not a sparse group")
        members = {}
        for m in layout.members:
            obj = resolver.resolve(f"{name}/{m}")
            if not isinstance(obj, h5py.Dataset):
                raise RefusedError(location, f"sparse member '{m}' is not a dataset")
            reason = dataset_refusal(obj, resolver)
            if reason:
                raise RefusedError(location, f"sparse member '{m}': {reason}")
            members[m] = obj
        nnz = validate_members(
            {m: d.shape for m, d in members.items()},
            {m: d.dtype for m, d in members.items()},
            location,
            layout.index,
        )
        with read_errors(location):
            unwritten = {m: Unwritten(d, f"{location}/{m}") for m, d in members.items()}
        unwritten["shape"].check()  # read now: the shape of the matrix
        with read_errors(location):
            shape = validate_shape_values(members["shape"][()], location, len(layout.index))
        filters = _filters(members["data"])
        self._missing_filter = next(
            (f"'{m}': {r}" for m in members if (r := _unavailable_filter(_filters(members[m])))),
            None,
        )
        notes = layout_notes(layout)
        if self._missing_filter:
            notes.append(f"filter {self._missing_filter} is not available: data cannot be read")
        for m, u in unwritten.items():
            if u.note():
                notes.append(f"sparse member '{m}': {u.note()}")
        self._unwritten = unwritten
        super().__init__(
            index_members=layout.index,
            shape=shape,
            uri=uri,
            location=location,
            name=name,
            dtype=members["data"].dtype,
            nnz=nnz,
            compression=_compression(filters),
            notes=notes,
            **kw,
        )
        self._members = members
        self._file = file

    def _before_blocks(self) -> None:
        if self._missing_filter:
            raise DataError(
                f"{self.location}: member {self._missing_filter} cannot be decoded by this "
                "HDF5 build (install the plugin, e.g. hdf5plugin)"
            )
        for u in self._unwritten.values():
            u.check()
        for m, d in self._members.items():
            check_chunks(d, _filters(d), f"{self.location}/{m}", self.max_bytes)

    def _slice(self, member: str, start: int, stop: int) -> np.ndarray:
        with read_errors(self.location):
            return self._members[member][start:stop]

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        super().close()


def walk(f: Any, resolver: Resolver) -> list[tuple[str, Any, str | None]]:
    """Every array of the file as (name, object or None, refusal reason or None).

    Sparse groups are one entry; soft links to datasets are listed; groups reached through soft
    links are not entered (they would duplicate entries or loop).
    """
    h5py = _h5py()
    out: list[tuple[str, Any, str | None]] = []
    seen = {f.id}

    def visit(group: Any, prefix: str) -> None:
        for key in group:
            name = prefix + key
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                out.append((name, None, f"external link to {link.filename}:{link.path}"))
                continue
            if isinstance(link, h5py.SoftLink):
                try:
                    obj = resolver.resolve(name)
                except FormatsError as exc:
                    out.append((name, None, getattr(exc, "reason", None) or one_line(exc)))
                    continue
                if isinstance(obj, h5py.Dataset) or (
                    isinstance(obj, h5py.Group) and is_sparse_group(obj)
                ):
                    out.append((name, obj, None))
                continue
            if not isinstance(link, h5py.HardLink):
                out.append((name, None, "user-defined link"))
                continue
            obj = group[key]
            if isinstance(obj, h5py.Group):
                if is_sparse_group(obj):
                    out.append((name, obj, None))
                elif obj.id not in seen:
                    seen.add(obj.id)
                    visit(obj, name + "/")
            elif isinstance(obj, h5py.Dataset):
                out.append((name, obj, None))

    visit(f, "/")
    return out


def _make_handle(
    f: Any, obj: Any, name: str, uri: URI, resolver: Resolver, max_bytes: int | None
) -> ArrayHandle | None:
    h5py = _h5py()
    kw = dict(file=None, resolver=resolver, name=name, uri=uri, max_bytes=max_bytes)
    if isinstance(obj, h5py.Dataset):
        return Hdf5DenseHandle(dset=obj, **kw)
    if isinstance(obj, h5py.Group) and is_sparse_group(obj):
        return Hdf5SparseHandle(group=obj, **kw)
    return None


def open_handle(uri: URI, *, max_bytes: int | None = None) -> ArrayHandle:
    f = open_file(uri.path)
    try:
        with metadata_errors(str(uri.path)):
            return _open_in(f, uri, max_bytes)
    except BaseException:
        _close_quietly(f)
        raise


def _open_in(f: Any, uri: URI, max_bytes: int | None) -> ArrayHandle:
    """The handle for `uri` in the open file `f`."""
    resolver = Resolver(f, uri.path)
    if uri.key is None:
        entries = walk(f, resolver)
        if not entries:
            raise InputMissingError(f"{uri.path}: holds no arrays")
        if len(entries) > 1:
            uris = [f"{uri.path}:{n}" for n, _, _ in entries]
            raise UsageError(f"{uri.path}: holds {len(entries)} arrays, name one: {cap_list(uris)}")
        name, _, reason = entries[0]
        if reason:
            raise RefusedError(f"{uri.path}:{name}", reason)
    else:
        name = _canonical(uri.key)
    obj = resolver.resolve(name, listing=True)
    handle = _make_handle(f, obj, name, uri, resolver, max_bytes)
    if handle is None:
        inside = [u for u in resolver.array_uris() if u.startswith(f"{uri.path}:{name}/")]
        raise UsageError(
            f"{uri.path}:{name}: is a group, not an array; arrays inside: {cap_list(inside)}"
        )
    handle._file = f  # the handle owns the file from here on
    return handle


def list_entries(path: Path) -> list[dict[str, Any]]:
    f = open_file(path)
    try:
        resolver = Resolver(f, path)
        out = []
        uri = URI(str(path), path, None)
        with metadata_errors(str(path)):
            found = walk(f, resolver)
        for name, obj, reason in found:
            location = f"{path}:{name}"
            if reason is None:
                try:
                    with metadata_errors(location):  # one corrupt entry is listed as refused
                        handle = _make_handle(f, obj, name, uri, resolver, None)
                    assert handle is not None
                    out.append(handle.describe())
                    continue
                except DataError as exc:
                    reason = getattr(exc, "reason", None) or one_line(exc)
            out.append(refused_entry(name=name, uri=location, fmt=FORMAT, reason=reason))
        return out
    finally:
        _close_quietly(f)


# -- writing ---------------------------------------------------------------------------------


def _native_attr(value: Any) -> Any | None:
    """The value as HDF5 can store it natively, or None when it needs JSON text."""
    h5py = _h5py()
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        return np.int64(value) if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value:
        kinds = {type(v) for v in value}
        if kinds == {bool}:
            return np.array(value, dtype=bool)
        if kinds == {int} and all(-(2**63) <= v < 2**63 for v in value):
            return np.array(value, dtype=np.int64)
        if kinds == {float}:
            return np.array(value, dtype=np.float64)
        if kinds == {str}:
            return np.array(value, dtype=h5py.string_dtype())
    return None


def _python_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_python_attr(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _create_group(parent: Any, name: str) -> Any:
    # Groups without timestamps so the same result gives the same bytes.
    h5py = _h5py()
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode("utf-8"), gcpl=gcpl))


def _write_one(f: Any, name: str, arr: np.ndarray) -> None:
    parts = name.split("/")
    parent = f
    for part in parts[:-1]:
        parent = parent[part] if part in parent else _create_group(parent, part)
    # track_times=False: no timestamps, so the same result gives the same bytes.
    parent.create_dataset(parts[-1], data=arr, track_times=False)


def write_arrays(
    staging: Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    checkpoint: Callable[[], None] = lambda: None,
) -> None:
    h5py = _h5py()
    # mode "x": the staging path is new; a final path is never opened for writing.
    with h5py.File(staging, "x", locking=LOCKING[_locking]) as f:
        for name, arr in arrays.items():
            _write_one(f, name, arr)
            checkpoint()
        as_json = []
        for key, value in attrs.items():
            native = _native_attr(value)
            if native is None:
                f.attrs[key] = json.dumps(value)
                as_json.append(key)
            else:
                f.attrs[key] = native
        if as_json:
            f.attrs[JSON_ATTRS_KEY] = json.dumps(as_json)


def read_result(path: Path, *, max_bytes: int | None = None) -> tuple[dict[str, Any], dict]:
    f = open_file(path)
    try:
        resolver = Resolver(f, path)
        uri = URI(str(path), path, None)
        arrays: dict[str, Any] = {}
        with metadata_errors(str(path)):
            found = walk(f, resolver)
        for name, obj, reason in found:
            if reason:
                raise RefusedError(f"{path}:{name}", reason)
            with metadata_errors(f"{path}:{name}"):
                handle = _make_handle(f, obj, name, uri, resolver, max_bytes)
            assert handle is not None
            arrays[name.lstrip("/")] = handle.read()
        with read_errors(str(path)):
            raw = {k: f.attrs[k] for k in f.attrs}
        try:
            as_json = set(json.loads(_python_attr(raw.pop(JSON_ATTRS_KEY, "[]"))))
            attrs = {
                k: json.loads(_python_attr(v)) if k in as_json else _python_attr(v)
                for k, v in raw.items()
            }
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: malformed result attributes ({one_line(exc)})") from exc
        return arrays, attrs
    finally:
        _close_quietly(f)
