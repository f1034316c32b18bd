"""Row-block work split among Python threads, each calling one-thread BLAS.

On few cores this beats one thread calling multi-threaded BLAS for the thin products of
tall matrices: OpenBLAS's threaded ``syrk`` reaches about 60% of two one-thread ``syrk``
calls on separate row blocks, and the split has no synchronisation inside a block."""

from __future__ import annotations

import threading

import numpy as np


def blas_threads() -> int:
    """The BLAS thread count in force (``--threads`` sets it), 1 if unknown."""
    from threadpoolctl import threadpool_info

    counts = [i.get("num_threads") or 1 for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(1, max(counts, default=1))


def one_blas_thread():
    """A context holding every BLAS library to one thread. scipy's BLAS (a library of its own
    in the wheels) is loaded first: threadpoolctl limits only libraries already loaded, and
    one loaded later keeps its default threads (and its worker spinning beside ours)."""
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def sum_in_order(parts: list):
    """The partial sums of a split pass added in their fixed order (the first is reused)."""
    total = parts[0]
    for p in parts[1:]:
        total += p
    return total


def run_slots(run, slots: int, stop: threading.Event | None = None) -> None:
    """Call ``run(slot)`` for every slot in ``range(slots)``: slot 0 on this thread, the others
    on their own threads, with BLAS limited to one thread meanwhile. numpy's error state (it
    is per thread) is carried over. The first error — or an interrupt of this thread — sets
    ``stop`` (a long ``run`` polls it to end early); every started thread is joined before
    the error is re-raised here, so none still writes into the caller's arrays."""
    if slots <= 1:
        run(0)
        return
    errstate = np.geterr()
    errors: list[BaseException] = []

    def guarded(slot):
        try:
            with np.errstate(**errstate):
                run(slot)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)
            if stop is not None:
                stop.set()

    threads: list[threading.Thread] = []
    with one_blas_thread():
        try:
            for i in range(1, slots):  # inside the try: a thread that cannot start stops the rest
                threads.append(threading.Thread(target=guarded, args=(i,), daemon=True,
                                                name=f"rankwise-slot-{i}"))  # fmt: skip
                threads[-1].start()
            run(0)
        except BaseException:
            if stop is not None:
                stop.set()
            raise
        finally:
            for t in threads:
                t.join()
    if errors:
        raise errors[0]
