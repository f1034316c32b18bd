"""`rankwise rob pod|enrich|merge|local|project|deim` end to end on real files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import load_report, run_in_process, spy_on

from rankwise.formats import read_result


def family(n=400, m=60, seed=0, noise=0.0):
    """Smooth parametric snapshots u_μ(x) = exp(−μ x)·sin(πx) + μ x²: fast singular decay."""
    x = np.linspace(0, 1, n)[:, None]
    mu = np.random.default_rng(seed).uniform(0.5, 5.0, m)[None, :]
    a = np.exp(-mu * x) * np.sin(np.pi * x) + mu * x**2
    return a + noise * np.random.default_rng(seed + 1).standard_normal(a.shape)


def sine(u1, u2):
    """Largest principal-angle sine, ‖(I − U1U1ᵀ)U2‖₂ (accurate for tiny angles)."""
    return float(np.linalg.norm(u2 - u1 @ (u1.T @ u2), 2))


def mass_matrix(n, seed=0):
    """An SPD tridiagonal (P1 finite-element) mass matrix on a random non-uniform mesh."""
    h = np.random.default_rng(seed).uniform(0.5, 1.5, n - 1) / n
    main = np.zeros(n)
    main[:-1] += h / 3
    main[1:] += h / 3
    return sp.diags([h / 6, main, h / 6], [-1, 0, 1], format="coo")


def test_pod_with_mass_matrix_is_m_orthonormal_and_reports_every_rule(cli, tmp_path):
    a = family()
    m = mass_matrix(a.shape[0])
    np.save(tmp_path / "x.npy", a)
    scipy.io.mmwrite(tmp_path / "m.mtx", m)
    proc = cli("rob", "pod", "x.npy", "-o", "b.h5", "--tol", "1e-4", "--mass", "m.mtx")
    arrays, attrs = read_result(tmp_path / "b.h5")
    v, s = arrays["basis"], arrays["singular_values"]
    gram = v.T @ (m.tocsr() @ v)
    assert np.abs(gram - np.eye(v.shape[1])).max() <= 1e-12  # M-orthonormal
    # independent truth: the singular values of M^½ A = those of L^T A with M = L L^T
    lchol = np.linalg.cholesky(m.toarray())
    ref = np.linalg.svd(lchol.T @ a, compute_uv=False)
    # kept σ ≥ 1e-4·σ₁; both SVDs are backward stable (eps·σ₁): 1e-9 relative is ample
    np.testing.assert_allclose(s, ref[: len(s)], rtol=1e-9)
    rep = load_report(tmp_path / "b.report.json")
    err = np.sqrt(np.sum(ref[len(s) :] ** 2) / np.sum(ref**2))
    assert rep["metrics"]["relative_frobenius_error"] == pytest.approx(err, rel=1e-6)
    assert err <= 1e-4 and rep["rank"]["rule"] == "tol"
    assert {r["rule"] for r in rep["rank"]["by_rule"]} >= {"tol", "energy", "rel_sv"}
    assert rep["parameters"]["mass"]["uri"].endswith("m.mtx") and attrs["kind"] == "rob pod"
    assert "mode(s)" in proc.stderr


def test_pod_rows_layout_and_streaming_agree(cli, tmp_path):
    a = family(3000, 40, noise=1e-9)
    np.save(tmp_path / "t.npy", a.T)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("a", data=a, chunks=(200, 40))
    cli("rob", "pod", "t.npy", "--snapshots", "rows", "-o", "r.h5", "--rank", "6", "-q")
    cli("rob", "pod", "x.h5:/a", "-o", "s.h5", "--rank", "6", "--streaming", "--max-memory",
        "200M", "-q")  # fmt: skip
    r, _ = read_result(tmp_path / "r.h5")
    s, _ = read_result(tmp_path / "s.h5")
    # two exact routes (SVD of the transpose, streamed Gram with Rayleigh–Ritz) of 6 modes
    # well separated from the 1e-9 noise: agreement to rounding over the gap
    np.testing.assert_allclose(r["singular_values"], s["singular_values"], rtol=1e-9)
    assert sine(r["basis"], s["basis"]) <= 1e-8
    rep = load_report(tmp_path / "s.report.json")
    assert rep["parameters"]["streaming"] and rep["method"]["details"]["streaming"]


def test_enrich_and_merge_match_a_batch_pod(cli, tmp_path):
    a = family(300, 80, seed=3)
    np.save(tmp_path / "all.npy", a)
    np.save(tmp_path / "a1.npy", a[:, :40])
    np.save(tmp_path / "a2.npy", a[:, 40:])
    # errors well above the Gram's resolution (√(m·eps)·σ₁ ≈ 1e-7), where the reported
    # discarded energies are exact to a few digits
    rule = ["--tol", "1e-5"]
    cli("rob", "pod", "all.npy", "-o", "batch.h5", *rule, "-q")
    cli("rob", "pod", "a1.npy", "-o", "p1.h5", *rule, "-q")
    cli("rob", "pod", "a2.npy", "-o", "p2.h5", *rule, "-q")
    cli("rob", "enrich", "p1.h5", "a2.npy", "-o", "e.h5", *rule, "--one-at-a-time", "-q")
    cli("rob", "merge", "p1.h5", "p2.h5", "-o", "m.h5", *rule, "-q")
    batch, _ = read_result(tmp_path / "batch.h5")
    for name in ("e", "m"):
        res, _ = read_result(tmp_path / f"{name}.h5")
        k = min(res["basis"].shape[1], batch["basis"].shape[1])
        # the leading modes are well separated: the same subspace up to the truncations
        assert sine(res["basis"][:, :k], batch["basis"][:, :4]) <= 1e-6
        np.testing.assert_allclose(res["singular_values"][:4], batch["singular_values"][:4],
                                   rtol=1e-8)  # fmt: skip
        rep = load_report(tmp_path / f"{name}.report.json")
        v = res["basis"]
        actual = np.linalg.norm(a - v @ (v.T @ a)) / np.linalg.norm(a)
        assert actual <= rep["metrics"]["error_bound"]["relative"] * (1 + 1e-6)  # a true bound
    rep = load_report(tmp_path / "m.report.json")
    assert [b["path"].endswith(f"p{i}.h5") for i, b in enumerate(rep["parameters"]["bases"], 1)]


def test_local_bases_recover_scaled_subspaces_and_project_assigns_them(cli, tmp_path):
    # snapshots s·(u₁ + a·u₂) in three random planes, amplitudes over four decades
    rng = np.random.default_rng(5)
    n, per = 120, 30
    bases = [np.linalg.qr(rng.standard_normal((n, 2)))[0] for _ in range(3)]
    cols = [(b[:, :1] + b[:, 1:] * rng.uniform(-0.5, 0.5, per)) * 10 ** rng.uniform(-2, 2, per)
            for b in bases]  # fmt: skip
    x = np.hstack(cols)
    truth = np.repeat(np.arange(3), per)
    np.save(tmp_path / "x.npy", x)
    cli("rob", "local", "x.npy", "-o", "l.h5", "--tol", "1e-8", "--clusters", "3", "--seed",
        "1", "-q")  # fmt: skip
    arrays, attrs = read_result(tmp_path / "l.h5")
    labels = arrays["labels"]
    # every true subspace lands in exactly one cluster (labels up to a permutation)
    assert all(len(set(labels[truth == t])) == 1 for t in range(3))
    assert len(set(labels)) == 3 and attrs["clusters"] == 3
    rep = load_report(tmp_path / "l.report.json")
    assert rep["metrics"]["efficiency"] < 1.0  # 2 local modes against 6 global ones
    assert rep["rank"]["global"] == 6
    cli("rob", "project", "l.h5", "x.npy", "-o", "p.npz", "--max-error", "1e-8", "-q")
    p, _ = read_result(tmp_path / "p.npz")
    assert p["projection_errors"].max() <= 1e-8  # each snapshot lies in its cluster's span


def test_project_max_error_exit_code_and_report(cli, tmp_path):
    a = family(200, 30, noise=1e-3)
    np.save(tmp_path / "x.npy", a)
    cli("rob", "pod", "x.npy", "-o", "b.h5", "--rank", "3", "-q")
    arrays, _ = read_result(tmp_path / "b.h5")
    v = arrays["basis"]
    direct = np.linalg.norm(a - v @ (v.T @ a), axis=0) / np.linalg.norm(a, axis=0)
    proc = cli("rob", "project", "b.h5", "x.npy", "--max-error", str(direct.max() / 2),
               "--report", "p.json", expect=3)  # fmt: skip
    assert "check failed" in proc.stderr and proc.stderr.count("check failed") == 1
    rep = load_report(tmp_path / "p.json")
    # errors ≈ 1e-3 from explicit float64 residuals on both sides
    assert rep["metrics"]["worst"] == pytest.approx(direct.max(), rel=1e-8)
    assert rep["metrics"]["mean"] == pytest.approx(direct.mean(), rel=1e-8)
    assert rep["output"]["path"] is None
    cli("rob", "project", "b.h5", "x.npy", "--max-error", str(direct.max() * 2), "-q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5", "b.report.json", "p.json",
                                                          "x.npy"]  # fmt: skip


def test_deim_indices_and_error_constant(cli, tmp_path):
    a = family(250, 40)
    np.save(tmp_path / "x.npy", a)
    cli("rob", "pod", "x.npy", "-o", "b.h5", "--rank", "5", "-q")
    cli("rob", "deim", "b.h5", "-o", "d.npz", "--method", "deim", "--points", "7", "-q")
    arrays, _ = read_result(tmp_path / "d.npz")
    basis, _ = read_result(tmp_path / "b.h5")
    idx = arrays["indices"]
    assert len(idx) == 7 and len(set(idx.tolist())) == 7
    pv = basis["basis"][idx]
    rep = load_report(tmp_path / "d.report.json")
    const = np.linalg.norm(np.linalg.pinv(pv), 2)
    # the same 2-norm of a 7×5 pseudo-inverse, from an orthonormal basis: rounding only
    assert rep["metrics"]["error_constant"] == pytest.approx(const, rel=1e-8)
    assert rep["parameters"] == {**rep["parameters"], "method": "deim", "points": 7}


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["pod", "x.npy", "-o", "o.h5"], 2, "--tol"),
        (["pod", "x.npy", "-o", "o.h5", "--tol", "0.1", "--rank", "2"], 2, "--tol"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "2", "--criterion", "energy"], 2, "--criterion"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "2", "--mass", "m.mtx", "--weights", "w.npy"],
         2, "not both"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "2", "--mass", "bad.mtx"], 65, "positive"),
        (["pod", "x.npy", "-o", "o.h5", "--rank", "2", "--weights", "short.npy"], 65, "shape"),
        (["local", "x.npy", "-o", "o.h5", "--rank", "1", "--clusters", "3:1"], 2, "--clusters"),
        (["local", "x.npy", "-o", "o.h5", "--rank", "1", "--clusters", "2", "--dissimilarity",
          "grassmann"], 2, "--groups"),
        (["merge", "b.h5", "-o", "o.h5", "--rank", "1"], 2, "two bases"),
        (["enrich", "x.npz", "x.npy", "-o", "o.h5", "--rank", "1"], 65, "not a basis"),
        (["deim", "b.h5", "-o", "o.h5", "--points", "99"], 2, "points"),
        (["project", "missing.h5", "x.npy"], 66, "missing.h5"),
    ],
)  # fmt: skip
def test_rob_usage_and_data_errors(cli, tmp_path, args, code, needle):
    a = family(30, 12)
    np.save(tmp_path / "x.npy", a)
    np.savez(tmp_path / "x.npz", a=a)
    np.save(tmp_path / "w.npy", np.ones(30))
    np.save(tmp_path / "short.npy", np.ones(29))
    scipy.io.mmwrite(tmp_path / "m.mtx", sp.identity(30, format="coo"))
    scipy.io.mmwrite(tmp_path / "bad.mtx", -sp.identity(30, format="coo"))
    cli("rob", "pod", "x.npy", "-o", "b.h5", "--rank", "2", "-q")
    proc = cli("rob", *args, expect=code)
    assert needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o.h5").exists()


def test_every_rob_option_reaches_the_core(tmp_path, monkeypatch):
    import rankwise.core.deim as deim_core
    import rankwise.core.local as local_core
    import rankwise.core.pod as core

    a = family(200, 30)
    np.save(tmp_path / "x.npy", a)
    np.save(tmp_path / "w.npy", np.linspace(1, 2, 200))
    np.save(tmp_path / "g.npy", np.repeat(np.arange(3), 10))
    seen = spy_on(monkeypatch, core, "pod")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "pod", "x.npy", "-o", "b.h5", "--tol", "0.01", "--criterion", "energy",
        "--method", "randomized", "--weights", "w.npy", "--oversample", "4", "--power-iters",
        "1", "--in-memory", "--seed", "3", "--max-memory", "300M", "-q",
    ])  # fmt: skip
    assert seen["_args"][1].kind == "energy" and seen["_args"][1].value == 0.01
    expect = {"method": "randomized", "oversample": 4, "power_iters": 1, "streaming": False,
              "max_memory": 300 << 20, "center": False}  # fmt: skip
    assert {k: seen[k] for k in expect} == expect and seen["weights"].shape == (200,)
    assert seen["_rng_state"] == np.random.default_rng(3).bit_generator.state
    run_in_process(tmp_path, monkeypatch, [
        "rob", "pod", "x.npy", "-o", "c.h5", "--rank", "3", "--center", "-q"])  # fmt: skip
    assert seen["center"] is True and seen["_args"][1].kind == "rank"

    seen = spy_on(monkeypatch, core, "enrich")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "enrich", "b.h5", "x.npy", "-o", "e.h5", "--rank", "4", "--one-at-a-time",
        "--weights", "w.npy", "-q",
    ])  # fmt: skip
    assert seen["columns_per_update"] == 1 and seen["weights"].shape == (200,)
    assert seen["discarded_energy"] == load_report(tmp_path / "b.report.json")["metrics"][
        "discarded_energy"]  # fmt: skip

    seen = spy_on(monkeypatch, core, "merge")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "merge", "b.h5", "e.h5", "-o", "m.h5", "--tol", "1e-3", "--criterion", "rel-sv",
        "--weights", "w.npy", "-q",
    ])  # fmt: skip
    assert len(seen["_args"][0]) == 2 and seen["_args"][1].kind == "rel_sv"

    seen = spy_on(monkeypatch, local_core, "local_pod")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "local", "x.npy", "-o", "l.h5", "--rank", "2", "--clusters", "2:3",
        "--dissimilarity", "grassmann", "--groups", "g.npy", "--n-init", "3", "--refine",
        "--max-iter", "5", "--seed", "8", "-q",
    ])  # fmt: skip
    expect = {"clusters": range(2, 4), "dissimilarity": "grassmann", "n_init": 3, "refine": True,
              "max_iter": 5}  # fmt: skip
    assert seen["_rng_state"] == np.random.default_rng(8).bit_generator.state
    assert {k: seen[k] for k in expect} == expect and list(seen["groups"]) == [0] * 10 + [
        1] * 10 + [2] * 10  # fmt: skip

    seen = spy_on(monkeypatch, deim_core, "deim")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "deim", "b.h5", "-o", "d.h5", "--method", "deim", "--points", "9", "-q",
    ])  # fmt: skip
    assert seen["method"] == "deim" and seen["points"] == 9

    seen = spy_on(monkeypatch, core, "project")
    run_in_process(tmp_path, monkeypatch, [
        "rob", "project", "l.h5", "x.npy", "--weights", "w.npy", "-q"])  # fmt: skip
    assert seen["medoids"].shape[0] == 200 and len(seen["_args"][0]) >= 2
