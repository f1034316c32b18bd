"""`rankwise plot`: figures from real reports, in every format; errors."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.formats import read_result

pytest.importorskip("matplotlib")

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


@pytest.fixture
def reports(cli, tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((200, 6)) * 2.0 ** -np.arange(6)) @ rng.standard_normal((6, 80))
    np.save(tmp_path / "a.npy", a + 1e-9 * rng.standard_normal(a.shape))
    cli("svd", "a.npy", "-o", "s.h5", "--tol", "1e-6", "-q")
    cli("rob", "local", "a.npy", "-o", "l.h5", "--tol", "1e-3", "--clusters", "2", "--refine",
        "-q")  # fmt: skip
    x = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 50))
    np.save(tmp_path / "m.npy", np.where(rng.random(x.shape) < 0.5, x, np.nan))
    cli("complete", "m.npy", "-o", "c.h5", "--rank", "3", "--holdout", "0.2",
        "--method", "altmin", "-q")  # fmt: skip
    np.save(tmp_path / "t.npy", rng.standard_normal((8, 7, 6, 5)))
    cli("tt", "t.npy", "-o", "t.h5", "--tol", "0.3", "-q")
    return tmp_path


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_every_format_is_written_whole(cli, reports, ext):
    cli("plot", "s.report.json", "-o", f"f{ext}")
    data = (reports / f"f{ext}").read_bytes()
    assert data.startswith(MAGIC[ext]) and len(data) > 2000
    assert not [p for p in reports.iterdir() if "staging" in p.name]


@pytest.mark.parametrize(
    "report, texts",
    [
        ("s.report.json", ["spectrum and energy decay", "kept: ", "tol = 1e-06"]),
        ("l.report.json", ["local bases, K = 2", "global basis, worst"]),
        ("c.report.json", ["training and held-out RMSE", "held-out RMSE",
                           "baseline held-out RMSE"]),
        ("t.report.json", ["mode / bond spectra", "bond 1"]),
    ],
)  # fmt: skip
def test_each_report_kind_gets_its_panels(cli, reports, report, texts):
    cli("plot", report, "-o", "f.svg")
    svg = (reports / "f.svg").read_text()
    for text in texts:  # matplotlib writes texts as SVG comments/glyph ids: check the ids
        assert text in svg, text


def test_the_chosen_rank_is_the_one_in_the_output(cli, reports):
    arrays, _ = read_result(reports / "s.h5")
    cli("plot", "s.report.json", "-o", "f.svg")
    assert f"kept: {len(arrays['S'])}" in (reports / "f.svg").read_text()


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["s.report.json", "-o", "f.jpg"], 2, "extension"),
        (["missing.json", "-o", "f.png"], 66, "missing.json"),
        (["bad.json", "-o", "f.png"], 65, "not"),
        (["s.report.json", "-o", "exists.png"], 73, "--force"),
        (["s.report.json", "-o", "nodir/f.png"], 73, "does not exist"),
    ],
)
def test_plot_errors(cli, reports, args, code, needle):
    (reports / "bad.json").write_text("{not json")
    (reports / "exists.png").write_bytes(b"x")
    proc = cli("plot", *args, expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
