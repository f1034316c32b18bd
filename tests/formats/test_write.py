"""write()/read_result() round trips for every output format, and check_output()."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import rankwise.formats as F

OUTPUT_EXTS = [".h5", ".hdf5", ".zarr", ".npz"]


def _result_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "U": rng.standard_normal((7, 3)).astype(np.float32),
        "S": np.array([3.0, 2.0, 0.5]),
        "Vt": np.asfortranarray(rng.standard_normal((3, 5))),
        "factors/0": rng.standard_normal((4, 2)),
        "factors/1": np.arange(6, dtype=np.int64).reshape(3, 2),
        "cores/deep/0": rng.standard_normal((1, 3, 2)),
        "count": np.array(7, dtype=np.int32),
        "labels": np.array([True, False, True]),
        "empty": np.zeros((0, 3)),
        "half": np.array([0.5, -1.0], dtype=np.float16),
        "z": np.array([1 + 2j, -3j]),
        "strided": np.arange(20.0).reshape(4, 5)[:, ::2],  # a non-contiguous view
    }


ATTRS = {
    "kind": "cp",
    "rankwise_version": "0.1.0",
    "rank": 3,
    "tol": 1e-6,
    "converged": True,
    "sizes": [4, 3, 2],
    "weights": [0.5, 0.25],
    "modes": ["space", "time"],
    "mixed": [1, "a", 2.5],
    "params": {"seed": 0, "init": "svd", "nested": {"x": [1, 2]}},
    "nothing": None,
    "empty": [],
}


def _assert_same_arrays(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for name, a in expected.items():
        assert got[name].dtype == a.dtype, name
        assert got[name].shape == a.shape, name
        np.testing.assert_array_equal(got[name], a, err_msg=name)


@pytest.mark.parametrize("ext", OUTPUT_EXTS)
def test_write_read_result_round_trip(tmp_path, ext):
    arrays = _result_arrays()
    out = tmp_path / f"result{ext}"
    info = F.write(out, arrays, ATTRS)
    assert info["path"] == str(out)
    assert info["format"] == F.OUTPUT_EXTENSIONS[ext]
    assert info["arrays"]["U"] == {"shape": [7, 3], "dtype": "float32"}
    assert info["arrays"]["factors/0"] == {"shape": [4, 2], "dtype": "float64"}

    got, attrs = F.read_result(out)
    _assert_same_arrays(got, arrays)
    assert attrs == ATTRS
    # Only the output itself in the directory: no staging leftovers.
    assert os.listdir(tmp_path) == [out.name]


@pytest.mark.parametrize("ext", OUTPUT_EXTS)
def test_outputs_open_as_inputs_with_nested_names(tmp_path, ext):
    arrays = _result_arrays()
    out = tmp_path / f"result{ext}"
    F.write(out, arrays, ATTRS)
    listing = F.list_arrays(out)
    names = {e["name"].lstrip("/") for e in listing["arrays"]}
    assert names == set(arrays)  # __attrs__ is not an array
    for name in ("factors/1", "Vt"):
        got = F.open(f"{out}:{name}").read()
        np.testing.assert_array_equal(got, arrays[name])


def test_outputs_with_reference_libraries(tmp_path):
    """What we write is what h5py / zarr / numpy read (allow_pickle=False) themselves."""
    import h5py
    import zarr

    arrays = {"U": np.arange(6.0).reshape(2, 3), "factors/0": np.ones((2, 2), np.float32)}
    F.write(tmp_path / "r.h5", arrays, {"kind": "svd"})
    F.write(tmp_path / "r.zarr", arrays, {"kind": "svd"})
    F.write(tmp_path / "r.npz", arrays, {"kind": "svd"})
    with h5py.File(tmp_path / "r.h5", "r") as f:
        np.testing.assert_array_equal(f["factors"]["0"][()], arrays["factors/0"])
        assert f.attrs["kind"] == "svd"
    z = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert z.metadata.zarr_format == 3
    np.testing.assert_array_equal(z["factors/0"][...], arrays["factors/0"])
    assert z.attrs["kind"] == "svd"
    with np.load(tmp_path / "r.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["factors/0"], arrays["factors/0"])
        assert json.loads(str(npz["__attrs__"])) == {"kind": "svd"}


def test_zarr_output_stores_every_chunk(tmp_path):
    # An all-zero factor must still be stored, or our own reader would refuse it.
    F.write(tmp_path / "zeros.zarr", {"W": np.zeros((64, 3))}, {})
    got, _ = F.read_result(tmp_path / "zeros.zarr")
    np.testing.assert_array_equal(got["W"], np.zeros((64, 3)))


def test_same_result_gives_same_bytes(tmp_path):
    import time

    arrays = _result_arrays()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for ext in (".h5", ".npz", ".zarr"):
        F.write(a / f"r{ext}", arrays, ATTRS)
    time.sleep(1.1)  # timestamps have one-second resolution in zip and HDF5
    for ext in (".h5", ".npz", ".zarr"):
        F.write(b / f"r{ext}", arrays, ATTRS)

    def tree(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    assert len(tree(a)) > 3
    assert tree(a) == tree(b)


def test_write_force_replaces_and_keeps_dtype(tmp_path):
    for ext in (".h5", ".zarr", ".npz"):
        out = tmp_path / f"r{ext}"
        F.write(out, {"A": np.ones(3)}, {"v": 1})
        with pytest.raises(F.OutputError, match="already exists"):
            F.write(out, {"A": np.zeros(3)}, {"v": 2})
        F.write(out, {"B": np.zeros(2, np.float32)}, {"v": 2}, force=True)
        got, attrs = F.read_result(out)
        assert list(got) == ["B"] and got["B"].dtype == np.float32
        assert attrs == {"v": 2}
        assert sorted(os.listdir(tmp_path)) == sorted(
            p.name for p in tmp_path.iterdir() if ".rankwise-" not in p.name
        )


def test_write_refuses_bad_names_and_dtypes(tmp_path):
    out = tmp_path / "r.h5"
    for bad in (
        {"": np.ones(1)},
        {"a//b": np.ones(1)},
        {"../x": np.ones(1)},
        {"__attrs__": np.ones(1)},
    ):
        with pytest.raises(ValueError, match="name"):
            F.write(out, bad, {})
    with pytest.raises(ValueError, match="nested under"):
        F.write(out, {"a": np.ones(1), "a/b": np.ones(1)}, {})
    with pytest.raises(ValueError, match="dtype"):
        F.write(out, {"a": np.array(["x"])}, {})
    with pytest.raises(TypeError):
        F.write(out, {"a": np.ones(1)}, {"obj": object()})
    assert not out.exists() and os.listdir(tmp_path) == []


def test_write_json_atomic_and_formatted(tmp_path):
    report = tmp_path / "r.report.json"
    obj = {"schema": "rankwise-report/1", "n": np.int64(3), "x": np.float32(0.5), "v": np.arange(2)}
    F.write_json(report, obj)
    text = report.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "schema"')
    assert json.loads(text) == {"schema": "rankwise-report/1", "n": 3, "x": 0.5, "v": [0, 1]}
    with pytest.raises(F.OutputError, match="already exists"):
        F.write_json(report, {})
    F.write_json(report, {"a": 1}, force=True)
    assert json.loads(report.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        F.write_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(os.listdir(tmp_path)) == ["r.report.json"]


def test_read_result_rejects_input_only_formats(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    with pytest.raises(F.UsageError, match="not one of the output formats"):
        F.read_result(tmp_path / "a.npy")


# -- check_output --------------------------------------------------------------------------


def test_check_output_unknown_extension(tmp_path):
    for name in ("out.csv", "out", "out.mtx", "out.npy"):
        with pytest.raises(F.UsageError, match=r"\.h5, \.hdf5, \.zarr, \.npz"):
            F.check_output(tmp_path / name, force=True)


def test_check_output_exists_needs_force(tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(b"old")
    with pytest.raises(F.OutputError, match="already exists"):
        F.check_output(out, force=False)
    assert F.check_output(out, force=True) == out
    assert F.check_output(tmp_path / "new.npz", force=False) == tmp_path / "new.npz"


def test_check_output_missing_parent(tmp_path):
    with pytest.raises(F.OutputError, match="does not exist"):
        F.check_output(tmp_path / "no" / "such" / "out.h5", force=True)


def test_check_output_parent_not_writable(tmp_path, not_root):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(F.OutputError, match="not writable"):
            F.check_output(ro / "out.h5", force=False)
    finally:
        ro.chmod(0o755)


def test_check_output_parent_not_writable_even_as_root(tmp_path, monkeypatch):
    from rankwise.formats import outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    with pytest.raises(F.OutputError, match="not writable"):
        F.check_output(tmp_path / "out.h5", force=False)


def test_check_output_refuses_to_overwrite_an_input(tmp_path, monkeypatch):
    data = tmp_path / "data.h5"
    data.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.h5").symlink_to(data)
    os.link(data, tmp_path / "hard.h5")
    monkeypatch.chdir(tmp_path / "sub")
    same = [
        data,  # plain
        "../data.h5",  # relative
        tmp_path / "sub" / ".." / "data.h5",  # with ..
        tmp_path / "link.h5",  # a symlink to the input
        tmp_path / "hard.h5",  # a hard link to the input
    ]
    for out in same:
        for force in (False, True):
            with pytest.raises(F.OutputError, match="would overwrite the input"):
                F.check_output(out, force=force, inputs=[f"{data}:/X"])
    # Inputs given as URIs, Paths or URI objects.
    with pytest.raises(F.OutputError, match="would overwrite"):
        F.check_output(data, force=True, inputs=[F.parse_uri(f"{data}:/X")])


def test_check_output_refuses_dir_containing_input_and_output_inside_input(tmp_path):
    store = tmp_path / "in.zarr"
    store.mkdir()
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    inp = store / "x.npy"
    inp.write_bytes(b"x")
    with pytest.raises(F.OutputError, match="would overwrite the input"):
        F.check_output(store, force=True, inputs=[inp])  # output dir holds the input
    with pytest.raises(F.OutputError, match="would overwrite the input"):
        F.check_output(store / "out.h5", force=True, inputs=[f"{store}:group/a"])


def test_check_output_force_refuses_non_store_directories(tmp_path):
    d = tmp_path / "results.zarr"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(F.OutputError, match="not a Zarr store"):
        F.check_output(d, force=True)
    (tmp_path / "out.h5").mkdir()
    with pytest.raises(F.OutputError, match="is a directory"):
        F.check_output(tmp_path / "out.h5", force=True)
    F.write(tmp_path / "ok.zarr", {"a": np.ones(2)}, {})
    assert F.check_output(tmp_path / "ok.zarr", force=True) == tmp_path / "ok.zarr"
