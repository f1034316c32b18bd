"""Run many rankwise command lines cheaply: import once, fork one child per command.

Each child runs the real entry point (rankwise.cli.main.main) with its own stdout/stderr files
and working directory, so its exit code, stderr and even a crash (a signal) are observed as
from a separate process, without paying the interpreter start-up for each input.

stdin: JSON list of {"argv": [...], "cwd": "..."}; stdout: JSON {"results": [{"code": exit
code or -signal, "stderr": text}, ...], "growth_kib": largest child peak RSS above the parent's}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

TIMEOUT = 60.0  # seconds per command


def _preload() -> None:
    # Imported before forking so each child starts warm; nothing here starts a thread.
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import scipy.io  # noqa: F401
    import scipy.linalg  # noqa: F401
    import scipy.sparse  # noqa: F401
    import threadpoolctl  # noqa: F401
    import zarr  # noqa: F401

    import rankwise.cli.main  # noqa: F401
    import rankwise.core  # noqa: F401
    import rankwise.core.pod  # noqa: F401
    import rankwise.core.svd  # noqa: F401
    import rankwise.core.wsvd  # noqa: F401
    import rankwise.formats.hdf5  # noqa: F401
    import rankwise.formats.mtx  # noqa: F401
    import rankwise.formats.npz  # noqa: F401
    import rankwise.formats.zarr_store  # noqa: F401


def _warm_up() -> None:
    """One small command in the parent, so each child does not pay the first call's cost
    (command tables, lazy imports)."""
    import contextlib
    import tempfile

    import numpy as np

    from rankwise.cli.main import main

    with tempfile.TemporaryDirectory() as d, open(os.devnull, "w") as null:
        np.save(os.path.join(d, "a.npy"), np.arange(12.0).reshape(4, 3))
        out = os.path.join(d, "o.npz")
        with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            with contextlib.suppress(SystemExit):
                main(["svd", os.path.join(d, "a.npy"), "-o", out, "--rank", "1", "-q"])


def _child(argv: list[str], cwd: str) -> None:
    os.chdir(cwd)
    err = os.open("stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    out = os.open(os.devnull, os.O_WRONLY)
    os.dup2(err, 2)
    os.dup2(out, 1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    sys.stdout = os.fdopen(1, "w")
    code = 1
    try:
        from rankwise.cli.main import main

        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter would do: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)


def run(cases: list[dict], jobs: int = 2) -> list[dict]:
    """Run the cases, `jobs` children at a time; results in the order of `cases`."""
    results: list[dict | None] = [None] * len(cases)
    running: dict[int, tuple[int, float]] = {}  # pid -> (case index, start time)
    todo = list(enumerate(cases))
    while todo or running:
        while todo and len(running) < jobs:
            i, case = todo.pop(0)
            pid = os.fork()
            if pid == 0:
                _child(case["argv"], case["cwd"])
            running[pid] = (i, time.monotonic())
        for pid, (i, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done and time.monotonic() - started > TIMEOUT:
                os.kill(pid, signal.SIGKILL)  # a hang: reported as killed by signal 9
                done, status = os.waitpid(pid, 0)
            if done:
                del running[pid]
                with open(os.path.join(cases[i]["cwd"], "stderr.txt"), errors="replace") as f:
                    results[i] = {
                        "code": os.waitstatus_to_exitcode(status),
                        "stderr": f.read(),
                        "seconds": time.monotonic() - started,
                    }
        time.sleep(0.002)
    return results  # type: ignore[return-value]


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


if __name__ == "__main__":
    import gc
    import resource

    _preload()
    _warm_up()
    gc.freeze()  # children's collections would touch, and so copy, every inherited page
    base = _rss_kib()  # children start with the parent's pages: their growth is above this
    results = run(json.load(sys.stdin))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"results": results, "growth_kib": max(peak - base, 0)}))
