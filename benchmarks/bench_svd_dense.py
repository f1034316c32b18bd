"""Dense 20000×2000 with a decaying spectrum, k = 50: rankwise randomized vs
scikit-learn's randomized_svd (same process, best of 3). Accuracy: Frobenius error relative
to the optimum from the planted spectrum (= a full LAPACK SVD)."""

from __future__ import annotations

import numpy as np
from common import best_of, planted, save

from rankwise.core.rank import RankRule
from rankwise.core.svd import truncated_svd


def rel_err(a, u, s, vt, norm_a):
    # ‖A − UΣVᵀ‖² = ‖A‖² − 2 tr(ΣUᵀAV) + ‖Σ‖² for orthonormal U, V (one product, no copy)
    cross = np.einsum("ij,ij->j", u, a @ vt.T) @ s
    return np.sqrt(max(norm_a**2 - 2 * cross + s @ s, 0.0)) / norm_a


def main(m=20000, n=2000, k=50, repeats=3):
    from sklearn.utils.extmath import randomized_svd

    spectrum = 1.0 / (1.0 + np.arange(n))  # decaying, slow enough to need power iterations
    a = planted(m, n, spectrum, seed=0)
    norm_a = np.linalg.norm(spectrum)
    opt = np.linalg.norm(spectrum[k:]) / norm_a
    t_sk, (u, s, vt) = best_of(lambda: randomized_svd(a, k, random_state=0), repeats)
    e_sk = rel_err(a, u, s, vt, norm_a)
    t_rw, res = best_of(
        lambda: truncated_svd(
            a, RankRule("rank", k), method="randomized", rng=0, spectral_iters=0
        ),  # fmt: skip
        repeats,
    )
    e_rw = rel_err(a, res.U, res.S, res.Vt, norm_a)
    t_cert, _ = best_of(lambda: truncated_svd(a, RankRule("rank", k), method="randomized",
                                               rng=0), repeats)  # fmt: skip
    save("svd_dense", {
        "shape": [m, n], "k": k,
        "sklearn_seconds": t_sk, "rankwise_seconds": t_rw,
        "rankwise_with_spectral_estimate_seconds": t_cert,
        "time_ratio": t_rw / t_sk, "time_ratio_with_spectral_estimate": t_cert / t_sk,
        "sklearn_error_over_optimal": e_sk / opt, "rankwise_error_over_optimal": e_rw / opt,
        "rankwise_reported_error_over_optimal": res.metrics["relative_frobenius_error"] / opt,
        "rankwise_power_iters": res.details["power_iters"],
        "target": "time ≤ 0.6× sklearn, error within 1% of optimal",
    })  # fmt: skip


if __name__ == "__main__":
    main()
