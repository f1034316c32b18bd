"""Resuming an iterative solver from a saved state gives the same bytes as never stopping.

Each case runs a solver three ways on the same data and seed: uninterrupted; stopped by the
callback at a chosen sweep after its ``event.state()`` went through a real NPZ file (the
checkpoint's own round trip: pack → np.savez → np.load → unpack); and resumed from that
file. The resumed result must equal the uninterrupted one exactly (arrays, history, metrics).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import untimed

from rankwise.core import checkpoint, nmf


class _Stop(Exception):
    pass


def _save(state, path):
    skeleton, arrays = checkpoint.pack(state)
    meta = np.frombuffer(json.dumps(skeleton).encode(), dtype=np.uint8)
    np.savez(path, __meta__=meta, **{f"a/{k}": v for k, v in arrays.items()})


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        skeleton = json.loads(bytes(z["__meta__"]).decode())
        arrays = {k[2:]: z[k] for k in z.files if k.startswith("a/")}
    return checkpoint.unpack(skeleton, arrays)


def _interrupt_at(path, iteration, restart=0):
    def cb(event):
        if event.extras.get("restart", 0) == restart and event.iteration == iteration:
            _save(event.state(), path)
            raise _Stop

    return cb


def _same(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        x, y = a.arrays[k], b.arrays[k]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), k
    assert json.dumps(a.history) == json.dumps(b.history)
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert json.dumps(untimed(a.details), sort_keys=True) == json.dumps(
        untimed(b.details), sort_keys=True)  # fmt: skip
    assert a.converged == b.converged and a.stop_reason == b.stop_reason


def check_resume(run, tmp_path, *, iteration, restart=0):
    """``run(callback=…, resume=…)`` → Result; checks the three-way equality."""
    full = run(callback=None, resume=None)
    path = tmp_path / "state.npz"
    with pytest.raises(_Stop):
        run(callback=_interrupt_at(path, iteration, restart), resume=None)
    resumed = run(callback=None, resume=_load(path))
    _same(full, resumed)
    return full


def test_pack_round_trip_keeps_dtypes_orders_and_exact_floats(tmp_path):
    f = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    tree = {"f": f, "c": np.arange(3, dtype=np.int64), "x": 0.1 + 0.2, "inf": float("inf"),
            "none": None, "t": (1, np.float64(2.5)), "l": [{"b": True}], "big": 2**100}  # fmt: skip
    _save(tree, tmp_path / "s.npz")
    back = _load(tmp_path / "s.npz")
    assert back["f"].flags.f_contiguous and back["f"].dtype == np.float32
    assert back["f"].tobytes(order="A") == f.tobytes(order="A")
    assert back["x"] == 0.1 + 0.2 and back["inf"] == float("inf") and back["big"] == 2**100
    assert back["t"] == (1, 2.5) and back["none"] is None and back["l"] == [{"b": True}]


def test_pack_refuses_objects_it_cannot_store():
    with pytest.raises(TypeError, match="cannot checkpoint"):
        checkpoint.pack({"x": object()})


def _data(kind):
    rng = np.random.default_rng(7)
    w, h = rng.random((60, 4)), rng.random((4, 40))
    x = w @ h + 0.01 * rng.random((60, 40))
    if kind == "sparse":
        x[x < 0.8] = 0
        return sp.csr_array(x)
    if kind == "masked":
        x[rng.random(x.shape) < 0.2] = np.nan
    if kind == "mixed":
        x -= 0.5
    return x


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("dense", {"solver": "hals"}),
        ("sparse", {"solver": "hals"}),
        ("masked", {"solver": "hals"}),
        ("dense", {"solver": "mu"}),
        ("masked", {"solver": "mu"}),
        ("dense", {"solver": "mu", "loss": "kl"}),
        ("sparse", {"solver": "mu", "loss": "kl"}),
    ],
)
def test_nmf_resumes_to_the_same_bytes(tmp_path, kind, kw):
    x = _data(kind)

    def run(callback, resume):
        return nmf.nmf(x, 4, tol=0, max_iter=12, n_init=2, rng=np.random.default_rng(3),
                       callback=callback, resume=resume, **kw)  # fmt: skip

    # mid-way through the second restart: the first is kept whole in the state
    full = check_resume(run, tmp_path, iteration=5, restart=1)
    assert len(full.details["restarts"]) == 2


def test_semi_nmf_resumes_to_the_same_bytes(tmp_path):
    x = _data("mixed")

    def run(callback, resume):
        return nmf.semi_nmf(x, 3, tol=0, max_iter=10, n_init=2, rng=np.random.default_rng(1),
                            callback=callback, resume=resume)  # fmt: skip

    check_resume(run, tmp_path, iteration=4, restart=0)


def _tensor(nonneg=False, dtype=np.float64):
    rng = np.random.default_rng(11)
    f = [rng.random((s, 3)) for s in (14, 12, 10)]
    x = np.einsum("ir,jr,kr->ijk", *f)
    x += 0.01 * (rng.random(x.shape) if nonneg else rng.standard_normal(x.shape))
    return x.astype(dtype)


@pytest.mark.parametrize(
    "kw, restart",
    [
        ({}, 0),
        ({}, 1),  # the HOSVD init of restart 0 is replayed; its details must match
        ({"nonneg": True}, 1),
        ({"init": "random", "linesearch": False}, 0),
        ({"dtype": np.float32}, 1),
    ],
)
def test_cp_resumes_to_the_same_bytes(tmp_path, kw, restart):
    from rankwise.core import cp

    kw = dict(kw)
    x = _tensor(kw.get("nonneg", False), kw.pop("dtype", np.float64))

    def run(callback, resume):
        return cp.cp(x, 3, tol=0, max_iter=15, n_init=2, rng=np.random.default_rng(5),
                     callback=callback, resume=resume, **kw)  # fmt: skip

    # sweep 9: Bro's line search is active (it starts at sweep 4), its state goes along
    check_resume(run, tmp_path, iteration=9, restart=restart)


def test_tucker_hooi_resumes_to_the_same_bytes(tmp_path):
    from rankwise.core import tucker

    x = _tensor()
    x += 0.2 * np.random.default_rng(4).standard_normal(x.shape)  # HOOI has work to do

    def run(callback, resume):
        return tucker.tucker(x, ranks=[2, 3, 2], method="hooi", tol_iter=0, max_iter=8,
                             callback=callback, resume=resume)  # fmt: skip

    full = check_resume(run, tmp_path, iteration=3)
    assert full.details["hooi"]["iterations"] == 8


def _ratings():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((70, 4)) @ rng.standard_normal((4, 50))
    x[rng.random(x.shape) < 0.6] = np.nan
    return x


@pytest.mark.parametrize(
    "method, kw, at",
    [
        ("softimpute", {"reg_path": 3, "max_iter": 12}, 15),  # inside the second λ stage
        ("softimpute", {"init": "random", "max_iter": 10}, 4),
        ("altmin", {"solver": "exact", "max_iter": 10}, 4),
        ("altmin", {"solver": "cg", "max_iter": 10}, 6),
    ],
)
def test_matrix_completion_resumes_to_the_same_bytes(tmp_path, method, kw, at):
    from rankwise.core import complete_matrix

    x = _ratings()

    def run(callback, resume):
        return getattr(complete_matrix, method)(
            x, 4, tol=0, holdout=0.1, rng=np.random.default_rng(2), callback=callback,
            resume=resume, **kw)  # fmt: skip

    full = check_resume(run, tmp_path, iteration=at)
    assert full.details["iterations"] > at


def test_tensor_completion_resumes_to_the_same_bytes(tmp_path):
    from rankwise.core import complete_tensor

    x = _tensor()
    x[np.random.default_rng(3).random(x.shape) < 0.7] = np.nan

    def run(callback, resume):
        return complete_tensor.cp_complete(x, 3, tol=0, max_iter=8, n_init=2, holdout=0.1,
                                           rng=np.random.default_rng(4), callback=callback,
                                           resume=resume)  # fmt: skip

    check_resume(run, tmp_path, iteration=5, restart=1)


def _local_snapshots():
    """Noisy snapshots from three random subspaces, randomly scaled: the k-subspaces
    refinement moves some of them (two refinement sweeps at K = 2 and 3)."""
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal((80, 3)) @ rng.standard_normal((3, 20)) for _ in range(3)]
    return np.hstack(blocks) * rng.uniform(0.1, 10, 60) + 0.3 * rng.standard_normal((80, 60))


@pytest.mark.parametrize(
    "refine, nth, refine_event",
    [
        (False, 6, False),  # k-medoids restarts of the second K (3 restarts × ≥ 2 sweeps)
        (True, 4, True),  # the second refinement sweep of the second K
    ],
)
def test_local_pod_resumes_to_the_same_bytes(tmp_path, refine, nth, refine_event):
    from rankwise.core import local
    from rankwise.core.pod import rule_from

    x = _local_snapshots()

    def run(callback, resume):
        return local.local_pod(x, rule_from(rank=3), clusters=[2, 3, 4], n_init=3,
                               refine=refine, max_iter=10, rng=np.random.default_rng(8),
                               callback=callback, resume=resume)  # fmt: skip

    full = run(None, None)
    path = tmp_path / "state.npz"
    seen = []

    def cb(event):
        if ("restart" not in event.extras) == refine_event:
            seen.append(event.iteration)
            if len(seen) == nth:
                _save(event.state(), path)
                raise _Stop

    with pytest.raises(_Stop):
        run(cb, None)
    resumed = run(None, _load(path))
    _same(full, resumed)
    assert _load(path)["outer"]["k_index"] == 1


@pytest.mark.parametrize("kw", [{"rank": 4}, {"tol": 0.05, "center": True}])
def test_streaming_svd_resumes_to_the_same_bytes(tmp_path, kw):
    """Interrupted between passes over a chunked HDF5 file, resumed without redoing them."""
    import h5py

    from rankwise.core import svd
    from rankwise.core.rank import RankRule
    from rankwise.formats import open_array

    rng = np.random.default_rng(12)
    x = rng.standard_normal((3000, 8)) @ rng.standard_normal((8, 60))
    x += 0.05 * rng.standard_normal(x.shape)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(250, 60))
    kw = dict(kw)
    center = kw.pop("center", False)
    rule = RankRule("rank", kw["rank"]) if "rank" in kw else RankRule("tol", kw["tol"])

    def run(callback, resume):
        h = open_array(f"{tmp_path / 'x.h5'}:/x")
        cb = None
        if callback is not None:

            def cb(ev):  # the streaming events are dicts: hand the callback a LoopEvent
                from rankwise.core.loop import LoopEvent

                return callback(LoopEvent(ev["pass"], ev["relative_error"], None, 0.0, ev,
                                          ev["state"]))  # fmt: skip

        return svd.truncated_svd(h, rule, method="streaming", center=center, power_iters=3,
                                 rng=np.random.default_rng(0), block_rows=250, callback=cb,
                                 resume=resume)  # fmt: skip

    full = check_resume(run, tmp_path, iteration=3)
    assert full.details["passes"] > 3


def test_elementwise_weighted_svd_resumes_to_the_same_bytes(tmp_path):
    from rankwise.core import wsvd

    rng = np.random.default_rng(13)
    x = rng.standard_normal((60, 4)) @ rng.standard_normal((4, 40))
    w = rng.random(x.shape)
    w[w < 0.3] = 0.0

    def run(callback, resume):
        return wsvd.elementwise_weighted_svd(x, w, 4, tol=0, max_iter=12,
                                             rng=np.random.default_rng(1), callback=callback,
                                             resume=resume)  # fmt: skip

    check_resume(run, tmp_path, iteration=5)
