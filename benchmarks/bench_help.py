"""`rankwise --help` start-up time (target ≤ 0.3 s), next to a bare `python -c pass`: the floor
any Python CLI pays. Heavy libraries must be imported only by the commands that use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import best_of, environment, save

EXE = Path(sys.executable).with_name("rankwise")


def main():
    def run(*argv):
        return lambda: subprocess.run([*argv], capture_output=True, check=True)

    python, _ = best_of(run(sys.executable, "-c", "pass"), repeats=7)
    helps = {}
    for args in (["--help"], ["svd", "--help"], ["rob", "pod", "--help"], ["--version"]):
        helps[" ".join(args)], _ = best_of(run(str(EXE), *args), repeats=7)
    out = {"python_startup_seconds": python, "seconds": helps,
           "ratio_to_python_startup": {k: v / python for k, v in helps.items()},
           "target_seconds": 0.3, "environment": environment()}  # fmt: skip
    for k, v in helps.items():
        print(f"rankwise {k}: {v:.3f} s ({v / python:.1f}× a bare python start, {python:.3f} s)")
    save("help", out)


if __name__ == "__main__":
    main()
