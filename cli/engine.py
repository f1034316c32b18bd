"""--engine local|dask: where a command computes. The dask engine connects to a running
scheduler (--scheduler / --scheduler-file) or starts a LocalCluster on 127.0.0.1."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .errors import CliUsageError, EngineUnavailable

DEFAULT_CONNECT_TIMEOUT = 10.0
# A dask worker process needs about 150 MB for itself; below this it pauses and the run hangs.
MIN_WORKER_MEMORY = 512 << 20


class Engine(StrEnum):
    local = "local"
    dask = "dask"


EngineOption = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: in this process; dask: on a Dask cluster (--scheduler, --scheduler-file, "
        "or a local cluster of --workers processes).",
    ),
]  # fmt: skip
SchedulerOption = Annotated[
    str | None,
    typer.Option("--scheduler", metavar="tcp://HOST:PORT", help="Address of a running Dask "
                 "scheduler (--engine dask).", show_default=False),
]  # fmt: skip
SchedulerFileOption = Annotated[
    Path | None,
    typer.Option(
        "--scheduler-file",
        metavar="PATH",
        help="JSON file a Dask scheduler wrote (dask scheduler --scheduler-file, dask-mpi, "
        "dask-jobqueue); waits for it up to --connect-timeout.",
        show_default=False,
    ),
]  # fmt: skip
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes of the local Dask cluster [default: the thread count]; each "
        "gets --max-memory / N.",
        show_default=False,
    ),
]  # fmt: skip
ConnectTimeoutOption = Annotated[
    float,
    typer.Option("--connect-timeout", min=0.1, metavar="SECONDS",
                 help="Give up on an unreachable scheduler after this long (exit 69)."),
]  # fmt: skip


ENGINE_OPTIONS = {
    "engine": (EngineOption, Engine.local),
    "scheduler": (SchedulerOption, None),
    "scheduler_file": (SchedulerFileOption, None),
    "workers": (WorkersOption, None),
    "connect_timeout": (ConnectTimeoutOption, DEFAULT_CONNECT_TIMEOUT),
}


@dataclass(frozen=True)
class EngineOptions:
    engine: Engine = Engine.local
    scheduler: str | None = None
    scheduler_file: Path | None = None
    workers: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    def check(self) -> None:
        if self.engine == Engine.local:
            options = {"--scheduler": self.scheduler, "--scheduler-file": self.scheduler_file,
                       "--workers": self.workers}  # fmt: skip
            given = [name for name, v in options.items() if v is not None]
            if given:
                raise CliUsageError(f"{', '.join(given)} need(s) --engine dask")
            return
        if self.scheduler is not None and self.scheduler_file is not None:
            raise CliUsageError("give --scheduler or --scheduler-file, not both")
        if self.workers is not None and (self.scheduler or self.scheduler_file):
            raise CliUsageError("--workers sizes a local cluster; a running scheduler has its "
                                "own workers")  # fmt: skip


def _engine_options(values: dict) -> EngineOptions:
    return EngineOptions(**values)


def with_engine(fn):
    """Give a command the engine options as one ``eng`` (EngineOptions) argument; the command
    calls ``eng.check()`` inside its error guard."""
    from .options import appended_options

    return appended_options(ENGINE_OPTIONS, "eng", _engine_options)(fn)


def _quiet_dask(debug: bool) -> None:
    if not debug:
        for name in ("distributed", "tornado", "bokeh"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def session(opts: EngineOptions, *, threads: int, budget: int, debug: bool = False):
    """Yield the report's ``engine`` section; with dask, a connected Client is the default
    scheduler inside the block and everything is shut down after it."""
    if opts.engine == Engine.local:
        yield {"name": "local"}
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise EngineUnavailable(f"the dask engine needs dask and distributed ({exc.name} is "
                                "missing): pip install 'rankwise[dask]'") from None  # fmt: skip
    _quiet_dask(debug)
    cluster = None
    info: dict = {"name": "dask", "dask_version": dask.__version__}
    try:
        if opts.scheduler is not None or opts.scheduler_file is not None:
            where = opts.scheduler or str(opts.scheduler_file)
            try:
                if opts.scheduler is not None:
                    client = Client(opts.scheduler, timeout=opts.connect_timeout)
                else:
                    client = Client(scheduler_file=str(opts.scheduler_file),
                                    timeout=opts.connect_timeout)  # fmt: skip
            except (OSError, TimeoutError, ValueError) as exc:
                raise EngineUnavailable(
                    f"cannot reach the Dask scheduler at {where} within "
                    f"{opts.connect_timeout:g} s ({type(exc).__name__}: {exc})"
                ) from None
            info["cluster"] = "external"
        else:
            workers = opts.workers or max(1, threads)
            per_worker = max(1, threads // workers)
            limit = int(budget // workers)
            if limit < MIN_WORKER_MEMORY:
                from rankwise.core.errors import human_bytes

                raise CliUsageError(
                    f"--max-memory {human_bytes(budget)} over {workers} dask worker(s) leaves "
                    f"{human_bytes(limit)} each; a worker needs at least "
                    f"{human_bytes(MIN_WORKER_MEMORY)} (fewer --workers or more --max-memory)"
                )
            try:
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=per_worker, memory_limit=limit,
                    host="127.0.0.1", dashboard_address=None, processes=True,
                    silence_logs=logging.CRITICAL if not debug else logging.WARNING,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - any start failure is "unavailable"
                raise EngineUnavailable(f"cannot start a local Dask cluster of {workers} "
                                        f"worker(s): {exc}") from None  # fmt: skip
            client = Client(cluster, timeout=opts.connect_timeout)
            info.update(cluster="local", memory_limit_per_worker=limit)
        with client:
            try:  # workers of a batch job may join after the scheduler is up
                client.wait_for_workers(1, timeout=opts.connect_timeout)
            except (OSError, TimeoutError) as exc:
                where, wait = client.scheduler.address, opts.connect_timeout
                raise EngineUnavailable(
                    f"no Dask worker joined the scheduler at {where} within {wait:g} s ({exc})"
                ) from None
            workers_info = client.scheduler_info().get("workers", {})
            info.update(
                scheduler=client.scheduler.address,
                workers=len(workers_info),
                threads_per_worker=sorted({int(w.get("nthreads", 0))
                                           for w in workers_info.values()}),
                memory_limit_per_worker=info.get("memory_limit_per_worker")
                or (min(int(w.get("memory_limit", 0)) for w in workers_info.values())
                    if workers_info else None),
            )  # fmt: skip
            if not workers_info:
                raise EngineUnavailable(f"the Dask scheduler at {info['scheduler']} has no "
                                        "workers")  # fmt: skip
            with dask.config.set(scheduler=client):
                yield info
    finally:
        if cluster is not None:
            cluster.close()


def task_bytes(info: dict, budget: int) -> int:
    """Bytes of input per task: small enough that a few tasks fit in a worker's memory."""
    limit = min(info.get("memory_limit_per_worker") or budget, budget)
    return int(max(1 << 20, min(64 << 20, limit // 16)))


__all__ = ["Engine", "EngineOptions", "session", "task_bytes"]


def balanced_rows(rows: int, nrows: int, workers: int, step: int) -> int:
    """Rows per block, at most ``rows``, for a number of blocks that is a multiple of the
    workers (blocks held by one worker each for a whole solve must share the work evenly);
    a multiple of ``step`` (whole fingerprint blocks)."""
    blocks = -(-nrows // max(1, rows))
    blocks = -(-blocks // workers) * workers
    per = -(-nrows // blocks)
    return max(step, min(rows, -(-per // step) * step))


def run_on_dask(run, handle, eng: EngineOptions, label: str, fn, *, balance: bool = False):
    """Run ``fn(a, also, on_first_pass)`` on the dask array of ``handle`` inside a session;
    returns the result and the input's fingerprint (its leaves hashed on the workers
    during the first pass). ``balance``: as many blocks per worker (iterative methods whose
    blocks stay on their workers)."""
    from rankwise.formats import dask_array

    with session(eng, threads=run.threads, budget=run.budget, debug=run.common.debug) as info:
        run.engine = info
        rows = dask_array.chunk_rows(handle, task_bytes(info, run.budget))
        if balance:
            step = dask_array.digest_rows(handle.shape, handle.dtype)
            rows = balanced_rows(rows, int(handle.shape[0]), info["workers"], step)
        a = dask_array.as_dask_array(handle, rows=rows, max_bytes=run.budget)
        digests: dict = {}
        with run.compute(f"{label} on dask ({info['workers']} workers)"):
            res = fn(a, dask_array.block_digests(a), lambda d: digests.update(d=d))
        info["stages"] = res.details.get("stages", [])
    return res, dask_array.combine_digests(handle.dtype, handle.shape, digests["d"])
