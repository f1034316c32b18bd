"""examples/Makefile: the decompose → check → summarise pipeline runs, and a failed error
check (exit 3) stops make before the later targets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, load_report

MAKE = shutil.which("make")


def _make(tmp_path, *args):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ["PATH"]])}  # fmt: skip
    return subprocess.run([MAKE, "-f", str(REPO / "examples" / "Makefile"),
                           f"SAMPLES={REPO / 'sample_data'}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.skipif(MAKE is None, reason="GNU make is not installed")
def test_makefile_pipeline_runs_and_stops_on_a_failed_check(tmp_path):
    proc = _make(tmp_path)
    assert proc.returncode == 0, proc.stderr
    build = tmp_path / "build"
    summary = (build / "summary.txt").read_text()
    assert "rankwise svd" in summary and "rankwise rob pod" in summary
    err = load_report(build / "svd.error.json")
    assert err["metrics"]["passed"] and err["metrics"]["relative_frobenius_error"] <= 1e-5
    assert load_report(build / "pod.project.json")["metrics"]["worst"] <= 1e-5
    # a second run has nothing to do: every target is up to date
    again = _make(tmp_path)
    assert again.returncode == 0 and "rankwise" not in again.stdout
    # an error check that fails stops the pipeline (make exits non-zero, no .checked stamp)
    proc = _make(tmp_path, "OUT=strict", "MAX_ERROR=1e-12")
    assert proc.returncode != 0 and "check failed" in proc.stderr
    assert (tmp_path / "strict" / "svd.h5").exists()
    assert not (tmp_path / "strict" / "svd.checked").exists()
    assert not (tmp_path / "strict" / "summary.txt").exists()


def test_the_readme_python_api_example_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API") :]
    code = section[
        section.index("```python\n") + 10 : section.index("```", section.index("```python") + 9)
    ]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["8", "True", "['factors/0',", "'factors/1',", "'factors/2',",
                                   "'weights']", "[3,", "3,", "3]", "[1,", "3,", "3,", "1]",
                                   "True", "8", "8"]  # fmt: skip
