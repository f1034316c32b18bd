"""`rankwise svd` end to end: the installed command on real files, checked against LAPACK."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import SAMPLES, load_report

from rankwise.formats import read_result


def planted(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (u * s) @ v.T


@pytest.fixture
def matrix_npy(tmp_path):
    a = planted(400, 120, 0.8 ** np.arange(120), seed=1)
    np.save(tmp_path / "a.npy", a)
    return a


def tails(s):
    s2 = s**2
    return np.r_[np.cumsum(s2[::-1])[::-1], 0.0] / s2.sum()


def test_sample_data_main_job(cli, tmp_path):
    proc = cli("svd", SAMPLES / "heat.h5:/snapshots", "-o", "heat_svd.h5", "--tol", "1e-6")
    arrays, attrs = read_result(tmp_path / "heat_svd.h5")
    assert attrs["kind"] == "svd" and attrs["rankwise_version"]
    with h5py.File(SAMPLES / "heat.h5") as f:
        a = f["snapshots"][()]
    s = np.linalg.svd(a, compute_uv=False)
    k = arrays["S"].shape[0]
    assert tails(s)[k] <= 1e-12 < tails(s)[k - 1]  # minimal rank for tol 1e-6
    np.testing.assert_allclose(arrays["S"], s[:k], rtol=1e-10, atol=1e-10 * s[0])
    rep = load_report(tmp_path / "heat_svd.report.json")
    approx = (arrays["U"] * arrays["S"]) @ arrays["Vt"]
    err = np.linalg.norm(a - approx) / np.linalg.norm(a)
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-6)
    assert rep["input"]["format"] == "hdf5" and rep["input"]["shape"] == [300, 120]
    assert rep["rank"]["value"] == k and rep["rank"]["rule"] == "tol"
    assert f"rank {k}" in proc.stderr and "\x1b" not in proc.stderr  # no spinner off a tty


@pytest.mark.parametrize("ext", [".h5", ".hdf5", ".zarr", ".npz"])
def test_every_output_format(cli, tmp_path, matrix_npy, ext):
    cli("svd", "a.npy", "-o", f"out{ext}", "--rank", "5", "--center", "-q")
    arrays, attrs = read_result(tmp_path / f"out{ext}")
    assert set(arrays) == {"U", "S", "Vt", "mean"} and attrs["kind"] == "svd"
    np.testing.assert_allclose(arrays["mean"], matrix_npy.mean(axis=0), atol=1e-14)
    s = np.linalg.svd(matrix_npy - matrix_npy.mean(0), compute_uv=False)
    np.testing.assert_allclose(arrays["S"], s[:5], rtol=1e-10)
    rep = load_report(tmp_path / "out.report.json")
    assert rep["output"]["format"] == {".h5": "hdf5", ".hdf5": "hdf5"}.get(ext, ext[1:])


@pytest.mark.parametrize(
    "args, check",
    [
        (["--tol", "1e-3"], lambda k, t: t[k] <= 1e-6 < t[k - 1]),
        (["--energy", "0.999"], lambda k, t: t[k] <= 1e-3 < t[k - 1]),
        (["--rel-sv", "1e-2"], lambda k, t: 0.8 ** (k - 1) >= 1e-2 > 0.8**k),
        (["--rank", "7"], lambda k, t: k == 7),
    ],
)
def test_rank_rules_reach_the_core(cli, tmp_path, matrix_npy, args, check):
    cli("svd", "a.npy", "-o", "o.npz", *args, "--method", "exact")
    arrays, _ = read_result(tmp_path / "o.npz")
    t = tails(np.linalg.svd(matrix_npy, compute_uv=False))
    assert check(arrays["S"].shape[0], t)
    rep = load_report(tmp_path / "o.report.json")
    given = rep["rank"]["by_rule"][0]
    assert given["given"] and given["rule"] == args[0][2:].replace("-", "_")


@pytest.mark.parametrize("method", ["exact", "randomized", "lanczos"])
def test_method_option_reaches_the_core(cli, tmp_path, matrix_npy, method):
    cli("svd", "a.npy", "-o", "o.h5", "--rank", "6", "--method", method)
    rep = load_report(tmp_path / "o.report.json")
    assert rep["method"]["requested"] == method and rep["method"]["used"] == method
    arrays, _ = read_result(tmp_path / "o.h5")
    s = np.linalg.svd(matrix_npy, compute_uv=False)
    np.testing.assert_allclose(arrays["S"], s[:6], rtol=1e-8)


def test_auto_says_why(cli, tmp_path, matrix_npy):
    cli("svd", "a.npy", "-o", "o.h5", "--rank", "6")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["method"]["requested"] == "auto"
    assert rep["method"]["used"] == "exact" and "small matrix" in rep["method"]["reason"]


def test_randomized_options_reach_the_core(cli, tmp_path, matrix_npy):
    base = ["svd", "a.npy", "--rank", "5", "--method", "randomized"]
    cli(*base, "-o", "a.h5", "--oversample", "3", "--power-iters", "1", "--seed", "1")
    cli(*base, "-o", "b.h5", "--oversample", "3", "--power-iters", "1", "--seed", "1")
    cli(*base, "-o", "c.h5", "--oversample", "3", "--power-iters", "1", "--seed", "2")
    rep = load_report(tmp_path / "a.report.json")
    d = rep["method"]["details"]
    assert d["sketch_size"] == 8 and d["power_iters"] == 1 and rep["seed"] == 1
    assert rep["parameters"]["oversample"] == 3 and rep["parameters"]["power_iters"] == 1
    a, b, c = (read_result(tmp_path / f"{x}.h5")[0] for x in "abc")
    assert all(a[k].tobytes() == b[k].tobytes() for k in ("U", "S", "Vt"))  # same seed
    assert a["S"].tobytes() != c["S"].tobytes()  # another seed, another sketch


def test_block_size_reaches_adaptive_core(cli, tmp_path, matrix_npy):
    cli("svd", "a.npy", "-o", "o.h5", "--tol", "1e-4", "--method", "randomized",
        "--block-size", "7")  # fmt: skip
    rep = load_report(tmp_path / "o.report.json")
    d = rep["method"]["details"]
    assert d["block_size"] == 7 and d["sketch_size"] % 7 == 0
    assert [h["basis_size"] for h in rep["history"]] == list(range(7, d["sketch_size"] + 1, 7))
    assert rep["metrics"]["relative_frobenius_error"] <= 1e-4


def test_threads_and_memory_reach_the_run(cli, tmp_path, matrix_npy):
    cli("svd", "a.npy", "-o", "o.h5", "--rank", "3", "--threads", "1", "--max-memory", "300M")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["threads"]["count"] == 1 and rep["threads"]["source"] == "--threads"
    blas = [b for b in rep["threads"]["blas"] if b["user_api"] == "blas"]
    assert blas and all(b["num_threads"] == 1 for b in blas)
    assert rep["memory"]["budget_bytes"] == 300 << 20
    assert rep["parameters"]["max_memory_bytes"] == 300 << 20


def test_threads_default_honours_slurm_then_omp(cli, tmp_path, matrix_npy):
    cli("svd", "a.npy", "-o", "o.h5", "--rank", "3",
        env={"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "2"})  # fmt: skip
    rep = load_report(tmp_path / "o.report.json")
    assert rep["threads"] == {**rep["threads"], "count": 1, "source": "SLURM_CPUS_PER_TASK"}
    cli("svd", "a.npy", "-o", "p.h5", "--rank", "3", env={"OMP_NUM_THREADS": "1"})
    rep = load_report(tmp_path / "p.report.json")
    assert rep["threads"]["count"] == 1 and rep["threads"]["source"] == "OMP_NUM_THREADS"


def test_report_path_json_quiet_and_force(cli, tmp_path, matrix_npy):
    proc = cli("svd", "a.npy", "-o", "o.zarr", "--rank", "2", "--report", "r/x.json",
               expect=73)  # fmt: skip
    assert "does not exist" in proc.stderr and not (tmp_path / "o.zarr").exists()
    (tmp_path / "r").mkdir()
    proc = cli("svd", "a.npy", "-o", "o.zarr", "--rank", "2", "--report", "r/x.json",
               "--json", "--quiet")  # fmt: skip
    assert proc.stderr == ""
    printed = json.loads(proc.stdout)
    assert printed == load_report(tmp_path / "r" / "x.json")
    proc = cli("svd", "a.npy", "-o", "o.zarr", "--rank", "3", "--report", "r/x.json", expect=73)
    assert "--force" in proc.stderr
    cli("svd", "a.npy", "-o", "o.zarr", "--rank", "3", "--report", "r/x.json", "--force")
    assert read_result(tmp_path / "o.zarr")[0]["S"].shape == (3,)
    assert load_report(tmp_path / "r" / "x.json")["rank"]["value"] == 3


def test_sparse_mtx_stays_sparse_and_matches_dense(cli, tmp_path):
    rng = np.random.default_rng(3)
    a = sp.random_array((3000, 900), density=0.01, rng=rng, format="coo")
    scipy.io.mmwrite(tmp_path / "a.mtx", a)
    cli("svd", "a.mtx", "-o", "o.npz", "--rank", "8", "--method", "lanczos")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["input"]["sparse"] and rep["input"]["nnz"] == a.nnz
    assert rep["method"]["used"] == "lanczos"
    s = np.linalg.svd(a.toarray(), compute_uv=False)
    np.testing.assert_allclose(read_result(tmp_path / "o.npz")[0]["S"], s[:8], rtol=1e-9)


def test_sparse_auto_on_large_sparse_uses_lanczos(cli, tmp_path):
    rng = np.random.default_rng(4)
    a = sp.random_array((20000, 3000), density=0.001, rng=rng, format="coo")
    scipy.io.mmwrite(tmp_path / "a.mtx", a)
    cli("svd", "a.mtx", "-o", "o.npz", "--rank", "4")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["method"]["used"] == "lanczos" and "never densified" in rep["method"]["reason"]


def test_sample_inputs_of_every_format(cli, tmp_path):
    for i, uri in enumerate([
        "heat.h5:/snapshots", "burgers.zarr:snapshots", "ratings.mtx", "sensors_v2.zarr",
        "climate.npz:temperature", "spectra.npy", "heat_coo.h5:/matrix", "mass.mtx",
    ]):  # fmt: skip
        cli("svd", SAMPLES / uri, "-o", f"o{i}.h5", "--rank", "3", "-q")
        rep = load_report(tmp_path / f"o{i}.report.json")
        assert rep["rank"]["value"] == 3 and rep["metrics"]["orthogonality_loss"]["U"] < 1e-10


def test_float32_input_gives_float32_output(cli, tmp_path):
    a = planted(300, 50, np.linspace(3, 1, 50), seed=5).astype(np.float32)
    np.save(tmp_path / "f.npy", a)
    for method in ("exact", "randomized", "lanczos"):
        cli("svd", "f.npy", "-o", f"{method}.h5", "--rank", "4", "--method", method)
        arrays, _ = read_result(tmp_path / f"{method}.h5")
        assert all(arrays[k].dtype == np.float32 for k in ("U", "S", "Vt"))


def test_fingerprint_identifies_content(cli, tmp_path, matrix_npy):
    with h5py.File(tmp_path / "same.h5", "w") as f:
        f["x"] = matrix_npy
    cli("svd", "a.npy", "-o", "o1.h5", "--rank", "2")
    cli("svd", "same.h5:/x", "-o", "o2.h5", "--rank", "2")
    fp1 = load_report(tmp_path / "o1.report.json")["input"]["fingerprint"]
    fp2 = load_report(tmp_path / "o2.report.json")["input"]["fingerprint"]
    assert fp1 == fp2


def _stderr_on_a_terminal(tmp_path, *args):
    import os
    import pty
    import subprocess

    from helpers import rankwise_exe

    master, slave = pty.openpty()
    proc = subprocess.Popen([rankwise_exe(), *args], cwd=tmp_path, stderr=slave,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_progress_only_on_a_terminal_and_not_quiet(tmp_path, matrix_npy):
    code, err = _stderr_on_a_terminal(tmp_path, "svd", "a.npy", "-o", "t.h5", "--rank", "3")
    assert code == 0 and "\x1b[" in err  # rich drew its spinner (escape sequences)
    code, err = _stderr_on_a_terminal(tmp_path, "svd", "a.npy", "-o", "q.h5", "--rank", "3",
                                      "--quiet")  # fmt: skip
    assert code == 0 and err == ""


@pytest.mark.parametrize("method", ["exact", "randomized", "lanczos"])
def test_same_input_and_seed_give_the_same_file_bytes(cli, tmp_path, matrix_npy, method):
    import hashlib

    def digest(path):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            h.update(f.read_bytes())
        return h.hexdigest()

    for ext in (".h5", ".npz", ".zarr"):
        for run in ("a", "b"):
            cli("svd", "a.npy", "-o", f"{run}{ext}", "--rank", "4", "--method", method,
                "--seed", "3", "-q", "--report", f"{run}{ext}.json")  # fmt: skip
        assert digest(tmp_path / f"a{ext}") == digest(tmp_path / f"b{ext}")


def test_symmetric_mtx_reports_expanded_nnz(cli, tmp_path):
    cli("svd", SAMPLES / "mass.mtx", "-o", "o.h5", "--rank", "2")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["input"]["nnz"] == 898  # 599 stored entries, both triangles counted


def test_tall_exact_in_place_keeps_the_fingerprint_of_the_input(cli, tmp_path):
    # The tall-skinny exact path reuses the loaded array's memory: the report must still
    # describe the input as it was read.
    from rankwise import formats

    a = planted(6000, 40, np.logspace(0, -4, 40), seed=5)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("x", data=a)
    cli("svd", "t.h5:/x", "-o", "t.npz", "--rank", "40", "--method", "exact", "-q")
    rep = load_report(tmp_path / "t.report.json")
    arrays, _ = read_result(tmp_path / "t.npz")
    assert "cholesky_qr2" in rep["method"]["details"]["lapack_driver"]
    assert rep["input"]["fingerprint"] == formats.fingerprint(a)
    np.testing.assert_allclose(arrays["S"], np.linalg.svd(a, compute_uv=False), rtol=1e-10)
    np.testing.assert_allclose((arrays["U"] * arrays["S"]) @ arrays["Vt"], a, atol=1e-12)


def test_report_names_the_hash_library_of_the_fingerprint(cli, tmp_path, matrix_npy):
    from importlib import metadata

    cli("svd", "a.npy", "-o", "v.npz", "--rank", "2", "-q")
    rep = load_report(tmp_path / "v.report.json")
    assert rep["versions"]["xxhash"] == metadata.version("xxhash")
    assert rep["input"]["fingerprint"].startswith("xxh128:")
