"""`rankwise info`: listing without loading, single arrays, --scan counts."""

from __future__ import annotations

import json

import h5py
import numpy as np
from helpers import SAMPLES


def test_info_lists_every_array_of_a_file(cli, tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("a/b/dense", data=np.ones((6, 4), "f4"), chunks=(3, 4),
                         compression="gzip")  # fmt: skip
        g = f.create_group("sp")
        g["row"], g["col"] = np.array([0, 2]), np.array([1, 1])
        g["data"], g["shape"] = np.array([1.0, 2.0]), np.array([3, 3])
    listing = json.loads(cli("info", "f.h5", "--json").stdout)
    by = {a["name"].lstrip("/"): a for a in listing["arrays"]}
    assert set(by) == {"a/b/dense", "sp"}
    assert by["a/b/dense"]["shape"] == [6, 4] and by["a/b/dense"]["dtype"] == "float32"
    assert list(by["a/b/dense"]["chunks"]) == [3, 4] and "gzip" in by["a/b/dense"]["compression"]
    assert by["sp"]["sparse"] and by["sp"]["nnz"] == 2 and by["sp"]["shape"] == [3, 3]
    table = cli("info", "f.h5").stdout
    assert "a/b/dense" in table and "gzip" in table


def test_info_scan_counts_nan_and_inf(cli, tmp_path):
    a = np.ones((50, 7))
    a[3, 2] = a[10, 1] = np.nan
    a[5, 5] = -np.inf
    np.save(tmp_path / "x.npy", a)
    (entry,) = json.loads(cli("info", "x.npy", "--json", "--scan").stdout)["arrays"]
    assert entry["nan"] == 2 and entry["inf"] == 1 and entry["nnz"] == 350
    plain = json.loads(cli("info", "x.npy", "--json").stdout)["arrays"][0]
    assert "nan" not in plain  # no scan unless asked


def test_info_single_dataset_and_samples(cli):
    (entry,) = json.loads(cli("info", SAMPLES / "heat.h5:/snapshots", "--json").stdout)["arrays"]
    assert entry["shape"] == [300, 120]
    listing = json.loads(cli("info", SAMPLES / "burgers.zarr", "--json").stdout)
    assert any(a["shape"] == [512, 200] for a in listing["arrays"])
    (entry,) = json.loads(cli("info", SAMPLES / "ratings.mtx", "--json").stdout)["arrays"]
    assert entry["sparse"] and entry["nnz"] > 0


def test_info_never_loads_a_huge_declared_array(cli, tmp_path):
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("x", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    (entry,) = json.loads(cli("info", "huge.h5", "--json").stdout)["arrays"]
    assert entry["shape"] == [10**7, 10**6]


def test_info_errors(cli, tmp_path):
    proc = cli("info", "missing.zarr", expect=66)
    assert proc.stderr.count("\n") == 1


def test_help_and_version(cli):
    out = cli("--help").stdout
    assert "svd" in out and "info" in out
    assert cli("--version").stdout.startswith("rankwise ")
    assert "--power-iters" in cli("svd", "--help").stdout


def test_info_scan_lists_every_array_even_when_one_is_broken(cli, tmp_path):
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f["good"] = np.ones((3, 3))
        g = f.create_group("bad")
        g["row"], g["col"] = np.array([0, 9]), np.array([1, 1])  # row 9 is out of range
        g["data"], g["shape"] = np.array([1.0, 2.0]), np.array([3, 3])
    proc = cli("info", "odd.h5", "--scan", "--json", expect=65)
    by = {a["name"].lstrip("/"): a for a in json.loads(proc.stdout)["arrays"]}
    assert by["good"]["nnz"] == 9
    assert any("scan failed" in n for n in by["bad"]["notes"])
    assert proc.stderr.count("\n") == 1
