"""Out-of-core `rankwise svd`: files larger than the memory budget are streamed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from helpers import load_report

from rankwise.formats import read_result


def planted(m, n, s, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (u * s) @ v.T


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 24 MB matrix as chunked HDF5 and Zarr (and NPY for the in-memory reference)."""
    d = tmp_path_factory.mktemp("big")
    a = planted(20000, 150, 0.7 ** np.arange(150), seed=1)
    with h5py.File(d / "a.h5", "w") as f:
        f.create_dataset("x", data=a, chunks=(500, 150), compression="gzip")
    z = zarr.create_array(d / "a.zarr", shape=a.shape, chunks=(1000, 150), dtype="f8",
                          config={"write_empty_chunks": True})  # fmt: skip
    z[:] = a
    np.save(d / "a.npy", a)
    return d, a


@pytest.mark.parametrize("uri", ["a.h5:/x", "a.zarr"])
def test_streams_when_over_budget_and_matches_in_memory(cli, big, uri):
    d, a = big
    cli("svd", d / uri, "-o", "s.h5", "--rank", "8", "--max-memory", "12M", "--force")
    cli("svd", d / "a.npy", "-o", "m.h5", "--rank", "8", "--method", "exact", "--force")
    rep = load_report(cli.cwd / "s.report.json")
    rm = load_report(cli.cwd / "m.report.json")
    assert rep["method"]["used"] == "streaming" and "memory budget" in rep["method"]["reason"]
    assert rep["method"]["details"]["block_rows"] % (500 if uri.endswith("x") else 1000) == 0
    assert rep["memory"]["estimate_bytes"] <= 12 << 20
    assert rep["input"]["fingerprint"] == rm["input"]["fingerprint"]  # hashed while streaming
    s_arr, _ = read_result(cli.cwd / "s.h5")
    m_arr, _ = read_result(cli.cwd / "m.h5")
    # 0.7-geometric spectrum: a few passes converge to rounding, signs fixed by svd_flip.
    np.testing.assert_allclose(s_arr["S"], m_arr["S"], rtol=1e-9)
    np.testing.assert_allclose(s_arr["U"], m_arr["U"], atol=1e-7)


def test_forced_streaming_and_centering(cli, big):
    d, a = big
    cli("svd", d / "a.h5:/x", "-o", "c.npz", "--rank", "5", "--method", "streaming", "--center",
        "--power-iters", "4", "--spectral-iters", "1")  # fmt: skip
    rep = load_report(cli.cwd / "c.report.json")
    assert rep["method"]["used"] == "streaming" and rep["method"]["reason"] == "requested"
    d_ = rep["method"]["details"]
    assert d_["power_iters"] == 4 and d_["passes"] == 4 + 2 + 1
    arrays, _ = read_result(cli.cwd / "c.npz")
    mu = a.mean(axis=0)
    np.testing.assert_allclose(arrays["mean"], mu, atol=1e-15)
    np.testing.assert_allclose(arrays["S"], np.linalg.svd(a - mu, compute_uv=False)[:5],
                               rtol=1e-9)  # fmt: skip


@pytest.mark.slow
def test_streaming_peak_memory_stays_far_below_the_file(cli, tmp_path):
    # 320 MB on disk, 64 MB budget: the process must never hold the matrix.
    rng = np.random.default_rng(2)
    m, n = 80000, 500
    with h5py.File(tmp_path / "big.h5", "w") as f:
        ds = f.create_dataset("x", shape=(m, n), dtype="f8", chunks=(2000, n))
        basis = rng.standard_normal((8, n))
        for start in range(0, m, 10000):
            ds[start : start + 10000] = rng.standard_normal((10000, 8)) @ basis + 0.01 * (
                rng.standard_normal((10000, n))
            )
    cli("svd", "big.h5:/x", "-o", "o.h5", "--rank", "8", "--max-memory", "64M")
    rep = load_report(tmp_path / "o.report.json")
    assert rep["method"]["used"] == "streaming"
    size = m * n * 8
    # Peak RSS = interpreter + numpy/scipy/h5py/zarr (~150 MB) + the 64 MB budget.
    assert rep["memory"]["peak_rss_bytes"] < 64 * 2**20 + 200 * 2**20 < size
