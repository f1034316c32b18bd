"""--hdf5-locking: a file held open for writing by another process is refused with a clear
message (exit 74) while locking is on or auto, and readable with --hdf5-locking off."""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
from helpers import load_report


def test_locked_input_exit_74_and_off_reads_it(cli, tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["a"] = np.arange(60.0).reshape(12, 5)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); "
         "print('open', flush=True); time.sleep(120)", str(tmp_path / "a.h5")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"  # the writer holds its lock now
        for mode in ([], ["--hdf5-locking", "on"]):
            proc = cli("svd", "a.h5:/a", "-o", "o.h5", "--rank", "1", *mode, expect=74)
            assert "locked by another process" in proc.stderr and "--hdf5-locking off" in \
                proc.stderr and proc.stderr.count("\n") == 1  # fmt: skip
            assert not (tmp_path / "o.h5").exists()
        # the environment variable does not override an explicit --hdf5-locking on
        proc = cli("svd", "a.h5:/a", "-o", "o.h5", "--rank", "1", "--hdf5-locking", "on",
                   env={"HDF5_USE_FILE_LOCKING": "FALSE"}, expect=74)  # fmt: skip
        cli("svd", "a.h5:/a", "-o", "o.h5", "--rank", "1", "--hdf5-locking", "off", "-q")
        rep = load_report(tmp_path / "o.report.json")
        assert rep["parameters"]["hdf5_locking"] == "off"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    t0 = time.monotonic()
    cli("svd", "a.h5:/a", "-o", "p.h5", "--rank", "1", "-q")  # free again: auto reads it
    assert time.monotonic() - t0 < 60
