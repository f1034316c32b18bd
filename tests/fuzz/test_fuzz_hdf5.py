"""Fuzz the HDF5 reader: byte mutations of files h5py wrote (superblock, object headers, chunk
index and data), generated files (dtypes, layouts, filters, unwritten storage, links, external
storage, virtual datasets), and dataspaces patched to declare huge shapes."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzz.fuzzkit import HUGE, OPS, check_input, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st

import rankwise.formats as F

FUZZ_FORMAT = "hdf5"


def _hot(f: h5py.File) -> list[tuple[int, int]]:
    """Object headers, contiguous data and chunks of every object in the file."""
    regions = [(0, 128)]  # superblock

    def add(obj):
        regions.append((h5py.h5o.get_info(obj.id).addr, h5py.h5o.get_info(obj.id).addr + 256))
        if isinstance(obj, h5py.Dataset):
            offset = obj.id.get_offset()
            if offset is not None:
                regions.append((offset, offset + 64))
            if obj.chunks is not None:
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    regions.append((info.byte_offset, info.byte_offset + info.size))

    add(f["/"])
    f.visititems(lambda name, obj: add(obj))
    return regions


def _base(tmp: Path, name: str, build) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    path = tmp / name
    with h5py.File(path, "w", userblock_size=512 if "userblock" in name else 0) as f:
        build(f)
    with h5py.File(path, "r") as f:
        hot = _hot(f)
    return path.read_bytes(), tuple(hot)


def _builders():
    a = np.arange(12.0).reshape(3, 4)
    return {
        "contiguous": lambda f: f.create_dataset("x", data=a),
        "chunked-gzip": lambda f: f.create_dataset(
            "x",
            data=np.arange(30, dtype="<i4").reshape(6, 5),
            chunks=(2, 2),
            compression="gzip",
            shuffle=True,
        ),  # fmt: skip
        "chunked-fletcher": lambda f: f.create_dataset(
            "x", data=a.astype(">f4"), chunks=(2, 4), fletcher32=True, compression="lzf"
        ),
        "compact": lambda f: f.create_dataset(
            "x", data=np.arange(6, dtype="<i8"), dcpl=_compact_dcpl()
        ),
        "grouped": lambda f: (
            f.create_group("g").create_dataset("x", data=a.T.copy()),
            f.__setitem__("x", h5py.SoftLink("/g/x")),
            f["g"].attrs.__setitem__("note", "text"),
        ),
        "userblock": lambda f: f.create_dataset("x", data=a),
    }


def _compact_dcpl():
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    return dcpl


@functools.cache
def bases() -> list[tuple[bytes, tuple[tuple[int, int], ...]]]:
    """Files written by h5py with their hot regions (not a fixture: hypothesis would print it)."""
    with tempfile.TemporaryDirectory() as d:
        return [_base(Path(d), f"{name}.h5", build) for name, build in _builders().items()]


@fuzz_settings()
@given(data=st.data(), op=st.sampled_from(OPS))
def test_mutated_hdf5_bytes(scratch, data, op):
    raw, hot = data.draw(st.sampled_from(bases()), label="base")
    raw = data.draw(mutated(raw, hot=hot), label="mutated")
    with scratch.path(".h5") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, f"{p}:/x", op)


# -- generated files ------------------------------------------------------------------------

NUMERIC = ("<f8", ">f8", "<f4", "<f2", "<i4", ">i8", "|u1", "<u2", "<c16", "|b1")
REFUSED = ("S4", "str", "vlen-int", "compound", "opaque", "ref", "array", "enum")
KINDS = ("dataset",) * 8 + (
    "soft",
    "soft-dangling",
    "soft-cycle",
    "external-link",
    "group",
    "null",
    "virtual-same",
    "virtual-other",
    "external-storage",
)


def _dtype(name: str):
    return {
        "S4": np.dtype("S4"),
        "str": h5py.string_dtype(),
        "vlen-int": h5py.vlen_dtype(np.int32),
        "compound": np.dtype([("a", "<f8"), ("b", "<i4")]),
        "opaque": np.dtype("V8"),
        "ref": h5py.ref_dtype,
        "array": np.dtype("(2,)f8"),
        "enum": h5py.enum_dtype({"a": 0, "b": 1}, basetype="i1"),
    }.get(name) or np.dtype(name)


small_shapes = st.lists(st.integers(0, 5), max_size=3).map(tuple)


@st.composite
def specs(draw) -> dict:
    kind = draw(st.sampled_from(KINDS))
    dtype = draw(st.sampled_from(NUMERIC * 3 + REFUSED))
    shape = draw(small_shapes)
    layout = draw(st.sampled_from(("contiguous", "chunked", "compact")))
    spec = dict(kind=kind, dtype=dtype, shape=shape, layout=layout)
    if layout == "chunked" and shape:
        spec["chunks"] = tuple(draw(st.integers(1, 6)) for _ in shape)
        spec["maxshape"] = draw(st.sampled_from(("fixed", "unlimited")))
        spec["filters"] = draw(
            st.sampled_from(("none", "gzip", "lzf", "shuffle-gzip", "fletcher32", "scaleoffset"))
        )
    spec["write"] = draw(st.sampled_from(("all", "all", "all", "none", "first")))
    spec["fill"] = draw(st.sampled_from((None, 0, 7, "nan")))
    spec["values"] = draw(st.sampled_from(("finite", "finite", "nan", "inf", "extreme")))
    return spec


def _values(spec: dict, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(len(shape))
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if spec["values"] == "extreme" else (0, 100)
        native = dtype.newbyteorder("=")
        return rng.integers(lo, hi, size=shape, dtype=native, endpoint=True).astype(dtype)
    out = rng.standard_normal(shape).astype(dtype)
    if out.size and spec["values"] in ("nan", "inf"):
        out.flat[0] = np.nan if spec["values"] == "nan" else np.inf
    if out.size and spec["values"] == "extreme":
        out.flat[-1] = np.finfo(dtype.type(0).real.dtype).max
    return out


def build(directory: Path, spec: dict) -> tuple[Path, np.ndarray | None]:
    """Write the spec's file; return it and the array a clean file must read back as."""
    path = directory / "f.h5"
    kind, shape, layout = spec["kind"], spec["shape"], spec["layout"]
    dtype = _dtype(spec["dtype"])
    numeric = spec["dtype"] in NUMERIC
    kw: dict = {}
    if layout == "chunked" and shape:
        kw["chunks"] = spec["chunks"]
        if spec["maxshape"] == "unlimited":
            kw["maxshape"] = (None,) * len(shape)
        filters = spec["filters"]
        if filters in ("gzip", "shuffle-gzip"):
            kw.update(compression="gzip", shuffle=filters == "shuffle-gzip")
        elif filters == "lzf":
            kw["compression"] = "lzf"
        elif filters == "fletcher32":
            kw["fletcher32"] = True
        elif filters == "scaleoffset" and numeric and np.dtype(dtype).kind in "iu":
            kw["scaleoffset"] = 0
    elif layout == "compact" and numeric:
        kw["dcpl"] = _compact_dcpl()
    if spec["fill"] is not None and numeric and np.dtype(dtype).kind != "b":
        kw["fillvalue"] = np.nan if spec["fill"] == "nan" and dtype.kind in "fc" else 0
    expected = None
    with h5py.File(path, "w") as f:
        if kind == "null":
            f.create_dataset("x", data=h5py.Empty("f8"))
            return path, None
        if kind == "group":
            f.create_group("x").create_dataset("y", data=np.ones(2))
            return path, None
        if kind == "external-link":
            with h5py.File(directory / "other.h5", "w") as g:
                g["y"] = np.ones((2, 2))
            f["x"] = h5py.ExternalLink("other.h5", "/y")
            return path, None
        if kind in ("soft-dangling", "soft-cycle"):
            f["x"] = h5py.SoftLink("/nowhere" if kind == "soft-dangling" else "/x")
            return path, None
        if kind == "external-storage":
            n = int(np.prod(shape)) * np.dtype("<f8").itemsize
            (directory / "raw.bin").write_bytes(bytes(n))
            f.create_dataset("x", shape=shape, dtype="<f8", external=[("raw.bin", 0, max(n, 1))])
            return path, None
        if kind in ("virtual-same", "virtual-other"):
            src_shape = shape or (3,)
            if kind == "virtual-other":
                with h5py.File(directory / "src.h5", "w") as g:
                    g["s"] = np.ones(src_shape)
                source = h5py.VirtualSource("src.h5", "s", shape=src_shape)
            else:
                f["s"] = np.ones(src_shape)
                source = h5py.VirtualSource(".", "s", shape=src_shape)
            vl = h5py.VirtualLayout(shape=src_shape, dtype="f8")
            vl[...] = source
            f.create_virtual_dataset("x", vl, fillvalue=0)
            return path, None
        try:
            dset = f.create_dataset("x", shape=shape, dtype=dtype, **kw)
        except (ValueError, TypeError):  # h5py refuses the combination: plain layout instead
            dset = f.create_dataset("x", shape=shape, dtype=dtype)
            kw = {}
        if numeric and spec["write"] != "none":
            data = _values(spec, np.dtype(dtype), shape)
            if spec["write"] == "all" or not shape:
                dset[...] = data
                expected = data
            elif shape[0]:
                dset[0] = data[0]
        if kind == "soft":
            f["alias"] = h5py.SoftLink("/x")
    return path, expected


@fuzz_settings()
@given(spec=specs(), op=st.sampled_from(OPS))
def test_generated_hdf5_files(scratch, spec, op):
    with scratch.path("") as d:
        d.mkdir()
        path, expected = build(d, spec)
        outcome = check_input(FUZZ_FORMAT, f"{path}:/x", op)
        if expected is not None and spec["kind"] in ("dataset", "soft"):
            # A fully written numeric dataset is read, and read right.
            assert outcome is None, spec
            if op == "read":
                got = F.open_array(f"{path}:/x", max_bytes=1 << 20).read()
                np.testing.assert_array_equal(got, expected)


# -- bombs: a tiny file declaring a huge shape ------------------------------------------------


@fuzz_settings()
@given(
    dims=st.lists(
        st.sampled_from((3, 4, 2**24 + 1, 10**9, HUGE, 2**62, 2**63 - 1, 2**64 - 1)),
        min_size=2,
        max_size=2,
    ),
    layout=st.sampled_from(("contiguous", "chunked", "chunked-unlimited", "compact")),
    dtype=st.sampled_from(("<f8", "<i4", "<c16", "|u1")),
    which=st.sampled_from(("all", "first", "last")),
    op=st.sampled_from(("read", "blocks", "scan", "describe")),
)
def test_hdf5_patched_dataspace_bombs(scratch, dims, layout, dtype, which, op):
    # The dataspace message stores extents (and max extents) as 8-byte little-endian lengths:
    # patch (3, 4) into `dims` in the dataspace, the max extents, or both.
    with scratch.path(".h5") as p:
        kw = {}
        if layout.startswith("chunked"):
            kw["chunks"] = (3, 4)
            if layout == "chunked-unlimited":
                kw["maxshape"] = (None, None)
        elif layout == "compact":
            kw["dcpl"] = _compact_dcpl()
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=np.arange(12).reshape(3, 4).astype(dtype), **kw)
        raw = p.read_bytes()
        old, new = struct.pack("<QQ", 3, 4), struct.pack("<QQ", *dims)
        at = [i for i in range(len(raw)) if raw.startswith(old, i)]
        assert at
        for i in {"all": at, "first": at[:1], "last": at[-1:]}[which]:
            raw = raw[:i] + new + raw[i + len(old) :]
        p.write_bytes(raw)
        outcome = check_input(FUZZ_FORMAT, f"{p}:/x", op)
        # With every copy patched the dataspace itself declares `dims`: never read.
        huge = np.prod(dims, dtype=object) * np.dtype(dtype).itemsize > 64 * 2**20
        if huge and which == "all" and op != "describe":
            assert outcome is not None


@pytest.mark.parametrize("written", [False, True])
def test_hdf5_chunked_bomb_is_refused_by_the_budget(tmp_path, written):
    # 10^12 float64 declared by a file of a few KiB (chunks never written, or one written).
    with h5py.File(tmp_path / "bomb.h5", "w") as f:
        d = f.create_dataset("x", shape=(10**6, 10**6), dtype="f8", chunks=(1, 1024))
        if written:
            d[0, :1024] = 1.0
    assert (tmp_path / "bomb.h5").stat().st_size < 64 * 1024
    outcome = check_input(FUZZ_FORMAT, f"{tmp_path / 'bomb.h5'}:/x", "read")
    assert outcome is F.BudgetError
