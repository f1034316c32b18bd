"""The project's promises outside the code: README commands, CI, packaging, sample data."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, SAMPLES, rankwise_exe

from rankwise.formats import list_arrays, open_array


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)


def test_readme_starts_with_the_two_fresh_machine_commands():
    first, second = readme_commands()[:2]
    assert "\n" not in first and "\n" not in second
    assert "pip install -e ." in first and "rankwise svd sample_data/" in first
    assert 'pip install -e ".[dev]"' in second and "pytest" in second
    # CI runs exactly the README's test command.
    ci = (REPO / ".ci" / "run").read_text()
    assert second in ci


def test_readme_main_job_runs(cli, tmp_path):
    first = readme_commands()[0]
    job = first[first.index("rankwise svd") :].split()
    job = [w.replace("sample_data/", f"{SAMPLES}/") for w in job[1:]]
    cli(*job)
    assert (tmp_path / "heat_svd.h5").exists() and (tmp_path / "heat_svd.report.json").exists()


def test_no_top_level_core_cli_or_formats_installed(tmp_path):
    code = (
        "import importlib.util as u, rankwise.cli, rankwise.core, rankwise.formats;"
        "print([n for n in ('core', 'cli', 'formats') if u.find_spec(n)])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_help_does_not_import_heavy_libraries(tmp_path):
    code = (
        "import sys; sys.argv=['rankwise','--help'];"
        "from rankwise.cli.main import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('numpy','scipy','h5py','zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_help_returns(tmp_path):
    t0 = time.perf_counter()
    subprocess.run([rankwise_exe(), "--help"], capture_output=True, check=True)
    assert time.perf_counter() - t0 < 30  # a smoke bound only; speed lives in benchmarks/


@pytest.mark.slow
def test_sample_data_regenerates(tmp_path):
    subprocess.run([sys.executable, str(SAMPLES / "make_samples.py"), str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    shipped = sorted(
        p.name for p in SAMPLES.iterdir() if p.suffix in (".h5", ".zarr", ".npz", ".npy", ".mtx")
    )
    assert shipped == sorted(p.name for p in tmp_path.iterdir())
    for name in shipped:
        for entry in list_arrays(SAMPLES / name)["arrays"]:
            old = open_array(entry["uri"]).read()
            new_uri = entry["uri"].replace(str(SAMPLES), str(tmp_path))
            new = open_array(new_uri).read()
            if hasattr(old, "toarray"):
                old, new = old.toarray(), new.toarray()
            # Same seeds and code; only the platform's last-bit rounding may differ.
            np.testing.assert_allclose(new, old, rtol=1e-12, atol=0)
