"""Hostile inputs through the command line: generated and mutated files of every format, and
hostile side inputs (NaN/Inf data, weights, masks and mass matrices of the wrong shape or
sign), run by `rankwise svd` / `rankwise rob pod`.

Each command runs in its own process (forked from one warm interpreter by cli_driver.py: the
real entry point, exit code and stderr, and a crash shows as a signal); a few also run through
the installed console script to tie the two together. The property: exit code 0, 2, 65, 66
or 74; no traceback; at most one line on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzz import test_fuzz_hdf5, test_fuzz_mtx, test_fuzz_npz, test_fuzz_zarr
from fuzz.fuzzkit import COUNTS, MEMORY_LIMIT, PEAKS, mutated, write_tree
from fuzz.gen_npy import header_end, npy_files
from fuzz.test_fuzz_npy import BASES as NPY_BASES
from helpers import rankwise_exe
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ALLOWED = {0, 2, 65, 66, 74}
PER_FORMAT = 20
DRIVER = Path(__file__).with_name("cli_driver.py")
SVD = ["svd", "{in}", "-o", "out.npz", "--rank", "2", "-q", "--max-memory", "256M", "--force"]


def collect(strategy, n: int) -> list:
    """n distinct values of `strategy`, the same on every run."""
    out: list = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def gather(value):
        out.append(value)

    gather()
    return out[:n]


def _one_of_bases(bases, hot):
    return st.sampled_from(range(len(bases))).flatmap(
        lambda i: mutated(bases[i], hot=hot(bases[i]))
    )


def format_corpus() -> list[tuple[str, str, object]]:
    """(format, file suffix and key, content): half mutated files, half generated ones."""
    half = PER_FORMAT // 2
    corpus = []
    for raw in collect(_one_of_bases(NPY_BASES, lambda b: ((0, header_end(b)),)), half):
        corpus.append(("npy", ".npy", raw))
    for raw, _ in collect(npy_files(), half):
        corpus.append(("npy", ".npy", raw))
    npz = test_fuzz_npz.BASES
    for raw in collect(_one_of_bases(npz, test_fuzz_npz.hot_regions), half):
        corpus.append(("npz", ".npz:x", raw))
    for raw in collect(test_fuzz_npz.patched_zips(), half):
        corpus.append(("npz", ".npz:x", raw))
    h5 = test_fuzz_hdf5.bases()
    h5_raw = [raw for raw, _ in h5]
    mutants = st.sampled_from(range(len(h5))).flatmap(lambda i: mutated(h5[i][0], hot=h5[i][1]))
    for raw in collect(mutants, half):
        corpus.append(("hdf5", ".h5:/x", raw))
    for raw in collect(st.sampled_from(h5_raw), 2):  # unmutated: the command must succeed
        corpus.append(("hdf5-valid", ".h5:/x", raw))
    for spec in collect(test_fuzz_hdf5.specs(), half):
        corpus.append(("hdf5", ".h5:/x", spec))
    zb = test_fuzz_zarr.bases()
    for files in collect(test_fuzz_zarr.edited_stores(zb), half):
        corpus.append(("zarr", ".zarr", files))
    for files, dirs, _ in collect(test_fuzz_zarr.chunk_edited_stores(zb), half):
        corpus.append(("zarr", ".zarr", (files, dirs)))
    mtx = test_fuzz_mtx.bases()
    for raw in collect(_one_of_bases(mtx, lambda b: ((0, test_fuzz_mtx._head_end(b)),)), half):
        corpus.append(("mtx", ".mtx", raw))
    for raw in collect(test_fuzz_mtx.mtx_texts(), half):
        corpus.append(("mtx", ".mtx", raw))
    return corpus


def write_input(directory: Path, suffix: str, content) -> str:
    """Write one corpus entry into `directory`; return the URI to give the command."""
    ext, _, key = suffix.partition(":")
    path = directory / f"input{ext}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict) and "kind" in content:  # an HDF5 spec
        sub = directory / "h5"
        sub.mkdir()
        path, _ = test_fuzz_hdf5.build(sub, content)
    else:
        files, dirs = content if isinstance(content, tuple) else (content, set())
        try:
            write_tree(path, files)
            for d in dirs:
                (path / d).mkdir(parents=True, exist_ok=True)
        except OSError:  # edits that collide on disk: keep what was written
            pass
    return f"{path}:{key}" if key else str(path)


# -- hostile side inputs: values and shapes the commands must refuse ------------------------


def _h5(directory: Path, name: str, arrays: dict) -> str:
    with h5py.File(directory / name, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    return str(directory / name)


def _mtx(directory: Path, name: str, text: str) -> str:
    (directory / name).write_text(text)
    return str(directory / name)


def side_cases(d: Path) -> list[tuple[str, list[str], set[int]]]:
    """(name, argv, expected exit codes) for hostile data next to a valid input."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((12, 8))
    nan, inf = a.copy(), a.copy()
    nan[3, 4], inf[5, 1] = np.nan, np.inf
    data = _h5(d, "data.h5", {"a": a, "nan": nan, "inf": inf, "wide": rng.standard_normal((8, 12))})
    w = _h5(d, "w.h5", {
        "good": np.ones((12, 8)), "short": np.ones((12, 7)), "flat": np.ones(96),
        "neg": -np.ones((12, 8)), "nan": np.full((12, 8), np.nan), "zero": np.zeros((12, 8)),
        "row_short": np.ones(11), "row_neg": -np.ones(12), "row_2d": np.ones((12, 1)),
        "row_nan": np.full(12, np.nan), "dof_short": np.ones(11), "dof_neg": -np.ones(12),
    })  # fmt: skip
    mass_ok = "".join(f"{i} {i} 2.0\n" for i in range(1, 13))
    mass = {
        "small": _mtx(d, "m_small.mtx", "%%MatrixMarket matrix coordinate real general\n"
                      "11 11 11\n" + "".join(f"{i} {i} 2.0\n" for i in range(1, 12))),
        "rect": _mtx(d, "m_rect.mtx", "%%MatrixMarket matrix coordinate real general\n"
                     "12 13 12\n" + mass_ok),
        "negdef": _mtx(d, "m_neg.mtx", "%%MatrixMarket matrix coordinate real general\n"
                       "12 12 12\n" + mass_ok.replace(" 2.0", " -2.0")),
        "asym": _mtx(d, "m_asym.mtx", "%%MatrixMarket matrix coordinate real general\n"
                     "12 12 13\n" + mass_ok + "1 2 5.0\n"),
        "nan": _mtx(d, "m_nan.mtx", "%%MatrixMarket matrix coordinate real general\n"
                    "12 12 12\n" + mass_ok.replace("1 1 2.0", "1 1 nan")),
    }  # fmt: skip
    svd = ["svd", "-o", "out.npz", "--rank", "2", "-q"]
    pod = ["rob", "pod", f"{data}:/a", "-o", "pod.npz", "--rank", "2", "-q"]
    refused = {2, 65}
    cases = [
        ("svd NaN input", [*svd[:1], f"{data}:/nan", *svd[1:]], {65}),
        ("svd Inf input", [*svd[:1], f"{data}:/inf", *svd[1:]], {65}),
        ("svd valid input", [*svd[:1], f"{data}:/a", *svd[1:]], {0}),
    ]
    for key in ("short", "flat", "neg", "nan", "zero"):
        argv = [*svd[:1], f"{data}:/a", *svd[1:], "--weights", f"{w}:/{key}"]
        cases.append((f"svd --weights {key}", argv, refused))
    cases.append(("svd NaN input, weights 0 there", [*svd[:1], f"{data}:/nan", *svd[1:],
                  "--weights", f"{w}:/good"], refused))  # fmt: skip
    for key in ("row_short", "row_neg", "row_2d", "row_nan"):
        argv = [*svd[:1], f"{data}:/a", *svd[1:], "--row-weights", f"{w}:/{key}"]
        cases.append((f"svd --row-weights {key}", argv, refused))
    cases.append(("svd --col-weights of the rows", [*svd[:1], f"{data}:/a", *svd[1:],
                  "--col-weights", f"{w}:/row_neg"], refused))  # fmt: skip
    for key, path in mass.items():
        cases.append((f"rob pod --mass {key}", [*pod, "--mass", path], refused))
    cases.append(("rob pod --mass dense", [*pod, "--mass", f"{w}:/good"], refused))
    for key in ("dof_short", "dof_neg", "row_nan"):
        cases.append((f"rob pod --weights {key}", [*pod, "--weights", f"{w}:/{key}"], refused))
    cases.append(("rob pod NaN snapshots", ["rob", "pod", f"{data}:/nan", "-o", "p.npz",
                  "--rank", "2", "-q"], {65}))  # fmt: skip
    return cases


# -- running -----------------------------------------------------------------------------------


def run_driver(cases: list[dict]) -> dict:
    proc = subprocess.run(
        [sys.executable, str(DRIVER)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def assert_clean_exit(what: str, code: int, stderr: str, allowed=ALLOWED) -> None:
    assert code >= 0, f"{what}: killed by signal {-code}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 1, f"{what}: {len(lines)} lines on stderr:\n{stderr}"
    if code != 0:
        assert lines, f"{what}: exit {code} without a message"
    assert code in allowed, f"{what}: exit {code} (allowed {sorted(allowed)}): {stderr}"


@pytest.fixture(scope="module")
def workdir(scratch) -> Path:
    # In RAM when possible (see conftest.scratch): each command fsyncs its outputs.
    with scratch.path("") as d:
        d.mkdir()
        yield d


@pytest.fixture(scope="module")
def corpus_runs(workdir):
    cases, meta = [], []
    for i, (fmt, suffix, content) in enumerate(format_corpus()):
        d = workdir / f"case{i}"
        d.mkdir()
        uri = write_input(d, suffix, content)
        argv = [uri if a == "{in}" else a for a in SVD]
        cases.append({"argv": argv, "cwd": str(d)})
        meta.append((fmt, argv))
    out = run_driver(cases)
    return meta, out


# Failures outside rankwise.formats that fuzzing found and that are not fixed yet: the
# corpus test still fails on anything else. (Empty: the one found, subnormal maxima
# overflowing the power-of-two scale, is fixed and is test_subnormal_data below.)
KNOWN_BUGS: dict[str, str] = {}


def test_mutated_files_through_the_cli(corpus_runs):
    meta, out = corpus_runs
    formats = {fmt for fmt, _ in meta}
    assert {"npy", "npz", "hdf5", "zarr", "mtx"} <= formats
    failures, known = [], set()
    for (fmt, argv), res in zip(meta, out["results"], strict=True):
        COUNTS[f"cli-{fmt.removesuffix('-valid')}"] += 1
        allowed = {0} if fmt.endswith("-valid") else ALLOWED
        what = f"{fmt}: rankwise {' '.join(argv)}"
        try:
            assert_clean_exit(what, res["code"], res["stderr"], allowed)
        except AssertionError as exc:
            bug = next((k for k in KNOWN_BUGS if k in res["stderr"]), None)
            if bug is None:
                failures.append(str(exc))
            else:
                known.add(KNOWN_BUGS[bug])
    PEAKS["cli"] = out["growth_kib"] * 1024
    assert out["growth_kib"] * 1024 < MEMORY_LIMIT
    assert not failures, "\n".join(failures)
    if known:
        pytest.xfail("known bugs outside rankwise.formats: " + "; ".join(sorted(known)))


@pytest.mark.parametrize("command", ["svd", "nmf", "cp"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_subnormal_data(tmp_path, command, dtype):
    """Found by fuzzing: a largest magnitude below the normal range made the exact
    power-of-two rescaling overflow (2^1045 is not a float; 2^140 is not a float32)."""
    shape = (3, 4, 2) if command == "cp" else (3, 4)
    tiny = 5e-315 if dtype == "float64" else 1e-40
    np.save(tmp_path / "tiny.npy", np.full(shape, tiny, dtype=dtype))
    argv = [rankwise_exe(), command, "tiny.npy", "-o", "o.npz", "--rank", "1", "-q"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert_clean_exit(f"{command} of subnormal {dtype} entries", proc.returncode, proc.stderr,
                      {0})  # fmt: skip
    with np.load(tmp_path / "o.npz") as z:
        assert all(np.isfinite(z[k]).all() for k in z.files if k != "__attrs__")


def test_hostile_side_inputs_through_the_cli(workdir):
    d = workdir / "side"
    d.mkdir()
    cases = side_cases(d)
    runs = []
    for i, (_, argv, _) in enumerate(cases):
        cwd = d / f"run{i}"
        cwd.mkdir()
        runs.append({"argv": argv, "cwd": str(cwd)})
    out = run_driver(runs)
    for (name, argv, allowed), res in zip(cases, out["results"], strict=True):
        COUNTS["cli-side"] += 1
        assert_clean_exit(f"{name}: rankwise {' '.join(argv)}", res["code"], res["stderr"], allowed)


def test_console_script_agrees_with_the_driver(corpus_runs, workdir):
    # The installed `rankwise` gives the same exit code and message as the forked entry point.
    meta, out = corpus_runs
    picked: dict[str, int] = {}
    for i, (fmt, _) in enumerate(meta):
        if out["results"][i]["code"] != 0 or fmt.endswith("-valid"):  # refusals, one success
            picked.setdefault(fmt, i)

    def run(i: int) -> subprocess.CompletedProcess:
        return subprocess.run([rankwise_exe(), *meta[i][1]], cwd=workdir / f"case{i}",
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:  # interpreter start-up dominates: two at a time
        procs = dict(zip(picked.values(), pool.map(run, picked.values()), strict=True))
    for i, proc in procs.items():
        what = f"{meta[i][0]}: rankwise {' '.join(meta[i][1])}"
        assert_clean_exit(what, proc.returncode, proc.stderr)
        assert proc.returncode == out["results"][i]["code"], (what, proc.stderr)
        assert proc.stderr == out["results"][i]["stderr"], what
