"""Zarr engine (zarr-python 3; v2 and v3 stores readable, v3 written).

Nodes are found by walking the store directory so one unreadable member (e.g. a v2 pickle
array) is listed as refused instead of breaking the whole listing. A missing chunk is an
error: zarr would silently return the fill value for it.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .budget import check_budget, dense_nbytes, human_bytes, inflated_size, shape_text
from .detect import special_kind
from .dtypes import dtype_name, dtype_refusal
from .errors import DataError, InputMissingError, UsageError
from .handle import ArrayHandle, RefusedError, cap_list, one_line, os_errors, refused_entry
from .sparse import (
    SparseCOOHandle,
    SparseLayout,
    layout_notes,
    sparse_layout,
    validate_members,
    validate_shape_values,
)
from .uri import URI

FORMAT = "zarr"


# zarr raises many exception types for bad metadata and codecs (zlib/lzma: numcodecs' gzip,
# zlib and lzma codecs let the decompressor's own error through).
_ZARR_DECODE = (
    ValueError,
    RuntimeError,
    KeyError,
    EOFError,
    TypeError,
    AttributeError,
    OverflowError,  # a fill value or extent outside its dtype
    zlib.error,
    lzma.LZMAError,
)


def zarr_errors(where: str, doing: str = "cannot decode the stored data"):
    """OS failures -> 74/66; codec and metadata failures -> 65."""
    return os_errors(where, _ZARR_DECODE, doing)


def _node_kind(directory: Path) -> str | None:
    """'array', 'group' or None, from the metadata files of one directory."""
    meta = directory / "zarr.json"
    if meta.is_file():
        try:
            kind = json.loads(meta.read_text(encoding="utf-8")).get("node_type")
        except (ValueError, AttributeError):
            return "broken"
        return kind if kind in ("array", "group") else "broken"
    if (directory / ".zarray").is_file():
        return "array"
    if (directory / ".zgroup").is_file():
        return "group"
    return None


def _sparse_layout(directory: Path) -> SparseLayout | None:
    """The COO layout of a group directory (possibly refused), or None when it is no sparse
    group."""
    if any(_node_kind(directory / m) != "array" for m in ("data", "shape")):
        return None
    try:
        names = [p.name for p in directory.iterdir() if p.is_dir() and _node_kind(p)]
    except OSError:
        return None  # the walk reports unreadable directories
    return sparse_layout(names)


def _is_sparse_dir(directory: Path) -> bool:
    return _sparse_layout(directory) is not None


def walk(root: Path) -> list[tuple[str, str]]:
    """Every array of the store as (name, 'dense' | 'sparse' | 'broken')."""
    kind = _node_kind(root)
    if kind == "array":
        return [("", "dense")]
    if kind == "broken":
        return [("", "broken")]
    out: list[tuple[str, str]] = []

    def visit(directory: Path, prefix: str) -> None:
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir())
        except PermissionError as exc:
            raise InputMissingError(f"{directory}: cannot be read (permission denied)") from exc
        for child in children:
            name = prefix + child.name
            child_kind = _node_kind(child)
            if child_kind is not None and child.is_symlink():
                # Like an HDF5 external link: the data would come from outside the store.
                out.append((name, "symlink"))
                continue
            if child_kind == "array":
                out.append((name, "dense"))
            elif child_kind == "broken":
                out.append((name, "broken"))
            elif child_kind == "group":
                if _is_sparse_dir(child):
                    out.append((name, "sparse"))
                else:
                    visit(child, name + "/")

    if _is_sparse_dir(root):
        return [("", "sparse")]
    visit(root, "")
    return out


def _location(path: Path, name: str) -> str:
    return f"{path}:{name}" if name else str(path)


def _store(path: Path) -> Any:
    return _checked_store_class()(path, read_only=True)


# -- compressed chunks: their decoded size checked before zarr inflates them -----------------
#
# A chunk's compressed frame is trusted by nobody but the codec: a few KiB of zstd or gzip can
# inflate to gigabytes whatever the array's declared shape and chunk shape say, and the codecs
# allocate the whole output first. So every chunk the store hands to zarr is checked against
# the size its chunk decodes to: from the frame header where the format declares the size the
# codec allocates (zstd, blosc, lz4), else by inflating it with a bound (gzip, zlib, bz2, lzma:
# a second decompression, the price of not trusting the frame).

_EMPTY_CHUNK = 2**64 - 1  # shard index entry of a chunk that is not stored
_CODEC_KINDS = {
    "zstdcodec": "zstd",
    "gzipcodec": "gzip",
    "blosccodec": "blosc",
    "zstd": "zstd",
    "gzip": "gzip",
    "zlib": "zlib",
    "blosc": "blosc",
    "bz2": "bz2",
    "lzma": "lzma",
    "lz4": "lz4",
}


def _codec_kind(codec: Any) -> str | None:
    name = getattr(codec, "codec_id", None) or type(codec).__name__
    return _CODEC_KINDS.get(str(name).lower().removeprefix("numcodecs."))


def _zstd_declared(frame: memoryview) -> int | None:
    """Content size the zstd frame declares (what numcodecs allocates), None if absent."""
    if len(frame) < 5:
        return -1  # the codec reports the error
    magic = int.from_bytes(frame[:4], "little")
    if magic != 0xFD2FB528:
        # A skippable frame first hides the real one from the size numcodecs reads.
        return None if 0x184D2A50 <= magic <= 0x184D2A5F else -1
    fhd = frame[4]
    single = (fhd >> 5) & 1
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    size = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if size == 0:
        return None
    value = int.from_bytes(frame[at : at + size], "little")
    return value + 256 if size == 2 else value


def _decoded_size(kind: str, frame: memoryview, limit: int) -> int | None:
    """What decoding `frame` allocates (a lower bound of it past `limit`); None: unknown."""
    if kind == "zstd":
        return _zstd_declared(frame)
    if kind == "blosc":
        return int.from_bytes(frame[4:8], "little") if len(frame) >= 16 else -1
    if kind == "lz4":
        return int.from_bytes(frame[:4], "little", signed=True) if len(frame) >= 4 else -1
    return inflated_size(kind, frame, limit)


class _Frames:
    """How to check the stored chunks of one array: codec, decoded-size bound, shard index."""

    def __init__(self, arr: Any, where: str) -> None:
        self.where = where
        meta = arr.metadata
        self.shard = None
        if meta.zarr_format == 2:
            codecs = [meta.compressor] if meta.compressor is not None else []
            # v2 filters may change the stored item size (astype): allow the widest number.
            width = max(arr.dtype.itemsize, 16) if meta.filters else arr.dtype.itemsize
            chunk = arr.chunks
        else:
            codecs = list(meta.codecs)
            width = arr.dtype.itemsize
            chunk = arr.chunks
            if codecs and type(codecs[0]).__name__ == "ShardingCodec":
                self.shard = codecs[0]
                codecs = list(self.shard.codecs)
                self.per_shard = math.prod(
                    int(s) // max(int(c), 1) for s, c in zip(arr.shards, chunk, strict=True)
                )
        kinds = [k for k in map(_codec_kind, codecs) if k]
        self.kind = kinds[-1] if kinds else None  # the outermost compressor decodes first
        nbytes = math.prod(int(c) for c in chunk) * width
        # Compressed data of an incompressible chunk is a little larger than the chunk.
        self.limit = nbytes + nbytes // 64 + 4096

    def check(self, key: str, data: memoryview, byte_range: Any) -> None:
        if self.kind is None:
            return
        if self.shard is None:
            self._check_frame(key, data)
            return
        from zarr.abc.store import RangeByteRequest

        index_size = 16 * self.per_shard + 4 * len(self.shard.index_codecs[1:])
        if byte_range is None:
            self._check_shard(key, data, index_size)
        elif isinstance(byte_range, RangeByteRequest) and not (
            byte_range.start == 0 and byte_range.end == index_size
        ):
            self._check_frame(key, data)  # one inner chunk of the shard

    def _check_shard(self, key: str, data: memoryview, index_size: int) -> None:
        if self.per_shard * 16 > len(data):
            return  # no room for the index: zarr reports the broken shard
        at_end = str(getattr(self.shard.index_location, "value", "end")) == "end"
        index = data[len(data) - index_size :] if at_end else data[:index_size]
        endian = getattr(self.shard.index_codecs[0], "endian", None)
        order = ">" if str(getattr(endian, "value", "little")) == "big" else "<"
        entries = np.frombuffer(index[: 16 * self.per_shard], dtype=f"{order}u8").reshape(-1, 2)
        for offset, nbytes in entries.tolist():
            if offset != _EMPTY_CHUNK and offset + nbytes <= len(data):
                self._check_frame(key, data[offset : offset + nbytes])

    def _check_frame(self, key: str, frame: memoryview) -> None:
        size = _decoded_size(self.kind, frame, self.limit)
        if size is None:
            raise DataError(
                f"{self.where}: chunk '{key}' is a zstd frame that does not declare its "
                "decoded size first, so decoding it could not be bounded; rewrite the array"
            )
        if size > self.limit:
            raise DataError(
                f"{self.where}: chunk '{key}' decodes to at least {human_bytes(size)}, more "
                f"than the {human_bytes(self.limit)} a chunk of this array can hold "
                "(a decompression bomb?)"
            )


_CHECKED_STORE: Any = None


def _checked_store_class() -> Any:
    """LocalStore that checks every chunk against its array's _Frames before zarr decodes it
    (built on first use: zarr is imported only when a Zarr store is touched)."""
    global _CHECKED_STORE
    if _CHECKED_STORE is not None:
        return _CHECKED_STORE
    from zarr.storage import LocalStore

    class CheckedLocalStore(LocalStore):
        frames: dict[str, _Frames]

        def __init__(self, root: Any, *, read_only: bool = False) -> None:
            super().__init__(root, read_only=read_only)
            self.frames = {}

        def with_read_only(self, read_only: bool = False) -> Any:
            other = super().with_read_only(read_only)
            other.frames = self.frames
            return other

        def register(self, name: str, frames: _Frames) -> None:
            self.frames[f"{name}/" if name else ""] = frames

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            buf = await super().get(key, prototype, byte_range)
            if buf is None or not self.frames:
                return buf
            prefix = max((p for p in self.frames if key.startswith(p)), key=len, default=None)
            if prefix is None:
                return buf
            rest = key[len(prefix) :]
            if "/" not in rest and rest in _METADATA_FILES:
                return buf
            # A view, not a copy: only headers are read, or a stream inflated with a bound.
            data = memoryview(np.ascontiguousarray(buf.as_numpy_array())).cast("B")
            self.frames[prefix].check(key, data, byte_range)
            return buf

    _CHECKED_STORE = CheckedLocalStore
    return _CHECKED_STORE


def _open_array(store: Any, path: Path, name: str) -> Any:
    import zarr

    with zarr_errors(_location(path, name), "cannot open the array metadata"):
        with warnings.catch_warnings():
            # zarr warns about dtypes without a stable v3 spec; we refuse those dtypes anyway.
            warnings.simplefilter("ignore")
            return zarr.open_array(store=store, path=name, mode="r")


def _codec_text(codec: Any) -> str:
    name = getattr(codec, "codec_id", None) or type(codec).__name__.lower().removesuffix("codec")
    if name == "blosc":
        cname = getattr(codec, "cname", None)
        return f"blosc/{getattr(cname, 'value', cname)}"
    level = getattr(codec, "level", None)
    if name == "zstd":
        return f"zstd(level={level})"
    if name in ("gzip", "zlib") and level is not None:
        return f"{name}({level})"
    return str(name)


_METADATA_FILES = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


def _chunk_coords(key: str, ndim: int) -> tuple[int, ...] | None:
    """Grid coordinates named by a stored key (any zarr chunk-key encoding), or None."""
    body = key
    if body == "c":
        return () if ndim == 0 else None
    if body.startswith(("c/", "c.")):
        body = body[2:]
    parts = re.split(r"[./]", body)
    if ndim == 0:
        return () if parts == ["0"] else None
    if len(parts) != ndim or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _stored_files(directory: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(key relative to `directory`, entry) for every non-directory entry below it.

    Like os.walk: unreadable directories are skipped and symlinked directories not entered.
    """
    stack = [("", str(directory))]
    while stack:
        rel, current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append((key, entry.path))
            else:
                yield key, entry


def _not_regular(entry: os.DirEntry[str]) -> str | None:
    """Why a stored chunk entry must not be opened (FIFO, device, ...), or None."""
    if entry.is_file():  # follows symlinks; no system call for a plain file on most systems
        return None
    try:
        mode = entry.stat().st_mode
    except OSError:
        return "a dangling symbolic link"
    return special_kind(mode) or "a directory"


def _missing_chunks(arr: Any, directory: Path, where: str) -> tuple[int, int, str]:
    """(missing, total, unit) from one listing of the array's directory.

    zarr's own nchunks_initialized compares every expected key against a list of stored keys,
    which is quadratic (minutes for 10^5 chunks); here each stored key is parsed once and
    re-encoded with the array's own key encoding to make sure it is a chunk of this array.
    A chunk that is not a regular file (a named pipe would block the read forever, a device
    never end) is refused.
    """
    outer = arr.shards if getattr(arr, "shards", None) is not None else arr.chunks
    grid = tuple(-(-int(s) // int(c)) for s, c in zip(arr.shape, outer, strict=True))
    total = math.prod(grid)
    unit = "shards" if getattr(arr, "shards", None) is not None else "chunks"
    found = 0
    encode = arr.metadata.encode_chunk_key
    with zarr_errors(where, "cannot list the stored chunks"):
        for key, entry in _stored_files(directory):
            if "/" not in key and key in _METADATA_FILES:
                continue
            coords = _chunk_coords(key, len(grid))
            if coords is None or any(c >= g for c, g in zip(coords, grid, strict=True)):
                continue
            if encode(coords) == key:
                kind = _not_regular(entry)
                if kind is not None:
                    raise RefusedError(
                        where, f"stored {unit[:-1]} '{key}' is not a regular file ({kind})"
                    )
                found += 1
    return total - found, total, unit


def _missing_message(where: str, missing: int, total: int, unit: str, fill: Any) -> str:
    return (
        f"{where}: {missing} of {total} {unit} are missing from the store; some writers skip "
        f"chunks equal to the fill value ({fill}), but rankwise will not guess: rewrite the "
        "array with every chunk written (zarr: config={'write_empty_chunks': True})"
    )


class _ZarrMember:
    """One opened zarr array plus its refusal checks."""

    def __init__(self, store: Any, path: Path, name: str) -> None:
        self.where = _location(path, name)
        self.directory = path / name if name else path
        self.array = _open_array(store, path, name)
        reason = dtype_refusal(self.array.dtype)
        if reason:
            raise RefusedError(self.where, reason)
        if hasattr(store, "register"):
            with zarr_errors(self.where, "cannot open the array metadata"):
                store.register(name, _Frames(self.array, self.where))
        self.missing, self.total, self.unit = _missing_chunks(
            self.array, self.directory, self.where
        )

    def check_complete(self) -> None:
        # Listed again at read time: the store may have changed since it was opened.
        missing, total, unit = _missing_chunks(self.array, self.directory, self.where)
        if missing:
            raise DataError(
                _missing_message(self.where, missing, total, unit, self.array.fill_value)
            )

    @property
    def chunk_nbytes(self) -> int:
        """Bytes zarr allocates to decode one chunk (the inner chunk of a sharded array),
        plus the index of a shard (16 bytes per inner chunk)."""
        nbytes = dense_nbytes(self.array.chunks, self.array.dtype)
        shards = getattr(self.array, "shards", None)
        if shards is not None:
            per_shard = math.prod(
                -(-int(s) // max(int(c), 1)) for s, c in zip(shards, self.array.chunks, strict=True)
            )
            nbytes += 16 * per_shard
        return nbytes

    def check_decode(self, budget: int | None) -> None:
        """A chunk is decoded whole, however little of it the array uses: a declared chunk
        far larger than the array (a small frame inflating to gigabytes) must fit the budget
        like the array itself."""
        check_budget(
            self.chunk_nbytes,
            budget,
            where=self.where,
            what=f"decoding one chunk of shape {shape_text(self.array.chunks)} "
            f"{dtype_name(self.array.dtype)}",
        )

    @contextlib.contextmanager
    def decoding(self, budget: int | None) -> Iterator[None]:
        """Let zarr decode at once only as many chunks as fit in the budget."""
        import zarr

        concurrency = int(zarr.config.get("async.concurrency"))
        fit = concurrency if budget is None else max(budget // max(self.chunk_nbytes, 1), 1)
        if fit >= concurrency:
            yield
            return
        with zarr.config.set({"async.concurrency": int(fit)}):
            yield


def _describe_codecs(arr: Any) -> tuple[str | None, list[str]]:
    notes = [f"zarr format {arr.metadata.zarr_format}"]
    compressors = tuple(arr.compressors or ())
    compression = "+".join(_codec_text(c) for c in compressors) or None
    filters = tuple(arr.filters or ())
    if filters:
        notes.append("filters: " + ", ".join(_codec_text(c) for c in filters))
    if getattr(arr, "shards", None) is not None:
        notes.append(f"sharded {tuple(arr.shards)}: missing chunks are detected per shard")
    return compression, notes


class ZarrDenseHandle(ArrayHandle):
    format = FORMAT

    def __init__(self, *, store: Any, path: Path, name: str, uri: URI, **kw: Any) -> None:
        self._member = _ZarrMember(store, path, name)
        arr = self._member.array
        compression, notes = _describe_codecs(arr)
        if self._member.missing:
            notes.append(
                f"{self._member.missing} of {self._member.total} {self._member.unit} missing: "
                "read refused"
            )
        super().__init__(
            uri=uri,
            location=self._member.where,
            name=name,
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=arr.chunks,
            compression=compression,
            order=getattr(arr, "order", None),
            notes=notes,
            **kw,
        )

    # The budget of a read() in progress; row blocks use the handle's budget, the whole
    # working set (blocks may be smaller than a chunk, which zarr decodes whole anyway).
    _read_budget: int | None = None

    def _decode_budget(self) -> int | None:
        return self.max_bytes if self._read_budget is None else self._read_budget

    def read(self, max_bytes: int | None = None) -> Any:
        budget = self._budget(max_bytes)
        # The array's own size first (the clearer message), then the chunk it decodes.
        check_budget(self.read_nbytes, budget, where=self.location, what=self._what())
        self._member.check_decode(budget)
        self._read_budget = budget
        try:
            return super().read(max_bytes)
        finally:
            self._read_budget = None

    def _before_blocks(self) -> None:
        self._member.check_complete()
        self._member.check_decode(self.max_bytes)

    def _read(self) -> np.ndarray:
        self._member.check_complete()
        with zarr_errors(self.location), self._member.decoding(self._decode_budget()):
            return np.asarray(self._member.array[...])

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        with zarr_errors(self.location), self._member.decoding(self._decode_budget()):
            return np.asarray(self._member.array[start:stop])

    def _read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        from zarr.core.buffer.cpu import NDBuffer

        with zarr_errors(self.location), self._member.decoding(self._decode_budget()):
            self._member.array.get_basic_selection(
                np.s_[start:stop], out=NDBuffer.from_numpy_array(out)
            )


class ZarrSparseHandle(SparseCOOHandle):
    format = FORMAT

    def __init__(self, *, store: Any, path: Path, name: str, uri: URI, **kw: Any) -> None:
        location = _location(path, name)
        layout = _sparse_layout(path / name if name else path)
        if layout is None or layout.problem:
            raise RefusedError(location, layout.problem if layout else "not a sparse group")
        members = {}
        for m in layout.members:
            try:
                members[m] = _ZarrMember(store, path, f"{name}/{m}" if name else m)
            except RefusedError as exc:
                raise RefusedError(location, f"sparse member '{m}': {exc.reason}") from exc
        nnz = validate_members(
            {m: tuple(z.array.shape) for m, z in members.items()},
            {m: z.array.dtype for m, z in members.items()},
            location,
            layout.index,
        )
        members["shape"].check_complete()
        with zarr_errors(location):
            shape = validate_shape_values(members["shape"].array[...], location, len(layout.index))
        compression, notes = _describe_codecs(members["data"].array)
        notes[:0] = layout_notes(layout)
        for m, z in members.items():
            if z.missing:
                notes.append(f"sparse member '{m}': {z.missing} of {z.total} {z.unit} missing")
        super().__init__(
            index_members=layout.index,
            shape=shape,
            uri=uri,
            location=location,
            name=name,
            dtype=members["data"].array.dtype,
            nnz=nnz,
            compression=compression,
            notes=notes,
            **kw,
        )
        self._members = members

    def _before_blocks(self) -> None:
        # Every read path passes here first; the open-time budget bounds chunk decoding.
        for z in self._members.values():
            z.check_complete()
            z.check_decode(self.max_bytes)

    def _slice(self, member: str, start: int, stop: int) -> np.ndarray:
        z = self._members[member]
        with zarr_errors(self.location), z.decoding(self.max_bytes):
            return np.asarray(z.array[start:stop])


def _make_handle(
    store: Any, path: Path, name: str, kind: str, uri: URI, max_bytes: int | None
) -> ArrayHandle:
    if kind == "broken":
        raise RefusedError(_location(path, name), "unreadable zarr.json metadata")
    if kind == "symlink":
        raise RefusedError(_location(path, name), "symbolic link to another directory is refused")
    cls = ZarrSparseHandle if kind == "sparse" else ZarrDenseHandle
    return cls(store=store, path=path, name=name, uri=uri, max_bytes=max_bytes)


def _check_store(path: Path) -> None:
    if not path.exists():
        raise InputMissingError(f"{path}: no such Zarr store")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputMissingError(f"{path}: cannot be read (permission denied)")


def open_handle(uri: URI, *, max_bytes: int | None = None) -> ArrayHandle:
    path = uri.path
    _check_store(path)
    entries = walk(path)
    uris = [_location(path, n) for n, _ in entries]
    if uri.key is None:
        if not entries:
            raise InputMissingError(f"{path}: holds no arrays")
        if len(entries) > 1:
            raise UsageError(f"{path}: holds {len(entries)} arrays, name one: {cap_list(uris)}")
        name, kind = entries[0]
    else:
        name = "/".join(p for p in uri.key.split("/") if p and p != ".")
        node = path / name if name else path
        kind = next((k for n, k in entries if n == name), None)
        if kind is None:
            if _node_kind(node) == "group":
                inside = [
                    u for (n, _), u in zip(entries, uris, strict=True) if n.startswith(name + "/")
                ]
                raise UsageError(
                    f"{_location(path, name)}: is a group, not an array; arrays inside: "
                    f"{cap_list(inside)}"
                )
            raise InputMissingError(
                f"{path}: no array '{name}' (arrays in store: {cap_list(uris)})"
            )
    return _make_handle(_store(path), path, name, kind, uri, max_bytes)


def list_entries(path: Path) -> list[dict[str, Any]]:
    _check_store(path)
    store = _store(path)
    uri = URI(str(path), path, None)
    out = []
    for name, kind in walk(path):
        try:
            out.append(_make_handle(store, path, name, kind, uri, None).describe())
        except DataError as exc:
            reason = getattr(exc, "reason", None) or one_line(exc)
            out.append(
                refused_entry(name=name, uri=_location(path, name), fmt=FORMAT, reason=reason)
            )
    return out


# -- writing ---------------------------------------------------------------------------------


def write_arrays(
    staging: Path,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    checkpoint: Callable[[], None] = lambda: None,
) -> None:
    import zarr
    from zarr.storage import LocalStore

    os.mkdir(staging)  # fails if it exists: the staging name is ours alone
    root = zarr.create_group(store=LocalStore(staging), zarr_format=3, attributes=dict(attrs))
    for name, arr in arrays.items():
        _write_one(root, name, arr)
        checkpoint()


def _write_one(root: Any, name: str, arr: np.ndarray) -> None:
    # write_empty_chunks: every chunk is stored, so our own reader never sees a "missing" one.
    out = root.create_array(
        name=name, shape=arr.shape, dtype=arr.dtype, config={"write_empty_chunks": True}
    )
    out[...] = arr


def read_result(path: Path, *, max_bytes: int | None = None) -> tuple[dict[str, Any], dict]:
    import zarr

    _check_store(path)
    store = _store(path)
    uri = URI(str(path), path, None)
    arrays = {}
    for name, kind in walk(path):
        arrays[name] = _make_handle(store, path, name, kind, uri, max_bytes).read()
    with zarr_errors(str(path), "cannot read the root attributes"):
        attrs = zarr.open(store=store, mode="r").attrs.asdict()
    return arrays, attrs
