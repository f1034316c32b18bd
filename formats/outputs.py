"""Output checks and atomic writers: check_output, write, write_json, read_result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import commit, remove, staging_path
from .detect import detect_format, is_zarr_store
from .dtypes import ACCEPTED_KINDS, dtype_name
from .errors import FormatsError, OutputError, StorageError, UsageError
from .handle import one_line
from .registry import OUTPUT_EXTENSIONS, engine
from .uri import URI, parse_uri

PathLike = str | os.PathLike[str]
RESERVED_NAMES = ("__attrs__",)


def _input_path(item: PathLike | URI) -> Path:
    if isinstance(item, URI):
        return item.path
    text = os.fspath(item)
    if os.path.exists(text):
        return Path(text)
    return parse_uri(text).path  # "in.h5:/data" names the file in.h5


def _overlaps(out: Path, inp: Path) -> bool:
    """True when writing `out` could replace or modify `inp`."""
    ro, ri = os.path.realpath(out), os.path.realpath(inp)
    if ro == ri:
        return True
    with contextlib.suppress(OSError):
        if os.path.samefile(out, inp):  # hard links
            return True
    # An output directory that contains the input, or an output inside an input store.
    return ri.startswith(ro.rstrip(os.sep) + os.sep) or ro.startswith(ri.rstrip(os.sep) + os.sep)


def check_target(path: PathLike, *, force: bool, inputs: Iterable[PathLike | URI] = ()) -> Path:
    """Checks shared by every output (no extension check)."""
    final = Path(os.path.abspath(os.fspath(path)))
    parent = final.parent
    if not parent.is_dir():
        raise OutputError(f"{final}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{final}: output directory {parent} is not writable")
    for item in inputs:
        inp = _input_path(item)
        if _overlaps(final, inp):
            raise OutputError(f"{final}: would overwrite the input {inp} (even with --force)")
    if os.path.lexists(final) and not force:
        raise OutputError(f"{final}: already exists (pass --force to replace it)")
    return final


def check_output(path: PathLike, *, force: bool, inputs: Iterable[PathLike | URI] = ()) -> Path:
    """Validate an output path BEFORE computing; returns it as an absolute Path."""
    suffix = Path(os.fspath(path)).suffix.lower()
    fmt = OUTPUT_EXTENSIONS.get(suffix)
    if fmt is None:
        raise UsageError(
            f"{path}: unknown output extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    final = check_target(path, force=force, inputs=inputs)
    if os.path.lexists(final) and not final.is_symlink():
        if fmt == "zarr" and final.is_dir() and not is_zarr_store(final):
            # --force must not wipe an arbitrary directory that merely ends in .zarr
            raise OutputError(f"{final}: exists and is not a Zarr store, refusing to replace it")
        if fmt != "zarr" and final.is_dir():
            raise OutputError(f"{final}: is a directory, refusing to replace it with a file")
    return final


def _validated_arrays(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        parts = name.split("/") if isinstance(name, str) else []
        if not parts or any(p in ("", ".", "..") for p in parts) or name in RESERVED_NAMES:
            raise ValueError(f"invalid output array name {name!r}")
        arr = np.asarray(value)
        if arr.dtype.kind not in ACCEPTED_KINDS or arr.dtype.subdtype is not None:
            raise ValueError(f"output array {name!r} has unsupported dtype {arr.dtype}")
        out[name] = arr
    names = set(out)
    for name in out:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise ValueError(
                    f"output array {name!r} is nested under array {'/'.join(parts[:i])!r}"
                )
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _validated_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    if any(not isinstance(k, str) for k in attrs):
        raise ValueError("attribute names must be strings")
    # A JSON round trip turns numpy scalars and tuples into plain JSON values.
    return json.loads(json.dumps(dict(attrs), default=_json_default))


def _write_failure(final: Path, exc: BaseException) -> BaseException:
    if isinstance(exc, PermissionError):
        return OutputError(f"{final}: cannot be written (permission denied)")
    if isinstance(exc, OSError):
        return StorageError(f"{final}: cannot write output ({exc.strerror or one_line(exc)})")
    return exc


class _DeferredSignals:
    """Hold SIGINT/SIGTERM while an output is staged and deliver them at safe checkpoints.

    An asynchronous KeyboardInterrupt (or an exception raised by a SIGTERM handler) can land
    inside a C callback or a destructor of h5py or zarr, where Python prints "Exception
    ignored" and drops it (the write then completes as if nothing happened), or while zarr's
    I/O thread is still writing chunks. So while staging, the handlers only record the signal;
    checkpoint() (between arrays, before the commit) calls the previous handler, which for
    Python's default SIGINT handler raises KeyboardInterrupt there.
    Only in the main thread, and only for signals whose handler is a Python callable (a SIG_DFL
    SIGTERM still kills the process: the staging path may stay, the final path is untouched).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.pending: list[tuple[int, Any]] = []

    def __enter__(self) -> _DeferredSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                handler = signal.getsignal(sig)
                if callable(handler):
                    self.previous[sig] = handler
                    signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.pending.append((signum, frame))

    def checkpoint(self) -> None:
        while self.pending:
            signum, frame = self.pending.pop(0)
            self.previous[signum](signum, frame)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc[0] is None:
            self.checkpoint()  # arrived during the commit: the output is whole, deliver now


def _staged(final: Path, stage: Any, *, force: bool, is_dir: bool) -> None:
    """Run `stage(staging, checkpoint)`, commit it; on ANY exception remove the staging path."""
    staging = staging_path(final)
    with _DeferredSignals() as signals:
        try:
            stage(staging, signals.checkpoint)
            signals.checkpoint()
            commit(staging, final, force=force, is_dir=is_dir)
        except BaseException as exc:
            remove(staging)
            mapped = _write_failure(final, exc)
            if mapped is exc or isinstance(exc, FormatsError):
                raise
            raise mapped from exc


def write(
    path: PathLike,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    force: bool = False,
    inputs: Iterable[PathLike | URI] = (),
) -> dict[str, Any]:
    """Write arrays and root attributes to one output atomically; the extension picks the format."""
    inputs = list(inputs)
    final = check_output(path, force=force, inputs=inputs)
    fmt = OUTPUT_EXTENSIONS[final.suffix.lower()]
    arrays = _validated_arrays(arrays)
    attrs = _validated_attrs(attrs)
    backend = engine(fmt)
    _staged(
        final,
        lambda staging, checkpoint: backend.write_arrays(staging, arrays, attrs, checkpoint),
        force=force,
        is_dir=fmt == "zarr",
    )
    return {
        "path": str(final),
        "format": fmt,
        "arrays": {
            name: {"shape": list(a.shape), "dtype": dtype_name(a.dtype)}
            for name, a in arrays.items()
        },
    }


def write_json(
    path: PathLike, obj: Any, *, force: bool = False, inputs: Iterable[PathLike | URI] = ()
) -> None:
    """Atomic JSON file (indent 2, trailing newline); numpy scalars/arrays are converted."""
    final = check_target(path, force=force, inputs=list(inputs))
    if final.is_dir() and not final.is_symlink():
        raise OutputError(f"{final}: is a directory, refusing to replace it with a file")
    text = json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n"

    def stage(staging: Path, checkpoint: Any) -> None:
        with open(staging, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()

    _staged(final, stage, force=force, is_dir=False)


def read_result(
    path: PathLike, *, max_bytes: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read back an output written by write(): arrays by name ("factors/0") and root attrs."""
    path = Path(os.fspath(path))
    fmt = detect_format(path)
    if fmt not in OUTPUT_EXTENSIONS.values():
        raise UsageError(f"{path}: {fmt} is not one of the output formats (hdf5, zarr, npz)")
    return engine(fmt).read_result(path, max_bytes=max_bytes)
