"""Truncated SVD of a dask array (the Dask engine): data stays on the workers, only small
factors come to the client.

The input is a dask array chunked in row blocks with all columns in each chunk (one column of
blocks), as :func:`rankwise.formats.dask_array.as_dask_array` makes it. Each ``pass`` reads the
input once on the workers; the report records them.

Methods
-------
* ``tsqr`` (exact, tall-skinny): pass 1 computes the R factor of a tree QR
  (``dask.array.linalg.tsqr``: a QR per block, then a QR of the stacked R factors) together
  with ‖A‖²_F; the SVD ``R = U_R Σ Vᵀ`` on the client gives every singular value, so every
  rank rule applies and the error is the exact spectrum tail. Pass 2 forms
  ``U = Q·U_R[:, :k]`` block by block (the block QRs are recomputed from the data: Q is never
  stored, so memory stays at one block per task). Needs ``n × n`` on the client.
* ``randomized`` (any shape, fixed rank): a Gaussian sketch ``Y = AΩ`` (Ω from the seeded
  generator on the client, n × (k+p)) and ‖A‖²_F in pass 1; ``Q`` by TSQR of ``Y`` (kept on the
  workers: m × (k+p)); each power iteration is two passes (``Z = AᵀQ`` to the client,
  re-orthonormalised there, then ``Y = AZ`` and its TSQR); a last pass gives ``B = QᵀA``
  ((k+p) × n) on the client, whose SVD gives ``U = Q·U_B``. The error follows from the norm
  identity ``‖A − QB_k‖² = ‖A‖² − Σ_{i≤k} σᵢ²`` (exact for this factorisation).

Factors follow :func:`rankwise.core.linalg.svd_flip`, as the local engine's; float32 input is
computed in float32 (norms in float64).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .errors import DataError, ParameterError
from .linalg import eps, orthogonality_loss, svd_flip
from .rank import RankRule, Spectrum, ranks_by_rule, select_rank
from .svd import SVDResult

METHODS = ("auto", "tsqr", "randomized")
# TSQR on the client needs the n × n R factor and its SVD: up to this many columns.
TSQR_MAX_COLS = 4096
DEFAULT_POWER_ITERS = 2


def plan(shape, rule: RankRule, method: str = "auto") -> tuple[str, str]:
    """(method, reason) for an m × n input on the dask engine."""
    if method not in METHODS:
        raise ParameterError(f"unknown dask svd method {method!r}; choose from "
                             f"{', '.join(METHODS)}")  # fmt: skip
    m, n = (int(s) for s in shape)
    if method == "tsqr":
        if n > TSQR_MAX_COLS:
            raise ParameterError(f"tsqr needs the {n}×{n} R factor on the client; use it for "
                                 f"at most {TSQR_MAX_COLS} columns (or randomized)")  # fmt: skip
        return "tsqr", "requested"
    if method == "randomized":
        if rule.kind != "rank":
            raise ParameterError("the dask engine's randomized SVD takes --rank; accuracy rules "
                                 "need the whole spectrum (tsqr, for up to "
                                 f"{TSQR_MAX_COLS} columns)")  # fmt: skip
        return "randomized", "requested"
    if n <= TSQR_MAX_COLS and m >= n:
        return "tsqr", (f"tall-skinny ({m}×{n}, n ≤ {TSQR_MAX_COLS}): exact by a tree QR in "
                        "two passes")  # fmt: skip
    if rule.kind != "rank":
        raise ParameterError(f"{rule.kind} needs the whole spectrum, which the dask engine "
                             f"computes for tall inputs with at most {TSQR_MAX_COLS} columns; "
                             "give --rank")  # fmt: skip
    return "randomized", f"{m}×{n} is not tall-skinny: randomized range finder, fixed rank"


class _Passes:
    """Counts the passes over the input and times them (stage timings for the report)."""

    def __init__(self):
        self.stages: list[dict] = []
        self.reads = 0

    def run(self, name: str, fn, *, reads_input: bool = True):
        t0 = time.perf_counter()
        out = fn()
        self.reads += bool(reads_input)
        self.stages.append({"stage": name, "seconds": round(time.perf_counter() - t0, 4),
                            "reads_input": reads_input})  # fmt: skip
        return out


def _check_input(a):
    if a.ndim != 2:
        raise DataError(f"svd needs a matrix, got a {a.ndim}-D array")
    if 0 in a.shape:
        raise DataError(f"svd needs a non-empty matrix, got shape {tuple(a.shape)}")
    if len(a.chunks[1]) != 1:
        raise ParameterError("the dask svd needs row blocks holding every column (one column "
                             "of chunks)")  # fmt: skip
    kind = np.dtype(a.dtype).kind
    if kind not in "fiub":
        raise DataError(f"svd cannot use dtype {a.dtype}")
    return np.dtype(np.float32) if a.dtype == np.float32 else np.dtype(np.float64)


def _finite_norm_sq(a, wdt):
    """‖A‖²_F in float64 plus the count of non-finite entries (one graph, same pass)."""
    import dask.array as da

    x = a.astype(wdt)
    sq = da.map_blocks(lambda b: np.array([[np.sum(np.square(b, dtype=np.float64))]]), x,
                       chunks=(1, 1), dtype=np.float64).sum()  # fmt: skip
    bad = da.map_blocks(lambda b: np.array([[np.count_nonzero(~np.isfinite(b))]]), x,
                        chunks=(1, 1), dtype=np.int64).sum()  # fmt: skip
    return sq, bad


def _checked(total_sq, bad):
    if int(bad):
        raise DataError(f"the input holds {int(bad)} NaN/Inf value(s); svd needs finite data")
    return float(total_sq)


def svd(a, rule: RankRule, *, method: str = "auto", rng=None, oversample: int = 10,
        power_iters: int | None = None, also=None, on_first_pass=None) -> SVDResult:  # fmt: skip
    """Truncated SVD of the dask array ``a`` (see the module docstring); computes on the
    current dask scheduler (the client the caller made the default). ``also``: a dask
    collection over the same chunks computed in the first pass, its value handed to
    ``on_first_pass`` (e.g. block digests for a fingerprint: no extra read)."""
    import dask

    wdt = _check_input(a)
    m, n = (int(s) for s in a.shape)
    r = min(m, n)
    used, reason = plan(a.shape, rule, method)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    passes = _Passes()
    warnings: list[str] = []
    if rule.kind == "rank" and rule.value > r:
        warnings.append(f"rank {int(rule.value)} exceeds min(m, n) = {r}; clamped to {r}")
    x = a.astype(wdt)
    details: dict = {"engine": "dask", "working_dtype": str(wdt),
                     "block_rows": [int(c) for c in a.chunks[0][:1]][0],
                     "blocks": len(a.chunks[0])}  # fmt: skip
    if used == "tsqr":
        import dask.array as da

        q, rr = da.linalg.tsqr(x)
        sq, bad = _finite_norm_sq(a, wdt)
        rr, sq, bad, extra = passes.run("R factor and ‖A‖", lambda: dask.compute(rr, sq, bad,
                                                                                 also))  # fmt: skip
        total = _checked(sq, bad)
        ur, s, vt = np.linalg.svd(np.asarray(rr), full_matrices=False)
        spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=True)
        k = select_rank(spec, rule)
        ur_k = np.ascontiguousarray(ur[:, :k])
        u = passes.run("U = Q·U_R", lambda: (q @ ur_k).compute())
        err_sq = float(spec.tail_sq()[k])
        err_method = "spectrum tail of the R factor (exact)"
        nxt = float(s[k]) if k < len(s) else 0.0
        spectral = {"value": nxt, "relative": nxt / float(s[0]) if s[0] > 0 else 0.0,
                    "method": "σ_{k+1} of the exact spectrum"}  # fmt: skip
        details["small_svd"] = "LAPACK gesdd of the n×n R factor"
    else:
        k = max(1, min(int(rule.value), r))
        ell = min(r, k + int(oversample))
        p = DEFAULT_POWER_ITERS if power_iters is None else int(power_iters)
        omega = rng.standard_normal((n, ell)).astype(wdt)
        sq, bad = _finite_norm_sq(a, wdt)
        y, sq, bad, extra = passes.run("sketch Y = AΩ and ‖A‖",
                                       lambda: dask.persist(x @ omega, sq, bad, also))  # fmt: skip
        total = _checked(*dask.compute(sq, bad))
        extra = None if also is None else dask.compute(extra)[0]
        q = _orth(y)
        del y  # dropped as soon as Q is formed: m×(k+p) less on the workers
        for i in range(p):
            z = passes.run(f"power iteration {i + 1}: Z = AᵀQ", lambda q=q: (x.T @ q).compute())
            del q  # before the next Y is formed (two m×(k+p) arrays at most, not four)
            z = np.linalg.qr(z)[0].astype(wdt)
            y = passes.run(f"power iteration {i + 1}: Y = AZ", lambda z=z: (x @ z).persist())
            q = _orth(y)
            del y
        b = passes.run("B = QᵀA", lambda: (q.T @ x).compute())
        ub, sb, vt = np.linalg.svd(np.asarray(b), full_matrices=False)
        s = sb
        ub_k = np.ascontiguousarray(ub[:, :k].astype(wdt))
        u = passes.run("U = Q·U_B", lambda: (q @ ub_k).compute(), reads_input=False)
        spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=len(s) >= r)
        s2 = float(np.sum(np.asarray(s[:k], np.float64) ** 2))
        err_sq = max(total - s2, 0.0)
        err_method = "norm identity ‖A‖² − Σ_{i≤k} σᵢ² (exact for the range-finder factorisation)"
        spectral = {"value": None, "relative": None, "upper_bound": math.sqrt(err_sq),
                    "method": "not estimated on the dask engine (the Frobenius error bounds "
                              "it)"}  # fmt: skip
        details.update(sketch_size=ell, oversample=int(oversample), power_iters=p,
                       power_iters_mode="fixed",
                       small_svd="LAPACK gesdd of the (k+p)×n matrix B")  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(extra)
    u = np.asarray(u)
    s = np.asarray(s[:k])
    vt = np.asarray(vt[:k])
    u, vt = svd_flip(np.ascontiguousarray(u), np.ascontiguousarray(vt))
    details["passes"] = passes.reads
    details["stages"] = passes.stages
    if total == 0.0:
        err, bounds = 0.0, [0.0, 0.0]
    else:
        gamma = 10.0 * (k + 1) * eps(wdt) * total
        err = math.sqrt(err_sq / total)
        bounds = [math.sqrt(max(err_sq - gamma, 0.0) / total), math.sqrt((err_sq + gamma) / total)]
    metrics = {
        "relative_frobenius_error": err, "error_method": err_method, "error_bounds": bounds,
        "norm_fro": math.sqrt(total), "explained_energy": 1.0 - err * err,
        "singular_values": [float(v) for v in s],
        "singular_values_computed": [float(v) for v in spec.s],
        "orthogonality_loss": {"U": orthogonality_loss(u), "V": orthogonality_loss(vt.T)},
        "spectral_residual": spectral,
    }  # fmt: skip
    rank = {"value": int(k), "rule": rule.kind, "threshold": rule.value, "max_rank": int(r),
            "clamped": bool(rule.kind == "rank" and rule.value > r),
            "by_rule": ranks_by_rule(spec, rule)}  # fmt: skip
    return SVDResult(U=u, S=np.ascontiguousarray(s, dtype=wdt), Vt=vt, mean=None, rank=rank,
                     method=used, method_reason=reason, details=details, metrics=metrics,
                     warnings=tuple(warnings), stop_reason="direct method")  # fmt: skip


def _orth(y):
    """Orthonormal basis of the tall dask array ``y`` by TSQR, kept on the workers."""
    import dask.array as da

    return da.linalg.tsqr(y)[0].persist()


# --- reduced-order bases ------------------------------------------------------------------------


def _row_vector(v: np.ndarray, like):
    """A client vector as a dask array chunked like the rows of ``like``."""
    import dask.array as da

    return da.from_array(np.asarray(v), chunks=(like.chunks[0],))


def pod(a, rule: RankRule, *, center: bool = False, weights=None, also=None,
        on_first_pass=None):  # fmt: skip
    """POD of the dask snapshot matrix ``a`` (dofs × snapshots, row blocks) by TSQR of
    ``W^½(X − x̄1ᵀ)``: every singular value exactly (all rank rules), the basis
    ``W^{-½}Q U_R`` in a second pass, per-snapshot projection errors from the right singular
    vectors. ``weights``: a positive weight per dof (the diagonal inner product); a sparse mass
    matrix needs the local engine."""
    import dask
    import dask.array as da

    from .result import Result

    wdt = _check_input(a)
    n, m = (int(s) for s in a.shape)
    if m > TSQR_MAX_COLS:
        raise ParameterError(f"the dask POD factors the {m}×{m} R of a tree QR on the client: "
                             f"at most {TSQR_MAX_COLS} snapshots")  # fmt: skip
    passes = _Passes()
    x = a.astype(wdt)
    sq, bad = _finite_norm_sq(a, wdt)
    mean = x.mean(axis=1, dtype=np.float64) if center else None
    if center:
        x = x - mean.astype(wdt)[:, None]
    sw = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != (n,):
            raise DataError(f"weights must hold one value per dof ({n}), got shape {w.shape}")
        if not (np.all(np.isfinite(w)) and np.all(w > 0)):
            raise DataError("weights must be finite and positive")
        sw = np.sqrt(w)
        x = x * _row_vector(sw.astype(wdt), x)[:, None]
    q, rr = da.linalg.tsqr(x)
    rr, mean_v, _sq, bad, extra = passes.run(
        "R factor of W^½X", lambda: dask.compute(rr, mean, sq, bad, also))  # fmt: skip
    _checked(_sq, bad)
    ur, s, vt = np.linalg.svd(np.asarray(rr, dtype=np.float64), full_matrices=False)
    total = float(np.sum(s**2))
    if total == 0.0:
        raise DataError("all snapshots are zero: POD has no basis to give")
    r = min(n, m)
    spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=True)
    k = select_rank(spec, rule)
    ur_k = np.ascontiguousarray(ur[:, :k].astype(wdt))
    u = np.asarray(passes.run("basis Q·U_R", lambda: (q @ ur_k).compute()), dtype=np.float64)
    if sw is not None:
        u = u / sw[:, None]
    basis, _ = svd_flip(u, np.zeros((k, 1)))  # the largest entry of each mode positive
    if on_first_pass is not None:
        on_first_pass(extra)
    w2 = np.asarray(vt, np.float64) ** 2  # (r × m): rows are right singular vectors
    s2 = s**2
    err_sq = s2[k:] @ w2[k:]
    norms_sq = s2 @ w2
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(norms_sq > 0, np.sqrt(err_sq / np.where(norms_sq > 0, norms_sq, 1)), 0.0)
    g = basis.T @ (basis * (1.0 if weights is None else np.asarray(weights, float)[:, None]))
    worst = int(np.argmax(rel))
    discarded = float(spec.tail_sq()[k])
    metrics = {
        "singular_values": [float(v) for v in s], "singular_values_accurate": int(len(s)),
        "norm_fro": math.sqrt(total), "relative_frobenius_error": math.sqrt(discarded / total),
        "discarded_energy": discarded,
        "error_method": "tail of the spectrum of the R factor (Σ_{i>N} σ_i²)",
        "projection_error": {"mean": float(rel.mean()), "worst": float(rel[worst]),
                             "worst_snapshot": worst,
                             "method": "Σ_{i>N} σ_i² w_ji² (right singular vectors of R)",
                             "resolution": 0.0},
        "orthogonality_loss": float(np.max(np.abs(g - np.eye(k)))),
    }  # fmt: skip
    rank = {"value": int(k), "rule": rule.kind, "threshold": rule.value, "max_rank": int(r),
            "clamped": False, "by_rule": ranks_by_rule(spec, rule)}  # fmt: skip
    arrays = {"basis": np.ascontiguousarray(basis, dtype=wdt),
              "singular_values": np.asarray(s[:k], dtype=wdt)}  # fmt: skip
    if center:
        arrays["mean"] = np.asarray(mean_v, dtype=wdt)
    details = {"engine": "dask", "working_dtype": str(wdt), "centered": center,
               "inner_product": {"kind": "euclidean" if weights is None else "diagonal"},
               "passes": passes.reads, "stages": passes.stages,
               "blocks": len(a.chunks[0])}  # fmt: skip
    return Result(arrays=arrays, method="tsqr",
                  method_reason="dask engine: TSQR of W^½X (exact spectrum) in two passes",
                  metrics=metrics, details=details, rank=rank)  # fmt: skip


def project(basis, a, *, weights=None, mean=None, also=None, on_first_pass=None):
    """Relative projection errors ‖x_j − VVᵀWx_j‖_W / ‖x_j‖_W of the dask snapshots ``a`` on
    the (client) basis V: coefficients and norms in pass 1, the explicit residual in pass 2."""
    import dask
    import dask.array as da

    from .result import Result

    wdt = _check_input(a)
    n, m = (int(s) for s in a.shape)
    v = np.asarray(basis, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != n:
        raise DataError(f"the basis has {v.shape[0] if v.ndim == 2 else '?'} dofs but the "
                        f"snapshots have {n}")  # fmt: skip
    passes = _Passes()
    x = a.astype(np.float64)
    sq, bad = _finite_norm_sq(a, wdt)
    if mean is not None:
        x = x - _row_vector(np.asarray(mean, np.float64), x)[:, None]
    wv = _row_vector(np.ones(n) if weights is None else np.asarray(weights, float), x)
    vd = da.from_array(v, chunks=(x.chunks[0], v.shape[1]))
    coef = (vd * wv[:, None]).T @ x
    norms = (wv[:, None] * x * x).sum(axis=0)
    c, norms_sq, _sq, bad, extra = passes.run(
        "coefficients VᵀWX and ‖x_j‖", lambda: dask.compute(coef, norms, sq, bad, also)
    )
    _checked(_sq, bad)
    resid = x - vd @ c
    res_sq = passes.run("explicit residual", lambda: (wv[:, None] * resid * resid).sum(axis=0)
                        .compute())  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(extra)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(norms_sq > 0, np.sqrt(res_sq / np.where(norms_sq > 0, norms_sq, 1)), 0.0)
    worst = int(np.argmax(rel))
    g = v.T @ (v * (1.0 if weights is None else np.asarray(weights, float)[:, None]))
    metrics = {"mean": float(rel.mean()), "worst": float(rel[worst]), "worst_snapshot": worst,
               "orthogonality_loss": float(np.max(np.abs(g - np.eye(v.shape[1]))))}  # fmt: skip
    kind = "euclidean" if weights is None else "diagonal"
    details = {"engine": "dask", "inner_product": {"kind": kind}, "modes": int(v.shape[1]),
               "passes": passes.reads, "stages": passes.stages}  # fmt: skip
    return Result(arrays={"projection_errors": rel.astype(wdt)}, method="project",
                  method_reason="dask engine: explicit residual in float64, two passes",
                  metrics=metrics, details=details)  # fmt: skip
