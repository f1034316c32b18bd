"""Two-phase commits: stage an output and its JSON report, then commit them as one group.

What is checked is what a reader of the directory sees: the final paths (read back with the
reference libraries and json) and the staging leftovers, never rankwise's own bookkeeping alone.
Signals are sent to this process with os.kill (delivered synchronously in the main thread, so
the tests are deterministic) and, for real SIGINTs from outside, to a subprocess that waits on
its stdin at the exact moment under test.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import rankwise.formats as F
from rankwise.formats import atomic, hdf5, npz, outputs, zarr_store

EXTS = [".h5", ".zarr", ".npz"]
ARRAYS = {"U": np.arange(12.0).reshape(4, 3), "S": np.array([3.0, 2.0, 1.0])}
REPORT = {"schema": "rankwise-report/1", "rank": np.int64(3), "error": np.float64(0.25)}
REPORT_JSON = {"schema": "rankwise-report/1", "rank": 3, "error": 0.25}


def snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(directory)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(directory.rglob("*"))
    }


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The output's arrays through the reference library of its format."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return {k: f[k][()] for k in f}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k in ARRAYS}
    import zarr

    g = zarr.open_group(path, mode="r")
    return {k: g[k][...] for k in ARRAYS}


def assert_committed(out: Path, report: Path) -> None:
    got = read_arrays(out)
    assert set(got) == set(ARRAYS)
    for k, a in ARRAYS.items():
        np.testing.assert_array_equal(got[k], a)
    assert json.loads(report.read_text(encoding="utf-8")) == REPORT_JSON


def paths(tmp_path: Path, ext: str = ".npz") -> tuple[Path, Path]:
    return tmp_path / f"result{ext}", tmp_path / "result.report.json"


# -- the group commit -----------------------------------------------------------------------


@pytest.mark.parametrize("ext", EXTS)
def test_output_and_report_are_committed_together(tmp_path, ext):
    out, report = paths(tmp_path, ext)
    with (
        F.stage(out, ARRAYS, {"kind": "svd"}) as s_out,
        F.stage_json(report, REPORT) as s_rep,
    ):
        # Written and synced next to the final paths, but nothing is visible there yet.
        assert not os.path.lexists(out) and not os.path.lexists(report)
        assert s_out.staging.parent == tmp_path and s_out.staging.exists()
        assert s_rep.staging.parent == tmp_path and s_rep.staging.is_file()
        assert s_out.info == {
            "path": str(out),
            "format": {".h5": "hdf5", ".zarr": "zarr", ".npz": "npz"}[ext],
            "arrays": {
                "U": {"shape": [4, 3], "dtype": "float64"},
                "S": {"shape": [3], "dtype": "float64"},
            },
        }
        assert s_rep.info == {"path": str(report)}
        F.commit_all([s_out, s_rep])
        assert s_out.committed and s_rep.committed
    # Leaving the with block after the commit removes nothing.
    assert names(tmp_path) == sorted([out.name, report.name])
    assert_committed(out, report)
    assert F.read_result(out)[1]["kind"] == "svd"


def test_write_and_write_json_are_stage_plus_commit(tmp_path):
    out, report = paths(tmp_path, ".h5")
    info = F.write(out, ARRAYS, {"kind": "svd"})
    assert info == F.stage(tmp_path / "again.h5", ARRAYS, {"kind": "svd"}).info | {"path": str(out)}
    assert F.write_json(report, REPORT) is None
    assert_committed(out, report)
    gc.collect()  # the uncommitted "again.h5" stage above is gone with its staging path
    assert names(tmp_path) == sorted([out.name, report.name])


def test_force_replaces_only_at_commit(tmp_path):
    out, report = paths(tmp_path)
    np.savez(out, old=np.zeros(2))
    report.write_text("old report\n")
    before = snapshot(tmp_path)
    with pytest.raises(F.OutputError, match="already exists"):
        F.stage(out, ARRAYS, {})  # without force: refused before anything is written
    assert snapshot(tmp_path) == before
    s_out = F.stage(out, ARRAYS, {}, force=True)
    s_rep = F.stage_json(report, REPORT, force=True)
    assert {k: v for k, v in snapshot(tmp_path).items() if atomic.STAGING_TAG not in k} == before
    F.commit_all([s_out, s_rep])
    assert_committed(out, report)
    assert names(tmp_path) == sorted([out.name, report.name])


@pytest.mark.parametrize("ext", EXTS)
def test_force_removes_the_old_report_before_the_output_is_replaced(tmp_path, monkeypatch, ext):
    # Only a SIGKILL can stop the group between its renames; what it leaves must never be a
    # new output next to the old report (which describes other arrays).
    out, report = paths(tmp_path, ext)
    F.write(out, {"old": np.zeros(2)}, {})
    report.write_text("old report\n")
    seen = []
    real = outputs.commit

    def commit(staging, final, **kw):
        seen.append((final.name, os.path.lexists(report)))
        real(staging, final, **kw)

    monkeypatch.setattr(outputs, "commit", commit)
    F.commit_all([F.stage(out, ARRAYS, {}, force=True), F.stage_json(report, REPORT, force=True)])
    assert seen == [(out.name, False), (report.name, False)]
    assert_committed(out, report)
    assert names(tmp_path) == sorted([out.name, report.name])


def test_the_renames_run_back_to_back_then_the_directories_are_synced(tmp_path, monkeypatch):
    out = tmp_path / "result.h5"
    (tmp_path / "reports").mkdir()
    report = tmp_path / "reports" / "r.json"
    events = []
    real_commit, real_fsync = outputs.commit, outputs.fsync_path

    def commit(staging, final, **kw):
        events.append(("rename", final.name, kw.get("sync_parent", True)))
        real_commit(staging, final, **kw)

    def fsync(path):
        events.append(("fsync", Path(path)))
        real_fsync(path)

    staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT)]
    monkeypatch.setattr(outputs, "commit", commit)
    monkeypatch.setattr(outputs, "fsync_path", fsync)
    F.commit_all(staged)
    assert events == [
        ("rename", out.name, False),
        ("rename", report.name, False),
        ("fsync", tmp_path),
        ("fsync", tmp_path / "reports"),
    ]
    assert_committed(out, report)


def test_an_output_without_its_report_is_named_as_such(tmp_path):
    out, report = paths(tmp_path)
    F.write(out, ARRAYS, {})  # e.g. a run killed between its two renames
    with pytest.raises(F.OutputError, match="without its report .*--force"):
        F.check_output(out, force=False, report=report)
    F.write_json(report, REPORT)
    with pytest.raises(F.OutputError, match=r"already exists \(pass --force"):
        F.check_output(out, force=False, report=report)
    assert F.check_output(out, force=True, report=report) == out


def test_stage_json_refuses_to_overwrite_an_input(tmp_path):
    np.save(tmp_path / "in.npy", np.ones(3))
    with pytest.raises(F.OutputError, match="would overwrite the input"):
        F.stage_json(tmp_path / "in.npy", {}, force=True, inputs=[tmp_path / "in.npy"])
    assert names(tmp_path) == ["in.npy"]


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, expected",
    [
        (OSError(errno.EIO, "Input/output error"), F.StorageError),
        (PermissionError(errno.EACCES, "Permission denied"), F.OutputError),
        (RuntimeError("boom"), RuntimeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["eio", "eacces", "exception", "keyboard-interrupt"],
)
def test_failure_in_the_second_commit_keeps_the_first_and_discards_the_rest(
    tmp_path, monkeypatch, exc, expected
):
    out, report = paths(tmp_path, ".zarr")
    extra = tmp_path / "extra.json"
    staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT), F.stage_json(extra, {})]
    real = outputs.commit

    def flaky(staging, final, **kw):
        if final == report:
            raise exc
        return real(staging, final, **kw)

    monkeypatch.setattr(outputs, "commit", flaky)
    with pytest.raises(expected):
        F.commit_all(staged)
    assert [s.state for s in staged] == ["committed", "discarded", "discarded"]
    assert names(tmp_path) == [out.name]  # no report, no staging leftovers
    np.testing.assert_array_equal(read_arrays(out)["U"], ARRAYS["U"])


def test_report_appearing_after_staging_is_not_clobbered(tmp_path):
    # Real, no injection: another process creates the report between stage and commit.
    out, report = paths(tmp_path)
    staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT)]
    report.write_text("someone else's\n")
    with pytest.raises(F.OutputError, match="already exists"):
        F.commit_all(staged)
    assert report.read_text() == "someone else's\n"
    assert names(tmp_path) == sorted([out.name, report.name])
    np.testing.assert_array_equal(read_arrays(out)["S"], ARRAYS["S"])


@pytest.mark.parametrize("ext", EXTS)
def test_interrupt_while_staging_removes_the_staging_path(tmp_path, monkeypatch, ext):
    engine = {".h5": hdf5, ".zarr": zarr_store, ".npz": npz}[ext]
    original, calls = engine._write_one, []

    def write_then_interrupt(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_write_one", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        F.stage(tmp_path / f"out{ext}", ARRAYS, {})
    assert snapshot(tmp_path) == {}


def test_failing_sync_while_staging_json_removes_the_staging_path(tmp_path, monkeypatch):
    def broken_fsync(path):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "fsync_path", broken_fsync)
    with pytest.raises(F.StorageError, match="Input/output error"):
        F.stage_json(tmp_path / "r.json", REPORT)
    assert snapshot(tmp_path) == {}


# -- discard --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [*EXTS, ".json"])
def test_discard_leaves_nothing(tmp_path, ext):
    final = tmp_path / f"out{ext}"

    def make() -> F.Staged:
        if ext == ".json":
            return F.stage_json(final, REPORT)
        return F.stage(final, ARRAYS, {})

    s = make()
    assert s.staging.exists()
    s.discard()
    s.discard()  # idempotent
    assert snapshot(tmp_path) == {} and s.state == "discarded"
    with pytest.raises(ValueError, match="discarded"):
        s.commit()
    with pytest.raises(ValueError, match="discarded"):
        F.commit_all([s])

    with make() as s:  # a context manager discards unless committed
        assert s.staging.exists()
    assert snapshot(tmp_path) == {} and s.state == "discarded"

    with pytest.raises(RuntimeError, match="computation failed"), make():
        raise RuntimeError("computation failed")
    assert snapshot(tmp_path) == {}

    s = make()  # dropped without commit or discard: collected with its staging path
    staging = s.staging
    del s
    gc.collect()
    assert not os.path.lexists(staging) and snapshot(tmp_path) == {}

    s = make()
    s.commit()
    s.commit()  # idempotent
    s.discard()  # after a commit: does not touch the output
    assert names(tmp_path) == [final.name]


def test_discard_does_not_block_a_later_group(tmp_path):
    out, report = paths(tmp_path)
    s_rep = F.stage_json(report, REPORT)
    s_rep.discard()
    s_out = F.stage(out, ARRAYS, {})
    with pytest.raises(ValueError, match="discarded"):
        F.commit_all([s_out, s_rep])  # refused before committing anything
    assert s_out.state == "staged" and not out.exists()
    s_out.discard()
    assert snapshot(tmp_path) == {}


# -- signals --------------------------------------------------------------------------------


def _signal_after_first_commit(monkeypatch, first: Path, sig: int) -> None:
    real = outputs.commit

    def commit_then_signal(staging, final, **kw):
        real(staging, final, **kw)
        if final == first:
            os.kill(os.getpid(), sig)  # arrives between the two commits

    monkeypatch.setattr(outputs, "commit", commit_then_signal)


def test_sigint_between_the_commits_is_delivered_after_the_last(tmp_path, monkeypatch):
    out, report = paths(tmp_path)
    seen = []

    def handler(signum, frame):
        seen.append((signum, out.exists(), report.exists()))

    previous = signal.signal(signal.SIGINT, handler)
    try:
        staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT)]
        _signal_after_first_commit(monkeypatch, out, signal.SIGINT)
        F.commit_all(staged)
        assert signal.getsignal(signal.SIGINT) is handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    # Delivered once, and only when both were in place (without the group deferral the
    # handler would have seen the output without its report).
    assert seen == [(signal.SIGINT, True, True)]
    assert_committed(out, report)


def test_default_sigint_between_the_commits_raises_after_both(tmp_path, monkeypatch):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    out, report = paths(tmp_path, ".h5")
    with F.stage(out, ARRAYS, {}) as s_out, F.stage_json(report, REPORT) as s_rep:
        _signal_after_first_commit(monkeypatch, out, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as exc:
            F.commit_all([s_out, s_rep])
    # The CLI can tell "interrupted after writing both" from "nothing was written".
    assert exc.value.rankwise_committed == [str(out), str(report)]
    assert_committed(out, report)
    assert names(tmp_path) == sorted([out.name, report.name])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_handler_that_raises_is_deferred_to_the_end_of_the_group(tmp_path, monkeypatch):
    class Terminated(BaseException):
        pass

    def on_term(signum, frame):
        raise Terminated

    out, report = paths(tmp_path, ".zarr")
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT)]
        _signal_after_first_commit(monkeypatch, out, signal.SIGTERM)
        with pytest.raises(Terminated):
            F.commit_all(staged)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert_committed(out, report)


def test_sigint_while_staging_the_report_commits_neither(tmp_path, monkeypatch):
    out, report = paths(tmp_path, ".h5")
    real = atomic.fsync_path

    def fsync_then_signal(path):
        real(path)
        if atomic.STAGING_TAG in path.name and path.name.startswith(f".{report.name}"):
            os.kill(os.getpid(), signal.SIGINT)  # deferred to the end of stage_json

    monkeypatch.setattr(atomic, "fsync_path", fsync_then_signal)
    with pytest.raises(KeyboardInterrupt):
        with F.stage(out, ARRAYS, {}) as s_out, F.stage_json(report, REPORT) as s_rep:
            F.commit_all([s_out, s_rep])
    assert snapshot(tmp_path) == {}


def test_a_pending_signal_is_not_dropped_when_a_commit_fails(tmp_path, monkeypatch):
    out, report = paths(tmp_path)
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        staged = [F.stage(out, ARRAYS, {}), F.stage_json(report, REPORT)]
        real = outputs.commit

        def signal_then_fail(staging, final, **kw):
            if final == report:
                os.kill(os.getpid(), signal.SIGINT)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(staging, final, **kw)

        monkeypatch.setattr(outputs, "commit", signal_then_fail)
        with pytest.raises(F.StorageError, match="No space left"):
            F.commit_all(staged)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert names(tmp_path) == [out.name]


CHILD = """
import signal, sys
import numpy as np
import rankwise.formats as F
from rankwise.formats import outputs

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
out, report, where = sys.argv[1:]
real = outputs.commit


def wait_for_parent(label):
    print(label, flush=True)
    sys.stdin.readline()  # the parent sends SIGINT, then this line


def commit(staging, final, **kw):
    real(staging, final, **kw)
    if where == "between-commits" and str(final) == out:
        wait_for_parent("between")


outputs.commit = commit
arrays = {"U": np.arange(12.0).reshape(4, 3), "S": np.array([3.0, 2.0, 1.0])}
report_obj = {"schema": "rankwise-report/1", "rank": 3, "error": 0.25}
with F.stage(out, arrays, {}) as s_out, F.stage_json(report, report_obj) as s_rep:
    if where == "before-commit":
        wait_for_parent("staged")
    F.commit_all([s_out, s_rep])
print("done", flush=True)
"""


@pytest.mark.parametrize("where, committed", [("before-commit", False), ("between-commits", True)])
def test_real_sigint_commits_both_or_neither(tmp_path, where, committed):
    out, report = paths(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(report), where],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()  # blocks until the child is at the moment under test
        assert line.strip() in ("staged", "between"), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "done" not in stdout and "KeyboardInterrupt" in stderr
    if committed:
        assert_committed(out, report)
        assert names(tmp_path) == sorted([out.name, report.name])
    else:
        assert snapshot(tmp_path) == {}
