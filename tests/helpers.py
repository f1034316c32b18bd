"""Test helpers (importable as `helpers`): run the installed `rankwise`, load reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data"


def rankwise_exe() -> str:
    exe = Path(sys.executable).with_name("rankwise")
    if exe.exists():
        return str(exe)
    found = shutil.which("rankwise")
    assert found, "the rankwise console script is not installed (pip install -e .)"
    return found


class CLI:
    def __init__(self, cwd: Path):
        self.cwd = cwd

    def __call__(self, *args, expect: int | None = 0, env=None, timeout=300, input=None):
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [rankwise_exe(), *map(str, args)],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            input=input,
        )
        if "--debug" not in map(str, args):
            assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (proc.returncode, proc.stdout, proc.stderr)
        return proc


def load_report(path) -> dict:
    from rankwise.cli.schema import validate

    rep = json.loads(Path(path).read_text())
    validate(rep)
    return rep
