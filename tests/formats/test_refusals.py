"""Every refusal with its exact error class (the CLI maps classes to exit codes)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

import rankwise.formats as F

# zarr warns that string/structured dtypes lack a v3 spec; those stores are refused anyway.
pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3")


def _refused_notes(listing: dict, name: str) -> list[str]:
    entry = next(e for e in listing["arrays"] if e["name"] == name)
    return [n for n in entry["notes"] if n.startswith("refused: ")]


# -- missing inputs, usage errors ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["nope.h5:/x", "nope.h5", "nope.zarr", "nope.zarr:a/b", "nope.npz:k", "nope.npy", "nope.mtx"],
)
def test_missing_file_is_input_missing(tmp_path, name):
    with pytest.raises(F.InputMissingError, match="no such file"):
        F.open(f"{tmp_path}/{name}")


def test_missing_dataset_lists_what_exists(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["a/b"] = np.ones(2)
        f["c"] = np.ones(2)
    with pytest.raises(F.InputMissingError, match=r"'/a/x'.*d\.h5:/a/b, .*d\.h5:/c"):
        F.open(f"{tmp_path / 'd.h5'}:/a/x")
    with pytest.raises(F.InputMissingError, match="is a dataset"):
        F.open(f"{tmp_path / 'd.h5'}:/c/deeper")

    np.savez(tmp_path / "d.npz", U=np.ones(2), S=np.ones(1))
    with pytest.raises(F.InputMissingError, match=r"no array 'V'.*d\.npz:U, .*d\.npz:S"):
        F.open(f"{tmp_path / 'd.npz'}:V")

    import zarr

    g = zarr.open_group(tmp_path / "d.zarr", mode="w")
    g.create_array("grp/u", shape=(2,), dtype="f8")
    with pytest.raises(F.InputMissingError, match=r"no array 'grp/v'.*d\.zarr:grp/u"):
        F.open(f"{tmp_path / 'd.zarr'}:grp/v")


def test_unknown_format_lists_known_ones(tmp_path):
    (tmp_path / "table.csv").write_text("1,2\n3,4\n")
    with pytest.raises(F.UsageError, match="known formats: hdf5, zarr, npz, npy, mtx"):
        F.open(tmp_path / "table.csv")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(F.UsageError, match="not a Zarr store; known formats"):
        F.open(tmp_path / "plain_dir")


def test_several_arrays_without_key_is_usage_error_listing_uris(tmp_path):
    import zarr

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["x"] = np.ones(2)
        f["g/y"] = np.ones(2)
    np.savez(tmp_path / "m.npz", x=np.ones(2), y=np.ones(2))
    g = zarr.open_group(tmp_path / "m.zarr", mode="w")
    g.create_array("x", shape=(2,), dtype="f8")
    g.create_array("g/y", shape=(2,), dtype="f8")
    for path, uris in [
        ("m.h5", ["m.h5:/g/y", "m.h5:/x"]),
        ("m.npz", ["m.npz:x", "m.npz:y"]),
        ("m.zarr", ["m.zarr:g/y", "m.zarr:x"]),
    ]:
        with pytest.raises(F.UsageError, match="holds 2 arrays, name one") as err:
            F.open(tmp_path / path)
        for uri in uris:
            assert f"{tmp_path}/{uri}" in str(err.value)


def test_key_on_single_array_formats_is_usage_error(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    (tmp_path / "a.mtx").write_text("%%MatrixMarket matrix array real general\n1 1\n1\n")
    for name in ("a.npy:x", "a.mtx:x"):
        with pytest.raises(F.UsageError, match="takes no"):
            F.open(tmp_path / name)


def test_group_key_is_usage_error(tmp_path):
    import zarr

    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["grp/x"] = np.ones(2)
    with pytest.raises(F.UsageError, match=r"is a group, not an array.*g\.h5:/grp/x"):
        F.open(f"{tmp_path / 'g.h5'}:/grp")
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("grp/x", shape=(2,), dtype="f8")
    with pytest.raises(F.UsageError, match=r"is a group, not an array.*g\.zarr:grp/x"):
        F.open(f"{tmp_path / 'g.zarr'}:grp")


def test_unreadable_input_is_input_missing(tmp_path, not_root):
    np.save(tmp_path / "secret.npy", np.ones(2))
    os.chmod(tmp_path / "secret.npy", 0)
    with pytest.raises(F.InputMissingError, match="permission denied"):
        F.open(tmp_path / "secret.npy")


def test_permission_denied_is_input_missing_even_as_root(tmp_path, monkeypatch):
    from rankwise.formats import detect, npy

    np.save(tmp_path / "secret.npy", np.ones(2))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(detect, "open", denied, raising=False)
    with pytest.raises(F.InputMissingError, match="permission denied"):
        F.open(tmp_path / "secret.npy")
    monkeypatch.undo()
    monkeypatch.setattr(npy, "open", denied, raising=False)
    with pytest.raises(F.InputMissingError, match="permission denied"):
        F.open(tmp_path / "secret.npy")


def test_os_errors_while_reading_data_are_storage_errors(tmp_path, monkeypatch):
    import errno

    import zarr

    from rankwise.formats import hdf5, npy

    eio = OSError(errno.EIO, "Input/output error")
    np.save(tmp_path / "a.npy", np.ones((4, 2)))
    monkeypatch.setattr(npy, "readinto_exact", lambda *a, **k: (_ for _ in ()).throw(eio))
    with pytest.raises(F.StorageError, match="Input/output error"):
        F.open(tmp_path / "a.npy").read()
    with pytest.raises(F.StorageError):
        list(F.open(tmp_path / "a.npy").iter_blocks(2))

    # h5py reports OS failures and corrupt chunks both as OSError: the errno decides.
    with pytest.raises(F.StorageError):
        with hdf5.read_errors("x.h5:/a"):
            raise OSError(
                "Can't synchronously read data (file read failed: errno = 5, "
                "error message = 'Input/output error')"
            )
    with pytest.raises(F.DataError):
        with hdf5.read_errors("x.h5:/a"):
            raise OSError("Can't synchronously read data (filter returned failure during read)")

    z = zarr.create_array(
        store=tmp_path / "z.zarr",
        shape=(4,),
        chunks=(2,),
        dtype="f8",
        config={"write_empty_chunks": True},
    )
    z[...] = 1.0
    h = F.open(tmp_path / "z.zarr")
    monkeypatch.setattr(
        type(h._member.array), "__getitem__", lambda self, key: (_ for _ in ()).throw(eio)
    )
    with pytest.raises(F.StorageError, match="Input/output error"):
        h.read()


# -- refused content -----------------------------------------------------------------------


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", obj=np.array([{"a": 1}, None], dtype=object), ok=np.ones(2))
    with pytest.raises(F.DataError, match="pickled Python objects"):
        F.open(f"{tmp_path / 'p.npz'}:obj")
    notes = _refused_notes(F.list_arrays(tmp_path / "p.npz"), "obj")
    assert notes and "pickled" in notes[0]
    np.testing.assert_array_equal(F.open(f"{tmp_path / 'p.npz'}:ok").read(), np.ones(2))


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.array([1, "x", None], dtype=object), "pickled"),
        (np.array(["ab", "c"]), "string"),
        (np.array([b"ab"]), "string"),
        (np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), "structured"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "date/time"),
    ],
    ids=["object", "unicode", "bytes", "structured", "datetime"],
)
def test_npy_refused_dtypes(tmp_path, array, reason):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(F.DataError, match=reason):
        F.open(tmp_path / "bad.npy")
    assert reason in _refused_notes(F.list_arrays(tmp_path / "bad.npy"), "bad.npy")[0]


def test_hdf5_refused_dtypes(tmp_path):
    path = tmp_path / "types.h5"
    with h5py.File(path, "w") as f:
        f["vlen_str"] = np.array(["a", "bc"], dtype=h5py.string_dtype())
        f["fixed_str"] = np.array([b"ab", b"cd"])
        f["compound"] = np.zeros(2, dtype=[("a", "f8"), ("b", "i4")])
        f["vlen_int"] = np.array([np.arange(2), np.arange(3)], dtype=h5py.vlen_dtype("i4"))
        f.create_dataset("refs", (1,), dtype=h5py.ref_dtype)
        f["opaque"] = np.void(b"\x00\x01\x02")
        f["enum"] = np.array(
            [0, 1, 1], dtype=h5py.enum_dtype({"RED": 0, "GREEN": 1}, basetype="i1")
        )
        f.create_dataset("null", data=h5py.Empty("f8"))
    cases = {
        "vlen_str": "string",
        "fixed_str": "string",
        "compound": "structured",
        "vlen_int": "variable-length",
        "refs": "reference",
        "opaque": "opaque",
        "null": "null dataspace",
    }
    listing = F.list_arrays(path)
    for name, reason in cases.items():
        with pytest.raises(F.DataError, match=reason):
            F.open(f"{path}:/{name}")
        assert reason in _refused_notes(listing, f"/{name}")[0]
    # An enum is an integer with labels: accepted as its integer type.
    np.testing.assert_array_equal(F.open(f"{path}:/enum").read(), [0, 1, 1])


def test_zarr_refused_dtypes_are_listed_without_breaking_the_listing(tmp_path):
    import zarr

    store = tmp_path / "mixed.zarr"
    g = zarr.open_group(store, mode="w", zarr_format=2)
    g.create_array("good", shape=(2,), dtype="f8", config={"write_empty_chunks": True})[...] = 1.0
    g.create_array("structured", shape=(2,), dtype=[("a", "f4"), ("b", "i4")])
    # A v2 object array with a pickle codec, written by hand as zarr-python 2 would.
    (store / "pickled").mkdir()
    (store / "pickled" / ".zarray").write_text(
        json.dumps(
            {
                "shape": [2],
                "chunks": [2],
                "dtype": "|O",
                "fill_value": None,
                "order": "C",
                "filters": [{"id": "pickle"}],
                "dimension_separator": ".",
                "compressor": None,
                "zarr_format": 2,
            }
        )
    )
    s3 = zarr.create_array(store=tmp_path / "text.zarr", shape=(2,), dtype=str)
    s3[...] = np.array(["a", "b"])

    listing = F.list_arrays(store)
    assert {e["name"] for e in listing["arrays"]} == {"good", "structured", "pickled"}
    assert "structured" in _refused_notes(listing, "structured")[0]
    assert _refused_notes(listing, "pickled")
    assert _refused_notes(listing, "good") == []
    with pytest.raises(F.DataError, match="structured"):
        F.open(f"{store}:structured")
    with pytest.raises(F.DataError, match="pickled"):
        F.open(f"{store}:pickled")
    with pytest.raises(F.DataError, match="string"):
        F.open(tmp_path / "text.zarr")


_FIT = "does not fit in a 64-bit integer"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("%%MatrixMarket matrix coordinate real bogus\n2 2 1\n1 1 1\n", "bogus"),
        ("%%MatrixMarket matrix coordinate real general\n2 x 1\n1 1 1\n", "integer"),
        ("%%MatrixMarket matrix coordinate real general\n", "header"),
        ("%%MatrixMarket tensor coordinate real general\n2 2 1\n1 1 1\n", "header"),
        ("%%MatrixMarket matrix coordinate real symmetric\n2 3 1\n1 1 1\n", "square"),
        # Sizes beyond int64 (the parser's integer type): a DataError, never an OverflowError.
        ("%%MatrixMarket matrix coordinate real general\n99999999999999999999 3 1\n1 1 1\n", _FIT),
        ("%%MatrixMarket matrix coordinate real general\n3 99999999999999999999 1\n1 1 1\n", _FIT),
        ("%%MatrixMarket matrix coordinate real general\n3 3 99999999999999999999\n1 1 1\n", _FIT),
        ("%%MatrixMarket matrix coordinate real general\n9223372036854775808 3 1\n1 1 1\n", _FIT),
        ("%%MatrixMarket matrix coordinate real general\n-9223372036854775809 3 1\n1 1 1\n", _FIT),
        ("%%MatrixMarket matrix array real general\n3 99999999999999999999\n1\n", _FIT),
    ],
    ids=[
        "symmetry",
        "size-line",
        "no-size-line",
        "object",
        "non-square-symmetric",
        "rows-overflow",
        "cols-overflow",
        "nnz-overflow",
        "rows-2**63",
        "rows-below-int64",
        "array-cols-overflow",
    ],
)
def test_mtx_malformed_header(tmp_path, text, reason):
    (tmp_path / "bad.mtx").write_text(text)
    with pytest.raises(F.DataError, match=reason) as err:
        F.open(tmp_path / "bad.mtx").read()
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'bad.mtx'}: ")
    # The listing reports the file as refused instead of failing.
    (entry,) = F.list_arrays(tmp_path / "bad.mtx")["arrays"]
    assert entry["notes"][0].startswith("refused: ") and reason.split("(")[0] in entry["notes"][0]


def test_mtx_sizes_at_the_int64_limit(tmp_path):
    # 2**63 - 1 parses, but no CSR index pointer (rows + 1 entries) can be built for it.
    big = 2**63 - 1
    (tmp_path / "edge.mtx").write_text(
        f"%%MatrixMarket matrix coordinate real general\n{big} 3 1\n1 1 1\n"
    )
    h = F.open(tmp_path / "edge.mtx")
    assert h.describe()["shape"] == [big, 3]
    with pytest.raises(F.BudgetError, match="memory budget"):
        h.read(max_bytes=1 << 30)  # the budget check comes first
    with pytest.raises(F.DataError, match="too large to index with 64-bit integers"):
        h.read()
    with pytest.raises(F.DataError, match="too large to index"):
        h.scan()


@pytest.mark.parametrize(
    "body, reason",
    [
        ("3 3 2\n4 1 5\n3 2 -1\n", "out of bounds"),
        ("3 3 2\n0 1 5\n3 2 -1\n", "out of bounds"),
        ("3 3 3\n1 1 5\n3 2 -1\n", "Truncated"),
        ("3 3 1\n1 1 5\n3 2 -1\n", "too long"),
        ("3 3 1\n1 1 abc\n", "floating-point"),
    ],
    ids=["row-too-big", "zero-index", "fewer-entries", "more-entries", "bad-value"],
)
def test_mtx_malformed_body(tmp_path, body, reason):
    (tmp_path / "bad.mtx").write_text("%%MatrixMarket matrix coordinate real general\n" + body)
    h = F.open(tmp_path / "bad.mtx")  # the header is fine
    with pytest.raises(F.DataError, match=reason):
        h.read()


def _with_target(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.arange(4.0)
        f["grp/data"] = np.arange(4.0)


def test_hdf5_external_links_are_refused_anywhere_on_the_path(tmp_path):
    _with_target(tmp_path)  # the target exists: HDF5 itself would follow these links
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as f:
        f["local"] = np.ones(2)
        f["ext"] = h5py.ExternalLink("other.h5", "/data")
        f["extgrp"] = h5py.ExternalLink("other.h5", "/grp")
        f["soft_to_ext"] = h5py.SoftLink("/ext")
        f["soft_through_ext"] = h5py.SoftLink("/extgrp/data")
        f["soft_ok"] = h5py.SoftLink("/local")
    for key in ("/ext", "/extgrp/data", "/soft_to_ext", "/soft_through_ext"):
        with pytest.raises(F.DataError, match="external link to other.h5"):
            F.open(f"{path}:{key}")
    listing = F.list_arrays(path)
    assert "external link" in _refused_notes(listing, "/ext")[0]
    assert "external link" in _refused_notes(listing, "/soft_to_ext")[0]
    np.testing.assert_array_equal(F.open(f"{path}:/soft_ok").read(), np.ones(2))


def test_hdf5_external_storage_is_refused(tmp_path):
    raw = tmp_path / "raw.bin"
    np.arange(6.0).tofile(raw)
    path = tmp_path / "extstore.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(6,), dtype="<f8", external=[(str(raw), 0, 48)])
    with pytest.raises(F.DataError, match="external file"):
        F.open(f"{path}:/x")
    assert "external file" in _refused_notes(F.list_arrays(path), "/x")[0]


def test_hdf5_virtual_datasets(tmp_path):
    _with_target(tmp_path)
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        f["base"] = np.arange(6.0)
        layout = h5py.VirtualLayout(shape=(6,), dtype="f8")
        layout[:] = h5py.VirtualSource(".", "base", shape=(6,))  # "." = this file
        f.create_virtual_dataset("same_file", layout, fillvalue=-1)
        outside = h5py.VirtualLayout(shape=(4,), dtype="f8")
        outside[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "data", shape=(4,))
        f.create_virtual_dataset("other_file", outside, fillvalue=-1)
    np.testing.assert_array_equal(F.open(f"{path}:/same_file").read(), np.arange(6.0))
    with pytest.raises(F.DataError, match="virtual dataset mapping data from another file"):
        F.open(f"{path}:/other_file")


def test_zarr_missing_chunk_is_an_error(tmp_path):
    import zarr

    for fmt, chunk in ((3, "c/1/0"), (2, "1.0")):
        store = tmp_path / f"v{fmt}.zarr"
        z = zarr.create_array(store=store, shape=(4, 4), chunks=(2, 2), dtype="f8", zarr_format=fmt)
        z[...] = np.arange(16.0).reshape(4, 4) + 1
        os.remove(store / chunk)
        h = F.open(store)  # opening and describing still work
        assert any("1 of 4 chunks missing" in n for n in h.describe()["notes"])
        with pytest.raises(F.DataError, match=r"1 of 4 chunks are missing.*fill value") as err:
            h.read()
        assert str(store) in str(err.value)
        with pytest.raises(F.DataError, match="chunks are missing"):
            list(h.iter_blocks(1))


def test_hdf5_storage_never_written_is_an_error(tmp_path):
    # h5py itself returns the fill value for storage that was never written (checked below as
    # the independent truth); rankwise refuses it, like a missing Zarr chunk.
    path = tmp_path / "partial.h5"
    a = np.arange(1.0, 41.0).reshape(8, 5)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("partial", shape=(8, 5), chunks=(2, 5), dtype="f8", fillvalue=-1.0)
        d[:6] = a[:6]  # the chunk of rows 6-7 is never written
        f.create_dataset("contiguous", shape=(3, 3), dtype="f8")  # nothing written
        f.create_dataset("scalar", shape=(), dtype="f8")  # nothing written
        f.create_dataset("full", shape=(8, 5), chunks=(3, 2), dtype="f8")[...] = a  # edge chunks
        f.create_dataset("zeros", data=np.zeros((4, 4)), chunks=(2, 2))  # equal to the fill value
        f.create_dataset("empty", shape=(0, 5), chunks=(1, 5), maxshape=(None, 5), dtype="f8")
        compact = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        compact.set_layout(h5py.h5d.COMPACT)  # stored in the object header, allocated at once
        f.create_dataset("compact", data=a[:2], dcpl=compact)
        f.create_dataset("compact_unwritten", shape=(2,), dtype="f8", dcpl=compact)
        assert (f["partial"][6:] == -1.0).all() and (f["contiguous"][()] == 0).all()

    h = F.open(f"{path}:/partial")
    assert "1 of 4 chunks never written: read refused" in h.describe()["notes"]
    with pytest.raises(F.BudgetError):
        h.read(max_bytes=100)  # the budget check comes first
    msg = (
        rf"{path}:/partial: 1 of 4 chunks were never written; HDF5 would return the fill "
        r"value \(-1.0\) for them"
    )
    with pytest.raises(F.DataError, match=msg) as err:
        h.read()
    assert "\n" not in str(err.value)
    with pytest.raises(F.DataError, match=msg):
        next(h.iter_blocks(2))  # refused before the first block, even one fully written
    with pytest.raises(F.DataError, match=msg):
        h.scan()

    for name in ("contiguous", "scalar"):
        h = F.open(f"{path}:/{name}")
        assert "data never written (no storage allocated): read refused" in h.describe()["notes"]
        with pytest.raises(F.DataError, match="the data was never written .*fill value"):
            h.read()
        with pytest.raises(F.DataError, match="never written"):
            h.scan()

    np.testing.assert_array_equal(F.open(f"{path}:/full").read(), a)
    assert [b.shape for _, b in F.open(f"{path}:/full").iter_blocks(3)] == [(3, 5)] * 2 + [(2, 5)]
    np.testing.assert_array_equal(F.open(f"{path}:/zeros").read(), np.zeros((4, 4)))
    np.testing.assert_array_equal(F.open(f"{path}:/compact").read(), a[:2])
    assert "layout: compact" in F.open(f"{path}:/compact").describe()["notes"]
    # Compact storage is allocated and filled when the dataset is created: HDF5 keeps no
    # record of it being "unwritten", so it reads like written fill values.
    np.testing.assert_array_equal(F.open(f"{path}:/compact_unwritten").read(), np.zeros(2))
    assert F.open(f"{path}:/empty").read().shape == (0, 5)
    assert F.open(f"{path}:/empty").scan() == {"nan": 0, "inf": 0, "nnz": 0}

    # Listing describes every dataset (nothing refused at listing time) with the notes.
    listing = {e["name"]: e for e in F.list_arrays(path)["arrays"]}
    assert set(listing) == {
        "/partial", "/contiguous", "/scalar", "/full", "/zeros", "/empty", "/compact",
        "/compact_unwritten",
    }  # fmt: skip
    assert listing["/partial"]["shape"] == [8, 5]
    assert "1 of 4 chunks never written: read refused" in listing["/partial"]["notes"]
    for name in ("/full", "/zeros", "/empty", "/compact"):
        assert not any("never written" in n for n in listing[name]["notes"]), name


def test_hdf5_outputs_of_every_shape_are_fully_written(tmp_path):
    # rankwise's own outputs must never trip the check (zero-size, 0-d, all-zero arrays).
    arrays = {"z": np.zeros((3, 4)), "e": np.zeros((0, 2)), "s": np.array(0.0), "i": np.arange(3)}
    F.write(tmp_path / "o.h5", arrays, {})
    got, _ = F.read_result(tmp_path / "o.h5")
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)


def test_zarr_default_writer_skipping_fill_chunks_is_refused(tmp_path):
    # zarr's default (write_empty_chunks=False) does not store an all-zero chunk.
    import zarr

    a = np.zeros((4, 4))
    a[:2] = 1.0
    z = zarr.create_array(store=tmp_path / "sk.zarr", shape=a.shape, chunks=(2, 4), dtype="f8")
    z[...] = a
    with pytest.raises(F.DataError, match="some writers skip chunks equal to the fill value"):
        F.open(tmp_path / "sk.zarr").read()


def test_corrupt_zarr_chunk_is_data_error(tmp_path):
    import zarr

    z = zarr.create_array(store=tmp_path / "c.zarr", shape=(4,), chunks=(2,), dtype="f8")
    z[...] = np.arange(1.0, 5.0)
    (tmp_path / "c.zarr" / "c" / "1").write_bytes(b"not zstd at all")
    with pytest.raises(F.DataError, match="cannot decode"):
        F.open(tmp_path / "c.zarr").read()


def test_corrupt_hdf5_chunk_is_data_error(tmp_path):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(1000.0), chunks=(500,), compression="gzip")
        info = f["x"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)
    h = F.open(f"{path}:/x")
    with pytest.raises(F.DataError, match="cannot decode"):
        h.read()


def test_truncated_and_garbage_files(tmp_path):
    a = np.arange(100.0)
    np.save(tmp_path / "t.npy", a)
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-8])
    h = F.open(tmp_path / "t.npy")  # the header is intact
    assert any("truncated" in n for n in h.describe()["notes"])
    with pytest.raises(F.DataError, match="truncated"):
        h.read()
    with pytest.raises(F.DataError, match="truncated"):
        list(h.iter_blocks(10))

    (tmp_path / "head.npy").write_bytes(data[:5])
    with pytest.raises(F.DataError, match="not a valid NPY file"):
        F.open(tmp_path / "head.npy")
    (tmp_path / "badhdr.npy").write_bytes(data[:20])
    with pytest.raises(F.DataError, match="malformed NPY header"):
        F.open(tmp_path / "badhdr.npy")

    np.savez(tmp_path / "t.npz", a=a)
    blob = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(F.DataError, match="not a valid NPZ"):
        F.open(tmp_path / "cut.npz")

    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["x"] = a
    blob = (tmp_path / "t.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(blob[:1000])
    with pytest.raises(F.DataError, match="not a valid HDF5 file"):
        F.open(f"{tmp_path / 'cut.h5'}:/x")


def test_corrupt_npz_member_crc(tmp_path):
    a = np.arange(64.0)
    np.savez(tmp_path / "c.npz", a=a)
    blob = bytearray((tmp_path / "c.npz").read_bytes())
    pos = blob.index(a.tobytes()[8:16])  # a data byte inside the stored member
    blob[pos] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(blob))
    with pytest.raises(F.DataError, match="corrupt"):
        F.open(f"{tmp_path / 'c.npz'}:a").read()


def test_unavailable_hdf5_filter_names_the_filter(tmp_path, run_python):
    with h5py.File(tmp_path / "lzf.h5", "w") as f:
        f.create_dataset("x", data=np.arange(100.0), chunks=(10,), compression="lzf")
    proc = run_python(
        """
        import h5py
        import rankwise.formats as F
        h5py.h5z.unregister_filter(h5py.h5z.FILTER_LZF)   # as if h5py had no lzf built in
        h = F.open("lzf.h5:/x")
        print([n for n in h.describe()["notes"] if "not available" in n])
        try:
            h.read()
        except F.DataError as exc:
            print("DataError:", exc)
        """
    )
    assert "lzf (filter id 32000) is not available" in proc.stdout
    assert "DataError: " in proc.stdout and "compressed with lzf" in proc.stdout


def test_empty_zip_is_npz_without_arrays(tmp_path):
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    assert (tmp_path / "empty.npz").read_bytes()[:4] == b"PK\x05\x06"
    assert F.detect_format(tmp_path / "empty.npz") == "npz"
    with pytest.raises(F.InputMissingError, match="holds no arrays"):
        F.open(tmp_path / "empty.npz")


def test_symlinked_zarr_node_is_refused(tmp_path):
    import zarr

    outside = tmp_path / "outside.zarr"
    zarr.create_array(store=outside, shape=(2,), dtype="f8", config={"write_empty_chunks": True})[
        ...
    ] = 1.0
    store = tmp_path / "s.zarr"
    zarr.open_group(store, mode="w")
    os.symlink(outside, store / "linked")
    with pytest.raises(F.DataError, match="symbolic link"):
        F.open(f"{store}:linked")
    shutil.rmtree(outside)


@pytest.mark.parametrize(
    "kwargs, victim",
    [
        ({"zarr_format": 2, "chunk_key_encoding": {"name": "v2", "separator": "/"}}, "1/0"),
        ({"zarr_format": 3, "chunk_key_encoding": {"name": "v2", "separator": "."}}, "1.0"),
        ({"zarr_format": 3, "chunk_key_encoding": {"name": "default", "separator": "."}}, "c.1.0"),
        ({"zarr_format": 3, "shards": (4, 2)}, "c/1/0"),
    ],
    ids=["v2-nested", "v3-v2-keys", "v3-dot-keys", "v3-sharded"],
)
def test_missing_chunk_detection_for_every_key_encoding(tmp_path, kwargs, victim):
    import zarr

    store = tmp_path / "enc.zarr"
    a = np.arange(1.0, 33.0).reshape(8, 4)
    z = zarr.create_array(
        store=store,
        shape=a.shape,
        chunks=(2, 2),
        dtype="f8",
        config={"write_empty_chunks": True},
        **kwargs,
    )
    z[...] = a
    np.testing.assert_array_equal(F.open(store).read(), a)
    os.remove(store / victim)
    with pytest.raises(F.DataError, match="1 of .* are missing"):
        F.open(store).read()


def test_hdf5_link_cycles_and_dangling_links(tmp_path):
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as f:
        f["a"] = h5py.SoftLink("/b")
        f["b"] = h5py.SoftLink("/a")
        g = f.create_group("g")
        g["x"] = np.arange(3.0)
        g["up"] = g  # a hard-link cycle
        f["dangling"] = h5py.SoftLink("/nowhere")
        f["relative"] = h5py.SoftLink("g/x")
    listing = F.list_arrays(path)
    assert "cycle" in _refused_notes(listing, "/a")[0]
    assert "missing '/nowhere'" in _refused_notes(listing, "/dangling")[0]
    assert {e["name"] for e in listing["arrays"]} == {"/a", "/b", "/dangling", "/g/x", "/relative"}
    with pytest.raises(F.DataError, match="cycle"):
        F.open(f"{path}:/a")
    with pytest.raises(F.InputMissingError, match="missing '/nowhere'"):
        F.open(f"{path}:/dangling")
    np.testing.assert_array_equal(F.open(f"{path}:/relative").read(), np.arange(3.0))
    np.testing.assert_array_equal(F.open(f"{path}:/g/up/up/x").read(), np.arange(3.0))


# -- scan(): `info --scan` catches FormatsError per entry ------------------------------------


def _scan_h5_unwritten(tmp):
    with h5py.File(tmp / "u.h5", "w") as f:
        f.create_dataset("x", shape=(4, 4), chunks=(2, 2), dtype="f8")
    return f"{tmp / 'u.h5'}:/x", F.DataError, "never written"


def _scan_h5_corrupt(tmp):
    path = tmp / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(1000.0), chunks=(500,), compression="gzip")
        info = f["x"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)
    return f"{path}:/x", F.DataError, "cannot decode"


def _scan_zarr_missing(tmp):
    import zarr

    z = zarr.create_array(store=tmp / "m.zarr", shape=(4,), chunks=(2,), dtype="f8")
    z[...] = np.arange(1.0, 5.0)
    os.remove(tmp / "m.zarr" / "c" / "0")
    return str(tmp / "m.zarr"), F.DataError, "chunks are missing"


def _scan_npy_truncated(tmp):
    np.save(tmp / "t.npy", np.arange(100.0))
    data = (tmp / "t.npy").read_bytes()
    (tmp / "t.npy").write_bytes(data[:-8])
    return str(tmp / "t.npy"), F.DataError, "truncated"


def _scan_npy_row_over_budget(tmp):
    np.save(tmp / "wide.npy", np.zeros((2, 1000)))  # one row is 8000 bytes
    return str(tmp / "wide.npy"), F.BudgetError, "memory budget"


def _scan_npy_extent(tmp):
    import numpy.lib.format as npf

    with open(tmp / "x.npy", "wb") as f:  # zero bytes of data, but an extent beyond int64
        npf.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (2**64, 0)})
    return str(tmp / "x.npy"), F.DataError, "too large to index"


def _scan_mtx_body(tmp):
    (tmp / "b.mtx").write_text("%%MatrixMarket matrix coordinate real general\n3 3 1\n4 1 5\n")
    return str(tmp / "b.mtx"), F.DataError, "out of bounds"


def _scan_npz_crc(tmp):
    a = np.arange(20000.0)  # large enough that zipfile checks the CRC at the end, not at open
    np.savez(tmp / "c.npz", a=a)
    blob = bytearray((tmp / "c.npz").read_bytes())
    blob[blob.index(a.tobytes()[80000:80008])] ^= 0xFF
    (tmp / "c.npz").write_bytes(bytes(blob))
    return f"{tmp / 'c.npz'}:a", F.DataError, "corrupt"


@pytest.mark.parametrize(
    "build",
    [
        _scan_h5_unwritten,
        _scan_h5_corrupt,
        _scan_zarr_missing,
        _scan_npy_truncated,
        _scan_npy_row_over_budget,
        _scan_npy_extent,
        _scan_mtx_body,
        _scan_npz_crc,
    ],
    ids=lambda f: f.__name__.removeprefix("_scan_"),
)
def test_scan_raises_formats_errors(tmp_path, build):
    uri, expected, reason = build(tmp_path)
    with F.open(uri, max_bytes=4096) as h:  # open and describe work
        h.describe()
        with pytest.raises(expected, match=reason) as err:
            h.scan()
    assert isinstance(err.value, F.FormatsError) and "\n" not in str(err.value)


def test_out_of_memory_while_streaming_is_a_budget_error(tmp_path, monkeypatch):
    from rankwise.formats import hdf5

    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["x"] = np.ones((4, 3))

    def no_memory(self, start, stop):
        raise MemoryError

    monkeypatch.setattr(hdf5.Hdf5DenseHandle, "_read_rows", no_memory)
    h = F.open(f"{tmp_path / 'm.h5'}:/x")
    with pytest.raises(F.BudgetError, match="out of memory reading blocks of"):
        h.scan()
    with pytest.raises(F.BudgetError, match="out of memory"):
        list(h.iter_blocks(2))
