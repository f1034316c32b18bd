"""Format detection: magic bytes first, then the extension; never "try every reader"."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import DataError, InputMissingError, UsageError

KNOWN_FORMATS: tuple[str, ...] = ("hdf5", "zarr", "npz", "npy", "mtx")

# Extensions that name an input format (used for detection fallbacks and for URI splitting).
INPUT_EXTENSIONS: dict[str, str] = {
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".he5": "hdf5",
    ".zarr": "zarr",
    ".npz": "npz",
    ".npy": "npy",
    ".mtx": "mtx",
    ".mm": "mtx",
}

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
MTX_MAGIC = b"%%matrixmarket"

_FORMAT_TITLES = {"hdf5": "HDF5", "zarr": "Zarr", "npz": "NPZ", "npy": "NPY", "mtx": "MatrixMarket"}
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def known_formats_text() -> str:
    return ", ".join(KNOWN_FORMATS)


def _hdf5_at_userblock(f, size: int) -> bool:
    # The HDF5 superblock may follow a user block: it then sits at 512, 1024, 2048, ...
    offset = 512
    while offset + len(HDF5_MAGIC) <= size:
        f.seek(offset)
        if f.read(len(HDF5_MAGIC)) == HDF5_MAGIC:
            return True
        offset *= 2
    return False


def _magic_format(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if head.startswith(HDF5_MAGIC):
                return "hdf5"
            if head.startswith(NPY_MAGIC):
                return "npy"
            if head.startswith(ZIP_MAGICS):
                return "npz"
            if head[: len(MTX_MAGIC)].lower() == MTX_MAGIC:
                return "mtx"
            if _hdf5_at_userblock(f, os.fstat(f.fileno()).st_size):
                return "hdf5"
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from exc
    except IsADirectoryError:  # pragma: no cover - handled by the caller
        return None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return None


def is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(mode: int) -> str | None:
    """'a named pipe', 'a socket', ... for anything that is not a regular file or directory."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((text for test, text in _SPECIAL_KINDS if test(mode)), "not a file")


def check_input_kind(path: Path) -> bool:
    """Stat `path` (following symlinks) before anything opens it; True for a directory.

    Opening a FIFO for reading blocks until a writer appears, and a device may never end, so
    only regular files and directories are accepted.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: no such file or directory") from exc
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from exc
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise InputMissingError(f"{path}: not a regular file ({kind}); refusing to read it")
    return stat.S_ISDIR(st.st_mode)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name the format of an existing file or directory (one of KNOWN_FORMATS)."""
    path = Path(path)
    is_dir = check_input_kind(path)
    ext_format = INPUT_EXTENSIONS.get(path.suffix.lower())
    if is_dir:
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputMissingError(f"{path}: cannot be read (permission denied)")
        if is_zarr_store(path):
            return "zarr"
        if ext_format == "zarr":
            raise DataError(f"{path}: not a valid Zarr store (no zarr.json, .zarray or .zgroup)")
        raise UsageError(
            f"{path}: is a directory but not a Zarr store; known formats: {known_formats_text()}"
        )
    found = _magic_format(path)
    if found is not None:
        return found
    if ext_format is not None and ext_format != "zarr":
        raise DataError(
            f"{path}: not a valid {_FORMAT_TITLES[ext_format]} file "
            f"(its first bytes are not the {_FORMAT_TITLES[ext_format]} signature)"
        )
    raise UsageError(f"{path}: unknown input format; known formats: {known_formats_text()}")
