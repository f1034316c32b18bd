"""CUR decomposition against independent truths: direct residuals ‖A − CUR‖ in numpy, the
optimal rank-k error from the planted spectrum (Eckart–Young), ``numpy.linalg.pinv`` for U.

Tolerances: the reported error comes from a norm identity whose rounding is ~k·eps·‖A‖², far
below the 1e-10 relative agreement asked of it on errors ≥ 1e-2; an exactly rank-k matrix is
reproduced to eps·cond(C)·cond(R)-ish (1e-10 leaves room for condition numbers ~1e4).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankwise.core.cur import cur
from rankwise.core.errors import DataError, ParameterError


def planted(m, n, s, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return ((u * s) @ v.T).astype(dtype)


def direct_error(a, res):
    a = a.toarray() if sp.issparse(a) else np.asarray(a, dtype=np.float64)
    c, u, r = (res.arrays[x].astype(np.float64) for x in "CUR")
    return np.linalg.norm(a - c @ u @ r) / np.linalg.norm(a)


@pytest.mark.parametrize("method", ["randomized", "exact"])
@pytest.mark.parametrize("shape", [(600, 300), (300, 600)])
def test_error_within_twice_optimal_on_decaying_spectrum(method, shape):
    k = 20
    s = 1.0 / (1.0 + np.arange(min(shape)))
    a = planted(*shape, s, seed=1)
    opt = np.linalg.norm(s[k:]) / np.linalg.norm(s)
    res = cur(a, k, rng=0, method=method)
    err = direct_error(a, res)
    assert err <= 2.0 * opt  # the target
    assert res.metrics["relative_frobenius_error"] == pytest.approx(err, rel=1e-10)
    # reference from the exact SVD (min(m, n) ≤ 500 → LAPACK): the planted optimum
    assert res.metrics["optimal_relative_error"] == pytest.approx(opt, rel=1e-10)
    assert res.metrics["error_ratio"] == pytest.approx(err / opt, rel=1e-9)


def test_outputs_are_slices_sorted_int64():
    a = planted(120, 80, 0.8 ** np.arange(80), seed=2)
    res = cur(a, 10, rng=0)
    rows, cols = res.arrays["rows"], res.arrays["cols"]
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert np.all(np.diff(rows) > 0) and np.all(np.diff(cols) > 0)
    assert np.array_equal(res.arrays["C"], a[:, cols])
    assert np.array_equal(res.arrays["R"], a[rows, :])
    assert res.arrays["U"].shape == (10, 10)
    assert res.metrics["rows"] == rows.tolist() and res.metrics["cols"] == cols.tolist()
    assert sorted(res.details["cols_pivot_order"]) == cols.tolist()


def test_u_is_pseudo_inverse_product():
    a = planted(100, 70, 0.9 ** np.arange(70), seed=3)
    res = cur(a, 8, rng=0)
    c, r = res.arrays["C"], res.arrays["R"]
    # well conditioned here (cond(C), cond(R) ≲ 1e3), so explicit pinv is an adequate reference
    assert res.metrics["condition_C"] < 1e4 and res.metrics["condition_R"] < 1e4
    ref = np.linalg.pinv(c) @ a @ np.linalg.pinv(r)
    assert np.allclose(res.arrays["U"], ref, rtol=0, atol=1e-8 * np.abs(ref).max())


@pytest.mark.parametrize("k", [5, 8])
def test_exact_low_rank_reproduced(k):
    # rank 5: with k = 5 CUR is exact; with k = 8, C and R are rank-deficient and the
    # minimum-norm solves must still reproduce A.
    a = planted(90, 60, np.linspace(3, 1, 5), seed=4)
    for method in ("randomized", "exact"):
        res = cur(a, k, rng=0, method=method)
        assert direct_error(a, res) < 1e-10
        assert res.metrics["relative_frobenius_error"] < 1e-10
        lo, hi = res.metrics["error_bounds"]
        assert lo <= res.metrics["relative_frobenius_error"] <= hi


def test_full_rank_is_exact_and_clamped():
    a = np.random.default_rng(5).standard_normal((12, 7))
    res = cur(a, 20, rng=0)
    assert res.arrays["cols"].tolist() == list(range(7))
    assert direct_error(a, res) < 1e-12
    assert any("clamp" in w for w in res.warnings) and res.rank["clamped"]


def test_sparse_input_not_densified():
    # 100000×50000 would be 40 GB dense; CUR only forms m×k and k×n slices.
    rng = np.random.default_rng(6)
    m, n, nnz = 100_000, 50_000, 200_000
    a = sp.csr_array((rng.standard_normal(nnz), (rng.integers(0, m, nnz), rng.integers(0, n, nnz))),
                     shape=(m, n))  # fmt: skip
    res = cur(a, 5, rng=0, compare_optimal=False)
    assert res.arrays["C"].shape == (m, 5) and res.arrays["R"].shape == (5, n)
    assert np.array_equal(res.arrays["C"], a[:, res.arrays["cols"]].toarray())
    assert 0 < res.metrics["relative_frobenius_error"] <= 1.0


def test_sparse_matches_dense():
    a = sp.random(300, 200, density=0.05, random_state=7, format="csr")
    a = a + sp.csr_array(planted(300, 200, np.linspace(5, 1, 4), seed=8))  # some structure
    rs = cur(sp.csr_array(a), 6, rng=1)
    rd = cur(a.toarray(), 6, rng=1)
    assert np.array_equal(rs.arrays["cols"], rd.arrays["cols"])
    assert np.array_equal(rs.arrays["rows"], rd.arrays["rows"])
    assert rs.metrics["relative_frobenius_error"] == pytest.approx(direct_error(a, rs), rel=1e-9)


def test_same_seed_same_bytes_and_float32_kept():
    a = planted(200, 150, 1.0 / (1.0 + np.arange(150)), seed=9, dtype=np.float32)
    r1 = cur(a, 12, rng=4)
    r2 = cur(a, 12, rng=4)
    for key in ("C", "U", "R", "rows", "cols"):
        assert r1.arrays[key].tobytes() == r2.arrays[key].tobytes()
    assert all(r1.arrays[x].dtype == np.float32 for x in "CUR")
    assert r1.metrics["error_ratio"] < 2.0


def test_extreme_magnitudes_scaled_exactly():
    a = planted(80, 60, 1.0 / (1.0 + np.arange(60)), seed=10)
    ref = cur(a, 8, rng=0)
    big = cur(a * 1e300, 8, rng=0)
    assert np.array_equal(big.arrays["cols"], ref.arrays["cols"])
    assert big.metrics["relative_frobenius_error"] == pytest.approx(
        ref.metrics["relative_frobenius_error"], rel=1e-10
    )
    assert np.isfinite(big.arrays["U"]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_is_data_error(bad):
    a = planted(30, 20, np.ones(5))
    a[2, 3] = bad
    with pytest.raises(DataError):
        cur(a, 2)


@pytest.mark.parametrize("shape", [(0, 5), (7,), (2, 3, 4)])
def test_bad_shapes(shape):
    with pytest.raises(DataError):
        cur(np.ones(shape), 1)


@pytest.mark.parametrize(
    "kw",
    [dict(rank=0), dict(rank=2.5), dict(rank=2, method="svd"), dict(rank=2, oversample=-1),
     dict(rank=2, power_iters=-1)],
)  # fmt: skip
def test_bad_parameters(kw):
    with pytest.raises(ParameterError):
        cur(np.ones((5, 4)), **kw)
