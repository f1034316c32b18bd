"""Atomic outputs: an interruption at any moment leaves the old output or nothing.

In-process failures are injected inside the engines' writers (after the first array is
written); real SIGKILL/SIGINT are sent to a subprocess in the middle of writing a 256 MB array.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rankwise.formats as F
from rankwise.formats import atomic, hdf5, npz, zarr_store

EXTS = [".h5", ".zarr", ".npz"]
ENGINES = {".h5": hdf5, ".zarr": zarr_store, ".npz": npz}
ARRAYS = {"U": np.arange(12.0).reshape(4, 3), "S": np.ones(3), "factors/0": np.zeros((2, 2))}


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under `directory` with its bytes (None for directories)."""
    return {
        str(p.relative_to(directory)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(directory.rglob("*"))
    }


def _fail_on_second_array(monkeypatch, engine, exc: BaseException) -> None:
    original = engine._write_one
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "_write_one", flaky)


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize(
    "exc, expected",
    [
        (RuntimeError("boom"), RuntimeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
        (OSError(errno.ENOSPC, "No space left on device"), F.StorageError),
        (PermissionError(errno.EACCES, "Permission denied"), F.OutputError),
    ],
    ids=["exception", "keyboard-interrupt", "enospc", "eacces"],
)
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, ext, exc, expected):
    _fail_on_second_array(monkeypatch, ENGINES[ext], exc)
    with pytest.raises(expected):
        F.write(tmp_path / f"out{ext}", ARRAYS, {"kind": "svd"})
    assert snapshot(tmp_path) == {}  # no final file, no staging leftovers


@pytest.mark.parametrize("ext", EXTS)
def test_failure_mid_write_with_force_keeps_the_old_output(tmp_path, monkeypatch, ext):
    out = tmp_path / f"out{ext}"
    F.write(out, {"old": np.arange(5.0)}, {"kind": "old"})
    before = snapshot(tmp_path)
    _fail_on_second_array(monkeypatch, ENGINES[ext], RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        F.write(out, ARRAYS, {"kind": "new"}, force=True)
    assert snapshot(tmp_path) == before
    got, attrs = F.read_result(out)
    assert list(got) == ["old"] and attrs == {"kind": "old"}


@pytest.mark.parametrize("ext", EXTS)
def test_failure_while_committing(tmp_path, monkeypatch, ext):
    out = tmp_path / f"out{ext}"
    F.write(out, {"old": np.arange(5.0)}, {})
    before = snapshot(tmp_path)

    def broken_fsync(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "fsync_path", broken_fsync)
    with pytest.raises(F.StorageError, match="Input/output error"):
        F.write(out, ARRAYS, {}, force=True)
    assert snapshot(tmp_path) == before


def test_zarr_swap_failure_restores_the_old_store(tmp_path, monkeypatch):
    out = tmp_path / "out.zarr"
    F.write(out, {"old": np.arange(5.0)}, {})
    before = snapshot(tmp_path)
    real_rename = os.rename

    def rename(src, dst):
        if atomic.STAGING_TAG in str(src):  # moving the new store into place fails
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(F.StorageError):
        F.write(out, ARRAYS, {}, force=True)
    assert snapshot(tmp_path) == before


def test_write_json_failure_keeps_old(tmp_path, monkeypatch):
    report = tmp_path / "r.report.json"
    F.write_json(report, {"v": 1})
    monkeypatch.setattr(atomic, "fsync_path", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        F.write_json(report, {"v": 2}, force=True)
    assert snapshot(tmp_path) == {"r.report.json": b'{\n  "v": 1\n}\n'}


def _sigint_during_first_array(monkeypatch, engine) -> None:
    original = engine._write_one
    calls = []

    def write_then_interrupt(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the output is staged

    monkeypatch.setattr(engine, "_write_one", write_then_interrupt)


@pytest.mark.parametrize("ext", EXTS)
def test_sigint_is_delivered_at_a_checkpoint_and_cleans_up(tmp_path, monkeypatch, ext):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _sigint_during_first_array(monkeypatch, ENGINES[ext])
    with pytest.raises(KeyboardInterrupt):
        F.write(tmp_path / f"out{ext}", ARRAYS, {})
    assert snapshot(tmp_path) == {}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_custom_sigint_handler_is_called_not_replaced(tmp_path, monkeypatch):
    seen = []

    def handler(signum, frame):
        seen.append(signum)  # e.g. a CLI that finishes the current step, then stops

    previous = signal.signal(signal.SIGINT, handler)
    try:
        _sigint_during_first_array(monkeypatch, npz)
        F.write(tmp_path / "out.npz", {"a": np.ones(2)}, {})
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert F.read_result(tmp_path / "out.npz")[0]["a"].tolist() == [1.0, 1.0]


def test_sigterm_handler_that_raises_is_deferred_to_a_checkpoint(tmp_path, monkeypatch):
    class Terminated(BaseException):  # what a CLI's SIGTERM handler may raise
        pass

    def on_term(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        original = hdf5._write_one

        def write_then_term(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(hdf5, "_write_one", write_then_term)
        with pytest.raises(Terminated):
            F.write(tmp_path / "out.h5", ARRAYS, {})
        assert signal.getsignal(signal.SIGTERM) is on_term
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert snapshot(tmp_path) == {}


# -- real signals --------------------------------------------------------------------------

WRITER = """
import signal, sys
import numpy as np
import rankwise.formats as F
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
big = np.random.default_rng(0).random((32768, 1024))  # 256 MiB, incompressible
print("ready", flush=True)
F.write(sys.argv[1], {"big": big}, {"kind": "big"}, force=True)
print("done", flush=True)
"""

KILL_AFTER_BYTES = 16 * 1024 * 1024


def _staging(directory: Path, name: str) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(f".{name}{atomic.STAGING_TAG}")]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _interrupt_mid_write(tmp_path: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"writer finished before the signal: {proc.communicate()}")
            staged = _staging(tmp_path, out.name)
            if staged and _size(staged[0]) >= KILL_AFTER_BYTES:
                proc.send_signal(sig)
                break
            if time.monotonic() > deadline:
                raise AssertionError("no staging output appeared")
            time.sleep(0.002)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "done" not in stdout
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("ext", EXTS)
def test_sigkill_mid_write(tmp_path, ext):
    out = tmp_path / f"out{ext}"
    result = _interrupt_mid_write(tmp_path, out, signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    assert not os.path.lexists(out)  # a staging leftover is allowed, a final file is not

    for leftover in _staging(tmp_path, out.name):
        atomic.remove(leftover)
    F.write(out, {"old": np.arange(3.0)}, {"kind": "old"})
    before = snapshot(tmp_path)
    _interrupt_mid_write(tmp_path, out, signal.SIGKILL)
    after = {k: v for k, v in snapshot(tmp_path).items() if atomic.STAGING_TAG not in k}
    assert after == before


@pytest.mark.parametrize("ext", EXTS)
def test_sigint_mid_write_removes_the_staging_path(tmp_path, ext):
    out = tmp_path / f"out{ext}"
    F.write(out, {"old": np.arange(3.0)}, {"kind": "old"})
    before = snapshot(tmp_path)
    result = _interrupt_mid_write(tmp_path, out, signal.SIGINT)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    assert snapshot(tmp_path) == before  # old output intact, no staging leftovers
