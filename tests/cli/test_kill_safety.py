"""Kill safety of every command that writes (issue 9): a SIGKILL at any moment leaves either no
output or a complete, valid one, never a partial file; a report only next to the complete output
it describes; with --force the old output byte for byte, or the new one complete.

The installed CLI runs as a subprocess with RANKWISE_TEST_PAUSE_AT=<point>
(formats/atomic.pause_point): it stops itself (SIGSTOP) there and the test signals it at that
exact moment:

    read, compute     the start of the read / compute step (cli/run.py, Run.step)
    output-partial    the output's first array is in its staging path, the others are not
    staged            output and report written and synced at their staging paths
    between-commits   the output renamed into place, its report not yet

"mid-compute" resumes a process paused at `compute` and kills it once it has burnt CPU time
in the solver (its own CPU ticks, not wall-clock time). Outputs are opened with h5py, zarr,
zipfile and numpy, never with rankwise's own readers.

What a kill between the two commits leaves is an output without its report: the report is
written last (DESIGN §3), so that the report never describes an output that is not there.
The next run names that state (exit 73, "without its report") and --force replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from helpers import rankwise_exe

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process states from /proc"
)

PAUSE_ENV = "RANKWISE_TEST_PAUSE_AT"
TIMEOUT = 180  # generous: two shared cores, other suites running
MID_TICKS = 10  # CPU ticks (1/100 s) spent in the solver before a mid-compute kill
M, N = 400, 300  # the matrix
T = (30, 28, 26)  # the tensor


# -- inputs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    """Inputs (numpy), and factors/bases made by the CLI for the commands that read them."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    mat = rng.random((M, 12)) @ rng.random((12, N)) + 0.01 * rng.random((M, N))
    np.save(d / "mat.npy", mat)
    np.save(d / "half.npy", mat[:, : N // 2])
    np.save(d / "half2.npy", mat[:, N // 2 :])
    miss = mat.copy()
    miss[rng.random(mat.shape) < 0.3] = np.nan
    np.save(d / "miss.npy", miss)
    factors = (rng.standard_normal((n, 4)) for n in T)
    np.save(d / "ten.npy", np.einsum("ir,jr,kr->ijk", *factors) + 0.01 * rng.standard_normal(T))
    # Slow runs for the mid-compute kills (they are killed long before they end): a flat
    # spectrum that the adaptive randomized SVD grows 4 columns at a time, NMF and CP of
    # structureless data with --tol 0.
    np.save(d / "flat.npy", rng.standard_normal((1500, 800)))
    np.save(d / "pos.npy", rng.random((1500, 800)))
    np.save(d / "rten.npy", rng.standard_normal((60, 60, 60)))
    for args in (
        ["rob", "pod", "mat.npy", "-o", "pod.h5", "--rank", "6", "--threads", "1"],
        ["rob", "pod", "half.npy", "-o", "pod2.h5", "--rank", "6", "--threads", "1"],
        ["svd", "mat.npy", "-o", "svd.h5", "--rank", "5", "--threads", "1"],
    ):
        run_ok(args, d)
    return d


def run_ok(args, cwd: Path, *, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [rankwise_exe(), *map(str, args)],
        cwd=cwd,
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == expect, (args, proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# -- the commands -------------------------------------------------------------------------


@dataclass
class Case:
    command: str  # as in the report ("rob pod")
    args: list[str]  # after the command, without -o (input names are files of `inp`)
    ext: str | None  # output format; None: a report only (`error`)
    expected: dict[str, tuple[int, ...]]  # every array of the output and its shape
    slow: list[str] = field(default_factory=list)  # args of a long run (mid-compute kills)
    old: list[str] = field(default_factory=list)  # args of a different earlier result

    def argv(self, inp: Path, out: Path | None, report: Path) -> list[str]:
        return self.argv_with(self.args, inp, out, report)

    def argv_with(self, args, inp: Path, out: Path | None, report: Path) -> list[str]:
        resolved = [str(inp / a) if (inp / a).exists() else a for a in args]
        where = ["-o", out] if out is not None else ["--report", report]
        return [*self.command.split(), *resolved, *where, "--threads", "1"]


def _svd(k: int) -> dict:
    return {"U": (M, k), "S": (k,), "Vt": (k, N)}


def _cp(r: int) -> dict:
    return {"weights": (r,), **{f"factors/{i}": (n, r) for i, n in enumerate(T)}}


def _basis(k: int) -> dict:
    return {"basis": (M, k), "singular_values": (k,)}


# The full moments matrix: one command per output format (a direct, an iterative matrix and an
# iterative tensor method).
FULL = {
    "svd": Case(
        "svd", ["mat.npy", "--rank", "5", "--spectral-iters", "0"], ".h5", _svd(5),
        slow=["flat.npy", "--tol", "1e-9", "--method", "randomized", "--block-size", "4"],
        old=["mat.npy", "--rank", "3"],
    ),
    "nmf": Case(
        "nmf", ["mat.npy", "--rank", "5"], ".npz", {"W": (M, 5), "H": (5, N)},
        slow=["pos.npy", "--rank", "20", "--tol", "0", "--max-iter", "1000000"],
        old=["mat.npy", "--rank", "2"],
    ),
    "cp": Case(
        "cp", ["ten.npy", "--rank", "4"], ".zarr", _cp(4),
        slow=["rten.npy", "--rank", "20", "--tol", "0", "--max-iter", "1000000"],
        old=["ten.npy", "--rank", "2"],
    ),
}  # fmt: skip

# Every other command that writes, killed while its output is half written (the report-only
# `error` while its report is staged); the formats rotate.
REST = {
    "kpsvd": Case(
        "kpsvd", ["mat.npy", "--block", "20x15", "--rank", "3"], ".npz",
        {"S": (3,), "A": (3, 20, 15), "B": (3, M // 20, N // 15)},
    ),
    "cur": Case(
        "cur", ["mat.npy", "--rank", "5"], ".zarr",
        {"C": (M, 5), "U": (5, 5), "R": (5, N), "rows": (5,), "cols": (5,)},
    ),
    "tucker": Case(
        "tucker", ["ten.npy", "--ranks", "4,3,2"], ".h5",
        {"core": (4, 3, 2), "factors/0": (T[0], 4), "factors/1": (T[1], 3),
         "factors/2": (T[2], 2)},
    ),
    "tt": Case(
        "tt", ["ten.npy", "--max-rank", "4"], ".npz",
        {"cores/0": (1, T[0], 4), "cores/1": (4, T[1], 4), "cores/2": (4, T[2], 1)},
    ),
    "complete": Case("complete", ["miss.npy", "--rank", "5"], ".zarr", _svd(5)),
    "rob pod": Case("rob pod", ["mat.npy", "--rank", "6"], ".h5", _basis(6)),
    "rob enrich": Case("rob enrich", ["pod2.h5", "half2.npy", "--rank", "6"], ".npz", _basis(6)),
    "rob merge": Case("rob merge", ["pod.h5", "pod2.h5", "--rank", "6"], ".zarr", _basis(6)),
    "rob local": Case(
        "rob local", ["mat.npy", "--clusters", "2", "--rank", "3"], ".h5",
        {"basis/0": (M, 3), "basis/1": (M, 3), "singular_values/0": (3,),
         "singular_values/1": (3,), "labels": (N,), "medoids": (M, 2)},
    ),
    "rob project": Case("rob project", ["pod.h5", "mat.npy"], ".npz", {"projection_errors": (N,)}),
    "rob deim": Case("rob deim", ["pod.h5"], ".zarr", {"indices": (6,)}),
    "reconstruct": Case("reconstruct", ["svd.h5"], ".h5", {"reconstruction": (M, N)}),
    "error": Case("error", ["svd.h5", "mat.npy"], None, {}),
}  # fmt: skip


def paths(d: Path, case: Case) -> tuple[Path | None, Path]:
    stem = case.command.replace(" ", "_")
    out = d / f"{stem}{case.ext}" if case.ext else None
    return out, d / f"{stem}.report.json"


# -- processes ----------------------------------------------------------------------------


def _env(pause: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    if pause:
        env[PAUSE_ENV] = pause
    return env


def _default_sigint() -> None:
    # A shell may start the test run with SIGINT ignored; the CLI must see a real one.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()  # [state, ppid, …]; comm may hold spaces


def _cpu_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else -1  # utime + stime


def _wait(proc: subprocess.Popen, done, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"never reached {what}")
        time.sleep(0.005)


def interrupt(argv, cwd: Path, moment: str, sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Run `rankwise argv`, send `sig` at `moment`; the exit status and stderr."""
    pause = "compute" if moment == "mid-compute" else moment
    proc = subprocess.Popen(
        [rankwise_exe(), *map(str, argv)],
        cwd=cwd,
        env=_env(pause),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        _wait(proc, lambda: (_stat(proc.pid) or ["?"])[0] == "T", f"pause point {pause}")
        if moment == "mid-compute":
            start = _cpu_ticks(proc.pid)
            os.kill(proc.pid, signal.SIGCONT)
            _wait(proc, lambda: _cpu_ticks(proc.pid) >= start + MID_TICKS, "mid-compute")
        os.kill(proc.pid, sig)
        if sig != signal.SIGKILL:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process handles it once resumed
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


# -- what is on disk ----------------------------------------------------------------------


def tree(path: Path) -> bytes | dict[str, bytes | None]:
    """A file's bytes, or every entry of a directory with its bytes."""
    if path.is_file():
        return path.read_bytes()
    return {
        str(p.relative_to(path)): None if p.is_dir() else p.read_bytes()
        for p in sorted(path.rglob("*"))
    }


def litter(d: Path, *finals: Path | None) -> list[str]:
    prefixes = tuple(f".{f.name}.rankwise-" for f in finals if f is not None)
    return sorted(p.name for p in d.iterdir() if p.name.startswith(prefixes))


def listing(d: Path) -> set[str]:
    # Checkpoints of the iterative commands are another feature's files, not outputs.
    return {p.name for p in d.iterdir() if ".checkpoint.npz" not in p.name}


def read_output(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every array (by its documented name) and the root attributes, via the reference
    libraries; raises on a truncated or damaged file."""
    arrays: dict[str, np.ndarray] = {}
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = obj[()]

            f.visititems(visit)
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in f.attrs.items()}
    elif path.suffix == ".npz":
        with zipfile.ZipFile(path) as z:
            assert z.testzip() is None  # every member's CRC
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "__attrs__"}
            attrs = json.loads(str(z["__attrs__"][()]))
    else:
        group = zarr.open_group(path, mode="r")
        for name, obj in group.members(max_depth=None):
            if isinstance(obj, zarr.Array):
                assert obj.nchunks_initialized == obj.nchunks, name  # no chunk missing
                arrays[name] = obj[...]
        attrs = dict(group.attrs)
    return arrays, attrs


def assert_complete(out: Path, case: Case) -> None:
    arrays, attrs = read_output(out)
    assert {k: a.shape for k, a in arrays.items()} == case.expected
    assert all(np.isfinite(a).all() for a in arrays.values())
    assert attrs["kind"] == case.command


def assert_report(report: Path, out: Path | None, case: Case) -> None:
    """The report parses and describes the output that is at its path."""
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert rep["schema"] == "rankwise-report/1" and rep["command"] == case.command
    assert rep["output"]["report"] == str(report.resolve())
    if out is None:
        assert rep["output"]["path"] is None
        return
    assert rep["output"]["path"] == str(out.resolve())
    arrays, _ = read_output(out)
    described = {k: tuple(v["shape"]) for k, v in rep["output"]["arrays"].items()}
    assert described == {k: a.shape for k, a in arrays.items()}


def assert_safe(d: Path, out: Path | None, report: Path, case: Case, old=None) -> str:
    """The invariants after any kill; returns what is at the output path: "none", "old"
    (byte-identical to before) or "new" (complete and valid)."""
    left = set(litter(d, out, report))
    assert listing(d) - left <= {p.name for p in (out, report) if p is not None}
    state = "none"
    if out is not None and os.path.lexists(out):
        if old is not None and tree(out) == old[0]:
            state = "old"
        else:
            assert_complete(out, case)
            state = "new"
    if report.exists():
        if old is not None and state == "old" and report.read_bytes() == old[1]:
            return state  # the untouched earlier pair
        assert state == "new" or out is None, "a report without its output"
        assert_report(report, out, case)
    return state


# -- SIGKILL: the full matrix of moments ---------------------------------------------------

MOMENTS = ["read", "mid-compute", "output-partial", "staged", "between-commits"]


@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("name", list(FULL))
def test_sigkill_at_every_moment(tmp_path, inp, name, moment):
    case = FULL[name]
    out, report = paths(tmp_path, case)
    args = case.slow if moment == "mid-compute" else case.args
    code, err = interrupt(case.argv_with(args, inp, out, report), tmp_path, moment)
    assert code == -signal.SIGKILL, err
    state = assert_safe(tmp_path, out, report, case)
    if moment in ("read", "mid-compute"):
        assert state == "none" and not report.exists()
        assert litter(tmp_path, out, report) == []  # killed before anything was staged
        return
    if moment == "staged":
        assert state == "none" and not report.exists()
        assert litter(tmp_path, out) != [] and litter(tmp_path, report) != []
        return
    if moment == "output-partial":
        assert state == "none" and not report.exists()
        assert litter(tmp_path, out) != []  # the kill did land while the output was staged
        # The next run removes what the killed one left and writes both.
        run_ok(case.argv(inp, out, report), tmp_path)
    else:
        # The output is committed first: complete, without its report (written last).
        assert state == "new" and not report.exists()
        assert litter(tmp_path, out) == [] and litter(tmp_path, report) != []
        if name != "svd":
            return  # what the next run does does not depend on the command
        proc = run_ok(case.argv(inp, out, report), tmp_path, expect=73)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "without its report" in proc.stderr and "--force" in proc.stderr
        run_ok([*case.argv(inp, out, report), "--force"], tmp_path)
    assert litter(tmp_path, out, report) == []
    assert listing(tmp_path) == {out.name, report.name}
    assert_complete(out, case)
    assert_report(report, out, case)


# -- SIGKILL with --force over an earlier result -------------------------------------------


@pytest.fixture(scope="module")
def olds(tmp_path_factory, inp) -> dict[str, Path]:
    """An earlier, different result of each FULL command (its own directory)."""
    made = {}
    for name, case in FULL.items():
        d = tmp_path_factory.mktemp(f"old-{name}")
        out, report = paths(d, case)
        run_ok(case.argv_with(case.old, inp, out, report), d)
        made[name] = d
    return made


@pytest.mark.parametrize("moment", ["output-partial", "staged", "between-commits"])
@pytest.mark.parametrize("name", list(FULL))
def test_sigkill_with_force_keeps_the_old_output_or_the_new_one(tmp_path, inp, olds, name, moment):
    case = FULL[name]
    out, report = paths(tmp_path, case)
    for p in olds[name].iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp_path / p.name)
    old = (tree(out), report.read_bytes())
    code, err = interrupt([*case.argv(inp, out, report), "--force"], tmp_path, moment)
    assert code == -signal.SIGKILL, err
    state = assert_safe(tmp_path, out, report, case, old=old)
    if moment == "between-commits":
        # New output; the old report was removed before the first rename, so it is never
        # left next to an output it does not describe.
        assert state == "new" and not report.exists()
    else:
        assert state == "old" and report.read_bytes() == old[1]


# -- SIGKILL mid-write for every other command, then the next run --------------------------


@pytest.mark.parametrize("name", list(REST))
def test_sigkill_mid_write_then_rerun(tmp_path, inp, name):
    case = REST[name]
    out, report = paths(tmp_path, case)
    moment = "output-partial" if out is not None else "staged"
    code, err = interrupt(case.argv(inp, out, report), tmp_path, moment)
    assert code == -signal.SIGKILL, err
    assert assert_safe(tmp_path, out, report, case) == "none" and not report.exists()
    assert litter(tmp_path, out, report) != []  # killed while staging
    run_ok(case.argv(inp, out, report), tmp_path)
    assert litter(tmp_path, out, report) == []  # the next run removed the dead run's files
    assert listing(tmp_path) == {p.name for p in (out, report) if p is not None}
    if out is not None:
        assert_complete(out, case)
    assert_report(report, out, case)


# -- SIGINT / SIGTERM: deferred while writing, then a full commit or a clean removal -------

SIGNALS = [
    # signal, moment, format, --force over an earlier result, exit code, committed
    (signal.SIGINT, "compute", ".h5", False, 130, False),
    (signal.SIGTERM, "output-partial", ".h5", False, 143, False),
    (signal.SIGINT, "output-partial", ".zarr", False, 130, False),
    (signal.SIGTERM, "output-partial", ".npz", True, 143, False),
    (signal.SIGTERM, "staged", ".npz", False, 143, False),
    (signal.SIGINT, "between-commits", ".h5", False, 130, True),
    (signal.SIGTERM, "between-commits", ".zarr", True, 143, True),
]


@pytest.mark.parametrize(
    "sig, moment, ext, force, code, committed",
    SIGNALS,
    ids=[f"{s.name}-{m}-{e[1:]}{'-force' if f else ''}" for s, m, e, f, _, _ in SIGNALS],
)
def test_sigint_sigterm_commit_all_or_remove_everything(
    tmp_path, inp, sig, moment, ext, force, code, committed
):
    case = Case("svd", ["mat.npy", "--rank", "5", "--spectral-iters", "0"], ext, _svd(5))
    out, report = paths(tmp_path, case)
    old = None
    if force:
        run_ok(case.argv_with(["mat.npy", "--rank", "2"], inp, out, report), tmp_path)
        old = (tree(out), report.read_bytes())
    argv = [*case.argv(inp, out, report), *(["--force"] if force else [])]
    got, err = interrupt(argv, tmp_path, moment, sig)
    assert got == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert litter(tmp_path, out, report) == []  # staging paths removed, nothing left behind
    state = assert_safe(tmp_path, out, report, case, old=old)
    # the message says which: complete (the signal was held until both were in place) or none
    assert ("they are complete" in err and str(out) in err) if committed else (
        "no output was written" in err), err  # fmt: skip
    if committed:
        assert state == "new" and report.exists()
    elif force:
        assert state == "old" and report.read_bytes() == old[1]
    else:
        assert listing(tmp_path) == set()
