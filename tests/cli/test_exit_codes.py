"""Every documented exit code, through the installed command: one line on stderr, no
traceback, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile

import h5py
import numpy as np
import pytest
from helpers import rankwise_exe


def one_error_line(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def good(tmp_path):
    np.save(tmp_path / "good.npy", np.random.default_rng(0).standard_normal((30, 10)))
    return "good.npy"


def make(tmp_path, name, fn):
    fn(tmp_path / name)
    return name


def npz_pickle(p):
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))


def h5_external_link(p):
    with h5py.File(p.with_name("target.h5"), "w") as f:
        f["x"] = np.ones((4, 4))
    with h5py.File(p, "w") as f:
        f["x"] = h5py.ExternalLink("target.h5", "/x")


def h5_strings(p):
    with h5py.File(p, "w") as f:
        f["x"] = np.array([["a", "b"], ["c", "d"]], dtype="S1")


def h5_bomb(p):
    with h5py.File(p, "w") as f:  # declared 8 TB, nothing written
        f.create_dataset("x", shape=(10**6, 10**6), dtype="f8", chunks=(1000, 1000))


def bad_mtx(p):
    p.write_text("%%MatrixMarket matrix coordinate real\n3 3 1\n1 1 1.0\n")


DATA_ERRORS = {
    "one_d": ("v.npy", lambda p: np.save(p, np.ones(5)), "2-D"),
    "empty": ("e.npy", lambda p: np.save(p, np.ones((0, 3))), "non-empty"),
    "object": ("o.npy", lambda p: np.save(p, np.array([[1, None]], dtype=object)), "pickle"),
    "structured": ("s.npy", lambda p: np.save(p, np.zeros((3, 3), dtype="i4,f8")), ""),
    "complex": ("c.npy", lambda p: np.save(p, np.ones((3, 3), dtype=complex)), "complex"),
    "nan": ("n.npy", lambda p: np.save(p, np.array([[1.0, np.nan], [2, 3]])), "NaN"),
    "inf": ("i.npy", lambda p: np.save(p, np.array([[1.0, np.inf], [2, 3]])), "infinite"),
    "pickled_npz": ("p.npz", npz_pickle, "pickle"),
    "mtx_header": ("m.mtx", bad_mtx, ""),
    "external_link": ("l.h5", h5_external_link, "external link"),
    "strings_h5": ("t.h5", h5_strings, ""),
}


@pytest.mark.parametrize("case", list(DATA_ERRORS))
def test_bad_data_is_65(cli, tmp_path, case):
    name, fn, needle = DATA_ERRORS[case]
    make(tmp_path, name, fn)
    proc = cli("svd", name, "-o", "out.h5", "--rank", "2", expect=65)
    one_error_line(proc, needle)
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.report.json").exists()


def test_shape_bomb_refused_before_allocating(cli, tmp_path):
    make(tmp_path, "b.h5", h5_bomb)
    t0 = time.perf_counter()
    proc = cli("svd", "b.h5", "-o", "out.h5", "--rank", "2", "--max-memory", "1G", expect=65)
    assert time.perf_counter() - t0 < 30  # no 8 TB allocation or scan happened
    one_error_line(proc, "memory budget")


def test_missing_inputs_are_66(cli, tmp_path, good):
    one_error_line(cli("svd", "nope.h5", "-o", "o.h5", "--rank", "1", expect=66), "nope.h5")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["present"] = np.ones((3, 3))
    line = one_error_line(cli("svd", "f.h5:/absent", "-o", "o.h5", "--rank", "1", expect=66))
    assert "absent" in line and "present" in line  # says what exists


def test_unknown_format_is_2(cli, tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    line = one_error_line(cli("svd", "x.csv", "-o", "o.h5", "--rank", "1", expect=2))
    assert "hdf5" in line.lower() and "zarr" in line.lower()  # lists the known formats


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-o", "o.h5"], "--rank"),  # no rank rule
        (["-o", "o.h5", "--rank", "2", "--tol", "0.1"], "only one"),
        (["-o", "o.h5", "--tol", "2"], "tol"),
        (["-o", "o.h5", "--rank", "2", "--max-memory", "lots"], "size"),
        (["-o", "o.h5", "--rank", "2", "--method", "magic"], "magic"),
        (["-o", "o.h5", "--rank", "2", "--no-such-option"], "no-such-option"),
        (["-o", "o.txt", "--rank", "2"], ".txt"),
        (["--rank", "2"], "--output"),
        (["-o", "o.h5", "--rank", "2", "--threads", "0"], "threads"),
    ],
)
def test_usage_errors_are_2(cli, good, args, needle):
    one_error_line(cli("svd", good, *args, expect=2), needle)


def test_output_conflicts_are_73(cli, tmp_path, good):
    cli("svd", good, "-o", "o.h5", "--rank", "1")
    before = (tmp_path / "o.h5").read_bytes()
    one_error_line(cli("svd", good, "-o", "o.h5", "--rank", "2", expect=73), "--force")
    assert (tmp_path / "o.h5").read_bytes() == before
    np.savez(tmp_path / "in.npz", x=np.ones((5, 4)))
    one_error_line(cli("svd", "in.npz", "-o", "in.npz", "--rank", "1", "--force", expect=73))
    assert np.load(tmp_path / "in.npz")["x"].shape == (5, 4)
    one_error_line(cli("svd", good, "-o", "no/dir/o.h5", "--rank", "1", expect=73))


def test_debug_shows_traceback(cli, tmp_path):
    proc = cli("svd", "nope.npy", "-o", "o.h5", "--rank", "1", "--debug", expect=66)
    assert "Traceback" in proc.stderr and "error:" in proc.stderr.splitlines()[-1]


def _slow_job(tmp_path):
    # A flat spectrum makes the adaptive method grow its basis block after block for
    # minutes; Python regains control between blocks, so the signal is handled at once.
    rng = np.random.default_rng(0)
    np.save(tmp_path / "big.npy", rng.standard_normal((3000, 1500)))
    return subprocess.Popen(
        [rankwise_exe(), "svd", "big.npy", "-o", "o.h5", "--tol", "1e-9", "--method",
         "randomized", "--block-size", "4", "--threads", "1"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_leave_nothing(tmp_path, sig, code):
    proc = _slow_job(tmp_path)
    time.sleep(2.0)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["big.npy"], left


def test_zip_that_is_not_npz_is_65(cli, tmp_path):
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("x.npy", b"not an npy file at all")
    one_error_line(cli("svd", "z.npz", "-o", "o.h5", "--rank", "1", expect=65))


def test_negative_seed_is_a_usage_error(cli, good):
    one_error_line(cli("svd", good, "-o", "o.h5", "--rank", "1", "--seed", "-1", expect=2),
                   "--seed")  # fmt: skip


def test_bad_numbers_refused_before_reading(cli, tmp_path):
    # The input is missing: a parameter error must win, since it is checked first.
    one_error_line(cli("svd", "absent.npy", "-o", "o.h5", "--rank", "1", "--oversample", "-1",
                       expect=2), "oversample")  # fmt: skip


def test_bare_command_prints_usage(cli):
    proc = cli(expect=2)
    assert proc.stdout.startswith("Usage: rankwise") and proc.stderr == ""


def test_extreme_magnitudes_give_one_clean_run(cli, tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "big.npy", rng.standard_normal((40, 20)) * 1e160)
    for method in ("exact", "randomized", "lanczos"):
        proc = cli("svd", "big.npy", "-o", f"{method}.h5", "--rank", "2", "--method", method)
        assert "Traceback" not in proc.stderr and "RuntimeWarning" not in proc.stderr


def test_internal_errors_are_1_with_one_line(tmp_path, monkeypatch, capsys):
    # A bug is simulated in process: the mapping must say "internal error" and exit 1.
    import rankwise.core.svd as core_svd
    from rankwise.cli.main import main

    np.save(tmp_path / "x.npy", np.ones((5, 4)))
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(core_svd, "truncated_svd", broken)
    with pytest.raises(SystemExit) as exc:
        main(["svd", "x.npy", "-o", "o.h5", "--rank", "1"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "simulated bug" in err
    assert not (tmp_path / "o.h5").exists()


@pytest.fixture
def full_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_is_74_and_leaves_nothing(cli, tmp_path, full_disk):
    np.save(tmp_path / "a.npy", np.random.default_rng(2).standard_normal((2000, 100)))
    line = one_error_line(cli("svd", "a.npy", "-o", full_disk / "o.h5", "--rank", "50",
                              expect=74))  # fmt: skip
    assert "o.h5" in line
    assert list(full_disk.iterdir()) == []  # no output, no report, no staging leftovers


@pytest.mark.slow
def test_interrupt_while_staging_the_output_leaves_neither_output_nor_report(tmp_path):
    # U is 400000×60 (190 MB): writing it takes long enough to be caught mid-way.
    np.save(tmp_path / "tall.npy", np.random.default_rng(3).standard_normal((400_000, 60)))
    proc = subprocess.Popen(
        [rankwise_exe(), "svd", "tall.npy", "-o", "o.h5", "--rank", "60", "--method", "exact"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(".rankwise-staging-" in p.name for p in tmp_path.iterdir()):
            os.kill(proc.pid, signal.SIGINT)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=120)
    names = sorted(p.name for p in tmp_path.iterdir())
    if proc.returncode == 0:  # the signal came after the commit: both are there
        assert names == ["o.h5", "o.report.json", "tall.npy"]
    else:
        assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
        assert names == ["tall.npy"], names
