"""One conformance suite for every algorithm (as scikit-learn's estimator checks).

Each entry says how to call the core function and the CLI command; every check below runs
over every entry. New algorithms add an entry to ALGORITHMS.
"""

from __future__ import annotations

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


def _svd(method):
    from rankwise.core.svd import truncated_svd

    return lambda a, k, seed: truncated_svd(a, RankRule("rank", k), method=method, rng=seed)


ALGORITHMS = [
    Algorithm("svd-exact", ["svd", "--method", "exact"], _svd("exact"), False),
    Algorithm("svd-randomized", ["svd", "--method", "randomized"], _svd("randomized"), True),
    Algorithm("svd-lanczos", ["svd", "--method", "lanczos"], _svd("lanczos"), True),
]
IDS = [a.name for a in ALGORITHMS]


def data(m=60, n=25, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, 6)) @ rng.standard_normal((6, n))).astype(dtype)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused(alg, bad):
    a = data()
    a[3, 4] = bad
    with pytest.raises(DataError):
        alg.fit(a, 2, 0)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (7,), (2, 3, 4)])
def test_empty_and_wrong_ndim_refused(alg, shape):
    with pytest.raises(DataError):
        alg.fit(np.ones(shape), 1, 0)


# ARPACK cannot return min(m, n) triplets: forcing Lanczos with such a rank is a usage error
# (tested in tests/core/test_svd.py), so it is left out here.
CLAMPING = [a for a in ALGORITHMS if a.name != "svd-lanczos"]


@pytest.mark.parametrize("alg", CLAMPING, ids=[a.name for a in CLAMPING])
def test_rank_larger_than_data_is_clamped_with_warning(alg):
    res = alg.fit(data(20, 8), 50, 0)
    assert max(x.shape[-1] if x.ndim > 1 else x.shape[0] for x in res.arrays.values()) <= 20
    assert any("clamp" in w for w in res.warnings)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_float32_kept(alg):
    res = alg.fit(data(dtype=np.float32), 3, 0)
    assert all(x.dtype == np.float32 for x in res.arrays.values())


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_same_seed_same_bytes(alg):
    a = data()
    r1, r2 = alg.fit(a, 4, 7), alg.fit(a, 4, 7)
    assert {k: v.tobytes() for k, v in r1.arrays.items()} == {
        k: v.tobytes() for k, v in r2.arrays.items()
    }


@pytest.mark.parametrize("alg", ALGORITHMS, ids=IDS)
def test_cli_report_fields_and_output(alg, cli, tmp_path):
    np.save(tmp_path / "x.npy", data())
    cli(*alg.command, "x.npy", "-o", "o.npz", "--rank", "3", "--seed", "5")
    rep = load_report(tmp_path / "o.report.json")  # validates against the schema
    arrays, attrs = read_result(tmp_path / "o.npz")
    assert attrs["kind"] == alg.command[0] == rep["command"]
    assert set(rep["output"]["arrays"]) == set(arrays)
    assert rep["seed"] == 5 and rep["input"]["fingerprint"].startswith("sha256:")
    for key in ("read", "compute", "write", "total"):
        assert rep["timings"][key] >= 0
    assert rep["memory"]["peak_rss_bytes"] > 0 and rep["method"]["reason"]
