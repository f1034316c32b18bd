"""The Dask engine's two targets (issue 8).

(a) Out of memory: a 4 GB Zarr matrix (2,000,000 × 256 float64, a planted rank-10 model plus
    noise, row-block chunks, uncompressed) decomposed by `rankwise svd --rank 10 --engine dask`
    on a `dask scheduler` and two `dask worker --memory-limit 1GB --nthreads 1` processes on
    127.0.0.1 (subprocesses, stopped at the end), with TSQR (auto) and the randomized method.
    Recorded: finished, each worker's peak RSS (polled with psutil every 50 ms, nanny and
    worker processes separately), what the worker logs say about memory (pauses, spilling,
    restarts), the achieved error against the optimal rank-10 error. Truth, independent of
    rankwise: the eigenvalues of AᵀA accumulated over the Zarr blocks with numpy (optimal
    error), and ‖A − U·S·Vt‖ recomputed block by block from the output (achieved error).

(b) Data that fits one machine: local engine against `--engine dask --workers 2` (a
    LocalCluster started by rankwise, included in the wall time) for svd (200000×500 HDF5,
    exact and randomized), tucker (a 4-way tensor), nmf (fixed sweeps) and complete (altmin).
    Each pair runs interleaved, 3 times, best of each; the ratio is dask / local, by wall time
    of the whole command and by the report's compute stage (the cluster's start-up excluded).

Writes results/bench_dask.json and prints a table. Files go to $RANKWISE_BENCH_DIR
(default /tmp/rankwise-bench); (a) needs 4.1 GB there. `--only a` / `--only b` runs one part.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import save

WORK = Path(os.environ.get("RANKWISE_BENCH_DIR", "/tmp/rankwise-bench"))
EXE = str(Path(sys.executable).with_name("rankwise"))
DASK = str(Path(sys.executable).with_name("dask"))
MEMORY_WORDS = re.compile(r"memory use is high|pausing worker|paused|spill|restart|"
                          r"killed|exceeded|unmanaged memory", re.IGNORECASE)  # fmt: skip


def rankwise(*args, cwd=WORK) -> tuple[float, dict]:
    """Run the CLI; (wall seconds, report)."""
    out = Path(args[args.index("-o") + 1])
    t = time.perf_counter()
    subprocess.run([EXE, *map(str, args), "--force", "-q"], cwd=cwd, check=True)
    wall = time.perf_counter() - t
    name = out.name
    for ext in (".zarr", ".h5", ".npz"):
        name = name.removesuffix(ext)
    return wall, json.loads((cwd / f"{name}.report.json").read_text())


# --- (a) 4 GB Zarr, two 1 GB workers --------------------------------------------------------


def big_zarr(m=2_000_000, n=256, rank=10, seed=0) -> Path:
    import zarr

    path = WORK / "big4g.zarr"
    if (path / "zarr.json").exists():
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, n)) * (0.8 ** np.arange(rank))[:, None]
    z = zarr.create_array(str(path), shape=(m, n), chunks=(16384, n), dtype="f8",
                          compressors=None, config={"write_empty_chunks": True})  # fmt: skip
    step = 16384 * 8
    for s in range(0, m, step):
        blk = rng.standard_normal((min(step, m - s), rank)) @ basis
        blk += 0.3 * rng.standard_normal(blk.shape)
        z[s : s + blk.shape[0]] = blk
    return path


def gram_truth(path: Path, k: int) -> tuple[float, float]:
    """(optimal rank-k relative error, ‖A‖²) from AᵀA over the Zarr blocks (numpy)."""
    import zarr

    z = zarr.open_array(str(path), mode="r")
    g = np.zeros((z.shape[1], z.shape[1]))
    for s in range(0, z.shape[0], 131072):
        blk = z[s : s + 131072]
        g += blk.T @ blk
    lam = np.sort(np.linalg.eigvalsh(g))[::-1]
    return float(np.sqrt(max(lam[k:].sum(), 0.0) / lam.sum())), float(lam.sum())


def achieved(path: Path, out: Path, total_sq: float) -> float:
    """‖A − U·S·Vt‖/‖A‖ block by block from the output (numpy)."""
    import h5py
    import zarr

    z = zarr.open_array(str(path), mode="r")
    with h5py.File(out, "r") as f:
        u, s, vt = f["U"], f["S"][...], f["Vt"][...]
        err = 0.0
        for lo in range(0, z.shape[0], 131072):
            d = z[lo : lo + 131072] - (u[lo : lo + 131072] * s) @ vt
            err += float(np.sum(d * d))
    return float(np.sqrt(err / total_sq))


class RssPoller:
    """Peak RSS of processes and their children, polled every 50 ms in a thread."""

    def __init__(self, procs: dict):
        import psutil

        self.procs = {k: psutil.Process(p.pid) for k, p in procs.items()}
        self.peak: dict = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        import psutil

        while not self.stop.is_set():
            for name, p in self.procs.items():
                try:
                    tree = [p, *p.children(recursive=True)]
                    for i, q in enumerate(tree):
                        key = f"{name}/{'nanny' if i == 0 else 'worker'}"
                        self.peak[key] = max(self.peak.get(key, 0), q.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def cluster(d: Path, limit: str = "1GB"):
    """`dask scheduler` and two `dask worker` subprocesses on 127.0.0.1; returns (procs,
    scheduler file, log paths)."""
    d.mkdir(parents=True, exist_ok=True)
    sched = d / "scheduler.json"
    sched.unlink(missing_ok=True)
    logs = {name: d / f"{name}.log" for name in ("scheduler", "worker0", "worker1")}
    procs = {"scheduler": subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(sched)], cwd=d, stdout=subprocess.DEVNULL,
        stderr=logs["scheduler"].open("w"))}  # fmt: skip
    deadline = time.monotonic() + 60
    while not sched.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the dask scheduler did not start")
        time.sleep(0.1)
    for w in ("worker0", "worker1"):
        procs[w] = subprocess.Popen(
            [DASK, "worker", "--scheduler-file", str(sched), "--host", "127.0.0.1",
             "--nthreads", "1", "--nworkers", "1", "--memory-limit", limit, "--no-dashboard"],
            cwd=d, stdout=subprocess.DEVNULL, stderr=logs[w].open("w"),
        )  # fmt: skip
    from distributed import Client

    with Client(scheduler_file=str(sched), timeout=30) as c:
        c.wait_for_workers(2, timeout=60)
    return procs, sched, logs


def stop(procs: dict) -> None:
    for p in reversed(list(procs.values())):
        p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def part_a(k: int = 10) -> dict:
    path = big_zarr()
    nbytes = 2_000_000 * 256 * 8
    t = time.perf_counter()
    optimal, total_sq = gram_truth(path, k)
    out = {"shape": [2_000_000, 256], "bytes": nbytes, "k": k, "optimal_error": optimal,
           "worker_memory_limit_bytes": 10**9, "pause_at": "80% of the limit (dask default)",
           "truth_seconds": round(time.perf_counter() - t, 1), "runs": {}}  # fmt: skip
    for method in ("auto", "randomized"):
        d = WORK / f"dask-{method}"
        procs, sched, logs = cluster(d)
        try:
            res = WORK / f"big_{method}.h5"
            with RssPoller({w: procs[w] for w in ("worker0", "worker1")}) as rss:
                t = time.perf_counter()
                proc = subprocess.run(
                    [EXE, "svd", str(path), "-o", str(res), "--rank", str(k), "--method",
                     method, "--engine", "dask", "--scheduler-file", str(sched), "--force",
                     "-q"], cwd=WORK, capture_output=True, text=True,
                )  # fmt: skip
                wall = time.perf_counter() - t
            alive = all(p.poll() is None for p in procs.values())
            time.sleep(1.0)  # the logs flushed; read before shutdown adds its own lines
            lines = {w: [ln.strip() for ln in logs[w].read_text().splitlines()
                         if MEMORY_WORDS.search(ln)] for w in ("worker0", "worker1")}  # fmt: skip
        finally:
            stop(procs)
        run = {"finished": proc.returncode == 0, "exit": proc.returncode, "wall_seconds":
               round(wall, 2), "stderr": proc.stderr.strip()[-500:],
               "workers_alive_after": alive, "peak_rss_bytes": rss.peak,
               "worker_log_memory_lines": lines}  # fmt: skip
        if proc.returncode == 0:
            rep = json.loads((WORK / f"big_{method}.report.json").read_text())
            err = achieved(path, res, total_sq)
            run.update(method=rep["method"]["used"],
                       reported_error=rep["metrics"]["relative_frobenius_error"],
                       achieved_error=err, error_vs_optimal=err / optimal,
                       stages=rep["engine"]["stages"],
                       client_peak_rss_bytes=rep["memory"]["peak_rss_bytes"],
                       compute_seconds=rep["timings"]["compute"])  # fmt: skip
        out["runs"][method] = run
    return out


# --- (b) data that fits: local vs 2 workers ---------------------------------------------------


def _planted_rows(p: Path, m: int, rng) -> str:
    """An m×500 HDF5 matrix of rank-30 decaying rows plus 5% noise (written once)."""
    import h5py

    if not p.exists():
        basis = rng.standard_normal((30, 500)) * (0.85 ** np.arange(30))[:, None]
        with h5py.File(p, "w") as f:
            ds = f.create_dataset("a", shape=(m, 500), dtype="f8", chunks=(4000, 500))
            for s in range(0, m, 20_000):
                blk = rng.standard_normal((20_000, 30)) @ basis
                ds[s : s + 20_000] = blk + 0.05 * rng.standard_normal(blk.shape)
    return f"{p}:/a"


def inputs() -> dict:
    import h5py

    WORK.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = {}
    paths["svd"] = _planted_rows(WORK / "fit_svd.h5", 200_000, rng)
    # 4 GB: where the ~1.5 s fixed cost of a dask run is amortised
    paths["svd_big"] = _planted_rows(WORK / "fit_svd_big.h5", 1_000_000, rng)
    p = WORK / "fit_tucker.h5"
    if not p.exists():
        shape, ranks = (600, 80, 60, 40), (8, 8, 6, 5)
        core = rng.standard_normal(ranks)
        fs = [np.linalg.qr(rng.standard_normal((i, r)))[0]
              for i, r in zip(shape, ranks, strict=True)]  # fmt: skip
        x = np.einsum("abcd,Aa,Bb,Cc,Dd->ABCD", core, *fs, optimize=True)
        x += 0.01 * np.linalg.norm(x) / np.sqrt(x.size) * rng.standard_normal(shape)
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=x, chunks=(10, *shape[1:]))
    paths["tucker"] = f"{p}:/x"
    p = WORK / "fit_nmf.h5"
    if not p.exists():
        x = rng.random((200_000, 10)) @ rng.random((10, 200))
        x += 0.05 * rng.random(x.shape)
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=x, chunks=(4000, 200))
    paths["nmf"] = f"{p}:/x"
    p = WORK / "fit_complete.h5"
    if not p.exists():
        x = rng.standard_normal((200_000, 10)) @ rng.standard_normal((10, 300))
        x[rng.random(x.shape) > 0.2] = np.nan
        with h5py.File(p, "w") as f:
            f.create_dataset("x", data=x, chunks=(4000, 300))
    paths["complete"] = f"{p}:/x"
    return paths


CASES = {
    "svd exact 200000×500, k = 10": ("svd", ["--rank", "10", "--method", "exact"]),
    "svd randomized 200000×500, k = 10": (
        "svd",
        ["--rank", "10", "--method", "randomized", "--power-iters", "2"],
    ),  # fmt: skip
    "svd exact 1000000×500, k = 10": ("svd_big", ["--rank", "10", "--method", "exact"]),
    "svd randomized 1000000×500, k = 10": (
        "svd_big",
        ["--rank", "10", "--method", "randomized", "--power-iters", "2"],
    ),  # fmt: skip
    "tucker 600×80×60×40, ranks 8,8,6,5": ("tucker", ["--ranks", "8,8,6,5"]),
    "nmf 200000×200, k = 10, 50 sweeps": (
        "nmf",
        ["-k", "10", "--max-iter", "50", "--tol", "0"],
    ),  # fmt: skip
    "complete altmin 200000×300 (20% observed), k = 10": (
        "complete",
        ["-k", "10", "--method", "altmin", "--holdout", "0.05"],
    ),  # fmt: skip
}


def part_b(repeats: int = 3, match: str = "") -> dict:
    paths = inputs()
    out = {}
    for label, (key, args) in CASES.items():
        if match not in label:
            continue
        uri, cmd = paths[key], key.split("_")[0]  # "svd_big": the svd command on another file
        best = {"local": None, "dask": None}
        load = []
        for _ in range(repeats):  # interleaved: the machine is shared
            for side, extra in (("local", []), ("dask", ["--engine", "dask", "--workers", "2"])):
                load.append(os.getloadavg()[0])
                wall, rep = rankwise(cmd, uri, "-o", WORK / f"b_{side}.h5", *args, *extra)
                figures = {"wall": wall, "compute": rep["timings"]["compute"],
                           "error": rep["metrics"].get("relative_frobenius_error",
                                                       rep["metrics"].get("train", {}).get(
                                                           "relative_error")),
                           "method": rep["method"]["used"]}  # fmt: skip
                if side == "dask":
                    figures["stages"] = rep["engine"]["stages"]
                if best[side] is None or wall < best[side]["wall"]:
                    best[side] = figures
        out[label] = {
            **best,
            "ratio_wall": best["dask"]["wall"] / best["local"]["wall"],
            "ratio_compute": best["dask"]["compute"] / best["local"]["compute"],
            "load_average_during": [round(v, 2) for v in load],
        }
    return out


def main():
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else "ab"
    result = {}
    previous = Path(__file__).with_name("results") / "bench_dask.json"
    if only != "ab" and previous.exists():  # one part: keep the other's figures
        result = {k: v for k, v in json.loads(previous.read_text()).items()
                  if k.startswith(("a_", "b_"))}  # fmt: skip
    result["load_average_start"] = os.getloadavg()
    if "a" in only:
        result["a_4gb_zarr_two_1gb_workers"] = part_a()
    if "b" in only:  # --match TEXT: only the cases whose label holds it (the others kept)
        match = sys.argv[sys.argv.index("--match") + 1] if "--match" in sys.argv else ""
        result["b_fits_local_vs_two_workers"] = {
            **result.get("b_fits_local_vs_two_workers", {}),
            **part_b(match=match),
        }
    result["load_average_end"] = os.getloadavg()
    path = save("bench_dask", result)
    print()
    if "a_4gb_zarr_two_1gb_workers" in result:
        a = result["a_4gb_zarr_two_1gb_workers"]
        print(f"(a) 4 GB Zarr, optimal rank-{a['k']} error {a['optimal_error']:.6g}")
        for method, r in a["runs"].items():
            rss = {k: f"{v / 2**20:.0f} MiB" for k, v in sorted(r["peak_rss_bytes"].items())}
            print(
                f"  {method:10s} finished={r['finished']} wall={r['wall_seconds']}s "
                f"error/optimal={r.get('error_vs_optimal', float('nan')):.6f} rss={rss} "
                f"memory log lines={sum(map(len, r['worker_log_memory_lines'].values()))}"
            )
    if "b_fits_local_vs_two_workers" in result:
        print("(b) dask (2 workers) / local, best of 3 interleaved")
        for label, r in result["b_fits_local_vs_two_workers"].items():
            print(
                f"  {label:52s} wall {r['local']['wall']:7.2f}s → {r['dask']['wall']:7.2f}s "
                f"({r['ratio_wall']:.2f}×), compute {r['ratio_compute']:.2f}×"
            )
    print(f"load average {result['load_average_start']} → {result['load_average_end']}")
    print(path)


if __name__ == "__main__":
    main()
