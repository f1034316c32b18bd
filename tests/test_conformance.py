"""One conformance suite for every algorithm (as scikit-learn's estimator checks).

Each entry says how to call the core function and the CLI command; every check below runs
over every entry. New algorithms add an entry to ALGORITHMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from helpers import load_report

from rankwise.core.errors import DataError
from rankwise.core.rank import RankRule
from rankwise.formats import read_result


@dataclass(frozen=True)
class Algorithm:
    name: str
    command: list[str]  # CLI words before the input URI
    fit: Any  # fit(array, rank, seed) -> result with .arrays and .warnings
    random: bool  # does the seed matter?
    nonneg: bool = False  # needs nonnegative data (NMF)
    nan_missing: bool = False  # NaN marks a missing entry instead of bad data
    files: dict | None = None  # extra input files the CLI command names: {name: maker(a)}
    order: int = 2  # the order of the data it gets (2: a matrix)
    rank_option: str = "--rank"  # how the CLI command takes the rank
    bad_orders: tuple = (1, 3)  # orders it refuses (besides empty data)


def _svd(method):
    from rankwise.core.svd import truncated_svd

    return lambda a, k, seed: truncated_svd(a, RankRule("rank", k), method=method, rng=seed)


def _nmf(**kw):
    from rankwise.core.nmf import nmf, semi_nmf

    if kw.pop("semi", False):
        return lambda a, k, seed: semi_nmf(a, k, rng=seed, max_iter=50, **kw)
    return lambda a, k, seed: nmf(a, k, rng=seed, max_iter=50, **kw)


def _cur(a, k, seed):
    from rankwise.core.cur import cur

    return cur(a, k, rng=seed)


def _block(shape) -> tuple[int, int]:
    """A Kronecker block that tiles any shape here (empty and 1-D shapes get (1, 1))."""
    dims = tuple(shape) if len(shape) == 2 else (1, 1)
    return tuple(2 if d and d % 2 == 0 else 1 for d in dims)


def _kpsvd(a, k, seed):
    from rankwise.core.kpsvd import kpsvd

    return kpsvd(a, _block(np.shape(a)), rule=RankRule("rank", k), rng=seed)


def _weighted(a, k, seed):
    from rankwise.core.wsvd import weighted_svd

    m, n = np.shape(a) if np.ndim(a) == 2 else (1, 1)
    return weighted_svd(a, RankRule("rank", k), row_weights=np.linspace(1, 2, m),
                        col_weights=np.linspace(2, 1, n), rng=seed)  # fmt: skip


def _elementwise(a, k, seed):
    from rankwise.core.wsvd import elementwise_weighted_svd

    w = np.random.default_rng(1).uniform(0.5, 1.5, np.shape(a))
    return elementwise_weighted_svd(a, w, k, rng=seed, max_iter=30)


def _cp(**kw):
    from rankwise.core.cp import cp

    return lambda a, k, seed: cp(a, k, rng=seed, max_iter=50, **kw)


def _tucker(a, k, seed):
    from rankwise.core.tucker import tucker

    return tucker(a, ranks=k, rng=seed)


def _tt(a, k, seed):
    from rankwise.core.tt import tt

    return tt(a, max_rank=k)


def _pod(method):
    from rankwise.core.pod import pod

    return lambda a, k, seed: pod(a, RankRule("rank", k), method=method, rng=seed)


def _local(a, k, seed):
    from rankwise.core.local import local_pod

    return local_pod(a, RankRule("rank", k), clusters=2, rng=seed, n_init=2)


def _complete(method, **kw):
    from rankwise.core.complete import complete

    return lambda a, k, seed: complete(a, k, method=method, rng=seed, max_iter=30, **kw)


def _weights_file(a):
    return np.random.default_rng(1).uniform(0.5, 1.5, a.shape)


ALGORITHMS = [
    Algorithm("svd-exact", ["svd", "--method", "exact"], _svd("exact"), False),
    Algorithm("svd-randomized", ["svd", "--method", "randomized"], _svd("randomized"), True),
    Algorithm("svd-lanczos", ["svd", "--method", "lanczos"], _svd("lanczos"), True),
    Algorithm("svd-row-col-weights", ["svd", "--row-weights", "r.npy", "--col-weights",
              "c.npy"], _weighted, False,
              files={"r.npy": lambda a: np.linspace(1, 2, a.shape[0]),
                     "c.npy": lambda a: np.linspace(2, 1, a.shape[1])}),
    Algorithm("svd-elementwise-weights", ["svd", "--weights", "w.npy"], _elementwise, False,
              files={"w.npy": _weights_file}),
    Algorithm("nmf-hals", ["nmf"], _nmf(), False, nonneg=True, nan_missing=True),
    Algorithm("nmf-mu-kl", ["nmf", "--loss", "kl"], _nmf(loss="kl"), False, nonneg=True,
              nan_missing=True),
    Algorithm("nmf-random-init", ["nmf", "--init", "random"], _nmf(init="random"), True,
              nonneg=True, nan_missing=True),
    Algorithm("semi-nmf", ["nmf", "--semi"], _nmf(semi=True), False),
    Algorithm("semi-nmf-random", ["nmf", "--semi", "--init", "random"],
              _nmf(semi=True, init="random"), True),
    Algorithm("cur-randomized", ["cur"], _cur, True),
    Algorithm("kpsvd", ["kpsvd", "--block", "2x1"], _kpsvd, False),
    Algorithm("cp-als", ["cp"], _cp(), False, order=3, bad_orders=(1, 2)),
    Algorithm("cp-random-init", ["cp", "--init", "random"], _cp(init="random"), True,
              order=3, bad_orders=(1, 2)),
    Algorithm("cp-nonneg", ["cp", "--nonneg"], _cp(nonneg=True), False, nonneg=True, order=3,
              bad_orders=(1, 2)),
    Algorithm("tucker", ["tucker"], _tucker, False, order=3, rank_option="--ranks",
              bad_orders=(1, 2)),
    Algorithm("tt", ["tt"], _tt, False, order=3, rank_option="--max-rank", bad_orders=(1,)),
    Algorithm("complete-softimpute", ["complete", "--method", "softimpute"],
              _complete("softimpute"), True, nan_missing=True),
    Algorithm("complete-altmin-cg", ["complete", "--method", "altmin", "--solver", "cg"],
              _complete("altmin", solver="cg"), True, nan_missing=True),
    # the first CP run starts from the (deterministic) spectral start: without a hold-out split
    # or restarts no random step is left (tests/core/test_complete.py checks the split's seed)
    Algorithm("complete-cp", ["complete", "--method", "cp"], _complete("cp"), False,
              nan_missing=True, order=3, bad_orders=(1, 2)),
    Algorithm("rob-pod-svd", ["rob", "pod", "--method", "svd"], _pod("svd"), False),
    Algorithm("rob-pod-snapshots", ["rob", "pod", "--method", "snapshots"], _pod("snapshots"),
              False),
    Algorithm("rob-pod-randomized", ["rob", "pod", "--method", "randomized"],
              _pod("randomized"), True),
    # k-medoids restarts reach the same optimum whatever the seed on this data: the seed's
    # arrival is checked by a spy in tests/cli/test_rob_cli.py
    Algorithm("rob-local", ["rob", "local", "--clusters", "2"], _local, False),
]  # fmt: skip
IDS = [a.name for a in ALGORITHMS]


def data(m=60, n=26, dtype=np.float64, seed=0, nonneg=False):
    rng = np.random.default_rng(seed)
    if nonneg:
        return (rng.random((m, 6)) @ rng.random((6, n))).astype(dtype)
    return (rng.standard_normal((m, 6)) @ rng.standard_normal((6, n))).astype(dtype)


TENSOR = (12, 10, 8)
SMALL_TENSOR = (4, 3, 2)


def sample(alg, *, small=False, dtype=np.float64, seed=0, planted=True):
    """The data an algorithm gets: a matrix, or a tensor of its order (a planted rank-6 CP
    model, or plain random entries)."""
    if alg.order == 2:
        if not planted:
            rng = np.random.default_rng(seed)
            return rng.random((60, 26)) if alg.nonneg else rng.standard_normal((60, 26))
        m, n = (20, 8) if small else (60, 26)
        return data(m, n, dtype, seed, alg.nonneg)
    shape = SMALL_TENSOR if small else TENSOR
    rng = np.random.default_rng(seed)
    draw = rng.random if alg.nonneg else rng.standard_normal
    if not planted:
        return draw(shape).astype(dtype)
    factors = [draw((n, 6)) for n in shape]
    return np.einsum("ir,jr,kr->ijk", *factors).astype(dtype)


def largest_rank(shape) -> int:
    """No factor dimension may exceed this: min(m, n) bounds matrix ranks by max(m, n);
    ∏I/max I_n bounds CP ranks."""
    if len(shape) == 2:
        return max(shape)
    return max(max(shape), math.prod(shape) // max(shape))


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused(alg, bad):
    a = sample(alg)
    a[(3, 4) + (1,) * (a.ndim - 2)] = bad
    if alg.nan_missing and np.isnan(bad):
        res = alg.fit(a, 2, 0)  # a missing entry: the fit covers the others
        assert all(np.isfinite(x).all() for x in res.arrays.values())
        return
    with pytest.raises(DataError):
        alg.fit(a, 2, 0)


WRONG_ORDER = {1: (7,), 2: (5, 6), 3: (2, 3, 4)}


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("case", ["empty-first", "empty-second", "wrong-order", "order-1"])
def test_empty_and_wrong_ndim_refused(alg, case):
    if case.startswith("empty"):
        shape = [5] * alg.order
        shape[0 if case == "empty-first" else 1] = 0
    else:
        orders = [o for o in alg.bad_orders if (o == 1) == (case == "order-1")]
        if not orders:
            pytest.skip(f"{alg.name} accepts every order above 1")
        shape = WRONG_ORDER[orders[-1]]
    with pytest.raises(DataError):
        alg.fit(np.ones(shape), 1, 0)


# ARPACK cannot return min(m, n) triplets: forcing Lanczos with such a rank is a usage error
# (tested in tests/core/test_svd.py), so it is left out here. A TT --max-rank is a cap, not a
# request: a cap above the feasible bond rank is simply not binding (tests/core/test_tt.py).
# POD refuses a fixed rank above the number of snapshots (ParameterError: a basis cannot have
# more modes than snapshots, tested in tests/core/test_pod.py) instead of clamping it.
CLAMPING = [a for a in ALGORITHMS if a.name not in ("svd-lanczos", "tt")
            and not a.name.startswith("rob-")]  # fmt: skip


@pytest.mark.parametrize("alg", CLAMPING, ids=[a.name for a in CLAMPING])
def test_rank_larger_than_data_is_clamped_with_warning(alg):
    a = sample(alg, small=True)
    res = alg.fit(a, 50, 0)
    bound = largest_rank(a.shape)
    assert max(x.shape[-1] if x.ndim > 1 else x.shape[0] for x in res.arrays.values()) <= bound
    assert any("clamp" in w for w in res.warnings)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_float32_kept(alg):
    res = alg.fit(sample(alg, dtype=np.float32), 3, 0)
    floats = [x for x in res.arrays.values() if x.dtype.kind == "f"]  # CUR indices are int64
    assert floats and all(x.dtype == np.float32 for x in floats)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_same_seed_same_bytes(alg):
    a = sample(alg)
    r1, r2 = alg.fit(a, 4, 7), alg.fit(a, 4, 7)
    assert {k: v.tobytes() for k, v in r1.arrays.items()} == {
        k: v.tobytes() for k, v in r2.arrays.items()
    }


RANDOM = [a for a in ALGORITHMS if a.random]


@pytest.mark.parametrize("alg", RANDOM, ids=[a.name for a in RANDOM])
def test_the_seed_reaches_every_random_step(alg):
    # a slowly decaying spectrum: a sketch that depends on the seed changes the result
    a = sample(alg, seed=3, planted=False)
    r1, r2 = alg.fit(a, 4, 1), alg.fit(a, 4, 2)
    assert {k: v.tobytes() for k, v in r1.arrays.items()} != {
        k: v.tobytes() for k, v in r2.arrays.items()
    }


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_cli_report_fields_and_output(alg, cli, tmp_path):
    a = sample(alg)
    np.save(tmp_path / "x.npy", a)
    for name, make in (alg.files or {}).items():
        np.save(tmp_path / name, make(a))
    cli(*alg.command, "x.npy", "-o", "o.npz", alg.rank_option, "3", "--seed", "5")
    rep = load_report(tmp_path / "o.report.json")  # validates against the schema
    arrays, attrs = read_result(tmp_path / "o.npz")
    command = " ".join(alg.command[:2]) if alg.command[0] == "rob" else alg.command[0]
    assert attrs["kind"] == command == rep["command"]
    assert set(rep["output"]["arrays"]) == set(arrays)
    assert rep["seed"] == 5 and rep["input"]["fingerprint"].startswith("xxh128:")
    for key in ("read", "compute", "write", "total"):
        assert rep["timings"][key] >= 0
    assert rep["memory"]["peak_rss_bytes"] > 0 and rep["method"]["reason"]
