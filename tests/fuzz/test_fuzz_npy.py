"""Fuzz the NPY reader: byte mutations of files numpy wrote, and headers whose dict text
(shape, descr, fortran_order, keys, version, length) is generated."""

from __future__ import annotations

import numpy as np
import pytest
from fuzz.fuzzkit import HUGE, OPS, bomb_shapes, check_input, fuzz_settings, mutated
from fuzz.gen_npy import header_end, npy_bytes, npy_files
from hypothesis import example, given
from hypothesis import strategies as st

import rankwise.formats as F

FUZZ_FORMAT = "npy"


BASES = [
    npy_bytes(np.arange(12, dtype="<f8").reshape(3, 4)),
    npy_bytes(np.asfortranarray(np.arange(12, dtype=">i4").reshape(4, 3))),
    npy_bytes(np.arange(24, dtype="<f4").reshape(2, 3, 4), version=(2, 0)),
    npy_bytes(np.array(3.5)),
    npy_bytes(np.zeros((0, 5), dtype="<c16")),
    npy_bytes(np.array([True, False, True])),
]


@fuzz_settings()
@given(
    raw=st.sampled_from(BASES).flatmap(lambda b: mutated(b, hot=((0, header_end(b)),))),
    op=st.sampled_from(OPS),
)
def test_mutated_npy_bytes(scratch, raw, op):
    with scratch.path(".npy") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, p, op)


# -- generated headers ----------------------------------------------------------------------


def _empty_but_vast(dims: str) -> bytes:
    text = "{'descr': '<c16', 'fortran_order': False, 'shape': " + dims + ", }"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


@fuzz_settings()
@given(file=npy_files(), op=st.sampled_from(OPS))
# empty, yet numpy cannot make them: no traceback, a data error (found by this fuzzer)
@example(file=(_empty_but_vast("(0, 4611686018427387904)"), False), op="read")
@example(file=(_empty_but_vast("(0, 9223372036854775808)"), False), op="read")
def test_generated_npy_headers(scratch, file, op):
    raw, clean = file
    with scratch.path(".npy") as p:
        p.write_bytes(raw)
        outcome = check_input(FUZZ_FORMAT, p, op)
        if clean:
            # A well-formed file is read, and read right (the property can fail both ways).
            assert outcome is None
            if op == "read":
                expected = np.load(p, allow_pickle=False)
                got = F.open_array(p, max_bytes=1 << 20).read()
                np.testing.assert_array_equal(got, expected)


# -- decompression bombs: a tiny file declaring a huge shape ---------------------------------


@fuzz_settings()
@given(
    shape=bomb_shapes(),
    fortran=st.booleans(),
    tail=st.binary(max_size=64),
    op=st.sampled_from(("read", "blocks", "scan")),
)
def test_npy_shape_bombs_are_refused_before_allocating(scratch, shape, fortran, tail, op):
    text = f"{{'descr': '<f8', 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode() + tail
    with scratch.path(".npy") as p:
        p.write_bytes(raw)
        # Budget, truncation or unaddressable extent: never success, never an allocation.
        assert check_input(FUZZ_FORMAT, p, op) is not None


def test_npy_bomb_is_a_budget_error_naming_the_size(tmp_path):
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + bytes([len(text), 0]) + text.encode()
    (tmp_path / "bomb.npy").write_bytes(raw)
    h = F.open_array(tmp_path / "bomb.npy", max_bytes=HUGE)
    with pytest.raises(F.BudgetError, match=r"bomb\.npy: needs 7\.3 TiB"):
        h.read()
