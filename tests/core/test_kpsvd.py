"""Kronecker-product SVD against independent truths: numpy's ``np.kron`` for planted sums,
an explicit block-loop rearrangement, LAPACK singular values.

Tolerances: the rearrangement is a permutation (exact), so a planted sum of r Kronecker
products has an exact rank-r R(A) and a backward-stable SVD reproduces it to a few eps·‖A‖
(1e-12 relative leaves a size factor of ~50 over eps64 = 2.2e-16); float32 paths to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankwise.core.errors import DataError, ParameterError
from rankwise.core.kpsvd import elbow_rank, kpsvd, kron_sum, rearrange
from rankwise.core.rank import RankRule


def planted(r, m1, n1, m2, n2, s=None, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    s = np.linspace(5.0, 1.0, r) if s is None else np.asarray(s, dtype=np.float64)
    fa = rng.standard_normal((r, m1, n1))
    fb = rng.standard_normal((r, m2, n2))
    x = sum(s[i] * np.kron(fa[i], fb[i]) for i in range(r))
    return x.astype(dtype)


def reconstruct(res):
    return kron_sum(res.arrays["S"].astype(np.float64), res.arrays["A"].astype(np.float64),
                    res.arrays["B"].astype(np.float64))  # fmt: skip


def rel(x, y):
    return np.linalg.norm(x - y) / np.linalg.norm(y)


def loop_rearrange(a, m1, n1):
    """R(A) by explicit block loops (row (i1, j1) = block flattened row-major)."""
    m2, n2 = a.shape[0] // m1, a.shape[1] // n1
    rows = []
    for i1 in range(m1):
        for j1 in range(n1):
            rows.append(a[i1 * m2 : (i1 + 1) * m2, j1 * n2 : (j1 + 1) * n2].ravel())
    return np.array(rows)


@pytest.mark.parametrize(
    "dims", [(3, 4, 5, 6, 3), (2, 2, 2, 7, 9), (1, 3, 5, 4, 2), (4, 1, 1, 8, 8)]
)
def test_exact_kronecker_sum_reproduced(dims):
    r, m1, n1, m2, n2 = dims
    r = min(r, m1 * n1, m2 * n2)
    x = planted(r, m1, n1, m2, n2, seed=1)
    res = kpsvd(x, (m1, n1), rule=RankRule("rank", r))
    assert res.arrays["S"].shape == (r,)
    assert res.arrays["A"].shape == (r, m1, n1) and res.arrays["B"].shape == (r, m2, n2)
    assert rel(reconstruct(res), x) < 1e-12
    assert res.metrics["relative_frobenius_error"] < 1e-12


def test_factors_unit_norm_orthonormal_and_signed():
    x = planted(3, 4, 5, 6, 3, seed=2)
    res = kpsvd(x, (4, 5), rule=RankRule("rank", 3))
    fa, fb, s = res.arrays["A"], res.arrays["B"], res.arrays["S"]
    va, vb = fa.reshape(3, -1), fb.reshape(3, -1)
    assert np.allclose(va @ va.T, np.eye(3), atol=1e-13)
    assert np.allclose(vb @ vb.T, np.eye(3), atol=1e-13)
    assert np.all(np.diff(s) <= 0)
    # sign convention: the largest-magnitude entry of every A_i is positive
    for i in range(3):
        flat = va[i]
        assert flat[np.argmax(np.abs(flat))] > 0


def test_rearrangement_matches_block_loops_and_kron_closed_form():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 15))
    assert np.array_equal(rearrange(x, 3, 5), loop_rearrange(x, 3, 5))
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((4, 3))
    # R(a ⊗ b) = vec(a) vec(b)ᵀ (row-major vec)
    assert np.allclose(rearrange(np.kron(a, b), 3, 5), np.outer(a.ravel(), b.ravel()), atol=1e-15)
    xs = sp.random(12, 15, density=0.3, random_state=4, format="csr")
    rs = rearrange(xs, 3, 5)
    assert sp.issparse(rs) and np.array_equal(rs.toarray(), loop_rearrange(xs.toarray(), 3, 5))


def test_singular_values_match_lapack_and_error_is_the_tail():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 20))
    s_ref = np.linalg.svd(loop_rearrange(x, 3, 4), compute_uv=False)
    res = kpsvd(x, (3, 4), rule=RankRule("rank", 4), method="exact")
    assert np.allclose(res.arrays["S"], s_ref[:4], rtol=0, atol=1e-12 * s_ref[0])
    direct = rel(reconstruct(res), x)
    tail = np.sqrt(np.sum(s_ref[4:] ** 2) / np.sum(s_ref**2))
    # the isometry makes the reported error that of the Kronecker sum (no product formed)
    assert res.metrics["relative_frobenius_error"] == pytest.approx(direct, rel=1e-10)
    assert res.metrics["relative_frobenius_error"] == pytest.approx(tail, rel=1e-10)


@pytest.mark.parametrize("method", ["exact", "randomized", "lanczos"])
def test_fixed_rank_paths_agree(method):
    x = planted(3, 6, 6, 8, 8, s=[4, 2, 1], seed=6)
    x += 1e-3 * np.random.default_rng(7).standard_normal(x.shape)
    res = kpsvd(x, (6, 6), rule=RankRule("rank", 3), method=method, rng=0)
    ref = kpsvd(x, (6, 6), rule=RankRule("rank", 3), method="exact")
    # σ₃ of R(A) is ~1·‖A₃‖‖B₃‖ ≈ 50 against noise values ≲ 1e-3·(6 + 8) ≈ 0.015: with a gap of
    # ~3000 the range finder's subspace error is far below 1e-8.
    assert np.allclose(res.arrays["S"], ref.arrays["S"], rtol=1e-8)
    assert rel(reconstruct(res), reconstruct(ref)) < 1e-7


def gap_case(seed=8):
    """r = 4 terms with weights 8…2 plus noise 1e-4·‖A‖-relative: a clear gap after 4."""
    x = planted(4, 5, 4, 6, 5, s=[8, 6, 4, 2], seed=seed)
    noise = np.random.default_rng(seed + 1).standard_normal(x.shape)
    return x + 1e-4 * np.linalg.norm(x) * noise / np.linalg.norm(noise)


@pytest.mark.parametrize(
    "kw",
    [dict(rule=RankRule("rank", 4)), dict(rule=RankRule("energy", 0.999)), dict(elbow=True),
     dict(rule=RankRule("tol", 1e-2))],
    ids=["rank", "energy", "elbow", "tol"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_rule_picks_planted_rank(kw, dtype):
    # energy: the 4th term holds ~ 4/120 = 3% of the energy, the noise 1e-8: 0.999 lands on 4.
    x = gap_case().astype(dtype)
    res = kpsvd(x, (5, 4), **kw)
    assert res.arrays["S"].dtype == dtype
    assert res.rank["value"] == 4
    by = {(row["rule"], row["threshold"]): row["rank"] for row in res.rank["by_rule"]}
    assert by[("energy", 0.999)] == 4
    elbow_rows = [row for row in res.rank["by_rule"] if row["rule"] == "elbow"]
    assert len(elbow_rows) == 1 and elbow_rows[0]["rank"] == 4
    assert elbow_rows[0]["given"] == bool(kw.get("elbow"))
    assert res.metrics["relative_frobenius_error"] == pytest.approx(1e-4, rel=0.2)


def test_elbow_reports_exact_metrics():
    x = gap_case()
    res = kpsvd(x, (5, 4), elbow=True)
    assert res.rank["rule"] == "elbow" and res.details["elbow"]["knee"]
    assert rel(reconstruct(res), x) == pytest.approx(res.metrics["relative_frobenius_error"],
                                                     rel=1e-8)  # fmt: skip
    assert len(res.metrics["singular_values"]) == 4


def test_elbow_rank_unit_cases():
    floor = 1e-13
    cliff = np.r_[3.0, 2.0, 1.0, np.full(9, 1e-16)]
    assert elbow_rank(cliff, floor_rel=floor)[0] == 3
    noisy = np.r_[10.0, 9.0, 8.0, 7.0, 1e-3 * (1 + 0.01 * np.arange(20)[::-1])]
    assert elbow_rank(noisy, floor_rel=floor)[0] == 4
    bent = np.r_[2.0 ** -np.arange(6), np.full(14, 2.0**-6)]  # geometric decay into a floor
    assert elbow_rank(bent, floor_rel=floor)[0] in (6, 7)
    flat = np.ones(10)  # no knee: keep everything
    k, info = elbow_rank(flat, floor_rel=floor)
    assert k == 10 and not info["knee"]
    assert elbow_rank(np.zeros(5), floor_rel=floor)[0] == 1


def test_sparse_matches_dense():
    xs = sp.random(24, 30, density=0.2, random_state=9, format="csr")
    rd = kpsvd(xs.toarray(), (4, 5), rule=RankRule("rank", 3), method="exact")
    rs = kpsvd(xs, (4, 5), rule=RankRule("rank", 3), method="lanczos", rng=0)
    assert np.allclose(rs.arrays["S"], rd.arrays["S"], rtol=1e-10)
    assert rel(reconstruct(rs), reconstruct(rd)) < 1e-8


def test_float32_kept_and_deterministic():
    x = planted(3, 8, 8, 16, 16, seed=10, dtype=np.float32)
    a = kpsvd(x, (8, 8), rule=RankRule("rank", 3), method="randomized", rng=3)
    b = kpsvd(x, (8, 8), rule=RankRule("rank", 3), method="randomized", rng=3)
    for key in ("S", "A", "B"):
        assert a.arrays[key].dtype == np.float32
        assert a.arrays[key].tobytes() == b.arrays[key].tobytes()
    assert rel(reconstruct(a), x.astype(np.float64)) < 1e-5


@pytest.mark.parametrize(
    "shape, block, words",
    [((12, 15), (5, 5), "12 rows are not divisible by m1 = 5"),
     ((12, 15), (3, 4), "15 columns are not divisible by n1 = 4"),
     ((12, 15), (0, 5), "positive integers"),
     ((12, 15), (2.5, 5), "positive integers"),
     ((12, 15), (3,), "positive integers")],
)  # fmt: skip
def test_block_mismatch_is_parameter_error(shape, block, words):
    with pytest.raises(ParameterError, match=words):
        kpsvd(np.ones(shape), block, rule=RankRule("rank", 1))


def test_rule_and_elbow_are_exclusive_and_one_is_needed():
    x = planted(2, 2, 2, 3, 3)
    with pytest.raises(ParameterError):
        kpsvd(x, (2, 2), rule=RankRule("rank", 1), elbow=True)
    with pytest.raises(ParameterError):
        kpsvd(x, (2, 2))
    with pytest.raises(ParameterError, match="whole Kronecker spectrum"):
        kpsvd(x, (2, 2), elbow=True, method="randomized")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_is_data_error(bad):
    x = planted(2, 2, 2, 3, 3)
    x[1, 1] = bad
    with pytest.raises(DataError):
        kpsvd(x, (2, 2), rule=RankRule("rank", 1))


def test_rank_clamped_with_warning():
    x = planted(2, 2, 2, 3, 3)
    res = kpsvd(x, (2, 2), rule=RankRule("rank", 50))
    assert res.rank["value"] == 4 and any("clamp" in w for w in res.warnings)
