"""Memory-budget checks done from declared sizes, before anything is allocated."""

from __future__ import annotations

import math

import numpy as np

from .errors import BudgetError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_bytes(n: int | float) -> str:
    """Binary units with one decimal ("7.5 TiB"); plain bytes below 1 KiB."""
    n = float(n)
    if n < 1024:
        return f"{int(n)} B"
    for unit in _UNITS[1:]:
        n /= 1024.0
        if n < 1024 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def shape_text(shape: tuple[int, ...]) -> str:
    """'1000×1000' (the multiplication sign reads better than 'x' in messages)."""
    return "×".join(str(int(s)) for s in shape) if shape else "scalar"


def dense_nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    # Python ints: a shape bomb must not overflow into a small number.
    return math.prod(int(s) for s in shape) * int(np.dtype(dtype).itemsize)


def check_budget(needed: int, max_bytes: int | None, *, where: str, what: str) -> None:
    """Raise BudgetError when `needed` bytes exceed `max_bytes` (None = no budget).

    `where` names the array (its URI); `what` describes the allocation, e.g.
    "shape 1000000×1000000 float64".
    """
    if max_bytes is None or needed <= max_bytes:
        return
    raise BudgetError(
        f"{where}: needs {human_bytes(needed)} ({what}) "
        f"but the memory budget is {human_bytes(max_bytes)}"
    )


def inflated_size(kind: str, data: bytes | memoryview, limit: int) -> int:
    """Bytes a gzip/zlib/bz2/lzma stream inflates to, counted no further than limit + 1.

    The stream codecs size nothing in advance: a few KiB can inflate to gigabytes, so a
    stream that could is inflated here first, with a bound, before a decoder that would
    allocate all of it. A corrupt stream counts what it gave before the error (its decoder
    reports the error itself).
    """
    import bz2
    import lzma
    import zlib

    total, rest = 0, data
    try:
        while rest and total <= limit:
            if kind in ("gzip", "zlib", "deflate"):
                z = zlib.decompressobj({"gzip": 31, "zlib": 15, "deflate": 15}[kind])
                total += len(z.decompress(rest, limit + 1 - total))
                while z.unconsumed_tail and total <= limit:
                    total += len(z.decompress(z.unconsumed_tail, limit + 1 - total))
                rest = z.unused_data if kind == "gzip" else b""  # gzip: members follow
            else:
                d = bz2.BZ2Decompressor() if kind == "bz2" else lzma.LZMADecompressor()
                total += len(d.decompress(rest, limit + 1 - total))
                while not d.eof and not d.needs_input and total <= limit:
                    total += len(d.decompress(b"", limit + 1 - total))
                rest = d.unused_data if d.eof else b""
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        pass
    return total
