"""Output checks and atomic writers: check_output, write, write_json, read_result, and the
two-phase API (stage, stage_json, Staged, commit_all) that commits an output and its report
together."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .atomic import clean_stale, commit, fsync_path, pause_point, remove, staging_path, sync
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


def check_target(
    path: PathLike,
    *,
    force: bool,
    inputs: Iterable[PathLike | URI] = (),
    report: PathLike | None = None,
) -> Path:
    """Checks shared by every output (no extension check). `report`: the path of the report
    that describes this output, to explain an existing output that has none."""
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
    clean_stale(final)  # first: it may put back an output a killed run had moved aside
    if os.path.lexists(final) and not force:
        if report is not None and not os.path.lexists(report):
            # The output is committed before its report: a SIGKILL between the two renames
            # (or a deleted report) leaves an output that nothing certifies.
            raise OutputError(
                f"{final}: already exists without its report {report} (an earlier run may "
                "have been killed before writing it); pass --force to replace it"
            )
        raise OutputError(f"{final}: already exists (pass --force to replace it)")
    return final


def check_output(
    path: PathLike,
    *,
    force: bool,
    inputs: Iterable[PathLike | URI] = (),
    report: PathLike | None = None,
) -> Path:
    """Validate an output path BEFORE computing; returns it as an absolute Path. `report` is
    the report that goes with it (named in the error when the output exists without it)."""
    suffix = Path(os.fspath(path)).suffix.lower()
    fmt = OUTPUT_EXTENSIONS.get(suffix)
    if fmt is None:
        raise UsageError(
            f"{path}: unknown output extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    final = check_target(path, force=force, inputs=inputs, report=report)
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


def _raise_mapped(final: Path, exc: BaseException) -> NoReturn:
    """Re-raise `exc` (called inside its except block), OS errors as FormatsError."""
    mapped = _write_failure(final, exc)
    if mapped is exc or isinstance(exc, FormatsError):
        raise exc
    raise mapped from exc


class _DeferredSignals:
    """Hold SIGINT/SIGTERM while an output is staged or committed; deliver them at safe points.

    An asynchronous KeyboardInterrupt (or an exception raised by a SIGTERM handler) can land
    inside a C callback or a destructor of h5py or zarr, where Python prints "Exception
    ignored" and drops it (the write then completes as if nothing happened), or while zarr's
    I/O thread is still writing chunks. So while staging, the handlers only record the signal;
    checkpoint() (between arrays, before the commit) calls the previous handler, which for
    Python's default SIGINT handler raises KeyboardInterrupt there. On exit the handlers are
    restored and signals still pending are delivered (also when an exception is propagating:
    a signal is never dropped).
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
        self.checkpoint()  # arrived after the last checkpoint (e.g. during a commit)


def _remove_if_owner(path: Path, pid: int) -> None:
    if os.getpid() == pid:  # a forked child must not remove its parent's staging path
        remove(path)


class Staged:
    """An output written to its staging path and synced, not yet visible at its final path.

    `info` describes the output (what write() returns). commit() moves it into place (with
    SIGINT/SIGTERM deferred until it is done); discard() removes the staging path. Both are
    idempotent: commit() after commit() and discard() after anything do nothing; commit()
    after discard() is a ValueError. As a context manager it discards on exit unless
    committed. A Staged that is garbage-collected (or still staged at interpreter exit)
    removes its staging path too.
    """

    def __init__(self, final: Path, *, force: bool, is_dir: bool, info: dict[str, Any]) -> None:
        self.path = final
        self.staging = staging_path(final)
        self.info = info
        self.force = force
        self.is_dir = is_dir
        self.state = "staged"  # -> "committed" | "discarded"
        self._cleanup = weakref.finalize(self, _remove_if_owner, self.staging, os.getpid())

    @property
    def committed(self) -> bool:
        return self.state == "committed"

    def commit(self) -> None:
        commit_all([self])

    def discard(self) -> None:
        if self.state == "committed":
            return
        self.state = "discarded"
        self._cleanup()  # runs once; later calls do nothing

    def _commit(self, *, sync_parent: bool = True) -> None:
        """Move into place; the caller defers signals. On failure the staging path is removed."""
        if self.state == "committed":
            return
        if self.state == "discarded":
            raise ValueError(f"{self.path}: the staged output was discarded, cannot commit it")
        try:
            commit(
                self.staging, self.path, force=self.force, is_dir=self.is_dir,
                sync_parent=sync_parent,
            )  # fmt: skip
        except BaseException as exc:
            self.discard()
            _raise_mapped(self.path, exc)
        self.state = "committed"
        self._cleanup.detach()

    def _drop_replaced(self) -> None:
        """With force, remove the file this one replaces before the group's first rename."""
        if self.state != "staged" or not self.force or self.is_dir:
            return
        if os.path.lexists(self.path) and not (self.path.is_dir() and not self.path.is_symlink()):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except BaseException as exc:
                _raise_mapped(self.path, exc)

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def __repr__(self) -> str:
        return f"<Staged {self.path} ({self.state})>"


def commit_all(staged: Sequence[Staged]) -> None:
    """Commit staged outputs in order, as one group for signals.

    SIGINT/SIGTERM arriving while the group commits are delivered after the last commit, so an
    interrupt never leaves the first output committed without the others (one pending before
    the group starts is delivered before anything is renamed). If a commit raises, the outputs
    not yet committed are discarded and the exception propagates (the ones already committed
    stay: a rename cannot be taken back safely). An exception raised by a signal delivered
    after every commit carries `rankwise_committed`, the committed paths.

    Later items describe earlier ones (a report its output). Only a SIGKILL or a crash can
    stop the group between two renames; so that what it leaves is never a mismatched pair,
    the renames run back to back (directories are synced once after them) and, with force,
    files that later items replace are removed before the first rename: an old report is
    never left next to a new output (an output may be left without its report).
    """
    items = list(staged)
    for item in items:
        if item.state == "discarded":
            raise ValueError(f"{item.path}: the staged output was discarded, cannot commit it")
    pause_point("staged")  # test-only (atomic.pause_point)
    try:
        with _DeferredSignals():
            try:
                for item in items[1:]:
                    item._drop_replaced()
                for i, item in enumerate(items):
                    if i == 1:
                        pause_point("between-commits")  # test-only
                    item._commit(sync_parent=False)
                for parent in dict.fromkeys(item.path.parent for item in items):
                    try:
                        fsync_path(parent)
                    except BaseException as exc:
                        _raise_mapped(parent, exc)
            except BaseException:
                for item in items:
                    item.discard()  # does nothing for the committed ones
                raise
    except BaseException as exc:
        if items and all(item.committed for item in items):
            exc.rankwise_committed = [str(item.path) for item in items]  # type: ignore[attr-defined]
        raise


def _stage(final: Path, fill: Any, *, force: bool, is_dir: bool, info: dict[str, Any]) -> Staged:
    """Run `fill(staging, checkpoint)` and sync; on ANY exception remove the staging path."""
    staged = Staged(final, force=force, is_dir=is_dir, info=info)
    try:
        with _DeferredSignals() as signals:

            def checkpoint() -> None:  # called by the writers after each array
                pause_point("output-partial")  # test-only (atomic.pause_point)
                signals.checkpoint()

            fill(staged.staging, checkpoint)
            signals.checkpoint()
            sync(staged.staging, is_dir=is_dir)
    except BaseException as exc:  # incl. a KeyboardInterrupt delivered when the block ends
        staged.discard()
        _raise_mapped(final, exc)
    return staged


def stage(
    path: PathLike,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    force: bool = False,
    inputs: Iterable[PathLike | URI] = (),
) -> Staged:
    """Everything write() does except the final commit: check, write the staging path, sync.

    Commit the result with `.commit()` or `commit_all([...])`; use it as a context manager so
    it is discarded when anything fails before the commit.
    """
    inputs = list(inputs)
    final = check_output(path, force=force, inputs=inputs)
    fmt = OUTPUT_EXTENSIONS[final.suffix.lower()]
    arrays = _validated_arrays(arrays)
    attrs = _validated_attrs(attrs)
    backend = engine(fmt)
    info = {
        "path": str(final),
        "format": fmt,
        "arrays": {
            name: {"shape": list(a.shape), "dtype": dtype_name(a.dtype)}
            for name, a in arrays.items()
        },
    }
    return _stage(
        final,
        lambda staging, checkpoint: backend.write_arrays(staging, arrays, attrs, checkpoint),
        force=force,
        is_dir=fmt == "zarr",
        info=info,
    )


def stage_json(
    path: PathLike, obj: Any, *, force: bool = False, inputs: Iterable[PathLike | URI] = ()
) -> Staged:
    """Stage a JSON file (indent 2, trailing newline) like write_json(), without committing."""
    final = check_target(path, force=force, inputs=list(inputs))
    if final.is_dir() and not final.is_symlink():
        raise OutputError(f"{final}: is a directory, refusing to replace it with a file")
    text = json.dumps(obj, indent=2, default=_json_default, ensure_ascii=False) + "\n"

    def fill(staging: Path, checkpoint: Any) -> None:
        with open(staging, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()

    return _stage(final, fill, force=force, is_dir=False, info={"path": str(final)})


def write(
    path: PathLike,
    arrays: Mapping[str, Any],
    attrs: Mapping[str, Any],
    *,
    force: bool = False,
    inputs: Iterable[PathLike | URI] = (),
) -> dict[str, Any]:
    """Write arrays and root attributes to one output atomically; the extension picks the format."""
    with stage(path, arrays, attrs, force=force, inputs=inputs) as staged:
        staged.commit()
    return staged.info


def write_json(
    path: PathLike, obj: Any, *, force: bool = False, inputs: Iterable[PathLike | URI] = ()
) -> None:
    """Atomic JSON file (indent 2, trailing newline); numpy scalars/arrays are converted."""
    with stage_json(path, obj, force=force, inputs=inputs) as staged:
        staged.commit()


def read_result(
    path: PathLike, *, max_bytes: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read back an output written by write(): arrays by name ("factors/0") and root attrs."""
    path = Path(os.fspath(path))
    fmt = detect_format(path)
    if fmt not in OUTPUT_EXTENSIONS.values():
        raise UsageError(f"{path}: {fmt} is not one of the output formats (hdf5, zarr, npz)")
    return engine(fmt).read_result(path, max_bytes=max_bytes)
