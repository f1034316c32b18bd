"""Inputs that are neither regular files nor directories are refused before they are opened.

Opening a FIFO for reading blocks until a writer appears, so without the check these tests
would hang: every test runs under a SIGALRM guard that turns a hang into a failure.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest

import rankwise.formats as F

GUARD_SECONDS = 10


class Hung(BaseException):
    """Not an OSError (TimeoutError is one), so no handler in the code under test catches it."""


@pytest.fixture(autouse=True)
def no_hang():
    def on_alarm(signum, frame):
        raise Hung(f"blocked for {GUARD_SECONDS} s opening a non-regular file")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(GUARD_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _refused(path: Path | str, kind: str) -> None:
    for call in (F.open, F.detect_format, F.list_arrays, F.read_result):
        with pytest.raises(F.InputMissingError) as err:
            call(path)
        assert str(err.value) == f"{path}: not a regular file ({kind}); refusing to read it"


@pytest.mark.parametrize("name", ["data.npy", "data.h5", "data.mtx", "data.npz", "data"])
def test_fifo_is_refused_without_blocking(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    _refused(fifo, "a named pipe")
    with pytest.raises(F.InputMissingError, match="not a regular file"):
        F.open(f"{fifo}:/x" if name.endswith(".h5") else f"{fifo}:x")


def test_symlink_to_a_fifo_is_followed_and_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", tmp_path / "link.npy")
    _refused(tmp_path / "link.npy", "a named pipe")


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.npy"
    if len(os.fsencode(path)) >= 100:  # AF_UNIX path limit
        pytest.skip("temporary path too long for a unix socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        _refused(path, "a socket")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_character_device_is_refused():
    # /dev/zero would never end: a reader would fill memory with zeros.
    _refused("/dev/zero", "a character device")


def test_dangling_symlink_is_missing(tmp_path):
    os.symlink(tmp_path / "nowhere.npy", tmp_path / "dangling.npy")
    with pytest.raises(F.InputMissingError, match="no such file or directory"):
        F.open(tmp_path / "dangling.npy")


def test_regular_files_and_directories_still_open(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(3.0))
    os.symlink(tmp_path / "a.npy", tmp_path / "link.npy")
    np.testing.assert_array_equal(F.open(tmp_path / "link.npy").read(), np.arange(3.0))
    (tmp_path / "plain").mkdir()
    with pytest.raises(F.UsageError, match="not a Zarr store"):
        F.open(tmp_path / "plain")


@pytest.mark.parametrize("victim_kind", ["fifo", "symlink-to-fifo", "dangling-symlink"])
def test_zarr_chunk_that_is_not_a_regular_file_is_refused(tmp_path, victim_kind):
    import zarr

    store = tmp_path / "s.zarr"
    z = zarr.create_array(
        store=store, shape=(4,), chunks=(2,), dtype="f8", config={"write_empty_chunks": True}
    )
    z[...] = np.arange(1.0, 5.0)
    victim = store / "c" / "1"
    os.remove(victim)
    if victim_kind == "fifo":
        os.mkfifo(victim)
        kind = "a named pipe"
    elif victim_kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", victim)
        kind = "a named pipe"
    else:
        os.symlink(tmp_path / "nowhere", victim)
        kind = "a dangling symbolic link"
    with pytest.raises(F.DataError) as err:
        F.open(store)
    assert str(err.value) == f"{store}: stored chunk 'c/1' is not a regular file ({kind})"
    (entry,) = F.list_arrays(store)["arrays"]
    assert entry["notes"] == [f"refused: stored chunk 'c/1' is not a regular file ({kind})"]
