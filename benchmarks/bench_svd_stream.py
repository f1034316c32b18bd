"""Out of core: a ≥ 2 GB HDF5 matrix and the same as Zarr, `rankwise svd --max-memory 256M`
run as a subprocess (the whole process is measured: peak RSS from the report, i.e. VmHWM).

Accuracy: the optimal rank-k error from the eigenvalues of AᵀA (accumulated in one pass,
float64). Throughput: bytes of each streaming pass per second of compute, against a plain
sequential h5py / zarr read of the same file in the same row blocks (best of 3, warm cache
for both)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import zarr
from common import best_of, save

WORK = Path(os.environ.get("RANKWISE_BENCH_DIR", "/tmp/rankwise-bench"))


def generate(m, n, rank=40, seed=0):
    """Rows of a planted rank-40 model plus 5% noise, written block by block."""
    WORK.mkdir(parents=True, exist_ok=True)
    h5p, zp = WORK / "big.h5", WORK / "big.zarr"
    if h5p.exists() and zp.exists():
        return h5p, zp
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, n)) * (0.85 ** np.arange(rank))[:, None]
    step = 10_000
    with h5py.File(h5p, "w") as f:
        ds = f.create_dataset("x", shape=(m, n), dtype="f8", chunks=(2000, n))
        z = zarr.create_array(zp, shape=(m, n), chunks=(2000, n), dtype="f8",
                              config={"write_empty_chunks": True})  # fmt: skip
        for start in range(0, m, step):
            blk = rng.standard_normal((min(step, m - start), rank)) @ basis
            blk += 0.05 * rng.standard_normal(blk.shape)
            ds[start : start + len(blk)] = blk
            z[start : start + len(blk)] = blk
    return h5p, zp


def optimal_error(path_uri, k):
    from rankwise.formats import open_array

    h = open_array(path_uri)
    g = None
    for _, blk in h.iter_blocks(4000):
        g = blk.T @ blk if g is None else g + blk.T @ blk
    lam = np.sort(np.linalg.eigvalsh(g))[::-1]
    return float(np.sqrt(max(lam[k:].sum(), 0) / lam.sum()))


def plain_read(path_uri, rows):
    from rankwise.formats import open_array

    def run():
        total = 0
        with open_array(path_uri) as h:
            for _, blk in h.iter_blocks(rows, ring=3):  # the same buffered reads
                total += blk.nbytes
        return total

    t, nbytes = best_of(run, 3)
    return nbytes / t


def main(m=500_000, n=512, k=10, budget="256M"):
    h5p, zp = generate(m, n)
    exe = str(Path(sys.executable).with_name("rankwise"))
    out = {"shape": [m, n], "bytes": m * n * 8, "k": k, "max_memory": budget}
    opt = optimal_error(f"{h5p}:/x", k)
    before = {"hdf5": plain_read(f"{h5p}:/x", 4000), "zarr": plain_read(str(zp), 4000)}
    for name, uri in (("hdf5", f"{h5p}:/x"), ("zarr", str(zp))):
        outp = WORK / f"out_{name}.h5"
        t = time.perf_counter()
        subprocess.run([exe, "svd", uri, "-o", str(outp), "--rank", str(k), "--max-memory",
                        budget, "--force", "-q"], check=True)  # fmt: skip
        wall = time.perf_counter() - t
        rep = json.loads(outp.with_name(f"out_{name}.report.json").read_text())
        d = rep["method"]["details"]
        per_pass = d["bytes_read"] / d["passes"]
        passes = sorted(d["pass_seconds"])
        pass_rate = per_pass / passes[len(passes) // 2]  # the median pass
        slowest = per_pass / passes[-1]
        fastest = per_pass / passes[0]
        # The machine is shared: measure the plain read before and after, keep the best.
        read_rate = max(before[name], plain_read(uri, d["block_rows"]))
        out[name] = {
            "method": rep["method"]["used"], "wall_seconds": wall,
            "passes": d["passes"], "power_iters": d["power_iters"],
            "peak_rss_bytes": rep["memory"]["peak_rss_bytes"],
            "error_over_optimal": rep["metrics"]["relative_frobenius_error"] / opt,
            "bytes_per_pass": per_pass,
            "pass_seconds": d["pass_seconds"],
            "median_pass_bytes_per_second": pass_rate,
            "slowest_pass_bytes_per_second": slowest,
            "fastest_pass_bytes_per_second": fastest,
            "plain_read_bytes_per_second": read_rate,
            "median_pass_over_plain_read": pass_rate / read_rate,
            "slowest_pass_over_plain_read": slowest / read_rate,
            "fastest_pass_over_plain_read": fastest / read_rate,
        }  # fmt: skip
    out["target"] = ("peak RSS ≤ 600 MB, within 1% of the optimal error, each pass ≥ 50% of a "
                     "plain sequential read")  # fmt: skip
    save("svd_stream", out)


if __name__ == "__main__":
    main()
