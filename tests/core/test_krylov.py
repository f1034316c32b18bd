"""Block Lanczos on the Gram operator (core/krylov.py, ``svd --method lanczos``) against
LAPACK (numpy) and ARPACK (scipy.sparse.linalg.svds, tol=0).

Where the tolerances come from: the solver stops when every wanted Ritz value θ of G = AᵀA
has an error bound min(r, r²/gap) ≤ tol·θ (tol = 1e-10 in float64) and every Ritz vector a
sine bound r/gap ≤ vtol (1e-4); the last, two-sided step (Q = orth(AW), B = QᵀA) gives σ as
singular values of B, which are at least the Ritz values' accuracy. So σ_i is within
~tol/2·σ_i of the truth: we allow 1e-9·σ_i plus LAPACK's own rounding, 1e-12·σ₁ (Weyl).
Subspaces are compared by principal angles; their sines are bounded by the residuals over
the gap that separates the subspace from the rest (Davis–Kahan), ≤ √k·vtol·(gap_i/gap) —
we allow 1e-3 (float64) where that gap is at least 10% of σ_k.
"""

from __future__ import annotations

import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp

from rankwise.core import krylov
from rankwise.core import svd as svd_mod
from rankwise.core.errors import BudgetError
from rankwise.core.operator import as_operator
from rankwise.core.rank import RankRule
from rankwise.core.svd import plan, truncated_svd


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """LAPACK truths on these small matrices take milliseconds with one BLAS thread and up to
    seconds with idle threads spinning on a busy machine (measured: 2.4 s for a 400×150 SVD).
    The solver's own threads are tested explicitly (threads=2)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def planted(m, n, s, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return ((u * s) @ v.T).astype(dtype)


def sin_max_angle(a, b):
    return float(np.sin(np.max(sla.subspace_angles(a, b))))


def ratings(m, n, nnz, seed=0):
    """The benchmark's matrix in small: a rank-30 model plus noise at skewed positions."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, m, nnz)
    cols = np.minimum((rng.pareto(1.2, nnz) * n / 50).astype(np.int64), n - 1)
    u = rng.standard_normal((m, 30))
    v = rng.standard_normal((n, 30)) * (0.8 ** np.arange(30))
    vals = np.einsum("ij,ij->i", u[rows], v[cols]) + 0.5 * rng.standard_normal(nnz)
    a = sp.coo_array((vals, (rows, cols)), shape=(m, n)).tocsr()
    a.sum_duplicates()
    return a


# name: (spectrum of min(m, n) = 150 values, k, leading directions whose subspace is checked)
SPECTRA = {
    "fast": (0.5 ** np.arange(150), 8, 8),
    "slow": (1.0 / (1.0 + np.arange(150)), 8, 8),
    # two clusters of near-equal values (relative spacing 1e-4): k = 8 cuts the second one,
    # so only the first cluster's subspace is determined
    "clustered": (
        np.r_[
            1 + 1e-4 * np.arange(6)[::-1],
            0.5 + 1e-4 * np.arange(4)[::-1],
            0.3 * 0.95 ** np.arange(140),
        ],
        8,
        6,
    ),  # fmt: skip
    # exact rank 5 below k = 8: three zero singular values
    "low_rank": (np.r_[np.linspace(3, 1, 5), np.zeros(145)], 8, 5),
    # numerically rank-deficient: a slowly decaying part, then exact zeros
    "deficient": (np.r_[np.logspace(0, -3, 140), np.zeros(10)], 8, 8),
}


@pytest.mark.parametrize("name", list(SPECTRA))
@pytest.mark.parametrize("kind", ["sparse", "dense", "wide"])
def test_planted_spectra_match_lapack(name, kind):
    s, k, check = SPECTRA[name]
    shape = (150, 400) if kind == "wide" else (400, 150)
    a = planted(*shape, s, seed=1)
    inp = a if kind == "dense" else sp.csr_array(a)
    res = truncated_svd(inp, RankRule("rank", k), method="lanczos", rng=0, spectral_iters=0)
    assert res.details["solver"] == "block-lanczos" and res.converged
    assert res.details["gram_side"] == ("AAᵀ" if kind == "wide" else "AᵀA")
    u, s_np, vt = np.linalg.svd(a, full_matrices=False)
    assert np.all(np.abs(res.S - s_np[:k]) <= 1e-9 * s_np[:k] + 1e-12 * s_np[0])
    assert sin_max_angle(res.U[:, :check], u[:, :check]) < 1e-3
    assert sin_max_angle(res.Vt[:check].T, vt[:check].T) < 1e-3
    # the reported bounds are the ones the stopping rule used
    assert res.details["ritz_angle_max"] <= krylov.default_vtol(np.float64)
    # the error from the norm identity matches the factors
    direct = np.linalg.norm(a - (res.U * res.S) @ res.Vt) / np.linalg.norm(a)
    assert res.metrics["relative_frobenius_error"] == pytest.approx(direct, rel=1e-6, abs=1e-12)


def test_repeated_value_beyond_the_block_is_found():
    # σ = 2 six times; k = 5 uses blocks of 2, and a Krylov space started from 2 vectors
    # holds at most 2 copies of an exactly repeated value: the validation block finds the
    # others (ARPACK finds them through rounding while it iterates to tol = 0).
    s = np.r_[np.full(6, 2.0), np.full(6, 1.0), 0.5 * 0.97 ** np.arange(138)]
    a = planted(400, 150, s, seed=2)
    res = truncated_svd(sp.csr_array(a), RankRule("rank", 5), method="lanczos", rng=0)
    assert res.details["sizes"]["block"] < 5
    assert any(ev.get("validation") for ev in res.history)
    np.testing.assert_allclose(res.S, 2.0, rtol=1e-9)
    top = np.linalg.svd(a, full_matrices=False)[2][:6].T  # the 6-dimensional eigenspace
    outside = res.Vt.T - top @ (top.T @ res.Vt.T)
    assert np.linalg.norm(outside) < 1e-6


def test_ratings_like_matrix_matches_arpack():
    from scipy.sparse.linalg import svds

    a = ratings(3000, 800, 30_000)
    k = 10
    u, s, vt = svds(a, k=k, v0=np.ones(800), tol=0)
    order = np.argsort(s)[::-1]
    u, s, vt = u[:, order], s[order], vt[order]
    res = truncated_svd(a, RankRule("rank", k), method="lanczos", rng=0, spectral_iters=0)
    # σ to tol/2 = 5e-11 by the Ritz bounds; ARPACK with tol=0 is at machine precision
    assert np.max(np.abs(res.S - s) / s) <= 1e-8
    norm = sp.linalg.norm(a)

    def err(uu, ss, vv):
        cross = np.einsum("ij,ij->j", uu, a @ vv.T) @ ss
        return np.sqrt(norm**2 - 2 * cross + ss @ ss) / norm

    assert err(res.U, res.S, res.Vt) == pytest.approx(err(u, s, vt), rel=1e-8)


def test_float32_stays_float32():
    s = 0.9 ** np.arange(150)
    a = sp.csr_array(planted(400, 150, s, seed=3, dtype=np.float32))
    res = truncated_svd(a, RankRule("rank", 6), method="lanczos", rng=0)
    assert res.U.dtype == res.S.dtype == res.Vt.dtype == np.float32
    assert res.details["tol"] == krylov.default_tol(np.float32)
    s64 = np.linalg.svd(a.toarray().astype(np.float64), compute_uv=False)
    # float32 rounding of the products and the basis: eps32 ≈ 1.2e-7 times a size factor
    assert np.max(np.abs(res.S - s64[:6])) <= 1e-4 * s64[0]


def test_centered_sparse_is_pca():
    rng = np.random.default_rng(4)
    a = sp.random_array((1500, 300), density=0.03, rng=rng, format="csr") * 4
    res = truncated_svd(a, RankRule("rank", 5), method="lanczos", center=True, rng=0)
    dense = a.toarray()
    s = np.linalg.svd(dense - dense.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(res.S, s[:5], rtol=1e-9)


def _threaded(monkeypatch):
    """Make the small test matrices go through the threaded row ranges."""
    monkeypatch.setattr(krylov, "THREAD_MIN_NNZ", 0)
    monkeypatch.setattr(krylov.RowSplit, "MIN_ROWS", 16)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_threaded_products_equal_serial(monkeypatch, center, kind):
    _threaded(monkeypatch)
    a = ratings(500, 200, 5000, seed=5)
    op = as_operator(a if kind == "sparse" else a.toarray(), center=center)
    x = np.random.default_rng(0).standard_normal((200, 3))
    y = np.random.default_rng(1).standard_normal((500, 3))
    serial = krylov.GramProducts(op)
    with ThreadPoolExecutor(2) as pool:
        par = krylov.GramProducts(op, 2, pool)
        assert len(par.ranges) == 2 * krylov.CHUNKS_PER_THREAD
        for f in ("gram", "matmat", "rmatmat"):
            arg = y if f == "rmatmat" else x
            np.testing.assert_allclose(getattr(par, f)(arg), getattr(serial, f)(arg),
                                       rtol=1e-12, atol=1e-12)  # fmt: skip
    dense = a.toarray() - (a.toarray().mean(axis=0) if center else 0.0)
    np.testing.assert_allclose(serial.gram(x), dense.T @ (dense @ x), rtol=1e-12, atol=1e-10)


def test_same_seed_same_bytes_with_threads(monkeypatch):
    _threaded(monkeypatch)
    a = ratings(800, 300, 8000, seed=6)
    runs = [krylov.gram_svd(as_operator(a), 6, rng=np.random.default_rng(7), threads=t)[0]
            for t in (2, 2, 1)]  # fmt: skip
    assert runs[0].details["threads"] == 2 and runs[2].details["threads"] == 1
    assert runs[0].left.tobytes() == runs[1].left.tobytes()
    assert runs[0].right.tobytes() == runs[1].right.tobytes()
    # another partition of the rows changes the rounding only
    sv = [np.linalg.svd(r.right, compute_uv=False)[:6] for r in (runs[0], runs[2])]
    np.testing.assert_allclose(sv[0], sv[1], rtol=1e-10)


def test_memory_budget_refused_before_allocating():
    a = sp.random_array((200_000, 40_000), density=2e-6, rng=np.random.default_rng(8),
                        format="csr")  # fmt: skip
    # the basis alone: ~70 vectors of 40000 doubles ≈ 22 MB
    tracemalloc.start()
    try:
        with pytest.raises(BudgetError, match="memory budget"):
            truncated_svd(a, RankRule("rank", 20), method="lanczos", max_memory=8 << 20)
        with pytest.raises(BudgetError, match="block Lanczos"):
            krylov.gram_svd(as_operator(a), 20, rng=np.random.default_rng(0),
                            max_memory=8 << 20)  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nothing basis-sized was allocated


def test_memory_budget_limits_the_basis():
    m, n, k = 40_000, 40_000, 20
    default = krylov.sizes(k, n)
    full = krylov.working_bytes(m, n, k, 8, 2, default)
    sz, threads, what = krylov.fit_budget(m, n, k, 8, 2, full - 1)
    assert sz.basis < default.basis and "memory budget" in what
    assert krylov.working_bytes(m, n, k, 8, threads, sz) <= full - 1
    # the plan accepts a budget the smaller basis fits
    p = plan((m, n), np.float64, rule=RankRule("rank", k), method="lanczos", sparse=True,
             nnz=100_000, max_memory=full)  # fmt: skip
    assert p.estimate_bytes <= full


def test_arpack_fallback_and_forced_arpack(monkeypatch):
    a = sp.csr_array(planted(300, 120, 0.8 ** np.arange(120), seed=9))
    s_np = np.linalg.svd(a.toarray(), compute_uv=False)
    monkeypatch.setattr(krylov, "MAX_PRODUCTS_PER_VECTOR", 0)  # give up at once
    res = truncated_svd(a, RankRule("rank", 5), method="lanczos", rng=0)
    assert res.details["solver"] == "arpack" and "block Lanczos" in res.details["fallback_reason"]
    assert res.stop_reason == "ARPACK converged (fallback)"
    np.testing.assert_allclose(res.S, s_np[:5], rtol=1e-10)
    monkeypatch.setattr(svd_mod, "LANCZOS_SOLVER", "arpack")
    res = truncated_svd(a, RankRule("rank", 5), method="lanczos", rng=0)
    assert res.details["solver"] == "arpack" and "fallback_reason" not in res.details


def test_callback_stops_at_a_restart():
    a = sp.csr_array(planted(400, 150, 1.0 / np.sqrt(1.0 + np.arange(150)), seed=10))
    seen = []
    res = truncated_svd(a, RankRule("rank", 12), method="lanczos", rng=0,
                        callback=lambda ev: seen.append(ev) or True)  # fmt: skip
    assert len(seen) == 1 and "products" in seen[0]
    assert not res.converged and res.stop_reason == "stopped by callback"


def test_auto_chooses_block_lanczos_for_large_sparse_fixed_rank():
    p = plan((200_000, 50_000), np.float64, rule=RankRule("rank", 20), sparse=True,
             nnz=5_000_000)  # fmt: skip
    assert p.method == "lanczos"
    assert "block Lanczos" in p.reason and "never densified" in p.reason


def test_history_and_details_report_the_solve():
    a = ratings(2000, 500, 20_000, seed=11)
    t = time.perf_counter()
    res = truncated_svd(a, RankRule("rank", 8), method="lanczos", rng=0)
    assert time.perf_counter() - t < 30  # a hang would show here, not a timing claim
    d = res.details
    assert d["products"] > 0 and d["passes"] >= 4 and d["kernel"] == "sparsetools"
    assert res.history and all(ev["rank"] == 8 for ev in res.history)
    assert res.history[-1]["converged"] == 8
    # no repeated values among the wanted ones: no validation block
    assert not any(ev.get("validation") for ev in res.history)
