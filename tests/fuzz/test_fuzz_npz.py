"""Fuzz the NPZ reader: byte mutations of archives numpy wrote (local headers, central
directory, member NPY headers), generated archives whose directory fields lie, and bombs."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from fuzz.fuzzkit import (
    INTERESTING_INTS,
    OPS,
    bomb_shapes,
    check_input,
    fuzz_settings,
    mutated,
)
from fuzz.gen_npy import npy_bytes, npy_files
from hypothesis import given
from hypothesis import strategies as st

import rankwise.formats as F

FUZZ_FORMAT = "npz"
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
LOCAL, CENTRAL, END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
# Offsets of the patchable fields: (offset, struct format) in local and central records.
LOCAL_FIELDS = {
    "flags": (6, "<H"),
    "method": (8, "<H"),
    "crc": (14, "<I"),
    "csize": (18, "<I"),
    "usize": (22, "<I"),
    "nlen": (26, "<H"),
    "xlen": (28, "<H"),
}
CENTRAL_FIELDS = {
    "flags": (8, "<H"),
    "method": (10, "<H"),
    "crc": (16, "<I"),
    "csize": (20, "<I"),
    "usize": (24, "<I"),
    "nlen": (28, "<H"),
    "xlen": (30, "<H"),
    "clen": (32, "<H"),
    "offset": (42, "<I"),
}
END_FIELDS = {"entries": (10, "<H"), "cd_size": (12, "<I"), "cd_offset": (16, "<I")}


def build_zip(members: list[tuple[str, bytes, int]], *, zip64: bool = False) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", allowZip64=True) as zf:
        warnings.simplefilter("ignore")  # duplicate member names are wanted here
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


def signatures(raw: bytes, sig: bytes) -> list[int]:
    out, pos = [], raw.find(sig)
    while pos >= 0:
        out.append(pos)
        pos = raw.find(sig, pos + 1)
    return out


def hot_regions(raw: bytes) -> tuple[tuple[int, int], ...]:
    """Zip records and member NPY headers: where parsing happens."""
    regions = []
    for sig, size in ((LOCAL, 30), (CENTRAL, 46), (END, 22), (b"\x93NUMPY", 128)):
        regions += [(p, p + size + 16) for p in signatures(raw, sig)]
    return tuple(regions)


def _savez(compressed: bool, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


BASES = [
    _savez(False, x=np.arange(12.0).reshape(3, 4)),
    _savez(True, x=np.asfortranarray(np.arange(12, dtype=">i4").reshape(4, 3))),
    _savez(False, x=np.ones(5, dtype="<c8"), y=np.zeros((2, 2))),
    build_zip([("x.npy", npy_bytes(np.arange(6.0).reshape(2, 3)), zipfile.ZIP_STORED)], zip64=True),
    build_zip([("x.npy", npy_bytes(np.arange(8, dtype="<i8")), zipfile.ZIP_BZIP2)]),
    build_zip([("x.npy", npy_bytes(np.eye(3, dtype="<f4")), zipfile.ZIP_LZMA)]),
]


@fuzz_settings()
@given(
    raw=st.sampled_from(BASES).flatmap(lambda b: mutated(b, hot=hot_regions(b))),
    op=st.sampled_from(OPS),
)
def test_mutated_npz_bytes(scratch, raw, op):
    with scratch.path(".npz") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, f"{p}:x", op)


# -- generated archives with lying directory fields ------------------------------------------

names = st.sampled_from(
    ("x.npy", "x.npy", "x", "y.npy", "x.npy", "dir/", "../x.npy", "/x.npy", "__attrs__.npy")
)
# Mostly the cheap methods: LZMA's encoder setup costs more than a whole example.
methods = st.sampled_from((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) * 3 + METHODS[2:])
records = st.sampled_from(((LOCAL, LOCAL_FIELDS), (CENTRAL, CENTRAL_FIELDS), (END, END_FIELDS)))
values = st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**32 - 1)


@st.composite
def patched_zips(draw) -> bytes:
    n = draw(st.integers(1, 3))
    members = [(draw(names), draw(npy_files())[0], draw(methods)) for _ in range(n)]
    buf = bytearray(build_zip(members, zip64=draw(st.booleans())))
    for _ in range(draw(st.integers(0, 3))):
        sig, fields = draw(records)
        starts = signatures(bytes(buf), sig)
        if not starts:
            continue
        at = starts[draw(st.integers(0, len(starts) - 1))]
        offset, fmt = sorted(fields.values())[draw(st.integers(0, len(fields) - 1))]
        if at + offset + struct.calcsize(fmt) > len(buf):
            continue
        struct.pack_into(fmt, buf, at + offset, draw(values) % 2 ** (8 * struct.calcsize(fmt)))
    return bytes(buf)


@fuzz_settings()
@given(raw=patched_zips(), op=st.sampled_from(OPS))
def test_generated_npz_archives(scratch, raw, op):
    with scratch.path(".npz") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, f"{p}:x", op)


# -- bombs -----------------------------------------------------------------------------------


def _bomb_header(shape: tuple[int, ...], fortran: bool = False) -> bytes:
    text = f"{{'descr': '<f8', 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


@fuzz_settings()
@given(
    shape=bomb_shapes(),
    fortran=st.booleans(),
    method=st.sampled_from(METHODS),
    lie=st.sampled_from((None, 2**32 - 1, 2**31, 10**9)),
    op=st.sampled_from(("read", "blocks", "scan")),
)
def test_npz_shape_bombs_are_refused_before_allocating(scratch, shape, fortran, method, lie, op):
    raw = bytearray(build_zip([("x.npy", _bomb_header(shape, fortran), method)]))
    if lie is not None:  # the directory claims the member holds all the declared bytes
        for at in signatures(bytes(raw), CENTRAL):
            struct.pack_into("<I", raw, at + CENTRAL_FIELDS["usize"][0], lie)
    with scratch.path(".npz") as p:
        p.write_bytes(bytes(raw))
        assert check_input(FUZZ_FORMAT, f"{p}:x", op) is not None


def _deflated_zeros_member(header: bytes, zeros: int) -> bytes:
    """A zip whose single deflated member is `header` + `zeros` zero bytes, built in 1 MiB
    steps so the test itself never holds the inflated data."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    parts = [comp.compress(header)]
    block = bytes(1 << 20)
    left = zeros
    while left:
        step = block[: min(left, len(block))]
        crc = zlib.crc32(step, crc)
        parts.append(comp.compress(step))
        left -= len(step)
    parts.append(comp.flush())
    data = b"".join(parts)
    size = len(header) + zeros
    name = b"x.npy"
    local = struct.pack("<4sHHHHHIIIHH", LOCAL, 20, 0, 8, 0, 33, crc, len(data), size, 5, 0)
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", CENTRAL, 20, 20, 0, 8, 0, 33, crc, len(data), size, 5, 0, 0, 0, 0,
        0, 0,
    )  # fmt: skip
    cd_offset = len(local) + len(name) + len(data)
    end = struct.pack("<4sHHHHIIH", END, 0, 0, 1, 1, len(central) + len(name), cd_offset, 0)
    return local + name + data + central + name + end


@pytest.mark.parametrize(
    "shape, refused",
    [((200 * 2**17,), True), ((3,), False)],  # 200 MiB declared; 24 bytes declared
    ids=["declares-200MiB", "declares-24B-of-200MiB"],
)
def test_npz_zip_bomb(scratch, shape, refused):
    # A ~200 KiB file inflating to 200 MiB: refused by the budget when the header declares it,
    # and never inflated past the declared bytes when it does not.
    raw = _deflated_zeros_member(_bomb_header(shape), 200 * 2**20)
    assert len(raw) < 2**20
    with scratch.path(".npz") as p:
        p.write_bytes(raw)
        outcome = check_input(FUZZ_FORMAT, f"{p}:x", "read")
        assert outcome is (F.BudgetError if refused else None)
