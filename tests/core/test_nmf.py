"""NMF and semi-NMF against independent truths: planted nonnegative factorisations, the
first-order (KKT) conditions computed here from the returned factors, and scikit-learn.

Tolerances and where they come from:

* Exact planted data: HALS converges linearly to the planted factorisation and stops at the
  rounding floor (relative error ≤ 10·(k+2)·eps ≈ 1.6e-14 for k = 5); 1e-6 leaves room for a
  stop on the relative-change test instead. MU converges sublinearly: 1e-2 after 2000 sweeps.
* Monotone objectives: every sweep decreases the objective in exact arithmetic. The tracked
  Frobenius objective is formed from Gram products in float64 and carries a rounding error of
  about (k+2)·eps·‖X‖² ≈ 2e-15·‖X‖² (k ≤ 6); the KL objective sums m·n terms each exact to a
  few eps. The slack allowed per sweep is 1e-12·‖X‖² (Frobenius) and 1e-12·Σx (KL): a
  thousand times the rounding, a billionth of the typical per-sweep decrease.
* Masked NMF: the issue's target, held-out relative error ≤ 1e-3 with 30% missing.
* float32: single precision carries ~1e-7 relative rounding per entry; errors are compared at
  1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankwise.core.errors import BudgetError, DataError, ParameterError
from rankwise.core.nmf import estimate_bytes, factor_match, nmf, semi_nmf


def planted(m, n, k, *, zero=0.5, seed=0):
    """W (m×k), H (k×n) uniform on [0, 1) with a fraction ``zero`` of exact zeros: zeros make
    the factorisation essentially unique (and HALS fast); ``zero=0`` is the hard case."""
    rng = np.random.default_rng(seed)
    w = rng.random((m, k)) * (rng.random((m, k)) >= zero)
    h = rng.random((k, n)) * (rng.random((k, n)) >= zero)
    return w, h


def rel_err(x, res):
    x = x.toarray() if sp.issparse(x) else np.asarray(x, np.float64)
    r = x - res.arrays["W"].astype(np.float64) @ res.arrays["H"].astype(np.float64)
    return np.linalg.norm(r) / np.linalg.norm(x)


def objectives(res):
    """The objective before the first sweep, then after every sweep."""
    first = res.details["restarts"][res.details["kept_restart"]]["initial_objective"]
    return np.array([first] + [h["objective"] for h in res.history])


def assert_monotone(obj, slack):
    steps = np.diff(obj)
    assert np.all(steps <= slack), (steps.max(), slack)


def projected_gradient_violation(f, g):
    """max |projected gradient| of a nonnegative factor, relative to nothing (absolute)."""
    at_zero = f <= 1e-8 * f.max(axis=0)
    return np.max(np.where(at_zero, np.maximum(-g, 0), np.abs(g)))


# --- planted recovery -----------------------------------------------------------------------


def test_hals_recovers_planted_exactly():
    w, h = planted(120, 80, 5, seed=1)
    x = w @ h
    res = nmf(x, 5, tol=1e-12, max_iter=2000, rng=0)
    assert res.method == "hals"
    assert rel_err(x, res) <= 1e-6
    reported = res.metrics["relative_frobenius_error"]
    assert reported == pytest.approx(rel_err(x, res), rel=1e-6, abs=1e-15)
    assert res.converged
    # planted components found: every column of W matches a planted one
    assert factor_match(res.arrays["W"], w) > 1 - 1e-6


def test_mu_frobenius_approaches_planted():
    w, h = planted(120, 80, 5, seed=1)
    x = w @ h
    res = nmf(x, 5, solver="mu", tol=0, max_iter=2000, rng=0)
    assert res.method == "mu"
    assert rel_err(x, res) <= 1e-2


def test_sparse_input_is_never_densified(monkeypatch):
    w, h = planted(150, 100, 4, zero=0.7, seed=2)
    x = sp.csr_array(w @ h)
    assert x.nnz < 0.5 * 150 * 100  # genuinely sparse
    for cls in (sp.csr_array, sp.csr_matrix, sp.csc_array, sp.coo_array, sp.csc_matrix):
        monkeypatch.setattr(cls, "toarray", lambda *a, **k: pytest.fail("densified"))
        monkeypatch.setattr(cls, "todense", lambda *a, **k: pytest.fail("densified"))
    res = nmf(x, 4, tol=1e-12, max_iter=2000, rng=0)
    kl = nmf(x, 4, loss="kl", tol=1e-6, max_iter=100, rng=0)
    semi = semi_nmf(x, 4, tol=1e-8, max_iter=200, rng=0)
    monkeypatch.undo()
    assert rel_err(x, res) <= 1e-6
    assert kl.method == "mu" and np.isfinite(kl.metrics["kl_divergence"])
    assert rel_err(x, semi) == pytest.approx(semi.metrics["relative_frobenius_error"], rel=1e-6)


def test_sparse_and_dense_mu_agree():
    # MU has no size-dependent choices (unlike HALS's repeated passes and the SVD of NNDSVD):
    # from the same random init, the sparse products give the dense run's factors to
    # rounding (Frobenius and KL).
    rng = np.random.default_rng(3)
    a = sp.random_array((90, 70), density=0.1, rng=rng, format="csr")
    a.data[:20] = 0.0  # explicitly stored zeros are data (x log x = 0), not missing
    for loss in ("frobenius", "kl"):
        kw = {"solver": "mu", "loss": loss, "init": "random", "tol": 0, "max_iter": 40}
        rs = nmf(a, 5, rng=1, **kw)
        rd = nmf(a.toarray(), 5, rng=1, **kw)
        np.testing.assert_allclose(rs.arrays["W"], rd.arrays["W"], rtol=1e-8, atol=1e-10)
        assert rs.metrics["objective"] == pytest.approx(rd.metrics["objective"], rel=1e-10)


def test_semi_nmf_recovers_planted_mixed_sign():
    rng = np.random.default_rng(4)
    f = rng.standard_normal((100, 4))
    g = rng.random((150, 4)) * (rng.random((150, 4)) > 0.5)
    x = f @ g.T
    res = semi_nmf(x, 4, tol=1e-12, max_iter=3000, rng=0)
    assert res.method == "semi-nmf"
    assert rel_err(x, res) <= 1e-6
    assert res.metrics["min_H"] >= 0 and res.metrics["min_W"] < 0  # free sign on W
    assert res.arrays["W"].shape == (100, 4) and res.arrays["H"].shape == (4, 150)


# --- monotone objectives ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"solver": "hals"},
        {"solver": "hals", "l1_h": 0.5, "l2_w": 0.1},
        {"solver": "mu"},
        {"solver": "mu", "l1_w": 0.2, "l2_h": 0.3},
    ],
    ids=["hals", "hals-reg", "mu", "mu-reg"],
)
def test_frobenius_objective_is_monotone(kw):
    w, h = planted(80, 60, 5, zero=0.0, seed=5)
    x = w @ h + 0.05 * np.random.default_rng(6).random((80, 60))
    res = nmf(x, 6, tol=0, max_iter=150, rng=0, **kw)
    obj = objectives(res)
    assert_monotone(obj, 1e-12 * np.sum(x**2))
    assert obj[-1] < obj[0]
    # the tracked value agrees with the exact objective of the returned factors (which,
    # with penalties, are not rescaled)
    assert res.metrics["objective"] == pytest.approx(obj[-1], rel=1e-9)


@pytest.mark.parametrize("kw", [{}, {"l1_w": 0.1, "l2_h": 0.2}], ids=["plain", "reg"])
def test_kl_objective_is_monotone(kw):
    rng = np.random.default_rng(7)
    x = rng.poisson(3.0 * rng.random((70, 5)) @ rng.random((5, 50))).astype(float)
    res = nmf(x, 5, loss="kl", tol=0, max_iter=150, rng=0, **kw)
    obj = objectives(res)
    assert_monotone(obj, 1e-12 * x.sum())
    # independent generalized KL of the returned factors
    y = res.arrays["W"] @ res.arrays["H"]
    pos = x > 0
    kl = np.sum(x[pos] * np.log(x[pos] / y[pos])) - x.sum() + y.sum()
    assert res.metrics["kl_divergence"] == pytest.approx(kl, rel=1e-9)


def test_semi_nmf_objective_is_monotone():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((60, 6)) @ rng.random((6, 90)) + 0.1 * rng.standard_normal((60, 90))
    res = semi_nmf(x, 6, tol=0, max_iter=200, rng=0)
    obj = objectives(res)
    assert_monotone(obj, 1e-12 * np.sum(x**2))
    assert obj[-1] < 0.5 * obj[0]


def test_masked_objective_is_monotone():
    w, h = planted(70, 50, 4, zero=0.0, seed=9)
    x = w @ h + 0.05 * np.random.default_rng(10).random((70, 50))
    x[np.random.default_rng(11).random(x.shape) < 0.3] = np.nan
    for kw in ({"solver": "hals"}, {"solver": "mu"}, {"loss": "kl"}):
        res = nmf(x, 4, tol=0, max_iter=100, rng=0, **kw)
        slack = 1e-12 * (np.nansum(x) if "loss" in kw else np.nansum(x**2))
        assert_monotone(objectives(res), slack)


# --- KKT and nonnegativity -------------------------------------------------------------------


def test_kkt_conditions_hold_at_convergence():
    # Noisy data: the optimum has active bounds (zeros with positive gradient) and interior
    # entries with zero gradient. Gradients computed here independently of the solver.
    w0, h0 = planted(100, 70, 4, seed=12)
    x = w0 @ h0 + 0.02 * np.random.default_rng(13).random((100, 70))
    res = nmf(x, 4, tol=1e-12, max_iter=3000, rng=0)
    w, h = res.arrays["W"], res.arrays["H"]
    assert w.min() >= 0 and h.min() >= 0
    assert res.metrics["min_W"] == w.min() and res.metrics["min_H"] == h.min()
    gw = (w @ h - x) @ h.T
    gh = (w.T @ (w @ h - x)).T
    # relative to the size of the data term of each gradient
    vw = projected_gradient_violation(w, gw) / np.abs(x @ h.T).max()
    vh = projected_gradient_violation(h.T, gh) / np.abs(x.T @ w).max()
    assert max(vw, vh) <= 1e-6  # the converged HALS point satisfies KKT to ~sqrt(tol)
    assert res.metrics["kkt"] == pytest.approx(max(vw, vh), rel=1e-3, abs=1e-12)
    assert np.count_nonzero(w == 0) > 0  # real zeros: the bound is active somewhere


def test_kkt_reported_for_every_solver():
    rng = np.random.default_rng(14)
    x = rng.random((40, 30))
    for kw in ({"solver": "hals"}, {"solver": "mu"}, {"loss": "kl"}):
        res = nmf(x, 3, tol=1e-8, max_iter=500, rng=0, **kw)
        assert 0 <= res.metrics["kkt"] < 0.05
        assert res.metrics["min_W"] >= 0 and res.metrics["min_H"] >= 0
    res = semi_nmf(x - 0.5, 3, tol=1e-10, max_iter=1000, rng=0)
    assert res.metrics["kkt"] < 0.05 and res.metrics["min_H"] >= 0


# --- masked NMF -----------------------------------------------------------------------------


@pytest.mark.parametrize("zero", [0.0, 0.3], ids=["dense-factors", "sparse-factors"])
def test_masked_nmf_recovers_missing_entries(zero):
    # The target: planted nonnegative rank 5, 30% missing, noise-free, held-out
    # relative error ≤ 1e-3. Dense uniform factors are the slowly converging case.
    w, h = planted(200, 150, 5, zero=zero, seed=15)
    x = w @ h
    missing = np.random.default_rng(16).random(x.shape) < 0.3
    xm = x.copy()
    xm[missing] = np.nan
    res = nmf(xm, 5, tol=0 if zero == 0 else 1e-12, max_iter=1500, rng=0)
    y = res.arrays["W"] @ res.arrays["H"]
    held_out = np.linalg.norm((y - x)[missing]) / np.linalg.norm(x[missing])
    assert held_out <= 1e-3
    observed = np.linalg.norm((y - x)[~missing]) / np.linalg.norm(x[~missing])
    assert res.metrics["relative_frobenius_error"] == pytest.approx(observed, rel=1e-6, abs=1e-14)
    assert res.details["masked"] and res.details["missing"] == int(missing.sum())


def test_masked_empty_row_and_column():
    w, h = planted(30, 20, 3, zero=0.0, seed=17)
    x = w @ h
    x[4] = np.nan
    x[:, 7] = np.nan
    res = nmf(x, 3, tol=1e-8, max_iter=300, rng=0)
    assert np.all(res.arrays["W"][4] == 0) and np.all(res.arrays["H"][:, 7] == 0)
    assert any("no observed entry" in wn for wn in res.warnings)
    assert res.details["empty_rows"] == 1 and res.details["empty_cols"] == 1


# --- determinism, restarts, conventions -------------------------------------------------


@pytest.mark.parametrize("init", ["random", "nndsvdar", "nndsvda"])
def test_same_seed_same_bytes(init):
    rng = np.random.default_rng(18)
    x = rng.random((60, 40))
    xs = sp.random_array((300, 200), density=0.05, rng=rng, format="csr")
    for a in (x, xs):
        r1 = nmf(a, 4, init=init, n_init=2, max_iter=30, rng=123)
        r2 = nmf(a, 4, init=init, n_init=2, max_iter=30, rng=np.random.default_rng(123))
        for key in ("W", "H"):
            assert r1.arrays[key].tobytes() == r2.arrays[key].tobytes()
    r3 = nmf(x, 4, init="random", max_iter=30, rng=124)
    r4 = nmf(x, 4, init="random", max_iter=30, rng=123)
    assert r3.arrays["W"].tobytes() != r4.arrays["W"].tobytes()
    s1 = semi_nmf(x - 0.5, 3, init="random", max_iter=20, rng=5)
    s2 = semi_nmf(x - 0.5, 3, init="random", max_iter=20, rng=5)
    assert s1.arrays["W"].tobytes() == s2.arrays["W"].tobytes()


def test_n_init_keeps_best_and_reports_factor_match():
    w, h = planted(100, 80, 4, seed=19)
    x = w @ h + 0.01 * np.random.default_rng(20).random((100, 80))
    res = nmf(x, 4, n_init=4, tol=1e-9, max_iter=500, rng=0)
    objs = res.metrics["restart_objectives"]
    assert len(objs) == 4
    kept = res.details["kept_restart"]
    assert objs[kept] == min(objs)
    assert res.metrics["objective"] == pytest.approx(min(objs), rel=1e-9)
    assert [r["init"] for r in res.details["restarts"]] == ["nndsvda"] + ["random"] * 3
    # identifiable planted model: the two best restarts find the same components
    assert 0.99 <= res.metrics["factor_match"] <= 1 + 1e-12
    single = nmf(x, 4, n_init=1, rng=0)
    assert "factor_match" not in single.metrics


def test_factor_match_finds_the_permutation():
    rng = np.random.default_rng(21)
    a = rng.random((50, 5))
    assert factor_match(a, 3.0 * a[:, [3, 1, 4, 0, 2]]) == pytest.approx(1.0)
    assert factor_match(a, rng.random((50, 5))) < 0.99


def test_normalisation_and_order_convention():
    rng = np.random.default_rng(22)
    x = rng.random((50, 40))
    res = nmf(x, 5, max_iter=50, rng=0)
    w, h = res.arrays["W"], res.arrays["H"]
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, rtol=1e-12)
    strength = np.linalg.norm(w, axis=0) * np.linalg.norm(h, axis=1)
    assert np.all(np.diff(strength) <= 1e-12 * strength[0])
    # with penalties the scale belongs to the optimum: not rescaled, still ordered
    reg = nmf(x, 5, l1_h=0.1, max_iter=50, rng=0)
    s = np.linalg.norm(reg.arrays["W"], axis=0) * np.linalg.norm(reg.arrays["H"], axis=1)
    assert np.all(np.diff(s) <= 1e-12 * s[0])


def test_l1_makes_h_sparser():
    # An L1 penalty on H alone is undone by shrinking H and growing W; an L2 penalty on W
    # fixes the scale (as scikit-learn's alpha_W does). Same L2 in both runs: the extra
    # zeros are the L1 penalty's.
    rng = np.random.default_rng(23)
    x = rng.random((80, 60))
    plain = nmf(x, 6, l2_w=1.0, tol=1e-6, max_iter=300, rng=0)
    l1 = nmf(x, 6, l2_w=1.0, l1_h=0.5, tol=1e-6, max_iter=300, rng=0)
    zeros_plain = np.count_nonzero(plain.arrays["H"] == 0)
    zeros_l1 = np.count_nonzero(l1.arrays["H"] == 0)
    assert zeros_l1 > zeros_plain + 0.2 * l1.arrays["H"].size
    assert l1.details["regularisation"]["l1_h"] == 0.5
    assert_monotone(objectives(l1), 1e-12 * np.sum(x**2))


def test_callback_sees_sweeps_and_can_stop():
    x = np.random.default_rng(24).random((30, 20))
    seen = []

    def cb(event):
        seen.append((event.extras["restart"], event.iteration, event.extras["relative_error"]))
        return event.iteration >= 3

    res = nmf(x, 3, tol=0, max_iter=100, callback=cb, n_init=3, rng=0)
    assert [s[1] for s in seen] == [1, 2, 3]
    assert not res.converged and res.stop_reason == "stopped by callback"
    assert len(res.metrics["restart_objectives"]) == 1  # later restarts not started


# --- data checks --------------------------------------------------------------------------


def test_negative_input_is_a_data_error():
    x = np.random.default_rng(25).random((20, 10))
    x[2, 3], x[5, 1] = -0.5, -2.25
    with pytest.raises(DataError, match=r"2 negative value\(s\), the smallest -2\.25"):
        nmf(x, 2)
    with pytest.raises(DataError, match="negative"):
        nmf(sp.csr_array(x), 2)
    semi_nmf(x, 2, max_iter=5)  # mixed signs are semi-NMF's business


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_input_is_a_data_error(bad):
    x = np.ones((10, 8))
    x[1, 1] = bad
    for fit in (nmf, semi_nmf):
        with pytest.raises(DataError, match="infinite"):
            fit(x, 2)


def test_nan_rules():
    x = np.random.default_rng(26).random((12, 9))
    x[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        semi_nmf(x, 2)
    s = sp.csr_array(np.nan_to_num(x) + 0.0)
    s.data[0] = np.nan
    with pytest.raises(DataError, match="sparse"):
        nmf(s, 2)
    with pytest.raises(DataError, match="every entry"):
        nmf(np.full((3, 4), np.nan), 1)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (7,), (2, 3, 4)])
def test_empty_and_wrong_ndim(shape):
    for fit in (nmf, semi_nmf):
        with pytest.raises(DataError):
            fit(np.ones(shape), 1)


def test_parameter_errors():
    x = np.ones((5, 4))
    for kw in ({"solver": "cd"}, {"loss": "itakura"}, {"init": "svd"},
               {"solver": "hals", "loss": "kl"}, {"l1_w": -1.0}, {"tol": -1.0},
               {"n_init": 0}, {"max_iter": -1}):  # fmt: skip
        with pytest.raises(ParameterError):
            nmf(x, 2, **kw)
    with pytest.raises(ParameterError):
        nmf(x, 0)
    with pytest.raises(ParameterError):
        semi_nmf(x, 2, init="nndsvd")


def test_rank_larger_than_data_is_clamped():
    x = np.random.default_rng(27).random((9, 6))
    for res in (nmf(x, 20, max_iter=20), semi_nmf(x, 20, max_iter=20)):
        assert res.arrays["W"].shape == (9, 6) and res.arrays["H"].shape == (6, 6)
        assert any("clamp" in w for w in res.warnings)
        row = {"rule": "rank", "threshold": 20, "rank": 6, "given": True}
        assert res.rank == {"value": 6, "rule": "rank", "threshold": 20, "max_rank": 6,
                            "clamped": True, "by_rule": [row]}  # fmt: skip


def test_float32_is_kept():
    w, h = planted(60, 40, 3, seed=28)
    x32 = (w @ h).astype(np.float32)
    x64 = x32.astype(np.float64)
    for a in (x32, sp.csr_array(x32)):
        res = nmf(a, 3, tol=1e-6, max_iter=300, rng=0)
        assert res.arrays["W"].dtype == np.float32 and res.arrays["H"].dtype == np.float32
        assert res.details["working_dtype"] == "float32"
        assert rel_err(x64, res) <= 1e-3
    masked = x32.copy()
    masked[0, 0] = np.nan
    for res in (nmf(masked, 3, max_iter=50), nmf(x32, 3, loss="kl", max_iter=50),
                semi_nmf(x32, 3, max_iter=50)):  # fmt: skip
        assert {a.dtype for a in res.arrays.values()} == {np.dtype(np.float32)}
    ints = nmf((10 * x64).astype(np.int32), 3, max_iter=20)
    assert ints.arrays["W"].dtype == np.float64


def test_zero_matrix():
    res = nmf(np.zeros((6, 5)), 2)
    assert res.metrics["relative_frobenius_error"] == 0.0 and not res.arrays["W"].any()
    assert res.stop_reason == "zero matrix"


def test_extreme_magnitudes_are_scaled_exactly():
    w, h = planted(40, 30, 3, seed=29)
    x = w @ h
    big = nmf(x * 2.0**600, 3, max_iter=30, rng=0)
    ref = nmf(x, 3, max_iter=30, rng=0)
    np.testing.assert_allclose(big.arrays["W"] / 2.0**600, ref.arrays["W"], rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    key = "relative_frobenius_error"
    assert big.metrics[key] == pytest.approx(ref.metrics[key])
    assert any("scaled" in wn for wn in big.warnings)


def test_memory_budget_is_checked_before_allocating():
    x = np.ones((400, 300))
    need = estimate_bytes(x.shape, x.dtype, rank=5)
    with pytest.raises(BudgetError, match="memory budget"):
        nmf(x, 5, max_memory=need // 2)
    masked = estimate_bytes(x.shape, x.dtype, rank=5, masked=True)
    assert masked > need + 3 * x.nbytes  # data copy, mask and residual are counted
    nmf(x, 5, max_memory=need, max_iter=2)


# --- against scikit-learn ---------------------------------------------------------------------


def test_matches_sklearn_final_error():
    # Same problem, same init (nndsvda), both run to tight convergence: local minima of NMF
    # agree in error to well within 1% on a small well-posed problem.
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(30)
    w, h = planted(150, 60, 6, zero=0.2, seed=31)
    x = w @ h + 0.05 * rng.random((150, 60))
    ref = decomposition.NMF(6, solver="cd", init="nndsvda", tol=1e-8, max_iter=5000)
    wr = ref.fit_transform(x)
    err_ref = np.linalg.norm(x - wr @ ref.components_) / np.linalg.norm(x)
    res = nmf(x, 6, init="nndsvda", tol=1e-8, max_iter=5000)
    assert abs(res.metrics["relative_frobenius_error"] - err_ref) <= 0.01 * err_ref


def test_semi_nmf_factor_match_stays_in_the_unit_interval():
    """Semi-NMF restarts can find unrelated components whose W columns point apart: W's
    mean matched cosine was −0.04 here, so the score compares the nonnegative H instead."""
    rng = np.random.default_rng(0)
    x = rng.random((120, 5)) @ rng.random((5, 80)) + 0.05 * rng.random((120, 80))
    res = semi_nmf(x, 4, tol=0, max_iter=20, n_init=2, rng=np.random.default_rng(0))
    assert 0.0 <= res.metrics["factor_match"] <= 1.0
    h = res.arrays["H"]
    assert factor_match(h.T, h.T) == pytest.approx(1.0)


def test_subnormal_data_is_rescaled_and_penalties_beyond_range_are_refused():
    """max|X| below 2^-1022 needs a scale of 2^1022 (2^1046 is not a float); the penalties,
    rescaled with it by s^1.5, leave the float64 range: a clear data error."""
    x = np.full((3, 4), 5e-315)
    res = nmf(x, 1)
    np.testing.assert_allclose(res.arrays["W"] @ res.arrays["H"], x, rtol=1e-6)
    with pytest.raises(DataError, match="out of floating-point range"):
        nmf(x, 1, l1_w=0.1)
