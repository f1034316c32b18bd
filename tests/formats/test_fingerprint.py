"""Content fingerprints: equal content agrees across formats and layouts; any change differs."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import rankwise.formats as F


def _matrix() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((37, 11))


def test_same_content_same_fingerprint_across_formats_and_orders(tmp_path):
    import zarr

    a = _matrix()
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    np.savez_compressed(tmp_path / "f.npz", x=np.asfortranarray(a))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=a, chunks=(5, 5), compression="gzip")
        f["be"] = a.astype(">f8")
    z = zarr.create_array(
        store=tmp_path / "a.zarr",
        shape=a.shape,
        chunks=(4, 4),
        dtype="f8",
        config={"write_empty_chunks": True},
    )
    z[...] = a
    expected = F.fingerprint(a)
    assert expected.startswith("xxh128:") and len(expected) == 7 + 32
    for source in (
        np.asfortranarray(a),
        F.open(tmp_path / "c.npy"),
        F.open(tmp_path / "f.npy"),
        F.open(f"{tmp_path / 'f.npz'}:x"),
        F.open(f"{tmp_path / 'a.h5'}:/x"),
        F.open(f"{tmp_path / 'a.h5'}:/be"),  # byte order is storage, not content
        F.open(tmp_path / "a.zarr"),
    ):
        assert F.fingerprint(source) == expected
    # The block size used for streaming does not matter.
    assert F.fingerprint(a, block_bytes=1) == expected
    assert F.fingerprint(F.open(tmp_path / "f.npy"), block_bytes=200) == expected


def _documented_tree(a: np.ndarray) -> str:
    """The README's definition, written out independently: leaves of ⌊1 MiB / row bytes⌋ rows
    of the little-endian C-order bytes, XXH3-128 over the header and the leaf digests."""
    from xxhash import xxh3_128

    le = a.astype(a.dtype.newbyteorder("<"))
    rows = le.reshape(le.shape[0], math.prod(le.shape[1:])) if le.ndim else le.reshape(1, 1)
    per = max(1, (1 << 20) // max(1, rows.shape[1] * a.dtype.itemsize))
    dims = ",".join(map(str, a.shape))
    root = xxh3_128(f"rankwise-fingerprint/3|dense|{le.dtype.str}|({dims})|".encode())
    for start in range(0, rows.shape[0], per):
        root.update(xxh3_128(rows[start : start + per].tobytes(order="C")).digest())
    return "xxh128:" + root.hexdigest()


@pytest.mark.parametrize(
    "shape", [(2, 3), (0, 4), (), (7,), (300_000, 3), (5, 40_000), (9, 4, 5), (3, 0)]
)
def test_fingerprint_is_the_documented_tree_of_the_canonical_bytes(shape):
    a = np.arange(math.prod(shape), dtype=np.float32).reshape(shape)
    assert F.fingerprint(np.asfortranarray(a) if a.ndim else a) == _documented_tree(a)
    assert F.fingerprint(a.astype(">f4")) == _documented_tree(a)


def _feed(fp, a, starts, rows):
    for s in starts:
        fp.update_rows(s, a[s : s + rows])


def test_leaves_in_any_order_and_split_across_blocks_give_the_same_fingerprint():
    import threading

    a = np.random.default_rng(0).standard_normal((100_000, 7))  # 18724 rows per leaf
    expected = _documented_tree(a)
    rng = np.random.default_rng(1)
    for rows in (1000, 18724, 50_000, 99_999):
        starts = list(range(0, a.shape[0], rows))
        rng.shuffle(starts)
        fp = F.Fingerprinter(a.dtype, a.shape, sparse=False)
        # two threads, blocks out of order, leaves cut between blocks
        halves = [starts[0::2], starts[1::2]]
        ts = [threading.Thread(target=_feed, args=(fp, a, h, rows)) for h in halves]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert fp.hexdigest() == expected
    fp = F.Fingerprinter(a.dtype, a.shape, sparse=False)
    fp.update_rows(0, a[:50_000])
    with pytest.raises(RuntimeError, match="never hashed"):
        fp.hexdigest()


def test_any_change_changes_the_fingerprint():
    a = _matrix()
    base = F.fingerprint(a)
    b = a.copy()
    b[20, 3] = np.nextafter(b[20, 3], np.inf)  # one ulp in one element
    assert F.fingerprint(b) != base
    assert F.fingerprint(a.astype(np.float32)) != F.fingerprint(a.astype(np.float32).astype(float))
    assert F.fingerprint(a.reshape(11, 37)) != base  # same bytes, other shape
    assert F.fingerprint(a.T) != base
    assert F.fingerprint(sp.csr_array(a)) != base  # sparse and dense are different content


def test_sparse_fingerprint_is_canonical(tmp_path):
    row = np.array([2, 0, 2, 1, 0])
    col = np.array([1, 3, 1, 0, 0])
    data = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    coo = sp.coo_array((data, (row, col)), shape=(3, 4))  # duplicate (2, 1), unsorted
    dense = np.zeros((3, 4))
    np.add.at(dense, (row, col), data)
    canonical = sp.csr_array(dense)
    expected = F.fingerprint(canonical)
    assert F.fingerprint(coo) == expected
    # CSR built from raw parts keeps duplicates and unsorted indices as given.
    raw = sp.csr_array(
        (np.array([2.0, 5.0, 4.0, 1.0, 3.0]), np.array([3, 0, 0, 1, 1]), np.array([0, 2, 3, 5])),
        shape=(3, 4),
    )
    assert not raw.has_canonical_format
    assert F.fingerprint(raw) == expected
    assert F.fingerprint(sp.csr_matrix(dense)) == expected
    with h5py.File(tmp_path / "s.h5", "w") as f:
        g = f.create_group("s")
        g["row"], g["col"], g["data"], g["shape"] = row, col, data, np.array([3, 4])
    h = F.open(f"{tmp_path / 's.h5'}:/s")
    assert F.fingerprint(h) == expected
    assert F.fingerprint(h, block_bytes=1) == expected  # one row per block
    changed = dense.copy()
    changed[1, 0] += 1
    assert F.fingerprint(sp.csr_array(changed)) != expected


def test_fingerprint_does_not_mutate_its_input():
    m = sp.csr_array((np.array([1.0, 2.0]), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 2))
    assert not m.has_canonical_format
    before = (m.data.copy(), m.indices.copy(), m.indptr.copy())
    F.fingerprint(m)
    for x, y in zip(before, (m.data, m.indices, m.indptr), strict=True):
        np.testing.assert_array_equal(x, y)


def test_dask_leaf_digests_keep_a_trailing_zero_byte():
    """A leaf digest may end in a zero byte (1 leaf in 256): numpy's fixed-width bytes dtype
    would drop it on the way back from the workers, and the Dask fingerprint would differ."""
    da = pytest.importorskip("dask.array")
    from rankwise.formats import dask_array
    from rankwise.formats.fingerprints import leaf_digest, leaf_rows

    n = 1 << 17  # one row of 1 MiB: one leaf per row
    assert leaf_rows((4, n), np.float64) == 1
    row = np.random.default_rng(0).standard_normal(n)
    for i in range(5000):
        row[0] = i
        if leaf_digest(row[None], np.dtype("<f8")).endswith(b"\0"):
            break
    else:
        pytest.fail("no leaf digest ending in a zero byte in 5000 tries")
    a = np.random.default_rng(1).standard_normal((5, n))
    a[3] = row
    for rows_per_task in (1, 2):  # a last task with fewer leaves than the others, too
        darr = da.from_array(a, chunks=(rows_per_task, n))
        digests = dask_array.block_digests(darr).compute(scheduler="synchronous")
        assert dask_array.combine_digests(a.dtype, a.shape, digests) == F.fingerprint(a)
