"""rankwise.core.reconstruct against independent reconstructions (numpy, TensorLy)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rankwise.core import reconstruct as R
from rankwise.core.errors import DataError, ParameterError

try:
    import tensorly as tl
except ImportError:  # the einsum truths below still run
    tl = None

LETTERS = "abcdefgh"


# --- factors of every kind and their independent truth --------------------------------------


def make(kind: str, rng, dtype=np.float64, big: bool = False) -> dict:
    """Random factors in each result layout (DESIGN.md §2)."""
    d = {}
    if kind in ("svd", "svd+mean", "complete-matrix"):
        m, n, k = (2000, 1800, 8) if big else (17, 13, 4)
        d = {"U": rng.standard_normal((m, k)), "S": rng.random(k) + 0.5,
             "Vt": rng.standard_normal((k, n))}  # fmt: skip
        if kind == "svd+mean":
            d["mean"] = rng.standard_normal(n)
    elif kind == "nmf":
        d = {"W": rng.random((19, 5)), "H": rng.random((5, 11))}
    elif kind == "cur":
        d = {"C": rng.standard_normal((15, 4)), "U": rng.standard_normal((4, 3)),
             "R": rng.standard_normal((3, 12))}  # fmt: skip
        d.update(rows=np.arange(3), cols=np.arange(4))  # not used by the reconstruction
    elif kind == "kpsvd":
        r, (m1, n1), (m2, n2) = (3, (50, 50), (40, 40)) if big else (3, (4, 3), (5, 6))
        d = {"S": rng.random(r) + 0.1, "A": rng.standard_normal((r, m1, n1)),
             "B": rng.standard_normal((r, m2, n2))}  # fmt: skip
    elif kind in ("cp", "complete-tensor"):
        shape, r = ((160, 150, 140), 5) if big else ((6, 5, 4, 3), 3)
        d = {"weights": rng.random(r) + 0.5}
        d.update({f"factors/{i}": rng.standard_normal((n, r)) for i, n in enumerate(shape)})
    elif kind == "tucker":
        shape, ranks = ((160, 150, 140), (5, 6, 4)) if big else ((7, 6, 5), (3, 2, 4))
        d = {"core": rng.standard_normal(ranks)}
        d.update({f"factors/{i}": rng.standard_normal((n, r))
                  for i, (n, r) in enumerate(zip(shape, ranks, strict=True))})  # fmt: skip
    elif kind == "tt":
        shape, ranks = ((160, 150, 140), (1, 5, 6, 1)) if big else ((5, 4, 6, 3), (1, 2, 3, 2, 1))
        d = {f"cores/{k}": rng.standard_normal((ranks[k], n, ranks[k + 1]))
             for k, n in enumerate(shape)}  # fmt: skip
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in d.items()}


def rkind(kind: str) -> str:
    """The root `kind` attribute a rankwise output carries."""
    return {"svd+mean": "svd", "complete-matrix": "complete", "complete-tensor": "complete"}.get(
        kind, kind
    )


def numbered(d, prefix):
    return [d[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in d))]


def truth(kind: str, d: dict) -> np.ndarray:
    """The dense array, computed in float64 without rankwise."""
    f = {k: np.asarray(v, np.float64) for k, v in d.items()}
    if kind in ("svd", "svd+mean", "complete-matrix"):
        x = f["U"] @ np.diag(f["S"]) @ f["Vt"]
        return x + f["mean"][None, :] if "mean" in f else x
    if kind == "nmf":
        return f["W"] @ f["H"]
    if kind == "cur":
        return f["C"] @ f["U"] @ f["R"]
    if kind == "kpsvd":
        return sum(s * np.kron(a, b) for s, a, b in zip(f["S"], f["A"], f["B"], strict=True))
    if kind in ("cp", "complete-tensor"):
        fs = numbered(f, "factors/")
        if tl is not None:
            return tl.cp_to_tensor((f["weights"], fs))
        n = len(fs)
        spec = "r," + ",".join(f"{c}r" for c in LETTERS[:n]) + "->" + LETTERS[:n]
        return np.einsum(spec, f["weights"], *fs)
    if kind == "tucker":
        fs = numbered(f, "factors/")
        if tl is not None:
            return tl.tucker_to_tensor((f["core"], fs))
        n = len(fs)
        spec = (LETTERS[:n] + "," + ",".join(f"{c.upper()}{c}" for c in LETTERS[:n]) + "->"
                + LETTERS[:n].upper())  # fmt: skip
        return np.einsum(spec, f["core"], *fs)
    if kind == "tt":
        cores = numbered(f, "cores/")
        if tl is not None:
            return tl.tt_to_tensor(cores)
        x = cores[0][0]
        for c in cores[1:]:
            x = np.tensordot(x, c, axes=([-1], [0]))
        return x[..., 0]
    raise AssertionError(kind)


KINDS = ["svd", "svd+mean", "nmf", "cur", "kpsvd", "cp", "tucker", "tt", "complete-matrix",
         "complete-tensor"]  # fmt: skip


def np_index(spec: str):
    """The NumPy index tuple a slice spec means (Python's own slice objects)."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item == "...":
            out.append(Ellipsis)
        elif ":" in item:
            out.append(slice(*(int(p) if p.strip() else None for p in item.split(":"))))
        else:
            out.append(int(item))
    return tuple(out)


def relerr(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


# --- dense -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dense_equals_independent_reconstruction(kind):
    d = make(kind, np.random.default_rng(1))
    t = truth(kind, d)
    x = R.to_dense(d, rkind(kind))
    assert x.shape == t.shape == R.result_shape(d, rkind(kind))
    assert x.dtype == np.float64
    # float64 sums of a few products: agreement to rounding
    np.testing.assert_allclose(x, t, rtol=1e-12, atol=1e-12 * np.abs(t).max())


@pytest.mark.parametrize("kind", KINDS)
def test_float32_factors_give_float32(kind):
    d = make(kind, np.random.default_rng(2), dtype=np.float32)
    x = R.to_dense(d, rkind(kind))
    assert x.dtype == np.float32
    assert R.result_dtype(d, rkind(kind)) == np.float32
    # float32 products of ≤ 8 terms: ~ 10 × eps32 relative to the data's scale
    assert relerr(x, truth(kind, d)) < 1e-5


def test_integer_factors_become_float64():
    d = {"W": np.arange(6).reshape(3, 2), "H": np.ones((2, 4), dtype=np.int32)}
    x = R.to_dense(d, "nmf")
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, d["W"] @ d["H"])


# --- slices ------------------------------------------------------------------------------

MATRIX_SPECS = ["0:10,:", "::3,5", "-1", "3:14:4,-5:", "...,2", "::-1", "2,3", "1:-1:2,::-2"]
TENSOR_SPECS = ["0:4,:,2", "::2,1,::-2", "-1", "...,1", "1,2,3", "4:1:-1,::3", ":,:,1:3",
                "0"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_slices_equal_the_slice_of_the_full_reconstruction(kind):
    d = make(kind, np.random.default_rng(3))
    t = truth(kind, d)
    specs = MATRIX_SPECS if t.ndim == 2 else TENSOR_SPECS
    for spec in specs:
        want = t[np_index(spec)]
        got = R.take_slice(d, rkind(kind), spec)
        assert got.shape == want.shape, spec
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(t).max(),
                                   err_msg=spec)  # fmt: skip


def test_parse_slice_normalises_and_drops_single_indices():
    sel = R.parse_slice("0:10, ::2 ,-1", (20, 6, 5))
    assert sel.text == "0:10,0:6:2,4"
    assert sel.shape == (10, 3)
    assert sel.lens == (10, 3, 1)
    assert R.parse_slice("...", (3, 4)).text == ":,:"
    assert R.parse_slice("5", (9, 4, 2)).shape == (4, 2)
    assert R.parse_slice("::-1", (4,)).text == "3::-1"


@pytest.mark.parametrize(
    "spec, why",
    [
        ("0:21", "out of range"),
        ("20", "out of range"),
        ("-21", "out of range"),
        ("a", "not an integer"),
        ("1:2:0", "step 0"),
        ("0,0,0,0", "4 items"),
        ("5:5", "selects nothing"),
        ("", "empty item"),
        ("1,,2", "empty item"),
        ("1:2:3:4", "more than two"),
        ("...,...", "more than one"),
        ("1.5", "not an integer"),
    ],
)
def test_parse_slice_refuses_malformed_or_out_of_range(spec, why):
    with pytest.raises(ParameterError, match=why):
        R.parse_slice(spec, (20, 6, 5))


@pytest.mark.parametrize("kind", ["svd", "kpsvd", "cp", "tucker", "tt"])
def test_slices_never_allocate_the_full_array(kind):
    """Large-ish results (about 32 MB dense): every slice stays far below the full size."""
    d = make(kind, np.random.default_rng(4), big=True)
    shape = R.result_shape(d, kind)
    full = int(np.prod(shape)) * 8
    assert full > 25e6
    specs = ["::16", "5,...", "...,7", "3:100:7,::-3"]
    for spec in specs:
        sel = R.parse_slice(spec, shape)
        est = R.estimate_bytes(d, kind, sel)
        tracemalloc.start()
        try:
            x = R.take_slice(d, kind, sel)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert x.shape == sel.shape
        assert peak < full / 4, (spec, peak, full)
        # the estimate is what the CLI checks against --max-memory: it must not be far below
        assert peak <= 1.5 * est + (256 << 10), (spec, peak, est)
    # spot-check values on the big case against a few entries computed directly
    idx = np_index("3:100:7,::-3") + ((slice(None),) if len(shape) == 3 else ())
    x = R.take_slice(d, kind, "3:100:7,::-3")
    t_part = _entries_truth(kind, d, idx, shape)
    np.testing.assert_allclose(x, t_part, rtol=1e-10, atol=1e-10 * np.abs(t_part).max())


def _entries_truth(kind, d, idx, shape):
    """Truth of a slice of a big result without forming the whole array (small factors)."""
    rows = [np.arange(n)[i] for n, i in zip(shape, idx, strict=False)]
    rows += [np.arange(n) for n in shape[len(rows) :]]
    if kind == "svd":
        return (d["U"][rows[0]] * d["S"]) @ d["Vt"][:, rows[1]]
    if kind == "kpsvd":
        t = truth(kind, d)  # 2000×... dense: acceptable once for the spot check
        return t[np.ix_(*rows)]
    sub = dict(d)
    if kind == "cp":
        for n, r in enumerate(rows):
            sub[f"factors/{n}"] = d[f"factors/{n}"][r]
    elif kind == "tucker":
        for n, r in enumerate(rows):
            sub[f"factors/{n}"] = d[f"factors/{n}"][r]
    elif kind == "tt":
        for n, r in enumerate(rows):
            sub[f"cores/{n}"] = d[f"cores/{n}"][:, r, :]
    return truth(kind, sub)


def test_estimate_covers_the_output():
    d = make("tucker", np.random.default_rng(5))
    shape = R.result_shape(d, "tucker")
    assert R.estimate_bytes(d, "tucker") >= int(np.prod(shape)) * 8
    d32 = make("tucker", np.random.default_rng(5), dtype=np.float32)
    assert R.estimate_bytes(d32, "tucker") < R.estimate_bytes(d, "tucker")


# --- blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_cover_the_array_in_order(kind):
    d = make(kind, np.random.default_rng(6))
    t = truth(kind, d)
    for rows in (1, 3, t.shape[0], t.shape[0] + 5):
        parts = list(R.blocks(d, rkind(kind), rows))
        assert [s for s, _ in parts] == list(range(0, t.shape[0], rows))
        np.testing.assert_allclose(np.concatenate([b for _, b in parts]), t, rtol=1e-12,
                                   atol=1e-12 * np.abs(t).max())  # fmt: skip
    part = list(R.blocks(d, rkind(kind), 2, start=1, stop=4))
    np.testing.assert_allclose(np.concatenate([b for _, b in part]), t[1:4], rtol=1e-12,
                               atol=1e-12 * np.abs(t).max())  # fmt: skip


# --- errors ------------------------------------------------------------------------------


def uneven_blocks(x, sizes=(1, 4, 2, 7)):
    s, i = 0, 0
    while s < x.shape[0]:
        n = sizes[i % len(sizes)]
        yield s, x[s : s + n]
        s += n
        i += 1


@pytest.mark.parametrize("kind", KINDS)
def test_relative_error_equals_numpy(kind):
    rng = np.random.default_rng(7)
    d = make(kind, rng)
    t = truth(kind, d)
    x = t + 0.01 * np.abs(t).max() * rng.standard_normal(t.shape)
    want = np.linalg.norm(x - t) / np.linalg.norm(x)
    got = R.relative_error(d, rkind(kind), uneven_blocks(x))
    assert got == pytest.approx(want, rel=1e-10)
    stats = R.error_stats(d, rkind(kind), [(0, x)])
    lo, hi = stats.bounds
    assert lo <= want * (1 + 1e-12) and want <= hi * (1 + 1e-12)
    assert stats.entries == x.size and stats.missing == 0
    # a float32 copy of the data: compared in float64, no float32 rounding of the residual
    x32 = x.astype(np.float32)
    want32 = np.linalg.norm(x32.astype(np.float64) - t) / np.linalg.norm(x32.astype(np.float64))
    assert R.relative_error(d, rkind(kind), [(0, x32)]) == pytest.approx(want32, rel=1e-10)


def test_exact_model_has_zero_error_within_its_bound():
    d = make("tucker", np.random.default_rng(8))
    t = truth("tucker", d)
    stats = R.error_stats(d, "tucker", [(0, t)])
    # the truth itself is rounded (einsum/TensorLy order differs): a few eps
    assert stats.relative < 1e-14
    assert stats.bounds[0] == 0.0
    assert stats.bounds[1] >= stats.relative


def test_centred_svd_reports_both_normalisations():
    rng = np.random.default_rng(9)
    d = make("svd+mean", rng)
    t = truth("svd+mean", d)
    x = t + 0.1 * rng.standard_normal(t.shape)
    stats = R.error_stats(d, "svd", [(0, x)])
    xc = x - d["mean"]
    assert stats.relative_centred == pytest.approx(
        np.linalg.norm(x - t) / np.linalg.norm(xc), rel=1e-12
    )
    assert R.error_stats(make("svd", rng), "svd", [(0, x[:, :13][:17])]).relative_centred is None


def test_nan_is_skipped_only_when_asked():
    rng = np.random.default_rng(10)
    d = make("complete-matrix", rng)
    t = truth("complete-matrix", d)
    x = t + 0.05 * rng.standard_normal(t.shape)
    x[2, 3] = x[5, 1] = np.nan
    mask = ~np.isnan(x)
    want = np.linalg.norm((x - t)[mask]) / np.linalg.norm(x[mask])
    stats = R.error_stats(d, "complete", uneven_blocks(x), skip_nan=True)
    assert stats.relative == pytest.approx(want, rel=1e-12)
    assert stats.missing == 2 and stats.entries == x.size - 2
    with pytest.raises(DataError, match="2 NaN"):
        R.error_stats(d, "complete", [(0, x)])
    x[0, 0] = np.inf
    with pytest.raises(DataError, match="infinite"):
        R.error_stats(d, "complete", [(0, x)], skip_nan=True)


def test_error_refuses_blocks_that_do_not_match():
    d = make("nmf", np.random.default_rng(11))
    t = truth("nmf", d)
    with pytest.raises(DataError, match="does not match"):
        R.error_stats(d, "nmf", [(0, t[:, :-1])])
    with pytest.raises(DataError, match="rows"):
        R.error_stats(d, "nmf", [(0, t[:-2])])
    with pytest.raises(DataError, match="more than"):
        R.error_stats(d, "nmf", [(0, t), (t.shape[0], t[:1])])
    with pytest.raises(DataError, match="out of order"):
        R.error_stats(d, "nmf", [(3, t)])


@pytest.mark.parametrize("kind", ["complete-matrix", "complete-tensor", "svd+mean"])
def test_entries_error_equals_numpy(kind):
    rng = np.random.default_rng(12)
    d = make(kind, rng)
    t = truth(kind, d)
    n = 40
    idx = tuple(rng.integers(0, s, n) for s in t.shape)
    vals = t[idx] + 0.1 * rng.standard_normal(n)
    want = np.linalg.norm(vals - t[idx]) / np.linalg.norm(vals)
    stats = R.entries_error(d, rkind(kind), idx, vals)
    assert stats.relative == pytest.approx(want, rel=1e-12)
    assert stats.entries == n
    bad = (idx[0] + t.shape[0], *idx[1:])
    with pytest.raises(DataError, match="out of range"):
        R.entries_error(d, rkind(kind), bad, vals)


# --- bases -------------------------------------------------------------------------------


@pytest.mark.parametrize("centred", [False, True])
def test_projection_error_equals_numpy(centred):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((50, 6)) @ rng.standard_normal((6, 30))
    x += 1e-3 * rng.standard_normal(x.shape)
    mean = x.mean(axis=1) if centred else None
    xc = x - mean[:, None] if centred else x
    v = np.linalg.svd(xc, full_matrices=False)[0][:, :5]
    resid = xc - v @ (v.T @ xc)
    want = np.linalg.norm(resid) / np.linalg.norm(xc)
    per = np.linalg.norm(resid, axis=0) / np.linalg.norm(xc, axis=0)
    out = R.projection_error(v, lambda: uneven_blocks(x), mean=mean)
    assert out["stats"].relative == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(out["per_snapshot"], per, rtol=1e-10)
    assert out["worst_snapshot"] == int(np.argmax(per))
    assert out["orthogonality_loss"] < 1e-13
    lo, hi = out["stats"].bounds
    assert lo <= want * (1 + 1e-12) <= hi * (1 + 2e-12)


def test_projection_error_flags_a_non_orthonormal_basis_and_bad_shapes():
    rng = np.random.default_rng(14)
    v = rng.standard_normal((20, 3))
    x = rng.standard_normal((20, 4))
    assert R.projection_error(v, lambda: [(0, x)])["orthogonality_loss"] > 0.1
    with pytest.raises(DataError, match="dofs"):
        R.projection_error(v, lambda: [(0, x[:-1])])


# --- kinds and layouts -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rob pod", "rob enrich", "rob merge"])
def test_a_basis_is_refused_with_a_pointer_to_error(kind):
    arrays = {"basis": np.eye(4)[:, :2], "singular_values": np.ones(2)}
    with pytest.raises(ParameterError, match="basis.*needs the snapshots.*rankwise error"):
        R.to_dense(arrays, kind)


def test_unknown_kinds_and_non_models():
    with pytest.raises(DataError, match="not a rankwise result"):
        R.model({"x": np.ones(3)}, None)
    with pytest.raises(DataError, match="unknown result kind 'pca'"):
        R.model({"x": np.ones(3)}, "pca")
    for kind in ("rob local", "rob deim", "reconstruct"):
        with pytest.raises(ParameterError, match="cannot be reconstructed"):
            R.model({}, kind)


@pytest.mark.parametrize(
    "kind, arrays, match",
    [
        ("svd", {"U": np.ones((3, 2)), "S": np.ones(2)}, "missing array.*Vt"),
        ("svd", {"U": np.ones((3, 2)), "S": np.ones(3), "Vt": np.ones((2, 4))}, "S"),
        ("svd", {"U": np.ones((3, 2)), "S": np.ones(2), "Vt": np.ones((2, 4)),
                 "mean": np.ones(3)}, "mean"),
        ("nmf", {"W": np.ones((3, 2)), "H": np.ones((3, 4))}, "W 3×2 and H 3×4"),
        ("cp", {"weights": np.ones(2), "factors/0": np.ones((3, 2)), "factors/2": np.ones((3, 2))},
         "factors/0 … factors/N-1"),
        ("cp", {"weights": np.ones(2), "factors/0": np.ones((3, 2)),
                "factors/1": np.ones((3, 3))}, "inconsistent"),
        ("tucker", {"core": np.ones((2, 2)), "factors/0": np.ones((3, 2)),
                    "factors/1": np.ones((3, 3))}, "inconsistent"),
        ("tt", {"cores/0": np.ones((1, 3, 2)), "cores/1": np.ones((3, 3, 1))}, "inconsistent"),
        ("kpsvd", {"S": np.ones(2), "A": np.ones((2, 2, 2)), "B": np.ones((3, 2, 2))},
         "inconsistent"),
        ("complete", {"Vt": np.ones((2, 2))}, "weights"),
        ("nmf", {"W": np.ones((3, 2), dtype=complex), "H": np.ones((2, 4))}, "real numbers"),
    ],
)  # fmt: skip
def test_inconsistent_layouts_are_data_errors(kind, arrays, match):
    with pytest.raises(DataError, match=match):
        R.model(arrays, kind)
