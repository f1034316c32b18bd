"""One conformance suite for every reader: the same checks for every format and storage variant.

Each case writes a file with the reference library (h5py, zarr, numpy, MatrixMarket text); the
expected values are the numpy array that was written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import rankwise.formats as F

DTYPES = ["float64", "float32", "int32", "int64"]
ORDERS = ["C", "F"]


def _array(shape: tuple[int, ...], dtype: str, order: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape) * 100
    if np.dtype(dtype).kind == "f":
        a.flat[1] = np.nan
        a.flat[5] = np.inf
        a.flat[6] = -np.inf
        a.flat[8] = 0.0
    a = a.astype(dtype)
    if np.dtype(dtype).kind in "iu":
        a.flat[3] = 0
    return np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a)


def _expected_scan(a: np.ndarray) -> dict[str, int]:
    floating = a.dtype.kind == "f"
    return {
        "nan": int(np.isnan(a).sum()) if floating else 0,
        "inf": int(np.isinf(a).sum()) if floating else 0,
        "nnz": int(np.count_nonzero(a)),
    }


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 5), (4, 3, 2)], ids=["matrix", "tensor"])
def test_reader_round_trip(tmp_path, reader_case, shape, dtype, order):
    writer, any_ndim, dtypes = reader_case
    if len(shape) != 2 and not any_ndim:
        pytest.skip("format holds matrices only")
    if dtypes is not None and dtype not in dtypes:
        pytest.skip(f"format cannot store {dtype}")
    a = _array(shape, dtype, order)
    uri = writer(tmp_path, a)

    with F.open(uri) as h:
        assert h.shape == a.shape
        assert h.ndim == a.ndim
        assert h.dtype == a.dtype
        assert h.sparse is False
        assert h.nbytes == a.nbytes == h.read_nbytes
        d = h.describe()
        assert d["shape"] == list(a.shape) and d["dtype"] == a.dtype.name
        assert d["format"] == F.detect_format(h.uri.path)

        got = h.read()
        assert isinstance(got, np.ndarray) and got.dtype == a.dtype
        np.testing.assert_array_equal(got, a)  # exact: equal_nan by default

        blocks = list(h.iter_blocks(4))
        assert [s for s, _ in blocks] == list(range(0, shape[0], 4))
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), a)

        assert h.scan() == _expected_scan(a)
        assert F.fingerprint(h) == F.fingerprint(a)


def test_listing_describes_the_same_array(tmp_path, reader_case):
    writer, _, _ = reader_case
    a = _array((6, 4), "float64", "C")
    uri = writer(tmp_path, a)
    with F.open(uri) as h:
        described = h.describe()
    listing = F.list_arrays(h.uri.path)
    json.dumps(listing)  # JSON-able as documented
    assert listing["format"] == described["format"]
    assert listing["size_bytes"] > 0
    matches = [e for e in listing["arrays"] if e["uri"] == described["uri"]]
    assert matches == [described]


def test_read_budget_is_checked_against_the_dense_size(tmp_path, reader_case):
    writer, _, _ = reader_case
    a = _array((8, 4), "float64", "C")
    uri = writer(tmp_path, a)
    with F.open(uri, max_bytes=a.nbytes - 1) as h:
        with pytest.raises(F.BudgetError, match="memory budget"):
            h.read()
        np.testing.assert_array_equal(h.read(max_bytes=a.nbytes), a)  # explicit wins
    with F.open(uri) as h:  # blocks have their own, smaller, size
        if h.format == "mtx":
            # The text parser cannot seek to a row: blocks need the whole matrix in budget.
            with pytest.raises(F.BudgetError):
                next(h.iter_blocks(2, max_bytes=2 * 4 * 8))
            return
        rows = [b for _, b in h.iter_blocks(2, max_bytes=2 * 4 * 8)]
        np.testing.assert_array_equal(np.concatenate(rows), a)
        with pytest.raises(F.BudgetError):
            next(h.iter_blocks(3, max_bytes=2 * 4 * 8))


def test_float16_and_bool_are_returned_as_stored(tmp_path):
    import h5py

    half = np.linspace(-2, 2, 12, dtype=np.float16).reshape(3, 4)
    flags = np.array([[True, False], [False, True]])
    with h5py.File(tmp_path / "mixed.h5", "w") as f:
        f["half"] = half
        f["flags"] = flags
    np.save(tmp_path / "flags.npy", flags)
    for uri, expected in [
        (f"{tmp_path / 'mixed.h5'}:/half", half),
        (f"{tmp_path / 'mixed.h5'}:/flags", flags),
        (str(tmp_path / "flags.npy"), flags),
    ]:
        got = F.open(uri).read()
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_zero_dim_and_empty_arrays(tmp_path):
    import h5py

    with h5py.File(tmp_path / "edge.h5", "w") as f:
        f["scalar"] = 2.5
        f["empty"] = np.zeros((0, 3))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3), dtype=np.float32))
    assert F.open(f"{tmp_path / 'edge.h5'}:scalar").read() == 2.5
    assert list(F.open(f"{tmp_path / 'edge.h5'}:scalar").iter_blocks(3))[0][1] == 2.5
    for uri in (f"{tmp_path / 'edge.h5'}:empty", str(tmp_path / "empty.npy")):
        h = F.open(uri)
        assert h.read().shape == (0, 3)
        assert list(h.iter_blocks(2)) == []
        assert h.scan() == {"nan": 0, "inf": 0, "nnz": 0}


def test_big_endian_npy_reads_values_and_fingerprints_like_little_endian(tmp_path):
    a = np.arange(12, dtype=">f8").reshape(3, 4)
    np.save(tmp_path / "be.npy", a)
    h = F.open(tmp_path / "be.npy")
    assert h.describe()["dtype"] == ">f8"
    np.testing.assert_array_equal(h.read(), a)
    assert F.fingerprint(h) == F.fingerprint(a.astype("<f8"))


def test_npz_F_order_member_blocks(tmp_path):
    a = np.asfortranarray(np.arange(30.0).reshape(6, 5))
    np.savez_compressed(tmp_path / "f.npz", a=a)
    h = F.open(f"{tmp_path / 'f.npz'}:a")
    assert h.describe()["order"] == "F" and h.compression == "deflate"
    np.testing.assert_array_equal(np.concatenate([b for _, b in h.iter_blocks(4)]), a)
