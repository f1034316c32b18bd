"""Reduced-order bases: rankwise POD vs pyMOR's ``pyMOR.algorithms.pod.pod`` on a 50000×400
snapshot matrix (1-D heat equation from a box, 400 geometric times: a smooth parametric family),
Euclidean and with a P1 mass matrix of a random non-uniform mesh; incremental enrichment one
snapshot at a time vs batch POD. Same process, best of 3 (pyMOR's slow qr_svd: 1 run).

Rule: keep σ ≥ 1e-6·σ₁ (rankwise ``rel-sv 1e-6``, pyMOR ``rtol=1e-6``). Truth: LAPACK's SVD
of X (with M = F Fᵀ: of FᵀX, F from a banded Cholesky). pyMOR's default is the method of
snapshots, whose small singular values are only as accurate as the Gram allows (≈ eps·σ₁²/σ);
its ``qr_svd`` (Gram–Schmidt + SVD of R) is the accurate reference. Subspaces are compared by
the largest principal-angle sine ‖(I − PPᵀM)Q‖ over the modes with σ ≥ 1e-4·σ₁ (well
separated: smaller modes are compared through the singular values only).

Requires pyMOR (``pip install pymor``; benchmark-only).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from common import best_of, save

from rankwise.core.pod import IncrementalPOD, pod
from rankwise.core.rank import RankRule


def heat_snapshots(n: int, m: int, k_max: int = 2000) -> np.ndarray:
    x = np.linspace(0, 1, n)
    t = np.geomspace(1e-4, 1e-1, m)
    k = np.arange(1, k_max + 1)
    ck = 2 * (np.cos(k * np.pi * 0.2) - np.cos(k * np.pi * 0.6)) / (k * np.pi)
    out = np.empty((n, m))
    coef = ck[:, None] * np.exp(-np.outer(k**2 * np.pi**2, t))
    for s in range(0, n, 5000):  # the n×k_max sine table in slices
        out[s : s + 5000] = np.sin(np.outer(x[s : s + 5000], k * np.pi)) @ coef
    return out


def p1_mass(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    edges = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, n - 2)]))
    h = np.diff(edges)
    main = np.zeros(n)
    main[:-1] += h / 3
    main[1:] += h / 3
    return sp.diags([h / 6, main, h / 6], [-1, 0, 1], format="csr")


def factor_t(mass) -> np.ndarray:
    """Upper banded Cholesky factor R (M = RᵀR) of a tridiagonal M, as a sparse matrix."""
    n = mass.shape[0]
    ab = np.zeros((2, n))
    ab[0, 1:] = mass.diagonal(1)
    ab[1] = mass.diagonal()
    r = sla.cholesky_banded(ab, lower=False)
    return sp.diags([r[1], r[0, 1:]], [0, 1], format="csr")


def sine(q, v, mass=None):
    """Largest principal-angle sine of span(v) against span(q) (both M-orthonormal)."""
    mv = v if mass is None else mass @ v
    res = v - q @ (q.T @ mv)
    if mass is None:
        return float(np.linalg.norm(res, 2))
    r = factor_t(mass)
    return float(np.linalg.norm(r @ res, 2))


def compare(s, ref, floor):
    k = int(np.sum(ref >= floor * ref[0]))
    k = min(k, len(s))
    return float(np.max(np.abs(s[:k] - ref[:k]) / ref[:k])), k


def main(n=50_000, m=400, repeats=3):
    from pymor.core.logger import set_log_levels

    set_log_levels({"pymor": "ERROR"})
    from pymor.algorithms.pod import pod as pymor_pod
    from pymor.operators.numpy import NumpyMatrixOperator
    from pymor.vectorarrays.numpy import NumpyVectorSpace

    x = heat_snapshots(n, m)
    rule = RankRule("rel_sv", 1e-6)
    out = {"shape": [n, m], "rule": "σ ≥ 1e-6·σ₁ (rel-sv / rtol)"}
    for case in ("euclidean", "mass"):
        mass = p1_mass(n) if case == "mass" else None
        if mass is None:
            truth_u, truth_s, _ = sla.svd(x, full_matrices=False)
            truth_v = truth_u
        else:
            r = factor_t(mass)
            truth_u, truth_s, _ = sla.svd(r @ x, full_matrices=False)
            truth_v = sla.solve_triangular(r.toarray(), truth_u) if n <= 5000 else None
        space = NumpyVectorSpace(n)
        va = space.from_numpy(np.asfortranarray(x))  # pyMOR's native layout, built untimed
        product = None if mass is None else NumpyMatrixOperator(mass)
        t_py, (modes, s_py) = best_of(
            lambda va=va, p=product: pymor_pod(va, product=p, rtol=1e-6), repeats
        )
        t_qr, (modes_qr, s_qr) = best_of(
            lambda va=va, p=product: pymor_pod(va, product=p, rtol=1e-6, method="qr_svd"), 1
        )
        t_rw, res = best_of(lambda mass=mass: pod(x, rule, mass=mass), repeats)
        v_py = modes.to_numpy()
        v_qr = modes_qr.to_numpy()
        v_rw = res.arrays["basis"]
        s_rw = res.arrays["singular_values"]
        n_cmp = int(np.sum(truth_s >= 1e-4 * truth_s[0]))
        ref_v = v_qr[:, :n_cmp]  # pyMOR's accurate modes as the subspace reference
        row = {
            "rankwise_seconds": t_rw,
            "pymor_mos_seconds": t_py,
            "pymor_qr_svd_seconds": t_qr,
            "time_ratio_vs_pymor_default": t_rw / t_py,
            "time_ratio_vs_pymor_qr_svd": t_rw / t_qr,
            "rankwise_method": res.method,
            "rankwise_reason": res.method_reason,
            "rankwise_details": {
                k: res.details.get(k)
                for k in (
                    "rayleigh_ritz",
                    "rayleigh_ritz_size",
                    "orthonormalisation",
                    "svd",
                    "modes_loss",
                )
            },
            "modes": {"rankwise": len(s_rw), "pymor_mos": len(s_py), "pymor_qr_svd": len(s_qr)},
            "sigma_rel_diff_vs_truth": {
                "rankwise": compare(s_rw, truth_s, 1e-6)[0],
                "pymor_mos": compare(s_py, truth_s, 1e-6)[0],
                "pymor_qr_svd": compare(s_qr, truth_s, 1e-6)[0],
            },
            "sigma_rel_diff_rankwise_vs_pymor": {
                "mos": compare(s_rw, s_py, 1e-6)[0],
                "qr_svd": compare(s_rw, s_qr, 1e-6)[0],
            },
            "compared_sigmas": compare(s_rw, truth_s, 1e-6)[1],
            "subspace_sine_first_modes": {
                "modes": n_cmp,
                "rankwise_vs_pymor_qr_svd": sine(v_rw, ref_v, mass),
                "pymor_mos_vs_pymor_qr_svd": sine(v_py, ref_v, mass),
            },
            "orthogonality_loss": {
                "rankwise": res.metrics["orthogonality_loss"],
                "pymor_mos": float(np.max(np.abs(modes.inner(modes, product) - np.eye(len(s_py))))),
            },
        }
        if truth_v is not None:
            row["subspace_sine_first_modes"]["rankwise_vs_truth"] = sine(
                v_rw, truth_v[:, :n_cmp], mass
            )
        out[case] = row
        del va, modes, modes_qr
    # incremental enrichment, one snapshot at a time, vs batch POD (same rule, tol = 1e-6)
    tol_rule = RankRule("tol", 1e-6)
    perm = np.random.default_rng(0).permutation(m)
    xp = np.ascontiguousarray(x[:, perm])
    t_batch, batch = best_of(lambda: pod(xp, tol_rule), repeats)
    cols = [np.ascontiguousarray(xp[:, j]) for j in range(m)]

    def incremental():
        inc = IncrementalPOD(n, tol_rule)
        for c in cols:
            inc.add(c)
        return inc.result()

    t_inc, inc = best_of(incremental, repeats)
    vb, vi = batch.arrays["basis"], inc.arrays["basis"]
    truth_u = sla.svd(xp, full_matrices=False)[0][:, : vb.shape[1]]
    out["enrich_one_at_a_time"] = {
        "batch_seconds": t_batch,
        "incremental_seconds": t_inc,
        "time_ratio": t_inc / t_batch,
        "per_snapshot_ms": 1e3 * t_inc / m,
        "modes": {"batch": vb.shape[1], "incremental": vi.shape[1]},
        "largest_sine_incremental_vs_batch": sine(vb, vi[:, : vb.shape[1]]),
        "largest_sine_batch_vs_truth": sine(truth_u, vb),
        "largest_sine_incremental_vs_truth": sine(truth_u, vi[:, : vb.shape[1]]),
        "sigma_rel_diff": float(
            np.max(
                np.abs(
                    inc.arrays["singular_values"][: vb.shape[1]] / batch.arrays["singular_values"]
                    - 1
                )
            )
        ),
        "error_bound_relative": inc.metrics["error_bound"]["relative"],
        "batch_relative_error": batch.metrics["relative_frobenius_error"],
        "details": inc.details,
    }
    out["target"] = (
        "σ equal (≤ 1e-8 relative for σ ≥ 1e-6σ₁), subspaces equal, time ≤ 0.7× "
        "pyMOR; enrich one snapshot at a time ≤ 2× batch, sine ≤ 1e-8"
    )
    out["timestamp"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save("rob", out)


if __name__ == "__main__":
    main()
