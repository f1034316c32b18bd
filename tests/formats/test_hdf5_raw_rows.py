"""HDF5 rows read straight from the file (pread) where the stored bytes are the array's bytes:
every read path gives what h5py gives, and anything else is left to h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import rankwise.formats as F
from rankwise.formats.errors import DataError

A = np.random.default_rng(0).standard_normal((1037, 29))

RAW = {  # name: (data, create_dataset options)
    "contiguous": (A, {}),
    "chunked": (A, {"chunks": (300, 29)}),  # last chunk partly outside the extent
    "big_endian": (A.astype(">f8"), {"chunks": (400, 29)}),
    "int16": ((A * 1000).astype("<i2"), {}),
    "float32_3d": (A[:1036].astype("f4").reshape(37, 28, 29), {"chunks": (30, 28, 29)}),
}
H5PY = {
    "gzip": (A, {"chunks": (300, 29), "compression": "gzip"}),
    "narrow_chunks": (A, {"chunks": (300, 10)}),
    "tiny_chunks": (A, {"chunks": (2, 29)}),
    "bool": (A > 0, {}),
}


@pytest.fixture(scope="module", params=[0, 1024], ids=["plain", "userblock"])
def path(request, tmp_path_factory):
    p = tmp_path_factory.mktemp("raw") / "a.h5"
    with h5py.File(p, "w", userblock_size=request.param) as f:
        for name, (data, opts) in {**RAW, **H5PY}.items():
            f.create_dataset(name, data=data, **opts)
    return p


@pytest.mark.parametrize("name", [*RAW, *H5PY])
def test_every_read_path_gives_what_h5py_gives(path, name):
    with h5py.File(path, "r") as f:
        ref = f[name][...]
    h = F.open(f"{path}:/{name}")
    assert (h._raw_rows() is not None) == (name in RAW)
    got = h.read()
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    blocks = [b.copy() for _, b in h.iter_blocks(128, ring=3)]
    assert np.array_equal(np.concatenate(blocks), ref)
    read = h.row_reader(250)
    m = ref.shape[0]
    for start, stop in ((0, 1), (m // 3 - 1, m // 3 + 1), (m // 4, m - m // 4), (m - 7, m)):
        out = np.full((stop - start, *ref.shape[1:]), 7, dtype=ref.dtype)
        read(start, stop, out)
        assert np.array_equal(out, ref[start:stop])
    h.close()


def test_data_cut_off_by_a_truncated_file_is_a_data_error(tmp_path):
    p = tmp_path / "t.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=A)
        offset = f["x"].id.get_offset()
    h = F.open(f"{p}:/x")
    assert h._raw_rows() is not None
    with open(p, "r+b") as fh:  # cut inside the data, after the handle checked the file
        fh.truncate(offset + 1000)
    with pytest.raises(DataError, match="truncated|beyond its end|cannot read"):
        h.read()
    h.close()
