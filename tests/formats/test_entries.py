"""Observed entries (completion input): N-mode COO groups, MatrixMarket, read_entries().

Files are written with h5py, zarr and scipy.io.mmwrite (or MatrixMarket text by hand where the
test needs a given entry order); the truth is always the numpy arrays that were written.
"""

from __future__ import annotations

import dataclasses
import os
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import rankwise.formats as F

ENGINES = ["hdf5", "zarr"]
ALL_CHUNKS = {"write_empty_chunks": True}


def write_group(tmp_path, engine, members: dict, name="obs/ratings", chunk=None) -> str:
    """A COO group with the given members; 1-D members are chunked so chunks can go missing."""
    if engine == "hdf5":
        path = tmp_path / "obs.h5"
        with h5py.File(path, "a") as f:
            g = f.create_group(name)
            for key, value in members.items():
                value = np.asarray(value)
                chunks = (
                    (min(chunk or len(value) // 2, len(value)) or 1,) if value.ndim == 1 else None
                )
                g.create_dataset(key, data=value, chunks=chunks if value.size else None)
            if "meta" not in f:
                f["meta/labels"] = np.arange(3)  # an unrelated array next to the group
        return f"{path}:/{name}"
    import zarr

    path = tmp_path / "obs.zarr"
    root = zarr.open_group(path, mode="a")
    g = root.require_group(name)
    for key, value in members.items():
        value = np.asarray(value)
        chunks = (min(chunk or len(value) // 2, len(value)) or 1,) if value.ndim == 1 else "auto"
        g.create_array(key, shape=value.shape, dtype=value.dtype, chunks=chunks, config=ALL_CHUNKS)[
            ...
        ] = value
    if "meta" not in root:
        labels = root.create_array("meta/labels", shape=(3,), dtype="i8", config=ALL_CHUNKS)
        labels[...] = np.arange(3)
    return f"{path}:{name}"


def planted(shape, nnz, seed=0, duplicates=3):
    """Entries at distinct random coordinates, then the first `duplicates` observed again
    (new values) at the end."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(int(np.prod(shape)), nnz - duplicates, replace=False)
    flat = np.concatenate([flat, flat[:duplicates]])
    idx = [i.astype(np.int32) for i in np.unravel_index(flat, shape)]
    return idx, rng.standard_normal(nnz)


def tensor_members(idx, values, shape, naming="index"):
    names = ["row", "col"] if naming == "rowcol" else [f"index_{k}" for k in range(len(idx))]
    members = dict(zip(names, idx, strict=True))
    members.update(data=values, shape=np.array(shape, dtype=np.int64))
    return members


def assert_entries(e, idx, values, shape):
    assert isinstance(e, F.Entries)
    assert e.shape == tuple(shape) and e.ndim == len(shape) and e.nnz == len(values)
    assert len(e.indices) == len(shape)
    for got, want in zip(e.indices, idx, strict=True):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)  # file order, nothing summed
    assert e.values.dtype == np.asarray(values).dtype
    np.testing.assert_array_equal(e.values, values)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "shape, naming",
    [((7, 5), "rowcol"), ((7, 5), "index"), ((4, 6, 3), "index"), ((3, 4, 2, 5), "index")],
    ids=["2d-rowcol", "2d-index", "3d", "4d"],
)
def test_entries_round_trip_in_file_order_with_duplicates(tmp_path, engine, shape, naming):
    idx, values = planted(shape, 30)
    uri = write_group(tmp_path, engine, tensor_members(idx, values, shape, naming), chunk=7)
    h = F.open(uri)
    assert h.sparse and h.shape == shape and h.nnz == 30 and h.dtype == np.float64
    h.entry_chunk = 6  # several component slices, not aligned with the stored chunks
    e = h.read_entries()
    assert_entries(e, idx, values, shape)
    coords = set(zip(*(i.tolist() for i in e.indices), strict=True))
    assert len(coords) == 30 - 3  # the three planted duplicates reached the caller


@pytest.mark.parametrize("engine", ENGINES)
def test_2d_index_naming_reads_like_row_col(tmp_path, engine):
    # index_0/index_1 is the same matrix as row/col: read() gives the canonical CSR.
    idx, values = planted((7, 5), 30)
    dense = np.zeros((7, 5))
    np.add.at(dense, (idx[0], idx[1]), values)  # duplicates summed, as read() promises
    h = F.open(write_group(tmp_path, engine, tensor_members(idx, values, (7, 5))))
    got = h.read()
    assert isinstance(got, sp.csr_array) and got.has_canonical_format
    np.testing.assert_array_equal(got.toarray(), dense)  # two values per sum: exact either way


@pytest.mark.parametrize("engine", ENGINES)
def test_tensor_read_and_blocks_are_refused_but_scan_counts_entries(tmp_path, engine):
    idx, values = planted((4, 6, 3), 20)
    values[[2, 5]] = np.nan
    values[7] = -np.inf
    h = F.open(write_group(tmp_path, engine, tensor_members(idx, values, (4, 6, 3))))
    msg = r"a 3-D sparse tensor can only be read as its entries \(by `rankwise complete`\)"
    with pytest.raises(F.DataError, match=msg) as info:
        h.read()
    assert "\n" not in str(info.value)
    with pytest.raises(F.DataError, match=msg):
        h.read(max_bytes=1)  # the refusal, not a budget error: no budget makes it readable
    with pytest.raises(F.DataError, match=msg):
        next(h.iter_blocks(2))
    assert h.read_nbytes == 20 * (3 * 8 + 8)  # what read_entries allocates
    assert h.scan() == {"nan": 2, "inf": 1, "nnz": 20}  # stored entries, duplicates counted


@pytest.mark.parametrize("engine", ENGINES)
def test_listing_describes_tensor_groups_and_names_layout_problems(tmp_path, engine):
    idx, values = planted((4, 6, 3), 12)
    uri = write_group(tmp_path, engine, tensor_members(idx, values, (4, 6, 3)), name="t3")
    bad = {
        "both": {**tensor_members(idx[:2], values, (4, 6)), "row": idx[0], "col": idx[1]},
        "gap": {"index_0": idx[0], "index_2": idx[2], "data": values, "shape": [4, 6, 3]},
        "csr": {"indices": idx[1], "indptr": np.arange(5), "data": values, "shape": [4, 6]},
        "halfrow": {"row": idx[0], "data": values, "shape": [4, 6]},
        "single": {"index_0": idx[0], "data": values, "shape": [4]},
        "zeropad": {"index_0": idx[0], "index_01": idx[1], "data": values, "shape": [4, 6]},
    }
    for name, members in bad.items():
        write_group(tmp_path, engine, members, name=name)
    listing = {e["name"].lstrip("/"): e for e in F.list_arrays(F.parse_uri(uri).path)["arrays"]}
    # Each group is one entry; none of its members is listed as an array of its own.
    assert sorted(listing) == sorted([*bad, "t3", "meta/labels"])
    t3 = listing["t3"]
    assert t3["sparse"] is True and t3["shape"] == [4, 6, 3] and t3["nnz"] == 12
    assert t3["read_nbytes"] == 12 * (3 * 8 + 8)
    assert t3["notes"][0].startswith("sparse COO tensor (index_0 … index_2, data, shape)")
    reasons = {
        "both": "mixes two namings ('col', 'row' and 'index_0', 'index_1')",
        "gap": "has a gap in its index members: 'index_1' missing",
        "csr": "looks like CSR/CSC ('indices', 'indptr')",
        "halfrow": "has 'row' but no 'col'",
        "single": "has a single index member 'index_0'",
        "zeropad": "not named index_<k>: 'index_01'",
    }
    for name, reason in reasons.items():
        note = listing[name]["notes"][0]
        assert note.startswith("refused: sparse group ") and reason in note, (name, note)
        with pytest.raises(F.DataError, match=f"{name}: sparse group .*{reason[:12]}"):
            F.open(uri.replace("t3", name))


@pytest.mark.parametrize("engine", ENGINES)
def test_unrelated_members_are_ignored_and_named(tmp_path, engine):
    idx, values = planted((4, 6, 3), 12)
    members = {**tensor_members(idx, values, (4, 6, 3)), "user_ids": np.arange(4)}
    h = F.open(write_group(tmp_path, engine, members))
    assert "other members ignored: user_ids" in h.describe()["notes"]
    assert_entries(h.read_entries(), idx, values, (4, 6, 3))


# -- bad content ------------------------------------------------------------------------------

IDX3, VALUES3 = planted((4, 6, 3), 10, duplicates=0)


def members3(**over):
    m = tensor_members(IDX3, VALUES3, (4, 6, 3))
    m.update(over)
    return m


def _with(i: int, pos: int, value: int) -> np.ndarray:
    a = IDX3[i].astype(np.int64)
    a[pos] = value
    return a


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "over, reason",
    [
        ({"index_2": _with(2, 6, 3)}, r"'index_2' index 3 at entry 6 is out of range \[0, 3\)"),
        ({"index_0": _with(0, 9, -1)}, r"'index_0' index -1 at entry 9 is out of range"),
    ],
    ids=["too-big", "negative"],
)
def test_out_of_range_index_is_refused_on_read_entries(tmp_path, engine, over, reason):
    h = F.open(write_group(tmp_path, engine, members3(**over)))  # metadata is fine
    h.entry_chunk = 4  # the bad entry is found in a later slice, at its true position
    with pytest.raises(F.DataError, match=reason):
        h.read_entries()
    with pytest.raises(F.DataError, match=reason):
        h.scan()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "over, reason",
    [
        (
            {"index_1": IDX3[1][:-1]},
            r"different lengths \(index_0 10, index_1 9, index_2 10, data 10\)",
        ),
        ({"index_2": IDX3[2].astype(np.float64)}, "'index_2' indices must be integers"),
        ({"index_2": IDX3[2].astype(bool)}, "'index_2' indices must be integers"),
        ({"shape": np.array([4, 6])}, r"'shape' must hold 3 integers \(one per index member\)"),
        ({"shape": np.array([4, 6, -3])}, "negative extent"),
    ],
    ids=["lengths", "float-index", "bool-index", "shape-short", "shape-negative"],
)
def test_malformed_tensor_groups_are_refused_at_open(tmp_path, engine, over, reason):
    uri = write_group(tmp_path, engine, members3(**over))
    with pytest.raises(F.DataError, match=reason):
        F.open(uri)


def test_zarr_missing_chunk_of_an_index_member_is_refused(tmp_path):
    uri = write_group(tmp_path, "zarr", members3(), chunk=4)
    store = F.parse_uri(uri).path
    os.remove(store / "obs" / "ratings" / "index_1" / "c" / "1")
    h = F.open(uri)
    assert "sparse member 'index_1': 1 of 3 chunks missing" in h.describe()["notes"]
    with pytest.raises(F.DataError, match="index_1: 1 of 3 chunks are missing"):
        h.read_entries()


def test_hdf5_index_member_behind_external_link_or_unwritten_is_refused(tmp_path):
    with h5py.File(tmp_path / "elsewhere.h5", "w") as f:
        f["i2"] = IDX3[2]
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("linked")
        g["index_0"], g["index_1"], g["data"], g["shape"] = IDX3[0], IDX3[1], VALUES3, [4, 6, 3]
        g["index_2"] = h5py.ExternalLink("elsewhere.h5", "/i2")
        g = f.create_group("unwritten")
        g["index_0"], g["index_1"], g["data"], g["shape"] = IDX3[0], IDX3[1], VALUES3, [4, 6, 3]
        d = g.create_dataset("index_2", shape=(10,), chunks=(5,), dtype="i4", fillvalue=0)
        d[:5] = IDX3[2][:5]  # the second chunk would read as the fill value 0
    with pytest.raises(F.DataError, match="external link to elsewhere.h5:/i2 is refused"):
        F.open(f"{path}:/linked")
    h = F.open(f"{path}:/unwritten")
    with pytest.raises(F.DataError, match="index_2: 1 of 2 chunks were never written"):
        h.read_entries()


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_declared_nnz_is_refused_before_allocating(tmp_path, engine):
    # A tiny file whose members declare 10^12 entries (chunks never written).
    n = 10**12
    if engine == "hdf5":
        uri = f"{tmp_path / 'bomb.h5'}:/g"
        with h5py.File(tmp_path / "bomb.h5", "w") as f:
            g = f.create_group("g")
            for k in range(3):
                g.create_dataset(f"index_{k}", shape=(n,), chunks=(1 << 16,), dtype="i8")
            g.create_dataset("data", shape=(n,), chunks=(1 << 16,), dtype="f8")
            g["shape"] = [10, 10, 10]
        assert os.path.getsize(tmp_path / "bomb.h5") < 1 << 20
    else:
        import zarr

        root = zarr.open_group(tmp_path / "bomb.zarr", mode="w")
        g = root.create_group("g")
        for k in range(3):
            g.create_array(f"index_{k}", shape=(n,), chunks=(1 << 16,), dtype="i8")
        g.create_array("data", shape=(n,), chunks=(1 << 16,), dtype="f8")
        g.create_array("shape", shape=(3,), dtype="i8", config=ALL_CHUNKS)[...] = [10, 10, 10]
        uri = f"{tmp_path / 'bomb.zarr'}:g"
    h = F.open(uri, max_bytes=1 << 30)
    assert h.nnz == n and h.entries_nbytes == n * (3 * 8 + 8)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(F.BudgetError, match=r"needs 29\.1 TiB .* memory budget is 1\.0 GiB"):
            h.read_entries()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# -- MatrixMarket -----------------------------------------------------------------------------


def test_mtx_general_entries_keep_file_order_and_duplicates(tmp_path):
    row = np.array([2, 0, 2, 1, 0])
    col = np.array([1, 0, 1, 3, 0])
    data = np.array([1.5, -2.0, 3.25, 0.0, 4.0])  # (2,1) and (0,0) observed twice
    scipy.io.mmwrite(tmp_path / "g.mtx", sp.coo_array((data, (row, col)), shape=(3, 4)))
    h = F.open(tmp_path / "g.mtx")
    assert h.field == "real"
    assert_entries(h.read_entries(), (row, col), data, (3, 4))
    assert h.read().nnz == 3  # read() still sums: (2,1), (0,0) and (1,3)


def test_mtx_integer_entries_keep_their_dtype(tmp_path):
    row, col, data = np.array([0, 1]), np.array([1, 0]), np.array([5, -7], dtype=np.int64)
    scipy.io.mmwrite(tmp_path / "i.mtx", sp.coo_array((data, (row, col)), shape=(2, 2)))
    assert_entries(F.open(tmp_path / "i.mtx").read_entries(), (row, col), data, (2, 2))


def test_mtx_symmetric_entries_mirror_off_diagonal(tmp_path):
    # The stored lower triangle, then the mirror of each off-diagonal entry in file order.
    row, col = np.array([1, 0, 3, 2]), np.array([0, 0, 1, 2])
    data = np.array([1.5, 2.0, -1.0, 7.0])
    lower = sp.coo_array((data, (row, col)), shape=(4, 4))
    scipy.io.mmwrite(tmp_path / "s.mtx", lower, symmetry="symmetric")
    h = F.open(tmp_path / "s.mtx")
    off = row != col
    e = h.read_entries()
    want_row = np.concatenate([row, col[off]])
    want_col = np.concatenate([col, row[off]])
    assert_entries(e, (want_row, want_col), np.concatenate([data, data[off]]), (4, 4))
    dense = np.zeros((4, 4))
    dense[e.indices] = e.values
    np.testing.assert_array_equal(dense, dense.T)
    np.testing.assert_array_equal(dense, h.read().toarray())


def test_mtx_skew_symmetric_entries_mirror_negated(tmp_path):
    text = "%%MatrixMarket matrix coordinate real skew-symmetric\n3 3 2\n2 1 1.5\n3 2 -4\n"
    (tmp_path / "k.mtx").write_text(text)
    e = F.open(tmp_path / "k.mtx").read_entries()
    assert_entries(e, ([1, 2, 0, 1], [0, 1, 1, 2]), np.array([1.5, -4.0, -1.5, 4.0]), (3, 3))


def test_mtx_pattern_entries_are_ones_and_flagged(tmp_path):
    # Chosen: pattern entries read as 1.0 (as read() does); `field` lets a caller refuse them.
    text = "%%MatrixMarket matrix coordinate pattern general\n3 2 3\n3 1\n1 2\n3 1\n"
    (tmp_path / "p.mtx").write_text(text)
    h = F.open(tmp_path / "p.mtx")
    assert h.field == "pattern" and "pattern entries are read as 1.0" in h.describe()["notes"]
    assert_entries(h.read_entries(), ([2, 0, 2], [0, 1, 0]), np.ones(3), (3, 2))


def test_mtx_bad_entries_are_refused(tmp_path):
    text = "%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1.0\n4 2 2.0\n"
    (tmp_path / "o.mtx").write_text(text)
    with pytest.raises(F.DataError, match="malformed MatrixMarket data .*out of bounds"):
        F.open(tmp_path / "o.mtx").read_entries()
    bomb = "%%MatrixMarket matrix coordinate real general\n10 10 1000000000000\n1 1 1\n"
    (tmp_path / "bomb.mtx").write_text(bomb)
    h = F.open(tmp_path / "bomb.mtx")
    with pytest.raises(F.BudgetError, match="memory budget is 1.0 GiB"):
        h.read_entries(max_bytes=1 << 30)
    with pytest.raises(F.DataError, match="declares 1000000000000 values but the file has only"):
        h.read_entries()  # no budget: the file size still stops the parser's preallocation


# -- dense input, the dataclass ---------------------------------------------------------------


def test_dense_inputs_have_no_entries(tmp_path):
    a = np.array([[1.0, np.nan], [3.0, 4.0]])
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"] = a
    np.save(tmp_path / "d.npy", a)
    (tmp_path / "d.mtx").write_text("%%MatrixMarket matrix array real general\n1 2\n1.0\n2.0\n")
    for uri in (f"{tmp_path / 'd.h5'}:/X", tmp_path / "d.npy", tmp_path / "d.mtx"):
        with pytest.raises(F.DataError, match=r"dense input: missing entries are NaN; read\(\) it"):
            F.open(uri).read_entries()


def test_entries_is_frozen_and_consistent():
    e = F.Entries(indices=(np.array([0]), np.array([1])), values=np.array([2.0]), shape=(1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.values = np.array([3.0])  # type: ignore[misc]
    with pytest.raises(ValueError, match="different lengths"):
        F.Entries(indices=(np.array([0]), np.array([1, 1])), values=np.ones(1), shape=(1, 2))
    with pytest.raises(ValueError, match="1 index arrays for shape"):
        F.Entries(indices=(np.array([0]),), values=np.ones(1), shape=(1, 2))


# -- fingerprints -----------------------------------------------------------------------------


def test_entries_fingerprint_is_the_same_across_formats_and_orders(tmp_path):
    idx, values = planted((6, 5), 25, seed=3)
    perm = np.random.default_rng(1).permutation(25)  # another file order
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    h5 = write_group(tmp_path / "a", "hdf5", tensor_members(idx, values, (6, 5), "rowcol"))
    big_endian = {"index_0": idx[0][perm], "index_1": idx[1][perm]}
    big_endian.update(data=values[perm].astype(">f8"), shape=[6, 5])  # byte order is storage
    zr = write_group(tmp_path / "b", "zarr", big_endian)
    coo = sp.coo_array((values[perm[::-1]], (idx[0][perm[::-1]], idx[1][perm[::-1]])), (6, 5))
    scipy.io.mmwrite(tmp_path / "m.mtx", coo)
    prints = {F.fingerprint_entries(F.open(u).read_entries()) for u in (h5, zr, tmp_path / "m.mtx")}
    assert len(prints) == 1 and next(iter(prints)).startswith("xxh128:")
    (fp,) = prints
    # A changed value, a dropped duplicate, or the summed matrix are different content.
    changed = values.copy()
    changed[4] += 1e-12
    dropped = F.Entries(indices=tuple(i[:-1] for i in idx), values=values[:-1], shape=(6, 5))
    for other in (F.Entries(tuple(idx), changed, (6, 5)), dropped):
        assert F.fingerprint_entries(other) != fp
    assert F.fingerprint(F.open(h5)) != fp  # the CSR fingerprint sums the duplicates


def test_symmetric_mtx_and_full_hdf5_have_the_same_entries_fingerprint(tmp_path):
    row, col, data = np.array([1, 0, 2]), np.array([0, 0, 1]), np.array([1.5, 2.0, -1.0])
    lower = sp.coo_array((data, (row, col)), shape=(3, 3))
    scipy.io.mmwrite(tmp_path / "s.mtx", lower, symmetry="symmetric")
    full = {"row": np.r_[row, 0, 1], "col": np.r_[col, 1, 2], "data": np.r_[data, 1.5, -1.0]}
    uri = write_group(tmp_path, "hdf5", {**full, "shape": [3, 3]})
    got = [F.fingerprint_entries(F.open(u).read_entries()) for u in (tmp_path / "s.mtx", uri)]
    assert got[0] == got[1]


def test_tensor_fingerprint_across_engines_and_through_the_handle(tmp_path):
    idx, values = planted((3, 4, 2, 5), 30, seed=7)
    (tmp_path / "a").mkdir()
    uris = [
        write_group(tmp_path / "a", "hdf5", tensor_members(idx, values, (3, 4, 2, 5))),
        write_group(tmp_path, "zarr", tensor_members(idx, values, (3, 4, 2, 5))),
    ]
    fps = [F.fingerprint_entries(F.open(u).read_entries()) for u in uris]
    assert fps[0] == fps[1] == F.fingerprint(F.open(uris[1]))  # a tensor handle hashes entries
    assert fps[0] == F.fingerprint(
        F.Entries(tuple(np.asarray(i) for i in idx), values, (3, 4, 2, 5))
    )
    # The same entries in a differently shaped space are different content.
    assert fps[0] != F.fingerprint(F.Entries(tuple(idx), values, (3, 4, 2, 6)))
