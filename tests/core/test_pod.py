"""POD (rankwise.core.pod): closed forms, agreement between methods, mass matrices, enrichment,
HAPOD merging, projection checks, streaming and bad inputs.

Independent truths and tolerances:

* Transport family u_μ(x) = 1{x < μ}. With dofs at the left cell edges x_i = (i−1)/n and
  snapshots μ_j = j/n, the snapshot Gram is exactly G_jj' = #{i : x_i < min(μ_j, μ_j')} =
  min(j, j'), whose eigenvalues are 1/(4 sin²((2k−1)π/(4n+2))) (the min-matrix). With weights
  1/n on the dofs (quadrature) and 1/√n on the snapshots, σ_k = 1/(2n sin((2k−1)π/(4n+2))),
  which tends to the continuous 1/((k−½)π): σ_k·(k−½)π = (1 + 1/(2n))·θ/sin θ with
  θ = (2k−1)π/(4n+2), so the relative gap is ≤ 1/n for k ≪ n. The discrete value is
  reproduced to 1e-10 (a backward-stable SVD: eps·σ₁/σ_k ≈ 1e-14 here, margin 1e4).
* On a non-uniform mesh (cells h_i, dofs at left edges, weight h_i), the weighted Gram is
  (1/m)·(right edge of the cell holding min(μ_j, μ_j')) = (1/m)(min(μ_j, μ_j') + E_jj'), so by
  Weyl |σ̃_k² − σ_k²| ≤ ‖E‖₂/m with σ_k the uniform-μ closed form; ‖E‖₂ is computed here.
* Exactly low-rank data: the cut is decided by rounding-level tails (≤ 1e-24 relative energy
  below tol² = 1e-24 for an SVD, whose tail is ~eps²·m).
* Methods agree: svd and snapshots (with its Rayleigh–Ritz pass) both reach eps·σ₁ absolute
  accuracy; on σ_10/σ_1 ≈ 1e-3 that is ≤ 1e-10 relative. Subspaces by the largest sine
  ‖(I − PP)Q‖₂ (not from cosines, which cannot resolve sines below 1e-8): ≤ 1e-8 for a
  gap σ_10/σ_11 ≥ 1.5. Randomized (adaptive power iterations): 1e-6.
* Orthonormality ‖VᵀMV − I‖ ≤ 1e-12: CholeskyQR2 / re-orthonormalised bases reach a few
  eps·√N.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp

from rankwise.core import tensor as T
from rankwise.core.errors import BudgetError, DataError, ParameterError
from rankwise.core.pod import (
    IncrementalPOD,
    enrich,
    inner_product,
    merge,
    pod,
    project,
    rule_from,
)
from rankwise.core.rank import RankRule


def sine(a, b):
    """Largest principal-angle sine between span(a) ⊆ and span(b), both orthonormal."""
    return float(np.linalg.norm(b - a @ (a.T @ b), 2))


def msine(a, b, m):
    """Largest sine in the M inner product (a, b M-orthonormal)."""
    c = np.linalg.cholesky(m.toarray() if sp.issparse(m) else m)
    return sine(c.T @ a, c.T @ b)


def heat(n=1500, m=120, k_max=400, seed=None):
    """Heat equation on [0, 1] from a box, sampled at geometric times: a smooth family with a
    fast-decaying spectrum."""
    x = np.linspace(0, 1, n)
    t = np.geomspace(1e-4, 1e-1, m)
    k = np.arange(1, k_max + 1)
    ck = 2 * (np.cos(k * np.pi * 0.2) - np.cos(k * np.pi * 0.6)) / (k * np.pi)
    x_ = np.sin(np.outer(x, k * np.pi)) @ (ck[:, None] * np.exp(-np.outer(k**2 * np.pi**2, t)))
    if seed is not None:
        x_ = x_[:, np.random.default_rng(seed).permutation(m)]
    return np.ascontiguousarray(x_)


def fem_mass(edges):
    """P1 mass matrix of a 1-D mesh with the given node coordinates (symmetric, SPD)."""
    h = np.diff(edges)
    n = len(edges)
    main = np.zeros(n)
    main[:-1] += h / 3
    main[1:] += h / 3
    return sp.diags([h / 6, main, h / 6], [-1, 0, 1], format="csr")


# --- closed forms ------------------------------------------------------------------------------


def test_transport_uniform_matches_min_matrix_closed_form():
    n, k = 800, np.arange(1, 9)
    x = np.arange(n) / n
    mu = np.arange(1, n + 1) / n
    snaps = (x[:, None] < mu[None, :]).astype(float) / math.sqrt(n)
    for method in ("svd", "snapshots", "auto"):
        r = pod(snaps, RankRule("rank", 8), weights=np.full(n, 1.0 / n), method=method)
        s = r.arrays["singular_values"].astype(float)
        discrete = 1.0 / (2 * n * np.sin((2 * k - 1) * np.pi / (4 * n + 2)))
        np.testing.assert_allclose(s, discrete, rtol=1e-10)
        continuous = 1.0 / ((k - 0.5) * np.pi)
        assert np.all(np.abs(s / continuous - 1) <= 1.0 / n)
        assert r.metrics["orthogonality_loss"] <= 1e-12


def test_transport_random_mesh_needs_weights():
    rng = np.random.default_rng(3)
    n, m = 3000, 600
    edges = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, n - 1)) ** 2, [1.0]])
    x, h = edges[:-1], np.diff(edges)  # dofs at the left cell edges, weights = cell sizes
    mu = np.arange(1, m + 1) / m
    snaps = (x[:, None] < mu[None, :]).astype(float) / math.sqrt(m)
    k = np.arange(1, 7)
    closed = 1.0 / (2 * m * np.sin((2 * k - 1) * np.pi / (4 * m + 2)))
    # E = m·G − min(μ, μ'): the exact weighted Gram minus the continuous-in-x one
    right = edges[1:][np.searchsorted(x, mu, side="left") - 1]
    e = right[np.minimum.outer(np.arange(m), np.arange(m))] - np.minimum.outer(mu, mu)
    bound = np.linalg.norm(e, 2) / m
    r = pod(snaps, RankRule("rank", 6), weights=h)
    s = r.arrays["singular_values"].astype(float)
    assert np.all(np.abs(s**2 - closed**2) <= bound * (1 + 1e-9) + 1e-14)
    assert np.max(np.abs(s / closed - 1)) < 0.01
    # unweighted POD on this mesh (normalised by the mean cell size) is wrong by > 10%
    u = pod(snaps, RankRule("rank", 6)).arrays["singular_values"] / math.sqrt(n)
    assert np.max(np.abs(u / closed - 1)) > 0.1


def three_mode_heat(n=400, m=60):
    x = np.linspace(0, 1, n)
    t = np.linspace(0, 0.05, m)
    a = np.array([1.0, 4.0, 16.0])  # a rough initial state: the third mode carries energy
    k = np.arange(1, 4)
    return np.sin(np.outer(x, k * np.pi)) @ (a[:, None] * np.exp(-np.outer(k**2 * np.pi**2, t)))


@pytest.mark.parametrize("tol", [1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2])
def test_three_mode_heat_gives_three_modes(tol):
    x = three_mode_heat()
    s = sla.svdvals(x)
    assert s[2] ** 2 / np.sum(s**2) > 1e-2**2  # the third mode matters at every tol here
    for method in ("auto", "svd") + (("snapshots",) if tol >= 1e-6 else ()):
        r = pod(x, RankRule("tol", tol), method=method)
        assert r.rank["value"] == 3, (method, r.rank, r.method_reason)
        assert r.metrics["relative_frobenius_error"] <= tol


def test_auto_switches_to_svd_below_gram_resolution():
    x = three_mode_heat()
    r = pod(x, RankRule("tol", 1e-12))
    assert r.method == "svd" and "resolution" in r.method_reason
    r = pod(x, RankRule("tol", 1e-3))
    assert r.method == "snapshots"


# --- methods agree -----------------------------------------------------------------------------


def test_methods_agree_on_singular_values_and_subspaces():
    x = heat()
    ref_u, ref_s, _ = sla.svd(x, full_matrices=False)
    assert ref_s[9] / ref_s[10] > 1.5
    res = {m: pod(x, RankRule("rank", 10), method=m, rng=1)
           for m in ("svd", "snapshots", "randomized")}  # fmt: skip
    for m, r in res.items():
        s = r.arrays["singular_values"]
        tol = 1e-10 if m != "randomized" else 1e-6
        np.testing.assert_allclose(s, ref_s[:10], rtol=tol)
        assert sine(ref_u[:, :10], r.arrays["basis"]) <= (1e-8 if m != "randomized" else 1e-6)
        assert r.metrics["orthogonality_loss"] <= 1e-12
    assert res["snapshots"].details["rayleigh_ritz"] is True


def test_per_snapshot_errors_and_frobenius_error_match_direct_computation():
    x = heat(seed=2)
    for method in ("svd", "snapshots", "randomized"):
        r = pod(x, RankRule("tol", 1e-4), method=method, rng=0)
        v = r.arrays["basis"]
        res = x - v @ (v.T @ x)
        direct = np.linalg.norm(res, axis=0) / np.linalg.norm(x, axis=0)
        pe = r.metrics["projection_error"]
        # the snapshots path resolves per-snapshot errors to ~√(eps·k)·‖x_j‖ (identity part)
        atol = 1e-12 if method == "svd" else 1e-6
        np.testing.assert_allclose(r.details["per_snapshot_projection_errors"], direct,
                                   rtol=1e-6, atol=atol)  # fmt: skip
        assert pe["worst"] == pytest.approx(direct.max(), rel=1e-6, abs=atol)
        assert pe["worst_snapshot"] == int(np.argmax(direct))
        fro = np.linalg.norm(res) / np.linalg.norm(x)
        assert r.metrics["relative_frobenius_error"] == pytest.approx(fro, rel=1e-6, abs=1e-9)
        assert r.metrics["relative_frobenius_error"] <= 1e-4


def test_by_rule_rows_and_criteria_names():
    x = heat()
    r = pod(x, rule_from("energy", 0.999))
    assert r.rank["rule"] == "energy" and r.rank["by_rule"][0]["given"]
    s = sla.svdvals(x)
    e = np.cumsum(s**2) / np.sum(s**2)
    assert r.rank["value"] == int(np.argmax(e >= 0.999)) + 1
    rows = {(row["rule"], row["threshold"]): row["rank"] for row in r.rank["by_rule"]}
    assert rows[("rel_sv", 1e-3)] == int(np.sum(s >= 1e-3 * s[0]))
    assert rule_from(tol=1e-3).kind == "tol" and rule_from(rank=4).kind == "rank"
    assert rule_from("abs-sv", 0.5).kind == "abs_sv"
    with pytest.raises(ParameterError):
        rule_from("nope", 0.1)


def test_center_subtracts_the_mean_snapshot():
    x = heat(n=600, m=50) + 3.0
    r = pod(x, RankRule("rank", 4), center=True)
    mean = x.mean(axis=1)
    np.testing.assert_allclose(r.arrays["mean"], mean, rtol=1e-13)
    u, s, _ = sla.svd(x - mean[:, None], full_matrices=False)
    np.testing.assert_allclose(r.arrays["singular_values"], s[:4], rtol=1e-10)
    assert sine(u[:, :4], r.arrays["basis"]) <= 1e-8


# --- inner products ----------------------------------------------------------------------------


def spd_mass(n, seed=0):
    """A sparse SPD matrix that is not diagonally dominant (proved SPD by the LDLᵀ check)."""
    rng = np.random.default_rng(seed)
    b = sp.random(n, n, density=3.0 / n, random_state=rng, format="csr")
    mm = (b @ b.T + 0.05 * sp.eye(n)).tocsr()
    diag = mm.diagonal()
    off = np.asarray(abs(mm).sum(axis=1)).ravel() - diag
    assert not (diag > off).all()
    return mm


@pytest.mark.parametrize("method", ["auto", "svd", "snapshots", "randomized"])
def test_mass_matrix_basis_is_m_orthonormal_and_matches_dense_cholesky(method):
    n = 500
    mm = spd_mass(n)
    x = heat(n=n, m=60)
    rank = RankRule("rank", 8)
    r = pod(x, rank, mass=mm, method=method, rng=0)
    v = r.arrays["basis"]
    assert np.max(np.abs(v.T @ (mm @ v) - np.eye(8))) <= 1e-12
    assert r.metrics["orthogonality_loss"] <= 1e-12
    assert "LDLᵀ" in r.details["inner_product"]["check"]
    c = np.linalg.cholesky(mm.toarray())  # M = C Cᵀ: POD = SVD of Cᵀ X
    u, s, _ = sla.svd(c.T @ x, full_matrices=False)
    tol = 1e-9 if method != "randomized" else 1e-6
    np.testing.assert_allclose(r.arrays["singular_values"], s[:8], rtol=tol)
    assert sine(u[:, :8], c.T @ v) <= (1e-7 if method != "randomized" else 1e-5)


def test_weights_equal_a_diagonal_mass_matrix():
    x = heat(n=400, m=40)
    w = np.random.default_rng(0).uniform(0.5, 2.0, 400)
    a = pod(x, RankRule("rank", 5), weights=w)
    b = pod(x, RankRule("rank", 5), mass=sp.diags(w), method="svd")
    np.testing.assert_allclose(a.arrays["singular_values"], b.arrays["singular_values"], rtol=1e-10)
    np.testing.assert_allclose(a.arrays["basis"], b.arrays["basis"], atol=1e-8)
    assert (
        np.max(np.abs(a.arrays["basis"].T @ (w[:, None] * a.arrays["basis"]) - np.eye(5))) < 1e-12
    )


def test_bad_mass_matrices_and_weights():
    x = heat(n=50, m=10)
    with pytest.raises(DataError, match="shape"):
        pod(x, RankRule("rank", 2), mass=sp.eye(49))
    nonsym = sp.eye(50, format="lil")
    nonsym[0, 1] = 0.3
    with pytest.raises(DataError, match="symmetric"):
        pod(x, RankRule("rank", 2), mass=nonsym.tocsr())
    indefinite = sp.diags([np.full(49, 1.0), np.full(50, 1.0), np.full(49, 1.0)], [-1, 0, 1])
    with pytest.raises(DataError, match="positive definite"):
        pod(x, RankRule("rank", 2), mass=indefinite)
    neg = sp.diags(np.r_[np.ones(49), -1.0])
    with pytest.raises(DataError, match="positive definite"):
        pod(x, RankRule("rank", 2), mass=neg)
    with pytest.raises(DataError, match="weights"):
        pod(x, RankRule("rank", 2), weights=np.r_[np.ones(49), 0.0])
    with pytest.raises(DataError, match="weights"):
        pod(x, RankRule("rank", 2), weights=np.ones(7))
    with pytest.raises(ParameterError):
        pod(x, RankRule("rank", 2), weights=np.ones(50), mass=sp.eye(50))


def test_bad_inputs():
    x = heat(n=60, m=12)
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pod(bad, RankRule("rank", 2))
    bad[3, 4] = np.inf
    with pytest.raises(DataError, match="infinite"):
        pod(bad, RankRule("rank", 2))
    with pytest.raises(ParameterError, match="exceeds the number of snapshots"):
        pod(x, RankRule("rank", 13))
    with pytest.raises(DataError):
        pod(np.zeros((5, 0)), RankRule("rank", 1))
    with pytest.raises(DataError):
        pod(np.ones(5), RankRule("rank", 1))
    with pytest.raises(DataError, match="zero"):
        pod(np.zeros((20, 4)), RankRule("tol", 0.1))
    with pytest.raises(ParameterError):
        pod(x, RankRule("rank", 2), method="qr")
    with pytest.raises(DataError, match="complex"):
        pod(x.astype(complex), RankRule("rank", 2))


def test_float32_stays_float32_and_same_seed_same_bytes():
    x = heat(n=600, m=80)
    r64 = pod(x, RankRule("rank", 6))
    for method in ("svd", "snapshots", "randomized"):
        r = pod(x.astype(np.float32), RankRule("rank", 6), method=method, rng=5)
        assert r.arrays["basis"].dtype == np.float32
        assert r.arrays["singular_values"].dtype == np.float32
        # single precision: σ to ~1e-4 of σ₁ relative to each value ≥ 1e-2·σ₁ here
        np.testing.assert_allclose(r.arrays["singular_values"], r64.arrays["singular_values"],
                                   rtol=1e-3)  # fmt: skip
        again = pod(x.astype(np.float32), RankRule("rank", 6), method=method, rng=5)
        assert r.arrays["basis"].tobytes() == again.arrays["basis"].tobytes()
    a = pod(x, RankRule("tol", 1e-5), method="randomized", rng=np.random.default_rng(9))
    b = pod(x, RankRule("tol", 1e-5), method="randomized", rng=np.random.default_rng(9))
    assert a.arrays["basis"].tobytes() == b.arrays["basis"].tobytes()


def test_sign_convention():
    r = pod(heat(), RankRule("rank", 5))
    v = r.arrays["basis"]
    idx = np.argmax(np.abs(v), axis=0)
    assert np.all(v[idx, np.arange(5)] > 0)


# --- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_streamed_snapshots_match_in_memory(center):
    x = heat(n=2000, m=50)
    n = x.shape[0]
    edges = np.linspace(0, 1, n)
    mm = fem_mass(edges)
    for kw in ({}, {"mass": mm}, {"weights": np.linspace(1, 2, n)}):
        ref = pod(x, RankRule("tol", 1e-5), center=center, method="snapshots", **kw)
        src = T.ArraySlabs(x)
        r = pod(src, RankRule("tol", 1e-5), center=center, max_memory=1_000_000, **kw)
        assert r.details["streaming"] and r.details["passes"] >= 2
        assert r.rank["value"] == ref.rank["value"]
        np.testing.assert_allclose(r.arrays["singular_values"], ref.arrays["singular_values"],
                                   rtol=1e-9)  # fmt: skip
        ip = inner_product(n, **kw)
        g = ip.gram(r.arrays["basis"], ref.arrays["basis"])
        # largest sine from the M-cosines: both M-orthonormal, sin² = 1 − σ_min(VᵀMW)²
        assert 1 - sla.svdvals(g).min() ** 2 <= 1e-14
        if center:
            np.testing.assert_allclose(r.arrays["mean"], x.mean(axis=1), rtol=1e-12)


def test_streaming_refuses_a_wide_band_mass_matrix():
    x = heat(n=2000, m=50)
    wide = (sp.eye(2000) + sp.eye(2000, k=1500) * 0.1 + sp.eye(2000, k=-1500) * 0.1).tocsr()
    with pytest.raises(BudgetError, match="bandwidth"):
        pod(T.ArraySlabs(x), RankRule("rank", 3), mass=wide, max_memory=200_000)


# --- enrich and merge --------------------------------------------------------------------------


def test_enrich_one_snapshot_at_a_time_matches_batch():
    x = heat(n=1500, m=150, seed=4)
    rule = RankRule("tol", 1e-6)
    batch = pod(x, rule, method="svd")
    vb, nb = batch.arrays["basis"], batch.rank["value"]
    first = pod(x[:, :1], RankRule("rank", 1))
    e = enrich(first.arrays["basis"], first.arrays["singular_values"], x[:, 1:], rule,
               columns_per_update=1)  # fmt: skip
    v = e.arrays["basis"]
    assert e.rank["value"] == nb
    assert sine(vb, v) <= 1e-8 and sine(v, vb) <= 1e-8
    np.testing.assert_allclose(e.arrays["singular_values"], batch.arrays["singular_values"],
                               rtol=1e-8)  # fmt: skip
    assert e.metrics["orthogonality_loss"] <= 1e-12
    # the bound covers the true error of all snapshots
    true = np.linalg.norm(x - v @ (v.T @ x)) / np.linalg.norm(x)
    assert true <= e.metrics["error_bound"]["relative"] * (1 + 1e-8) + 1e-15
    assert e.metrics["error_bound"]["relative"] <= 1e-6


def test_incremental_from_empty_with_mass_matches_batch():
    x = heat(n=800, m=60, seed=1)
    mm = fem_mass(np.sort(np.random.default_rng(0).uniform(0, 1, 800)))
    rule = RankRule("tol", 1e-6)
    batch = pod(x, rule, mass=mm, method="svd")
    inc = IncrementalPOD(800, rule, mass=mm)
    for j in range(x.shape[1]):
        inc.add(x[:, j])
    r = inc.result()
    assert r.rank["value"] == batch.rank["value"]
    assert msine(batch.arrays["basis"], r.arrays["basis"], mm) <= 1e-8
    v = r.arrays["basis"]
    assert np.max(np.abs(v.T @ (mm @ v) - np.eye(v.shape[1]))) <= 1e-12


def test_enrich_in_blocks_and_discarded_energy_carry_the_bound():
    x = heat(n=1000, m=100, seed=5)
    rule = RankRule("tol", 1e-5)
    part = pod(x[:, :50], rule)
    e = enrich(part.arrays["basis"], part.arrays["singular_values"], x[:, 50:], rule,
               discarded_energy=part.metrics["discarded_energy"])  # fmt: skip
    v = e.arrays["basis"]
    true_sq = np.linalg.norm(x - v @ (v.T @ x)) ** 2
    assert true_sq <= e.metrics["discarded_energy"] * (1 + 1e-8) + 1e-20
    assert math.sqrt(e.metrics["norm_fro"] ** 2) == pytest.approx(np.linalg.norm(x), rel=1e-10)
    before = e.metrics["new_snapshots"]["projection_error_before"]
    vb = part.arrays["basis"]
    direct = np.linalg.norm(x[:, 50:] - vb @ (vb.T @ x[:, 50:]), axis=0) / np.linalg.norm(
        x[:, 50:], axis=0
    )
    assert before["worst"] == pytest.approx(direct.max(), rel=1e-8)


def test_enrich_bad_inputs():
    x = heat(n=100, m=10)
    p = pod(x, RankRule("rank", 3))
    v, s = p.arrays["basis"], p.arrays["singular_values"]
    with pytest.raises(DataError, match="dofs"):
        enrich(v, s, np.ones((99, 2)), RankRule("rank", 3))
    with pytest.raises(DataError):
        enrich(v, s[:2], x, RankRule("rank", 3))
    with pytest.raises(DataError, match="orthonormal"):
        enrich(2 * v, s, x, RankRule("rank", 3))
    with pytest.raises(DataError, match="NaN"):
        enrich(v, s, np.full((100, 1), np.nan), RankRule("rank", 3))
    with pytest.raises(DataError, match="descending"):
        enrich(v, s[::-1], x, RankRule("rank", 3))


def test_merge_is_within_its_bound_of_batch():
    x = heat(n=1200, m=120, seed=6)
    rule = RankRule("tol", 1e-5)
    parts = []
    for cols in (slice(0, 40), slice(40, 80), slice(80, 120)):
        p = pod(x[:, cols], RankRule("tol", 1e-6))
        parts.append((p.arrays["basis"], p.arrays["singular_values"],
                      p.metrics["discarded_energy"]))  # fmt: skip
    mg = merge(parts, rule)
    v = mg.arrays["basis"]
    true = np.linalg.norm(x - v @ (v.T @ x)) / np.linalg.norm(x)
    bound = mg.metrics["error_bound"]["relative"]
    assert true <= bound * (1 + 1e-8)
    assert bound <= 1e-5  # the rule holds with the parts' discards included
    batch = pod(x, rule, method="svd")
    assert abs(mg.rank["value"] - batch.rank["value"]) <= 1
    assert mg.metrics["norm_fro"] == pytest.approx(np.linalg.norm(x), rel=1e-9)
    # the merged subspace approximates the batch one to the discarded level
    nb = batch.rank["value"]
    assert sine(v, batch.arrays["basis"][:, : nb - 1]) <= 1e-3


# --- project -----------------------------------------------------------------------------------


def test_project_errors_match_direct_computation():
    x = heat(n=500, m=40)
    y = heat(n=500, m=15, seed=3) + 0.01 * np.random.default_rng(0).standard_normal((500, 15))
    mm = fem_mass(np.linspace(0, 1, 500))
    p = pod(x, RankRule("rank", 6), mass=mm)
    v = p.arrays["basis"]
    r = project(v, y, mass=mm)
    c = np.linalg.cholesky(mm.toarray())
    res = c.T @ (y - v @ (v.T @ (mm @ y)))
    direct = np.linalg.norm(res, axis=0) / np.linalg.norm(c.T @ y, axis=0)
    np.testing.assert_allclose(r.arrays["projection_errors"], direct, rtol=1e-10)
    assert r.metrics["worst"] == pytest.approx(direct.max(), rel=1e-10)
    assert r.metrics["mean"] == pytest.approx(direct.mean(), rel=1e-10)


def test_project_local_bases_by_nearest_medoid():
    rng = np.random.default_rng(0)
    u1, u2 = (np.linalg.qr(rng.standard_normal((300, 2)))[0] for _ in range(2))
    y = np.hstack([u1 @ rng.standard_normal((2, 5)), u2 @ rng.standard_normal((2, 5))])
    med = np.stack([u1[:, 0], u2[:, 0]], axis=1)
    r = project([u1, u2], y, medoids=med)
    np.testing.assert_array_equal(r.arrays["best_cluster"], [0] * 5 + [1] * 5)
    direct = np.array([np.linalg.norm(y[:, j] - b @ (b.T @ y[:, j])) / np.linalg.norm(y[:, j])
                       for j, b in enumerate([u1] * 5 + [u2] * 5)])  # fmt: skip
    expected = np.where(r.arrays["assigned"] == r.arrays["best_cluster"], direct, np.nan)
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(r.arrays["projection_errors"][ok], expected[ok], atol=1e-12)
    with pytest.raises(DataError, match="medoids"):
        project([u1, u2], y, medoids=med[:, :1])
