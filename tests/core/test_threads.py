"""Row-block work split among threads with one-thread BLAS, and the tall-skinny SVD on it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from rankwise.core import linalg
from rankwise.core.threads import blas_threads, run_slots


def _blas_counts():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_every_slot_runs_once_on_its_own_thread_with_one_blas_thread():
    with threadpool_limits(limits=2, user_api="blas"):
        seen = {}

        def run(slot):
            seen[slot] = (threading.get_ident(), _blas_counts())

        run_slots(run, 3)
        assert blas_threads() == 2  # restored afterwards
    assert sorted(seen) == [0, 1, 2]
    assert len({ident for ident, _ in seen.values()}) == 3
    assert seen[0][0] == threading.get_ident()
    assert all(set(c) == {1} for _, c in seen.values())


@pytest.mark.parametrize("failing", [0, 1])
def test_an_error_in_any_slot_stops_the_others_and_reaches_the_caller(failing):
    stop = threading.Event()
    ran = []

    def run(slot):
        if slot == failing:
            raise ZeroDivisionError("slot failed")
        stop.wait(5)  # the other slot waits for the stop signal, not for its timeout
        ran.append(stop.is_set())

    with pytest.raises(ZeroDivisionError, match="slot failed"):
        run_slots(run, 2, stop)
    assert ran == [True]


def test_numpy_error_state_reaches_the_other_threads():
    def run(slot):
        if slot == 1:  # on a thread of its own, whose numpy state starts at the default
            np.array([1e308]) * 10.0

    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        run_slots(run, 2)


def _planted(m, n, cond, seed):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, n)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.logspace(0, -np.log10(cond), n)
    return (u * s) @ v.T, s


@pytest.mark.parametrize("select", [None, 5])
def test_tall_svd_gives_the_same_bits_on_any_number_of_threads(monkeypatch, select):
    """Block j adds into partial sum j mod 8 whatever the thread count (DESIGN: the same
    input gives the same bytes), and the result is LAPACK's."""
    a, s_true = _planted(40_000, 30, 1e5, seed=4)  # 9.6 MB: three blocks of 4 MB
    pick = None if select is None else (lambda s: select)
    results = {}
    for slots in (1, 2, 3):
        monkeypatch.setattr(linalg, "_tall_slots", lambda m, step, k=slots: k)
        results[slots] = linalg.tall_svd(a.copy(), select=pick, overwrite=True)
    monkeypatch.undo()
    u1, s1, vt1, how = results[1]
    assert how.startswith("cholesky_qr2")
    # σ from a planted spectrum of condition 1e5: CholeskyQR2 keeps ~ε·cond relative accuracy
    assert np.max(np.abs(s1 - s_true) / s_true) < 1e-11
    assert np.abs(u1.T @ u1 - np.eye(u1.shape[1])).max() < 1e-13  # CholeskyQR2: O(n·ε), n = 30
    for slots in (2, 3):
        assert all(np.array_equal(x, y) for x, y in zip(results[slots][:3], results[1][:3],
                                                        strict=True))  # fmt: skip
    for threads in (1, 2):  # unpatched: one thread, or two threads inside each BLAS call
        with threadpool_limits(limits=threads, user_api="blas"):
            got = linalg.tall_svd(a.copy(), select=pick)
        assert all(np.array_equal(x, y) for x, y in zip(got[:3], results[1][:3], strict=True))


def test_a_failing_block_stops_the_pass_and_every_thread_is_joined():
    ran = []

    def fn(slot, i):
        ran.append(i)
        if i == 0:
            raise ValueError("block 0 failed")
        threading.Event().wait(0.01)

    before = threading.active_count()
    with pytest.raises(ValueError, match="block 0 failed"):
        linalg._row_pass(10_000, 1, 2, fn)
    assert threading.active_count() == before
    assert len(ran) < 100  # the other thread saw the stop, far before its 5000 blocks


def test_one_blas_thread_covers_scipys_blas_even_before_it_is_loaded():
    """threadpoolctl limits only loaded libraries: scipy's own BLAS, loaded later, would keep
    its threads (and a spinning worker) inside the context."""
    import subprocess
    import sys

    code = (
        "import numpy, sys\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "from threadpoolctl import threadpool_info, threadpool_limits\n"
        "from rankwise.core.threads import one_blas_thread\n"
        "with one_blas_thread():\n"
        "    import scipy.linalg\n"
        "    libs = [i for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "    print(sorted({i['num_threads'] for i in libs}))\n"
    )
    env = {**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout  # fmt: skip
    assert out.strip() == "[1]"


def test_a_parallel_streamed_svd_holds_blas_to_one_thread_between_passes(tmp_path, monkeypatch):
    import rankwise.formats as F
    from rankwise.core import randomized
    from rankwise.core import svd as core_svd
    from rankwise.core.rank import RankRule

    a, _ = _planted(6000, 40, 1e3, seed=5)
    np.save(tmp_path / "a.npy", a)
    seen = []
    real = randomized.streaming

    def spy(op, *args, **kwargs):
        seen.append((op.parallel, blas_threads()))
        return real(op, *args, **kwargs)

    monkeypatch.setattr(randomized, "streaming", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        res = core_svd.truncated_svd(F.open(tmp_path / "a.npy"), RankRule("rank", 5),
                                     method="streaming", block_rows=500, rng=1)  # fmt: skip
        assert blas_threads() == 2  # restored once the run is over
    assert seen == [(True, 1)]
    # randomized with one power iteration on σ from 1 to 1e-3 over 40: ~4e-8 measured
    np.testing.assert_allclose(res.S, np.linalg.svd(a, compute_uv=False)[:5], rtol=1e-6)


def test_a_sequential_pass_keeps_its_blas_threads_under_a_one_thread_hold():
    """The operator keeps the thread count in force when it was made: a caller holding BLAS
    to one thread between passes does not shrink a pass (here the prefetching one, which
    leaves a core to its reader thread)."""
    from rankwise.core.operator import BlockOperator

    class Blocks:  # a source that cannot read row ranges: the sequential pass
        shape, dtype = (900, 4), np.dtype("f8")

        def iter_blocks(self, rows):
            for start in range(0, 900, rows):
                yield start, np.ones((min(rows, 900 - start), 4))

    with threadpool_limits(limits=3, user_api="blas"):
        op = BlockOperator(Blocks(), block_rows=300, dtype=np.float64)
        assert not op.parallel
        with threadpool_limits(limits=1, user_api="blas"):
            seen = []
            op._pass(lambda slot, start, blk: seen.append(blas_threads()), 1)
    assert seen == [2, 2, 2]


def test_the_cli_compute_step_limits_scipys_blas_too():
    """`--threads` of every command: the compute step's limit must reach scipy's BLAS, which
    a command may import only inside that step."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rankwise.cli.run import Common, Run\n"
        "assert 'scipy.linalg' not in sys.modules\n"
        "run = Run('nmf', Common(threads=1, quiet=True))\n"
        "with run.compute():\n"
        "    import scipy.linalg\n"
        "    from threadpoolctl import threadpool_info\n"
        "    libs = [i for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "    print(len(libs), sorted({i['num_threads'] for i in libs}))\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split(maxsplit=1)  # fmt: skip
    assert out[1].strip() == "[1]"
