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


def test_zarr_exchange_failure_keeps_the_old_store(tmp_path, monkeypatch):
    out = tmp_path / "out.zarr"
    F.write(out, {"old": np.arange(5.0)}, {})
    before = snapshot(tmp_path)

    def exchange(a, b):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "_exchange", exchange)
    with pytest.raises(F.StorageError):
        F.write(out, ARRAYS, {}, force=True)
    assert snapshot(tmp_path) == before


def test_zarr_swap_is_one_exchange_where_supported(tmp_path, monkeypatch):
    # ext4/tmpfs/xfs/btrfs support RENAME_EXCHANGE: no moment without a store at `out`.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"")
    if not atomic._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no RENAME_EXCHANGE on this file system")
    assert os.listdir(tmp_path / "b") == ["x"] and os.listdir(tmp_path / "a") == []
    for d in ("a", "b"):
        atomic.remove(tmp_path / d)
    out = tmp_path / "out.zarr"
    F.write(out, {"old": np.arange(5.0)}, {})
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(atomic.os, "rename", lambda a, b: (renames.append(a), real_rename(a, b)))
    F.write(out, ARRAYS, {}, force=True)
    assert renames == []  # the swap alone put the new store in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # old store removed
    assert F.read_result(out)[0]["U"].tolist() == ARRAYS["U"].tolist()


def test_zarr_swap_failure_restores_the_old_store(tmp_path, monkeypatch):
    out = tmp_path / "out.zarr"
    F.write(out, {"old": np.arange(5.0)}, {})
    before = snapshot(tmp_path)
    real_rename = os.rename
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # e.g. NFS: two renames

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


# -- leftovers of killed runs ----------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)  # reaped: no process has this pid now (barring reuse)


def _leftover(directory: Path, final: str, tag: str, pid: int, host: str, *, is_dir=False):
    path = directory / f".{final}{tag}{pid}-{host}-{'00c0ffee' if is_dir else '0badc0de'}"
    if is_dir:
        (path / "c").mkdir(parents=True)
        (path / "c" / "0").write_bytes(b"partial chunk")
    else:
        path.write_bytes(b"partial")
    return path.name


def test_the_next_write_removes_only_dead_runs_leftovers(tmp_path):
    dead, host = _dead_pid(), atomic.HOST_TAG
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    stale = [
        _leftover(tmp_path, "out.h5", atomic.STAGING_TAG, dead, host),
        _leftover(tmp_path, "out.h5", atomic.STAGING_TAG, dead, host, is_dir=True),
    ]
    kept = [
        _leftover(tmp_path, "out.h5", atomic.STAGING_TAG, os.getppid(), host),  # alive
        _leftover(tmp_path, "out.h5", atomic.STAGING_TAG, dead, other_host),  # another node
        _leftover(tmp_path, "other.h5", atomic.STAGING_TAG, dead, host),  # another output
        f".out.h5{atomic.STAGING_TAG}{dead}-0badc0de",  # not our pattern
        f".out.h5{atomic.STAGING_TAG}x",
        f"out.h5{atomic.STAGING_TAG}{dead}-{host}-0badc0de",  # no leading dot
    ]
    for name in kept[3:]:
        (tmp_path / name).write_bytes(b"someone's")
    before = {k: v for k, v in snapshot(tmp_path).items() if k.startswith(tuple(kept))}
    F.check_output(tmp_path / "out.h5", force=False)  # before computing, in the CLI
    assert not any(os.path.lexists(tmp_path / n) for n in stale)
    (tmp_path / stale[0]).write_bytes(b"partial")  # again: where a staging path is made
    atomic.staging_path(tmp_path / "out.h5")  # (also for plot and checkpoints)
    assert not os.path.lexists(tmp_path / stale[0])
    F.write(tmp_path / "out.h5", ARRAYS, {})
    after = snapshot(tmp_path)
    assert not any(os.path.lexists(tmp_path / n) for n in stale)
    assert {k: v for k, v in after.items() if k.startswith(tuple(kept))} == before
    assert set(after) == {*before, "out.h5"}


def test_a_store_moved_aside_by_a_cut_swap_is_put_back(tmp_path):
    dead, host = _dead_pid(), atomic.HOST_TAG
    out = tmp_path / "out.zarr"
    F.write(tmp_path / "old.zarr", {"old": np.arange(5.0)}, {"kind": "old"})
    aside = tmp_path / f".out.zarr{atomic.OLD_TAG}{dead}-{host}-0badc0de"
    os.rename(tmp_path / "old.zarr", aside)
    with pytest.raises(F.OutputError, match="already exists"):  # it is the committed output
        F.check_output(out, force=False)
    assert F.read_result(out)[1] == {"kind": "old"} and not os.path.lexists(aside)
    # With a store at the final path, a leftover old store is only removed.
    F.write(tmp_path / "old.zarr", {"old": np.arange(5.0)}, {"kind": "old"})
    os.rename(tmp_path / "old.zarr", aside)
    F.check_output(out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


SWAP = """
import sys
import numpy as np
import rankwise.formats as F
from rankwise.formats import atomic
atomic._exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE (NFS)
F.write(sys.argv[1], {"new": np.ones(3)}, {"kind": "new"}, force=True)
"""


def test_sigkill_between_the_two_renames_of_a_swap(tmp_path):
    out = tmp_path / "out.zarr"
    F.write(out, {"old": np.arange(5.0)}, {"kind": "old"})
    before = snapshot(tmp_path)
    env = {**os.environ, atomic.PAUSE_ENV: "dir-swap"}
    proc = subprocess.Popen([sys.executable, "-c", SWAP, str(out)], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _state(proc.pid) != "T":  # stopped itself between the renames
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "never reached the swap"
            time.sleep(0.005)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.lexists(out)  # the one moment the final path is empty...
    F.check_output(out, force=True)  # ...until the next run puts the old store back
    assert snapshot(tmp_path) == before


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def test_pause_point_does_nothing_unless_named(monkeypatch):
    sent = []
    monkeypatch.setattr(atomic.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(atomic, "_paused", set())
    monkeypatch.delenv(atomic.PAUSE_ENV, raising=False)
    atomic.pause_point("staged")
    monkeypatch.setenv(atomic.PAUSE_ENV, "between-commits")
    atomic.pause_point("staged")
    assert sent == []
    atomic.pause_point("between-commits")
    atomic.pause_point("between-commits")  # once per process
    assert sent == [signal.SIGSTOP]
