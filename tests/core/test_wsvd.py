"""Weighted low-rank approximation against independent truths: explicit scaling + numpy's
SVD, a brute-force minimisation of the factor parametrisation (scipy.optimize), the plain SVD
for unit weights, and planted models.

Tolerances: closed-form paths are LAPACK on a scaled copy, so they agree with numpy to
~1e-12 relative (eps·cond of the weights). BFGS on the factor parametrisation stops at a
gradient norm of ~1e-10, so its objective is within ~1e-8 relative of the optimum. EM
converges linearly; the tolerances below are what its stopping tolerance guarantees on
these well-conditioned weights (the figures are stated next to each check).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.optimize import minimize

from rankwise.core.errors import DataError, ParameterError
from rankwise.core.rank import RankRule
from rankwise.core.svd import truncated_svd
from rankwise.core.wsvd import elementwise_weighted_svd, weighted_svd


def lowrank(m, n, k, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    return a + noise * rng.standard_normal((m, n))


def product(res):
    return (res.arrays["U"].astype(np.float64) * res.arrays["S"]) @ res.arrays["Vt"].astype(
        np.float64
    )


def wobj(a, l_, w):
    return float(np.sum(w * (a - l_) ** 2))


def brute_force(a, w, k, starts=6, seed=0):
    """min over L = X Yᵀ of Σ w (a − L)², BFGS from several random starts."""
    m, n = a.shape
    rng = np.random.default_rng(seed)

    def f(z):
        x, y = z[: m * k].reshape(m, k), z[m * k :].reshape(n, k)
        r = w * (x @ y.T - a)
        return float(np.sum(r * (x @ y.T - a))), np.concatenate(
            [(2 * r @ y).ravel(), (2 * r.T @ x).ravel()]
        )

    best = np.inf
    for _ in range(starts):
        z0 = rng.standard_normal((m + n) * k)
        out = minimize(f, z0, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
        best = min(best, out.fun)
    return best


# --- closed form: row / column weights --------------------------------------------------


def test_closed_form_matches_explicit_scaling():
    rng = np.random.default_rng(1)
    a = lowrank(50, 30, 4, seed=1, noise=0.2)
    r, c = rng.uniform(0.2, 4, 50), rng.uniform(0.5, 2, 30)
    res = weighted_svd(a, RankRule("rank", 4), row_weights=r, col_weights=c, method="exact")
    u, s, vt = np.linalg.svd(np.sqrt(r)[:, None] * a * np.sqrt(c), full_matrices=False)
    assert np.allclose(res.arrays["S"], s[:4], rtol=1e-12)
    ref = (u[:, :4] / np.sqrt(r)[:, None] * s[:4]) @ (vt[:4] / np.sqrt(c))
    assert np.allclose(product(res), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    # weighted orthonormality of the factors
    uu, vv = res.arrays["U"], res.arrays["Vt"]
    assert np.allclose(uu.T @ (r[:, None] * uu), np.eye(4), atol=1e-12)
    assert np.allclose((vv * c) @ vv.T, np.eye(4), atol=1e-12)
    # metrics: weighted error certified by the SVD, unweighted from a direct residual
    w = np.outer(r, c)
    l_ = product(res)
    assert res.metrics["relative_frobenius_error"] == pytest.approx(
        np.sqrt(wobj(a, l_, w) / wobj(a, 0, w)), rel=1e-10
    )
    assert res.metrics["unweighted_relative_error"] == pytest.approx(
        np.linalg.norm(a - l_) / np.linalg.norm(a), rel=1e-12
    )


def test_closed_form_is_the_brute_force_optimum():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((7, 5))
    r, c = rng.uniform(0.3, 3, 7), rng.uniform(0.3, 3, 5)
    w = np.outer(r, c)
    res = weighted_svd(a, RankRule("rank", 2), row_weights=r, col_weights=c)
    closed = wobj(a, product(res), w)
    best = brute_force(a, w, 2)
    assert closed <= best * (1 + 1e-9)  # nothing beats the closed form
    assert best <= closed * (1 + 1e-6)  # and BFGS finds the same optimum


def test_unit_weights_are_plain_svd_bytes():
    a = lowrank(40, 25, 3, seed=3, noise=0.1)
    res = weighted_svd(a, RankRule("rank", 3), row_weights=np.ones(40), col_weights=np.ones(25))
    ref = truncated_svd(a, RankRule("rank", 3))
    for key in ("U", "S", "Vt"):
        assert res.arrays[key].tobytes() == ref.arrays[key].tobytes()


def test_downweighted_corrupt_rows_recover_the_clean_subspace():
    # Planted: rank-2 signal; 10% of the rows carry large noise. With those rows weighted
    # 1e-8 the weighted SVD finds the signal's row space; the plain SVD does not.
    rng = np.random.default_rng(4)
    m, n = 200, 40
    v_true = np.linalg.qr(rng.standard_normal((n, 2)))[0]
    a = rng.standard_normal((m, 2)) @ v_true.T
    bad = rng.choice(m, 20, replace=False)
    a[bad] += 30 * rng.standard_normal((20, n))
    r = np.ones(m)
    r[bad] = 1e-8
    res = weighted_svd(a, RankRule("rank", 2), row_weights=r)
    plain = truncated_svd(a, RankRule("rank", 2))
    # sin θ ≤ ‖noise‖·√1e-8 / σ₂(signal) ≈ 30·√(20·40)·1e-4 / √200 ≈ 6e-3
    assert np.sin(np.max(sla.subspace_angles(res.arrays["Vt"].T, v_true))) < 1e-2
    assert np.sin(np.max(sla.subspace_angles(plain.Vt.T, v_true))) > 0.5


def test_rank_rule_applies_to_weighted_spectrum():
    a = lowrank(60, 30, 3, seed=5, noise=1e-6)
    res = weighted_svd(a, RankRule("energy", 0.999), row_weights=np.linspace(1, 2, 60))
    assert res.rank["value"] == 3 and res.rank["rule"] == "energy"


def test_sparse_matches_dense_and_float32_kept():
    a = sp.random(80, 60, density=0.1, random_state=6, format="csr")
    r, c = np.linspace(0.5, 2, 80), np.linspace(1, 3, 60)
    rs = weighted_svd(a, RankRule("rank", 3), row_weights=r, col_weights=c, method="exact")
    rd = weighted_svd(a.toarray(), RankRule("rank", 3), row_weights=r, col_weights=c,
                      method="exact")  # fmt: skip
    assert np.allclose(product(rs), product(rd), atol=1e-12)
    r32 = weighted_svd(a.toarray().astype(np.float32), RankRule("rank", 3), row_weights=r)
    assert all(x.dtype == np.float32 for x in r32.arrays.values())


@pytest.mark.parametrize(
    "kw, words",
    [(dict(row_weights=np.r_[0.0, np.ones(9)]), "positive"),
     (dict(row_weights=np.r_[-1.0, np.ones(9)]), "positive"),
     (dict(col_weights=np.r_[np.nan, np.ones(5)]), "non-finite"),
     (dict(col_weights=np.r_[np.inf, np.ones(5)]), "non-finite"),
     (dict(row_weights=np.ones(9)), r"\(9,\).*\(10, 6\)"),
     (dict(col_weights=np.ones((6, 1))), r"\(6, 1\).*\(10, 6\)")],
)  # fmt: skip
def test_bad_weights_are_data_errors(kw, words):
    with pytest.raises(DataError, match=words):
        weighted_svd(np.ones((10, 6)), RankRule("rank", 1), **kw)


def test_weights_beyond_float32_range_refused():
    a = np.ones((10, 6), dtype=np.float32)
    with pytest.raises(DataError, match="rescale"):
        weighted_svd(a, RankRule("rank", 1), row_weights=np.r_[1e-90, np.ones(9)])


def test_center_refused():
    with pytest.raises(ParameterError):
        weighted_svd(np.ones((10, 6)), RankRule("rank", 1), center=True)


# --- elementwise weights (EM) -----------------------------------------------------------


@pytest.mark.parametrize("m_step", ["exact", "subspace"])
def test_em_objective_is_monotone(m_step):
    rng = np.random.default_rng(7)
    a = lowrank(40, 30, 3, seed=7, noise=0.3)
    w = rng.uniform(0, 5, a.shape)
    w[rng.uniform(size=a.shape) < 0.2] = 0
    res = elementwise_weighted_svd(a, w, 3, m_step=m_step, tol=1e-10, max_iter=300)
    obj = np.array([h["objective"] for h in res.history])
    assert len(obj) > 5
    # each step can only lower the majoriser; rounding of f is ~1e-15 relative
    assert np.all(np.diff(obj) <= 1e-12 * obj[0])
    assert res.metrics["objective"] == pytest.approx(wobj(a, product(res), w / w.max()),
                                                     rel=1e-10)  # fmt: skip


def test_em_unit_weights_is_plain_svd():
    a = lowrank(30, 20, 2, seed=8, noise=0.1)
    res = elementwise_weighted_svd(a, np.ones(a.shape), 2)
    ref = truncated_svd(a, RankRule("rank", 2), method="exact")
    assert res.details["iterations"] <= 2  # X_t = A: the first sweep is the answer
    assert np.allclose(product(res), (ref.U * ref.S) @ ref.Vt, atol=1e-12)


def test_em_rank_one_weights_reach_the_closed_form():
    # W = r cᵀ is the closed-form problem; the EM fixed point must be its optimum. Weights
    # within a factor 4 make EM contract by ≲ 0.75 per sweep: tol 1e-14 → ~1e-7 in L.
    rng = np.random.default_rng(9)
    a = lowrank(30, 20, 2, seed=9, noise=0.2)
    r, c = rng.uniform(0.5, 1, 30), rng.uniform(0.5, 1, 20)
    res = elementwise_weighted_svd(a, np.outer(r, c), 2, tol=1e-14, max_iter=3000)
    closed = weighted_svd(a, RankRule("rank", 2), row_weights=r, col_weights=c)
    w = np.outer(r, c)
    assert wobj(a, product(res), w) == pytest.approx(wobj(a, product(closed), w), rel=1e-9)
    assert np.allclose(product(res), product(closed), atol=1e-5)


def test_em_matches_brute_force_on_small_data():
    rng = np.random.default_rng(10)
    a = rng.standard_normal((6, 5))
    w = rng.uniform(0.5, 1.0, a.shape)  # mild weights: a single basin in practice
    res = elementwise_weighted_svd(a, w, 1, tol=1e-15, max_iter=5000)
    em = wobj(a, product(res), w)
    best = brute_force(a, w, 1)
    assert em <= best * (1 + 1e-7)
    assert best <= em * (1 + 1e-7)


@pytest.mark.parametrize("m_step", ["exact", "subspace"])
def test_em_recovers_planted_low_rank_with_ignored_entries(m_step):
    rng = np.random.default_rng(11)
    a = lowrank(60, 40, 3, seed=11)
    w = rng.uniform(0.1, 1.0, a.shape)
    hidden = rng.uniform(size=a.shape) < 0.3
    w[hidden] = 0
    a_in = a.copy()
    a_in[hidden] = np.nan  # NaN is allowed where the weight is zero
    res = elementwise_weighted_svd(a_in, w, 3, m_step=m_step, max_iter=3000)
    assert res.converged and "rounding" in res.stop_reason
    l_ = product(res)
    # held-out entries: the rank-3 fit is unique here, so they are recovered too
    assert np.linalg.norm((l_ - a)[hidden]) / np.linalg.norm(a[hidden]) < 1e-8
    assert res.metrics["ignored_entries"] == int(hidden.sum())


def test_em_callback_stops_and_resume_continues():
    rng = np.random.default_rng(12)
    a = lowrank(30, 25, 2, seed=12, noise=0.2)
    w = rng.uniform(0.05, 1, a.shape)
    saved = {}

    def checkpoint(ev):
        saved["factors"] = ev.extras["factors"]
        return ev.iteration == 5

    part = elementwise_weighted_svd(a, w, 2, tol=0, max_iter=100, callback=checkpoint)
    assert not part.converged and part.stop_reason == "stopped by callback"
    assert part.details["iterations"] == 5
    assert all("factors" not in h for h in part.history)
    init = saved["factors"]
    rest = elementwise_weighted_svd(a, w, 2, tol=0, max_iter=5, init=init)
    full = elementwise_weighted_svd(a, w, 2, tol=0, max_iter=10)
    assert rest.metrics["objective"] == pytest.approx(full.metrics["objective"], rel=1e-10)


def test_em_random_init_deterministic_and_float32():
    rng = np.random.default_rng(13)
    a = lowrank(30, 20, 2, seed=13, noise=0.1).astype(np.float32)
    w = rng.uniform(0, 1, a.shape)
    r1 = elementwise_weighted_svd(a, w, 2, init="random", rng=5, max_iter=50)
    r2 = elementwise_weighted_svd(a, w, 2, init="random", rng=5, max_iter=50)
    for key in ("U", "S", "Vt"):
        assert r1.arrays[key].dtype == np.float32
        assert r1.arrays[key].tobytes() == r2.arrays[key].tobytes()


@pytest.mark.parametrize(
    "make, words",
    [(lambda a: (a, -np.ones(a.shape)), "≥ 0"),
     (lambda a: (a, np.zeros(a.shape)), "every weight is zero"),
     (lambda a: (a, np.ones((3, 3))), r"\(3, 3\).*\(8, 6\)"),
     (lambda a: (a, np.where(np.eye(8, 6) > 0, np.nan, 1.0)), "non-finite"),
     (lambda a: (np.where(np.eye(8, 6) > 0, np.nan, a), np.ones(a.shape)), "NaN"),
     (lambda a: (np.where(np.eye(8, 6) > 0, np.inf, a), np.ones(a.shape)), "infinite")],
)  # fmt: skip
def test_em_bad_inputs(make, words):
    a, w = make(np.ones((8, 6)))
    with pytest.raises(DataError, match=words):
        elementwise_weighted_svd(a, w, 1)


def test_em_rank_clamped_and_bad_rank():
    a = lowrank(8, 5, 2, seed=14)
    res = elementwise_weighted_svd(a, np.ones(a.shape), 9)
    assert res.arrays["S"].shape == (5,) and any("clamp" in x for x in res.warnings)
    with pytest.raises(ParameterError):
        elementwise_weighted_svd(a, np.ones(a.shape), 0)
