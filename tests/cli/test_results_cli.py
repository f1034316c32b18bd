"""`rankwise reconstruct`, `error` and `report` end to end: real decompositions made by the
installed CLI, outputs read back with h5py/zarr/numpy, truths computed with numpy."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import zarr
from helpers import CLI, load_report

from rankwise.formats import fingerprint_many, read_result

LETTERS = "abcdefgh"
COLS = {"COLUMNS": "120"}  # a fixed width for the rendered report


# --- data, decompositions (made once) and truths ---------------------------------------------


def low_rank(shape, r, rng, noise):
    fs = [rng.standard_normal((n, r)) for n in shape]
    spec = ",".join(f"{c}r" for c in LETTERS[: len(shape)]) + "->" + LETTERS[: len(shape)]
    x = np.einsum(spec, *fs)
    return x + noise * np.abs(x).max() * rng.standard_normal(shape)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Data files in every format, and one output of each decomposition command."""
    d = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    mat = low_rank((60, 40), 5, rng, 0.01)
    pos = np.abs(low_rank((50, 30), 4, rng, 0.0)) + 0.1
    ten = low_rank((20, 18, 16), 3, rng, 0.01)
    snap = low_rank((80, 25), 4, rng, 0.001) + 3.0
    miss = low_rank((40, 30), 3, rng, 0.01)
    miss[rng.random(miss.shape) < 0.2] = np.nan
    with h5py.File(d / "mat.h5", "w") as f:
        f.create_dataset("X", data=mat, chunks=(16, 40))
        f.create_dataset("S", data=snap)
    np.savez(d / "pos.npz", X=pos)
    zarr.create_array(str(d / "ten.zarr"), data=ten, chunks=(5, 18, 16))
    np.save(d / "ten32.npy", ten.astype(np.float32))
    np.savez(d / "miss.npz", X=miss)
    coo = sp.random(30, 20, density=0.3, random_state=1, format="coo")
    coo.data = np.round(coo.data * 4 + 1)  # ratings 1…5
    scipy.io.mmwrite(d / "ratings.mtx", coo)
    cli = CLI(d)
    runs = {
        "svd": ("svd", "mat.h5:/X", "-o", "svd.h5", "--rank", "5"),
        "svdc": ("svd", "pos.npz:X", "-o", "svdc.npz", "--rank", "3", "--center"),
        "nmf": ("nmf", "pos.npz:X", "-o", "nmf.npz", "--rank", "4"),
        "cur": ("cur", "mat.h5:/X", "-o", "cur.h5", "--rank", "5"),
        "kpsvd": ("kpsvd", "mat.h5:/X", "-o", "kp.zarr", "--block", "6x4", "--rank", "3"),
        "cp": ("cp", "ten.zarr", "-o", "cp.h5", "--rank", "3"),
        "tucker": ("tucker", "ten.zarr", "-o", "tk.npz", "--ranks", "3"),
        "tt": ("tt", "ten32.npy", "-o", "tt.zarr", "--tol", "1e-2"),
        "pod": ("rob", "pod", "mat.h5:/S", "-o", "pod.h5", "--rank", "4", "--center"),
        "complete": ("complete", "miss.npz:X", "-o", "cm.h5", "--rank", "3"),
        "sparse": ("complete", "ratings.mtx", "-o", "cms.npz", "--rank", "2"),
    }
    for args in runs.values():
        cli(*args, "-q")
    out = {k: a[a.index("-o") + 1] for k, a in runs.items()}
    data = {"svd": ("mat.h5:/X", mat), "svdc": ("pos.npz:X", pos), "nmf": ("pos.npz:X", pos),
            "cur": ("mat.h5:/X", mat), "kpsvd": ("mat.h5:/X", mat), "cp": ("ten.zarr", ten),
            "tucker": ("ten.zarr", ten), "tt": ("ten32.npy", ten.astype(np.float32)),
            "pod": ("mat.h5:/S", snap), "complete": ("miss.npz:X", miss),
            "sparse": ("ratings.mtx", coo.toarray())}  # fmt: skip
    return {"dir": d, "out": out, "data": data, "coo": coo}


def numbered(a, prefix):
    return [np.asarray(a[f"{prefix}{i}"], np.float64)
            for i in range(sum(k.startswith(prefix) for k in a))]  # fmt: skip


def truth(path) -> np.ndarray:
    """The dense array a result describes, with numpy only."""
    a, attrs = read_result(path)
    f = {k: np.asarray(v, np.float64) for k, v in a.items()}
    kind = attrs["kind"]
    if "U" in f and "S" in f and "Vt" in f:
        x = (f["U"] * f["S"]) @ f["Vt"]
        return x + f["mean"] if "mean" in f else x
    if kind == "nmf":
        return f["W"] @ f["H"]
    if kind == "cur":
        return f["C"] @ f["U"] @ f["R"]
    if kind == "kpsvd":
        return sum(s * np.kron(p, q) for s, p, q in zip(f["S"], f["A"], f["B"], strict=True))
    if kind in ("cp", "complete"):
        fs = numbered(f, "factors/")
        n = len(fs)
        spec = "r," + ",".join(f"{c}r" for c in LETTERS[:n]) + "->" + LETTERS[:n]
        return np.einsum(spec, f["weights"], *fs)
    if kind == "tucker":
        fs = numbered(f, "factors/")
        n = len(fs)
        up = LETTERS[:n].upper()
        spec = LETTERS[:n] + "," + ",".join(f"{u}{c}" for u, c in zip(up, LETTERS, strict=False))
        return np.einsum(spec + "->" + up, f["core"], *fs)
    if kind == "tt":
        cores = numbered(f, "cores/")
        x = cores[0][0]
        for c in cores[1:]:
            x = np.tensordot(x, c, axes=([-1], [0]))
        return x[..., 0]
    raise AssertionError(kind)


def read_back(path, key="reconstruction"):
    """(array, root attrs) of an output, read without rankwise."""
    path = str(path)
    if path.endswith(".h5"):
        with h5py.File(path, "r") as f:
            return f[key][()], dict(f.attrs)
    if path.endswith(".zarr"):
        g = zarr.open_group(path, mode="r")
        return np.asarray(g[key][...]), dict(g.attrs)
    with np.load(path, allow_pickle=False) as z:
        return z[key], json.loads(str(z["__attrs__"]))


def np_index(spec):
    out = []
    for item in spec.split(","):
        if item == "...":
            out.append(Ellipsis)
        elif ":" in item:
            out.append(slice(*(int(p) if p else None for p in item.split(":"))))
        else:
            out.append(int(item))
    return tuple(out)


def one_error_line(proc, command):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"rankwise {command}: "), proc.stderr
    return lines[0]


def schema_knows(command: str) -> bool:
    from rankwise.cli.schema import load_schema

    return command in load_schema()["properties"]["command"]["enum"]


# --- reconstruct -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, ext", [("svd", "h5"), ("svdc", "npz"), ("nmf", "zarr"), ("cur", "npz"),
                  ("kpsvd", "h5"), ("cp", "zarr"), ("tucker", "h5"), ("tt", "npz"),
                  ("complete", "h5"), ("sparse", "zarr")],
)  # fmt: skip
def test_reconstruct_equals_an_independent_reconstruction(cli, made, name, ext):
    src = made["dir"] / made["out"][name]
    proc = cli("reconstruct", src, "-o", f"rec.{ext}")
    x, attrs = read_back(cli.cwd / f"rec.{ext}")
    t = truth(src)
    factors, fattrs = read_result(src)
    assert x.shape == t.shape
    want = np.float32 if name == "tt" else np.float64  # the factors' dtype is kept
    assert x.dtype == want
    # float64: a few eps; float32 (tt of float32 data): rounding of float32 products
    tol = 1e-5 if name == "tt" else 1e-12
    np.testing.assert_allclose(x, t, rtol=tol, atol=tol * np.abs(t).max())
    assert attrs["kind"] == "reconstruct" and attrs["source_kind"] == fattrs["kind"]
    assert "rankwise reconstruct:" in proc.stderr and f"rec.{ext}" in proc.stderr
    rep = json.loads((cli.cwd / "rec.report.json").read_text())
    assert rep["command"] == "reconstruct" and rep["rank"] is None
    assert rep["input"]["fingerprint"] == fingerprint_many(factors)
    assert rep["input"]["shape"] == list(t.shape)
    assert rep["output"]["arrays"]["reconstruction"]["shape"] == list(t.shape)
    m = rep["metrics"]
    assert m["norm_fro"] == pytest.approx(np.linalg.norm(t), rel=1e-5)
    assert m["source_kind"] == fattrs["kind"] and m["full_shape"] == list(t.shape)
    assert m["n_parameters"] == sum(a.size for k, a in factors.items() if k not in ("rows", "cols"))
    assert rep["parameters"]["slice"] is None and rep["parameters"]["key"] == "reconstruction"
    if schema_knows("reconstruct"):
        load_report(cli.cwd / "rec.report.json")


@pytest.mark.parametrize(
    "name, specs",
    [("svd", ["0:10,:", "::3,5", "3:50:4,-5:", "::-1,::-7"]),
     ("kpsvd", ["7:31:5,3:37:7", "11", "...,13"]),
     ("cp", ["0:10,:,5", "::3,2,::-2", "-1", "1,2,3", "15:1:-4,...,::5"]),
     ("tucker", ["2:7,::2", "0", ":,:,-1"]),
     ("tt", ["::2,3,1:9", "19,17,15"])],
)  # fmt: skip
def test_reconstruct_slices(cli, made, name, specs):
    src = made["dir"] / made["out"][name]
    t = truth(src)
    for i, spec in enumerate(specs):
        out = f"s{i}.npz"
        cli("reconstruct", src, "-o", out, "--slice", spec, "--key", "part", "-q")
        x, attrs = read_back(cli.cwd / out, key="part")
        want = t[np_index(spec)]
        assert x.shape == want.shape, spec
        tol = 1e-5 if name == "tt" else 1e-12
        np.testing.assert_allclose(x, want, rtol=tol, atol=tol * np.abs(t).max(), err_msg=spec)
        rep = json.loads((cli.cwd / f"s{i}.report.json").read_text())
        assert rep["parameters"]["slice"] == attrs["slice"]
        assert rep["metrics"]["shape"] == list(want.shape)
        assert rep["metrics"]["full_shape"] == list(t.shape)


def test_reconstruct_slice_spec_is_normalised(cli, made):
    src = made["dir"] / made["out"]["cp"]
    cli("reconstruct", src, "-o", "n.h5", "--slice", "0:10, ::2 ,-1", "-q")
    rep = json.loads((cli.cwd / "n.report.json").read_text())
    assert rep["parameters"]["slice"] == "0:10,0:18:2,15"


# --- error -------------------------------------------------------------------------------------


def direct_error(x, t):
    x = np.asarray(x, np.float64)
    mask = ~np.isnan(x)
    return np.linalg.norm((x - t)[mask]) / np.linalg.norm(x[mask])


@pytest.mark.parametrize("name", ["svd", "cp", "tucker", "tt"])
def test_error_matches_numpy_and_the_decomposition_report(cli, made, name):
    src = made["dir"] / made["out"][name]
    uri, x = made["data"][name]
    proc = cli("error", src, made["dir"] / uri, "--report", "e.json")
    rep = json.loads((cli.cwd / "e.json").read_text())
    m = rep["metrics"]
    # float64 sums over the same entries: agreement to rounding
    assert m["relative_frobenius_error"] == pytest.approx(direct_error(x, truth(src)), rel=1e-9)
    own = load_report(src.parent / (src.name.rsplit(".", 1)[0] + ".report.json"))
    lo, hi = own["metrics"]["error_bounds"]
    # the decomposition certified its error within [lo, hi]; ours is computed in float64
    assert lo * (1 - 1e-9) <= m["relative_frobenius_error"] <= hi * (1 + 1e-9)
    assert m["relative_frobenius_error"] == pytest.approx(
        own["metrics"]["relative_frobenius_error"], rel=1e-6
    )
    # the same data, whatever the path: the same fingerprint as the decomposition's input
    assert rep["input"]["fingerprint"] == own["input"]["fingerprint"]
    assert rep["parameters"]["factors"]["kind"] == name
    assert rep["output"]["path"] is None and rep["output"]["report"].endswith("e.json")
    assert m["passed"] is True and m["max_error"] is None and rep["rank"] is None
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"{m['relative_frobenius_error']:.4g}" in proc.stderr
    if schema_knows("error"):
        load_report(cli.cwd / "e.json")


@pytest.mark.parametrize("name", ["nmf", "cur", "kpsvd", "complete", "svdc"])
def test_error_of_other_kinds_equals_numpy(cli, made, name):
    src = made["dir"] / made["out"][name]
    uri, x = made["data"][name]
    proc = cli("error", src, made["dir"] / uri, "--json")
    rep = json.loads(proc.stdout)
    m = rep["metrics"]
    assert m["relative_frobenius_error"] == pytest.approx(direct_error(x, truth(src)), rel=1e-9)
    if name == "complete":  # NaN marks the missing entries: left out and counted
        assert m["missing"] == int(np.isnan(x).sum()) > 0
        assert rep["input"]["missing"] == m["missing"]
        assert rep["parameters"]["compare"] == "non-NaN entries"
    if name == "svdc":  # the centred svd divides by ‖X − mean‖ in its own report
        own = load_report(src.parent / "svdc.report.json")
        assert m["relative_error_centred"] == pytest.approx(
            own["metrics"]["relative_frobenius_error"], rel=1e-8
        )
    assert rep["output"]["report"] is None
    assert not (cli.cwd / "e.json").exists()


def test_error_of_sparse_completion_uses_the_stored_entries(cli, made):
    src = made["dir"] / made["out"]["sparse"]
    proc = cli("error", src, made["dir"] / "ratings.mtx", "--json")
    rep = json.loads(proc.stdout)
    coo = made["coo"]
    t = truth(src)
    vals = coo.data
    want = np.linalg.norm(vals - t[coo.row, coo.col]) / np.linalg.norm(vals)
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(want, rel=1e-9)
    assert rep["metrics"]["entries"] == coo.nnz
    assert rep["parameters"]["compare"] == "stored entries"
    own = load_report(src.parent / "cms.report.json")
    assert rep["input"]["fingerprint"] == own["input"]["fingerprint"]


def test_error_of_a_basis_is_the_projection_error(cli, made):
    src = made["dir"] / made["out"]["pod"]
    uri, x = made["data"]["pod"]
    proc = cli("error", src, made["dir"] / uri, "--json")
    rep = json.loads(proc.stdout)
    a, _ = read_result(src)
    v, mean = a["basis"], a["mean"]
    xc = x - mean[:, None]
    resid = xc - v @ (v.T @ xc)
    want = np.linalg.norm(resid) / np.linalg.norm(xc)
    per = np.linalg.norm(resid, axis=0) / np.linalg.norm(xc, axis=0)
    m = rep["metrics"]
    assert m["relative_frobenius_error"] == pytest.approx(want, rel=1e-9)
    assert m["projection_error"]["worst"] == pytest.approx(per.max(), rel=1e-9)
    assert m["projection_error"]["worst_snapshot"] == int(np.argmax(per))
    assert rep["parameters"]["measure"] == "projection" and m["centred"] is True
    own = load_report(src.parent / "pod.report.json")
    assert m["relative_frobenius_error"] == pytest.approx(
        own["metrics"]["relative_frobenius_error"], rel=1e-6
    )
    assert "projection error" in proc.stderr


def test_error_streams_data_larger_than_the_budget(cli, tmp_path):
    rng = np.random.default_rng(5)
    x = low_rank((3000, 300), 4, rng, 0.01)  # 7.2 MB
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("X", data=x, chunks=(100, 300))
    cli("svd", "big.h5:/X", "-o", "f.h5", "--rank", "4", "-q")
    proc = cli("error", "f.h5", "big.h5:/X", "--max-memory", "1M", "--json")
    rep = json.loads(proc.stdout)
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(
        direct_error(x, truth(tmp_path / "f.h5")), rel=1e-9
    )
    assert rep["memory"]["estimate_bytes"] < rep["memory"]["budget_bytes"] == 1 << 20
    assert rep["method"]["details"]["block_rows"] == 100  # whole chunks, a 16th of the budget


def test_max_error_exit_3_after_the_report(cli, made):
    src = made["dir"] / made["out"]["svd"]
    uri = made["dir"] / made["data"]["svd"][0]
    proc = cli("error", src, uri, "--max-error", "1e-6", "--report", "bad.json", expect=3)
    # the summary (it says ABOVE), then the one line of the failed check
    summary, line = proc.stderr.strip().splitlines()
    assert "ABOVE --max-error 1e-06" in summary
    assert line.startswith("rankwise error: check failed: ") and "--max-error 1e-06" in line
    rep = json.loads((cli.cwd / "bad.json").read_text())
    assert rep["metrics"]["passed"] is False and rep["metrics"]["max_error"] == 1e-6
    assert rep["parameters"]["max_error"] == 1e-6
    cli("error", src, uri, "--max-error", "0.5", "-q")
    # quiet, without --report: exit 3 all the same, with just that one line
    proc = cli("error", src, uri, "--max-error", "1e-6", "-q", expect=3)
    assert "check failed" in one_error_line(proc, "error")


# --- bad inputs --------------------------------------------------------------------------------


def test_files_that_are_not_results_are_65(cli, made, tmp_path):
    np.save(tmp_path / "plain.npy", np.ones((3, 3)))
    with h5py.File(tmp_path / "nokind.h5", "w") as f:
        f.create_dataset("X", data=np.ones((3, 3)))
    with h5py.File(tmp_path / "pca.h5", "w") as f:
        f.create_dataset("X", data=np.ones((3, 3)))
        f.attrs["kind"] = "pca"
    with h5py.File(tmp_path / "broken.h5", "w") as f:
        f.create_dataset("U", data=np.ones((3, 2)))
        f.create_dataset("S", data=np.ones(2))
        f.attrs["kind"] = "svd"
    cases = {"plain.npy": "not a rankwise result", "nokind.h5": "no 'kind'",
             "pca.h5": "unknown result kind 'pca'", "broken.h5": "missing array"}  # fmt: skip
    for name, needle in cases.items():
        proc = cli("reconstruct", name, "-o", "r.h5", expect=65)
        assert needle in one_error_line(proc, "reconstruct")
        proc = cli("error", name, made["dir"] / "mat.h5:/X", expect=65)
        assert needle in one_error_line(proc, "error")
    assert not (tmp_path / "r.h5").exists()


def test_a_basis_cannot_be_reconstructed(cli, made):
    proc = cli("reconstruct", made["dir"] / made["out"]["pod"], "-o", "r.h5", expect=2)
    line = one_error_line(proc, "reconstruct")
    assert "basis" in line and "rankwise error" in line


@pytest.mark.parametrize(
    "spec, needle",
    [("0:100", "out of range"), ("0,0,0,0", "4 items"), ("a:b", "not an integer"),
     ("::0", "step 0"), ("3:3", "selects nothing"), ("1,,2", "empty item")],
)  # fmt: skip
def test_bad_slices_are_usage_errors(cli, made, spec, needle):
    proc = cli("reconstruct", made["dir"] / made["out"]["cp"], "-o", "r.h5", "--slice", spec,
               expect=2)  # fmt: skip
    assert needle in one_error_line(proc, "reconstruct")
    assert not (cli.cwd / "r.h5").exists()


def test_data_that_does_not_match_the_factors_is_65(cli, made):
    proc = cli("error", made["dir"] / made["out"]["svd"], made["dir"] / "pos.npz:X", expect=65)
    assert "does not match" in one_error_line(proc, "error")
    proc = cli("error", made["dir"] / made["out"]["pod"], made["dir"] / "pos.npz:X", expect=65)
    assert "do not match the basis" in one_error_line(proc, "error")


def test_nan_in_data_of_a_non_completion_result_is_65(cli, made, tmp_path):
    x = made["data"]["svd"][1].copy()
    x[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", x)
    proc = cli("error", made["dir"] / made["out"]["svd"], "nan.npy", expect=65)
    assert "NaN" in one_error_line(proc, "error")


def test_missing_files_are_66(cli, made):
    proc = cli("reconstruct", "nope.h5", "-o", "r.h5", expect=66)
    assert "nope.h5" in one_error_line(proc, "reconstruct")
    proc = cli("error", "nope.h5", made["dir"] / "mat.h5:/X", expect=66)
    one_error_line(proc, "error")
    proc = cli("error", made["dir"] / made["out"]["svd"], "nodata.npy", expect=66)
    assert "nodata.npy" in one_error_line(proc, "error")
    proc = cli("error", made["dir"] / made["out"]["svd"], made["dir"] / "mat.h5:/nokey",
               expect=66)  # fmt: skip
    one_error_line(proc, "error")


def test_output_conflicts_are_73(cli, made):
    src = made["dir"] / made["out"]["cp"]
    cli("reconstruct", src, "-o", "r.h5", "-q")
    before = (cli.cwd / "r.h5").stat().st_mtime_ns
    proc = cli("reconstruct", src, "-o", "r.h5", expect=73)
    assert "--force" in one_error_line(proc, "reconstruct")
    assert (cli.cwd / "r.h5").stat().st_mtime_ns == before
    cli("reconstruct", src, "-o", "r.h5", "--force", "-q")
    # never over an input, even with --force
    proc = cli("reconstruct", src, "-o", src, "--force", expect=73)
    one_error_line(proc, "reconstruct")
    proc = cli("error", src, made["dir"] / "ten.zarr", "--report", "e.json", "-q")
    proc = cli("error", src, made["dir"] / "ten.zarr", "--report", "e.json", expect=73)
    one_error_line(proc, "error")


def test_memory_budget_refused_before_computing(cli, made):
    src = made["dir"] / made["out"]["cp"]
    proc = cli("reconstruct", src, "-o", "r.h5", "--max-memory", "20K", expect=65)
    line = one_error_line(proc, "reconstruct")
    assert "KiB" in line and "20×18×16" in line and "--slice" in line
    assert not (cli.cwd / "r.h5").exists()
    cli("reconstruct", src, "-o", "r.h5", "--max-memory", "20K", "--slice", "0", "-q")


def test_bad_key_is_a_usage_error(cli, made):
    for key in ("", "a//b", "__attrs__", "../x"):
        proc = cli("reconstruct", made["dir"] / made["out"]["cp"], "-o", "r.h5", "--key", key,
                   expect=2)  # fmt: skip
        assert "--key" in one_error_line(proc, "reconstruct")


# --- report ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["svd", "nmf", "cur", "kpsvd", "cp", "tucker", "tt", "pod",
                                  "complete"])  # fmt: skip
def test_report_renders_every_command(cli, made, name):
    src = made["dir"] / made["out"][name]
    path = src.parent / (src.name.rsplit(".", 1)[0] + ".report.json")
    rep = load_report(path)
    before = sorted(os.listdir(cli.cwd))
    proc = cli("report", path, env=COLS)
    text = proc.stdout
    assert proc.stderr == ""
    assert sorted(os.listdir(cli.cwd)) == before  # no report of its own
    assert text.startswith(f"rankwise {rep['command']}")
    for heading in ("Input", "Method", "Parameters", "Rank", "Metrics", "Convergence",
                    "Resources", "Warnings", "Engine"):  # fmt: skip
        assert f"\n{heading}\n" in text, heading
    assert rep["input"]["fingerprint"] in text and rep["input"]["uri"] in text
    assert rep["method"]["used"] in text and rep["method"]["reason"][:40] in text
    m = rep["metrics"]
    if "relative_frobenius_error" in m:
        line = next(x for x in text.splitlines() if "relative Frobenius error" in x)
        assert f"{m['relative_frobenius_error']:.4g}" in line
        if "error_bounds" in m:
            lo, hi = m["error_bounds"]
            assert f"bounds {lo:.4g} … {hi:.4g}" in line
    value = rep["rank"]["value"]
    shown = ("×" if name == "tucker" else ",").join(map(str, value)) if isinstance(
        value, list) else str(value)  # fmt: skip
    assert any(x.split()[:2] == ["value", shown] for x in text.splitlines()), shown
    assert "← chosen" in text
    assert f"{rep['timings']['total']:.4g} s" in text
    assert f"{rep['threads']['count']} ({rep['threads']['source']})" in text
    if rep["history"]:
        assert f"{len(rep['history'])} entries" in text
    assert ("yes — " if rep["converged"] else "no — ") + rep["stop_reason"] in text


def test_report_shows_completion_and_basis_metrics(cli, made):
    rep = load_report(made["dir"] / "cm.report.json")
    text = cli("report", made["dir"] / "cm.report.json", env=COLS).stdout
    train = rep["metrics"]["train"]
    assert f"rmse={train['rmse']:.4g}" in text and f"n={train['n']}" in text
    pod = load_report(made["dir"] / "pod.report.json")
    text = cli("report", made["dir"] / "pod.report.json", env=COLS).stdout
    assert f"worst={pod['metrics']['projection_error']['worst']:.4g}" in text


def test_report_of_reconstruct_and_error(cli, made):
    if not schema_knows("error") or not schema_knows("reconstruct"):
        pytest.skip("the schema does not list reconstruct and error yet")
    src = made["dir"] / made["out"]["tucker"]
    cli("reconstruct", src, "-o", "r.h5", "--slice", "0:4", "-q")
    cli("error", src, made["dir"] / "ten.zarr", "--report", "e.json", "-q")
    text = cli("report", "r.report.json", env=COLS).stdout
    assert "0:4" in text and "no rank rule" in text
    rep = load_report(cli.cwd / "e.json")
    text = cli("report", "e.json", env=COLS).stdout
    assert f"{rep['metrics']['relative_frobenius_error']:.4g}" in text


def test_bad_reports(cli, made, tmp_path):
    (tmp_path / "trunc.json").write_text('{"schema": "rankwise-report/1",')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    rep = json.loads((made["dir"] / "svd.report.json").read_text())
    del rep["timings"]
    (tmp_path / "invalid.json").write_text(json.dumps(rep))
    rep = json.loads((made["dir"] / "svd.report.json").read_text())
    rep["metrics"]["relative_frobenius_error"] = -1.0
    (tmp_path / "negative.json").write_text(json.dumps(rep))
    cases = {"trunc.json": "not JSON", "list.json": "not a rankwise report",
             "bin.json": "not UTF-8", "invalid.json": "'timings' is a required property",
             "negative.json": "metrics/relative_frobenius_error"}  # fmt: skip
    for name, needle in cases.items():
        proc = cli("report", name, expect=65)
        line = one_error_line(proc, "report")
        assert needle in line and name in line
        assert proc.stdout == ""
    proc = cli("report", "missing.json", expect=66)
    assert "missing.json" in one_error_line(proc, "report")
