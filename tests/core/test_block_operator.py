"""Passes over row blocks of a file: the parallel pass (one reader-and-worker per BLAS thread)
against numpy on the whole matrix, and against the sequential pass."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
import zarr
from threadpoolctl import threadpool_limits

import rankwise.formats as F
from rankwise.core.errors import DataError
from rankwise.core.operator import BlockOperator


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("blocks")
    a = np.random.default_rng(3).standard_normal((5003, 37)) + 2.5  # off-centre columns
    with h5py.File(d / "a.h5", "w") as f:
        f.create_dataset("x", data=a, chunks=(250, 37))
    zarr.create_array(d / "a.zarr", shape=a.shape, chunks=(400, 37), dtype="f8")[...] = a
    np.save(d / "a.npy", a)
    return d, a


URIS = ["a.h5:/x", "a.zarr", "a.npy"]


def _op(d, uri, *, prefetch=True, hook=None):
    return BlockOperator(F.open(d / uri), block_rows=333, dtype=np.float64, prefetch=prefetch,
                         on_first_pass=hook)  # fmt: skip


@pytest.mark.parametrize("uri", URIS)
def test_parallel_pass_equals_numpy_and_the_sequential_pass(files, uri):
    d, a = files
    w = np.random.default_rng(4).standard_normal((37, 6))
    with threadpool_limits(2, user_api="blas"):
        par = _op(d, uri)
        assert par._slots() == 2
        z, y, ysum, st = par.gram_pass(w, keep=True, stats=True)
    seq = _op(d, uri, prefetch=False)
    assert seq._slots() == 1
    z1, y1, ysum1, st1 = seq.gram_pass(w, keep=True, stats=True)
    yt = a @ w
    np.testing.assert_allclose(z, a.T @ yt, rtol=1e-12)
    np.testing.assert_allclose(y, yt, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ysum, yt.sum(axis=0), rtol=1e-12)
    assert st.raw_sq == pytest.approx(float((a * a).sum()), rel=1e-13)
    # the magnitude stands in for max |A| within the range where nothing is rescaled
    assert np.abs(a).max() <= st.magnitude <= 2.0**390 and st.count == a.shape[0]
    np.testing.assert_allclose(st.mean, a.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(st.m2, ((a - a.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)
    for got, ref in ((z, z1), (y, y1), (st.m2, st1.m2)):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert par.passes == 1 and par.bytes_read == a.nbytes and len(par.pass_seconds) == 1
    with threadpool_limits(2, user_api="blas"):
        np.testing.assert_allclose(par.matmat(w), yt, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(par.rmatmat(yt), a.T @ yt, rtol=1e-12)
        assert par.fro_norm_sq() == pytest.approx(float((a * a).sum()), rel=1e-13)
        np.testing.assert_allclose(par.column_mean(), a.mean(axis=0), rtol=1e-14)
        raw = par.gram_pass(w, stats=True, center_stats=False)[3]  # no means without --center
        assert raw.count == a.shape[0] and raw.magnitude == st.magnitude
        assert raw.raw_sq == pytest.approx(st.raw_sq, rel=1e-14) and not raw.mean.any()
        # the slot of a block never depends on timing: the same pass gives the same bits
        z2, y2, _, _ = par.gram_pass(w, keep=True)
    assert np.array_equal(z2, z) and np.array_equal(y2, y)


def test_the_first_pass_hashes_the_blocks_from_every_worker(files):
    d, a = files
    fp = F.Fingerprinter(a.dtype, a.shape, sparse=False)
    seen = set()

    def hook(start, blk):
        seen.add(threading.current_thread().name)
        fp.update_rows(start, blk)

    with threadpool_limits(2, user_api="blas"):
        op = _op(d, "a.h5:/x", hook=hook)
        op.gram_pass(np.ones((37, 2)))
        op.gram_pass(np.ones((37, 2)))  # the hook sees the first pass only
    assert len(seen) == 2
    assert fp.hexdigest() == F.fingerprint(a)


def test_an_error_in_a_worker_stops_the_pass_and_reaches_the_caller(tmp_path):
    a = np.ones((3000, 8))
    a[2900, 3] = np.nan  # in the last block: slot 1 of 2 finds it
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=a, chunks=(100, 8))
    before = threading.active_count()
    with threadpool_limits(2, user_api="blas"):
        op = BlockOperator(F.open(tmp_path / "a.h5:/x"), block_rows=100, dtype=np.float64)
        assert op._slots() == 2
        with pytest.raises(DataError, match="NaN"):
            op.gram_pass(np.ones((8, 2)))
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("exponent", "rows", "dtype"),
    [(450, 1000, "f8"), (-450, 3000, "f8"), (-450, 1000, "f8"), (0, 3000, "f8"),
     (50, 3000, "f4"), (-50, 3000, "f4"), (30, 3000, "f4")],
)  # fmt: skip
def test_the_magnitude_is_exact_max_where_data_is_extreme(tmp_path, exponent, rows, dtype):
    """Blocks whose squares leave the dtype's safe range report max |A| exactly (the
    rescaling decision takes its exponent); ordinary blocks may report a stand-in, never one
    that changes the decision."""
    from rankwise.core.validate import power_of_two_scale

    a = np.random.default_rng(9).standard_normal((3000, 20))
    a[:rows] *= 2.0**exponent
    a = a.astype(dtype)
    np.save(tmp_path / "x.npy", a)
    op = BlockOperator(F.open(tmp_path / "x.npy"), block_rows=500, dtype=a.dtype)
    with np.errstate(over="ignore", under="ignore"):
        st = op.gram_pass(np.ones((20, 2), dtype=a.dtype), stats=True, center_stats=False)[3]
    amax = float(np.abs(a).max())
    safe = 400 if dtype == "f8" else 40
    # the max is extreme when big rows exist, or when every row is tiny
    scaled = exponent > safe or (exponent < -safe and rows == 3000)
    assert (power_of_two_scale(amax, a.dtype) != 1.0) == scaled
    if scaled:
        assert st.magnitude == amax
    assert power_of_two_scale(st.magnitude, a.dtype) == power_of_two_scale(amax, a.dtype)


def test_the_magnitude_of_sparse_blocks_keeps_the_decision():
    import scipy.sparse as sp

    from rankwise.core.operator import _ColumnStats
    from rankwise.core.validate import power_of_two_scale

    for factor in (2.0**450, 2.0**-450, 1.0):
        blk = sp.random(300, 40, density=0.05, random_state=3, format="csr") * factor
        st = _ColumnStats(40, centered=False)
        with np.errstate(over="ignore", under="ignore"):
            st.update(blk)
        amax = float(np.abs(blk.data).max())
        assert power_of_two_scale(st.magnitude) == power_of_two_scale(amax)
        if factor != 1.0:
            assert st.magnitude == amax


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_the_stats_pass_checks_the_data_itself(files, tmp_path, bad):
    a = files[1].copy()
    a[4321, 7] = bad
    np.save(tmp_path / "x.npy", a)
    for prefetch in (True, False):
        op = BlockOperator(F.open(tmp_path / "x.npy"), block_rows=333, dtype=np.float64,
                           prefetch=prefetch)  # fmt: skip
        with pytest.raises(DataError, match="NaN" if np.isnan(bad) else "infinite"):
            op.gram_pass(np.ones((37, 2)), stats=True)
