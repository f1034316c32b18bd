"""`rankwise cp`, `tucker`, `tt` end to end on real files; outputs read back by TensorLy."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from helpers import load_report, run_in_process, spy_on

from rankwise.formats import fingerprint, read_result

tl = pytest.importorskip("tensorly")


def planted_cp(shape, r, seed=0, nonneg=False):
    rng = np.random.default_rng(seed)
    draw = rng.random if nonneg else rng.standard_normal
    factors = [draw((n, r)) for n in shape]
    letters = "abcdefgh"[: len(shape)]
    spec = ",".join(f"{c}r" for c in letters) + "->" + letters
    return np.einsum(spec, *factors)


def planted_tucker(shape, ranks, seed=0):
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(ranks)
    factors = [
        np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks, strict=True)
    ]
    return tl.tucker_to_tensor((core, factors))


def decaying_tensor(shape, seed=0):
    """Mode spectra decaying like 1/i: every tolerance needs a different core."""
    rng = np.random.default_rng(seed)
    core = rng.standard_normal(shape)
    for n, size in enumerate(shape):
        scale = 1.0 / np.arange(1, size + 1)
        core = np.moveaxis(np.moveaxis(core, n, -1) * scale, -1, n)
    factors = [np.linalg.qr(rng.standard_normal((s, s)))[0] for s in shape]
    return tl.tucker_to_tensor((core, factors))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(a)


def factors_of(arrays, prefix):
    n = sum(1 for k in arrays if k.startswith(prefix))
    return [arrays[f"{prefix}{i}"] for i in range(n)]


def monotone(values, slack=1e-12):
    return all(b <= a * (1 + slack) for a, b in zip(values, values[1:], strict=False))


# --- cp --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(20, 15, 10), (9, 8, 7, 6)])
def test_cp_recovers_a_planted_model_read_back_by_tensorly(cli, tmp_path, shape):
    x = planted_cp(shape, 3, seed=1)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["t"] = x
    proc = cli("cp", "x.h5:/t", "-o", "f.h5", "--rank", "3", "--tol", "1e-14")
    arrays, attrs = read_result(tmp_path / "f.h5")
    assert attrs["kind"] == "cp" and attrs["rank"] == 3
    # TensorLy's CPTensor validates the layout (shapes of weights and factors) as it is
    cp = tl.cp_tensor.CPTensor((arrays["weights"], factors_of(arrays, "factors/")))
    # an exact rank-3 model: recovered to the rounding of ALS's normal equations
    assert rel(x, tl.cp_to_tensor(cp)) <= 1e-8  # exact data: ALS stops at --tol 1e-14
    w = arrays["weights"]
    assert (np.diff(w) <= 0).all() and (w >= 0).all()  # documented convention
    for a in factors_of(arrays, "factors/"):
        np.testing.assert_allclose(np.linalg.norm(a, axis=0), 1.0, rtol=1e-12)  # ~eps·√I
    rep = load_report(tmp_path / "f.report.json")
    err = rel(x, tl.cp_to_tensor(cp))
    # at ~1e-10 the report's explicit residual and this float64 one differ by rounding only
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-3, abs=1e-12)
    assert rep["metrics"]["n_parameters"] == 3 * (sum(shape) + 1)
    assert monotone([e["objective"] for e in rep["history"]])
    assert rep["method"]["used"] == "cp-als" and rep["parameters"]["init"] == "hosvd"
    assert "CP rank 3" in proc.stderr


def test_cp_matches_tensorly_parafac_on_a_noisy_tensor(cli, tmp_path):
    rng = np.random.default_rng(2)
    x = planted_cp((25, 20, 15), 4, seed=2)
    x += 0.01 * np.linalg.norm(x) / np.sqrt(x.size) * rng.standard_normal(x.shape)
    np.save(tmp_path / "x.npy", x)
    cli("cp", "x.npy", "-o", "f.npz", "--rank", "4", "-q")
    arrays, _ = read_result(tmp_path / "f.npz")
    ours = rel(x, tl.cp_to_tensor((arrays["weights"], factors_of(arrays, "factors/"))))
    ref = tl.decomposition.parafac(tl.tensor(x), 4, init="svd", tol=1e-10, n_iter_max=2000)
    theirs = rel(x, tl.cp_to_tensor(ref))
    # both converge to the same local optimum near the noise level (1%)
    assert ours <= theirs * (1 + 1e-4) and ours <= 0.0105


def test_cp_nonneg_restarts_and_factor_match(cli, tmp_path):
    x = planted_cp((15, 12, 10), 3, seed=3, nonneg=True)
    np.save(tmp_path / "x.npy", x)
    proc = cli("cp", "x.npy", "-o", "f.zarr", "--rank", "3", "--nonneg", "--n-init", "3",
               "--tol", "1e-12", "--max-iter", "3000")  # fmt: skip
    arrays, attrs = read_result(tmp_path / "f.zarr")
    assert attrs["nonneg"] and all((a >= 0).all() for a in factors_of(arrays, "factors/"))
    approx = tl.cp_to_tensor((arrays["weights"], factors_of(arrays, "factors/")))
    assert rel(x, approx) <= 1e-4  # HALS on an exact nonnegative rank-3 model
    rep = load_report(tmp_path / "f.report.json")
    m = rep["metrics"]
    assert len(m["restart_objectives"]) == 3 and 0.0 <= m["factor_match"] <= 1.0
    assert min(v for v in m["restart_objectives"] if v is not None) == pytest.approx(
        m["objective"], rel=1e-6, abs=1e-12)  # fmt: skip
    assert rep["method"]["used"] == "cp-hals" and "factor match" in proc.stderr


def test_cp_errors(cli, tmp_path):
    np.save(tmp_path / "m.npy", np.ones((5, 4)))
    proc = cli("cp", "m.npy", "-o", "f.h5", "--rank", "2", expect=65)
    assert "order" in proc.stderr and proc.stderr.count("\n") == 1
    np.save(tmp_path / "neg.npy", -np.ones((3, 3, 3)))
    proc = cli("cp", "neg.npy", "-o", "f.h5", "--rank", "2", "--nonneg", expect=65)
    assert "negative" in proc.stderr
    np.save(tmp_path / "big.npy", np.ones((40, 40, 40)))
    proc = cli("cp", "big.npy", "-o", "f.h5", "--rank", "2", "--max-memory", "100K", expect=65)
    assert "memory budget" in proc.stderr
    assert not (tmp_path / "f.h5").exists()


# --- tucker ----------------------------------------------------------------------------


def test_tucker_ranks_reproduce_a_planted_model_in_tensorly(cli, tmp_path):
    x = planted_tucker((14, 12, 10, 8), (3, 4, 2, 3), seed=4)
    zarr.save_array(str(tmp_path / "x.zarr"), x)
    cli("tucker", "x.zarr", "-o", "t.h5", "--ranks", "3,4,2,3", "-q")
    arrays, attrs = read_result(tmp_path / "t.h5")
    core, factors = tl.tucker_tensor.TuckerTensor((arrays["core"], factors_of(arrays, "factors/")))
    assert core.shape == (3, 4, 2, 3) and attrs["ranks"] == [3, 4, 2, 3]
    assert rel(x, tl.tucker_to_tensor((core, factors))) <= 1e-12  # exact rank: rounding only
    for u in factors:
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-13)
    rep = load_report(tmp_path / "t.report.json")
    assert rep["rank"]["value"] == [3, 4, 2, 3] and rep["rank"]["rule"] == "ranks"
    assert rep["metrics"]["n_parameters"] == 72 + 14 * 3 + 12 * 4 + 10 * 2 + 8 * 3


@pytest.mark.parametrize("tol", [0.3, 0.1, 0.02])
def test_tucker_tol_guarantee_holds(cli, tmp_path, tol):
    x = decaying_tensor((16, 14, 12), seed=5)
    np.save(tmp_path / "x.npy", x)
    cli("tucker", "x.npy", "-o", "t.npz", "--tol", str(tol), "-q")
    arrays, _ = read_result(tmp_path / "t.npz")
    err = rel(x, tl.tucker_to_tensor((arrays["core"], factors_of(arrays, "factors/"))))
    assert err <= tol  # the ST-HOSVD tail rule's guarantee
    rep = load_report(tmp_path / "t.report.json")
    # errors ≥ 1e-3 here: the identity ‖X‖² − ‖core‖² is exact to ~1e-13 relative
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-8)
    assert rep["metrics"]["a_priori_error_bound"] <= tol
    assert list(arrays["core"].shape) == rep["rank"]["value"]


def test_tucker_budget_and_hooi(cli, tmp_path):
    x = decaying_tensor((12, 10, 9), seed=6)
    np.save(tmp_path / "x.npy", x)
    cli("tucker", "x.npy", "-o", "g.h5", "--budget", "400", "-q")
    cli("tucker", "x.npy", "-o", "e.h5", "--budget", "400", "--budget-search", "exhaustive",
        "-q")  # fmt: skip
    g, e = load_report(tmp_path / "g.report.json"), load_report(tmp_path / "e.report.json")
    for rep in (g, e):
        assert rep["metrics"]["n_parameters"] <= 400
    # the exhaustive search keeps at least the energy greedy keeps (its estimate is optimal)
    assert e["metrics"]["estimated_error"] <= g["metrics"]["estimated_error"] * (1 + 1e-12)
    assert e["parameters"]["budget_search"] == "exhaustive"
    cli("tucker", "x.npy", "-o", "h.h5", "--ranks", "3", "--method", "hooi", "--iter-tol",
        "1e-12", "-q")  # fmt: skip
    cli("tucker", "x.npy", "-o", "s.h5", "--ranks", "3", "-q")
    h, s = load_report(tmp_path / "h.report.json"), load_report(tmp_path / "s.report.json")
    # HOOI starts from ST-HOSVD and never increases the error
    assert h["metrics"]["relative_frobenius_error"] <= s["metrics"]["relative_frobenius_error"]
    assert monotone([ev["objective"] for ev in h["history"]])
    assert h["parameters"]["iter_tol"] == 1e-12 and s["parameters"]["iter_tol"] is None


def test_tucker_and_tt_stream_a_chunked_file_under_a_small_budget(cli, tmp_path):
    x = decaying_tensor((40, 30, 20), seed=7)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("t", data=x, chunks=(4, 30, 20))
    cli("tucker", "x.h5:/t", "-o", "m.h5", "--tol", "0.05", "-q")
    cli("tucker", "x.h5:/t", "-o", "s.h5", "--tol", "0.05", "--max-memory", "400K", "-q")
    mem, st = load_report(tmp_path / "m.report.json"), load_report(tmp_path / "s.report.json")
    assert st["parameters"]["streaming"] and not mem["parameters"]["streaming"]
    assert st["method"]["used"] != mem["method"]["used"]
    # the fingerprint hashed during the first pass equals the one of the loaded array
    assert st["input"]["fingerprint"] == mem["input"]["fingerprint"] == fingerprint(x)
    arrays, _ = read_result(tmp_path / "s.h5")
    assert rel(x, tl.tucker_to_tensor((arrays["core"], factors_of(arrays, "factors/")))) <= 0.05
    cli("tt", "x.h5:/t", "-o", "tt.h5", "--tol", "0.05", "--streaming", "-q")
    rep = load_report(tmp_path / "tt.report.json")
    arrays, _ = read_result(tmp_path / "tt.h5")
    assert rep["parameters"]["streaming"] and "stream" in rep["method"]["used"]
    assert rel(x, tl.tt_to_tensor(factors_of(arrays, "cores/"))) <= 0.05


# --- tt --------------------------------------------------------------------------------


def test_tt_tol_and_max_rank_read_back_by_tensorly(cli, tmp_path):
    x = decaying_tensor((8, 7, 6, 5), seed=8)
    np.save(tmp_path / "x.npy", x)
    cli("tt", "x.npy", "-o", "a.h5", "--tol", "0.05", "-q")
    arrays, attrs = read_result(tmp_path / "a.h5")
    cores = tl.tt_tensor.TTTensor(factors_of(arrays, "cores/"))  # validates the layout
    assert rel(x, tl.tt_to_tensor(cores)) <= 0.05  # δ = ε‖X‖/√(d−1) per bond
    ranks = [1] + [c.shape[2] for c in cores]
    assert attrs["ranks"] == ranks
    cli("tt", "x.npy", "-o", "b.h5", "--max-rank", "2,3,2", "-q")
    arrays, _ = read_result(tmp_path / "b.h5")
    assert [c.shape[2] for c in factors_of(arrays, "cores/")][:-1] == [2, 3, 2]
    rep = load_report(tmp_path / "b.report.json")
    assert rep["rank"]["rule"] == "max_rank" and rep["parameters"]["max_rank"] == [2, 3, 2]


def test_tt_round_reduces_ranks_within_tol(cli, tmp_path):
    x = decaying_tensor((9, 8, 7), seed=9)
    np.save(tmp_path / "x.npy", x)
    cli("tt", "x.npy", "-o", "full.h5", "--tol", "1e-10", "-q")
    cli("tt", "--round", "full.h5", "-o", "r.zarr", "--tol", "0.1", "-q")
    full, _ = read_result(tmp_path / "full.h5")
    rounded, _ = read_result(tmp_path / "r.zarr")
    t_full = tl.tt_to_tensor(factors_of(full, "cores/"))
    t_round = tl.tt_to_tensor(factors_of(rounded, "cores/"))
    assert rel(t_full, t_round) <= 0.1
    rep = load_report(tmp_path / "r.report.json")
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(rel(t_full, t_round),
                                                                       rel=1e-6)  # fmt: skip
    assert rep["parameters"]["round"].endswith("full.h5") and rep["method"]["used"] == "tt-round"
    assert rep["input"]["shape"] == [9, 8, 7]
    assert sum(c.size for c in factors_of(rounded, "cores/")) < sum(
        c.size for c in factors_of(full, "cores/"))  # fmt: skip


# --- usage and data errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["tucker", "x.npy"], 2, "one of --ranks"),
        (["tucker", "x.npy", "--ranks", "2", "--tol", "0.1"], 2, "only one"),
        (["tucker", "x.npy", "--tol", "0.1", "--budget-search", "greedy"], 2, "--budget"),
        (["tucker", "x.npy", "--ranks", "2", "--max-iter", "5"], 2, "hooi"),
        (["tucker", "x.npy", "--ranks", "2,2"], 2, "1 or 3 values"),
        (["tucker", "x.npy", "--ranks", "2,a,2"], 2, "positive integers"),
        (["tucker", "x.npy", "--budget", "100", "--streaming"], 2, "in memory"),
        (["tucker", "x.npz", "--ranks", "2", "--streaming"], 2, "--in-memory"),
        (["tucker", "m.npy", "--ranks", "2"], 65, "SVD"),
        (["tt", "x.npy"], 2, "--tol, --max-rank"),
        (["tt", "--tol", "0.1"], 2, "--round"),
        (["tt", "x.npy", "--round", "y.h5", "--tol", "0.1"], 2, "not both"),
        (["tt", "x.npy", "--tol", "1.5"], 2, "tol"),
        (["tt", "x.npy", "--max-rank", "2,2,2"], 2, "1 or 2 values"),
        (["tt", "--round", "cp.h5", "--tol", "0.1"], 65, "cores/0"),
        (["tt", "--round", "missing.h5", "--tol", "0.1"], 66, "missing.h5"),
        (["tt", "--round", "cp.h5", "--tol", "0.1", "--svd", "gram"], 2, "--svd"),
    ],
)
def test_tensor_usage_and_data_errors(cli, tmp_path, args, code, needle):
    x = planted_cp((6, 5, 4), 2)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "m.npy", np.ones((5, 4)))
    with h5py.File(tmp_path / "cp.h5", "w") as f:
        f["weights"] = np.ones(2)
    proc = cli(*args, "-o", "o.h5", expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o.h5").exists()


# --- every option reaches the core -----------------------------------------------------


def test_every_cp_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.cp as core

    np.save(tmp_path / "x.npy", planted_cp((8, 7, 6), 2, nonneg=True))
    seen = spy_on(monkeypatch, core, "cp")
    run_in_process(tmp_path, monkeypatch, [
        "cp", "x.npy", "-o", "f.h5", "--rank", "2", "--nonneg", "--init", "random", "--tol",
        "1e-5", "--max-iter", "17", "--n-init", "2", "--no-linesearch", "--seed", "4",
        "--max-memory", "300M", "-q",
    ])  # fmt: skip
    expect = {"nonneg": True, "init": "random", "tol": 1e-5, "max_iter": 17, "n_init": 2,
              "linesearch": False, "max_memory": 300 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["_args"][1] == 2
    assert seen["_rng_state"] == np.random.default_rng(4).bit_generator.state
    rep = load_report(tmp_path / "f.report.json")
    assert rep["method"]["details"]["linesearch_steps"]["tried"] == 0
    assert rep["parameters"]["init"] == "random" and rep["parameters"]["n_init"] == 2


def test_every_tucker_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.tucker as core

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("t", data=decaying_tensor((10, 9, 8)), chunks=(2, 9, 8))
    seen = spy_on(monkeypatch, core, "tucker")
    run_in_process(tmp_path, monkeypatch, [
        "tucker", "x.h5:/t", "-o", "a.h5", "--ranks", "3,2,4", "--method", "hooi",
        "--iter-tol", "1e-6", "--max-iter", "7", "--svd", "svd", "--in-memory",
        "--max-memory", "200M", "-q",
    ])  # fmt: skip
    expect = {"ranks": [3, 2, 4], "tol": None, "budget": None, "method": "hooi",
              "tol_iter": 1e-6, "max_iter": 7, "svd": "svd", "streaming": False,
              "max_memory": 200 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect
    run_in_process(tmp_path, monkeypatch, [
        "tucker", "x.h5:/t", "-o", "b.h5", "--budget", "150", "--budget-search",
        "exhaustive", "--svd", "gram", "-q",
    ])  # fmt: skip
    expect = {"ranks": None, "budget": 150, "budget_search": "exhaustive", "svd": "gram"}
    assert {k: seen[k] for k in expect} == expect
    run_in_process(tmp_path, monkeypatch, [
        "tucker", "x.h5:/t", "-o", "c.h5", "--tol", "0.2", "--streaming", "-q",
    ])  # fmt: skip
    assert seen["tol"] == 0.2 and seen["streaming"] is True
    assert type(seen["_args"][0]).__name__.endswith("Handle")  # the file, read slab by slab


def test_every_tt_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.tt as core

    np.save(tmp_path / "x.npy", decaying_tensor((7, 6, 5)))
    seen = spy_on(monkeypatch, core, "tt")
    run_in_process(tmp_path, monkeypatch, [
        "tt", "x.npy", "-o", "a.h5", "--tol", "0.1", "--max-rank", "3,4", "--svd", "svd",
        "--streaming", "--max-memory", "100M", "-q",
    ])  # fmt: skip
    expect = {"tol": 0.1, "max_rank": [3, 4], "svd": "svd", "streaming": True,
              "max_memory": 100 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect
    seen = spy_on(monkeypatch, core, "tt_round")
    run_in_process(tmp_path, monkeypatch, [
        "tt", "--round", "a.h5", "-o", "b.h5", "--tol", "0.3", "--max-rank", "2", "-q",
    ])  # fmt: skip
    assert seen["tol"] == 0.3 and seen["max_rank"] == 2 and len(seen["_args"][0]) == 3
