"""`rankwise complete` end to end: dense NaN input, sparse MatrixMarket and COO tensors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import load_report, run_in_process, spy_on

from rankwise.formats import read_result


def planted(m=300, n=200, k=5, frac=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    mask = rng.random(x.shape) < frac
    return x, mask


def write_coo_tensor(path, t, mask):
    idx = np.nonzero(mask)
    with h5py.File(path, "w") as f:
        g = f.create_group("t")
        for i, ix in enumerate(idx):
            g[f"index_{i}"] = ix
        g["data"] = t[idx]
        g["shape"] = np.array(t.shape)


def test_softimpute_recovers_held_out_entries_of_a_dense_nan_matrix(cli, tmp_path):
    x, mask = planted()
    np.save(tmp_path / "x.npy", np.where(mask, x, np.nan))
    proc = cli("complete", "x.npy", "-o", "c.h5", "--rank", "5", "--holdout", "0.1",
               "--seed", "4")  # fmt: skip
    arrays, attrs = read_result(tmp_path / "c.h5")
    model = (arrays["U"] * arrays["S"]) @ arrays["Vt"]
    # above the sample-complexity threshold a planted rank-5 matrix is recovered everywhere
    assert np.linalg.norm(model - x) / np.linalg.norm(x) <= 1e-4
    rep = load_report(tmp_path / "c.report.json")
    m = rep["metrics"]
    n_obs = int(mask.sum())
    assert m["n_observed"] == n_obs and m["n_train"] + m["n_test"] == n_obs
    assert m["n_test"] == round(0.1 * n_obs) and rep["seed"] == 4
    assert m["test"]["relative_error"] <= 1e-4 < m["baseline"]["test"]["relative_error"]
    assert rep["input"]["missing"] == x.size - n_obs and attrs["method"] == "softimpute"
    assert "held-out RMSE" in proc.stderr


def test_sparse_input_altmin_cg_and_same_entries_same_fingerprint(cli, tmp_path):
    x, mask = planted(seed=1)
    r, c = np.nonzero(mask)
    scipy.io.mmwrite(tmp_path / "x.mtx", sp.coo_matrix((x[r, c], (r, c)), shape=x.shape))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        g = f.create_group("a")
        p = np.random.default_rng(2).permutation(len(r))  # another order, same entries
        g["row"], g["col"], g["data"], g["shape"] = r[p], c[p], x[r, c][p], np.array(x.shape)
    cli("complete", "x.mtx", "-o", "a.npz", "--rank", "5", "--method", "altmin", "--solver",
        "cg", "--holdout", "0.1", "-q")  # fmt: skip
    cli("complete", "x.h5:/a", "-o", "b.npz", "--rank", "5", "-q")
    a, b = load_report(tmp_path / "a.report.json"), load_report(tmp_path / "b.report.json")
    assert a["input"]["fingerprint"] == b["input"]["fingerprint"]
    assert a["input"]["sparse"] and a["input"]["nnz"] == int(mask.sum())
    assert a["metrics"]["test"]["relative_error"] <= 1e-4  # the recovery level
    assert a["parameters"]["solver"] == "cg" and b["parameters"]["solver"] is None


def test_cp_completion_of_a_sparse_tensor(cli, tmp_path):
    rng = np.random.default_rng(3)
    t = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 2)) for n in (20, 18, 16)])
    write_coo_tensor(tmp_path / "t.h5", t, rng.random(t.shape) < 0.4)
    cli("complete", "t.h5:/t", "-o", "t.zarr", "--rank", "2", "--holdout", "0.1",
        "--n-init", "2", "-q")  # fmt: skip
    arrays, _ = read_result(tmp_path / "t.zarr")
    f = [arrays[f"factors/{i}"] for i in range(3)]
    model = np.einsum("r,ir,jr,kr->ijk", arrays["weights"], *f)
    # 40% of 5760 entries for 108 parameters: far above the threshold; the 1e-3
    assert np.linalg.norm(model - t) / np.linalg.norm(t) <= 1e-3
    rep = load_report(tmp_path / "t.report.json")
    assert rep["parameters"]["method"] == "cp" and rep["parameters"]["n_init"] == 2
    assert rep["input"]["shape"] == [20, 18, 16]


def test_write_completed_keeps_observed_entries_and_respects_the_budget(cli, tmp_path):
    x, mask = planted(80, 60, 3, 0.5, seed=5)
    obs = np.where(mask, x, np.nan)
    np.save(tmp_path / "x.npy", obs)
    cli("complete", "x.npy", "-o", "c.h5", "--rank", "3", "--write-completed", "--clip",
        "-3,3", "-q")  # fmt: skip
    arrays, _ = read_result(tmp_path / "c.h5")
    done = arrays["completed"]
    np.testing.assert_array_equal(done[mask], x[mask])  # observed entries as given
    model = np.clip((arrays["U"] * arrays["S"]) @ arrays["Vt"], -3, 3)
    np.testing.assert_allclose(done[~mask], model[~mask], atol=1e-12)
    proc = cli("complete", "x.npy", "-o", "d.h5", "--rank", "3", "--write-completed",
               "--max-memory", "60K", expect=65)  # fmt: skip
    assert "memory budget" in proc.stderr and not (tmp_path / "d.h5").exists()


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["x.npy", "--rank", "2", "--method", "cp"], 2, "tensors"),
        (["x.npy", "--rank", "2", "--method", "altmin", "--reg-path", "3"], 2, "--reg-path"),
        (["x.npy", "--rank", "2", "--method", "altmin", "--cg-steps", "5"], 2, "--solver cg"),
        (["x.npy", "--rank", "2", "--clip", "5,1"], 2, "LO < HI"),
        (["x.npy", "--rank", "2", "--holdout", "1.5"], 2, "holdout"),
        (["x.npy", "--rank", "2", "--reg", "0"], 2, "reg"),
        (["dup.mtx", "--rank", "2"], 65, "duplicate"),
        (["nan.npy", "--rank", "2"], 65, "observed"),
    ],
)
def test_complete_usage_and_data_errors(cli, tmp_path, args, code, needle):
    x, mask = planted(20, 10, 2, 0.6)
    np.save(tmp_path / "x.npy", np.where(mask, x, np.nan))
    np.save(tmp_path / "nan.npy", np.full((5, 4), np.nan))
    dup = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [1, 1, 2])), shape=(4, 4))
    scipy.io.mmwrite(tmp_path / "dup.mtx", dup)
    proc = cli("complete", *args, "-o", "o.h5", expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o.h5").exists()


def test_every_complete_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.complete as core

    x, mask = planted(40, 30, 2, 0.6)
    np.save(tmp_path / "x.npy", np.where(mask, x, np.nan))
    seen = spy_on(monkeypatch, core, "complete")
    run_in_process(tmp_path, monkeypatch, [
        "complete", "x.npy", "-o", "a.h5", "--rank", "2", "--reg", "0.01", "--reg-path", "3",
        "--init", "random", "--tol", "1e-6", "--max-iter", "40", "--holdout", "0.2", "--clip",
        "-9,9", "--seed", "6", "--max-memory", "300M", "-q",
    ])  # fmt: skip
    expect = {"method": "softimpute", "reg": 0.01, "reg_path": 3, "init": "random",
              "tol": 1e-6, "max_iter": 40, "holdout": 0.2, "clip": (-9.0, 9.0), "rng": 6,
              "max_memory": 300 << 20}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["_args"][1] == 2
    run_in_process(tmp_path, monkeypatch, [
        "complete", "x.npy", "-o", "b.h5", "--rank", "2", "--method", "altmin", "--solver",
        "cg", "--cg-steps", "5", "-q",
    ])  # fmt: skip
    assert seen["method"] == "altmin" and seen["solver"] == "cg" and seen["cg_steps"] == 5
