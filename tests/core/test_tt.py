"""Tensor train (TT-SVD, rounding, streaming) against independent truths: planted TT models,
dense reconstructions by ``np.einsum`` chains written here, LAPACK SVDs of unfoldings, and
TensorLy's ``tensor_train``.

Tolerances and where they come from:

* Exact planted models: backward-stable SVD/eigh steps reproduce X to a few eps·‖X‖ times a
  size factor; 1e-12 relative (a factor ~50 over eps64).
* The δ rule guarantees ‖X − T‖ ≤ ε‖X‖ (exact in exact arithmetic); 1e-12 absolute is allowed
  for rounding. TT rounding likewise guarantees ‖T − T'‖ ≤ ε‖T‖.
* Left-orthogonality: QR/SVD factors are orthonormal to ~n·eps: 1e-13.
* TensorLy comparison: both are TT-SVDs with the same ranks (TensorLy sweeps from the first
  mode, rankwise from the last), so on planted-plus-noise data their errors agree to well
  within 1e-4 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankwise.core import tensor as T
from rankwise.core.errors import BudgetError, DataError, ParameterError
from rankwise.core.tt import tt, tt_round


def planted(shape, ranks, *, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((ranks[k], shape[k], ranks[k + 1])) for k in range(len(shape))]
    x = dense(cores)
    if noise:
        e = rng.standard_normal(shape)
        x = x + noise * np.linalg.norm(x) / np.linalg.norm(e) * e
    return x, cores


def dense(cores):
    """TT tensor by a chain of einsum contractions (independent of rankwise's)."""
    out = np.asarray(cores[0], np.float64)[0]  # I_0 × r_1
    for c in cores[1:]:
        out = np.einsum("...a,abc->...bc", out, np.asarray(c, np.float64))
    return out[..., 0]


def cores_of(res):
    return [res.arrays[f"cores/{k}"] for k in range(len(res.arrays))]


def rel(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def unfolding_ranks(x, tol=1e-10):
    out = [1]
    for k in range(1, x.ndim):
        s = np.linalg.svd(x.reshape(math.prod(x.shape[:k]), -1), compute_uv=False)
        out.append(int(np.count_nonzero(s > tol * s[0])))
    return out + [1]


@pytest.mark.parametrize(
    "shape,ranks",
    [((10, 9, 8), (1, 3, 4, 1)), ((6, 7, 8, 5), (1, 3, 5, 4, 1)),
     ((4, 5, 6, 5, 4), (1, 2, 4, 4, 3, 1))],
)  # fmt: skip
def test_planted_tt_recovered(shape, ranks):
    x, _ = planted(shape, ranks, seed=1)
    res = tt(x, tol=1e-10)
    assert res.metrics["tt_ranks"] == list(ranks) == unfolding_ranks(x)
    got = cores_of(res)
    assert [c.shape for c in got] == [(ranks[k], shape[k], ranks[k + 1]) for k in range(len(shape))]
    assert rel(dense(got), x) < 1e-12
    assert res.metrics["relative_frobenius_error"] < 1e-12
    params = sum(ranks[k] * shape[k] * ranks[k + 1] for k in range(len(shape)))
    assert res.metrics["n_parameters"] == params
    assert res.metrics["compression_ratio"] == pytest.approx(math.prod(shape) / params)
    # left-orthogonal cores except the last, which carries the norm
    for c in got[:-1]:
        m = c.reshape(-1, c.shape[2])
        assert np.abs(m.T @ m - np.eye(m.shape[1])).max() < 1e-13
    assert res.metrics["orthogonality_loss"] < 1e-13
    assert np.linalg.norm(got[-1]) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    # bond singular values are those of the unfoldings of X
    for k in range(1, len(shape)):
        s = np.linalg.svd(x.reshape(math.prod(shape[:k]), -1), compute_uv=False)[: ranks[k]]
        np.testing.assert_allclose(res.metrics["bond_singular_values"][str(k)], s, rtol=1e-10)
    # max_rank alone at the true ranks: the same tensor
    capped = tt(x, max_rank=list(ranks[1:-1]))
    assert rel(dense(cores_of(capped)), x) < 1e-12


def hilbert(shape):
    return 1.0 / (1.0 + np.indices(shape).sum(axis=0))


@pytest.mark.parametrize("kind", ["random", "hilbert", "planted"])
@pytest.mark.parametrize("eps", [0.5, 0.1, 1e-2, 1e-4, 1e-8])
def test_tol_guarantee(kind, eps):
    rng = np.random.default_rng(2)
    if kind == "random":
        x = rng.standard_normal((8, 7, 6, 5))
    elif kind == "hilbert":
        x = hilbert((9, 8, 7, 6, 5))
    else:
        x = planted((9, 10, 8, 7), (1, 3, 5, 4, 1), noise=1e-3, seed=2)[0]
    res = tt(x, tol=eps)
    err = rel(dense(cores_of(res)), x)
    assert err <= eps + 1e-12
    assert res.metrics["relative_frobenius_error"] == pytest.approx(err, rel=1e-6, abs=1e-13)
    assert res.metrics["a_priori_error_bound"] == eps
    lo, hi = res.metrics["error_bounds"]
    assert lo - 1e-15 <= err <= hi + 1e-15
    # ‖X − T‖² = Σ discarded tails (nested orthogonal projections)
    assert res.metrics["tail_sum_error"] == pytest.approx(err, rel=1e-6, abs=1e-12)
    if eps == 1e-8:
        assert any("SVD" in p for p in res.details["paths"])


def test_order_two_is_truncated_svd():
    rng = np.random.default_rng(3)
    x = (
        rng.standard_normal((30, 20))
        @ np.diag(0.5 ** np.arange(20))
        @ rng.standard_normal((20, 20))
    )
    res = tt(x, max_rank=5)
    s = np.linalg.svd(x, compute_uv=False)
    np.testing.assert_allclose(res.metrics["bond_singular_values"]["1"], s[:5], rtol=1e-8)
    want = math.sqrt(np.sum(s[5:] ** 2) / np.sum(s**2))
    assert res.metrics["relative_frobenius_error"] == pytest.approx(want, rel=1e-8)


def test_max_rank_cap_warns_when_tol_not_met():
    x = hilbert((9, 8, 7, 6))
    res = tt(x, tol=1e-8, max_rank=2)
    assert max(res.metrics["tt_ranks"]) == 2
    assert any("capped" in w for w in res.warnings)
    assert res.metrics["a_priori_error_bound"] == pytest.approx(
        res.metrics["relative_frobenius_error"], rel=1e-6
    )
    assert res.rank["rule"] == "tol+max_rank"
    # TensorLy's [1, r_1, …, 1] list is accepted too
    assert tt(x, max_rank=[1, 2, 3, 2, 1]).metrics["tt_ranks"] == [1, 2, 3, 2, 1]


# --- rounding ----------------------------------------------------------------------------------


def gauge(cores, seed):
    """The same tensor with random invertible matrices inserted at every bond."""
    rng = np.random.default_rng(seed)
    out = [c.copy() for c in cores]
    for k in range(len(out) - 1):
        r = out[k].shape[2]
        g = rng.standard_normal((r, r)) + 3 * np.eye(r)
        out[k] = np.einsum("aib,bc->aic", out[k], g)
        out[k + 1] = np.einsum("cb,bjd->cjd", np.linalg.inv(g), out[k + 1])
    return out


def add(a, b):
    """TT of the sum of two TTs: block-diagonal cores (ranks add)."""
    out = []
    n = len(a)
    for k in range(n):
        ca, cb = a[k], b[k]
        if k == 0:
            out.append(np.concatenate([ca, cb], axis=2))
        elif k == n - 1:
            out.append(np.concatenate([ca, cb], axis=0))
        else:
            c = np.zeros((ca.shape[0] + cb.shape[0], ca.shape[1], ca.shape[2] + cb.shape[2]))
            c[: ca.shape[0], :, : ca.shape[2]] = ca
            c[ca.shape[0] :, :, ca.shape[2] :] = cb
            out.append(c)
    return out


def test_round_recovers_ranks_of_a_sum_and_guarantee():
    x, cores = planted((7, 8, 6, 5), (1, 2, 3, 2, 1), seed=4)
    doubled = add(cores, [2.0 * c if k == 0 else c for k, c in enumerate(cores)])  # 3·X
    res = tt_round(doubled, tol=1e-10)
    assert res.metrics["tt_ranks"] == [1, 2, 3, 2, 1]
    assert res.metrics["tt_ranks_in"] == [1, 4, 6, 4, 1]
    assert rel(dense(cores_of(res)), 3 * x) < 1e-12
    y, _ = planted((7, 8, 6, 5), (1, 4, 6, 4, 1), seed=5)
    _, ycores = planted((7, 8, 6, 5), (1, 4, 6, 4, 1), seed=5)
    for eps in (0.3, 0.05, 1e-3):
        r = tt_round(ycores, tol=eps)
        assert rel(dense(cores_of(r)), y) <= eps + 1e-12
        assert r.metrics["relative_frobenius_error"] == pytest.approx(
            rel(dense(cores_of(r)), y), rel=1e-6
        )


def test_canonical_form_is_gauge_independent():
    x, cores = planted((6, 7, 5, 4), (1, 3, 4, 3, 1), seed=6)
    a = tt_round(cores, tol=1e-12)
    b = tt_round(gauge(cores, 7), tol=1e-12)
    c = tt(x, tol=1e-12)
    for u, v, w in zip(cores_of(a), cores_of(b), cores_of(c), strict=False):
        np.testing.assert_allclose(u, v, atol=1e-10)
        np.testing.assert_allclose(u, w, atol=1e-10)


def test_round_errors():
    with pytest.raises(DataError):
        tt_round([np.ones((1, 3, 2)), np.ones((3, 4, 1))], tol=0.1)
    with pytest.raises(DataError):
        tt_round([np.ones((2, 3, 2)), np.ones((2, 4, 1))], tol=0.1)
    with pytest.raises(DataError):
        tt_round([np.ones((1, 3, 1))], tol=0.1)
    with pytest.raises(ParameterError):
        tt_round([np.ones((1, 3, 2)), np.ones((2, 4, 1))])


def test_by_rule_rows_are_guaranteed():
    x, _ = planted((8, 9, 7, 6), (1, 3, 5, 3, 1), noise=1e-3, seed=8)
    res = tt(x, tol=1e-5)
    for row in res.rank["by_rule"]:
        if row["given"] or row["ranks"] is None:
            continue
        r = tt_round(res.arrays, max_rank=row["ranks"])
        assert rel(dense(cores_of(r)), x) <= row["threshold"] + 1e-12


# --- TensorLy ----------------------------------------------------------------------------------


def test_against_tensorly_tensor_train():
    """TensorLy sweeps from the first mode, rankwise from the last: rankwise on the reversed
    tensor is TensorLy's algorithm and must give its error; at the planted ranks both are
    near-optimal and agree closely."""
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import tensor_train

    for seed in range(3):
        ranks = (1, 3, 4, 3, 1)
        x, _ = planted((10, 11, 9, 8), ranks, noise=0.05, seed=10 + seed)
        theirs = tensor_train(tl.tensor(x), rank=list(ranks))
        e_tl = rel(tl.tt_to_tensor(theirs), x)
        res = tt(x, max_rank=list(ranks[1:-1]))
        ours = tl.tt_to_tensor(cores_of(res))  # loads into TensorLy
        assert rel(ours, x) == pytest.approx(res.metrics["relative_frobenius_error"], rel=1e-10)
        assert res.metrics["relative_frobenius_error"] <= e_tl * (1 + 1e-4)
        rev = tt(np.ascontiguousarray(x.transpose(3, 2, 1, 0)), max_rank=list(ranks[-2:0:-1]))
        assert rev.metrics["relative_frobenius_error"] == pytest.approx(e_tl, rel=1e-10)
        # with the tol rule, TensorLy at the ranks rankwise chose meets the same tol
        res = tt(x, tol=0.06)
        theirs = tensor_train(tl.tensor(x), rank=res.metrics["tt_ranks"])
        assert res.metrics["relative_frobenius_error"] <= 0.06
        assert rel(tl.tt_to_tensor(theirs), x) <= 0.06 * 1.05


# --- conventions, dtypes, errors ---------------------------------------------------------------


def test_float32_integers_and_determinism():
    x, _ = planted((8, 7, 6), (1, 3, 3, 1), noise=1e-3, seed=12)
    r32 = tt(x.astype(np.float32), tol=1e-2)
    assert all(c.dtype == np.float32 for c in r32.arrays.values())
    r64 = tt(x, tol=1e-2)
    assert r32.metrics["tt_ranks"] == r64.metrics["tt_ranks"]
    assert r32.metrics["relative_frobenius_error"] == pytest.approx(
        r64.metrics["relative_frobenius_error"], rel=1e-3
    )
    ints = tt(np.arange(120).reshape(4, 5, 6) % 5, tol=0.1)
    assert ints.arrays["cores/0"].dtype == np.float64
    a, b = tt(x, tol=1e-3), tt(x, tol=1e-3)
    assert {k: v.tobytes() for k, v in a.arrays.items()} == {
        k: v.tobytes() for k, v in b.arrays.items()
    }


def test_extreme_scale_and_zero():
    x, _ = planted((6, 5, 4), (1, 2, 2, 1), noise=1e-2, seed=13)
    big = tt(x * 2.0**-700, tol=0.05)
    ref = tt(x, tol=0.05)
    assert any("scaled by 2^" in w for w in big.warnings)
    np.testing.assert_allclose(big.arrays["cores/2"], ref.arrays["cores/2"] * 2.0**-700,
                               rtol=1e-12)  # fmt: skip
    zero = tt(np.zeros((3, 4, 5)), tol=0.1)
    assert zero.metrics["tt_ranks"] == [1, 1, 1, 1] and zero.metrics["norm_fro"] == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_refused(bad):
    x = np.ones((4, 3, 2))
    x[0, 1, 1] = bad
    with pytest.raises(DataError):
        tt(x, tol=0.1)


@pytest.mark.parametrize(
    "kw", [{}, {"tol": 0.0}, {"tol": 2.0}, {"max_rank": 0}, {"max_rank": [2, 2, 2]},
           {"tol": 0.1, "svd": "qr"}],
)  # fmt: skip
def test_parameter_errors(kw):
    with pytest.raises(ParameterError):
        tt(np.ones((4, 3, 2)), **kw)


def test_shape_errors():
    with pytest.raises(DataError):
        tt(np.ones(5), tol=0.1)
    with pytest.raises(DataError):
        tt(np.ones((3, 0, 2)), tol=0.1)


# --- streaming ---------------------------------------------------------------------------------


def write_files(tmp_path, x, chunk_rows):
    import h5py
    import zarr

    h5 = tmp_path / "x.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("x", data=x, chunks=(chunk_rows, *x.shape[1:]))
    zp = tmp_path / "x.zarr"
    z = zarr.create_array(zp, shape=x.shape, dtype=x.dtype, chunks=(chunk_rows, *x.shape[1:]),
                          zarr_format=3)  # fmt: skip
    z[...] = x
    return [f"{h5}:/x", str(zp)]


def test_streaming_from_hdf5_and_zarr_equals_in_memory(tmp_path):
    from rankwise.formats import open_array

    x, _ = planted((30, 8, 9, 10), (1, 3, 4, 3, 1), noise=1e-3, seed=14)
    uris = write_files(tmp_path, x, chunk_rows=4)
    mem = tt(x, tol=1e-2)
    for uri in uris:
        with open_array(uri) as h:
            res = tt(h, tol=1e-2, max_memory=300_000)
        assert res.method == "tt-svd-streaming" and res.details["slab_rows"] < 30
        assert res.details["passes"] == 2 and res.details["streamed_bonds"] == [3]
        assert res.metrics["tt_ranks"] == mem.metrics["tt_ranks"]
        for k in mem.arrays:  # Gram sums in another order: equal to rounding
            np.testing.assert_allclose(res.arrays[k], mem.arrays[k], atol=1e-10)
        assert rel(dense(cores_of(res)), x) <= 1e-2


def test_streaming_several_passes_and_exact_model():
    # a long first mode and a short last one: the carrier after bond 3 is still too large, so
    # bond 2 is streamed too (a third pass), then the rest is gathered
    x, _ = planted((200, 6, 5, 2), (1, 3, 4, 2, 1), seed=15)
    src = T.ArraySlabs(x, chunk_rows=10)
    res = tt(src, tol=1e-9, streaming=True, max_memory=250_000)
    assert res.details["streamed_bonds"] == [2, 3]
    # tol 1e-9 is below what a summed Gram resolves: the R factors come from TSQR
    assert all("TSQR" in s["path"] for s in res.details["steps"] if s["where"] == "streamed")
    # exact model: the identity cannot resolve the error, one more pass computes it
    assert res.details["passes"] == 4
    assert res.metrics["error_method"].startswith("explicit residual")
    assert res.metrics["tt_ranks"] == [1, 3, 4, 2, 1]
    assert rel(dense(cores_of(res)), x) < 1e-11
    mem = tt(x, tol=1e-9)
    for k in mem.arrays:
        np.testing.assert_allclose(res.arrays[k], mem.arrays[k], atol=1e-9)


def test_streaming_budget_errors():
    x = np.ones((40, 30, 20))
    with pytest.raises(BudgetError, match="memory budget"):
        tt(T.ArraySlabs(x), tol=0.1, streaming=True, max_memory=1_000)
    with pytest.raises(BudgetError):
        tt(x, tol=0.1, max_memory=1_000)
    res = tt(T.ArraySlabs(x), tol=0.1, streaming=True, svd="svd")  # TSQR when forced
    assert res.metrics["tt_ranks"] == [1, 1, 1, 1]
