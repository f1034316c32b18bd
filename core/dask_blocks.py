"""Row blocks of a dask array held by actors on the workers, for the Dask engine's iterative
methods (nmf, complete).

Each block is a Dask actor placed on a worker (round robin): it reads its rows itself from
the input (the dask array's task for that chunk, run in the actor), keeps them when the whole
input fits comfortably in the workers' memory ("persisted", else it reads them again for
every step that needs them), and keeps the block's part of the solver state (its rows of a
factor) in place. A step calls one function on every block, which updates the state and
returns something small; calls to actors go straight from the client to the workers (no
scheduler round trip: ~3× less latency per step than tasks, measured), which matters for
solvers making a few steps per sweep. Only those small results reach the client.
"""

from __future__ import annotations

import time

import numpy as np

# Persist the input when it takes at most this fraction of the workers' memory in all.
PERSIST_FRACTION = 0.5


def worker_memory(client) -> int:
    """The workers' memory limits summed (0: some worker has none)."""
    limits = [int(w.get("memory_limit") or 0)
              for w in client.scheduler_info().get("workers", {}).values()]  # fmt: skip
    return 0 if not limits or min(limits) == 0 else sum(limits)


def persisted(*collections):
    """``dask.persist`` that returns once the results are on the workers (persist alone
    returns at once on a distributed client, and the stage timings would be wrong)."""
    import dask

    out = dask.persist(*collections)
    try:
        from distributed import wait

        wait([c for c in out if dask.is_dask_collection(c)])
    except (ImportError, ValueError):  # no distributed client: persist already computed
        pass
    return out


class _Block:
    """The actor of one row block: its rows, its solver state."""

    def __init__(self, raw, digest, prepare, persist: bool):
        self.raw, self.digest, self.prepare, self.persist = raw, digest, prepare, persist
        self.x = None
        self.state: dict = {}

    def _read(self, with_digest: bool = False):
        import dask

        things = (self.raw, self.digest) if with_digest and self.digest is not None else \
            (self.raw,)  # fmt: skip
        # one graph: the chunk is read once for both (unoptimised: the keys are shared)
        return dask.compute(*things, scheduler="sync", optimize_graph=False)

    def first(self, stats, keep):
        """``stats(raw rows)`` and the block's digest row from one read; ``keep(raw rows)``,
        when given, becomes the block's state."""
        got = self._read(with_digest=True)
        out = stats(got[0])
        if keep is not None:
            self.state = keep(got[0])
        if self.persist:
            self.x = self.prepare(got[0])
        return out, (got[1] if len(got) > 1 else None)

    def transform(self, fn) -> None:
        """Apply ``fn`` to the working rows (kept ones now, read ones as they come)."""
        if self.x is not None:
            self.x = fn(self.x)
        else:
            old = self.prepare
            self.prepare = lambda raw: fn(old(raw))

    def data(self):
        return self.x if self.x is not None else self.prepare(self._read()[0])

    def run(self, fn, own, args, data: bool, update: bool):
        """``fn(x, state, *own, *args)``; with ``update`` it returns (new state, result)."""
        out = fn(self.data() if data else None, self.state, *own, *args)
        if update:
            self.state, out = out
        return out


class RowBlocks:
    """The row blocks of ``a`` (one column of chunks) as actors on the current Dask client's
    workers. ``prepare(raw rows) -> working rows`` (dtype conversion) runs on the workers.
    ``also``: a dask array over the same chunks (one row per chunk, e.g. block digests)
    computed with the first pass."""

    def __init__(self, a, prepare, *, also=None, persist: bool | None = None):
        from distributed import get_client

        self.client = get_client()
        raw = list(a.to_delayed(optimize_graph=False).ravel())
        digests = list(also.to_delayed(optimize_graph=False).ravel()) if also is not None \
            else [None] * len(raw)  # fmt: skip
        self.starts = np.concatenate([[0], np.cumsum(a.chunks[0])]).astype(np.int64)
        self.shape = tuple(int(s) for s in a.shape)
        total = self.worker_memory()
        self.persist = (total == 0 or a.nbytes <= PERSIST_FRACTION * total) if persist is None \
            else bool(persist)  # fmt: skip
        workers = sorted(self.client.scheduler_info().get("workers", {}))
        futs = [self.client.submit(_Block, r, dg, prepare, self.persist, actor=True,
                                   workers=[workers[i % len(workers)]], pure=False)
                for i, (r, dg) in enumerate(zip(raw, digests, strict=True))]  # fmt: skip
        self._futures = futs  # the actors live as long as these
        self.actors = [f.result() for f in futs]
        self.stages: list[dict] = []
        self.rounds = 0

    def __len__(self) -> int:
        return len(self.actors)

    def rows(self, i: int) -> tuple[int, int]:
        return int(self.starts[i]), int(self.starts[i + 1])

    def row_ranges(self) -> list[tuple[int, int]]:
        return [self.rows(i) for i in range(len(self))]

    def worker_memory(self) -> int:
        return worker_memory(self.client)

    @property
    def where(self) -> str:
        return ("persisted in the workers' memory after the first pass" if self.persist
                else "read from the file by the workers for every step that needs it")  # fmt: skip

    def stage(self, name: str, t0: float, reads_input: bool) -> None:
        self.stages.append({"stage": name, "seconds": round(time.perf_counter() - t0, 4),
                            "reads_input": bool(reads_input)})  # fmt: skip

    def _wait(self, calls) -> list:
        self.rounds += 1
        return [c.result() for c in calls]

    def first_pass(self, stats, keep=None):
        """Per-block ``stats(raw rows)`` in one pass over the input (which also persists the
        working rows when they fit, and makes ``keep(raw rows)`` each block's state); returns
        (stats, the ``also`` rows stacked or None)."""
        t0 = time.perf_counter()
        got = self._wait([b.first(stats, keep) for b in self.actors])
        self.stage("checks and norms" + (", blocks kept on the workers" if self.persist
                                         else ""), t0, True)  # fmt: skip
        digests = [g[1] for g in got]
        extra = None if digests[0] is None else np.concatenate(digests, axis=0)
        return [g[0] for g in got], extra

    def transform(self, fn) -> None:
        """Apply ``fn`` to every block's working rows from now on."""
        self._wait([b.transform(fn) for b in self.actors])

    def step(self, fn, *args, per_block=None, data: bool = True) -> list:
        """``state_i, r_i = fn(x_i, state_i, *per_block[i], *args)`` on every block; the
        list of ``r_i``. ``x_i`` is None without ``data`` (no read)."""
        return self._call(fn, args, per_block, data, True)

    def apply(self, fn, *args, per_block=None, data: bool = True) -> list:
        """``fn(x_i, state_i, *per_block[i], *args)`` on every block (state unchanged)."""
        return self._call(fn, args, per_block, data, False)

    def _call(self, fn, args, per_block, data, update) -> list:
        calls = [b.run(fn, tuple(per_block[i]) if per_block is not None else (), args, data,
                       update) for i, b in enumerate(self.actors)]  # fmt: skip
        return self._wait(calls)

    def close(self) -> None:
        self.actors = []
        self._futures = []


def add_all(parts):
    """Σ of the parts (arrays, floats, or tuples of them)."""
    out = parts[0]
    for p in parts[1:]:
        out = tuple(a + b for a, b in zip(out, p, strict=True)) if isinstance(out, tuple) \
            else out + p  # fmt: skip
    return out


__all__ = ["RowBlocks", "add_all"]
