"""Process-level settings every command shares: threads, memory budget, timing, versions."""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from contextlib import contextmanager

from .errors import CliUsageError

_UNITS = {
    "": 1, "B": 1,
    "K": 1 << 10, "KIB": 1 << 10, "KB": 10**3,
    "M": 1 << 20, "MIB": 1 << 20, "MB": 10**6,
    "G": 1 << 30, "GIB": 1 << 30, "GB": 10**9,
    "T": 1 << 40, "TIB": 1 << 40, "TB": 10**12,
}  # fmt: skip

# Share of the memory found free that the default budget takes (the rest is headroom for
# the interpreter, libraries and the allocator).
DEFAULT_BUDGET_FRACTION = 0.8


def parse_size(text: str) -> int:
    """'256M', '2G', '1.5GiB', '500MB', '1000000' → bytes. K/M/G/T and KiB… are binary
    (as SLURM's --mem), KB/MB/GB/TB decimal, a bare number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise CliUsageError(
            f"invalid size {text!r}; use a number with an optional unit K, M, G, T "
            "(binary), KiB…, or KB, MB, GB, TB (decimal)"
        )
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise CliUsageError(f"size must be positive, got {text!r}")
    return value


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            raw = f.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def default_memory_budget() -> tuple[int, str]:
    """Smallest of: free memory, the cgroup limit (minus what the group uses), and the SLURM
    allocation; times DEFAULT_BUDGET_FRACTION."""
    candidates: list[tuple[int, str]] = []
    avail = _mem_available()
    if avail:
        candidates.append((avail, "MemAvailable"))
    limit = _read_int("/sys/fs/cgroup/memory.max") or _read_int(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    if limit and limit < 1 << 60:
        used = _read_int("/sys/fs/cgroup/memory.current") or 0
        candidates.append((max(limit - used, 0), "cgroup memory limit"))
    slurm_node = os.environ.get("SLURM_MEM_PER_NODE")
    if slurm_node and slurm_node.isdigit():
        candidates.append((int(slurm_node) << 20, "SLURM_MEM_PER_NODE"))
    slurm_cpu = os.environ.get("SLURM_MEM_PER_CPU")
    cpus = os.environ.get("SLURM_CPUS_PER_TASK") or "1"
    if slurm_cpu and slurm_cpu.isdigit() and cpus.isdigit():
        candidates.append(((int(slurm_cpu) * int(cpus)) << 20, "SLURM_MEM_PER_CPU"))
    if not candidates:
        return 4 << 30, "fallback (4 GiB: no memory information found)"
    value, source = min(candidates)
    return int(value * DEFAULT_BUDGET_FRACTION), f"{DEFAULT_BUDGET_FRACTION:g} × {source}"


def resolve_memory(option: str | None) -> tuple[int, str]:
    if option is not None:
        return parse_size(option), "--max-memory"
    return default_memory_budget()


def _positive_int_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    # OMP_NUM_THREADS may be a list ("4,2"); its first level is ours.
    raw = raw.split(",")[0]
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


def resolve_threads(option: int | None) -> tuple[int, str]:
    if option is not None:
        if option < 1:
            raise CliUsageError(f"--threads must be ≥ 1, got {option}")
        return option, "--threads"
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = _positive_int_env(name)
        if value:
            return value, name
    try:
        return len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # not Linux
        return os.cpu_count() or 1, "CPU count"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    Linux: VmHWM of /proc/self/status. ru_maxrss is not used there because the kernel
    carries it over from the parent across fork+exec, so a child of a large process (a
    test runner, a workflow engine) would report its parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t

    def total(self) -> float:
        return time.perf_counter() - self.t0


def library_versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in (
        "rankwise",
        "numpy",
        "scipy",
        "h5py",
        "zarr",
        "threadpoolctl",
        "xxhash",
        "typer",
        "rich",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import h5py

        out["hdf5"] = h5py.version.hdf5_version
    except Exception:  # noqa: BLE001 - versions are informative only
        out["hdf5"] = None
    return out


def blas_info() -> list[dict]:
    from threadpoolctl import threadpool_info

    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "filepath")  # fmt: skip
    return [{k: _jsonable(info.get(k)) for k in keep} for info in threadpool_info()]


def _jsonable(value):
    # Third-party controllers (fast_matrix_market's) may report a callable as version.
    if callable(value):
        try:
            value = value()
        except Exception:  # noqa: BLE001 - informative only
            return None
    return value if isinstance(value, str | int | float | type(None)) else str(value)


def rankwise_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("rankwise")
    except metadata.PackageNotFoundError:
        return "0+unknown"
