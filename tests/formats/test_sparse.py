"""Sparse COO groups (row, col, data, shape) in HDF5 and Zarr."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import rankwise.formats as F

# zarr warns that string/structured dtypes lack a v3 spec; those stores are refused anyway.
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3")

ENGINES = ["hdf5", "zarr"]


def write_coo(tmp_path, engine, members: dict, name="ratings/observed", extra=True) -> str:
    if engine == "hdf5":
        path = tmp_path / "ratings.h5"
        with h5py.File(path, "a") as f:
            g = f.create_group(name)
            for key, value in members.items():
                g.create_dataset(
                    key, data=np.asarray(value), chunks=True if np.ndim(value) else None
                )
            if extra:
                f["meta/users"] = np.arange(3)  # another array next to it
        return f"{path}:/{name}"
    import zarr

    path = tmp_path / "ratings.zarr"
    root = zarr.open_group(path, mode="a")
    g = root.require_group(name)
    for key, value in members.items():
        value = np.asarray(value)
        chunks = (max(1, len(value) // 2),) if value.ndim == 1 else "auto"
        g.create_array(
            key,
            shape=value.shape,
            dtype=value.dtype,
            chunks=chunks,
            config={"write_empty_chunks": True},
        )[...] = value
    if extra:
        root.create_array(
            "meta/users", shape=(3,), dtype="i8", config={"write_empty_chunks": True}
        )[...] = np.arange(3)
    return f"{path}:{name}"


ROW = np.array([3, 0, 2, 0, 3, 4, 0], dtype=np.int32)
COL = np.array([1, 2, 0, 2, 1, 5, 0], dtype=np.uint16)
DATA = np.array([1.5, 2.0, -1.0, 0.25, 4.0, 0.0, 7.0])
SHAPE = (5, 6)


def _dense() -> np.ndarray:
    d = np.zeros(SHAPE)
    np.add.at(d, (ROW.astype(int), COL.astype(int)), DATA)  # duplicates add up
    return d


def _members(**over):
    m = {"row": ROW, "col": COL, "data": DATA, "shape": np.array(SHAPE, dtype=np.int64)}
    m.update(over)
    return m


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_group_reads_as_canonical_csr(tmp_path, engine):
    uri = write_coo(tmp_path, engine, _members())
    h = F.open(uri)
    assert h.sparse and h.shape == SHAPE and h.dtype == np.float64
    assert h.nnz == len(DATA)  # stored entries, duplicates included
    assert h.read_nbytes > 0 and h.describe()["sparse"] is True
    got = h.read()
    assert isinstance(got, sp.csr_array) and got.has_canonical_format
    np.testing.assert_array_equal(got.toarray(), _dense())
    distinct = len(set(zip(ROW.tolist(), COL.tolist(), strict=True)))
    assert got.nnz == distinct  # explicit zero (4, 5) kept: an observed entry
    assert h.scan() == {"nan": 0, "inf": 0, "nnz": distinct}


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_blocks_in_memory_and_streaming(tmp_path, engine):
    uri = write_coo(tmp_path, engine, _members())
    dense = _dense()
    h = F.open(uri)
    in_memory = list(h.iter_blocks(2))
    h.entry_chunk = 3  # force several component slices per pass
    streamed = list(h.iter_blocks(2, max_bytes=h.read_nbytes - 1))  # over budget: streams
    for blocks in (in_memory, streamed):
        assert [s for s, _ in blocks] == [0, 2, 4]
        assert all(isinstance(b, sp.csr_array) and b.has_canonical_format for _, b in blocks)
        np.testing.assert_array_equal(sp.vstack([b for _, b in blocks]).toarray(), dense)
    with pytest.raises(F.BudgetError):
        h.read(max_bytes=h.read_nbytes - 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_listing_shows_the_group_as_one_array(tmp_path, engine):
    uri = write_coo(tmp_path, engine, _members())
    path = F.parse_uri(uri).path
    listing = F.list_arrays(path)
    names = sorted(e["name"].lstrip("/") for e in listing["arrays"])
    assert names == ["meta/users", "ratings/observed"]
    entry = next(e for e in listing["arrays"] if e["name"].lstrip("/") == "ratings/observed")
    assert entry["sparse"] is True and entry["nnz"] == len(DATA) and entry["shape"] == list(SHAPE)


@pytest.mark.parametrize("engine", ENGINES)
def test_single_sparse_group_needs_no_key(tmp_path, engine):
    uri = write_coo(tmp_path, engine, _members(), name="only", extra=False)
    h = F.open(F.parse_uri(uri).path)
    np.testing.assert_array_equal(h.read().toarray(), _dense())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "over, reason",
    [
        (
            {"row": np.array([0, 1, 5, 0, 0, 0, 0])},
            r"'row' index 5 at entry 2 is out of range \[0, 5\)",
        ),
        ({"col": np.array([0, 1, 2, 3, 4, 6, 0])}, r"'col' index 6 at entry 5 is out of range"),
        ({"row": np.array([0, 1, -1, 0, 0, 0, 0])}, r"'row' index -1 at entry 2"),
    ],
    ids=["row-too-big", "col-too-big", "negative"],
)
def test_out_of_range_indices_are_refused_on_read(tmp_path, engine, over, reason):
    uri = write_coo(tmp_path, engine, _members(**over))
    h = F.open(uri)  # metadata is fine
    with pytest.raises(F.DataError, match=reason):
        h.read()
    with pytest.raises(F.DataError, match=reason):
        h.entry_chunk = 2
        list(h.iter_blocks(2, max_bytes=h.read_nbytes - 1))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "over, reason",
    [
        ({"row": ROW.astype(float)}, "'row' indices must be integers"),
        ({"col": COL[:-1]}, "different lengths"),
        ({"shape": np.array([5, 6, 1])}, "must hold 2 integers"),
        ({"shape": np.array([5, -6])}, "negative"),
        ({"shape": np.array([5.0, 6.0])}, "must hold integers"),
        ({"data": DATA.reshape(7, 1)}, "must be 1-D"),
        ({"data": np.array([b"a"] * 7)}, "string"),
    ],
    ids=[
        "float-index",
        "lengths",
        "shape-3",
        "shape-negative",
        "shape-float",
        "data-2d",
        "data-str",
    ],
)
def test_malformed_sparse_groups_are_refused(tmp_path, engine, over, reason):
    uri = write_coo(tmp_path, engine, _members(**over))
    with pytest.raises(F.DataError, match=reason):
        F.open(uri)
    listing = F.list_arrays(F.parse_uri(uri).path)
    entry = next(e for e in listing["arrays"] if e["name"].lstrip("/") == "ratings/observed")
    assert entry["notes"][0].startswith("refused: ")


def test_hdf5_sparse_member_behind_external_link_is_refused(tmp_path):
    with h5py.File(tmp_path / "elsewhere.h5", "w") as f:
        f["data"] = DATA
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("m")
        g["row"], g["col"], g["shape"] = ROW, COL, np.array(SHAPE)
        g["data"] = h5py.ExternalLink("elsewhere.h5", "/data")
    with pytest.raises(F.DataError, match="external link"):
        F.open(f"{path}:/m")


def test_zarr_sparse_member_missing_chunk_is_refused(tmp_path):
    uri = write_coo(tmp_path, "zarr", _members(), extra=False)
    store = F.parse_uri(uri).path
    os.remove(store / "ratings" / "observed" / "data" / "c" / "1")
    h = F.open(uri)
    assert any("chunks missing" in n for n in h.describe()["notes"])
    with pytest.raises(F.DataError, match="chunks are missing"):
        h.read()


def test_hdf5_sparse_members_never_written_are_refused(tmp_path):
    path = tmp_path / "unwritten.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data_missing")  # row/col written, data chunks never written
        g["row"], g["col"], g["shape"] = ROW, COL, np.array(SHAPE)
        d = g.create_dataset("data", shape=DATA.shape, chunks=(2,), dtype="f8", fillvalue=0.0)
        d[:4] = DATA[:4]
        g = f.create_group("shape_missing")
        g["row"], g["col"], g["data"] = ROW, COL, DATA
        g.create_dataset("shape", shape=(2,), dtype="i8")  # would read as a 0×0 matrix
    h = F.open(f"{path}:/data_missing")
    assert (
        "sparse member 'data': 2 of 4 chunks never written: read refused" in h.describe()["notes"]
    )
    msg = r"data_missing/data: 2 of 4 chunks were never written; HDF5 would return the fill value"
    with pytest.raises(F.DataError, match=msg):
        h.read()
    h.entry_chunk = 2
    with pytest.raises(F.DataError, match=msg):
        list(h.iter_blocks(2, max_bytes=h.read_nbytes - 1))  # the streaming path
    with pytest.raises(F.DataError, match=msg):
        h.scan()
    # The shape is needed to describe the matrix, so its absence is refused at once.
    with pytest.raises(F.DataError, match="shape_missing/shape: the data was never written"):
        F.open(f"{path}:/shape_missing")
    listing = {e["name"]: e for e in F.list_arrays(path)["arrays"]}
    assert listing["/data_missing"]["shape"] == list(SHAPE)
    assert "never written" in listing["/shape_missing"]["notes"][0]
    assert listing["/shape_missing"]["notes"][0].startswith("refused: ")
