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


def untimed(tree):
    """``tree`` without wall-clock figures (keys ending in ``seconds``), which differ between
    any two runs: for comparing the details of results."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if not k.endswith("seconds")}
    if isinstance(tree, list):
        return [untimed(v) for v in tree]
    return tree


def load_report(path) -> dict:
    from rankwise.cli.schema import validate

    rep = json.loads(Path(path).read_text())
    validate(rep)
    return rep


def spy_on(monkeypatch, module, name):
    """Record the keyword arguments the CLI passes to ``module.name`` (which still runs)."""
    seen = {}
    real = getattr(module, name)

    def spy(*args, **kwargs):
        seen.update(kwargs, _args=args)
        if hasattr(kwargs.get("rng"), "bit_generator"):  # its state at the call (consumed)
            seen["_rng_state"] = kwargs["rng"].bit_generator.state
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def run_in_process(tmp_path, monkeypatch, argv):
    """Run the CLI in this process (so spies see the core calls); it must exit 0."""
    import pytest

    from rankwise.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
