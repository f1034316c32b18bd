"""Shared machinery of the fuzz suite: the property every generated input must satisfy, byte
mutators, and the memory and time guards.

The property: opening and reading an input either succeeds with the declared shape and dtype,
or raises one of rankwise's own errors (exit 65/66/74, or 2 for a key the mutated file no
longer takes) with a non-empty one-line message. Any other exception, a hang (EXAMPLE_TIMEOUT),
or a memory spike fails the example: the kernel's peak-RSS mark is reset before each input
(/proc/self/clear_refs) so the growth of each one is measured, numpy buffers allocated but
never touched are seen by tracemalloc, and a module's overall growth is checked at its end.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import shutil
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

import rankwise.formats as F

BUDGET = 64 * 1024 * 1024  # max_bytes given to every read
MEMORY_LIMIT = 500 * 1024 * 1024  # the bound on any single input
EXAMPLE_TIMEOUT = 30  # seconds; a hang fails the example instead of stalling CI
# Exit 65, 66, 74, and 2: a mutation can make the key name a group, or make the content
# another format's (magic bytes win over the extension) that takes no key.
OWN_ERRORS = (F.DataError, F.InputMissingError, F.StorageError, F.UsageError)
OPS = ("read", "blocks", "scan", "describe", "list")

# Hypothesis profile (registered in conftest.py): "ci" by default, "dev" for quick runs.
PROFILE = "dev" if os.environ.get("HYPOTHESIS_PROFILE") == "dev" else "ci"
# Generated inputs each format must reach when all of its fuzz tests run (3 tests × 700).
MIN_INPUTS = {"ci": 2000, "dev": 150}[PROFILE]


def fuzz_settings(tests_in_module: int = 3, share: float = 1.0) -> settings:
    """The active profile, applied per test so other hypothesis tests keep their defaults.

    The profile's max_examples is for a module of three fuzz tests; a module with more
    shares the same total (each format gets about 3 × max_examples inputs), and `share`
    scales it (the COO module, whose inputs are HDF5 and Zarr files on top of theirs).
    """
    profile = settings.get_profile(PROFILE)
    if tests_in_module == 3 and share == 1.0:
        return profile
    total = 3 * profile.max_examples * share
    return settings(profile, max_examples=int(-(-total // tests_in_module)))


COUNTS: collections.Counter[str] = collections.Counter()  # inputs checked, per format
# (format, outcome) -> inputs: shows the generators reach past the first check.
OUTCOMES: collections.Counter[tuple[str, str]] = collections.Counter()
PEAKS: dict[str, int] = {}  # largest growth of peak RSS / traced memory seen, per format
_HWM = [0]  # highest peak RSS (bytes) seen at the end of any example
# Trace Python allocations per example (set per module by conftest from FUZZ_TRACE).
TRACE = [True]
_serial = itertools.count()


# -- memory and time guards -----------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0) so each example gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False  # then VmHWM is monotone and only catches the first spike


class ModulePeak:
    """Peak RSS growth over a whole module, from its start (per-example resets included)."""

    def __init__(self) -> None:
        reset = _reset_peak_rss()
        # Without the reset VmHWM is monotone: its value now is the baseline.
        self.base = _status_kib("VmRSS" if reset else "VmHWM") * 1024
        _HWM[0] = 0

    def growth(self) -> int:
        return max(_HWM[0], _status_kib("VmHWM") * 1024) - self.base


module_peak = ModulePeak


class Hang(BaseException):
    """Raised by the per-example alarm; BaseException so no reader can swallow it."""


def _alarm(signum, frame):
    raise Hang(f"example ran longer than {EXAMPLE_TIMEOUT} s")


@contextlib.contextmanager
def guarded(fmt: str) -> Iterator[None]:
    """Time-limit one example and fail it if its RSS or traced allocations grow past
    MEMORY_LIMIT (RSS sees C allocations by HDF5/codecs; tracemalloc sees numpy buffers that
    were allocated but never touched)."""
    _reset_peak_rss()
    rss0 = _status_kib("VmRSS") * 1024
    # Traced only during the example: tracing hypothesis itself would slow it down fivefold.
    tracing = TRACE[0] and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        hwm = _status_kib("VmHWM") * 1024
        _HWM[0] = max(_HWM[0], hwm)
        grew = hwm - rss0
        if tracing:
            grew = max(grew, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        PEAKS[fmt] = max(PEAKS.get(fmt, 0), grew)
    assert grew < MEMORY_LIMIT, f"one input grew memory by {grew / 2**20:.0f} MiB"


# -- the property ---------------------------------------------------------------------------


def assert_own_error(exc: BaseException) -> None:
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in msg and "\r" not in msg, f"multi-line message: {msg!r}"
    # The budget is 64 MiB: running out of memory means a size check was skipped.
    cause: BaseException | None = exc
    while cause is not None:
        assert not isinstance(cause, MemoryError), f"allocation escaped the budget: {msg}"
        cause = cause.__cause__ or cause.__context__


def _check_dense(h: Any, out: Any) -> None:
    assert isinstance(out, np.ndarray), type(out)
    assert out.shape == h.shape and out.dtype == h.dtype, (out.shape, out.dtype, h)


def _check_sparse(h: Any, out: Any) -> None:
    assert out.format == "csr", type(out)
    assert out.shape == h.shape and out.dtype == h.dtype, (out.shape, out.dtype, h)


def check_entries(h: Any, e: Any) -> None:
    assert e.shape == h.shape and len(e.indices) == h.ndim, (e.shape, h)
    assert e.values.dtype == h.dtype and e.values.ndim == 1
    for idx, extent in zip(e.indices, h.shape, strict=True):
        assert idx.dtype == np.int64 and len(idx) == len(e.values)
        assert idx.size == 0 or (idx.min() >= 0 and idx.max() < extent)


def _exercise(h: Any, op: str) -> None:
    desc = h.describe()
    assert desc["shape"] == list(h.shape)
    if op == "read":
        out = h.read()
        (_check_sparse if h.sparse else _check_dense)(h, out)
    elif op == "entries":
        check_entries(h, h.read_entries())
    elif op == "blocks":
        rows = h.block_rows(max(BUDGET // 8, 1))
        seen = 0
        for start, block in h.iter_blocks(rows, max_bytes=BUDGET):
            if h.ndim == 0:
                assert block.shape == ()
                continue
            assert start == seen and block.shape[1:] == h.shape[1:], (start, block.shape, h)
            seen += block.shape[0]
        assert h.ndim == 0 or seen == h.shape[0]
    elif op == "scan":
        counts = h.scan(max_bytes=BUDGET)
        assert min(counts.values()) >= 0
    elif op != "describe":
        raise AssertionError(f"unknown op {op}")


def check_input(fmt: str, uri: str | Path, op: str = "read") -> type[BaseException] | None:
    """Open and use `uri` in-process; return None on success or the rankwise error class."""
    COUNTS[fmt] += 1
    with guarded(fmt):
        try:
            if op == "list":
                listing = F.list_arrays(F.parse_uri(uri).path)
                assert listing["arrays"] is not None
                for entry in listing["arrays"]:
                    assert all(n.strip() and "\n" not in n for n in entry["notes"]), entry
            else:
                with F.open_array(uri, max_bytes=BUDGET) as h:
                    _exercise(h, op)
        except OWN_ERRORS as exc:
            # The scratch disk is healthy: exit 74 here would call corrupt content an I/O error.
            assert not isinstance(exc, F.StorageError), exc
            assert_own_error(exc)
            OUTCOMES[fmt, type(exc).__name__] += 1
            return type(exc)
    OUTCOMES[fmt, "ok"] += 1
    return None


# -- scratch files --------------------------------------------------------------------------


class Scratch:
    """A fresh path per generated input inside a module-wide directory, removed after use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def path(self, suffix: str) -> Iterator[Path]:
        p = self.root / f"in{next(_serial)}{suffix}"
        try:
            yield p
        finally:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    """Write a directory store given as {relative path: bytes}."""
    root.mkdir()
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- byte mutations -------------------------------------------------------------------------

# Values that make lengths, offsets and counts interesting: zero, sign bits, all-ones, huge.
INTERESTING_INTS = (
    0,
    1,
    2,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    2**40,
    2**62,
    2**63 - 1,
    2**63,
    2**64 - 1,
)
MUTATIONS = ("flip", "byte", "int", "truncate", "insert", "delete", "splice", "zero")
# Strategies built once: building them inside a composite costs more than the example.
_mutations = st.sampled_from(MUTATIONS)
_int_values = st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**64 - 1)
_widths = st.sampled_from((1, 2, 4, 8))
_orders = st.sampled_from(("little", "big"))
_inserts = st.binary(min_size=1, max_size=16)
_in_hot = st.integers(0, 3)


def _position(draw, n: int, hot: tuple[tuple[int, int], ...]) -> int:
    if n <= 1:
        return 0
    regions = [(lo, min(hi, n)) for lo, hi in hot if lo < n]
    if regions and draw(_in_hot) > 0:  # mostly in headers: that is where parsing is
        lo, hi = regions[draw(st.integers(0, len(regions) - 1))]
        return draw(st.integers(lo, max(lo, hi - 1)))
    return draw(st.integers(0, n - 1))


def apply_mutation(draw, buf: bytearray, hot: tuple[tuple[int, int], ...] = ()) -> None:
    kind = draw(_mutations)
    pos = _position(draw, len(buf), hot)
    if kind == "truncate":
        del buf[pos:]
    elif kind == "insert":
        buf[pos:pos] = draw(_inserts)
    elif not buf:
        return
    elif kind == "flip":
        buf[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "byte":
        buf[pos] = draw(st.integers(0, 255))
    elif kind == "int":
        width = draw(_widths)
        raw = (draw(_int_values) % 2 ** (8 * width)).to_bytes(width, draw(_orders))
        buf[pos : pos + width] = raw[: len(buf) - pos]
    elif kind == "delete":
        del buf[pos : pos + draw(st.integers(1, 16))]
    elif kind == "splice":
        src = draw(st.integers(0, len(buf) - 1))
        n = draw(st.integers(1, 32))
        buf[pos : pos + n] = buf[src : src + n]
    elif kind == "zero":
        n = draw(st.integers(1, 64))
        buf[pos : pos + n] = bytes(len(buf[pos : pos + n]))


@st.composite
def mutated(draw, base: bytes, hot: tuple[tuple[int, int], ...] = (), most: int = 4) -> bytes:
    """`base` with 1..most byte-level mutations, biased towards the `hot` header regions."""
    buf = bytearray(base)
    for _ in range(draw(st.integers(1, most))):
        apply_mutation(draw, buf, hot)
    return bytes(buf)


_seeds = st.integers(0, 2**32 - 1)


def blob(draw, n: int) -> bytes:
    """`n` arbitrary bytes from one drawn seed (drawing n bytes from hypothesis is slow)."""
    return np.random.default_rng(draw(_seeds)).bytes(n)


# Numbers that stress shape and size checks: zero, negative, past int32/int64, floats.
HUGE = 10**12
weird_ints = st.sampled_from(
    (0, 1, 2, 3, -1, -(2**31), 2**31, 2**32 + 1, HUGE, 2**62, 2**63 - 1, 2**63, 2**64, 10**30)
)
weird_scalars = st.one_of(
    weird_ints,
    st.integers(-5, 50),
    st.sampled_from((1.5, -0.0, float("nan"), float("inf"), True, None, "3", "", [], {})),
)


@st.composite
def bomb_shapes(draw, ndim_max: int = 3) -> tuple[int, ...]:
    """Shapes of at least 2**24 elements (≥ 128 MiB as float64): always over BUDGET."""
    small = draw(st.lists(st.integers(1, 9), max_size=ndim_max - 1))
    big = draw(st.sampled_from((2**24 + 1, 10**9, HUGE, 2**62, 2**63 - 1, 2**63, 2**64, 10**30)))
    small.insert(draw(st.integers(0, len(small))), big)
    return tuple(small)
