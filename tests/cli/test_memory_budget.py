"""--max-memory is honoured by every command (issue 9): a run that would exceed it either
streams within it or is refused before the data is read, with exit 65 and the estimate in a
one-line message. Every command of the app must have a case here (or a stated reason not to).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import typer
from helpers import CLI, load_report

from rankwise.cli.main import app

BUDGET = "1M"  # every input below is 2–4 MB


def _commands(group, prefix=()):
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            yield from _commands(sub, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


# command → (arguments, outcome): "refused" (exit 65 with the estimate) or "streams"
CASES = {
    "svd": (["svd", "m.npy", "--rank", "5", "-o", "o.npz"], "streams"),
    "svd exact": (["svd", "m.npy", "--rank", "5", "--method", "exact", "-o", "o.npz"], "refused"),
    "nmf": (["nmf", "m.npy", "--rank", "5", "-o", "o.npz"], "refused"),
    "cur": (["cur", "m.npy", "--rank", "5", "-o", "o.npz"], "refused"),
    "kpsvd": (["kpsvd", "m.npy", "--block", "40x10", "--rank", "2", "-o", "o.npz"], "refused"),
    "cp": (["cp", "t.npy", "--rank", "3", "-o", "o.npz"], "refused"),
    "tucker": (["tucker", "t.npy", "--ranks", "3", "-o", "o.npz"], "streams"),
    "tucker hooi": (["tucker", "t.npy", "--ranks", "3", "--method", "hooi", "-o", "o.npz"],
                    "refused"),
    "tucker budget": (["tucker", "t.npy", "--budget", "500", "-o", "o.npz"], "refused"),
    "tt": (["tt", "t.npy", "--max-rank", "3", "-o", "o.npz"], "streams"),
    "complete": (["complete", "g.npy", "--rank", "3", "-o", "o.npz"], "refused"),
    "rob pod": (["rob", "pod", "s.npy", "--rank", "5", "--method", "svd", "-o", "o.npz"],
                "refused"),
    "rob enrich": (["rob", "enrich", "b.npz", "s.npy", "--rank", "8", "-o", "o.npz"], "refused"),
    "rob merge": (["rob", "merge", "big.npz", "big.npz", "--rank", "5", "-o", "o.npz"],
                  "refused"),
    "rob local": (["rob", "local", "s.npy", "--rank", "3", "--clusters", "2", "-o", "o.npz"],
                  "refused"),
    "rob project": (["rob", "project", "b.npz", "s.npy"], "refused"),
    "rob deim": (["rob", "deim", "big.npz", "-o", "o.npz"], "refused"),
    "reconstruct": (["reconstruct", "f.npz", "-o", "o.npz"], "refused"),
    "error": (["error", "f.npz", "m.npy"], "streams"),
    "info": (["info", "--scan", "m.npy"], "streams"),
}  # fmt: skip
# commands that read no data array: nothing to bound
NO_DATA = {"report": "reads a JSON report", "plot": "reads a JSON report"}


def test_every_command_has_a_budget_case():
    names = set(_commands(typer.main.get_command(app)))
    covered = {c.split(" ")[0] if c.split(" ")[0] != "rob" else " ".join(c.split(" ")[:2])
               for c in CASES}  # fmt: skip
    assert names - covered - set(NO_DATA) == set()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("budget")
    rng = np.random.default_rng(0)
    np.save(d / "m.npy", rng.random((1000, 400)))  # 3.2 MB
    np.save(d / "t.npy", rng.random((80, 60, 60)))  # 2.3 MB
    g = rng.random((1000, 400))
    g[rng.random(g.shape) < 0.5] = np.nan
    np.save(d / "g.npy", g)
    np.save(d / "s.npy", rng.standard_normal((2000, 120)))  # 1.9 MB
    cli = CLI(d)
    cli("rob", "pod", "s.npy", "--rank", "5", "-o", "b.npz")
    np.savez(d / "big.npz", basis=np.linalg.qr(rng.standard_normal((40000, 8)))[0],
             singular_values=np.arange(8, 0, -1.0))  # fmt: skip
    cli("svd", "m.npy", "--rank", "5", "-o", "f.npz")
    return d


@pytest.mark.parametrize("case", list(CASES))
def test_budget_is_honoured(files, case):
    args, outcome = CASES[case]
    out = case.replace(" ", "_") + ".npz"  # the module's files are shared: one output per case
    args = [out if a == "o.npz" else a for a in args]
    cli = CLI(files)
    if outcome == "refused":
        proc = cli(*args, "--max-memory", BUDGET, "--force", expect=65)
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "memory budget" in proc.stderr, proc.stderr
        # the estimate and the budget, both as sizes
        assert len(re.findall(r"\d+(?:\.\d+)? [KMG]iB", proc.stderr)) >= 2, proc.stderr
        assert not (files / out).exists()
    else:
        extra = ["--force"] if args[0] not in ("info",) else []
        report = [] if args[0] not in ("error",) else ["--report", "e.report.json"]
        cli(*args, "--max-memory", BUDGET, *extra, *report)
        if args[0] in ("svd", "tucker", "tt"):
            rep = load_report(files / out.replace(".npz", ".report.json"))
            assert "streaming" in rep["method"]["used"] or rep["parameters"].get("streaming")
            assert rep["memory"]["budget_bytes"] == 1024 * 1024
