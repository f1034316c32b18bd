"""URI parsing and format detection (magic bytes first, then the extension)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import rankwise.formats as F
from rankwise.formats import URI


def test_parse_existing_path_without_key(tmp_path):
    p = tmp_path / "data.h5"
    p.write_bytes(b"")
    assert F.parse_uri(str(p)) == URI(str(p), p, None)
    assert F.parse_uri(p) == URI(str(p), p, None)  # path-like


def test_parse_splits_at_colon_after_existing_path(tmp_path):
    p = tmp_path / "data.h5"
    p.write_bytes(b"")
    assert F.parse_uri(f"{p}:/group/ds") == URI(f"{p}:/group/ds", p, "/group/ds")
    assert F.parse_uri(f"{p}:group/ds") == URI(f"{p}:group/ds", p, "group/ds")
    assert F.parse_uri(f"{p}:/a:b").key == "/a:b"  # keys may contain ':'
    assert F.parse_uri(f"{p}:").key is None


def test_parse_file_names_with_colons(tmp_path):
    odd = tmp_path / "run:2024.npz"
    odd.write_bytes(b"")
    assert F.parse_uri(str(odd)).path == odd and F.parse_uri(str(odd)).key is None
    assert F.parse_uri(f"{odd}:U") == URI(f"{odd}:U", odd, "U")


def test_parse_missing_file_splits_at_known_extension(tmp_path):
    u = F.parse_uri(f"{tmp_path}/missing.zarr:a/b")
    assert u.path == tmp_path / "missing.zarr" and u.key == "a/b"
    u = F.parse_uri(f"{tmp_path}/missing.H5:/x")
    assert u.path == tmp_path / "missing.H5" and u.key == "/x"
    u = F.parse_uri(f"{tmp_path}/missing.bin")
    assert u.path == Path(f"{tmp_path}/missing.bin") and u.key is None


@pytest.mark.parametrize("bad", ["", "   "])
def test_parse_bad_uri(bad):
    with pytest.raises(F.UsageError, match="invalid input URI"):
        F.parse_uri(bad)


def test_hdf5_keys_with_or_without_leading_slash(tmp_path):
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f["g/x"] = np.arange(3)
    for key in ("/g/x", "g/x", "//g//x/"):
        h = F.open(f"{tmp_path / 'k.h5'}:{key}")
        assert h.name == "/g/x" and h.describe()["uri"] == f"{tmp_path / 'k.h5'}:/g/x"


def test_magic_detection_beats_extension(tmp_path):
    with h5py.File(tmp_path / "sim.dat", "w", userblock_size=1024) as f:
        f["x"] = np.ones(2)
    np.save(tmp_path / "a.npy", np.ones(2))
    (tmp_path / "actually_npy.h5").write_bytes((tmp_path / "a.npy").read_bytes())
    np.savez(tmp_path / "z.npz", x=np.ones(2))
    (tmp_path / "z.npz").rename(tmp_path / "z.bin")
    (tmp_path / "m.txt").write_text("%%MatrixMarket matrix array real general\n1 1\n1\n")
    assert F.detect_format(tmp_path / "sim.dat") == "hdf5"
    assert F.detect_format(tmp_path / "actually_npy.h5") == "npy"
    assert F.detect_format(tmp_path / "z.bin") == "npz"
    assert F.detect_format(tmp_path / "m.txt") == "mtx"
    np.testing.assert_array_equal(F.open(f"{tmp_path / 'sim.dat'}:/x").read(), np.ones(2))


def test_zarr_detection(tmp_path):
    import zarr

    zarr.create_array(store=tmp_path / "v3", shape=(2,), dtype="f8")
    zarr.create_array(store=tmp_path / "v2", shape=(2,), dtype="f8", zarr_format=2)
    zarr.open_group(tmp_path / "g2", mode="w", zarr_format=2)
    for name in ("v3", "v2", "g2"):
        assert F.detect_format(tmp_path / name) == "zarr"


def test_extension_without_matching_magic_is_data_error(tmp_path):
    (tmp_path / "notes.h5").write_text("this is text\n")
    with pytest.raises(F.DataError, match="not a valid HDF5 file"):
        F.detect_format(tmp_path / "notes.h5")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(F.DataError, match="not a valid NPY file"):
        F.detect_format(tmp_path / "empty.npy")
    (tmp_path / "x.mtx").write_text("1 2 3\n")
    with pytest.raises(F.DataError, match="not a valid MatrixMarket file"):
        F.open(tmp_path / "x.mtx")
    (tmp_path / "nometa.zarr").mkdir()
    with pytest.raises(F.DataError, match="not a valid Zarr store"):
        F.detect_format(tmp_path / "nometa.zarr")


def test_unknown_and_missing(tmp_path):
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(F.UsageError, match="known formats: hdf5, zarr, npz, npy, mtx"):
        F.detect_format(tmp_path / "data.csv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(F.UsageError, match="not a Zarr store"):
        F.detect_format(tmp_path / "folder")
    with pytest.raises(F.InputMissingError):
        F.detect_format(tmp_path / "nothing.h5")


def test_import_is_cheap(run_python):
    proc = run_python(
        """
        import sys
        import rankwise.formats
        print(sorted(m for m in ("h5py", "zarr", "scipy", "rankwise.core", "rankwise.cli")
                     if m in sys.modules))
        """
    )
    assert proc.stdout.strip() == "[]"


def test_open_alias_and_known_formats():
    assert F.open is F.open_array
    assert F.KNOWN_FORMATS == ("hdf5", "zarr", "npz", "npy", "mtx")
    assert F.OUTPUT_EXTENSIONS == {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr", ".npz": "npz"}
    assert issubclass(F.BudgetError, F.DataError)
    for cls in (F.UsageError, F.InputMissingError, F.DataError, F.OutputError, F.StorageError):
        assert issubclass(cls, F.FormatsError)
