"""Engine registry: one module per format, imported only when that format is used.

Each engine module provides open_handle(uri, max_bytes=...), list_entries(path) and, for the
output formats, write_arrays(staging, arrays, attrs) and read_result(path, max_bytes=...).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from .detect import detect_format
from .errors import StorageError, UsageError
from .handle import ArrayHandle
from .uri import URI, parse_uri

ENGINES: dict[str, str] = {
    "hdf5": "hdf5",
    "zarr": "zarr_store",
    "npz": "npz",
    "npy": "npy",
    "mtx": "mtx",
}
OUTPUT_EXTENSIONS: dict[str, str] = {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr", ".npz": "npz"}
KEYLESS_FORMATS = ("npy", "mtx")


def engine(fmt: str) -> ModuleType:
    try:
        module = ENGINES[fmt]
    except KeyError:
        raise UsageError(f"unknown format {fmt!r}; known formats: {', '.join(ENGINES)}") from None
    return importlib.import_module(f".{module}", __package__)


def open_array(uri: str | os.PathLike[str] | URI, *, max_bytes: int | None = None) -> ArrayHandle:
    """Open one array lazily; `max_bytes` becomes the default budget of read()/iter_blocks()."""
    parsed = parse_uri(uri)
    fmt = detect_format(parsed.path)
    if parsed.key is not None and fmt in KEYLESS_FORMATS:
        raise UsageError(
            f"{parsed.raw}: a {fmt} file holds one array, so it takes no ':{parsed.key}' key"
        )
    return engine(fmt).open_handle(parsed, max_bytes=max_bytes)


def _size_bytes(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def list_arrays(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe every array of a file or store without reading any data."""
    path = Path(path)
    fmt = detect_format(path)
    entries = engine(fmt).list_entries(path)
    try:
        size = _size_bytes(path)
    except OSError as exc:
        raise StorageError(f"{path}: cannot stat ({exc.strerror or exc})") from exc
    return {"path": str(path), "format": fmt, "size_bytes": size, "arrays": entries}
