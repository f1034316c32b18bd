"""Dense arrays as dask arrays whose tasks read the file on the worker.

Each chunk is one task that opens the input itself (through :func:`open_array`, with every
safety check of a local read) and reads its row range: the data goes from the file straight to
the worker, never through the client. Only the URI (an absolute path and a key), the row range
and the dtype travel in the graph. Dask is imported here only.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import UsageError
from .fingerprints import DIGEST_BYTES
from .handle import ArrayHandle

_SLOT = 1 + DIGEST_BYTES  # a leaf's slot in the digests a task returns: a flag, the digest

# Engines whose handles read an arbitrary row range without reading what comes before it.
ROW_ADDRESSABLE = ("hdf5", "zarr", "npy")


def digest_rows(shape, dtype) -> int:
    """Rows per fingerprint leaf (:func:`fingerprints.leaf_rows`): tasks hold whole leaves."""
    from .fingerprints import leaf_rows

    return leaf_rows(shape, dtype)


def chunk_rows(handle: ArrayHandle, target_bytes: int) -> int:
    """Rows per task: about ``target_bytes`` each, a multiple of the fingerprint block (so
    each task hashes whole fingerprint blocks)."""
    step = digest_rows(handle.shape, handle.dtype)
    row = max(1, math.prod(handle.shape[1:]) * handle.dtype.itemsize)
    rows = max(step, int(target_bytes) // row // step * step)
    return min(rows, max(1, handle.shape[0]))


def _read_rows(uri, start: int, stop: int, max_bytes: int | None) -> np.ndarray:
    from .registry import open_array

    with open_array(uri, max_bytes=max_bytes) as handle:
        handle._check_block_budget(stop - start, max_bytes)
        handle._before_blocks()
        out = np.empty((stop - start, *handle.shape[1:]), dtype=handle.dtype)
        handle._read_rows_into(start, stop, out)
        return out


def as_dask_array(handle: ArrayHandle, *, rows: int, max_bytes: int | None = None) -> Any:
    """A dask array of ``handle`` in chunks of ``rows`` rows (all columns in each chunk: one
    column of row blocks, the layout TSQR and row-block products need)."""
    import dask
    import dask.array as da

    if handle.sparse or handle.format not in ROW_ADDRESSABLE:
        raise UsageError(
            f"{handle.uri.raw}: the dask engine reads dense HDF5, Zarr or NPY arrays on the "
            f"workers; {'sparse ' if handle.sparse else ''}{handle.format} input must run on "
            "the local engine"
        )
    # Workers may run in another directory: the path must be absolute.
    uri = replace(handle.uri, path=handle.uri.path.resolve())
    nrows, rest = handle.shape[0], tuple(handle.shape[1:])
    blocks = []
    for start in range(0, nrows, rows):
        stop = min(start + rows, nrows)
        task = dask.delayed(_read_rows, pure=True)(uri, start, stop, max_bytes)
        blocks.append(da.from_delayed(task, shape=(stop - start, *rest), dtype=handle.dtype))
    if not blocks:
        return da.zeros((0, *rest), dtype=handle.dtype)
    return da.concatenate(blocks, axis=0)


def block_digests(darr: Any) -> Any:
    """Digests of the array's fingerprint leaves (:func:`digest_rows` rows each), computed on
    the workers during a pass the method makes anyway: one row of digests per task."""
    import dask.array as da

    from .fingerprints import _canonical_dtype, leaf_digest

    if darr.ndim > 2:  # a tensor in slabs along axis 0: the same bytes, rows flattened
        darr = darr.reshape(darr.shape[0], -1)
    canon = _canonical_dtype(darr.dtype)
    step = digest_rows(darr.shape, darr.dtype)
    most = max(-(-c // step) for c in darr.chunks[0])
    width = most * _SLOT

    def digest(block: np.ndarray) -> np.ndarray:
        # raw bytes, never numpy's S dtype: it drops a digest's trailing zero bytes
        out = np.zeros((1, most, _SLOT), dtype=np.uint8)
        for i, start in enumerate(range(0, block.shape[0], step)):
            out[0, i, 0] = 1  # this slot holds a leaf (a chunk may have fewer than most)
            out[0, i, 1:] = np.frombuffer(leaf_digest(block[start : start + step], canon), np.uint8)
        return out.reshape(1, width)

    return da.map_blocks(digest, darr, chunks=((1,) * len(darr.chunks[0]), (width,)),
                         dtype=np.uint8)  # fmt: skip


def combine_digests(dtype: Any, shape: tuple[int, ...], digests: np.ndarray) -> str:
    """The input fingerprint from the workers' leaf digests: the same ``xxh128:`` value the
    local engine computes for the same data."""
    from .fingerprints import dense_root

    slots = np.asarray(digests, dtype=np.uint8).reshape(-1, _SLOT)
    return dense_root(dtype, shape, (row[1:].tobytes() for row in slots if row[0]))
