"""Fuzz the COO-group reader of HDF5 and Zarr (read_entries(), read(), row blocks): generated
groups with any naming (row/col, index_k, CSR, gaps, mixes), member dtypes, lengths, index
values (negative, out of range, huge), `shape` members of any dtype/length/value, and members
declaring 10^12 entries in a file of a few KiB."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from fuzz.fuzzkit import HUGE, OPS, check_input, fuzz_settings, write_tree
from hypothesis import given
from hypothesis import strategies as st

FUZZ_FORMAT = "coo"  # HDF5 and Zarr inputs, counted apart from the dense-array modules
FUZZ_SHARE = 0.5  # on top of the 2000 HDF5 and 2000 Zarr inputs of their own modules
# No per-example tracemalloc: a read zarr abandons on error leaves decodes running in its
# thread pool, and stopping tracemalloc while they allocate crashes CPython 3.11 (a race in
# its raw-allocator hooks). Decoded buffers are written, so the peak-RSS check sees them.
FUZZ_TRACE = False
COO_OPS = (*OPS, "entries", "entries", "entries")
# The valid choice weighted up so most groups get past the layout checks to their entries.
INDEX_DTYPES = ("<i8",) * 6 + ("<i4", "|u1", "<u8", "<f8", "|b1")
DATA_DTYPES = ("<f8",) * 4 + ("<f4", "<c16", "<i4", "|b1", "S3")
SHAPE_DTYPES = ("<i8",) * 6 + ("<u4", "<i4", "<f8")
# Mostly well-named groups: a refused layout stops before any entry is read.
NAMINGS = ("matrix",) * 4 + ("index2", "index3") * 2 + ("mixed", "csr", "gap", "single", "half")
DECLARED = 10**12  # entries declared by a "bomb" member that holds no data


def _index_names(naming: str) -> list[str]:
    return {
        "matrix": ["row", "col"],
        "index2": ["index_0", "index_1"],
        "index3": ["index_0", "index_1", "index_2"],
        "mixed": ["row", "index_1"],
        "csr": ["indices", "indptr"],
        "gap": ["index_0", "index_2"],
        "single": ["index_0"],
        "half": ["row"],
    }[naming]


@st.composite
def coo_specs(draw) -> dict:
    """{'members': {name: array or ('declared', length, dtype)}, 'clean': bool, ...}."""
    naming = draw(st.sampled_from(NAMINGS))
    names = _index_names(naming)
    ndim = len(names)
    shape = [draw(st.one_of(st.integers(0, 6), st.sampled_from((-1, 2**40, 2**63 - 1))))
             for _ in range(ndim)]  # fmt: skip
    nnz = draw(st.integers(0, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    clean = naming in ("matrix", "index2", "index3") and all(0 <= s <= 6 for s in shape)
    members: dict = {}
    for name, extent in zip(names, shape, strict=True):
        dtype = np.dtype(draw(st.sampled_from(INDEX_DTYPES)))
        length = nnz + draw(st.sampled_from((0,) * 9 + (-1, 1)))
        hi = max(min(extent, 6), 1)
        values = rng.integers(0, hi, size=max(length, 0))
        spoil = draw(st.sampled_from(("none",) * 9 + ("negative", "over", "huge")))
        if values.size and spoil != "none":
            values[rng.integers(values.size)] = {"negative": -1, "over": extent, "huge": 2**62}[
                spoil
            ]
        clean &= length == nnz and dtype.kind in "iu" and spoil == "none" and 0 < extent
        clean &= spoil == "none" or not values.size
        if draw(st.integers(0, 19)) == 0:
            members[name] = ("declared", DECLARED, dtype.str)  # a bomb: length with no data
            clean = False
        else:
            with np.errstate(all="ignore"):
                members[name] = values.astype(dtype)
    dtype = np.dtype(draw(st.sampled_from(DATA_DTYPES)))
    length = nnz + draw(st.sampled_from((0,) * 9 + (1,)))
    data = rng.standard_normal(length)
    special = draw(st.sampled_from(("finite", "finite", "nan", "inf")))
    if data.size and special != "finite":
        data[0] = np.nan if special == "nan" else np.inf
    clean &= length == nnz and dtype.kind != "S"
    if draw(st.integers(0, 19)) == 0:
        members["data"] = ("declared", DECLARED, dtype.str)
        clean = False
    else:
        with np.errstate(all="ignore"):
            members["data"] = data.astype(dtype) if dtype.kind != "S" else data.astype("S3")
    shape_dtype = np.dtype(draw(st.sampled_from(SHAPE_DTYPES)))
    shape_len = ndim + draw(st.sampled_from((0,) * 9 + (-1, 1)))
    shape_values = (shape + [3])[:shape_len]
    with np.errstate(all="ignore"):
        members["shape"] = np.array(shape_values, dtype=np.int64).astype(shape_dtype)
    clean &= shape_len == ndim and shape_dtype.kind in "iu" and min(shape) >= 0
    clean &= shape_dtype.kind == "i" or all(s < 2**32 for s in shape)
    extra = draw(st.sampled_from((None,) * 6 + ("notes", "indptr", "index_9")))
    if extra:
        members[extra] = np.arange(3)
        clean &= extra == "notes"
    if draw(st.integers(0, 9)) == 0:  # a member that is 2-D
        victim = draw(st.sampled_from(sorted(members)))
        if not isinstance(members[victim], tuple):
            members[victim] = members[victim].reshape(1, -1)
            clean = False
    return {"members": members, "clean": clean, "names": names, "ndim": ndim}


def write_hdf5(path: Path, members: dict) -> str:
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        for name, value in members.items():
            if isinstance(value, tuple):
                _, length, dtype = value
                g.create_dataset(name, shape=(length,), dtype=dtype, chunks=(4096,))
            else:
                g.create_dataset(name, data=value)
    return f"{path}:/g"


_ZARR_TYPES = {
    "f8": "float64",
    "f4": "float32",
    "c16": "complex128",
    "i8": "int64",
    "i4": "int32",
    "u1": "uint8",
    "u8": "uint64",
    "u4": "uint32",
    "b1": "bool",
}


def _zarr_member(value) -> dict[str, bytes]:
    if isinstance(value, tuple):
        _, length, dtype = value
        shape, chunk, arr = [length], [2**16], None
    else:
        arr = np.asarray(value)
        shape, chunk = list(arr.shape), [max(s, 1) for s in arr.shape]
        dtype = arr.dtype.str
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": _ZARR_TYPES.get(dtype.lstrip("<>|="), "string"),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    if meta["data_type"] == "string":
        meta.update(fill_value="", codecs=[{"name": "vlen-utf8"}])
    elif meta["data_type"] == "bool":
        meta["fill_value"] = False
    files = {"zarr.json": json.dumps(meta).encode()}
    if arr is not None and meta["data_type"] != "string" and arr.size:
        padded = np.zeros(chunk, dtype=arr.dtype.newbyteorder("<"))
        padded[tuple(slice(0, s) for s in arr.shape)] = arr
        files["c/" + "/".join("0" for _ in shape)] = padded.tobytes()
    return files


def write_zarr(path: Path, members: dict) -> str:
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()
    files = {"zarr.json": group, "g/zarr.json": group}
    for name, value in members.items():
        for key, data in _zarr_member(value).items():
            files[f"g/{name}/{key}"] = data
    write_tree(path, files)
    return f"{path}:g"


def _check(scratch, engine: str, spec: dict, op: str) -> None:
    suffix = ".h5" if engine == "hdf5" else ".zarr"
    with scratch.path(suffix) as p:
        uri = (write_hdf5 if engine == "hdf5" else write_zarr)(p, spec["members"])
        outcome = check_input(FUZZ_FORMAT, uri, op)
        if spec["clean"] and (op in ("entries", "describe") or spec["ndim"] == 2):
            # Well-formed entries are read, and read as written (file order, kept as is).
            assert outcome is None, spec
            if op == "entries":
                from rankwise.formats import open_array

                e = open_array(uri, max_bytes=1 << 20).read_entries()
                for got, name in zip(e.indices, spec["names"], strict=True):
                    np.testing.assert_array_equal(got, spec["members"][name])
                np.testing.assert_array_equal(e.values, spec["members"]["data"])


@fuzz_settings(share=FUZZ_SHARE)
@given(spec=coo_specs(), op=st.sampled_from(COO_OPS))
def test_hdf5_coo_groups(scratch, spec, op):
    _check(scratch, "hdf5", spec, op)


@fuzz_settings(share=FUZZ_SHARE)
@given(spec=coo_specs(), op=st.sampled_from(COO_OPS))
def test_zarr_coo_groups(scratch, spec, op):
    _check(scratch, "zarr", spec, op)


@fuzz_settings(share=FUZZ_SHARE)
@given(
    engine=st.sampled_from(("hdf5", "zarr")),
    length=st.sampled_from((2**24, 10**9, HUGE, 2**40)),
    which=st.sampled_from(("row", "col", "data", "all")),
    dtype=st.sampled_from(("<i8", "<i4", "|u1")),
    shape=st.sampled_from(((3, 3), (10**6, 10**6), (2**62, 1))),
    op=st.sampled_from(("entries", "read", "blocks", "scan")),
)
def test_coo_entry_count_bombs(scratch, engine, length, which, dtype, shape, op):
    # Members declaring up to 10^12 entries in a file of a few KiB: refused before allocating.
    members = {"row": np.zeros(2, dtype), "col": np.zeros(2, dtype), "data": np.ones(2)}
    for name in members if which == "all" else [which]:
        members[name] = ("declared", length, members[name].dtype.str)
    members["shape"] = np.array(shape)
    with scratch.path(".h5" if engine == "hdf5" else ".zarr") as p:
        uri = (write_hdf5 if engine == "hdf5" else write_zarr)(p, members)
        assert check_input(FUZZ_FORMAT, uri, op) is not None
