"""Zarr engine (zarr-python 3; v2 and v3 stores readable, v3 written).

Nodes are found by walking the store directory so one unreadable member (e.g. a v2 pickle
array) is listed as refused instead of breaking the whole listing. A missing chunk is an
error: zarr would silently return the fill value for it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .detect import special_kind
from .dtypes import dtype_refusal
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


# zarr raises many exception types for bad metadata and codecs.
_ZARR_DECODE = (ValueError, RuntimeError, KeyError, EOFError, TypeError, AttributeError)


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
    from zarr.storage import LocalStore

    return LocalStore(path, read_only=True)


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

    def _before_blocks(self) -> None:
        self._member.check_complete()

    def _read(self) -> np.ndarray:
        self._member.check_complete()
        with zarr_errors(self.location):
            return np.asarray(self._member.array[...])

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        with zarr_errors(self.location):
            return np.asarray(self._member.array[start:stop])

    def _read_rows_into(self, start: int, stop: int, out: np.ndarray) -> None:
        from zarr.core.buffer.cpu import NDBuffer

        with zarr_errors(self.location):
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
        for z in self._members.values():
            z.check_complete()

    def _slice(self, member: str, start: int, stop: int) -> np.ndarray:
        with zarr_errors(self.location):
            return np.asarray(self._members[member].array[start:stop])


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
