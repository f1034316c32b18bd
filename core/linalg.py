"""Small dense linear-algebra building blocks shared by the algorithms."""

from __future__ import annotations

import numpy as np


def svd_flip(u: np.ndarray, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fix the sign of each singular pair: the entry of largest magnitude in each column
    of ``u`` is made positive (the first such entry on ties), ``vt`` follows.

    This is scikit-learn's u-based ``svd_flip`` rule; it makes outputs reproducible
    byte for byte across methods that agree up to sign.
    """
    if u.shape[1] == 0:
        return u, vt
    idx = np.argmax(np.abs(u), axis=0)
    signs = np.sign(u[idx, np.arange(u.shape[1])])
    signs[signs == 0] = 1
    signs = signs.astype(u.dtype)
    u *= signs
    vt *= signs[:, None]
    return u, vt


def thin_svd(a: np.ndarray, *, overwrite: bool = False, recompute=None):
    """Thin SVD by LAPACK gesdd, falling back to gesvd when gesdd does not converge.

    Returns ``(u, s, vt, driver)``. A C-ordered input is factorised as its (F-ordered)
    transpose, which spares LAPACK a reordering copy. With ``overwrite`` the input may be
    destroyed; ``recompute()`` must then rebuild it for the fallback.
    """
    import scipy.linalg as sla

    transpose = a.flags.c_contiguous and not a.flags.f_contiguous and a.ndim == 2
    m = a.T if transpose else a

    def run(mat, driver, over):
        return sla.svd(
            mat, full_matrices=False, lapack_driver=driver, overwrite_a=over, check_finite=False
        )

    try:
        u, s, vt = run(m, "gesdd", overwrite)
        driver = "gesdd"
    except np.linalg.LinAlgError:
        if overwrite:
            if recompute is None:
                raise
            a = recompute()
            m = a.T if transpose else a
        u, s, vt = run(m, "gesvd", False)
        driver = "gesvd (gesdd did not converge)"
    if transpose:
        u, vt = vt.T, u.T
    return u, s, vt, driver


def orth(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the columns of ``y`` (Householder QR, thin)."""
    import scipy.linalg as sla

    q, _ = sla.qr(y, mode="economic", overwrite_a=True, check_finite=False)
    return q


def orthogonality_loss(q: np.ndarray) -> float:
    """max |QᵀQ − I| for a matrix with orthonormal columns (computed in float64)."""
    if q.size == 0:
        return 0.0
    q64 = np.asarray(q, dtype=np.float64)
    g = q64.T @ q64
    g[np.diag_indices_from(g)] -= 1.0
    return float(np.max(np.abs(g)))


def eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)
