"""Rank rules against brute force over every candidate rank."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.core.rank import RankRule, Spectrum, ranks_by_rule, select_rank


def brute(s, kind, v):
    s2 = s**2
    total = s2.sum()
    for k in range(1, len(s) + 1):
        tail = s2[k:].sum()
        if kind == "tol" and np.sqrt(tail / total) <= v:
            return k
        if kind == "abs_frob" and np.sqrt(tail) <= v:
            return k
        if kind == "energy" and s2[:k].sum() / total >= v * (1 - 1e-15):
            return k
    return len(s)


@pytest.mark.parametrize(
    "kind,v",
    [
        ("tol", 0.5),
        ("tol", 0.05),
        ("tol", 1e-3),
        ("abs_frob", 0.2),
        ("energy", 0.9),
        ("energy", 0.999),
    ],
)
def test_complete_spectrum_matches_brute_force(kind, v):
    s = np.sort(np.random.default_rng(0).exponential(size=60))[::-1] ** 3
    spec = Spectrum(s=s, total_sq=float((s**2).sum()), max_rank=60, complete=True)
    assert select_rank(spec, RankRule(kind, v)) == brute(s, kind, v)


def test_partial_spectrum_uses_norm_and_says_when_unknown():
    s_all = 0.5 ** np.arange(40)
    total = float((s_all**2).sum())
    spec = Spectrum(s=s_all[:10], total_sq=total, max_rank=40, complete=False)
    assert select_rank(spec, RankRule("tol", 1e-2)) == brute(s_all, "tol", 1e-2)
    assert select_rank(spec, RankRule("tol", 1e-6)) is None  # needs more than 10 values
    assert select_rank(spec, RankRule("rel_sv", 1e-2)) == 7  # 0.5^6 ≥ 1e-2 > 0.5^7
    assert select_rank(spec, RankRule("rel_sv", 1e-6)) is None


def test_fixed_rank_clamps_and_minimum_is_one():
    spec = Spectrum(s=np.array([3.0, 1.0]), total_sq=10.0, max_rank=2, complete=True)
    assert select_rank(spec, RankRule("rank", 9)) == 2
    zero = Spectrum(s=np.zeros(3), total_sq=0.0, max_rank=3, complete=True)
    assert select_rank(zero, RankRule("tol", 0.1)) == 1


def test_ranks_by_rule_lists_given_rule_first_and_references():
    s = 1.0 / (1 + np.arange(50))
    spec = Spectrum(s=s, total_sq=float((s**2).sum()), max_rank=50, complete=True)
    rows = ranks_by_rule(spec, RankRule("tol", 0.05))
    assert rows[0] == {
        "rule": "tol",
        "threshold": 0.05,
        "rank": brute(s, "tol", 0.05),
        "given": True,
    }
    by = {(r["rule"], r["threshold"]): r["rank"] for r in rows}
    assert by[("energy", 0.99)] == brute(s, "energy", 0.99)
    assert all(not r["given"] for r in rows[1:])
