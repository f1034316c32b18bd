"""Truncated SVD of a dask array (the Dask engine): data stays on the workers, only small
factors come to the client.

The input is a dask array chunked in row blocks with all columns in each chunk (one column of
blocks), as :func:`rankwise.formats.dask_array.as_dask_array` makes it. Each ``pass`` reads the
input once on the workers; the report records them.

Methods
-------
* ``tsqr`` (exact, tall-skinny; the name of the request): CholeskyQR2 in three passes when the
  condition allows, as :func:`rankwise.core.linalg.tall_svd` does locally. Pass 1 sums the
  blocks' Grams ``AᵢᵀAᵢ`` with ‖A‖²_F; ``R₁ = chol(AᵀA)`` on the client. Pass 2 forms
  ``Q₁ = A R₁⁻¹`` block by block and sums its Gram; ``R₂ = chol(Q₁ᵀQ₁)``, and the SVD
  ``R₂R₁ = U_R Σ Vᵀ`` gives every singular value, so every rank rule applies and the error is
  the exact spectrum tail. Pass 3: ``U = Q₁ (R₂⁻¹ U_R[:, :k])``. Q₁ stays on the workers when
  it fits in a quarter of their memory (pass 3 then reads nothing); otherwise pass 3 forms it
  again from the data, with the same operations, so it is the same Q₁. When R₁'s condition
  is too large for CholeskyQR2 (or a Cholesky breaks down), a tree QR
  (``dask.array.linalg.tsqr``) in two passes, as before. Needs ``n × n`` on the client.
* ``randomized`` (any shape, any rank rule): the local streaming SVD's algorithm
  (:func:`rankwise.core.randomized.streaming`: subspace iteration on the Gram operator,
  adaptive power iterations, a basis that doubles until an accuracy rule is met) on row
  blocks held by actors on the workers (:mod:`rankwise.core.dask_blocks`). Every pass
  computes ``AᵀA W`` block by block, each block read once (pass 1 also sums ‖A‖²_F and
  checks the data) — or not read at all after pass 1 when the input fits in half the
  workers' memory, which then keep it. Only n × ℓ sums and the m × ℓ ``Y = AW`` of the
  passes that keep it reach the client, where Y's QR and the SVD of its R finish as on the
  local engine. The error follows from the norm identity
  ``‖A − A V_k V_kᵀ‖² = ‖A‖² − Σ_{i≤k} σᵢ²`` (exact for this factorisation).

Factors follow :func:`rankwise.core.linalg.svd_flip`, as the local engine's; float32 input is
computed in float32 (norms in float64).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from .dask_blocks import persisted
from .errors import DataError, ParameterError
from .linalg import eps, orthogonality_loss, svd_flip
from .operator import dense_matmat, dense_rmatmat
from .rank import RankRule, Spectrum, ranks_by_rule, select_rank
from .svd import SVDResult

METHODS = ("auto", "tsqr", "randomized")
# TSQR on the client needs the n × n R factor and its SVD: up to this many columns.
TSQR_MAX_COLS = 4096
# Intermediate results kept on the workers may use this share of their memory.
KEEP_FRACTION = 0.25


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
        return "randomized", "requested"
    if n <= TSQR_MAX_COLS and m >= n:
        return "tsqr", (f"tall-skinny ({m}×{n}, n ≤ {TSQR_MAX_COLS}): exact by CholeskyQR2 "
                        "(a tree QR when ill-conditioned)")  # fmt: skip
    return "randomized", (f"{m}×{n} is not tall-skinny: subspace iteration on the Gram "
                          "operator (the basis grows until an accuracy rule is met)")  # fmt: skip


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
    """‖A‖²_F in float64 plus the count of non-finite entries, one small task per block in
    the same pass (the count is only taken in blocks whose squares do not sum finitely)."""
    import dask.array as da

    def norms(b):
        sq, _, bad = _norms(np.asarray(b, dtype=wdt))
        return np.array([[sq, bad]])

    out = da.map_blocks(norms, a, chunks=(1, 2), dtype=np.float64).sum(axis=0)
    return out[0], out[1]


def _checked(total_sq, bad):
    if int(bad):
        raise DataError(f"the input holds {int(bad)} NaN/Inf value(s); svd needs finite data")
    return float(total_sq)


def svd(a, rule: RankRule, *, method: str = "auto", rng=None, oversample: int = 10,
        power_iters: int | None = None, also=None, on_first_pass=None,
        keep_bytes: int | None = None) -> SVDResult:  # fmt: skip
    """Truncated SVD of the dask array ``a`` (see the module docstring); computes on the
    current dask scheduler (the client the caller made the default). ``also``: a dask
    collection over the same chunks computed in the first pass, its value handed to
    ``on_first_pass`` (e.g. block digests for a fingerprint: no extra read). ``keep_bytes``:
    how much of the workers' memory intermediate m-row results may hold (default
    KEEP_FRACTION of their limits; none when a worker has no limit)."""

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
    if keep_bytes is None:
        from distributed import get_client

        from .dask_blocks import worker_memory

        keep_bytes = int(KEEP_FRACTION * worker_memory(get_client()))
    if used == "tsqr":
        sq, bad = _finite_norm_sq(a, wdt)
        hold = 2 * x.nbytes <= keep_bytes  # A and Q₁
        x, (g, sq, bad, extra) = _first_pass(passes, "Gram AᵀA and ‖A‖", x, hold,
                                             x.T @ x, sq, bad, also)  # fmt: skip
        total = _checked(sq, bad)
        exact = _cholqr2(x, g, wdt, rule, r, total, passes, hold, keep_bytes)
        if exact is None:
            exact = _tsqr(x, rule, r, total, passes, hold)
        u, s, vt, k, spec, qr_how = exact
        used = "cholesky_qr2" if qr_how.startswith("cholesky_qr2") else "tsqr"
        err_sq = float(spec.tail_sq()[k])
        err_method = "spectrum tail of the R factor (exact)"
        nxt = float(s[k]) if k < len(s) else 0.0
        spectral = {"value": nxt, "relative": nxt / float(s[0]) if s[0] > 0 else 0.0,
                    "method": "σ_{k+1} of the exact spectrum"}  # fmt: skip
        details["qr"] = qr_how
        details["small_svd"] = "LAPACK gesdd of the n×n R factor"
    else:
        from . import randomized
        from .svd import _finish

        op = _BlocksOperator(a, wdt, also)
        fact = randomized.streaming(op, rule, oversample=oversample, power_iters=power_iters,
                                    rng=rng, center=False, max_memory=None,
                                    warnings=warnings)  # fmt: skip
        passes.stages.extend(op.stages)
        passes.reads += sum(st["reads_input"] for st in op.stages)
        total, extra, hold = fact.total_sq, op.extra, op.blocks.persist
        fact.left = passes.run("Y = AW of the last pass to the client", fact.left.fetch,
                               reads_input=False)  # fmt: skip
        u, s, vt, spec, fin, err_all = _finish(fact, rule)
        k = select_rank(spec, rule)
        if k is None:
            k = len(s)
            warnings.append(f"{rule.kind} = {rule.value:g} not reached within the computed "
                            f"rank {k}")  # fmt: skip
        u, err_sq = u[:, :k], float(err_all[k])
        err_method = "norm identity ‖A‖² − Σ_{i≤k} σᵢ² (exact for the range-finder factorisation)"
        spectral = {"value": None, "relative": None, "upper_bound": math.sqrt(err_sq),
                    "method": "not estimated on the dask engine (the Frobenius error bounds "
                              "it)"}  # fmt: skip
        details.update({key: fin[key] for key in ("oversample", "power_iters",
                        "power_iters_mode", "sketch_size", "basis_growths", "small_svd",
                        "history", "stop_reason") if key in fin})  # fmt: skip
        op.blocks.close()
    details["input_kept_on_workers"] = bool(hold)
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


def _orth_small(z: np.ndarray, wdt) -> np.ndarray:
    """Orthonormal basis of a small n × ℓ matrix on the client."""
    return np.linalg.qr(np.asarray(z, dtype=np.float64))[0].astype(wdt)


def _exact_from_r(r_factor, s_rule, total, r):
    """The SVD of the n × n R factor, the spectrum and the rank the rule picks."""
    ur, s, vt = np.linalg.svd(np.asarray(r_factor), full_matrices=False)
    spec = Spectrum(s=s, total_sq=total, max_rank=r, complete=True)
    return ur, s, vt, spec, select_rank(spec, s_rule)


def _norms(x):
    """‖x‖² in float64, max |x| and the non-finite count (only counted when the squares do
    not sum finitely)."""
    from .validate import abs_max

    flat = x.reshape(-1).astype(np.float64, copy=False)
    sq = float(flat @ flat)
    bad = 0 if np.isfinite(sq) else int(flat.size - np.count_nonzero(np.isfinite(flat)))
    return sq, abs_max(flat), bad


def _block_first(raw, w, wdt):
    """Pass 1 on one block: ‖·‖², max |·|, the non-finite count and ``xᵀ(x w)``."""
    x = np.asarray(raw, dtype=wdt)
    sq, amax, bad = _norms(x)
    with np.errstate(over="ignore", invalid="ignore"):
        return sq, amax, bad, dense_rmatmat(x, dense_matmat(x, w))


def _block_gram(x, state, w, keep):
    """``xᵀ(x w)``; with ``keep`` the block's ``x w`` stays in its state for the client to
    fetch if this pass turns out to be the last."""
    y = dense_matmat(x, w)  # the orientations OpenBLAS runs fastest for a thin w
    return ({"y": y} if keep else {}), dense_rmatmat(x, y)


def _block_y(x, state):
    return state["y"]


class _RowsOnWorkers:
    """``A W`` of a pass, left on the workers until the client asks for it (the passes of
    streaming keep it every time, but only the last one's is used)."""

    def __init__(self, blocks):
        self.blocks = blocks

    def fetch(self) -> np.ndarray:
        return np.concatenate(self.blocks.apply(_block_y, data=False), axis=0)


class _BlocksOperator:
    """The Gram passes of :func:`rankwise.core.randomized.streaming` on row blocks held by
    actors on the workers (:class:`rankwise.core.dask_blocks.RowBlocks`): every pass computes
    ``AᵀA W`` (and keeps ``A W`` on the workers) block by block, each block read once — or not
    at all once the input is held in the workers' memory — and only n × ℓ sums reach the
    client (and the m × ℓ ``A W`` of the last pass)."""

    kind = "blocks"

    def __init__(self, a, wdt, also):
        from .dask_blocks import RowBlocks

        self.shape, self.dtype = tuple(int(v) for v in a.shape), np.dtype(wdt)
        self.blocks = RowBlocks(a, functools.partial(np.asarray, dtype=wdt), also=also)
        self.block_rows = int(a.chunks[0][0])
        self.passes, self.bytes_read, self.scale = 0, 0, 1.0
        self.pass_seconds: list[float] = []
        self.stages: list[dict] = []
        self.extra = None

    def gram_pass(self, w, *, keep=False, stats=False, center_stats=True, out=None):
        from .dask_blocks import add_all
        from .operator import _ColumnStats

        if self.scale != 1.0:  # streaming asks for exactly rescaled data: the local engine's
            raise DataError("entries this extreme (max |A| beyond 2^±400) need the local "
                            "engine, which rescales them exactly")  # fmt: skip
        t0 = time.perf_counter()
        reads = self.passes == 0 or not self.blocks.persist
        w = np.asarray(w, dtype=self.dtype)
        acc = y = None
        if self.passes == 0:
            got, self.extra = self.blocks.first_pass(
                functools.partial(_block_first, w=w, wdt=self.dtype)
            )
            self.blocks.stages.clear()
            bad = sum(g[2] for g in got)
            if bad:
                raise DataError(f"the input holds {bad} NaN/Inf value(s); svd needs finite data")
            z = add_all([g[3] for g in got])
            acc = _ColumnStats(self.shape[1], centered=False)
            acc.raw_sq, acc.magnitude = float(sum(g[0] for g in got)), max(g[1] for g in got)
            acc.count = self.shape[0]
            if keep:
                self.blocks.step(_block_gram, w, True)
                y = _RowsOnWorkers(self.blocks)
        else:
            z = add_all(self.blocks.step(_block_gram, w, keep))
            y = _RowsOnWorkers(self.blocks) if keep else None
        self.passes += 1
        self.bytes_read += (self.shape[0] * self.shape[1] * self.dtype.itemsize) if reads else 0
        seconds = time.perf_counter() - t0
        self.pass_seconds.append(seconds)
        name = "Z = AᵀAΩ and ‖A‖" if self.passes == 1 else f"pass {self.passes}: Z = AᵀAW"
        if self.passes == 1 and self.blocks.persist:
            name += " (A kept on the workers)"
        self.stages.append({"stage": name, "seconds": round(seconds, 4), "reads_input": reads})
        return z, y, np.zeros(w.shape[1]), acc


def _first_pass(passes, name, x, hold, *small):
    """The first read: the small results, and ``x`` kept on the workers when ``hold`` (the
    later passes then read nothing). Returns (x, the small results)."""
    import dask

    def run():
        if not hold:
            return x, dask.compute(*small)
        out = persisted(x, *small)
        return out[0], dask.compute(*out[1:])

    return passes.run(name + (" (A kept on the workers)" if hold else ""), run)


def _cholqr2(x, g, wdt, rule, r, total, passes, hold, keep_bytes):
    """The exact SVD by CholeskyQR2 (module docstring) from the Gram ``g`` of the first pass,
    or None when the condition of the data is beyond it (the tree QR takes over)."""
    import dask
    import scipy.linalg as sla

    from .linalg import cholqr_max_cond

    n = x.shape[1]
    try:
        r1 = sla.cholesky(np.asarray(g), lower=False, check_finite=False)
        sv = sla.svdvals(r1, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if not (np.isfinite(sv).all() and sv[-1] > 0 and sv[0] / sv[-1] <= cholqr_max_cond(wdt)):
        return None
    r1inv = sla.solve_triangular(r1, np.eye(n, dtype=r1.dtype), check_finite=False).astype(wdt)
    q1 = x @ r1inv
    keep = hold or q1.nbytes <= keep_bytes
    if keep:
        q1, g2 = passes.run("Q₁ = A R₁⁻¹ (kept on the workers) and its Gram",
                            lambda: persisted(q1, q1.T @ q1), reads_input=not hold)  # fmt: skip
        g2 = dask.compute(g2)[0]
    else:
        g2 = passes.run("Gram of Q₁ = A R₁⁻¹", lambda: (q1.T @ q1).compute())
    try:
        r2 = sla.cholesky(np.asarray(g2), lower=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    ur, s, vt, spec, k = _exact_from_r(r2 @ r1, rule, total, r)
    xk = sla.solve_triangular(r2, ur[:, :k], lower=False, check_finite=False).astype(wdt)
    u = passes.run("U = Q₁ R₂⁻¹ U_R", lambda: (q1 @ xk).compute(), reads_input=not keep)
    how = "cholesky_qr2" + (" (Q₁ kept on the workers)" if keep else " (Q₁ formed twice)")
    return u, s, vt, k, spec, how


def _tsqr(x, rule, r, total, passes, hold):
    """The exact SVD by a tree QR in two more passes (the block QRs are recomputed in the
    second: Q is never stored)."""
    import dask.array as da

    q, rr = da.linalg.tsqr(x)
    rr = passes.run("R factor of a tree QR", lambda: rr.compute(), reads_input=not hold)
    ur, s, vt, spec, k = _exact_from_r(rr, rule, total, r)
    ur_k = np.ascontiguousarray(ur[:, :k])
    u = passes.run("U = Q·U_R", lambda: (q @ ur_k).compute(), reads_input=not hold)
    return u, s, vt, k, spec, "tsqr (condition too large for CholeskyQR2)"


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
