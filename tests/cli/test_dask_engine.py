"""`--engine dask`: a real scheduler and two workers started as subprocesses on 127.0.0.1,
and a LocalCluster; results compared with the local engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from helpers import load_report, run_in_process, spy_on

from rankwise import formats
from rankwise.formats import read_result

pytest.importorskip("distributed")


def _dask_exe() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else shutil.which("dask")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes (1 thread, 1 GB each) on 127.0.0.1."""
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [subprocess.Popen([_dask_exe(), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              cwd=d, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "the dask scheduler did not start"
            time.sleep(0.1)
        for _ in range(2):
            procs.append(subprocess.Popen(
                [_dask_exe(), "worker", "--scheduler-file", str(sched_file), "--host",
                 "127.0.0.1", "--nthreads", "1", "--memory-limit", "1GB", "--no-dashboard",
                 "--nworkers", "1"],
                cwd=d, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        assert address.startswith("tcp://127.0.0.1:")
        yield {"file": sched_file, "address": address}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def tall(m=6000, n=80, seed=0, decay=0.9):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (u * decay ** np.arange(n)) @ v.T


def max_sine(u1, u2):
    """Largest principal-angle sine between the column spaces of u1 and u2 (orthonormal),
    as ‖(I − U1U1ᵀ)U2‖₂: accurate for tiny angles, unlike √(1 − cos²)."""
    return float(np.linalg.norm(u2 - u1 @ (u1.T @ u2), 2))


def write_h5(path, a, chunk_rows):
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=a, chunks=(chunk_rows, a.shape[1]))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--scheduler-file", "--scheduler"])
def test_tsqr_on_external_workers_equals_the_local_exact_svd(cli, tmp_path, scheduler, how):
    a = tall()
    write_h5(tmp_path / "a.h5", a, 500)
    target = str(scheduler["file"]) if how == "--scheduler-file" else scheduler["address"]
    # a small budget: several tasks, so both workers take part
    cli("svd", "a.h5:/a", "-o", "d.h5", "--tol", "1e-3", "--engine", "dask", how, target,
        "--max-memory", "20M", "-q")  # fmt: skip
    cli("svd", "a.h5:/a", "-o", "l.h5", "--tol", "1e-3", "--method", "exact", "-q")
    d, _ = read_result(tmp_path / "d.h5")
    loc, _ = read_result(tmp_path / "l.h5")
    # TSQR and LAPACK agree to rounding: singular values relative 1e-10 (condition ≤ 1e4 here)
    assert d["S"].shape == loc["S"].shape
    np.testing.assert_allclose(d["S"], loc["S"], rtol=1e-10)
    assert max_sine(d["U"], loc["U"]) <= 1e-8 and max_sine(d["Vt"].T, loc["Vt"].T) <= 1e-8
    rep = load_report(tmp_path / "d.report.json")
    eng = rep["engine"]
    assert eng["name"] == "dask" and eng["cluster"] == "external" and eng["workers"] == 2
    assert eng["scheduler"] == scheduler["address"]
    assert rep["method"]["used"] == "cholesky_qr2"
    assert rep["method"]["details"]["qr"] == "cholesky_qr2 (Q₁ kept on the workers)"
    # one read: the Gram, with A kept on the workers (it fits in a quarter of their memory
    # with Q₁); then Q₁ = A R₁⁻¹ with its Gram and U, both from memory
    assert [s["reads_input"] for s in eng["stages"]] == [True, False, False]
    assert rep["method"]["details"]["input_kept_on_workers"] is True
    lrep = load_report(tmp_path / "l.report.json")
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(
        lrep["metrics"]["relative_frobenius_error"], rel=1e-8)  # fmt: skip
    assert rep["rank"]["value"] == lrep["rank"]["value"]


@pytest.mark.slow
def test_randomized_on_a_local_cluster_is_near_optimal(cli, tmp_path):
    a = tall(3000, 400, seed=1, decay=0.97)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=a.shape, chunks=(300, 400),
                      dtype=a.dtype)[...] = a  # fmt: skip
    cli("svd", "a.zarr", "-o", "d.npz", "--rank", "20", "--method", "randomized", "--engine",
        "dask", "--workers", "2", "--max-memory", "2G", "-q")  # fmt: skip
    cli("svd", "a.zarr", "-o", "l.npz", "--rank", "20", "--method", "streaming", "-q")
    rep = load_report(tmp_path / "d.report.json")
    s = np.linalg.svd(a, compute_uv=False)
    optimal = np.sqrt(np.sum(s[20:] ** 2) / np.sum(s**2))
    arrays, attrs = read_result(tmp_path / "d.npz")
    err = np.linalg.norm(a - (arrays["U"] * arrays["S"]) @ arrays["Vt"]) / np.linalg.norm(a)
    assert err <= 1.01 * optimal  # the accuracy target
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-6)
    assert rep["engine"]["cluster"] == "local" and rep["engine"]["workers"] == 2
    assert rep["engine"]["memory_limit_per_worker"] == (2 << 30) // 2
    # the local streaming algorithm: Z = AᵀAΩ keeping A on the workers (it fits), then one
    # pass per power iteration (adaptive) and the last, all from memory; then the last
    # pass's Y = AW comes to the client
    d = rep["method"]["details"]
    assert d["power_iters_mode"] == "adaptive" and d["passes"] == 1
    reads = [s["reads_input"] for s in rep["engine"]["stages"]]
    assert reads == [True] + [False] * (d["power_iters"] + 2)
    assert attrs["engine"] == "dask" and d["input_kept_on_workers"] is True
    loc, _ = read_result(tmp_path / "l.npz")
    lrep = load_report(tmp_path / "l.report.json")
    assert lrep["method"]["details"]["power_iters"] == d["power_iters"]
    np.testing.assert_allclose(arrays["S"], loc["S"], rtol=1e-10)
    assert max_sine(arrays["U"], loc["U"]) <= 1e-8


@pytest.mark.slow
def test_exact_paths_agree_with_lapack_kept_recomputed_or_ill_conditioned(tmp_path, monkeypatch):
    import rankwise.core.distributed as core

    well = tall(4000, 60, seed=3, decay=0.8)  # condition 6e5: CholeskyQR2
    u, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((4000, 60)))
    ill = (u * np.logspace(0, -12, 60)) @ np.linalg.qr(np.random.default_rng(5)
                                                      .standard_normal((60, 60)))[0]  # fmt: skip
    runs = {}
    for name, a, keep in (("kept", well, 0.25), ("twice", well, 0.0), ("ill", ill, 0.25)):
        write_h5(tmp_path / f"{name}.h5", a, 500)
        monkeypatch.setattr(core, "KEEP_FRACTION", keep)
        run_in_process(tmp_path, monkeypatch, [
            "svd", f"{name}.h5:/a", "-o", f"{name}.npz", "--tol", "1e-6", "--engine", "dask",
            "--workers", "2", "--max-memory", "1200M", "-q",
        ])  # fmt: skip
        rep = load_report(tmp_path / f"{name}.report.json")
        arrays, _ = read_result(tmp_path / f"{name}.npz")
        s_true = np.linalg.svd(a, compute_uv=False)
        k = rep["rank"]["value"]
        # the smallest rank whose tail of LAPACK's spectrum meets the tolerance
        tails = np.sqrt(np.append(np.cumsum(s_true[::-1] ** 2)[::-1], 0.0)) / np.linalg.norm(a)
        assert k == int(np.argmax(tails <= 1e-6))
        # singular values against LAPACK, relative to σ₁ (the ill-conditioned case's small
        # values carry an absolute error of order ε σ₁ by any backward-stable method)
        np.testing.assert_allclose(arrays["S"], s_true[:k], rtol=1e-10, atol=1e-13 * s_true[0])
        np.testing.assert_allclose(arrays["U"].T @ arrays["U"], np.eye(k), atol=1e-12)
        runs[name] = (rep, arrays)
    reads = {n: [s["reads_input"] for s in r["engine"]["stages"]] for n, (r, _) in runs.items()}
    assert runs["kept"][0]["method"]["used"] == runs["twice"][0]["method"]["used"] == "cholesky_qr2"
    assert reads["kept"] == [True, False, False] and reads["twice"] == [True, True, True]
    # formed twice by the same operations: the same factors to rounding
    twice, kept = runs["twice"][1], runs["kept"][1]
    # (block Grams are summed by BLAS whose last bits may vary with buffer alignment)
    np.testing.assert_allclose(twice["S"], kept["S"], rtol=1e-12, atol=1e-15 * kept["S"][0])
    assert max_sine(twice["U"], kept["U"]) <= 1e-9
    assert runs["ill"][0]["method"]["used"] == "tsqr"
    assert runs["ill"][0]["method"]["details"]["qr"].startswith("tsqr (condition too large")
    assert reads["ill"] == [True, False, False]  # the Gram pass (A kept), the tree QR's two


def test_unreachable_scheduler_exits_69_within_the_timeout(cli, tmp_path):
    np.save(tmp_path / "a.npy", np.ones((10, 3)))
    t0 = time.monotonic()
    proc = cli("svd", "a.npy", "-o", "o.h5", "--rank", "1", "--engine", "dask", "--scheduler",
               "tcp://127.0.0.1:9", "--connect-timeout", "2", expect=69)  # fmt: skip
    assert time.monotonic() - t0 < 30  # bounded: 2 s plus start-up
    assert "cannot reach the Dask scheduler" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "--engine dask"),
        (["--workers", "2"], "--engine dask"),
        (["--engine", "dask", "--center"], "--center"),
        (["--engine", "dask", "--method", "lanczos"], "local engine"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers"),
        (["--engine", "dask", "--workers", "2", "--max-memory", "600M"], "at least"),
    ],
)
def test_dask_usage_errors(cli, tmp_path, args, needle):
    np.save(tmp_path / "a.npy", np.ones((10, 3)))
    proc = cli("svd", "a.npy", "-o", "o.h5", "--rank", "1", *args, expect=2)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1


def test_inputs_the_workers_cannot_read_are_refused(cli, tmp_path):
    np.savez(tmp_path / "a.npz", a=np.ones((10, 3)))
    proc = cli("svd", "a.npz", "-o", "o.h5", "--rank", "1", "--engine", "dask", "--workers", "1",
               expect=2)  # fmt: skip
    assert "local engine" in proc.stderr


@pytest.mark.slow
def test_fingerprint_does_not_depend_on_format_chunks_or_budget(tmp_path, monkeypatch):
    import rankwise.core.distributed as core

    a = tall(20000, 300, seed=2)  # 48 MB: two tasks (≤ 600 MB / 16 each) per worker limit
    write_h5(tmp_path / "a.h5", a, 100)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=a.shape, chunks=(1000, 300),
                      dtype=a.dtype)[...] = a  # fmt: skip
    seen = spy_on(monkeypatch, core, "svd")
    run_in_process(tmp_path, monkeypatch, [
        "svd", "a.h5:/a", "-o", "x.h5", "--rank", "3", "--method", "randomized", "--oversample",
        "7", "--power-iters", "1", "--seed", "9", "--engine", "dask", "--workers", "2",
        "--threads", "2", "--max-memory", "1200M", "-q",
    ])  # fmt: skip
    expect = {"method": "randomized", "oversample": 7, "power_iters": 1}
    assert {k: seen[k] for k in expect} == expect
    assert seen["_rng_state"] == np.random.default_rng(9).bit_generator.state
    assert len(seen["_args"][0].chunks[0]) > 1  # several tasks under this budget
    run_in_process(tmp_path, monkeypatch, [
        "svd", "a.zarr", "-o", "y.h5", "--rank", "3", "--engine", "dask", "--workers", "1",
        "-q",
    ])  # fmt: skip
    fx = load_report(tmp_path / "x.report.json")["input"]["fingerprint"]
    fy = load_report(tmp_path / "y.report.json")["input"]["fingerprint"]
    assert fx == fy == formats.fingerprint(a)  # the local engine's fingerprint too


@pytest.mark.slow
def test_rob_pod_and_project_on_external_workers_equal_the_local_engine(cli, tmp_path,
                                                                        scheduler):  # fmt: skip
    x = np.linspace(0, 1, 8000)[:, None]
    mu = np.random.default_rng(3).uniform(0.5, 5, 60)[None, :]
    snaps = np.exp(-mu * x) * np.sin(np.pi * x) + mu * x**2
    write_h5(tmp_path / "s.h5", snaps, 1000)
    np.save(tmp_path / "w.npy", np.random.default_rng(4).uniform(0.5, 2.0, 8000))
    dask = ["--engine", "dask", "--scheduler-file", str(scheduler["file"]), "--max-memory",
            "20M"]  # fmt: skip
    for flags in ([], ["--center", "--weights", "w.npy"]):
        cli("rob", "pod", "s.h5:/a", "-o", "d.h5", "--tol", "1e-8", *flags, *dask, "--force",
            "-q")  # fmt: skip
        cli("rob", "pod", "s.h5:/a", "-o", "l.h5", "--tol", "1e-8", "--method", "svd", *flags,
            "--force", "-q")  # fmt: skip
        d, dattrs = read_result(tmp_path / "d.h5")
        loc, _ = read_result(tmp_path / "l.h5")
        assert d["basis"].shape == loc["basis"].shape and dattrs["engine"] == "dask"
        # both are exact SVDs of W^½X: values to rounding, bases to rounding over the gap
        np.testing.assert_allclose(d["singular_values"], loc["singular_values"], rtol=1e-9)
        w = np.load(tmp_path / "w.npy") if flags else np.ones(8000)
        sw = np.sqrt(w)[:, None]
        assert max_sine(sw * d["basis"], sw * loc["basis"]) <= 1e-6
        rd = load_report(tmp_path / "d.report.json")
        rl = load_report(tmp_path / "l.report.json")
        assert rd["metrics"]["projection_error"]["worst"] == pytest.approx(
            rl["metrics"]["projection_error"]["worst"], rel=1e-4, abs=1e-12)  # fmt: skip
        assert rd["engine"]["workers"] == 2 and rd["rank"]["value"] == rl["rank"]["value"]
    # projection errors of the last (centred, weighted) basis, on both engines
    cli("rob", "project", "l.h5", "s.h5:/a", "--weights", "w.npy", "-o", "pd.npz", *dask, "-q")
    cli("rob", "project", "l.h5", "s.h5:/a", "--weights", "w.npy", "-o", "pl.npz", "-q")
    pd_, _ = read_result(tmp_path / "pd.npz")
    pl, _ = read_result(tmp_path / "pl.npz")
    np.testing.assert_allclose(pd_["projection_errors"], pl["projection_errors"], rtol=1e-6,
                               atol=1e-14)  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pod", "x.npy", "-o", "o.h5", "--rank", "1", "--mass", "m.npy"], "--mass"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "1", "--method", "snapshots"], "--method"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "1", "--snapshots", "rows"], "--snapshots"),
    ],
)
def test_rob_dask_usage_errors(cli, tmp_path, args, needle):
    np.save(tmp_path / "x.npy", np.ones((10, 3)))
    proc = cli("rob", *args, "--engine", "dask", "--workers", "1", expect=2)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1


# --- tucker, nmf, complete ------------------------------------------------------------------------


def planted_tensor(shape, ranks, noise, seed):
    """core ×_n U_n (Haar U_n) plus Gaussian noise of relative norm ``noise``."""
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks)
    fs = [np.linalg.qr(rng.standard_normal((i, r)))[0] for i, r in zip(shape, ranks, strict=True)]
    x = np.einsum("abcd,Aa,Bb,Cc,Dd->ABCD", core, *fs, optimize=True)
    e = rng.standard_normal(shape)
    return x + noise * np.linalg.norm(x) / np.linalg.norm(e) * e


def tucker_dense(arrays):
    """The Tucker tensor of an output, by einsum (independent of rankwise's mode products)."""
    f = [arrays[f"factors/{n}"] for n in range(4)]
    return np.einsum("abcd,Aa,Bb,Cc,Dd->ABCD", arrays["core"], *f, optimize=True)


@pytest.mark.slow
def test_tucker_on_external_workers_equals_the_local_two_pass_variant(cli, tmp_path, scheduler):
    x = planted_tensor((400, 14, 12, 10), (4, 5, 3, 3), noise=0.02, seed=5)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(20, 14, 12, 10))
    dask = ["--engine", "dask", "--scheduler-file", str(scheduler["file"]), "--max-memory",
            "20M", "-q"]  # fmt: skip
    for rule in (["--tol", "0.05"], ["--ranks", "4,5,3,3"]):
        cli("tucker", "x.h5:/x", "-o", "d.h5", *rule, *dask, "--force")
        cli("tucker", "x.h5:/x", "-o", "l.h5", *rule, "--streaming", "--force", "-q")
        if rule[0] == "--tol":
            cli("tucker", "x.h5:/x", "-o", "m.h5", *rule, "-q")  # in-memory ST-HOSVD
        d, dattrs = read_result(tmp_path / "d.h5")
        loc, _ = read_result(tmp_path / "l.h5")
        rd, rl = load_report(tmp_path / "d.report.json"), load_report(tmp_path / "l.report.json")
        rm = load_report(tmp_path / "m.report.json")
        # same algorithm as the local streamed variant, Grams summed in another order: the
        # factors agree to rounding over the spectral gaps (≥ 1e-2 relative here)
        assert rd["rank"]["value"] == rl["rank"]["value"] == [4, 5, 3, 3]
        for n in range(4):
            assert max_sine(d[f"factors/{n}"], loc[f"factors/{n}"]) <= 1e-8
        err = np.linalg.norm(x - tucker_dense(d)) / np.linalg.norm(x)  # numpy's truth
        assert rd["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-8)
        assert err == pytest.approx(rl["metrics"]["relative_frobenius_error"], rel=1e-8)
        # the T-HOSVD bound holds as ST-HOSVD's: both within tol; equal errors at equal ranks
        assert err <= 0.05
        assert err == pytest.approx(rm["metrics"]["relative_frobenius_error"], rel=1e-3)
        assert rd["method"]["used"] == "hosvd-dask" and dattrs["engine"] == "dask"
        eng = rd["engine"]
        assert eng["workers"] == 2 and eng["cluster"] == "external"
        assert [s["reads_input"] for s in eng["stages"]] == [True, True]  # two passes
        assert rd["method"]["details"]["blocks"] > 2  # the 20M budget splits the slabs
        assert rd["input"]["fingerprint"] == rl["input"]["fingerprint"]  # the same on both engines
        assert rd["metrics"]["a_priori_error_bound"] >= err


def nonneg(m=3000, n=80, k=5, seed=7):
    rng = np.random.default_rng(seed)
    return rng.random((m, k)) @ rng.random((k, n)) + 0.05 * rng.random((m, n))


@pytest.mark.slow
def test_nmf_and_completion_on_external_workers_equal_the_local_engine(cli, tmp_path,
                                                                        scheduler):  # fmt: skip
    x = nonneg()
    write_h5(tmp_path / "x.h5", x, 200)
    dask = ["--engine", "dask", "--scheduler-file", str(scheduler["file"]), "--max-memory",
            "20M", "-q"]  # fmt: skip
    # a fixed number of sweeps: the iterates, not stopping tests, are compared
    restarts_and_penalties = ["--init", "random", "--n-init", "2", "--l1-w", "0.01", "--l2-h",
                              "0.1"]  # fmt: skip
    for flags in (["--init", "nndsvda"], restarts_and_penalties):
        args = ["nmf", "x.h5:/a", "-k", "5", "--max-iter", "25", "--tol", "0", *flags]
        cli(*args, "-o", "d.npz", *dask, "--force")
        cli(*args, "-o", "l.npz", "-q", "--force")
        d, _ = read_result(tmp_path / "d.npz")
        loc, _ = read_result(tmp_path / "l.npz")
        rd, rl = load_report(tmp_path / "d.report.json"), load_report(tmp_path / "l.report.json")
        # same updates from the same start; sums across blocks round differently (1e-6 is
        # the documented tolerance; measured ~1e-14)
        assert rd["metrics"]["objective"] == pytest.approx(rl["metrics"]["objective"], rel=1e-6)
        np.testing.assert_allclose(d["W"], loc["W"], rtol=0, atol=1e-6 * np.abs(loc["W"]).max())
        np.testing.assert_allclose(d["H"], loc["H"], rtol=0, atol=1e-6)
        err = np.linalg.norm(x - d["W"] @ d["H"]) / np.linalg.norm(x)
        assert rd["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-8)
        assert d["W"].min() >= 0 and d["H"].min() >= 0
        assert rd["history"][-1]["iteration"] == 25
        assert rd["method"]["details"]["blocks"] >= 2 and rd["engine"]["workers"] == 2
        passes = [r["passes"] for r in rd["method"]["details"]["restarts"]]
        assert passes == [r["passes"] for r in rl["method"]["details"]["restarts"]]
    # completion: altmin with exact row solves, hold-out and clip
    rng = np.random.default_rng(8)
    truth = rng.standard_normal((1500, 5)) @ rng.standard_normal((5, 90))
    y = truth.copy()
    y[rng.random(y.shape) > 0.35] = np.nan
    zarr.create_array(str(tmp_path / "y.zarr"), shape=y.shape, chunks=(100, 90),
                      dtype=y.dtype)[...] = y  # fmt: skip
    args = ["complete", "y.zarr", "-k", "5", "--method", "altmin", "--holdout", "0.1", "--clip",
            "-20,20"]  # fmt: skip
    cli(*args, "-o", "cd.npz", *dask)
    cli(*args, "-o", "cl.npz", "-q")
    d, _ = read_result(tmp_path / "cd.npz")
    loc, _ = read_result(tmp_path / "cl.npz")
    rd, rl = load_report(tmp_path / "cd.report.json"), load_report(tmp_path / "cl.report.json")
    np.testing.assert_allclose(d["S"], loc["S"], rtol=1e-8)
    assert max_sine(d["U"], loc["U"]) <= 1e-8 and max_sine(d["Vt"].T, loc["Vt"].T) <= 1e-8
    for key in ("train", "test"):
        for f in ("rmse", "mae", "relative_error"):
            assert rd["metrics"][key][f] == pytest.approx(rl["metrics"][key][f], rel=1e-6)
    assert rd["metrics"]["baseline"]["test"]["rmse"] == pytest.approx(
        rl["metrics"]["baseline"]["test"]["rmse"], rel=1e-9)  # fmt: skip
    assert rd["metrics"]["holdout"] == rl["metrics"]["holdout"]  # the same entries held out
    assert len(rd["history"]) == len(rl["history"])
    # exact low-rank data: every entry (held out, missing) recovered, against numpy's product
    model = (d["U"] * d["S"]) @ d["Vt"]
    assert np.linalg.norm(model - truth) / np.linalg.norm(truth) < 1e-4
    assert rd["engine"]["workers"] == 2 and rd["input"]["missing"] == rl["input"]["missing"]
    assert [s["reads_input"] for s in rd["engine"]["stages"]] == [True, False, False, False]
    # NaN is missing for completion but not for the dask engine's NMF (masked NMF is local)
    proc = cli("nmf", "y.zarr", "-o", "n.npz", "-k", "2", *dask, expect=65)
    assert "local engine" in proc.stderr


@pytest.mark.slow
def test_nmf_on_a_local_cluster_equals_the_local_engine(cli, tmp_path):
    x = nonneg(m=2000, n=50, seed=9)
    np.save(tmp_path / "x.npy", x)
    args = ["nmf", "x.npy", "-k", "5", "--max-iter", "20", "--tol", "0"]
    cli(*args, "-o", "d.h5", "--engine", "dask", "--workers", "2", "--max-memory", "2G", "-q")
    cli(*args, "-o", "l.h5", "-q")
    d, attrs = read_result(tmp_path / "d.h5")
    loc, _ = read_result(tmp_path / "l.h5")
    rd, rl = load_report(tmp_path / "d.report.json"), load_report(tmp_path / "l.report.json")
    assert rd["metrics"]["objective"] == pytest.approx(rl["metrics"]["objective"], rel=1e-6)
    np.testing.assert_allclose(d["W"], loc["W"], rtol=0, atol=1e-6 * np.abs(loc["W"]).max())
    eng = rd["engine"]
    assert eng["cluster"] == "local" and eng["workers"] == 2 and attrs["engine"] == "dask"
    names = [s["stage"] for s in eng["stages"]]
    assert names[0].startswith("checks and norms") and names[1] == "initialisation (nndsvda)"
    assert "persisted" in rd["method"]["details"]["data_on_workers"]
    assert rd["parameters"]["solver"] == "hals" and rd["converged"] is False


@pytest.mark.parametrize(
    "args, needle",
    [
        (["tucker", "t.npy", "-o", "o.h5", "--budget", "500"], "--budget"),
        (["tucker", "t.npy", "-o", "o.h5", "--ranks", "2", "--method", "hooi"], "hooi"),
        (["nmf", "x.npy", "-o", "o.h5", "-k", "2", "--solver", "mu"], "--solver mu"),
        (["nmf", "x.npy", "-o", "o.h5", "-k", "2", "--semi"], "--semi"),
        (["nmf", "x.npy", "-o", "o.h5", "-k", "2", "--resume"], "checkpoint"),
        (["complete", "x.npy", "-o", "o.h5", "-k", "2"], "--method altmin"),
        (["complete", "x.npy", "-o", "o.h5", "-k", "2", "--method", "altmin", "--solver", "cg"],
         "--solver cg"),
        (["complete", "x.npy", "-o", "o.h5", "-k", "2", "--method", "altmin",
          "--write-completed"], "--write-completed"),
    ],
)  # fmt: skip
def test_what_the_dask_engine_refuses(cli, tmp_path, args, needle):
    np.save(tmp_path / "x.npy", np.ones((10, 3)))
    np.save(tmp_path / "t.npy", np.ones((4, 3, 2)))
    proc = cli(*args, "--engine", "dask", "--workers", "1", expect=2)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o.h5").exists()
