"""Shared helpers of the benchmarks: best-of-N timing, planted matrices, environment."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("results")


def best_of(fn, repeats: int = 3):
    """(best wall time, last result) over ``repeats`` runs: the machine is shared, so the
    minimum is the least disturbed measurement."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def planted(m: int, n: int, s: np.ndarray, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """U diag(s) Vᵀ with Haar-random orthonormal U (m×r), V (n×r), built without an m×m QR."""
    rng = np.random.default_rng(seed)
    r = len(s)
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return np.ascontiguousarray(((u * s) @ v.T).astype(dtype))


def environment() -> dict:
    from threadpoolctl import threadpool_info

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": len(os.sched_getaffinity(0)),
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ],
        "load_average": os.getloadavg(),
    }


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
