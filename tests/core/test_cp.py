"""CP decomposition against independent truths: planted CP models, explicit unfoldings and
Khatri–Rao products built here with numpy, explicit reconstructions, the first-order (KKT)
conditions computed here from the returned factors, and TensorLy's ``parafac``.

Tolerances and where they come from:

* Exact planted data: ALS converges linearly to the planted model and stops at the rounding
  floor (relative error ≤ 10·(R+N)·eps ≈ 2e-14 for R ≤ 4, N ≤ 5); 1e-10 leaves room for a stop
  on the relative-change test (tol = 1e-12 on the squared error: error ≤ ~1e-6·previous). The
  planted factors are then recovered up to rounding: factor_match ≥ 1 − 1e-6 (the issue asks
  ≥ 0.99).
* Monotone objectives: every ALS/HALS mode update is an exact block minimisation and a line
  search step is accepted only when it lowers the objective, so the tracked objective never
  increases in exact arithmetic. It is formed from inner products in float64 with a rounding
  error of about (R+N)·eps·‖X‖² ≈ 2e-15·‖X‖²; the slack allowed per sweep is 1e-12·‖X‖²,
  a thousand times that.
* Explicit residual: the certified error is a float64 sum over float64 residual entries, each
  exact to (R+N+1)·eps relative to the data: it matches a reconstruction made here to 1e-10
  relative, and lies within its own bounds.
* MTTKRP: sums of ∏I_k products of float64 numbers; compared at 1e-12 relative to the norm of
  the reference (float32: 1e-5, its eps ≈ 1.2e-7 times the ~100 terms' growth).
* float32: single precision carries ~1e-7 relative rounding per entry; errors are compared
  with the float64 run at 1e-4 (well above the ~1e-6 reachable floor).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from rankwise.core.cp import (
    _leading_vectors,
    check_parameters,
    cp,
    estimate_bytes,
    factor_match,
    max_rank,
    mttkrp,
)
from rankwise.core.errors import BudgetError, DataError, ParameterError

LETTERS = "abcdefgh"


def full(weights, factors):
    """[[λ; A]] by one einsum (independent of the module's blocked reconstruction)."""
    n = len(factors)
    spec = ",".join(f"{LETTERS[k]}z" for k in range(n)) + ",z->" + LETTERS[:n]
    return np.einsum(spec, *[np.asarray(a, np.float64) for a in factors],
                     np.asarray(weights, np.float64))  # fmt: skip


def planted(shape, rank, *, seed=0, nonneg=False, collinear=0.0):
    rng = np.random.default_rng(seed)
    factors = []
    for s in shape:
        a = rng.random((s, rank)) * (rng.random((s, rank)) > 0.3) if nonneg else (
            rng.standard_normal((s, rank)))  # fmt: skip
        if collinear:
            a = (1 - collinear) * a + collinear * a[:, :1]
        factors.append(a)
    return full(np.ones(rank), factors), factors


def with_noise(x, level, seed=1):
    n = np.random.default_rng(seed).standard_normal(x.shape)
    return x + n * (level * np.linalg.norm(x) / np.linalg.norm(n))


def factors_of(res):
    n = sum(1 for k in res.arrays if k.startswith("factors/"))
    return [res.arrays[f"factors/{k}"] for k in range(n)]


def rel_err(x, res):
    r = np.asarray(x, np.float64) - full(res.arrays["weights"], factors_of(res))
    return np.linalg.norm(r) / np.linalg.norm(x)


def unfold(x, n):
    return np.moveaxis(x, n, 0).reshape(x.shape[n], -1)


def khatri_rao_except(factors, n):
    """Khatri–Rao product of every factor but n, rows in the order of ``unfold``'s columns
    (the first remaining mode varies slowest)."""
    others = [a for k, a in enumerate(factors) if k != n]
    r = others[0].shape[1]
    k = others[0]
    for b in others[1:]:
        k = np.einsum("ir,jr->ijr", k, b).reshape(-1, r)
    return k


def objectives(res):
    run = res.details["restarts"][res.details["kept_restart"]]
    return np.array([run["initial_objective"]] + [h["objective"] for h in res.history])


def assert_monotone(obj, slack):
    steps = np.diff(obj)
    assert np.all(steps <= slack), (steps.max(), slack)


# --- planted recovery -----------------------------------------------------------------------


@pytest.mark.parametrize("init", ["hosvd", "random"])
@pytest.mark.parametrize(
    "shape, rank",
    [((12, 14, 16), 4), ((7, 8, 9, 10), 3), ((5, 6, 4, 5, 6), 3), ((9, 8, 7), 1)],
    ids=["order3", "order4", "order5", "rank1"],
)
def test_planted_exact_model_recovered(shape, rank, init):
    x, planted_factors = planted(shape, rank, seed=len(shape))
    res = cp(x, rank, init=init, tol=1e-12, max_iter=2000, rng=0)
    assert res.method == "cp-als"
    assert rel_err(x, res) <= 1e-10
    assert res.metrics["relative_frobenius_error"] <= 1e-10
    assert factor_match(factors_of(res), planted_factors) >= 1 - 1e-6
    assert res.converged


def test_planted_noisy_model_recovered_at_noise_level():
    x0, planted_factors = planted((30, 25, 20), 5, seed=3)
    x = with_noise(x0, 0.05)
    noise = np.linalg.norm(x - x0) / np.linalg.norm(x)
    res = cp(x, 5, rng=0)
    # the best rank-5 model fits part of the noise: its error is a bit below the noise level,
    # never above it (the planted model itself has error = noise)
    assert rel_err(x, res) <= noise
    assert factor_match(factors_of(res), planted_factors) >= 0.99


def test_hosvd_init_compresses_and_refines():
    x, planted_factors = planted((30, 12, 25), 3, seed=5)
    res = cp(x, 3, max_iter=0, rng=0)
    core = res.details["hosvd"]["compressed_core"]
    assert core["shape"] == [3, 3, 3] and core["starts"][0] == "gevd"
    # the CP of the exact core is exact: the initial model is already the planted one
    assert factor_match(factors_of(res), planted_factors) >= 1 - 1e-8
    assert rel_err(x, res) <= 1e-8


# --- monotonicity ---------------------------------------------------------------------------


def test_als_objective_monotone_with_line_search():
    # collinear factors make ALS slow (a "swamp"): many sweeps and line-search attempts
    x0, _ = planted((20, 18, 16), 4, seed=7, collinear=0.6)
    x = with_noise(x0, 0.01)
    res = cp(x, 4, init="random", tol=1e-12, max_iter=300, rng=1)
    assert res.details["linesearch_steps"]["accepted"] > 0
    assert any(h["linesearch_step"] is not None for h in res.history)
    assert_monotone(objectives(res), 1e-12 * float(np.sum(x * x)))
    assert len(res.history) > 10


def test_line_search_off_tries_nothing_and_is_monotone():
    x0, _ = planted((20, 18, 16), 4, seed=7, collinear=0.6)
    x = with_noise(x0, 0.01)
    res = cp(x, 4, init="random", tol=1e-12, max_iter=100, rng=1, linesearch=False)
    assert res.details["linesearch_steps"]["tried"] == 0
    assert all(h["linesearch_step"] is None for h in res.history)
    assert_monotone(objectives(res), 1e-12 * float(np.sum(x * x)))


def test_hals_objective_monotone():
    x0, _ = planted((20, 18, 16), 4, seed=8, nonneg=True)
    x = np.abs(with_noise(x0, 0.02))
    res = cp(x, 4, nonneg=True, tol=1e-10, max_iter=300, rng=0)
    assert res.method == "cp-hals"
    assert_monotone(objectives(res), 1e-12 * float(np.sum(x * x)))


# --- nonnegative CP ---------------------------------------------------------------------------


def kkt_violation(x, weights, factors):
    """max over modes of |projected gradient| / max|MTTKRP|, from explicit unfoldings."""
    worst = 0.0
    grams = [a.T @ a for a in factors]
    for n, a in enumerate(factors):
        m = unfold(x, n) @ khatri_rao_except(factors, n)
        v = np.ones_like(grams[0])
        for k, g in enumerate(grams):
            if k != n:
                v *= g
        grad = (a * weights) @ v - m
        at_zero = a <= 1e-8 * a.max(axis=0)
        pg = np.where(at_zero, np.maximum(-grad, 0.0), np.abs(grad))
        worst = max(worst, pg.max() / np.abs(m).max())
    return worst


def test_hals_nonnegative_and_kkt():
    x, planted_factors = planted((14, 12, 10), 3, seed=9, nonneg=True)
    res = cp(x, 3, nonneg=True, tol=1e-14, max_iter=2000, rng=0)
    f = [np.asarray(a, np.float64) for a in factors_of(res)]
    assert all(np.all(a >= 0) for a in f)
    assert np.all(res.arrays["weights"] >= 0)
    mine = kkt_violation(x, res.arrays["weights"], f)
    # exact nonnegative data: HALS converges to the planted model, the gradient to zero
    assert mine <= 1e-6
    assert res.metrics["kkt"] == pytest.approx(mine, rel=1e-3, abs=1e-12)
    assert res.metrics["min_factor_entry"] >= 0
    assert factor_match(f, planted_factors) >= 0.99


def test_hals_kkt_on_noisy_data():
    x0, _ = planted((14, 12, 10), 3, seed=10, nonneg=True)
    x = np.abs(with_noise(x0, 0.05))
    res = cp(x, 3, nonneg=True, tol=1e-12, max_iter=3000, rng=0)
    mine = kkt_violation(x, res.arrays["weights"], factors_of(res))
    # a stationary point of the constrained problem: relative projected gradient small; at a
    # relative objective change ≤ 1e-12 per sweep the gradient left is of order √1e-12
    assert mine <= 1e-4
    assert res.metrics["kkt"] == pytest.approx(mine, rel=1e-3, abs=1e-12)


def test_negative_data_refused_for_nonneg():
    x, _ = planted((5, 6, 7), 2)
    with pytest.raises(DataError, match="negative"):
        cp(x, 2, nonneg=True)


# --- errors and certification ---------------------------------------------------------------


def test_certified_error_matches_explicit_reconstruction():
    x0, _ = planted((16, 15, 14), 3, seed=11)
    x = with_noise(x0, 0.1)
    res = cp(x, 3, rng=0)
    mine = rel_err(x, res)
    m = res.metrics
    assert m["relative_frobenius_error"] == pytest.approx(mine, rel=1e-10)
    lo, hi = m["error_bounds"]
    assert lo <= mine <= hi
    assert m["fit"] == pytest.approx(1 - mine, rel=1e-10)
    assert m["norm_fro"] == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert "explicit" in m["error_method"]
    assert m["n_parameters"] == 3 * (1 + 16 + 15 + 14)
    assert m["compression_ratio"] == pytest.approx(x.size / m["n_parameters"])
    # the history's cheap error (from inner products) agrees with the explicit one
    assert res.history[-1]["relative_error"] == pytest.approx(mine, rel=1e-6)


def test_same_or_better_error_than_tensorly():
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    x0, _ = planted((25, 22, 20), 4, seed=12, collinear=0.3)
    x = with_noise(x0, 0.05)
    res = cp(x, 4, rng=0)
    w, f = parafac(tl.tensor(x), 4, init="svd", tol=1e-10, n_iter_max=2000, random_state=0)
    theirs = np.linalg.norm(x - tl.cp_to_tensor((w, f))) / np.linalg.norm(x)
    # both reach the same minimum here; ours at least as low up to the stopping tolerance
    assert rel_err(x, res) <= theirs * (1 + 1e-6)


def test_stationarity_reported_for_als():
    x0, _ = planted((12, 11, 10), 3, seed=13)
    x = with_noise(x0, 0.05)
    res = cp(x, 3, tol=1e-14, max_iter=1000, rng=0)
    f = factors_of(res)
    worst = 0.0
    grams = [a.T @ a for a in f]
    for n, a in enumerate(f):
        m = unfold(x, n) @ khatri_rao_except(f, n)
        v = np.prod([g for k, g in enumerate(grams) if k != n], axis=0)
        worst = max(worst, np.abs((a * res.arrays["weights"]) @ v - m).max() / np.abs(m).max())
    assert res.metrics["stationarity"] == pytest.approx(worst, rel=1e-3, abs=1e-12)
    assert worst <= 1e-5


def test_singular_normal_equations_fall_back_to_pseudo_inverse():
    from rankwise.core.cp import _Data, _Solver

    x, f = planted((6, 5, 4), 2, seed=22)
    solver = _Solver(_Data(x, 2), [a / np.linalg.norm(a, axis=0) for a in f], nonneg=False,
                     linesearch=False)  # fmt: skip
    v = np.array([[1.0, 1.0], [1.0, 1.0]])  # two identical components: V singular
    m = np.random.default_rng(0).standard_normal((6, 2))
    a = solver._solve(v, m)
    assert solver.solves == {"cholesky": 0, "pinv": 1}
    # the minimum-norm least-squares solution: a = m·pinv(v)
    assert np.allclose(a, m @ np.linalg.pinv(v), atol=1e-12)
    solver._solve(np.eye(2) + 0.1, m)
    assert solver.solves == {"cholesky": 1, "pinv": 1}


# --- MTTKRP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5, 6), (3, 4, 5, 6), (2, 3, 4, 3, 2), (7, 1, 3)])
def test_mttkrp_matches_explicit_khatri_rao(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    factors = [rng.standard_normal((s, 3)) for s in shape]
    for n in range(len(shape)):
        ref = unfold(x, n) @ khatri_rao_except(factors, n)
        got = mttkrp(x, factors, n)
        assert got.shape == ref.shape
        assert np.linalg.norm(got - ref) <= 1e-12 * np.linalg.norm(ref)


def test_mttkrp_float32_and_tensorly_agree():
    pytest.importorskip("tensorly")
    from tensorly.tenalg import unfolding_dot_khatri_rao

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 7, 8)).astype(np.float32)
    factors = [rng.standard_normal((s, 4)).astype(np.float32) for s in x.shape]
    for n in range(3):
        got = mttkrp(x, factors, n)
        assert got.dtype == np.float32
        f64 = [f.astype(np.float64) for f in factors]
        ref = unfolding_dot_khatri_rao(x.astype(np.float64), (None, f64), n)
        assert np.linalg.norm(got - ref) <= 1e-5 * np.linalg.norm(ref)


@pytest.mark.parametrize(
    "shape, mode",
    [
        ((20, 6, 5, 7), 1),
        ((20, 6, 5, 7), 2),
        ((4, 10, 130), 1),
        ((3, 50, 4), 1),
        ((40, 3, 2), 0),
        ((2, 3, 40), 2),
    ],
)
def test_hosvd_vectors_span_leading_singular_subspace(shape, mode):
    """Every way of forming the Gram: per slice (wide slices), blocks of copied slices (thin),
    the short side (I_n > the other modes' product), modes 0 and N−1 on plain reshapes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape) * 0.01
    x += full(np.array([5.0, 3.0]), [rng.standard_normal((s, 2)) for s in shape])
    u, _ = _leading_vectors(np.ascontiguousarray(x), mode, 2)
    ref = np.linalg.svd(unfold(x, mode), full_matrices=False)[0][:, :2]
    # principal angles between the two 2-D subspaces: cosines are the singular values
    cos = np.linalg.svd(ref.T @ u, compute_uv=False)
    assert cos.min() >= 1 - 1e-8
    assert np.allclose(u.T @ u, np.eye(2), atol=1e-10)


# --- conventions, determinism, dtype --------------------------------------------------------


def test_output_convention():
    x0, _ = planted((9, 10, 11, 5), 3, seed=14)
    x = with_noise(x0, 0.05)
    res = cp(x, 3, rng=0)
    w = res.arrays["weights"]
    f = factors_of(res)
    assert w.shape == (3,) and all(a.shape == (s, 3) for a, s in zip(f, x.shape, strict=True))
    assert np.all(w >= 0) and np.all(np.diff(w) <= 0)
    for a in f:
        assert np.allclose(np.linalg.norm(a, axis=0), 1.0, atol=1e-12)
    for a in f[:-1]:
        idx = np.argmax(np.abs(a), axis=0)
        assert np.all(a[idx, np.arange(3)] > 0)


def test_same_seed_same_bytes():
    x0, _ = planted((10, 9, 8), 3, seed=15)
    x = with_noise(x0, 0.05)
    for kw in ({"init": "random"}, {"init": "hosvd", "n_init": 2}):
        a = cp(x, 3, rng=7, **kw)
        b = cp(x, 3, rng=7, **kw)
        assert {k: v.tobytes() for k, v in a.arrays.items()} == {
            k: v.tobytes() for k, v in b.arrays.items()
        }


def test_float32_kept_and_accurate():
    x0, _ = planted((12, 11, 10), 3, seed=16)
    x = with_noise(x0, 0.01)
    r64 = cp(x, 3, rng=0)
    r32 = cp(x.astype(np.float32), 3, rng=0)
    assert all(v.dtype == np.float32 for v in r32.arrays.values())
    assert rel_err(x, r32) == pytest.approx(rel_err(x, r64), abs=1e-4)


def test_integer_and_noncontiguous_input():
    x0, _ = planted((8, 7, 6), 2, seed=17)
    xi = np.round(x0 * 10).astype(np.int32)
    res_i = cp(xi, 2, rng=0)
    assert all(v.dtype == np.float64 for v in res_i.arrays.values())
    xf = np.asfortranarray(xi.astype(np.float64))
    res_f = cp(xf, 2, rng=0)
    assert np.array_equal(res_f.arrays["weights"], res_i.arrays["weights"])


def test_extreme_scale_handled_exactly():
    x0, _ = planted((8, 9, 10), 2, seed=18)
    x = with_noise(x0, 0.05)
    ref = cp(x, 2, rng=0)
    big = cp(x * 2.0**500, 2, rng=0)
    assert any("scaled" in w for w in big.warnings)
    # an exact power-of-two rescaling: the same factors, weights scaled back exactly
    for a, b in zip(factors_of(big), factors_of(ref), strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(big.arrays["weights"], ref.arrays["weights"] * 2.0**500)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused(bad):
    x, _ = planted((5, 6, 7), 2)
    x[1, 2, 3] = bad
    with pytest.raises(DataError):
        cp(x, 2)


@pytest.mark.parametrize("shape", [(5, 6), (7,), (0, 3, 4), (3, 0, 2)])
def test_wrong_order_and_empty_refused(shape):
    with pytest.raises(DataError) as err:
        cp(np.ones(shape), 1)
    if len(shape) == 2:
        assert "svd" in str(err.value)


def test_sparse_refused():
    with pytest.raises(DataError):
        cp(sp.random_array((5, 6), density=0.5, rng=0), 1)


@pytest.mark.parametrize("kw", [{"rank": 0}, {"rank": -2}, {"rank": 2.5}, {"rank": True},
                                {"init": "svd"}, {"tol": -1.0}, {"tol": float("nan")},
                                {"max_iter": -1}, {"n_init": 0}, {"nonneg": "yes"}])  # fmt: skip
def test_bad_parameters_refused(kw):
    x, _ = planted((4, 5, 6), 2)
    args = {"rank": 2, **kw}
    with pytest.raises(ParameterError):
        cp(x, args.pop("rank"), **args)
    with pytest.raises(ParameterError):
        check_parameters(**{"rank": 2, **kw})


def test_rank_beyond_dimensions_allowed_and_beyond_max_rank_clamped():
    x0, _ = planted((3, 4, 5), 2, seed=19)
    x = with_noise(x0, 0.1)
    res = cp(x, 6, rng=0)  # 6 > every dimension but ≤ max rank 12
    assert res.arrays["weights"].shape == (6,) and not res.warnings
    assert max_rank(x.shape) == 12
    res = cp(x, 50, rng=0, max_iter=20)
    assert res.arrays["weights"].shape == (12,)
    assert res.rank["clamped"] and any("clamped" in w for w in res.warnings)


def test_zero_tensor():
    res = cp(np.zeros((3, 4, 5)), 2)
    assert res.metrics["relative_frobenius_error"] == 0.0
    assert all(not v.any() for v in res.arrays.values())


@pytest.mark.parametrize("kw", [{}, {"init": "random"}, {"nonneg": True}])
def test_no_full_size_temporaries(kw, monkeypatch):
    """With small blocks, the extra memory is the finiteness scan's boolean mask (1/8 of a
    float64 input) plus O(R·(∏left + ∏right)) and at most half the input for the first
    projection of the HOSVD core: never an unfolding or a Khatri–Rao product of N−1 modes."""
    import tracemalloc

    import scipy.linalg  # noqa: F401  (its import is not part of the working set)
    import scipy.optimize  # noqa: F401
    import threadpoolctl  # noqa: F401

    from rankwise.core import cp as cp_module

    monkeypatch.setattr(cp_module, "RESIDUAL_BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(cp_module, "GRAM_BLOCK_BYTES", 1 << 16)
    x0, _ = planted((40, 30, 50, 20), 4, seed=23, nonneg=bool(kw))
    x = np.abs(with_noise(x0, 0.01))
    tracemalloc.start()
    try:
        cp(x, 4, rng=0, max_iter=5, **kw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 0.5 * x.nbytes, peak / x.nbytes


def test_budget():
    shape = (40, 40, 40)
    est = estimate_bytes(shape, np.float64, 5)
    assert est >= math.prod(shape) * 8
    x = np.ones(shape)
    with pytest.raises(BudgetError):
        cp(x, 5, max_memory=est // 2)


# --- loop: callback, restarts ---------------------------------------------------------------


def test_callback_stops():
    x0, _ = planted((10, 11, 12), 3, seed=20, collinear=0.5)
    x = with_noise(x0, 0.01)
    seen = []

    def cb(event):
        seen.append((event.iteration, event.extras["restart"], event.extras["relative_error"]))
        return event.iteration == 3

    res = cp(x, 3, init="random", tol=0, max_iter=100, rng=0, callback=cb)
    assert res.stop_reason == "stopped by callback" and not res.converged
    assert [s[0] for s in seen] == [1, 2, 3] and len(res.history) == 3
    assert res.history[-1]["relative_error"] == seen[-1][2]


def test_restarts_keep_the_best():
    x0, _ = planted((12, 10, 8), 4, seed=21, collinear=0.5)
    x = with_noise(x0, 0.05)
    res = cp(x, 4, init="random", n_init=4, max_iter=40, rng=0)
    objs = res.metrics["restart_objectives"]
    assert len(objs) == 4
    assert res.details["kept_restart"] == int(np.argmin(objs))
    # the certified objective is that of the kept restart (the tracked one, up to rounding)
    assert res.metrics["objective"] == pytest.approx(min(objs), rel=1e-8)
    assert 0.0 <= res.metrics["factor_match"] <= 1.0
    # the history reported is that of the kept restart
    assert res.history[0]["restart"] == res.details["kept_restart"]


# --- factor_match ---------------------------------------------------------------------------


def test_factor_match_properties():
    rng = np.random.default_rng(3)
    f = [rng.standard_normal((s, 4)) for s in (6, 7, 8)]
    perm = [2, 0, 3, 1]
    g = [a[:, perm] * np.array([2.0, -1.0, 0.5, 3.0]) for a in f]
    g[0][:, 1] *= -1
    g[2][:, 1] *= -1
    assert factor_match(f, g) == pytest.approx(1.0, abs=1e-12)
    assert factor_match(f, f) == pytest.approx(1.0, abs=1e-12)
    # a component missing counts as 0
    assert factor_match(f, [a[:, :3] for a in f]) == pytest.approx(0.75, abs=1e-12)
    # mutually orthogonal columns in one mode: congruence 0
    q = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    h = [f[0], f[1], q[:, :4]]
    k = [f[0], f[1], q[:, 4:]]
    assert factor_match(h, k) == pytest.approx(0.0, abs=1e-12)
