"""The operator protocol through which large matrices are reached.

An operator has ``shape``, ``dtype``, ``matmat(X) = A @ X``, ``rmatmat(Y) = A.T @ Y``,
``row_blocks(rows)`` and ``fro_norm_sq()``. Randomized and Krylov methods only need these,
so the same code runs on dense arrays, sparse matrices and (later) chunked files.
"""

from __future__ import annotations

import numpy as np

from .validate import is_sparse

_BLOCK_BYTES = 64 << 20


def _block_rows(ncols: int, itemsize: int) -> int:
    return max(1, _BLOCK_BYTES // max(1, ncols * itemsize))


class DenseOperator:
    kind = "dense"

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype

    def matmat(self, x):
        return self.a @ x

    def rmatmat(self, y):
        return self.a.T @ y

    def row_blocks(self, rows: int | None = None):
        rows = rows or _block_rows(self.shape[1], self.dtype.itemsize)
        for start in range(0, self.shape[0], rows):
            yield start, self.a[start : start + rows]

    def fro_norm_sq(self) -> float:
        total = 0.0
        for _, blk in self.row_blocks():
            v = np.asarray(blk, dtype=np.float64).ravel()
            total += float(v @ v)
        return total

    def column_mean(self) -> np.ndarray:
        return np.mean(self.a, axis=0, dtype=np.float64)

    def dense(self) -> np.ndarray:
        return self.a


class SparseOperator:
    kind = "sparse"

    def __init__(self, a):
        self.a = a.tocsr()
        self.shape = self.a.shape
        self.dtype = self.a.dtype

    def matmat(self, x):
        return np.asarray(self.a @ x)

    def rmatmat(self, y):
        return np.asarray(self.a.T @ y)

    def row_blocks(self, rows: int | None = None):
        rows = rows or _block_rows(self.shape[1], self.dtype.itemsize)
        for start in range(0, self.shape[0], rows):
            yield start, self.a[start : start + rows].toarray()

    def fro_norm_sq(self) -> float:
        v = np.asarray(self.a.data, dtype=np.float64)
        return float(v @ v)

    def column_mean(self) -> np.ndarray:
        sums = np.asarray(self.a.sum(axis=0, dtype=np.float64)).ravel()
        return sums / self.shape[0]

    def dense(self) -> np.ndarray:
        return self.a.toarray()


class CenteredOperator:
    """``A - 1 μᵀ`` applied implicitly, so sparse data stays sparse."""

    kind = "centered"

    def __init__(self, base, mean: np.ndarray):
        self.base = base
        self.shape = base.shape
        self.dtype = base.dtype
        self.mean = np.asarray(mean, dtype=base.dtype)

    def matmat(self, x):
        y = self.base.matmat(x)
        y -= self.mean @ x
        return y

    def rmatmat(self, y):
        z = self.base.rmatmat(y)
        z -= np.outer(self.mean, y.sum(axis=0))
        return z

    def row_blocks(self, rows: int | None = None):
        for start, blk in self.base.row_blocks(rows):
            yield start, blk - self.mean

    def fro_norm_sq(self) -> float:
        mu = np.asarray(self.mean, dtype=np.float64)
        if isinstance(self.base, SparseOperator):
            # Per column: stored entries minus μ_j, plus (m - nnz_j) zeros at distance μ_j.
            # No subtraction of two large norms, so no cancellation when the mean dominates.
            csc = self.base.a.tocsc()
            counts = np.diff(csc.indptr)
            cols = np.repeat(np.arange(self.shape[1]), counts)
            d = np.asarray(csc.data, dtype=np.float64) - mu[cols]
            return float(d @ d + ((self.shape[0] - counts) * mu**2).sum())
        total = 0.0
        for _, blk in self.base.row_blocks():
            v = (np.asarray(blk, dtype=np.float64) - mu).ravel()
            total += float(v @ v)
        return total

    def dense(self) -> np.ndarray:
        out = np.array(self.base.dense(), dtype=self.dtype, copy=True)
        out -= self.mean
        return out


def as_operator(a, *, center: bool = False):
    """Wrap an in-memory array or sparse matrix; with ``center`` subtract its column mean."""
    if hasattr(a, "matmat") and hasattr(a, "fro_norm_sq"):
        op = a
    elif is_sparse(a):
        op = SparseOperator(a)
    else:
        op = DenseOperator(np.asarray(a))
    if center:
        op = CenteredOperator(op, op.column_mean())
    return op


def to_scipy_linear_operator(op):
    from scipy.sparse.linalg import LinearOperator

    return LinearOperator(
        shape=op.shape,
        dtype=op.dtype,
        matvec=lambda v: op.matmat(np.asarray(v).reshape(-1, 1)).ravel(),
        rmatvec=lambda v: op.rmatmat(np.asarray(v).reshape(-1, 1)).ravel(),
        matmat=op.matmat,
        rmatmat=op.rmatmat,
    )
