"""The operator protocol against explicit dense products."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rankwise.core.operator import as_operator


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("center", [False, True])
def test_products_norm_and_blocks(sparse, center):
    rng = np.random.default_rng(0)
    dense = sp.random_array((70, 30), density=0.2, rng=rng).toarray() + (5.0 if center else 0)
    a = sp.csr_array(dense) if sparse else dense
    op = as_operator(a, center=center)
    ref = dense - dense.mean(axis=0) if center else dense
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((70, 3))
    np.testing.assert_allclose(op.matmat(x), ref @ x, atol=1e-12)
    np.testing.assert_allclose(op.rmatmat(y), ref.T @ y, atol=1e-12)
    assert op.fro_norm_sq() == pytest.approx(np.sum(ref**2), rel=1e-13)
    blocks = list(op.row_blocks(16))
    assert [s for s, _ in blocks] == [0, 16, 32, 48, 64]
    np.testing.assert_allclose(np.vstack([b for _, b in blocks]), ref, atol=1e-12)


def test_centered_sparse_norm_has_no_cancellation():
    # Mean 1e8 with unit variation: ‖A‖² − m‖μ‖² would lose every digit in float64.
    rng = np.random.default_rng(1)
    dense = 1e8 + rng.standard_normal((50, 4))
    op = as_operator(sp.csr_array(dense), center=True)
    ref = np.sum((dense - dense.mean(axis=0)) ** 2)
    assert op.fro_norm_sq() == pytest.approx(ref, rel=1e-6)
