"""Generated NPY files: header dict text (shape, descr, fortran_order, keys), version, header
length and data length drawn from strategies (shared by the NPY and NPZ fuzz tests)."""

from __future__ import annotations

import ast
import io
import math

import numpy as np
from fuzz.fuzzkit import blob, weird_ints
from hypothesis import strategies as st


def npy_bytes(a: np.ndarray, version=None) -> bytes:
    import numpy.lib.format as npf

    buf = io.BytesIO()
    npf.write_array(buf, a, version=version, allow_pickle=False)
    return buf.getvalue()


def header_end(raw: bytes) -> int:
    return raw.index(b"\n") + 1


ACCEPTED_DESCRS = {
    "'<f8'": "<f8",
    "'>f8'": ">f8",
    "'<f4'": "<f4",
    "'<f2'": "<f2",
    "'<i4'": "<i4",
    "'>i2'": ">i2",
    "'<u8'": "<u8",
    "'|u1'": "|u1",
    "'|b1'": "|b1",
    "'<c16'": "<c16",
}
OTHER_DESCRS = (
    "'|O'",
    "'<U3'",
    "'|S4'",
    "'|V8'",
    "'|V0'",
    "'<M8[D]'",
    "'<m8[s]'",
    "'<U1000000000'",
    "'|V2147483648'",
    "[('a', '<f8'), ('b', '<i4')]",
    "[('a', '|O')]",
    "[('', '<f8', (2,))]",
    "[('a', '<f8', (1000000, 1000000))]",  # subarray bomb inside one element
    "('<f8', (2,))",
    "'f8'",
    "'float64'",
    "'<f16'",
    "'<f3'",
    "None",
    "3",
    "{}",
    "''",
)
descrs = st.one_of(
    st.sampled_from(sorted(ACCEPTED_DESCRS)),
    st.sampled_from(OTHER_DESCRS),
    st.text(max_size=6).map(repr),
)
small_shapes = st.lists(st.integers(0, 6), max_size=3).map(tuple)
shapes = st.one_of(
    small_shapes.map(repr),
    st.lists(st.one_of(weird_ints, st.integers(0, 6)), min_size=1, max_size=4).map(
        lambda s: repr(tuple(s))
    ),
    st.sampled_from(
        ("[3, 4]", "3", "None", "(3.0, 4)", "(True, 2)", "('3',)", "((3,), 4)", "(-1,)", "()")
    ),
    st.integers(1, 300).map(lambda n: "(" * n + ")" * n),  # nesting depth
)
fortrans = st.sampled_from(("False", "True", "0", "1", "None", "'False'"))
_accepted = st.sampled_from(sorted(ACCEPTED_DESCRS))
_descrs = st.one_of(_accepted, descrs)
_shapes = st.one_of(small_shapes.map(repr), shapes)
_key_edits = st.sampled_from(("none", "none", "none", "drop", "extra", "rename"))
_extra_values = st.sampled_from(("1", "None", "'x'"))
_versions = st.sampled_from(((1, 0), (1, 0), (2, 0), (3, 0), (0, 0), (4, 0), (1, 1)))
_pads = st.sampled_from(("aligned", "aligned", "none", "no-newline"))
_length_edits = st.sampled_from(("exact", "exact", "exact", "short", "long", "huge"))
_data_edits = st.sampled_from(("exact", "exact", "short", "long", "random"))
MAX_DATA = 4096  # KB-sized files keep thousands of examples fast


@st.composite
def npy_files(draw) -> tuple[bytes, bool]:
    """(file bytes, clean): clean files are well-formed and must read back exactly."""
    descr = draw(_descrs)
    shape = draw(_shapes)
    fortran = draw(fortrans)
    items = [("descr", descr), ("fortran_order", fortran), ("shape", shape)]
    keys_edit = draw(_key_edits)
    if keys_edit == "drop":
        del items[draw(st.integers(0, 2))]
    elif keys_edit == "extra":
        items.append(("extra", draw(_extra_values)))
    elif keys_edit == "rename":
        i = draw(st.integers(0, 2))
        items[i] = ("Shape", items[i][1])
    text = "{" + ", ".join(f"{k!r}: {v}" for k, v in items) + ", }"
    version = draw(_versions)
    lenbytes = 2 if version[0] == 1 else 4
    pad = draw(_pads)
    body = text
    if pad == "aligned":
        total = 6 + 2 + lenbytes + len(body) + 1
        body += " " * (-total % 64) + "\n"
    elif pad == "none":
        body += "\n"
    encoded = body.encode("utf-8", "surrogatepass")
    length = len(encoded)
    length_edit = draw(_length_edits)
    if length_edit == "short":
        length = max(length - draw(st.integers(1, 10)), 0)
    elif length_edit == "long":
        length += draw(st.integers(1, 100))
    elif length_edit == "huge":
        length = 2 ** (8 * lenbytes) - 1
    head = b"\x93NUMPY" + bytes(version) + length.to_bytes(lenbytes, "little") + encoded

    clean = (
        descr in ACCEPTED_DESCRS
        and keys_edit == "none"
        and fortran in ("False", "True")
        and version in ((1, 0), (2, 0))
        and pad == "aligned"
        and length_edit == "exact"
    )
    exact = None
    try:
        dims = ast.literal_eval(shape)
        itemsize = np.dtype(ACCEPTED_DESCRS.get(descr, "<f8")).itemsize
        if (
            isinstance(dims, tuple)
            and all(type(d) is int and d >= 0 for d in dims)
            # numpy's own limit: the non-zero extents must span at most 2⁶³ − 1 bytes
            and math.prod(d for d in dims if d) * itemsize < 2**63
        ):
            exact = math.prod(dims) * itemsize
    except Exception:  # nonsense shapes (the strategy's own): no exact size
        pass
    if exact is not None and exact > MAX_DATA:
        exact = None
    clean = clean and exact is not None
    data_edit = draw(_data_edits)
    if exact is None or data_edit == "random":
        n = draw(st.integers(0, 256))
        clean = False
    else:
        n = exact
        if data_edit == "short":
            n = max(exact - draw(st.integers(1, 16)), 0)
            clean = clean and n == exact
        elif data_edit == "long":
            n = exact + draw(st.integers(1, 16))
    return head + blob(draw, n), clean
