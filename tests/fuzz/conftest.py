"""Hypothesis profiles and module guards of the fuzz suite.

Profiles: "ci" (the default) is deterministic and runs at least fuzzkit.MIN_INPUTS generated
inputs per format; "dev" (HYPOTHESIS_PROFILE=dev) is a quick smoke run. The fuzz tests apply the
profile with their own @settings (fuzzkit.fuzz_settings), it is not loaded globally, so
hypothesis tests elsewhere keep hypothesis's defaults.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz.fuzzkit import (
    COUNTS,
    MEMORY_LIMIT,
    MIN_INPUTS,
    OUTCOMES,
    PEAKS,
    PROFILE,
    TRACE,
    Scratch,
    module_peak,
)
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

_COMMON = dict(
    deadline=None,  # file I/O timing varies on shared CI machines; hangs have their own alarm
    database=None,  # nothing written into the repository
    derandomize=True,  # the same inputs on every run
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Hypothesis caches (code constants, unicode tables) outside the repository too.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "rankwise-hypothesis"))
# Examples per fuzz test; each format has at least three tests (see MIN_INPUTS).
settings.register_profile("ci", max_examples=700, **_COMMON)
settings.register_profile("dev", max_examples=60, **_COMMON)


MODULE_PEAKS: dict[str, int] = {}  # peak RSS growth of each fuzz module


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Iterator[Scratch]:
    """Module-scoped (hypothesis reruns a test body within one function fixture); in RAM when
    /dev/shm is there: thousands of tiny files are written and removed, and on a disk the
    directory syncs alone would take most of the suite's time."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        root = Path(tempfile.mkdtemp(prefix="rankwise-fuzz-", dir=shm))
        try:
            yield Scratch(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield Scratch(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module", autouse=True)
def fuzz_module_guard(request):
    """At the end of a module check that its peak RSS growth stayed under MEMORY_LIMIT and,
    when all of its fuzz tests ran, that the format got its generated inputs."""
    fmt = getattr(request.module, "FUZZ_FORMAT", None)
    before = COUNTS[fmt] if fmt else 0
    peak = module_peak()
    TRACE[0] = getattr(request.module, "FUZZ_TRACE", True)
    yield
    TRACE[0] = True
    grew = peak.growth()
    MODULE_PEAKS[request.module.__name__.rpartition(".")[2]] = grew
    assert grew < MEMORY_LIMIT, f"{request.module.__name__}: peak RSS grew {grew >> 20} MiB"
    if fmt is None:
        return
    fuzz_tests = {
        name
        for name, obj in vars(request.module).items()
        if name.startswith("test_") and getattr(obj, "is_hypothesis_test", False)
    }
    ran = {
        i.originalname
        for i in request.session.items
        if i.module is request.module and getattr(i, "_fuzz_ran", False)
    }
    if fuzz_tests <= ran and not request.session.testsfailed:
        want = int(MIN_INPUTS * getattr(request.module, "FUZZ_SHARE", 1.0))
        got = COUNTS[fmt] - before
        assert got >= want, f"{fmt}: only {got} generated inputs (want {want})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    if outcome.excinfo is None:
        item._fuzz_ran = True


def pytest_terminal_summary(terminalreporter):
    if not COUNTS:
        return
    terminalreporter.write_line(f"fuzz inputs ({PROFILE} profile):")
    for fmt, n in COUNTS.items():
        outcomes = ", ".join(f"{k} {v}" for (f, k), v in sorted(OUTCOMES.items()) if f == fmt)
        peak = PEAKS.get(fmt, 0) / 2**20
        terminalreporter.write_line(f"  {fmt}: {n} inputs, peak +{peak:.0f} MiB ({outcomes})")
    growth = ", ".join(f"{m} +{g / 2**20:.0f} MiB" for m, g in MODULE_PEAKS.items())
    terminalreporter.write_line(f"peak RSS growth per module: {growth}")
