"""Fuzz the Zarr reader: stores zarr wrote (v3, v3 sharded, v2) with generated metadata
fields (shape, chunk_shape, data_type/dtype, codecs, fill_value, key encoding, ...), mutated
metadata text, deleted/truncated/corrupted/extra chunk files, and chunk decompression bombs."""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from fuzz.fuzzkit import (
    BUDGET,
    HUGE,
    OPS,
    blob,
    check_input,
    fuzz_settings,
    mutated,
    read_tree,
    weird_ints,
    write_tree,
)
from hypothesis import given
from hypothesis import strategies as st

import rankwise.formats as F

FUZZ_FORMAT = "zarr"
# No per-example tracemalloc: a read zarr abandons on error leaves decodes running in its
# thread pool, and stopping tracemalloc while they allocate crashes CPython 3.11 (a race in
# its raw-allocator hooks). Decoded buffers are written, so the peak-RSS check sees them.
FUZZ_TRACE = False
ALL_CHUNKS = {"write_empty_chunks": True}


def _store(tmp: Path, name: str, **kw) -> dict[str, bytes]:
    data = kw.pop("data")
    z = zarr.create_array(tmp / name, shape=data.shape, dtype=data.dtype, config=ALL_CHUNKS, **kw)
    z[...] = data
    return read_tree(tmp / name)


@functools.cache
def bases() -> list[dict[str, bytes]]:
    """Stores written by zarr, as {key: bytes} (not a fixture: hypothesis would print it)."""
    with tempfile.TemporaryDirectory() as d:
        return _bases(Path(d))


def _bases(tmp: Path) -> list[dict[str, bytes]]:
    a = np.arange(30.0).reshape(6, 5)
    return [
        _store(tmp, "v3.zarr", data=a, chunks=(2, 2)),
        _store(
            tmp,
            "v3-gzip.zarr",
            data=a.astype("<i4"),
            chunks=(4, 5),
            compressors=[zarr.codecs.GzipCodec(level=1)],
        ),  # fmt: skip
        _store(tmp, "v3-raw.zarr", data=a.astype("f4"), chunks=(3, 3), compressors=None),
        _store(
            tmp, "v3-shard.zarr", data=np.arange(64.0).reshape(8, 8), chunks=(2, 2), shards=(4, 4)
        ),  # fmt: skip
        _store(
            tmp,
            "v3-dot.zarr",
            data=a,
            chunks=(3, 5),
            chunk_key_encoding={"name": "default", "separator": "."},
        ),  # fmt: skip
        _store(tmp, "v2.zarr", data=a.astype("<i8"), chunks=(2, 5), zarr_format=2),
        _store(
            tmp, "v2-F.zarr", data=a, chunks=(3, 2), zarr_format=2, order="F", compressors=None
        ),  # fmt: skip
        _store(tmp, "v3-1d.zarr", data=np.arange(7, dtype="u1"), chunks=(4,)),
    ]


def _meta_name(files: dict[str, bytes]) -> str:
    return "zarr.json" if "zarr.json" in files else ".zarray"


# -- metadata field values ------------------------------------------------------------------

json_junk = st.sampled_from((None, True, 0, -1, 1.5, "", "x", [], {}, [[]], {"name": 3}))
int_lists = st.lists(st.one_of(weird_ints, st.integers(0, 9)), max_size=3)
dims = st.one_of(int_lists, json_junk, st.lists(st.sampled_from((1.5, "3", None)), max_size=2))
V3_TYPES = ("float64", "float32", "float16", "int8", "int32", "uint64", "bool", "complex128")
V3_OTHER = ("string", "bytes", "variable_length_utf8", "r64", "r0", "fixed_length_utf32",
            "structured", "datetime64", "object", "float128", "int", "")  # fmt: skip
V2_TYPES = ("<f8", ">f8", "<i4", "|u1", "|b1", "<c16", "<f2")
V2_OTHER = ("|O", "<U5", "|S3", "|V8", "<M8[ns]", "<m8[s]", [["a", "<f8"], ["b", "<i4"]],
            [["a", "<f8", [2]]], "<f16", "f8", "<x8")  # fmt: skip
codec_names = st.sampled_from(
    ("bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "sharding_indexed", "vlen-utf8",
     "numcodecs.pickle", "numcodecs.zlib", "nope")
)  # fmt: skip
codec_configs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "endian": st.sampled_from(("little", "big", "middle", None)),
            "level": st.one_of(weird_ints, st.integers(-1, 22)),
            "checksum": st.booleans(),
            "order": st.one_of(int_lists, json_junk),
            "cname": st.sampled_from(("lz4", "zstd", "nope", "")),
            "shuffle": st.sampled_from(("noshuffle", "shuffle", "bitshuffle", "x")),
            "typesize": st.one_of(weird_ints, st.integers(0, 16)),
            "clevel": st.integers(-1, 12),
            "blocksize": st.one_of(weird_ints, st.integers(0, 16)),
            "chunk_shape": int_lists,
            "codecs": st.just([{"name": "bytes", "configuration": {"endian": "little"}}]),
            "index_codecs": st.just([{"name": "bytes"}, {"name": "crc32c"}]),
            "index_location": st.sampled_from(("end", "start", "middle")),
        },
    ),
)
codecs = st.one_of(
    st.lists(
        st.builds(
            lambda n, c: {"name": n} if c is None else {"name": n, "configuration": c},
            codec_names,
            codec_configs,
        ),
        max_size=3,
    ),  # fmt: skip
    json_junk,
)
v2_codecs = st.one_of(
    st.none(),
    st.sampled_from(
        (
            {"id": "zlib", "level": 1},
            {"id": "zstd", "level": 99},
            {"id": "blosc", "cname": "nope", "clevel": 5, "shuffle": 1, "blocksize": 0},
            {"id": "pickle"},
            {"id": "nope"},
            {"id": "delta", "dtype": "<f8"},
            {"id": "lzma", "format": 99},
            {"id": "gzip", "level": -5},
        )
    ),
    json_junk,
)
fill_values = st.one_of(
    st.sampled_from((0, 1.5, "NaN", "Infinity", "-Infinity", "0x7ff8000000000001", "nan",
                     2**70, -(2**70), "abc", None, True, [1, 2], {"a": 1}, "AAAAAAAAAAA=")),
    weird_ints,
)  # fmt: skip

V3_FIELDS = {
    "shape": dims,
    "chunk_grid": st.one_of(
        dims.map(lambda d: {"name": "regular", "configuration": {"chunk_shape": d}}),
        st.sampled_from(
            (
                {"name": "rectilinear"},
                {"name": "regular"},
                {"name": "regular", "configuration": None},
            )
        ),
        json_junk,
    ),  # fmt: skip
    "data_type": st.one_of(
        st.sampled_from(V3_TYPES + V3_OTHER),
        st.sampled_from(
            (
                {"name": "float64"},
                {"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 1}},
            )
        ),
        json_junk,
    ),  # fmt: skip
    "codecs": codecs,
    "fill_value": fill_values,
    "chunk_key_encoding": st.one_of(
        st.sampled_from(
            (
                {"name": "v2", "configuration": {"separator": "."}},
                {"name": "v2", "configuration": {"separator": "/"}},
                {"name": "default", "configuration": {"separator": "x"}},
                {"name": "nope"},
            )
        ),
        json_junk,
    ),
    "node_type": st.one_of(st.sampled_from(("array", "group", "nope")), json_junk),
    "zarr_format": st.one_of(st.sampled_from((2, 3, 4, "3")), json_junk),
    "dimension_names": st.one_of(st.lists(st.sampled_from(("x", None, 3)), max_size=3), json_junk),
    "storage_transformers": st.one_of(st.just([{"name": "nope"}]), json_junk),
    "attributes": json_junk,
}
V2_FIELDS = {
    "shape": dims,
    "chunks": dims,
    "dtype": st.one_of(st.sampled_from(V2_TYPES + V2_OTHER), json_junk),
    "compressor": v2_codecs,
    "filters": st.one_of(st.lists(v2_codecs, max_size=2), json_junk),
    "fill_value": fill_values,
    "order": st.one_of(st.sampled_from(("C", "F", "X")), json_junk),
    "dimension_separator": st.one_of(st.sampled_from((".", "/", "x")), json_junk),
    "zarr_format": st.one_of(st.sampled_from((2, 3)), json_junk),
}


@st.composite
def edited_stores(draw, bases: list[dict[str, bytes]]) -> dict[str, bytes]:
    files = dict(draw(st.sampled_from(bases)))
    name = _meta_name(files)
    meta = json.loads(files[name])
    fields = V3_FIELDS if name == "zarr.json" else V2_FIELDS
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(fields)))
        if draw(st.integers(0, 5)) == 0:
            meta.pop(key, None)
        else:
            meta[key] = draw(fields[key])
    # Edit inside the sharding codec too: its inner chunk shape is a decode size.
    for codec in meta.get("codecs") or [] if isinstance(meta.get("codecs"), list) else []:
        if isinstance(codec, dict) and codec.get("name") == "sharding_indexed":
            if draw(st.booleans()):
                codec = copy.deepcopy(codec)
                codec.setdefault("configuration", {})["chunk_shape"] = draw(dims)
    files[name] = json.dumps(meta, allow_nan=True).encode()
    return files


@fuzz_settings(tests_in_module=4)
@given(data=st.data(), op=st.sampled_from(OPS))
def test_generated_zarr_metadata(scratch, data, op):
    files = data.draw(edited_stores(bases()))
    with scratch.path(".zarr") as p:
        write_tree(p, files)
        check_input(FUZZ_FORMAT, p, op)


@fuzz_settings(tests_in_module=4)
@given(data=st.data(), op=st.sampled_from(OPS))
def test_mutated_zarr_metadata_text(scratch, data, op):
    files = dict(data.draw(st.sampled_from(bases())))
    name = _meta_name(files)
    files[name] = data.draw(mutated(files[name], hot=((0, len(files[name])),)))
    with scratch.path(".zarr") as p:
        write_tree(p, files)
        check_input(FUZZ_FORMAT, p, op)


# -- chunk files -----------------------------------------------------------------------------

CHUNK_EDITS = ("delete", "truncate", "mutate", "replace", "empty", "extra", "directory", "rename")


@st.composite
def chunk_edited_stores(draw, bases: list[dict[str, bytes]]) -> tuple[dict, set, bool]:
    """(files, directories to create in place of chunks, whether a chunk is gone)."""
    files = dict(draw(st.sampled_from(bases)))
    dirs: set[str] = set()
    chunks = sorted(k for k in files if not k.endswith(("zarr.json", ".zarray", ".zattrs")))
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(CHUNK_EDITS))
        if not chunks:
            break
        key = draw(st.sampled_from(chunks))
        if key not in files:
            continue
        if edit == "delete":
            del files[key]
        elif edit == "truncate":
            files[key] = files[key][: draw(st.integers(0, max(len(files[key]) - 1, 0)))]
        elif edit == "mutate":
            files[key] = draw(mutated(files[key]))
        elif edit == "replace":
            files[key] = blob(draw, draw(st.integers(1, 512)))
        elif edit == "empty":
            files[key] = b""
        elif edit == "extra":
            extra = draw(st.sampled_from(("c/9/9", "c/0/0/0", "9.9", "c/-1/0", "c/0", "0.0.0")))
            files[extra] = files[key]
        elif edit == "directory":
            del files[key]
            dirs.add(key)
        elif edit == "rename":
            files[key.replace("0", "1", 1)] = files.pop(key)
    return files, dirs, any(k not in files for k in chunks)


@fuzz_settings(tests_in_module=4)
@given(data=st.data(), op=st.sampled_from(OPS))
def test_edited_zarr_chunks(scratch, data, op):
    files, dirs, gone = data.draw(chunk_edited_stores(bases()))
    with scratch.path(".zarr") as p:
        try:
            write_tree(p, files)
            for d in dirs:
                (p / d).mkdir(parents=True, exist_ok=True)
        except OSError:  # the edits collide on disk (a file where a directory is): skip
            return
        outcome = check_input(FUZZ_FORMAT, p, op)
        if gone and op in ("read", "blocks", "scan"):
            # A missing chunk is an error, never a silent fill value.
            assert outcome is not None


# -- bombs -----------------------------------------------------------------------------------


def _bomb_store(p: Path, shape, chunk_shape, chunk: bytes | None, v2: bool = False) -> None:
    """A store declaring `shape`/`chunk_shape` whose only chunk (if any) is `chunk`."""
    if v2:
        meta = {"zarr_format": 2, "shape": shape, "chunks": chunk_shape, "dtype": "<f8",
                "fill_value": 0, "order": "C", "filters": None, "compressor": {"id": "zstd",
                "level": 1}}  # fmt: skip
        files = {".zarray": json.dumps(meta).encode()}
        key = ".".join("0" for _ in shape)
    else:
        meta = {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "float64",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk_shape}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian":
                "little"}}, {"name": "zstd", "configuration": {"level": 1}}]}  # fmt: skip
        files = {"zarr.json": json.dumps(meta).encode()}
        key = "c/" + "/".join("0" for _ in shape)
    if chunk is not None:
        files[key] = chunk
    write_tree(p, files)


@pytest.fixture(scope="module")
def zeros_frames() -> dict[int, bytes]:
    """zstd frames of n zero float64s: a few KiB that inflate to n × 8 bytes."""
    return {n: numcodecs.Zstd(level=3).encode(np.zeros(n)) for n in (2**20, 2**23 + 8)}


@fuzz_settings(tests_in_module=4)
@given(
    shape=st.lists(st.sampled_from((1, 4, 2**24 + 1, 10**9, HUGE, 2**62)), min_size=1, max_size=2),
    chunk_shape=st.lists(
        st.sampled_from((1, 4, 2**20, 2**23 + 8, 10**9, HUGE)), min_size=1, max_size=2
    ),  # fmt: skip
    chunk=st.sampled_from((None, "small", "big")),
    v2=st.booleans(),
    op=st.sampled_from(("read", "blocks", "scan", "describe", "list")),
)
def test_zarr_shape_and_chunk_bombs(scratch, zeros_frames, shape, chunk_shape, chunk, v2, op):
    # A tiny store declaring a huge shape, or a huge chunk whose stored frame inflates to it.
    frame = {None: None, "small": zeros_frames[2**20], "big": zeros_frames[2**23 + 8]}[chunk]
    with scratch.path(".zarr") as p:
        _bomb_store(p, shape, chunk_shape[: len(shape)] + [1] * (len(shape) - len(chunk_shape)),
                    frame, v2)  # fmt: skip
        outcome = check_input(FUZZ_FORMAT, p, op)
        if np.prod(shape, dtype=object) * 8 > BUDGET and op in ("read", "scan"):
            assert outcome is not None


def test_zarr_chunk_bomb_is_refused_by_the_budget(tmp_path):
    # 4 declared values, one chunk declared as 2**27 float64 (1 GiB) in a ~32 KiB zstd frame:
    # decoding it would allocate the whole chunk, so the budget refuses it first.
    frame = numcodecs.Zstd(level=3).encode(np.zeros(2**27))
    assert len(frame) < 2**16
    _bomb_store(tmp_path / "b.zarr", [4], [2**27], frame)
    with pytest.raises(F.BudgetError, match=r"b\.zarr: needs 1\.0 GiB \(decoding one chunk"):
        F.open_array(tmp_path / "b.zarr", max_bytes=BUDGET).read()
    assert check_input(FUZZ_FORMAT, tmp_path / "b.zarr", "blocks") is F.BudgetError


def test_zarr_shape_bomb_is_refused_by_the_budget(tmp_path):
    # 10^12 float64 declared by one metadata file: the budget refuses before any chunk.
    _bomb_store(tmp_path / "s.zarr", [10**6, 10**6], [1000, 1000], None)
    with pytest.raises(F.BudgetError, match=r"s\.zarr: needs 7\.3 TiB"):
        F.open_array(tmp_path / "s.zarr", max_bytes=BUDGET).read()
