"""`rankwise nmf`, `cur`, `kpsvd` and `svd` with weights, end to end on real files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import load_report, run_in_process, spy_on

from rankwise.formats import read_result


def planted_nonneg(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((m, k)) @ rng.random((k, n))


def decaying(m, n, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    v, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    s = 1.0 / np.arange(1, min(m, n) + 1)  # slowly decaying spectrum
    return (u * s) @ v.T


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(a)


# --- nmf -------------------------------------------------------------------------------


def test_nmf_fits_planted_model_and_reports_the_explicit_error(cli, tmp_path):
    x = planted_nonneg(60, 40, 4)
    np.save(tmp_path / "x.npy", x)
    proc = cli("nmf", "x.npy", "-o", "f.h5", "--rank", "4", "--tol", "1e-10",
               "--max-iter", "2000")  # fmt: skip
    arrays, attrs = read_result(tmp_path / "f.h5")
    w, h = arrays["W"], arrays["H"]
    assert w.shape == (60, 4) and h.shape == (4, 40) and attrs["kind"] == "nmf"
    assert (w >= 0).all() and (h >= 0).all()
    rep = load_report(tmp_path / "f.report.json")
    err = rel(x, w @ h)
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-6, abs=1e-15)
    assert err < 1e-3  # an exact rank-4 nonnegative model (HALS converges to it)
    objectives = [e["objective"] for e in rep["history"]]
    assert all(
        b <= a * (1 + 1e-12) for a, b in zip(objectives, objectives[1:], strict=False)
    )  # monotone
    assert rep["method"]["used"] == "hals" and rep["parameters"]["init"] == "nndsvda"
    assert "NMF rank 4" in proc.stderr


def test_nmf_masked_recovers_held_out_entries(cli, tmp_path):
    # planted rank 5, 30% missing: the held-out entries are predicted (issue 4 target)
    rng = np.random.default_rng(3)
    x = rng.random((80, 5)) @ rng.random((5, 60))
    miss = rng.random(x.shape) < 0.3
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["x"] = np.where(miss, np.nan, x)
    cli("nmf", "m.h5:/x", "-o", "f.npz", "--rank", "5", "--tol", "1e-12", "--max-iter",
        "3000", "-q")  # fmt: skip
    arrays, _ = read_result(tmp_path / "f.npz")
    pred = arrays["W"] @ arrays["H"]
    held_out = np.linalg.norm((pred - x)[miss]) / np.linalg.norm(x[miss])
    assert held_out <= 1e-3
    rep = load_report(tmp_path / "f.report.json")
    assert rep["input"]["missing"] == int(miss.sum()) and rep["method"]["details"]["masked"]


def test_nmf_sparse_input_stays_sparse_and_kl_runs(cli, tmp_path):
    a = sp.random(120, 90, density=0.05, random_state=1, format="coo") * 5
    scipy.io.mmwrite(tmp_path / "s.mtx", a)
    cli("nmf", "s.mtx", "-o", "f.h5", "--rank", "3", "--loss", "kl", "--max-iter", "30")
    rep = load_report(tmp_path / "f.report.json")
    assert rep["method"]["details"]["sparse"] is True and rep["method"]["used"] == "mu"
    assert rep["parameters"]["loss"] == "kl" and "kl_divergence" in rep["metrics"]
    assert rep["input"]["nnz"] == a.nnz


def test_nmf_negative_input_is_bad_data(cli, tmp_path):
    np.save(tmp_path / "x.npy", np.array([[1.0, -2.0], [3.0, 4.0]]))
    proc = cli("nmf", "x.npy", "-o", "f.h5", "--rank", "1", expect=65)
    assert proc.stderr.count("\n") == 1 and "negative" in proc.stderr
    assert not (tmp_path / "f.h5").exists()


def test_semi_nmf_on_mixed_sign_data(cli, tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 3)) @ rng.random((3, 40))  # F free, G ≥ 0
    np.save(tmp_path / "x.npy", x)
    cli("nmf", "x.npy", "-o", "f.zarr", "--rank", "3", "--semi", "--tol", "1e-12",
        "--max-iter", "2000")  # fmt: skip
    arrays, attrs = read_result(tmp_path / "f.zarr")
    assert (arrays["H"] >= 0).all() and (arrays["W"] < 0).any()  # W takes mixed signs
    assert rel(x, arrays["W"] @ arrays["H"]) < 1e-3 and attrs["semi"]
    rep = load_report(tmp_path / "f.report.json")
    assert rep["parameters"]["semi"] and rep["parameters"]["init"] == "svd"
    obj = [e["objective"] for e in rep["history"]]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(obj, obj[1:], strict=False))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--semi", "--loss", "kl"], "--loss"),
        (["--semi", "--l1-w", "0.1"], "--l1-w"),
        (["--semi", "--init", "nndsvd"], "--init nndsvd"),
        (["--init", "svd"], "--init svd"),
        (["--solver", "hals", "--loss", "kl"], "KL"),
        (["--l2-h", "-1"], "--l2-h"),
    ],
)
def test_nmf_usage_errors(cli, tmp_path, args, needle):
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    proc = cli("nmf", "x.npy", "-o", "f.h5", "--rank", "2", *args, expect=2)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "f.h5").exists()


# --- every option reaches the core ------------------------------------------------------


def test_every_nmf_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.nmf as core

    np.save(tmp_path / "x.npy", planted_nonneg(30, 20, 3))
    seen = spy_on(monkeypatch, core, "nmf")
    run_in_process(tmp_path, monkeypatch, [
        "nmf", "x.npy", "-o", "f.h5", "--rank", "3", "--solver", "mu", "--loss", "kl",
        "--init", "nndsvdar", "--l1-w", "0.1", "--l1-h", "0.2", "--l2-w", "0.3", "--l2-h",
        "0.4", "--tol", "1e-5", "--max-iter", "7", "--n-init", "2", "--seed", "5",
        "--max-memory", "500M", "-q",
    ])  # fmt: skip
    assert seen["_args"][1] == 3
    expect = {"solver": "mu", "loss": "kl", "init": "nndsvdar", "l1_w": 0.1, "l1_h": 0.2,
              "l2_w": 0.3, "l2_h": 0.4, "tol": 1e-5, "max_iter": 7, "n_init": 2,
              "max_memory": 500 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect
    assert seen["_rng_state"] == np.random.default_rng(5).bit_generator.state
    rep = load_report(tmp_path / "f.report.json")
    assert rep["method"]["details"]["n_init"] == 2 and len(rep["history"]) <= 7
    assert rep["metrics"]["objective"] > 0 and rep["parameters"]["l2_h"] == 0.4

    seen = spy_on(monkeypatch, core, "semi_nmf")
    run_in_process(tmp_path, monkeypatch, [
        "nmf", "x.npy", "-o", "g.h5", "--rank", "2", "--semi", "--init", "random", "--tol",
        "1e-3", "--max-iter", "9", "--n-init", "3", "--max-memory", "400M", "-q",
    ])  # fmt: skip
    expect = {"init": "random", "tol": 1e-3, "max_iter": 9, "n_init": 3,
              "max_memory": 400 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["_args"][1] == 2


def test_every_cur_and_kpsvd_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.cur as cur_core
    import rankwise.core.kpsvd as kp_core

    np.save(tmp_path / "x.npy", decaying(40, 36))
    seen = spy_on(monkeypatch, cur_core, "cur")
    run_in_process(tmp_path, monkeypatch, [
        "cur", "x.npy", "-o", "c.h5", "--rank", "5", "--method", "exact", "--oversample", "4",
        "--power-iters", "2", "--no-optimal", "--seed", "3", "--max-memory", "300M", "-q",
    ])  # fmt: skip
    expect = {"method": "exact", "oversample": 4, "power_iters": 2, "compare_optimal": False,
              "max_memory": 300 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["_args"][1] == 5
    rep = load_report(tmp_path / "c.report.json")
    assert "optimal_relative_error" not in rep["metrics"]

    seen = spy_on(monkeypatch, kp_core, "kpsvd")
    run_in_process(tmp_path, monkeypatch, [
        "kpsvd", "x.npy", "-o", "k.h5", "--block", "4x6", "--tol", "0.3", "--method",
        "randomized", "--oversample", "3", "--power-iters", "1", "--seed", "2",
        "--max-memory", "200M", "-q",
    ])  # fmt: skip
    assert seen["_args"][1] == (4, 6) and seen["rule"].kind == "tol" and seen["rule"].value == 0.3
    expect = {"method": "randomized", "oversample": 3, "power_iters": 1, "elbow": False,
              "max_memory": 200 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect
    rep = load_report(tmp_path / "k.report.json")
    assert rep["method"]["details"]["svd"]["method"] == "randomized"


def test_every_weighted_svd_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.wsvd as core

    a = decaying(30, 20)
    np.save(tmp_path / "x.npy", a)
    np.save(tmp_path / "r.npy", np.linspace(1, 2, 30))
    np.save(tmp_path / "c.npy", np.linspace(1, 3, 20))
    np.save(tmp_path / "w.npy", np.random.default_rng(0).random((30, 20)))
    seen = spy_on(monkeypatch, core, "weighted_svd")
    run_in_process(tmp_path, monkeypatch, [
        "svd", "x.npy", "-o", "a.h5", "--energy", "0.9", "--row-weights", "r.npy",
        "--col-weights", "c.npy", "--method", "randomized", "--oversample", "4",
        "--power-iters", "2", "--block-size", "3", "--spectral-iters", "1", "--seed", "1", "-q",
    ])  # fmt: skip
    np.testing.assert_array_equal(seen["row_weights"], np.linspace(1, 2, 30))
    np.testing.assert_array_equal(seen["col_weights"], np.linspace(1, 3, 20))
    expect = {"method": "randomized", "oversample": 4, "power_iters": 2, "block_size": 3,
              "spectral_iters": 1}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["_args"][1].kind == "energy"

    seen = spy_on(monkeypatch, core, "elementwise_weighted_svd")
    run_in_process(tmp_path, monkeypatch, [
        "svd", "x.npy", "-o", "b.h5", "--rank", "3", "--weights", "w.npy", "--iter-tol",
        "1e-4", "--max-iter", "11", "--max-memory", "100M", "-q",
    ])  # fmt: skip
    assert seen["_args"][2] == 3 and seen["tol"] == 1e-4 and seen["max_iter"] == 11
    assert seen["max_memory"] == 100 << 20
    np.testing.assert_array_equal(seen["_args"][1], np.load(tmp_path / "w.npy"))


# --- cur -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["randomized", "exact"])
def test_cur_selects_actual_rows_and_columns(cli, tmp_path, method):
    a = decaying(150, 100, seed=2)
    np.save(tmp_path / "a.npy", a)
    cli("cur", "a.npy", "-o", "c.npz", "--rank", "10", "--method", method, "-q")
    arr, attrs = read_result(tmp_path / "c.npz")
    rows, cols = arr["rows"], arr["cols"]
    assert rows.dtype.kind == "i" and cols.dtype.kind == "i" and attrs["kind"] == "cur"
    np.testing.assert_array_equal(arr["C"], a[:, cols])
    np.testing.assert_array_equal(arr["R"], a[rows, :])
    err = rel(a, arr["C"] @ arr["U"] @ arr["R"])
    opt = np.sqrt(np.sum((1.0 / np.arange(11, 101)) ** 2) / np.sum(1.0 / np.arange(1, 101) ** 2))
    rep = load_report(tmp_path / "c.report.json")
    m = rep["metrics"]
    assert m["relative_frobenius_error"] == pytest.approx(err, rel=1e-8)
    assert m["optimal_relative_error"] == pytest.approx(opt, rel=1e-6)
    assert err <= 2.0 * opt  # issue 4 target on a decaying spectrum
    assert m["rows"] == rows.tolist() and m["cols"] == cols.tolist()


def test_cur_sparse_input(cli, tmp_path):
    a = sp.random(200, 150, density=0.05, random_state=2, format="coo")
    scipy.io.mmwrite(tmp_path / "s.mtx", a)
    cli("cur", "s.mtx", "-o", "c.h5", "--rank", "6", "-q")
    arr, _ = read_result(tmp_path / "c.h5")
    dense = a.toarray()
    np.testing.assert_allclose(arr["C"], dense[:, arr["cols"]])
    rep = load_report(tmp_path / "c.report.json")
    err = rel(dense, arr["C"] @ arr["U"] @ arr["R"])
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-8)


# --- kpsvd -----------------------------------------------------------------------------


def kron_sum(r, m1, n1, m2, n2, seed=0):
    rng = np.random.default_rng(seed)
    s = 2.0 ** -np.arange(r)
    return sum(s[i] * np.kron(rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2)))
               for i in range(r))  # fmt: skip


@pytest.mark.parametrize("rule", [["--elbow"], ["--rank", "3"], ["--energy", "0.999999999"]])
def test_kpsvd_reproduces_an_exact_kronecker_sum(cli, tmp_path, rule):
    a = kron_sum(3, 6, 5, 4, 7)
    np.save(tmp_path / "a.npy", a)
    cli("kpsvd", "a.npy", "-o", "k.h5", "--block", "6x5", *rule, "-q")
    arr, attrs = read_result(tmp_path / "k.h5")
    assert arr["A"].shape == (3, 6, 5) and arr["B"].shape == (3, 4, 7)
    assert attrs["kind"] == "kpsvd"
    approx = sum(s * np.kron(x, y) for s, x, y in zip(arr["S"], arr["A"], arr["B"], strict=True))
    assert rel(a, approx) <= 1e-12
    rep = load_report(tmp_path / "k.report.json")
    by = {r["rule"]: r["rank"] for r in rep["rank"]["by_rule"]}
    assert by["elbow"] == 3 and rep["rank"]["value"] == 3  # every rule finds the 3 terms
    assert rep["parameters"]["block"] == [6, 5]


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--block", "5x5", "--rank", "1"], 2, "not divisible"),
        (["--block", "6by5", "--rank", "1"], 2, "M1xN1"),
        (["--block", "6x5", "--rank", "1", "--elbow"], 2, "--elbow"),
        (["--block", "6x5", "--elbow", "--method", "randomized"], 2, "exact"),
    ],
)
def test_kpsvd_usage_errors(cli, tmp_path, args, code, needle):
    np.save(tmp_path / "a.npy", kron_sum(1, 6, 5, 4, 7))
    proc = cli("kpsvd", "a.npy", "-o", "k.h5", *args, expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1


# --- weighted svd ----------------------------------------------------------------------


def test_row_col_weighted_svd_matches_brute_force(cli, tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 25))
    r, c = rng.uniform(0.5, 4, 40), rng.uniform(0.2, 2, 25)
    np.save(tmp_path / "a.npy", a)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["rows"], f["cols"] = r, c
    cli("svd", "a.npy", "-o", "o.h5", "--rank", "4", "--row-weights", "w.h5:/rows",
        "--col-weights", "w.h5:/cols", "-q")  # fmt: skip
    arr, attrs = read_result(tmp_path / "o.h5")
    approx = (arr["U"] * arr["S"]) @ arr["Vt"]
    # brute force: the best rank-4 fit in the weighted norm, by the SVD of the scaled matrix
    sr, sc = np.sqrt(r)[:, None], np.sqrt(c)[None, :]
    u, s, vt = np.linalg.svd(sr * a * sc)
    best = (u[:, :4] * s[:4]) @ vt[:4] / sr / sc
    np.testing.assert_allclose(approx, best, atol=1e-10 * np.abs(a).max())
    rep = load_report(tmp_path / "o.report.json")
    werr = np.linalg.norm(sr * (a - approx) * sc) / np.linalg.norm(sr * a * sc)
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(werr, rel=1e-8)
    assert rep["metrics"]["unweighted_relative_error"] == pytest.approx(rel(a, approx), rel=1e-8)
    assert rep["parameters"]["row_weights"]["uri"].endswith("w.h5:/rows")
    assert attrs["weighted"] == "rows/columns"


def test_elementwise_weights_ignore_zero_weight_nan_entries(cli, tmp_path):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((30, 3)) @ rng.standard_normal((3, 20))
    w = rng.uniform(0.5, 2.0, a.shape)
    w[rng.random(a.shape) < 0.2] = 0.0
    np.save(tmp_path / "a.npy", np.where(w == 0, np.nan, a))
    np.save(tmp_path / "w.npy", w)
    cli("svd", "a.npy", "-o", "o.npz", "--rank", "3", "--weights", "w.npy", "--iter-tol",
        "1e-14", "--max-iter", "3000", "-q")  # fmt: skip
    arr, _ = read_result(tmp_path / "o.npz")
    approx = (arr["U"] * arr["S"]) @ arr["Vt"]
    assert rel(a, approx) <= 1e-5  # a planted rank-3 matrix is recovered, also where w = 0
    rep = load_report(tmp_path / "o.report.json")
    obj = [e["objective"] for e in rep["history"]]
    assert all(b <= a_ * (1 + 1e-12) for a_, b in zip(obj, obj[1:], strict=False))
    assert rep["parameters"]["weights"]["shape"] == [30, 20]


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--rank", "2", "--weights", "w.npy", "--row-weights", "r.npy"], 2, "not both"),
        (["--tol", "0.1", "--weights", "w.npy"], 2, "--rank"),
        (["--rank", "2", "--weights", "w.npy", "--method", "exact"], 2, "--method"),
        (["--rank", "2", "--iter-tol", "0.1"], 2, "--weights only"),
        (["--rank", "2", "--row-weights", "r.npy", "--center"], 2, "--center"),
        (["--rank", "2", "--row-weights", "bad.npy"], 65, "positive"),
        (["--rank", "2", "--row-weights", "short.npy"], 65, "shape"),
        (["--rank", "2", "--weights", "short.npy"], 65, "shape"),
    ],
)
def test_weighted_svd_errors(cli, tmp_path, args, code, needle):
    np.save(tmp_path / "a.npy", np.ones((6, 4)))
    np.save(tmp_path / "w.npy", np.ones((6, 4)))
    np.save(tmp_path / "r.npy", np.ones(6))
    np.save(tmp_path / "bad.npy", np.r_[np.ones(5), -1.0])
    np.save(tmp_path / "short.npy", np.ones(5))
    proc = cli("svd", "a.npy", "-o", "o.h5", *args, expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "o.h5").exists()
