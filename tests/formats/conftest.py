"""Shared fixtures for the formats suite: writers of real files in every input format.

Files are written with the reference libraries (h5py, zarr, numpy, hand-written MatrixMarket
text), never with rankwise's own writer, so a reader test cannot pass by symmetry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# A "reader case" writes `array` under tmp_path and returns the URI to open.
ReaderCase = Callable[[Path, np.ndarray], str]


# zarr's default skips chunks equal to the fill value; rankwise refuses such stores (tested in
# test_refusals), so the conformance writers store every chunk.
ALL_CHUNKS = {"write_empty_chunks": True}


def _h5(path: Path, key: str, array: np.ndarray, **kw) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        f.create_dataset(key, data=array, **kw)


def h5_contiguous(tmp: Path, a: np.ndarray) -> str:
    _h5(tmp / "data.h5", "X", a)
    return f"{tmp / 'data.h5'}:/X"


def h5_gzip_chunked(tmp: Path, a: np.ndarray) -> str:
    chunks = tuple(max(1, s // 2) for s in a.shape) if a.ndim else None
    _h5(
        tmp / "run 1.hdf5",
        "results/fields/X",
        a,
        chunks=chunks,
        compression="gzip",
        compression_opts=4,
        shuffle=True,
    )
    return f"{tmp / 'run 1.hdf5'}:results/fields/X"


def h5_lzf(tmp: Path, a: np.ndarray) -> str:
    chunks = tuple(max(1, s // 3) for s in a.shape) if a.ndim else None
    _h5(tmp / "snap.h5", "/grp/X", a, chunks=chunks, compression="lzf", fletcher32=True)
    return f"{tmp / 'snap.h5'}:/grp/X"


def h5_userblock_dat(tmp: Path, a: np.ndarray) -> str:
    # A user block puts the HDF5 signature at 512; the .dat name gives no hint.
    import h5py

    with h5py.File(tmp / "simulation.dat", "w", userblock_size=512) as f:
        f.create_dataset("X", data=a)
    return f"{tmp / 'simulation.dat'}:/X"


def zarr_v3_default(tmp: Path, a: np.ndarray) -> str:
    import zarr

    z = zarr.create_array(store=tmp / "field.zarr", shape=a.shape, dtype=a.dtype, config=ALL_CHUNKS)
    z[...] = a
    return str(tmp / "field.zarr")


def zarr_v3_blosc_nested(tmp: Path, a: np.ndarray) -> str:
    import zarr
    from zarr.codecs import BloscCodec

    root = zarr.open_group(tmp / "store.zarr", mode="w", zarr_format=3)
    root.create_array("other", shape=(2,), dtype="f4")[...] = 1  # a sibling to skip
    chunks = tuple(max(1, s // 2) for s in a.shape) if a.ndim else ()
    z = root.create_array(
        "level1/level2/X",
        shape=a.shape,
        dtype=a.dtype,
        chunks=chunks or None,
        compressors=[BloscCodec(cname="lz4")],
        config=ALL_CHUNKS,
    )
    z[...] = a
    return f"{tmp / 'store.zarr'}:level1/level2/X"


def zarr_v2_zlib(tmp: Path, a: np.ndarray) -> str:
    import numcodecs
    import zarr

    chunks = tuple(max(1, s // 3) for s in a.shape) if a.ndim else ()
    z = zarr.create_array(
        store=tmp / "legacy.zarr",
        shape=a.shape,
        dtype=a.dtype,
        zarr_format=2,
        chunks=chunks or None,
        compressors=numcodecs.Zlib(level=3),
        config=ALL_CHUNKS,
    )
    z[...] = a
    return str(tmp / "legacy.zarr")


def npy_plain(tmp: Path, a: np.ndarray) -> str:
    np.save(tmp / "matrix.npy", a)
    return str(tmp / "matrix.npy")


def npz_stored(tmp: Path, a: np.ndarray) -> str:
    np.savez(tmp / "bundle.npz", X=a, other=np.zeros(2))
    return f"{tmp / 'bundle.npz'}:X"


def npz_compressed_single(tmp: Path, a: np.ndarray) -> str:
    np.savez_compressed(tmp / "single.npz", only=a)
    return str(tmp / "single.npz")  # one array: no key needed


def mtx_array(tmp: Path, a: np.ndarray) -> str:
    # MatrixMarket array format: header, size line, values column by column.
    field = "integer" if a.dtype.kind in "iu" else "real"
    lines = ["%%MatrixMarket matrix array " + field + " general", f"{a.shape[0]} {a.shape[1]}"]
    fmt = (lambda v: str(int(v))) if field == "integer" else (lambda v: repr(float(v)))
    lines += [fmt(v) for v in a.T.reshape(-1)]
    (tmp / "dense.mtx").write_text("\n".join(lines) + "\n")
    return str(tmp / "dense.mtx")


# name -> (writer, supports ndim != 2, dtypes it keeps)
READER_CASES: dict[str, tuple[ReaderCase, bool, tuple[str, ...] | None]] = {
    "hdf5-contiguous": (h5_contiguous, True, None),
    "hdf5-gzip-chunked": (h5_gzip_chunked, True, None),
    "hdf5-lzf-fletcher": (h5_lzf, True, None),
    "hdf5-userblock-dat": (h5_userblock_dat, True, None),
    "zarr-v3": (zarr_v3_default, True, None),
    "zarr-v3-blosc-nested": (zarr_v3_blosc_nested, True, None),
    "zarr-v2-zlib": (zarr_v2_zlib, True, None),
    "npy": (npy_plain, True, None),
    "npz-stored": (npz_stored, True, None),
    "npz-deflate": (npz_compressed_single, True, None),
    "mtx-array": (mtx_array, False, ("float64", "int64")),
}


@pytest.fixture
def run_python(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run a Python snippet in a fresh interpreter (for rlimits, signals, global state)."""

    def run(code: str, *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test taking `reader_case` runs once per input format/storage variant.
    if "reader_case" in metafunc.fixturenames:
        metafunc.parametrize("reader_case", list(READER_CASES.values()), ids=list(READER_CASES))


@pytest.fixture
def not_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("permission checks do not apply to root")
