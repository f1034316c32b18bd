"""Which element types rankwise accepts: booleans, integers, floats and complex numbers."""

from __future__ import annotations

import numpy as np

ACCEPTED_KINDS = "biufc"


def dtype_refusal(dtype: np.dtype) -> str | None:
    """Why `dtype` is refused, or None when it holds plain numbers."""
    dtype = np.dtype(dtype)
    if dtype.subdtype is not None:
        return f"array-typed elements ({dtype}) are not supported"
    if dtype.kind in ACCEPTED_KINDS:
        return None
    if dtype.kind == "O":
        return "object dtype holds pickled Python objects and is refused"
    if dtype.kind == "V":
        if dtype.fields:
            return f"structured (compound) dtype {dtype} is refused"
        return f"opaque/raw dtype {dtype} is refused"
    if dtype.kind in "SUT":
        return f"string dtype {dtype} is refused"
    if dtype.kind in "Mm":
        return f"date/time dtype {dtype} is refused"
    return f"dtype {dtype} is refused"  # pragma: no cover - numpy has no other kinds today


def dtype_name(dtype: np.dtype) -> str:
    """Human dtype name that keeps a non-native byte order visible (">f8")."""
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not np.little_endian):
        return dtype.str
    return dtype.name
