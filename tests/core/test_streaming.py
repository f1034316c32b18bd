"""The streaming method (row blocks, one pass per power iteration) against LAPACK and
against the in-memory methods on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from rankwise.core.errors import BudgetError, DataError
from rankwise.core.rank import RankRule
from rankwise.core.svd import truncated_svd


def planted(m, n, s, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return ((u * s) @ v.T).astype(dtype)


class Source:
    """A row-block source like a file handle: shape, dtype, chunks, iter_blocks."""

    def __init__(self, a, chunk_rows=100):
        self.a, self.shape, self.dtype = a, a.shape, a.dtype
        self.chunks = (chunk_rows, a.shape[1])
        self.blocks_served = 0

    def iter_blocks(self, rows):
        for start in range(0, self.shape[0], rows):
            self.blocks_served += 1
            yield start, self.a[start : start + rows]


def sin_max_angle(a, b):
    return float(np.sin(np.max(sla.subspace_angles(a, b))))


def test_streaming_equals_lapack_on_fast_decay():
    s = 0.6 ** np.arange(150)
    a = planted(3000, 150, s, seed=1)
    res = truncated_svd(Source(a), RankRule("rank", 10), method="streaming", rng=0,
                        block_rows=256)  # fmt: skip
    assert res.method == "streaming"
    u, sv, vt = np.linalg.svd(a, full_matrices=False)
    # (σ₂₁/σ₁₀)² = 0.6^22 per pass: a few passes reach rounding.
    np.testing.assert_allclose(res.S, sv[:10], rtol=1e-9)
    assert sin_max_angle(res.U, u[:, :10]) < 1e-7
    assert sin_max_angle(res.Vt.T, vt[:10].T) < 1e-7


@pytest.mark.parametrize("center", [False, True])
def test_streaming_equals_in_memory(center):
    rng = np.random.default_rng(2)
    a = planted(2500, 200, 1.0 / (1.0 + np.arange(200)), seed=2) + rng.normal(2.0, 0.1, 200)
    rule = RankRule("rank", 12)
    stream = truncated_svd(Source(a), rule, method="streaming", rng=0, center=center,
                           block_rows=300)  # fmt: skip
    memory = truncated_svd(a, rule, method="exact", center=center)
    # Optimal error from the exact SVD; the streaming result must be within 1% of it.
    opt = memory.metrics["relative_frobenius_error"]
    assert stream.metrics["relative_frobenius_error"] <= 1.01 * opt
    ref = a - a.mean(axis=0) if center else a
    direct = np.linalg.norm(ref - (stream.U * stream.S) @ stream.Vt) / np.linalg.norm(ref)
    assert stream.metrics["relative_frobenius_error"] == pytest.approx(direct, rel=1e-6)
    if center:
        np.testing.assert_allclose(stream.mean, a.mean(axis=0), rtol=1e-12)


def test_one_pass_per_power_iteration():
    a = planted(1000, 100, 0.9 ** np.arange(100), seed=3)
    src = Source(a)
    res = truncated_svd(src, RankRule("rank", 5), method="streaming", rng=0, power_iters=3,
                        spectral_iters=0, block_rows=100)  # fmt: skip
    # first pass (sketch + norms) + one pass per iteration + the pass keeping A·W
    assert res.details["passes"] == 3 + 2
    assert src.blocks_served == 10 * (3 + 2)
    res = truncated_svd(Source(a), RankRule("rank", 5), method="streaming", rng=0, power_iters=3,
                        spectral_iters=2, block_rows=100)  # fmt: skip
    assert res.details["passes"] == 3 + 2 + 2  # a spectral product is one fused pass


@pytest.mark.parametrize("tol", [1e-1, 1e-3])
def test_streaming_tol_rule(tol):
    s = 1.0 / (1.0 + np.arange(300)) ** 2
    a = planted(1500, 300, s, seed=4)
    res = truncated_svd(Source(a), RankRule("tol", tol), method="streaming", rng=0,
                        block_rows=200)  # fmt: skip
    tails = np.r_[np.cumsum((s**2)[::-1])[::-1], 0] / np.sum(s**2)
    k_min = int(np.flatnonzero(tails <= tol**2)[0])
    assert res.metrics["relative_frobenius_error"] <= tol
    assert k_min <= res.rank["value"] <= k_min + 2


def test_streaming_checks_data_and_hashes_the_first_pass():
    a = planted(800, 40, np.linspace(2, 1, 40), seed=5)
    seen = []
    truncated_svd(Source(a), RankRule("rank", 3), method="streaming", rng=0, block_rows=64,
                  on_first_pass=lambda start, blk: seen.append((start, blk.copy())))  # fmt: skip
    assert [s for s, _ in seen] == list(range(0, 800, 64))
    np.testing.assert_array_equal(np.vstack([b for _, b in seen]), a)
    a[500, 7] = np.nan
    with pytest.raises(DataError, match="NaN"):
        truncated_svd(Source(a), RankRule("rank", 3), method="streaming", rng=0, block_rows=64)


def test_auto_streams_when_memory_is_short_and_refuses_when_even_that_is():
    a = planted(4000, 300, 0.8 ** np.arange(300), seed=6)
    res = truncated_svd(Source(a), RankRule("rank", 5), rng=0, max_memory=6 << 20)
    assert res.method == "streaming" and "memory budget" in res.method_reason
    assert res.details["block_rows"] % 100 == 0  # aligned to the 100-row chunks
    with pytest.raises(BudgetError, match="memory budget"):
        truncated_svd(Source(a), RankRule("rank", 5), rng=0, max_memory=1 << 20)


def test_streaming_float32_and_determinism():
    a = planted(1200, 80, 0.7 ** np.arange(80), seed=7, dtype=np.float32)
    r1 = truncated_svd(Source(a), RankRule("rank", 6), method="streaming", rng=3, block_rows=100)
    r2 = truncated_svd(Source(a), RankRule("rank", 6), method="streaming", rng=3, block_rows=100)
    assert r1.U.dtype == r1.S.dtype == r1.Vt.dtype == np.float32
    assert r1.U.tobytes() == r2.U.tobytes() and r1.S.tobytes() == r2.S.tobytes()
    s64 = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    assert np.max(np.abs(r1.S - s64[:6])) <= 1e-4 * s64[0]


def test_streaming_method_on_an_array():
    a = planted(600, 50, 0.5 ** np.arange(50), seed=8)
    res = truncated_svd(a, RankRule("rank", 4), method="streaming", rng=0)
    np.testing.assert_allclose(res.S, np.linalg.svd(a, compute_uv=False)[:4], rtol=1e-10)


def test_source_that_fits_is_gathered_and_solved_in_memory():
    a = planted(500, 60, 0.7 ** np.arange(60), seed=9)
    seen = []
    res = truncated_svd(Source(a), RankRule("rank", 4),
                        on_first_pass=lambda start, blk: seen.append(start))  # fmt: skip
    assert res.method == "exact" and seen == [0]
    np.testing.assert_allclose(res.S, np.linalg.svd(a, compute_uv=False)[:4], rtol=1e-12)
