"""Minimal reproducers of the reader bugs the fuzz suite found, each with the error class (and
so the exit code) it must give now. Before each fix the input raised a non-rankwise exception
(a traceback, exit 1), was misclassified, or allocated far past the memory budget."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib

import h5py
import numcodecs
import numpy as np
import pytest

import rankwise.formats as F

BUDGET = 64 * 2**20
SMALL = 2**20  # budget of the bomb reproducers: 32 MiB bombs keep them fast


def _peak_rss_growth(fn) -> int:
    """Growth of the peak RSS while fn() runs (Linux: the peak mark is reset first)."""

    def kib(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = kib("VmRSS")
    fn()
    return (kib("VmHWM") - before) * 1024


def _raises(cls, fn, match: str) -> None:
    with pytest.raises(cls, match=match) as err:
        fn()
    assert "\n" not in str(err.value)


# -- NPY ----------------------------------------------------------------------------------------


def _npy(header: str, version: bytes = b"\x01\x00", length: int | None = None) -> bytes:
    text = header.encode()
    n = len(text) if length is None else length
    size = n.to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + size + text


def test_npy_header_with_unbalanced_brackets(tmp_path):
    # Was tokenize.TokenError from numpy's header re-tokenizer: a traceback.
    text = "{'descr': '<f8', 'fortran_order': False, 'shape':((3, 4), }" + " " * 50 + "\n"
    (tmp_path / "a.npy").write_bytes(_npy(text) + bytes(96))
    _raises(F.DataError, lambda: F.open_array(tmp_path / "a.npy"), r"a\.npy: malformed NPY")


def test_npy_v2_header_length_of_4_gib_is_not_read(tmp_path):
    # Was a 4 GiB read (numpy reads the declared header before checking its size).
    text = "{'descr': '<c16', 'fortran_order': False, 'shape': (), }\n"
    (tmp_path / "a.npy").write_bytes(_npy(text, b"\x02\x00", 2**32 - 1) + bytes(16))
    tracemalloc.start()
    try:
        _raises(F.DataError, lambda: F.open_array(tmp_path / "a.npy"), r"4294967295 header bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# -- NPZ ----------------------------------------------------------------------------------------


def _zip(member: bytes, method: int = zipfile.ZIP_STORED, name: str = "x.npy") -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), member, compress_type=method)
    return bytearray(buf.getvalue())


def _member() -> bytes:
    import numpy.lib.format as npf

    buf = io.BytesIO()
    npf.write_array(buf, np.arange(6.0))
    return buf.getvalue()


def test_npz_member_with_an_empty_name(tmp_path):
    # Was IndexError in zipfile.ZipInfo.is_dir(); the nameless entry is not an array.
    (tmp_path / "a.npz").write_bytes(bytes(_zip(_member(), name="")))
    _raises(F.InputMissingError, lambda: F.open_array(f"{tmp_path / 'a.npz'}:x"), "no array")


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2], ids=["lzma", "bzip2"])
def test_npz_corrupt_lzma_and_bzip2_members_are_bad_data(tmp_path, method):
    # Was _lzma.LZMAError (traceback) / OSError without errno reported as an I/O error (74).
    raw = _zip(_member(), method)
    start = raw.find(b"x.npy") + 5
    raw[start + 12 : start + 40] = bytes(28)
    (tmp_path / "a.npz").write_bytes(bytes(raw))
    _raises(F.DataError, lambda: F.open_array(f"{tmp_path / 'a.npz'}:x").read(), "corrupt")


@pytest.mark.parametrize("budget", [BUDGET, None])
def test_npz_lzma_member_declaring_a_huge_dictionary(tmp_path, budget):
    # Was a 504 MiB allocation (tracemalloc) for a 200-byte member: liblzma allocates the
    # dictionary the member's header declares (up to 4 GiB) before decoding anything.
    raw = _zip(_member(), zipfile.ZIP_LZMA)
    start = raw.find(b"x.npy") + 5  # the member data: version, props size, lc/lp/pb, dict
    raw[start + 5 : start + 9] = (0xFFFF0000).to_bytes(4, "little")
    (tmp_path / "a.npz").write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        _raises(F.BudgetError, lambda: F.open_array(f"{tmp_path / 'a.npz'}:x", max_bytes=budget),
                "dictionary its LZMA compression declares")  # fmt: skip
        if budget is None:  # the listing (no budget) refuses it too, as one entry
            (entry,) = F.list_arrays(tmp_path / "a.npz")["arrays"]
            assert "dictionary" in entry["notes"][0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_npz_offset_before_the_start_of_the_file_is_bad_data(tmp_path):
    # Was StorageError (exit 74, "Invalid argument"): zipfile seeks to a negative offset
    # computed from the directory.
    raw = _zip(_member())
    end = raw.find(b"PK\x05\x06")
    struct.pack_into("<I", raw, end + 16, 2**32 - 1)  # central directory offset
    struct.pack_into("<I", raw, end + 12, 2**31)  # central directory size
    (tmp_path / "a.npz").write_bytes(bytes(raw))
    with pytest.raises(F.DataError):
        F.open_array(f"{tmp_path / 'a.npz'}:x").read()


# -- HDF5 ---------------------------------------------------------------------------------------


def test_hdf5_corrupt_object_header_is_bad_data(tmp_path):
    # Was KeyError/RuntimeError/TypeError from h5py while walking links and headers.
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", data=np.arange(12.0).reshape(3, 4))
        header = h5py.h5o.get_info(d.id).addr
    raw = bytearray(path.read_bytes())
    raw[header] ^= 0xFF  # the object header's version byte
    path.write_bytes(bytes(raw))
    _raises(F.DataError, lambda: F.open_array(f"{path}:/x").read(), "corrupt HDF5 metadata")
    _raises(F.DataError, lambda: F.list_arrays(path), "corrupt HDF5 metadata")


def test_hdf5_chunk_declared_far_larger_than_the_data(tmp_path):
    # 4 values in one 32 MiB chunk of gzip zeros (a 32 KiB file): HDF5 decodes the whole chunk,
    # so a read of 32 bytes used 32 MiB past any budget (560 MiB with a 512 MiB chunk).
    path = tmp_path / "a.h5"
    n = 2**22
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(4,), maxshape=(None,), chunks=(n,), dtype="f8",
                             compression="gzip")  # fmt: skip
        d.id.write_direct_chunk((0,), zlib.compress(bytes(8 * n), 9))
    h = F.open_array(f"{path}:/x", max_bytes=SMALL)
    grew = _peak_rss_growth(
        lambda: _raises(F.BudgetError, h.read, r"32\.0 MiB \(decoding one chunk")
    )
    assert grew < 16 * 2**20


def test_hdf5_deflate_stream_inflating_past_its_chunk(tmp_path):
    # A 32-byte chunk whose stored deflate stream inflates to 32 MiB: HDF5's filter grows its
    # buffer to the end of the stream (560 MiB for a 512 MiB stream), past any budget.
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(4,), chunks=(4,), dtype="f8", compression="gzip")
        d.id.write_direct_chunk((0,), zlib.compress(bytes(2**25), 9))
    for op in ("read", "blocks"):
        h = F.open_array(f"{path}:/x", max_bytes=SMALL)

        def run(h=h, op=op):
            _raises(F.DataError, h.read if op == "read" else lambda: list(h.iter_blocks(2)),
                    "compressed, more than its 32 B")  # fmt: skip

        assert _peak_rss_growth(run) < 16 * 2**20


def test_hdf5_deflate_stream_no_larger_than_its_chunk_inflating_past_it(tmp_path):
    # A 4 KiB stream (smaller than its 8 KiB chunk) inflating to 4 MiB: checked by inflating
    # it with a bound, since it could exceed the budget.
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(1024,), chunks=(1024,), dtype="f8", compression="gzip")
        stream = zlib.compress(bytes(2**22), 9)
        assert len(stream) < 8192
        d.id.write_direct_chunk((0,), stream)
    h = F.open_array(f"{path}:/x", max_bytes=SMALL)
    _raises(F.DataError, h.read, r"inflates to at least 12\.1 KiB, more than the 8\.0 KiB")
    # Without a budget HDF5 inflates all of it (4 MiB here) and keeps the first 8 KiB.
    np.testing.assert_array_equal(F.open_array(f"{path}:/x").read(), np.zeros(1024))


def test_hdf5_result_with_malformed_json_attributes(tmp_path):
    # Was json.JSONDecodeError (a traceback) from read_result of a tampered output.
    from rankwise.formats import hdf5

    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f["U"] = np.eye(2)
        f.attrs["_rankwise_json_attrs"] = "[not json"
    _raises(F.DataError, lambda: hdf5.read_result(path), "malformed result attributes")


# -- Zarr ---------------------------------------------------------------------------------------


def _zarr(path, shape, chunk_shape, chunks: dict[str, bytes], codec=None, **meta) -> None:
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    codecs.append(codec or {"name": "zstd", "configuration": {"level": 1}})
    doc = {"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "float64",
           "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk_shape}},
           "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
           "fill_value": 0.0, "codecs": codecs, **meta}  # fmt: skip
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps(doc))
    for key, data in chunks.items():
        (path / key).parent.mkdir(parents=True, exist_ok=True)
        (path / key).write_bytes(data)


def test_zarr_corrupt_gzip_chunk_is_bad_data(tmp_path):
    # Was zlib.error (a traceback), or BadGzipFile reported as an I/O error (exit 74).
    good = numcodecs.GZip(1).encode(np.arange(4.0))
    for i, chunk in enumerate([good[:10] + bytes(len(good) - 10), b"\x1f\x8bnot gzip"]):
        _zarr(tmp_path / f"z{i}.zarr", [4], [4], {"c/0": chunk}, {"name": "gzip",
              "configuration": {"level": 1}})  # fmt: skip
        _raises(F.DataError, F.open_array(tmp_path / f"z{i}.zarr").read, "cannot decode")


def test_zarr_fill_value_out_of_range_for_the_dtype(tmp_path):
    # Was OverflowError from numpy (a traceback).
    _zarr(tmp_path / "z.zarr", [4], [4], {}, fill_value=-1, data_type="uint8")
    with pytest.raises(F.DataError):
        F.open_array(tmp_path / "z.zarr").read()


def test_zarr_chunk_declared_far_larger_than_the_array(tmp_path):
    # 4 values, chunk_shape 10^8: one 24 KiB zstd frame decoded to 800 MiB for a 32-byte read.
    frame = numcodecs.Zstd(3).encode(np.zeros(10**8))
    _zarr(tmp_path / "z.zarr", [4], [10**8], {"c/0": frame})
    h = F.open_array(tmp_path / "z.zarr", max_bytes=BUDGET)
    grew = _peak_rss_growth(lambda: _raises(F.BudgetError, h.read, "decoding one chunk"))
    assert grew < 100 * 2**20


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_zarr_chunk_frame_inflating_past_its_chunk(tmp_path, codec):
    # An honest chunk_shape of 4 with a frame that inflates to 32 MiB: the codecs allocate what
    # the frame says (zstd; 2 GiB from a 64 KiB chunk) or all it inflates to (gzip).
    encoder = numcodecs.Zstd(3) if codec == "zstd" else numcodecs.GZip(9)
    frame = encoder.encode(np.zeros(2**22))
    _zarr(tmp_path / "z.zarr", [4], [4], {"c/0": frame}, {"name": codec, "configuration": {
        "level": 1}})  # fmt: skip
    h = F.open_array(tmp_path / "z.zarr", max_bytes=SMALL)
    grew = _peak_rss_growth(lambda: _raises(F.DataError, h.read, "decompression bomb"))
    assert grew < 16 * 2**20


def test_zarr_frames_that_fit_their_chunk_still_read(tmp_path):
    # The frame check must not refuse honest chunks, whatever the codec.
    import zarr

    a = np.arange(60.0).reshape(6, 10)
    for i, compressors in enumerate([None, zarr.codecs.GzipCodec(), zarr.codecs.ZstdCodec(),
                                     zarr.codecs.BloscCodec()]):  # fmt: skip
        z = zarr.create_array(tmp_path / f"z{i}.zarr", shape=a.shape, chunks=(4, 4),
                              dtype="f8", compressors=compressors,
                              config={"write_empty_chunks": True})  # fmt: skip
        z[...] = a
        np.testing.assert_array_equal(F.open_array(tmp_path / f"z{i}.zarr").read(), a)
    z = zarr.create_array(tmp_path / "s.zarr", shape=a.shape, chunks=(2, 2), shards=(2, 10),
                          dtype="f8", config={"write_empty_chunks": True})  # fmt: skip
    z[...] = a
    np.testing.assert_array_equal(F.open_array(tmp_path / "s.zarr", max_bytes=BUDGET).read(), a)
