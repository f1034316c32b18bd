"""Local POD bases (rankwise.core.local): clustering recovers planted structure, k-medoids
reaches the brute-force optimum on small cases, k-subspaces refinement is monotone, η(K)
matches a hand computation from independent PODs.

Tolerances: label recovery is exact (up to a permutation of cluster numbers); the refinement
objective (total squared projection error from ‖x‖² − ‖Vᵀx‖², float64) may move by rounding,
~m·eps·‖X‖², allowed as 1e-10 relative to the first objective.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg as sla

from rankwise.core.errors import DataError, ParameterError
from rankwise.core.local import efficiency, kmedoids, local_pod
from rankwise.core.pod import pod
from rankwise.core.rank import RankRule


def same_partition(a, b) -> bool:
    """Labels equal up to renumbering the clusters."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def union_of_subspaces(n=200, k=3, per=40, spread=0.5, seed=1):
    """Snapshots s·(u₁ + a·u₂) around a direction of each random 2-D subspace, amplitudes s
    spread over four decades: angles separate the clusters, magnitudes do not."""
    rng = np.random.default_rng(seed)
    cols, truth = [], []
    for c in range(k):
        u = np.linalg.qr(rng.standard_normal((n, 2)))[0]
        a = rng.uniform(-spread, spread, per)
        scale = 10 ** rng.uniform(-2, 2, per)
        cols.append((u[:, :1] + u[:, 1:] * a) * scale)
        truth += [c] * per
    x = np.hstack(cols)
    p = rng.permutation(x.shape[1])
    return np.ascontiguousarray(x[:, p]), np.asarray(truth)[p]


def test_sine_recovers_scaled_subspaces_where_euclidean_fails():
    x, truth = union_of_subspaces()
    sine = local_pod(x, RankRule("tol", 1e-8), clusters=3, dissimilarity="sine", rng=0)
    assert same_partition(sine.arrays["labels"], truth)
    assert [c["rank"] for c in sine.metrics["clusters"]] == [2, 2, 2]
    eu = local_pod(x, RankRule("tol", 1e-8), clusters=3, dissimilarity="euclidean", rng=0)
    assert not same_partition(eu.arrays["labels"], truth)
    # outputs of DESIGN.md
    for c in range(3):
        v = sine.arrays[f"basis/{c}"]
        assert v.shape == (200, 2) and sine.arrays[f"singular_values/{c}"].shape == (2,)
    assert sine.arrays["labels"].dtype == np.int64 and sine.arrays["medoids"].shape == (200, 3)
    for c, j in enumerate(sine.details["medoid_items"]):
        np.testing.assert_array_equal(sine.arrays["medoids"][:, c], x[:, j])
        assert sine.arrays["labels"][j] == c


def test_efficiency_matches_a_hand_computation():
    x, _ = union_of_subspaces(per=30)
    rule = RankRule("tol", 1e-6)
    r = local_pod(x, rule, clusters=3, rng=0)
    labels = r.arrays["labels"]
    m = x.shape[1]
    n_glob = pod(x, rule, method="svd").rank["value"]
    sizes = [int(np.sum(labels == c)) for c in range(3)]
    ranks = [pod(x[:, labels == c], rule, method="svd").rank["value"] for c in range(3)]
    eta = sum(s / m * k for s, k in zip(sizes, ranks, strict=True)) / n_glob
    assert n_glob == 6 and ranks == [2, 2, 2]
    assert r.metrics["global"]["rank"] == n_glob
    assert [c["rank"] for c in r.metrics["clusters"]] == ranks
    assert r.metrics["efficiency"] == pytest.approx(eta, rel=1e-15) == pytest.approx(1 / 3)
    assert efficiency(sizes, ranks, n_glob) == pytest.approx(eta)
    assert r.metrics["feasible"] is True


def test_range_of_k_picks_the_smallest_feasible_efficiency():
    x, truth = union_of_subspaces(per=30)
    r = local_pod(x, RankRule("tol", 1e-6), clusters=range(1, 6), rng=0)
    rows = {row["clusters"]: row for row in r.metrics["by_k"]}
    assert rows[1]["efficiency"] == pytest.approx(1.0)
    feasible = [k for k, row in rows.items() if row["feasible"]]
    best = min(feasible, key=lambda k: (rows[k]["efficiency"], k))
    assert r.metrics["chosen_k"] == best == 3
    assert same_partition(r.arrays["labels"], truth)


def test_infeasible_cluster_is_flagged():
    x, _ = union_of_subspaces(per=4)  # 12 snapshots, 3 clusters of rank 2
    for rank in (4, 6):  # equal to and larger than the cluster sizes
        r = local_pod(x, RankRule("rank", rank), clusters=3, rng=0)
        rows = r.metrics["clusters"]
        assert all(c["rank"] == min(rank, c["snapshots"]) for c in rows)
        assert r.metrics["feasible"] is False
        assert any("feasible" in w for w in r.warnings)


def test_kmedoids_reaches_the_brute_force_optimum():
    rng = np.random.default_rng(7)
    for trial in range(5):
        pts = rng.standard_normal((12, 2)) + rng.integers(0, 3, 12)[:, None] * 3.0
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
        for k in (2, 3):
            best = min(d[:, list(c)].min(axis=1).sum()
                       for c in itertools.combinations(range(12), k))  # fmt: skip
            out = kmedoids(d, k, n_init=4, rng=trial)
            assert out["objective"] == pytest.approx(best, rel=1e-12)
            assert np.all(np.diff([h["objective"] for h in out["history"]]) <= 1e-12)


def test_refinement_never_increases_the_projection_error():
    # full 2-D spread inside each subspace: sine k-medoids mixes clusters, k-subspaces repairs
    x, truth = union_of_subspaces(n=60, k=3, per=30, spread=3.0, seed=4)
    x = x + 1e-3 * np.random.default_rng(0).standard_normal(x.shape) * np.abs(x).max()
    rule = RankRule("rank", 2)
    plain = local_pod(x, rule, clusters=3, rng=2, n_init=2)
    ref = local_pod(x, rule, clusters=3, rng=2, n_init=2, refine=True)
    hist = [h["objective"] for h in ref.details["refine_history"]]
    assert all(b <= a + 1e-10 * hist[0] for a, b in itertools.pairwise(hist))
    assert sum(h.get("moved", 0) for h in ref.details["refine_history"]) > 0  # it did work

    def total_error(res):
        lab = res.arrays["labels"]
        tot = 0.0
        for c in range(len(res.metrics["clusters"])):
            v = res.arrays[f"basis/{c}"]
            xc = x[:, lab == c]
            tot += np.linalg.norm(xc - v @ (v.T @ xc)) ** 2
        return tot

    assert total_error(ref) <= total_error(plain) * (1 + 1e-10)
    assert total_error(ref) == pytest.approx(hist[-1], rel=1e-6)


def test_grassmann_clusters_whole_simulations():
    rng = np.random.default_rng(3)
    n, sims = 120, []
    spaces = [np.linalg.qr(rng.standard_normal((n, 3)))[0] for _ in range(2)]
    groups, truth = [], []
    for s in range(8):
        family = s % 2
        # each simulation: 10 snapshots in a slightly rotated copy of its family's space
        u = np.linalg.qr(spaces[family] + 0.01 * rng.standard_normal((n, 3)))[0]
        sims.append(u @ rng.standard_normal((3, 10)))
        groups += [f"run{s}"] * 10
        truth += [family] * 10
    x = np.hstack(sims)
    r = local_pod(x, RankRule("tol", 1e-8), clusters=2, dissimilarity="grassmann",
                  groups=np.array(groups), rng=0)  # fmt: skip
    assert same_partition(r.arrays["labels"], truth)
    assert r.details["items"] == "groups"
    # the chordal distance against scipy's principal angles, for two simulations
    a = np.linalg.qr(sims[0])[0]
    b = np.linalg.qr(sims[1])[0]
    theta = sla.subspace_angles(a, b)
    from rankwise.core.local import _grassmann
    from rankwise.core.pod import inner_product

    d = _grassmann([(a, None), (b, None)], inner_product(n))
    assert d[0, 1] == pytest.approx(np.sqrt(np.sum(np.sin(theta) ** 2)), rel=1e-10)


def test_same_seed_same_bytes_and_float32():
    x, _ = union_of_subspaces(per=20)
    a = local_pod(x.astype(np.float32), RankRule("tol", 1e-4), clusters=3, rng=11)
    b = local_pod(x.astype(np.float32), RankRule("tol", 1e-4), clusters=3, rng=11)
    for key, v in a.arrays.items():
        assert v.tobytes() == b.arrays[key].tobytes(), key
    assert a.arrays["basis/0"].dtype == np.float32 and a.arrays["medoids"].dtype == np.float32


def test_bad_inputs():
    x, _ = union_of_subspaces(per=5)
    with pytest.raises(ParameterError):
        local_pod(x, RankRule("rank", 1), clusters=16)
    with pytest.raises(ParameterError, match="groups"):
        local_pod(x, RankRule("rank", 1), dissimilarity="grassmann")
    with pytest.raises(ParameterError):
        local_pod(x, RankRule("rank", 1), dissimilarity="cosine")
    with pytest.raises(DataError):
        local_pod(x, RankRule("rank", 1), dissimilarity="grassmann", groups=np.zeros(3))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        local_pod(bad, RankRule("rank", 1))
    with pytest.raises(ParameterError):
        local_pod(x, RankRule("rank", 1), clusters=0)
