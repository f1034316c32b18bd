"""MatrixMarket: every format × field × symmetry, each against a dense matrix built here.

The .mtx text is written by hand and the expected matrix is built independently with numpy
(mirroring rules of the MatrixMarket specification), never with scipy.io.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import rankwise.formats as F

SYMMETRIES = ["general", "symmetric", "skew-symmetric"]
FIELDS = ["real", "integer", "pattern"]


def _value_text(v: float, field: str) -> str:
    return str(int(v)) if field == "integer" else repr(float(v))


def _truth(n: int, symmetry: str, field: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    a = rng.integers(-9, 10, size=(n, n)).astype(float)
    if field == "real":
        a = a / 4  # exact binary fractions: text round trip is exact
    if symmetry == "symmetric":
        return np.tril(a) + np.tril(a, -1).T
    if symmetry == "skew-symmetric":
        return np.tril(a, -1) - np.tril(a, -1).T
    return a


@pytest.mark.parametrize("symmetry", SYMMETRIES)
@pytest.mark.parametrize("field", ["real", "integer"])
def test_array_format(tmp_path, field, symmetry):
    n = 4
    truth = _truth(n, symmetry, field)
    # Array format: values column by column; symmetric stores the lower triangle with the
    # diagonal, skew-symmetric the strictly lower triangle.
    values = []
    for j in range(n):
        first = {"general": 0, "symmetric": j, "skew-symmetric": j + 1}[symmetry]
        values += [truth[i, j] for i in range(first, n)]
    text = (
        f"%%MatrixMarket matrix array {field} {symmetry}\n% written by hand\n{n} {n}\n"
        + "\n".join(_value_text(v, field) for v in values)
        + "\n"
    )
    (tmp_path / "a.mtx").write_text(text)
    h = F.open(tmp_path / "a.mtx")
    assert h.sparse is False and h.nnz is None
    assert h.dtype == (np.int64 if field == "integer" else np.float64)
    assert h.describe()["order"] == "F"
    got = h.read()
    assert isinstance(got, np.ndarray) and got.dtype == h.dtype
    np.testing.assert_array_equal(got, truth)
    np.testing.assert_array_equal(np.concatenate([b for _, b in h.iter_blocks(3)]), truth)


def _coordinate_case(symmetry: str, field: str) -> tuple[int, int, list[tuple[int, int, float]]]:
    if symmetry == "general":
        # non-square, upper and lower entries, and a duplicate (summed)
        return 3, 5, [(1, 1, 2), (1, 5, -3), (3, 2, 4), (2, 4, 1), (3, 2, 5)]
    if symmetry == "symmetric":
        return 4, 4, [(1, 1, 2), (2, 1, -3), (4, 2, 4), (3, 3, 7), (4, 4, 1)]
    return 4, 4, [(2, 1, -3), (4, 2, 4), (3, 1, 6), (4, 3, 1)]


def _expected(m: int, n: int, entries, symmetry: str, field: str) -> np.ndarray:
    d = np.zeros((m, n))
    for i, j, v in entries:
        val = 1.0 if field == "pattern" else (v if field == "integer" else v / 2)
        d[i - 1, j - 1] += val
        if symmetry == "symmetric" and i != j:
            d[j - 1, i - 1] += val
        elif symmetry == "skew-symmetric":
            d[j - 1, i - 1] -= val
    return d


def _expected_positions(entries, symmetry: str) -> int:
    pos = {(i, j) for i, j, _ in entries}
    if symmetry != "general":
        pos |= {(j, i) for i, j, _ in entries}
    return len(pos)


@pytest.mark.parametrize("symmetry", SYMMETRIES)
@pytest.mark.parametrize("field", FIELDS)
def test_coordinate_format(tmp_path, field, symmetry):
    m, n, entries = _coordinate_case(symmetry, field)
    lines = [f"%%MatrixMarket matrix coordinate {field} {symmetry}", "% hand-written", "%"]
    lines.append(f"{m} {n} {len(entries)}")
    for i, j, v in entries:
        if field == "pattern":
            lines.append(f"{i} {j}")
        else:
            lines.append(f"{i} {j} {_value_text(v if field == 'integer' else v / 2, field)}")
    (tmp_path / "c.mtx").write_text("\n".join(lines) + "\n")

    h = F.open(tmp_path / "c.mtx")
    assert h.sparse is True and h.shape == (m, n)
    assert h.nnz == len(entries)  # the stored (declared) entries
    assert h.dtype == (np.int64 if field == "integer" else np.float64)
    if symmetry != "general":
        assert any("counts the stored triangle" in note for note in h.describe()["notes"])
    got = h.read()
    assert isinstance(got, sp.csr_array) and got.dtype == h.dtype
    assert got.has_canonical_format
    expected = _expected(m, n, entries, symmetry, field)
    np.testing.assert_array_equal(got.toarray(), expected)
    assert got.nnz == _expected_positions(entries, symmetry)
    assert h.scan() == {"nan": 0, "inf": 0, "nnz": _expected_positions(entries, symmetry)}
    blocks = [b for _, b in h.iter_blocks(2)]
    assert all(isinstance(b, sp.csr_array) for b in blocks)
    np.testing.assert_array_equal(sp.vstack(blocks).toarray(), expected)


def test_array_pattern_is_refused(tmp_path):
    (tmp_path / "p.mtx").write_text("%%MatrixMarket matrix array pattern general\n1 1\n1\n")
    with pytest.raises(F.DataError, match="malformed MatrixMarket header"):
        F.open(tmp_path / "p.mtx")


def test_complex_hermitian(tmp_path):
    text = (
        "%%MatrixMarket matrix coordinate complex hermitian\n3 3 3\n"
        "1 1 2.0 0.0\n2 1 1.5 -0.5\n3 2 0.0 4.0\n"
    )
    (tmp_path / "h.mtx").write_text(text)
    expected = np.zeros((3, 3), dtype=complex)
    expected[0, 0] = 2
    expected[1, 0], expected[0, 1] = 1.5 - 0.5j, 1.5 + 0.5j
    expected[2, 1], expected[1, 2] = 4j, -4j
    h = F.open(tmp_path / "h.mtx")
    assert h.dtype == np.complex128
    np.testing.assert_array_equal(h.read().toarray(), expected)


def test_mtx_nan_and_inf_are_counted(tmp_path):
    text = "%%MatrixMarket matrix coordinate real general\n2 2 3\n1 1 nan\n2 2 inf\n1 2 0\n"
    (tmp_path / "n.mtx").write_text(text)
    assert F.open(tmp_path / "n.mtx").scan() == {"nan": 1, "inf": 1, "nnz": 3}


def test_banner_detection_is_case_insensitive_but_scipy_needs_the_canonical_banner(tmp_path):
    (tmp_path / "lower.txt").write_text(
        "%%matrixmarket matrix coordinate real general\n1 1 1\n1 1 2\n"
    )
    assert F.detect_format(tmp_path / "lower.txt") == "mtx"
    with pytest.raises(F.DataError, match="malformed MatrixMarket header"):
        F.open(tmp_path / "lower.txt")
