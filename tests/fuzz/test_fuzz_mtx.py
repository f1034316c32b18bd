"""Fuzz the MatrixMarket reader: generated files (header line, size line, entry lines with
huge/negative/NaN/Inf/non-numeric values, wrong counts), byte mutations of files scipy wrote,
and headers declaring huge sizes over tiny bodies; read() and read_entries() both."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from fuzz.fuzzkit import HUGE, OPS, check_input, fuzz_settings, mutated
from hypothesis import given
from hypothesis import strategies as st

import rankwise.formats as F

FUZZ_FORMAT = "mtx"
MTX_OPS = (*OPS, "entries", "entries")


@functools.cache
def bases() -> list[bytes]:
    a = np.arange(1.0, 13.0).reshape(3, 4)
    sym = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 4.0], [0.0, 4.0, 5.0]])
    out = []
    for m, kw in [
        (sp.coo_array(a), {}),
        (sp.coo_array(sym), {"symmetry": "symmetric"}),
        (sp.coo_array(a.astype(np.int64)), {"field": "integer"}),
        (sp.coo_array(a), {"field": "pattern"}),
        (sp.coo_array(a + 1j), {}),
        (a, {}),
        (sym, {"symmetry": "symmetric"}),
    ]:
        buf = io.BytesIO()
        scipy.io.mmwrite(buf, m, **kw)
        out.append(buf.getvalue())
    out.append(b"%%MatrixMarket matrix coordinate real skew-symmetric\n3 3 1\n2 1 -1.5\n")
    out.append(b"%%MatrixMarket matrix coordinate complex hermitian\n2 2 2\n1 1 1 0\n2 1 1 2\n")
    return out


def _head_end(raw: bytes) -> int:
    """End of the header and size line (the comment lines in between included)."""
    lines = raw.split(b"\n")
    n = 0
    for i, line in enumerate(lines):
        n += len(line) + 1
        if i > 0 and not line.startswith(b"%"):
            break
    return n


@fuzz_settings()
@given(
    raw=st.sampled_from(range(9)).flatmap(
        lambda i: mutated(bases()[i], hot=((0, _head_end(bases()[i])),))
    ),
    op=st.sampled_from(MTX_OPS),
)
def test_mutated_mtx_bytes(scratch, raw, op):
    with scratch.path(".mtx") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, p, op)


# -- generated text ---------------------------------------------------------------------------

tokens = st.sampled_from
objects = tokens(("matrix", "matrix", "matrix", "vector", "Matrix", "tensor", ""))
formats = tokens(("coordinate", "coordinate", "array", "COORDINATE", "sparse", ""))
fields = tokens(("real", "real", "integer", "complex", "pattern", "double", "unsigned-integer", ""))
symmetries = tokens(
    ("general", "general", "symmetric", "skew-symmetric", "hermitian", "diagonal", "")
)
numbers = st.one_of(
    st.integers(0, 6).map(str),
    tokens(
        ("-1", "0", "1e3", "3.0", "0x10", "2147483648", "9223372036854775807",
         "9223372036854775808", "99999999999999999999", "nan", "inf", "-inf", "x", "", "1 1")
    ),
    st.just(str(HUGE)),
)  # fmt: skip
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    tokens(("NaN", "nan", "Inf", "-inf", "infinity", "1e400", "-1e-400", "abc", "", "0x1p3",
            "1,5")),
)  # fmt: skip


@st.composite
def mtx_texts(draw) -> bytes:
    header = " ".join(
        ["%%MatrixMarket", draw(objects), draw(formats), draw(fields), draw(symmetries)]
    )
    if draw(st.integers(0, 9)) == 0:
        header = header.lower().replace("%%matrixmarket", draw(tokens(("%MatrixMarket", "%%"))))
    lines = [header]
    lines += ["% comment"] * draw(st.integers(0, 2))
    size = [draw(numbers) for _ in range(draw(st.sampled_from((3, 3, 3, 2, 1, 4))))]
    lines.append(" ".join(size))
    n_entries = draw(st.integers(0, 8))
    for _ in range(n_entries):
        kind = draw(st.integers(0, 9))
        if kind < 6:  # plausible entry: small indices, any value
            parts = [str(draw(st.integers(0, 5))), str(draw(st.integers(0, 5))), draw(values)]
            if draw(st.integers(0, 4)) == 0:
                parts.append(draw(values))  # complex files need two values
        elif kind < 8:  # array-format line: one or two values
            parts = [draw(values) for _ in range(draw(st.integers(1, 2)))]
        else:  # anything
            parts = [draw(st.one_of(numbers, values)) for _ in range(draw(st.integers(0, 5)))]
        lines.append(" ".join(parts))
    if draw(st.booleans()):
        lines.append("")
    text = "\n".join(lines)
    if draw(st.integers(0, 5)) == 0:
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8", "surrogatepass")


@fuzz_settings()
@given(raw=mtx_texts(), op=st.sampled_from(MTX_OPS))
def test_generated_mtx_text(scratch, raw, op):
    with scratch.path(".mtx") as p:
        p.write_bytes(raw)
        check_input(FUZZ_FORMAT, p, op)


# -- bombs ------------------------------------------------------------------------------------

big = st.sampled_from((1, 3, 2**20, 2**24 + 1, 10**9, HUGE, 2**62, 2**63 - 1))


@fuzz_settings()
@given(
    rows=big,
    cols=big,
    nnz=big,
    fmt=st.sampled_from(("coordinate", "array")),
    field=st.sampled_from(("real", "integer", "complex", "pattern")),
    symmetry=st.sampled_from(("general", "symmetric", "skew-symmetric", "hermitian")),
    body=st.sampled_from(("", "1 1 1\n", "1 1 1.0\n2 2 2.0\n", "1.0\n" * 4)),
    op=st.sampled_from(MTX_OPS),
)
def test_mtx_size_bombs(scratch, rows, cols, nnz, fmt, field, symmetry, body, op):
    # A header declaring up to 2**63 rows, columns or entries over a body of a few bytes.
    size = f"{rows} {cols} {nnz}" if fmt == "coordinate" else f"{rows} {cols}"
    text = f"%%MatrixMarket matrix {fmt} {field} {symmetry}\n{size}\n{body}"
    with scratch.path(".mtx") as p:
        p.write_text(text)
        outcome = check_input(FUZZ_FORMAT, p, op)
        declared = nnz if fmt == "coordinate" else rows * cols
        if declared > 2**20 and op in ("read", "entries", "blocks", "scan"):
            assert outcome is not None  # never parsed as if the body held them


@pytest.mark.parametrize("size", ["1000000 1000000 1000000000000", "1000000000000 1"])
def test_mtx_bomb_is_refused_before_parsing(tmp_path, size):
    fmt = "coordinate" if size.count(" ") == 2 else "array"
    (tmp_path / "b.mtx").write_text(f"%%MatrixMarket matrix {fmt} real general\n{size}\n1 1 1\n")
    h = F.open_array(tmp_path / "b.mtx", max_bytes=HUGE * 100)  # budget allows: the size check
    with pytest.raises(F.DataError, match=r"b\.mtx: header declares 1000000000000 values"):
        h.read()
