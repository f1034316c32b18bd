"""Extra memory of the in-memory randomized SVD (tracemalloc sees numpy's allocations):
the target is input + O((m+n)(k+p)) — no copy of the input."""

from __future__ import annotations

import tracemalloc

import numpy as np
from common import planted, save

from rankwise.core.rank import RankRule
from rankwise.core.svd import truncated_svd


def main(m=20000, n=2000, k=50, p=10):
    a = planted(m, n, 1.0 / (1.0 + np.arange(n)), seed=0)
    out = {"shape": [m, n], "k": k, "oversample": p, "input_bytes": a.nbytes}
    for method in ("randomized", "streaming"):
        tracemalloc.start()
        truncated_svd(a, RankRule("rank", k), method=method, oversample=p, rng=0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        unit = (m + n) * (k + p) * a.itemsize
        out[method] = {"extra_peak_bytes": peak, "extra_over_input": peak / a.nbytes,
                       "extra_in_units_of_(m+n)(k+p)·8": peak / unit}  # fmt: skip
    out["target"] = "in-memory randomized allocates at most input + O((m+n)(k+p))"
    save("svd_memory", out)


if __name__ == "__main__":
    main()
