"""Shape bombs: tiny files declaring huge arrays are described lazily and refused before
anything is allocated. The checks run under an address-space limit of 1 GiB, so any attempt
to materialise the declared data would fail with MemoryError instead of a rankwise error.
"""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import numpy.lib.format as npf
import pytest

import rankwise.formats as F

N = 10**6  # declared 10^6 × 10^6 float64 = 7.3 TiB
HUGE = {"descr": "<f8", "fortran_order": False, "shape": (N, N)}


def _bombs(tmp_path) -> dict[str, str]:
    with h5py.File(tmp_path / "bomb.h5", "w") as f:
        f.create_dataset("x", shape=(N, N), dtype="f8", chunks=(1000, 1000))  # nothing written
        g = f.create_group("sparse")  # 3 entries, but indptr alone would be 8 GB
        g["row"], g["col"], g["data"] = [0, 1, 2], [0, 1, 2], [1.0, 2.0, 3.0]
        g["shape"] = np.array([10**9, 10**9])
    with open(tmp_path / "bomb.npy", "wb") as f:
        npf.write_array_header_1_0(f, HUGE)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w") as member:
            npf.write_array_header_1_0(member, HUGE)
    import zarr

    zarr.create_array(store=tmp_path / "bomb.zarr", shape=(N, N), chunks=(1000, 1000), dtype="f8")
    (tmp_path / "bomb_array.mtx").write_text(
        f"%%MatrixMarket matrix array real general\n{N} {N}\n1\n"
    )
    (tmp_path / "bomb_coord.mtx").write_text(
        f"%%MatrixMarket matrix coordinate real general\n{N} {N} {10**12}\n1 1 1\n"
    )
    return {
        "hdf5": "bomb.h5:/x",
        "hdf5-sparse": "bomb.h5:/sparse",
        "npy": "bomb.npy",
        "npz": "bomb.npz:x",
        "zarr": "bomb.zarr",
        "mtx-array": "bomb_array.mtx",
        "mtx-coordinate": "bomb_coord.mtx",
    }


def test_shape_bombs_are_refused_under_an_address_space_limit(tmp_path, run_python):
    uris = _bombs(tmp_path)
    proc = run_python(
        f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        import h5py, zarr, scipy.io, scipy.sparse  # import before the checks, not during
        import rankwise.formats as F

        results = {{}}
        for name, uri in {uris!r}.items():
            r = results[name] = {{}}
            h = F.open(uri, max_bytes=256 << 20)
            r["describe"] = h.describe()
            r["listed"] = len(F.list_arrays(h.uri.path)["arrays"])
            try:
                h.read()
                r["budget"] = "read!"
            except F.FormatsError as exc:
                r["budget"] = [type(exc).__name__, str(exc)]
            h.max_bytes = None
            try:
                h.read()
                r["no_budget"] = "read!"
            except F.FormatsError as exc:
                r["no_budget"] = [type(exc).__name__, str(exc)]
        print(json.dumps(results))
        """,
        timeout=120,
    )
    results = json.loads(proc.stdout)
    assert set(results) == set(uris)
    for name, r in results.items():
        assert r["listed"] >= 1
        shape = r["describe"]["shape"]
        assert shape in ([N, N], [10**9, 10**9]), name
        cls, msg = r["budget"]
        assert cls == "BudgetError", (name, msg)
        assert "but the memory budget is 256.0 MiB" in msg, msg
    assert "needs 7.3 TiB (shape 1000000×1000000 float64)" in results["npy"]["budget"][1]
    assert "sparse 1000000000×1000000000" in results["hdf5-sparse"]["budget"][1]
    # Without a budget, the declared size is still checked against what the file can hold.
    assert (
        results["npy"]["no_budget"][0] == "DataError"
        and "truncated" in results["npy"]["no_budget"][1]
    )
    assert (
        results["npz"]["no_budget"][0] == "DataError"
        and "truncated" in results["npz"]["no_budget"][1]
    )
    assert "chunks are missing" in results["zarr"]["no_budget"][1]
    # HDF5 chunks never written are refused like missing Zarr chunks (after the budget check).
    assert results["hdf5"]["no_budget"][0] == "DataError"
    assert "1000000 of 1000000 chunks were never written" in results["hdf5"]["no_budget"][1]
    # The sparse bomb's members are written: the allocation itself fails under the limit, and
    # that is still reported as a budget error, not a crash.
    assert results["hdf5-sparse"]["no_budget"][0] == "BudgetError"
    assert "out of memory" in results["hdf5-sparse"]["no_budget"][1]
    for mtx in ("mtx-array", "mtx-coordinate"):
        assert results[mtx]["no_budget"][0] == "DataError"
        assert "but the file has only" in results[mtx]["no_budget"][1]


def test_bombs_describe_without_reading(tmp_path, monkeypatch):
    """In process: opening, describing and listing never reach the engines' data reads."""
    uris = _bombs(tmp_path)
    monkeypatch.chdir(tmp_path)
    for uri in uris.values():
        with F.open(uri) as h:
            d = h.describe()
            assert d["nbytes"] >= N * N * 8 or d["sparse"]
            with pytest.raises(F.BudgetError):
                h.read(max_bytes=1 << 30)
        F.list_arrays(h.uri.path)
    # One call counts the written chunks: 10^6 declared, none written, no per-chunk query.
    with F.open(uris["hdf5"]) as h:
        assert "1000000 of 1000000 chunks never written: read refused" in h.describe()["notes"]


def test_human_units_in_budget_message(tmp_path):
    np.save(tmp_path / "small.npy", np.zeros((1000, 300)))
    with pytest.raises(F.BudgetError) as err:
        F.open(tmp_path / "small.npy", max_bytes=2 * 1024**2).read()
    msg = str(err.value)
    assert msg == (
        f"{tmp_path / 'small.npy'}: needs 2.3 MiB (shape 1000×300 float64) "
        "but the memory budget is 2.0 MiB"
    )
