"""examples/slurm/svd-dask.sbatch runs end to end with a stand-in for srun (tasks as local
processes; the scheduler and workers on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import REPO, load_report

from rankwise.formats import read_result

pytest.importorskip("distributed")


@pytest.mark.slow
def test_slurm_batch_script_runs_svd_on_its_own_dask_cluster(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3000, 5)) @ rng.standard_normal((5, 40))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["a"] = a
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(REPO / "tests" / "examples"),
                                 str(Path(sys.executable).parent), os.environ["PATH"]]),
        "INPUT": "a.h5:/a", "OUTPUT": "svd.h5", "RANK": "5", "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "3", "SLURM_CPUS_PER_TASK": "1", "SLURM_MEM_PER_CPU": "1200",
        "DASK_HOST": "127.0.0.1",
    }  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "examples" / "slurm" / "svd-dask.sbatch")],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    arrays, _ = read_result(tmp_path / "svd.h5")
    approx = (arrays["U"] * arrays["S"]) @ arrays["Vt"]
    assert np.linalg.norm(a - approx) <= 1e-10 * np.linalg.norm(a)  # an exact rank-5 matrix
    rep = load_report(tmp_path / "svd.report.json")
    eng = rep["engine"]
    assert eng["cluster"] == "external" and eng["scheduler"].startswith("tcp://127.0.0.1:")
    assert eng["workers"] >= 1
    assert not (tmp_path / "dask-scheduler-4242.json").exists()  # cleaned up
