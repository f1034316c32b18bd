"""Input checks shared by every algorithm: dtype policy, shape and finiteness."""

from __future__ import annotations

import numpy as np

from .errors import DataError

# Row blocks of this many bytes keep the finiteness scan's temporaries small.
_SCAN_BLOCK_BYTES = 64 << 20


def is_sparse(a) -> bool:
    return hasattr(a, "tocsr") and hasattr(a, "nnz")


def working_dtype(dtype, *, method: str, allow_complex: bool = False) -> np.dtype:
    """The floating dtype an algorithm computes in.

    float32 and float64 are kept; float16 widens to float32; integers and booleans
    become float64 (they have no rounding of their own to preserve).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "fc" and dtype.itemsize > (8 if dtype.kind == "f" else 16):
        raise DataError(
            f"{method} does not support extended precision ({dtype}); convert the data to "
            "float64 first"
        )
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    if dtype.kind == "c":
        if allow_complex:
            return np.dtype(np.complex64) if dtype.itemsize <= 8 else np.dtype(np.complex128)
        raise DataError(f"{method} does not support complex input (dtype {dtype})")
    raise DataError(f"{method} needs numeric data; dtype {dtype} is not supported")


def check_matrix_shape(shape, *, method: str) -> None:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise DataError(f"{method} needs a 2-D matrix; got {len(shape)}-D shape {shape}")
    if 0 in shape:
        raise DataError(f"{method} needs a non-empty matrix; got shape {shape}")


def as_float_matrix(a, *, method: str):
    """Check shape and dtype and return ``a`` in its working dtype (no copy when already so)."""
    check_matrix_shape(a.shape, method=method)
    dt = working_dtype(a.dtype, method=method)
    if is_sparse(a):
        import scipy.sparse as sp

        a = sp.csr_array(a)
        return a if a.dtype == dt else a.astype(dt)
    a = np.asarray(a)
    return a if a.dtype == dt else a.astype(dt)


def count_nonfinite(a) -> tuple[int, int]:
    """(number of NaN, number of ±Inf), scanned in row blocks."""
    data = a.data if is_sparse(a) else np.asarray(a)
    if data.dtype.kind not in "fc":
        return 0, 0
    if data.ndim == 0 or data.size == 0:
        return 0, 0
    flat_rows = data.reshape(data.shape[0], -1) if data.ndim > 1 else data.reshape(-1, 1)
    row_bytes = max(1, flat_rows.shape[1] * flat_rows.itemsize)
    step = max(1, _SCAN_BLOCK_BYTES // row_bytes)
    nan = inf = 0
    for start in range(0, flat_rows.shape[0], step):
        block = flat_rows[start : start + step]
        fin = np.isfinite(block)
        if fin.all():
            continue
        n_nan = int(np.count_nonzero(np.isnan(block)))
        nan += n_nan
        inf += int(block.size - np.count_nonzero(fin)) - n_nan
    return nan, inf


def check_finite(a, *, method: str, allow_nan: bool = False) -> tuple[int, int]:
    """Raise DataError for Inf (always) and NaN (unless allowed); return the counts."""
    nan, inf = count_nonfinite(a)
    if inf:
        raise DataError(f"input holds {inf} infinite value(s); {method} needs finite data")
    if nan and not allow_nan:
        raise DataError(
            f"input holds {nan} NaN value(s); {method} needs complete data"
            " (NaN marks a missing entry: use a completion method)"
        )
    return nan, inf


# Squares of entries beyond 2^±400 overflow or underflow the float64 norms that certify the
# error — beyond 2^±40 in float32, where Gram products of 2^40 rows must stay below 2^128 —
# so such data is rescaled by an exact power of two (no rounding) and scaled back.
SAFE_EXPONENT = {4: 40, 8: 400}


def safe_exponent(dtype) -> int:
    return SAFE_EXPONENT[min(8, max(4, np.dtype(dtype).itemsize))]


def power_of_two_scale(amax: float, dtype=np.float64) -> float:
    """Factor that brings ``max|A| = amax`` near 1 when it is extreme for the working
    ``dtype``, else 1.0."""
    if amax == 0.0 or not np.isfinite(amax):
        return 1.0
    exp = int(np.frexp(amax)[1])
    if abs(exp) <= safe_exponent(dtype):
        return 1.0
    # a subnormal maximum needs more than the largest power of two the dtype holds: that one
    # still brings it to a normal number, far from underflow
    return float(np.ldexp(1.0, min(-exp, np.finfo(np.dtype(dtype)).maxexp - 2)))


def abs_max(a) -> float:
    """max |a| without a full-size temporary."""
    data = a.data if is_sparse(a) else np.asarray(a)
    if data.size == 0:
        return 0.0
    return float(max(abs(float(np.max(data))), abs(float(np.min(data)))))
