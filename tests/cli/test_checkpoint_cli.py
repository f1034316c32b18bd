"""Checkpoint and resume through the installed CLI (issue 9).

A signal is delivered by the process to itself at an exact moment (the RANKWISE_TEST_SIGNAL
hook: ``NAME@start``, ``NAME@<sweep>``, ``NAME@solved``) so each moment is hit every time;
the handling is the real one. The truth is an uninterrupted run with the same seed: the
resumed output must hold the same bytes and the report the same history and metrics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CLI, load_report, untimed

SIGNALS = ["SIGTERM", "SIGINT", "SIGUSR1"]


@pytest.fixture
def cli(tmp_path):
    return CLI(tmp_path)


def _matrix(tmp_path, name="x.npy", shape=(120, 80), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((shape[0], 5)) @ rng.random((5, shape[1])) + 0.05 * rng.random(shape)
    np.save(tmp_path / name, x)
    return name


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].tobytes() + str(z[k].dtype).encode() for k in z.files}


def _same_result(tmp_path, a, b):
    assert _arrays(tmp_path / f"{a}.npz") == _arrays(tmp_path / f"{b}.npz")
    ra, rb = (json.loads((tmp_path / f"{s}.report.json").read_text()) for s in (a, b))
    for key in ("history", "metrics", "converged", "stop_reason", "rank"):
        assert json.dumps(ra[key], sort_keys=True) == json.dumps(rb[key], sort_keys=True), key
    assert untimed(ra["method"]["details"]) == untimed(rb["method"]["details"])


NMF = ["nmf", "x.npy", "--rank", "5", "--tol", "0", "--max-iter", "30", "--n-init", "2"]


def _tensor(tmp_path, name="t.npy"):
    rng = np.random.default_rng(2)
    f = [rng.random((s, 3)) for s in (20, 16, 12)]
    x = np.einsum("ir,jr,kr->ijk", *f) + 0.01 * rng.random((20, 16, 12))
    np.save(tmp_path / name, x)


def _ratings(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((90, 4)) @ rng.standard_normal((4, 60))
    x[rng.random(x.shape) < 0.6] = np.nan
    np.save(tmp_path / "r.npy", x)
    import scipy.io
    import scipy.sparse as sp

    keep = ~np.isnan(x)
    scipy.io.mmwrite(tmp_path / "r.mtx", sp.coo_array((x[keep], np.nonzero(keep)), x.shape))


def _gappy_tensor(tmp_path):
    _tensor(tmp_path)
    x = np.load(tmp_path / "t.npy")
    x[np.random.default_rng(5).random(x.shape) < 0.6] = np.nan
    np.save(tmp_path / "t.npy", x)


def _snapshots(tmp_path):
    rng = np.random.default_rng(1)
    blocks = [rng.standard_normal((80, 3)) @ rng.standard_normal((3, 20)) for _ in range(3)]
    x = np.hstack(blocks) * rng.uniform(0.1, 10, 60) + 0.3 * rng.standard_normal((80, 60))
    np.save(tmp_path / "s.npy", x)


def _h5(tmp_path):
    import h5py

    rng = np.random.default_rng(3)
    x = rng.standard_normal((4000, 10)) @ rng.standard_normal((10, 80))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x + 0.05 * rng.standard_normal(x.shape), chunks=(250, 80))


def _weighted(tmp_path):
    _matrix(tmp_path)
    w = np.random.default_rng(8).random((120, 80))
    w[w < 0.3] = 0.0
    np.save(tmp_path / "w.npy", w)


# every iterative command: (input maker, arguments without -o, a sweep to stop at)
ITERATIVE = {
    "nmf": (_matrix, NMF, 7),
    "nmf --semi": (_matrix, ["nmf", "x.npy", "--semi", "--rank", "4", "--tol", "0",
                             "--max-iter", "20", "--n-init", "2"], 6),
    "cp": (_tensor, ["cp", "t.npy", "--rank", "3", "--tol", "0", "--max-iter", "25",
                     "--n-init", "2"], 9),
    "tucker --method hooi": (_tensor, ["tucker", "t.npy", "--ranks", "2,3,2", "--method",
                                       "hooi", "--iter-tol", "0", "--max-iter", "12"], 4),
    "complete softimpute": (_ratings, ["complete", "r.npy", "--rank", "4", "--reg-path", "3",
                                       "--max-iter", "10", "--tol", "0", "--holdout", "0.1"], 14),
    "complete altmin (mtx)": (_ratings, ["complete", "r.mtx", "--rank", "4", "--method",
                                         "altmin", "--solver", "cg", "--max-iter", "12",
                                         "--tol", "0"], 5),
    "complete cp": (_gappy_tensor, ["complete", "t.npy", "--rank", "3", "--n-init", "2",
                                    "--max-iter", "8", "--tol", "0"], 6),
    "rob local": (_snapshots, ["rob", "local", "s.npy", "--rank", "3", "--clusters", "2:4",
                               "--n-init", "3", "--refine", "--max-iter", "10"], 2),
    "svd --method streaming": (_h5, ["svd", "x.h5:/x", "--method", "streaming", "--rank",
                                     "5", "--power-iters", "4", "--center"], 3),
    "svd --weights (EM)": (_weighted, ["svd", "x.npy", "--weights", "w.npy", "--rank", "3",
                                       "--iter-tol", "0", "--max-iter", "15"], 5),
    "cp --nonneg": (_tensor, ["cp", "t.npy", "--rank", "3", "--nonneg", "--tol", "0",
                              "--max-iter", "20"], 5),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ITERATIVE))
def test_every_iterative_command_resumes_to_the_same_bytes(cli, tmp_path, name):
    make, args, at = ITERATIVE[name]
    make(tmp_path)
    cli(*args, "-o", "full.npz")
    cli(*args, "-o", "out.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": f"SIGTERM@{at}"})
    assert not (tmp_path / "out.npz").exists()
    assert _checkpoint_meta(tmp_path / "out.checkpoint.npz")["progress"]["iteration"] == at
    cli(*args, "-o", "out.npz", "--resume")
    _same_result(tmp_path, "full", "out")
    assert load_report(tmp_path / "out.report.json")["checkpoint"]["resumed"]["iteration"] == at


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_mid_run_checkpoints_exits_75_and_resume_gives_the_same_bytes(cli, tmp_path, sig):
    _matrix(tmp_path)
    cli(*NMF, "-o", "full.npz")
    proc = cli(*NMF, "-o", "out.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": f"{sig}@7"})
    assert proc.stderr.count("\n") == 1 and "interrupted" in proc.stderr, proc.stderr
    assert f"{sig} received" in proc.stderr and "--resume" in proc.stderr
    ck = tmp_path / "out.checkpoint.npz"
    assert ck.exists()
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.report.json").exists()
    cli(*NMF, "-o", "out.npz", "--resume")
    _same_result(tmp_path, "full", "out")
    rep = load_report(tmp_path / "out.report.json")
    assert rep["checkpoint"]["resumed"]["iteration"] == 7
    assert rep["checkpoint"]["resumed"]["restart"] == 0
    assert not ck.exists(), "the checkpoint is removed once the output is committed"


def test_resume_in_a_later_restart_and_twice(cli, tmp_path):
    """Interrupted in the second restart, then again after resuming: the first restart's
    result travels through both checkpoints."""
    _matrix(tmp_path)
    cli(*NMF, "-o", "full.npz")
    cli(*NMF, "-o", "out.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@3"})
    # the hook fires at sweep 3 of every restart: the resumed run stops again in restart 2
    cli(*NMF, "-o", "out.npz", "--resume", expect=75, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@3"})
    meta = _checkpoint_meta(tmp_path / "out.checkpoint.npz")
    assert meta["progress"]["restart"] == 1 and meta["progress"]["iteration"] == 3
    cli(*NMF, "-o", "out.npz", "--resume")
    _same_result(tmp_path, "full", "out")


def _checkpoint_meta(path):
    from rankwise.cli.checkpoint import META_KEY

    with np.load(path, allow_pickle=False) as z:
        return json.loads(bytes(z[META_KEY]).decode())


def test_signal_before_the_first_sweep_stops_without_a_checkpoint(cli, tmp_path):
    _matrix(tmp_path)
    proc = cli(*NMF, "-o", "out.npz", expect=143, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@start"})
    assert "terminated; no output was written" in proc.stderr
    assert not list(tmp_path.glob("out*")), "no output, report or checkpoint"
    # --resume without a checkpoint starts afresh (a requeued job can always pass it)
    proc = cli(*NMF, "-o", "out.npz", "--resume")
    assert "starting afresh" in proc.stderr
    assert load_report(tmp_path / "out.report.json")["checkpoint"]["resumed"] is None


def test_signal_while_writing_lets_the_run_complete(cli, tmp_path):
    _matrix(tmp_path)
    cli(*NMF, "-o", "full.npz")
    cli(*NMF, "-o", "out.npz", env={"RANKWISE_TEST_SIGNAL": "SIGTERM@solved"})
    _same_result(tmp_path, "full", "out")
    assert not (tmp_path / "out.checkpoint.npz").exists()


def test_periodic_checkpoints_are_written_and_removed_at_the_end(cli, tmp_path):
    _matrix(tmp_path)
    cli(*NMF, "-o", "full.npz")
    # every boundary is "due" with a tiny period; SIGUSR1 at sweep 20 then stops the run
    cli(*NMF, "-o", "out.npz", "--checkpoint-every", "1e-9", expect=75,
        env={"RANKWISE_TEST_SIGNAL": "SIGUSR1@20"})  # fmt: skip
    assert _checkpoint_meta(tmp_path / "out.checkpoint.npz")["progress"]["iteration"] == 20
    cli(*NMF, "-o", "out.npz", "--resume", "--checkpoint-every", "1e-9")
    rep = load_report(tmp_path / "out.report.json")
    assert rep["checkpoint"]["saved"] >= 10  # a save at every boundary of the resumed run
    _same_result(tmp_path, "full", "out")


def test_time_limit_checkpoints_before_the_limit(cli, tmp_path):
    _matrix(tmp_path, shape=(1500, 1200))
    args = ["nmf", "x.npy", "--rank", "20", "--tol", "0", "--max-iter", "100000", "-o", "o.npz"]
    proc = cli(*args, "--time-limit", "3s", "--checkpoint-every", "0", expect=75)
    assert "--time-limit is near" in proc.stderr
    meta = _checkpoint_meta(tmp_path / "o.checkpoint.npz")
    assert meta["progress"]["iteration"] >= 1


def test_resume_refuses_other_parameters_input_or_command(cli, tmp_path):
    _matrix(tmp_path)
    _matrix(tmp_path, "y.npy", seed=1)
    cli(*NMF, "-o", "out.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@4"})
    for extra, needle in (
        (["--tol", "1e-3"], "other parameters (tol: checkpoint 0.0, now 0.001)"),
        (["--seed", "5"], "seed"),
    ):
        proc = cli(*NMF, "-o", "out.npz", "--resume", *extra, expect=2)
        assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    y = ["nmf", "y.npy", *NMF[2:]]
    proc = cli(*y, "-o", "out.npz", "--resume", expect=2)
    assert "different input data" in proc.stderr
    # the checkpoint survives the refusals, and a matching rerun still resumes from it
    cli(*NMF, "-o", "out.npz", "--resume")
    assert load_report(tmp_path / "out.report.json")["checkpoint"]["resumed"]["iteration"] == 4


def test_damaged_or_foreign_checkpoint_files(cli, tmp_path):
    _matrix(tmp_path)
    ck = tmp_path / "out.checkpoint.npz"
    ck.write_bytes(b"PK\x03\x04 not really a zip")
    proc = cli(*NMF, "-o", "out.npz", "--resume", expect=65)
    assert "damaged" in proc.stderr and proc.stderr.count("\n") == 1
    # without --resume, a file that is not ours is not replaced unless --force
    proc = cli(*NMF, "-o", "out.npz", expect=73)
    assert "not a rankwise checkpoint" in proc.stderr
    np.savez(ck, w=np.zeros(3))
    cli(*NMF, "-o", "out.npz", "--resume", expect=65)
    cli(*NMF, "-o", "out.npz", "--force")


@pytest.mark.parametrize(
    "value, ok",
    [("90", True), ("90s", True), ("1.5h", True), ("2d", True), ("1:30:00", True),
     ("1-00:00:00", True), ("30:00", True), ("0", False), ("soon", False), ("-5m", False)],
)  # fmt: skip
def test_time_limit_forms(value, ok):
    from rankwise.cli.checkpoint import parse_duration
    from rankwise.cli.errors import CliUsageError

    if ok:
        assert parse_duration(value) > 0
    else:
        with pytest.raises(CliUsageError):
            parse_duration(value)


def test_time_limit_values():
    from rankwise.cli.checkpoint import parse_duration

    assert parse_duration("1:30:00") == 5400
    assert parse_duration("30:00") == 1800
    assert parse_duration("1-02:00:00") == 93600
    assert parse_duration("1.5h") == 5400
    assert parse_duration("45") == 45


def test_bad_time_limit_is_a_usage_error(cli, tmp_path):
    _matrix(tmp_path)
    proc = cli(*NMF, "-o", "out.npz", "--time-limit", "soon", expect=2)
    assert "--time-limit" in proc.stderr


def test_checkpoint_options_of_a_non_iterative_run_are_refused(cli, tmp_path):
    _tensor(tmp_path)
    proc = cli("tucker", "t.npy", "--ranks", "2", "-o", "o.npz", "--resume", expect=2)
    assert "--resume: checkpoints apply to --method hooi" in proc.stderr
    cli("tucker", "t.npy", "--ranks", "2", "-o", "o.npz")
    assert "checkpoint" not in load_report(tmp_path / "o.report.json")


def test_streaming_resume_refuses_a_changed_file(cli, tmp_path):
    """A streamed input is bound by its file identity (size, modification time)."""
    import os

    _h5(tmp_path)
    args = ["svd", "x.h5:/x", "--method", "streaming", "--rank", "5", "--power-iters", "4"]
    cli(*args, "-o", "o.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@3"})
    st = os.stat(tmp_path / "x.h5")
    os.utime(tmp_path / "x.h5", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    proc = cli(*args, "-o", "o.npz", "--resume", expect=2)
    assert "different input data" in proc.stderr


def test_in_memory_svd_refuses_checkpoint_options(cli, tmp_path):
    _matrix(tmp_path)
    proc = cli("svd", "x.npy", "--rank", "3", "-o", "o.npz", "--time-limit", "1h", expect=2)
    assert "--time-limit: checkpoints apply to the streaming method" in proc.stderr


@pytest.mark.parametrize("index, name", list(enumerate(ITERATIVE)))
def test_every_iterative_command_early_and_during_the_write(cli, tmp_path, index, name):
    """The other two moments for every method (the signals rotate over the methods): before
    the first sweep (nothing to save: 130 for SIGINT, else 143, nothing written) and while
    the output is written (the run completes, no checkpoint is left)."""
    make, args, _ = ITERATIVE[name]
    make(tmp_path)
    early, late = SIGNALS[index % 3], SIGNALS[(index + 1) % 3]
    code = 130 if early == "SIGINT" else 143
    proc = cli(*args, "-o", "out.npz", expect=code,
               env={"RANKWISE_TEST_SIGNAL": f"{early}@start"})  # fmt: skip
    assert "no output was written" in proc.stderr and not list(tmp_path.glob("out*"))
    cli(*args, "-o", "out.npz", env={"RANKWISE_TEST_SIGNAL": f"{late}@solved"})
    with np.load(tmp_path / "out.npz") as z:
        assert z.files
    assert load_report(tmp_path / "out.report.json")["checkpoint"]["saved"] == 0
    assert not (tmp_path / "out.checkpoint.npz").exists()


def test_a_fresh_run_replaces_an_earlier_checkpoint(cli, tmp_path):
    """Without --resume an earlier checkpoint is obsolete once this run's output exists."""
    _matrix(tmp_path)
    cli(*NMF, "-o", "out.npz", expect=75, env={"RANKWISE_TEST_SIGNAL": "SIGTERM@4"})
    proc = cli(*NMF, "-o", "out.npz")
    assert "starts afresh and replaces it" in proc.stderr
    assert not (tmp_path / "out.checkpoint.npz").exists()
    assert load_report(tmp_path / "out.report.json")["checkpoint"]["resumed"] is None


def test_a_streamed_checkpoint_is_bound_to_the_fingerprint_version(tmp_path, monkeypatch):
    # The content fingerprint travels inside a streamed run's checkpoint: one made with
    # another fingerprint scheme must not resume (its fingerprint would reach the report).
    import h5py

    from rankwise import formats
    from rankwise.cli import checkpoint as ckmod
    from rankwise.formats import fingerprints

    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("x", data=np.ones((50, 4)), chunks=(10, 4))
    handle = formats.open_array(f"{tmp_path / 's.h5'}:/x")
    now = ckmod.source_identity(handle)
    assert ckmod.source_identity(handle) == now
    monkeypatch.setattr(fingerprints, "VERSION_TAG", "rankwise-fingerprint/1")
    assert ckmod.source_identity(handle) != now
    handle.close()
