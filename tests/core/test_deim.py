"""DEIM / Q-DEIM interpolation indices (rankwise.core.deim).

Truths: the error constant against its definition ‖(PᵀV)⁻¹‖₂ computed here with an explicit
inverse (agreement to 1e-10: both are computed from a well-conditioned N×N matrix), the
interpolation error bound ‖f − V(PᵀV)⁻¹Pᵀf‖ ≤ ‖(PᵀV)⁻¹‖₂‖(I − VVᵀ)f‖ on random f (exact
inequality, 1e-12 slack for rounding), a small DEIM case worked by hand, and Weyl/interlacing
for oversampling (adding rows cannot lower σ_min).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from rankwise.core.deim import deim, oversample
from rankwise.core.errors import DataError, ParameterError


def orthonormal(n, k, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, k)))[0]


@pytest.mark.parametrize("method", ["qdeim", "deim"])
def test_indices_make_ptv_nonsingular_and_constant_matches_definition(method):
    v = orthonormal(400, 12)
    r = deim(v, method=method)
    idx = r.arrays["indices"]
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 12
    pv = v[idx]
    inv = np.linalg.inv(pv)
    const = np.linalg.norm(inv, 2)
    assert r.metrics["error_constant"] == pytest.approx(const, rel=1e-10)
    assert r.metrics["error_constant"] <= r.metrics["error_constant_bound"]
    assert r.metrics["bound_applies"]
    f = np.random.default_rng(1).standard_normal((400, 20))
    approx = v @ (inv @ f[idx])
    lhs = np.linalg.norm(f - approx, axis=0)
    rhs = const * np.linalg.norm(f - v @ (v.T @ f), axis=0)
    assert np.all(lhs <= rhs * (1 + 1e-12))


def test_qdeim_is_the_pivoted_qr_of_vt():
    v = orthonormal(300, 8, seed=2)
    _, _, piv = sla.qr(v.T, pivoting=True)  # the definition, computed independently
    np.testing.assert_array_equal(deim(v).arrays["indices"], piv[:8])


def test_classic_deim_hand_checked_case():
    # v1 = (0.2, 0.9, 0.4): p1 = argmax|v1| = 1. v2 = (1.0, 0.3, 0.8): interpolating it at
    # row 1 by v1 gives c = 0.3/0.9 = 1/3, residual v2 − v1/3 = (0.9333, 0, 0.6667): p2 = 0.
    # v3 = (0.1, 0.2, 0.7): [[0.9, 0.3], [0.2, 1.0]] c = (0.2, 0.1) gives c = (17/84, 5/84);
    # the residual is (0, 0, 0.7 − 0.4·17/84 − 0.8·5/84) = (0, 0, 4/7): p3 = 2.
    v = np.array([[0.2, 1.0, 0.1], [0.9, 0.3, 0.2], [0.4, 0.8, 0.7]])
    r = deim(v, method="deim")
    np.testing.assert_array_equal(r.arrays["indices"], [1, 0, 2])
    # two columns only: the first two indices
    np.testing.assert_array_equal(deim(v[:, :2], method="deim").arrays["indices"], [1, 0])


def test_oversampling_raises_sigma_min_and_respects_the_bound():
    v = orthonormal(500, 10, seed=3)
    base = deim(v)
    more = deim(v, points=25)
    idx = more.arrays["indices"]
    assert len(idx) == 25 and len(set(idx.tolist())) == 25
    np.testing.assert_array_equal(idx[:10], base.arrays["indices"])
    assert more.metrics["sigma_min"] >= base.metrics["sigma_min"] * (1 - 1e-12)
    assert more.metrics["error_constant"] == pytest.approx(1 / sla.svdvals(v[idx]).min(), rel=1e-10)
    # each added row raises λ_min(PᵀV Gram) by at least the GappyPOD+E lower bound
    chosen = list(base.arrays["indices"])
    for i in idx[10:15]:
        lam, z = sla.eigh(v[chosen].T @ v[chosen])
        g = lam[1] - lam[0]
        rr = z.T @ v[i]
        t = g + rr @ rr
        bound = lam[0] + 0.5 * (t - np.sqrt(t * t - 4 * g * rr[0] ** 2))
        chosen.append(int(i))
        after = sla.eigvalsh(v[chosen].T @ v[chosen])[0]
        assert after >= bound * (1 - 1e-10)
    np.testing.assert_array_equal(oversample(v, base.arrays["indices"], 15), idx[:15])


def test_float32_and_bad_inputs():
    v = orthonormal(100, 5).astype(np.float32)
    assert deim(v).arrays["indices"].dtype == np.int64
    with pytest.raises(ParameterError):
        deim(v, points=4)
    with pytest.raises(ParameterError):
        deim(v, points=101)
    with pytest.raises(ParameterError):
        deim(v, method="greedy")
    bad = v.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        deim(bad)
    with pytest.raises(DataError, match="rank"):
        deim(np.ones((10, 2)))
    with pytest.raises(DataError):
        deim(np.ones((2, 3)))
    with pytest.raises(DataError):
        deim(np.ones(5))
