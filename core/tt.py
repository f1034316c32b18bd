"""Tensor-train (TT) decomposition: TT-SVD with an error tolerance and/or a rank cap, TT
rounding, and a streamed TT-SVD for tensors read in slabs from a file.

``X ≈ Σ G_0[0, i_0, :] G_1[:, i_1, :] … G_{N-1}[:, i_{N-1}, 0]`` with cores ``G_k`` of shape
``r_k × I_k × r_{k+1}``, ``r_0 = r_N = 1`` (TensorLy's layout: ``tt_to_tensor(cores)``).
Output names: ``cores/0`` … ``cores/N-1``; ``ranks`` in reports are the N+1 bond ranks
``[1, r_1, …, r_{N-1}, 1]`` (TensorLy's ``rank=`` convention).

Conventions
-----------
* Cores ``0 … N-2`` are left-orthogonal (the ``r_k I_k × r_{k+1}`` unfolding has orthonormal
  columns); the last core carries the norm. Each left-orthogonal core comes from the SVD of the
  current bond (a left-to-right sweep), so its columns are the left singular vectors of the
  bond's unfolding of the *result*, ordered by descending singular value (``bond_singular_
  values`` in the metrics), with the entry of largest magnitude of every column positive. Two
  TT representations of the same tensor thus give the same cores (distinct singular values).
* Order ≥ 2 (for a matrix the TT is its truncated SVD: cores ``1 × m × r`` and ``r × n × 1``);
  1-D input is refused.
* float32 stays float32 (Grams and norms accumulate in float64); integers become float64;
  NaN/Inf are data errors; extreme float64 data is scaled by an exact power of two internally.
* Deterministic (no random step).

TT-SVD (Oseledets 2011), swept from the last mode
-------------------------------------------------
Every bond is truncated at ``δ = ε‖X‖/√(N−1)``: the fewest singular values whose discarded
tail has ``Σ σ_i² ≤ δ²`` (and at most ``max_rank``). The sweep runs from the last mode to the
first: ``A = C.reshape(I_0…I_{k-1}, I_k r_{k+1})`` (a view), ``A ≈ (UΣ) Vᵀ``, the core is
``Vᵀ`` and ``C ← UΣ``. The tensor is then an orthogonal projection of ``X`` onto nested
subspaces, so ``‖X − T‖² = Σ_k tail_k ≤ (N−1)δ² = ε²‖X‖²`` (exactly, in exact arithmetic).
Sweeping from the last mode is what makes streaming possible (below); the guarantee is the same
as Oseledets's left-to-right sweep. A final left-to-right SVD sweep (no truncation: the cores
are small) gives the documented left-orthogonal form and the bond singular values.

Each bond's subspace comes from (``svd="auto"``): the eigendecomposition of the Gram of the
short side of ``A`` (``AᵀA`` when ``I_k r_{k+1} ≤ I_0…I_{k-1}``, then ``C ← A V``; else
``AAᵀ``, ``Vᵀ`` from an LQ factorisation of ``UᵀA``), formed by GEMM on the view and
accumulated in float64; or, when the δ rule needs the tail more accurately than the Gram
resolves it (``δ² < 100·n·eps·λ_max``, ``n`` the Gram's size), LAPACK's thin SVD of ``A``
(CholeskyQR2 + SVD of R for a tall float64 ``A``), whose small singular values are accurate to
``eps·σ_max``. The report lists the path of every bond.

TT rounding (``tt_round``): right-to-left orthogonalisation by QR, then a left-to-right sweep
of truncated SVDs with ``δ = ε‖T‖/√(N−1)``; ``‖T − T'‖² = Σ tails ≤ ε²‖T‖²``.

Streaming (a handle that does not fit ``max_memory``, or ``streaming=True``): slabs along
axis 0 are rows of every unfolding ``A`` of the right-to-left sweep, so ``AᵀA`` is a sum over
slabs. Pass 1 sums the Gram of the last unfolding (``I_{N-1} × I_{N-1}``) and ‖X‖²; each later
pass projects every slab on the bonds already found and sums the Gram of the next unfolding,
until the projected tensor ``C`` fits in memory: that pass keeps ``C`` and the sweep finishes
in memory. A tensor whose last mode holds most of its size needs two passes. (A left-to-right
sweep would need the Gram of ``X_(0)``, i.e. products between slabs.)

Error certification: as for Tucker, the identity ``‖X‖² − ‖T‖²`` (``‖T‖`` = norm of the last
core) when it resolves the error, else an explicit residual over slabs in float64 (one more
pass when streaming).
"""

from __future__ import annotations

import math
import time

import numpy as np

from . import tensor as T
from .errors import BudgetError, DataError, ParameterError
from .linalg import eps as _eps
from .linalg import orthogonality_loss, svd_flip, tall_svd, thin_svd
from .rank import REFERENCE_THRESHOLDS
from .result import Result
from .validate import abs_max, power_of_two_scale, working_dtype

SVD_PATHS = ("auto", "gram", "svd")
IDENTITY_MARGIN = 50.0
REPORT_SPECTRUM = 1024
# While streaming, the projected tensor is gathered once it needs at most this share of the
# memory budget.
GATHER_SHARE = 0.5


def check_parameters(*, tol=None, max_rank=None, svd: str = "auto") -> None:
    if tol is None and max_rank is None:
        raise ParameterError("tt needs tol, max_rank or both")
    if tol is not None and not (isinstance(tol, int | float) and 0 < tol < 1):
        raise ParameterError(f"tol must be in (0, 1), got {tol}")
    if max_rank is not None:
        seq = [max_rank] if np.ndim(max_rank) == 0 else list(max_rank)
        for r in seq:
            if isinstance(r, bool) or int(r) != r or r < 1:
                raise ParameterError(f"max_rank must be positive integers, got {max_rank}")
    if svd not in SVD_PATHS:
        raise ParameterError(f"unknown svd path {svd!r}; choose from {', '.join(SVD_PATHS)}")


def estimate_bytes(
    shape,
    dtype,
    *,
    streaming: bool = False,
    max_memory: int | None = None,
    chunk_rows: int | None = None,
) -> int:
    """Peak bytes in memory, input included: in memory the tensor (converted when its dtype is
    not the working one), the first bond's product ``A V`` (at most the input's size) and its
    Gram; streaming the slabs in flight and the last mode's Gram (the projected tensor is
    gathered only once it fits the budget)."""
    shape = tuple(int(s) for s in shape)
    wdt = working_dtype(dtype, method="tt")
    size = math.prod(shape)
    gram = min(shape[-1], size // shape[-1]) ** 2 * 8
    if streaming:
        rows = T.stream_rows(shape, max(np.dtype(dtype).itemsize, wdt.itemsize), max_memory,
                             chunk_rows)  # fmt: skip
        row = math.prod(shape[1:])
        return int(3 * rows * row * np.dtype(dtype).itemsize + 2 * rows * row * wdt.itemsize
                   + gram)  # fmt: skip
    conv = size * wdt.itemsize if np.dtype(dtype) != wdt else 0
    return int(size * np.dtype(dtype).itemsize + conv + size * wdt.itemsize + gram)


def _caps(max_rank, order: int) -> list[float]:
    """Cap of every bond 1 … N-1 (index k-1), inf when none."""
    if max_rank is None:
        return [math.inf] * (order - 1)
    if np.ndim(max_rank) == 0:
        return [int(max_rank)] * (order - 1)
    caps = [int(r) for r in max_rank]
    if len(caps) == order + 1 and caps[0] == caps[-1] == 1:
        caps = caps[1:-1]  # TensorLy's [1, r_1, …, r_{N-1}, 1]
    if len(caps) != order - 1:
        raise ParameterError(f"max_rank needs {order - 1} bond ranks for a tensor of order "
                             f"{order}, got {len(caps)}")  # fmt: skip
    return caps


def _tail(lam: np.ndarray) -> np.ndarray:
    return np.concatenate([np.cumsum(lam[::-1])[::-1], [0.0]])


def _choose(lam: np.ndarray, delta_sq: float | None, cap: float) -> tuple[int, int]:
    """(rank kept, rank the tol rule alone asks for)."""
    n = lam.size
    if delta_sq is None:
        want = n
    else:
        ok = np.flatnonzero(_tail(lam) <= delta_sq)
        want = max(1, int(ok[0])) if ok.size else n
    return max(1, min(want, int(min(cap, n)))), want


# --- one bond of the right-to-left sweep ---------------------------------------------------


def _bond(a: np.ndarray, delta_sq, cap, path: str):
    """Truncate ``A`` (M × n) as ``(UΣ) Vᵀ``. Returns (C = UΣ (M × r), Vᵀ (r × n), λ, r,
    wanted rank, description)."""
    m, n = a.shape
    g = min(m, n)
    use_svd = path == "svd"
    if not use_svd:
        if n <= m:
            gram = T.mode_gram(a, 1)
            side = f"eigh of the {n}×{n} Gram AᵀA"
        else:
            gram = T.mode_gram(a, 0)
            side = f"eigh of the {m}×{m} Gram AAᵀ"
        lam, vec = T.gram_eig(gram)
        lam = lam[:g]
        resolved = (
            delta_sq is None
            or lam[0] == 0
            or (delta_sq >= T.RESOLVE_MARGIN * T.gram_resolution(lam[0], gram.shape[0]))
        )
        if resolved or path == "gram":
            r, want = _choose(lam, delta_sq, cap)
            w = np.asarray(vec[:, :r], dtype=a.dtype)
            if n <= m:  # V = w; C = A V
                vt = np.ascontiguousarray(w.T)
                c = a @ w
                return np.ascontiguousarray(c), vt, lam, r, want, side
            # U = w; B = UᵀA = ΣVᵀ; LQ of B: B = L Q → Vᵀ := Q, C = U L
            b = w.T @ a
            q, rr = np.linalg.qr(b.T)
            vt = np.ascontiguousarray(q.T)
            c = w @ rr.T
            return np.ascontiguousarray(c), vt, lam, r, want, side + " + LQ of UᵀA"
        use_svd = True
    if m >= 4 * n and a.dtype == np.float64:
        u, s, vt, drv = tall_svd(a)
    else:
        u, s, vt, drv = thin_svd(a)
    lam = np.asarray(s, np.float64) ** 2
    r, want = _choose(lam, delta_sq, cap)
    c = u[:, :r] * s[:r]
    how = f"{drv} SVD of the {m}×{n} unfolding (view)"
    if path == "auto":
        how += " (the Gram cannot resolve the tail)"
    return np.ascontiguousarray(c, dtype=a.dtype), np.ascontiguousarray(vt[:r]), lam, r, want, how


def _rl_sweep(c: np.ndarray, shape, start_bond: int, r_next: int, delta_sq, caps, path):
    """Right-to-left TT-SVD of the carrier ``c`` (shape ``I_0 … I_k × r_next`` with
    k = start_bond) down to bond 1. Returns (core_0, cores {k: core}, steps)."""
    cores, steps = {}, []
    for k in range(start_bond, 0, -1):
        m = math.prod(shape[:k])
        a = c.reshape(m, shape[k] * r_next)
        c, vt, lam, r, want, how = _bond(a, delta_sq, caps[k - 1], path)
        cores[k] = vt.reshape(r, shape[k], r_next)
        steps.append(_step(k, r, want, lam, how, "in memory"))
        r_next = r
    core0 = c.reshape(1, shape[0], r_next)
    return core0, cores, steps


def _step(k, r, want, lam, how, where):
    return {"bond": k, "rank": int(r), "tol_rank": int(want), "path": how, "where": where,
            "discarded_energy": float(_tail(lam)[r]), "spectrum_sq": lam,
            "below_resolution": T.below_resolution(lam) if "Gram" in how else 0}  # fmt: skip


# --- left-to-right SVD sweep (canonical form / rounding) ----------------------------------


def _lr_sweep(cores: list, delta_sq=None, caps=None):
    """Left-to-right sweep of SVDs over cores whose right part (cores k+1 …) is
    right-orthogonal. Truncates with ``delta_sq``/``caps`` when given. Returns (cores, bond
    singular values, discarded energy per bond, tol ranks)."""
    cores = [np.asarray(c) for c in cores]
    n_modes = len(cores)
    svals, tails, wants = [], [], []
    for k in range(n_modes - 1):
        rk, ik, rk1 = cores[k].shape
        a = cores[k].reshape(rk * ik, rk1)
        u, s, vt, _ = thin_svd(np.ascontiguousarray(a))
        lam = np.asarray(s, np.float64) ** 2
        cap = math.inf if caps is None else caps[k]
        r, want = _choose(lam, delta_sq, cap)
        u, vt = svd_flip(np.ascontiguousarray(u[:, :r]), np.ascontiguousarray(vt[:r]))
        cores[k] = u.reshape(rk, ik, r)
        carry = s[:r, None] * vt
        nxt = cores[k + 1]
        cores[k + 1] = (carry @ nxt.reshape(rk1, -1)).reshape(r, nxt.shape[1], nxt.shape[2])
        svals.append(np.asarray(s, np.float64))
        tails.append(float(_tail(lam)[r]))
        wants.append(int(want))
    return cores, svals, tails, wants


def _right_orthogonalise(cores: list) -> list:
    cores = [np.asarray(c) for c in cores]
    for k in range(len(cores) - 1, 0, -1):
        rk, ik, rk1 = cores[k].shape
        q, r = np.linalg.qr(cores[k].reshape(rk, ik * rk1).T)  # Aᵀ = QR → A = Rᵀ Qᵀ
        rn = q.shape[1]
        cores[k] = np.ascontiguousarray(q.T).reshape(rn, ik, rk1)
        prev = cores[k - 1]
        cores[k - 1] = (prev.reshape(-1, rk) @ r.T).reshape(prev.shape[0], prev.shape[1], rn)
    return cores


# --- checks ------------------------------------------------------------------------------------


def _check_cores(cores) -> tuple[list, tuple, np.dtype]:
    if isinstance(cores, dict):
        cores = [cores[f"cores/{k}"] for k in range(len(cores))]
    cores = [np.asarray(c) for c in cores]
    if len(cores) < 2:
        raise DataError("a tensor train needs at least 2 cores")
    for k, c in enumerate(cores):
        if c.ndim != 3:
            raise DataError(f"core {k} must be 3-D (r_k × I_k × r_k+1); got shape {c.shape}")
        if 0 in c.shape:
            raise DataError(f"core {k} is empty (shape {c.shape})")
    if cores[0].shape[0] != 1 or cores[-1].shape[2] != 1:
        raise DataError("the first core must have r_0 = 1 and the last r_N = 1")
    for k in range(len(cores) - 1):
        if cores[k].shape[2] != cores[k + 1].shape[0]:
            raise DataError(f"bond {k + 1}: core {k} ends with {cores[k].shape[2]} but core "
                            f"{k + 1} starts with {cores[k + 1].shape[0]}")  # fmt: skip
    wdt = working_dtype(np.result_type(*[c.dtype for c in cores]), method="tt_round")
    cores = [np.ascontiguousarray(c, dtype=wdt) for c in cores]
    for c in cores:
        T.check_finite_tensor(c, method="tt_round")
    shape = tuple(c.shape[1] for c in cores)
    return cores, shape, wdt


def _ranks(cores) -> list[int]:
    return [1] + [int(c.shape[2]) for c in cores[:-1]] + [1]


def _left_loss(cores) -> float:
    loss = 0.0
    for c in cores[:-1]:
        loss = max(loss, orthogonality_loss(c.reshape(-1, c.shape[2])))
    return loss


def _bounds(err_sq, gamma, norm_sq):
    if norm_sq == 0.0:
        return [0.0, 0.0]
    return [math.sqrt(max(err_sq - gamma, 0.0) / norm_sq), math.sqrt((err_sq + gamma) / norm_sq)]


def _tol_rows(given, tol, norm_sq, err_sq, svals, n_modes):
    """Bond ranks each reference tol gives by rounding the result (‖X − T'‖² = ‖X − T‖² +
    ‖T − T'‖² and the rounding's tails only shrink along the sweep), for tols above the
    achieved error."""
    rows = []
    for tau in REFERENCE_THRESHOLDS["tol"]:
        if given == "tol" and tau == tol:
            continue
        row = {"rule": "tol", "threshold": tau, "given": False}
        if tau**2 * norm_sq > err_sq:
            d = (tau**2 * norm_sq - err_sq) / max(1, n_modes - 1)
            inner = [_choose(s**2, d, math.inf)[0] for s in svals]
            row.update(ranks=[1, *inner, 1], basis="rounding of the result (bond spectra)")
        else:
            row.update(ranks=None, basis="below the achieved error: needs a run with this tol")
        rows.append(row)
    return rows


# --- entry points ------------------------------------------------------------------------------


def tt(x, *, tol: float | None = None, max_rank=None, svd: str = "auto",
       max_memory: int | None = None, streaming: bool | None = None,
       on_first_pass=None) -> Result:  # fmt: skip
    """TT-SVD of ``x`` (an array, or a slab source with ``shape``, ``dtype`` and
    ``iter_blocks(rows)``): ``tol`` (relative Frobenius error guaranteed when no cap binds),
    ``max_rank`` (an int for every bond, N-1 bond ranks, or TensorLy's N+1 list), or both.
    See the module docstring. Returns a :class:`Result` with arrays ``cores/0`` …
    """
    check_parameters(tol=tol, max_rank=max_rank, svd=svd)
    source = x if T.is_slab_source(x) else None
    shape = T.check_tensor_shape(x.shape if source is not None else np.shape(x), method="tt",
                                 min_order=2)  # fmt: skip
    n_modes = len(shape)
    caps = _caps(max_rank, n_modes)
    dtype = np.dtype(x.dtype) if source is not None else np.asarray(x).dtype
    wdt = working_dtype(dtype, method="tt")
    warnings: list[str] = []
    chunk_rows = (
        int(source.chunks[0]) if source is not None and getattr(source, "chunks", None) else None
    )
    in_memory_need = estimate_bytes(shape, dtype)
    if streaming is None:
        streaming = source is not None and max_memory is not None and in_memory_need > max_memory
    if streaming:
        src = source if source is not None else T.ArraySlabs(np.asarray(x))
        return _streaming(src, shape, dtype, wdt, tol, caps, max_memory, chunk_rows, svd,
                          warnings, on_first_pass)  # fmt: skip
    if source is not None:
        if max_memory is not None and in_memory_need > max_memory:
            raise BudgetError(
                f"tt needs about {T.human(in_memory_need)} in memory for shape "
                f"{shape} but the memory budget is {T.human(max_memory)}"
            )
        x = T.gather(source, shape, on_first_pass)
    x, wdt, copied = T.as_float_tensor(x, method="tt")
    T.check_finite_tensor(x, method="tt")
    if max_memory is not None and source is None and in_memory_need > max_memory:
        raise BudgetError(f"tt needs about {T.human(in_memory_need)} (input included) for shape "
                          f"{shape} but the memory budget is {T.human(max_memory)}")  # fmt: skip
    scale = power_of_two_scale(abs_max(x), wdt)
    if scale != 1.0:
        x = x * wdt.type(scale)
        _scale_warning(warnings, scale)
    norm_sq = T.sq_norm(x)
    details = {"working_dtype": str(wdt), "svd_path": svd, "scale": scale, "input_copy": copied,
               "sweep": "right-to-left TT-SVD, then a left-to-right SVD sweep (canonical form)",
               "gathered_from_source": source is not None}  # fmt: skip
    if norm_sq == 0.0:
        return _zero(shape, wdt, tol, caps, warnings, details, "tt-svd")
    delta_sq = None if tol is None else tol**2 * norm_sq / max(1, n_modes - 1)
    _precision_warning(warnings, tol, wdt)
    core0, right, steps = _rl_sweep(x, shape, n_modes - 1, 1, delta_sq, caps, svd)
    cores = [core0] + [right[k] for k in range(1, n_modes)]
    reason = ("TT-SVD (Oseledets) swept from the last mode with bond subspaces from Gram "
              "eigendecompositions of reshaped views (SVD where the δ rule needs it)")  # fmt: skip
    return _finish(
        cores,
        steps,
        shape,
        wdt,
        norm_sq,
        tol,
        caps,
        warnings,
        details,
        scale,
        "tt-svd",
        reason,
        residual=lambda cs: T.residual_sq(x, lambda s0, s1: T.tt_rows(cs, s0, s1)),
    )


def _finish(cores, steps, shape, wdt, norm_sq, tol, caps, warnings, details, scale, method,
            reason, residual, passes=None) -> Result:  # fmt: skip
    """Canonical left-to-right sweep, certification, metrics and the rank report.
    ``residual(cores)`` computes ‖X − T‖² explicitly (used when the identity cannot)."""
    n_modes = len(shape)
    cores, svals, _, _ = _lr_sweep(cores)
    last_sq = T.sq_norm(cores[-1])
    err_sq = norm_sq - last_sq
    gamma = 10.0 * sum(shape) * _eps(wdt) * norm_sq
    how = "identity ‖X‖² − ‖T‖² (left-orthogonal cores; float64 sums)"
    if err_sq < IDENTITY_MARGIN * gamma:
        t0 = time.perf_counter()
        err_sq = residual(cores)
        if passes is not None:
            passes.append(time.perf_counter() - t0)
        gamma = 4.0 * _eps(np.float64) * norm_sq + 2.0 * _eps(wdt) * norm_sq
        how = ("explicit residual (slabs along axis 0, float64)" if passes is None else
               "explicit residual (one more pass over slabs, float64)")  # fmt: skip
    err_sq = max(err_sq, 0.0)
    err = math.sqrt(err_sq / norm_sq)
    steps = sorted(steps, key=lambda s: s["bond"])
    tail_sum = sum(s["discarded_energy"] for s in steps)
    capped = [s["bond"] for s in steps if s["rank"] < s["tol_rank"]]
    if tol is not None and capped:
        warnings.append(
            f"max_rank capped bond(s) {capped} below the rank the tol rule needs: "
            f"the bound ε = {tol:g} does not hold; achieved error {err:.3g}"
        )
    elif tol is not None and err > tol * (1 + 1e-6) + math.sqrt(gamma / norm_sq):
        warnings.append(f"achieved error {err:.3g} exceeds tol {tol:g} beyond rounding")
    T.resolution_warnings(steps, warnings, "bond")
    ranks = _ranks(cores)
    params = T.tt_parameters(shape, ranks)
    inv = 1.0 / scale
    if scale != 1.0:
        cores[-1] = cores[-1] * wdt.type(inv)
    cores = [np.ascontiguousarray(c, dtype=wdt) for c in cores]
    guaranteed = tol is not None and not capped
    metrics = {
        "relative_frobenius_error": err, "error_method": how,
        "error_bounds": _bounds(err_sq, gamma, norm_sq), "norm_fro": math.sqrt(norm_sq) * inv,
        "a_priori_error_bound": tol if guaranteed else math.sqrt(tail_sum / norm_sq),
        "a_priori_kind": ("guaranteed by the δ = ε‖X‖/√(N−1) rule" if guaranteed else
                          "√(Σ discarded σ²)/‖X‖: the TT-SVD error in exact arithmetic"),
        "tail_sum_error": math.sqrt(tail_sum / norm_sq),
        "tt_ranks": ranks, "n_parameters": params, "compression_ratio": math.prod(shape) / params,
        "bond_singular_values": {str(k + 1): [float(v) * inv for v in s[:REPORT_SPECTRUM]]
                                 for k, s in enumerate(svals)},
        "orthogonality_loss": _left_loss(cores),
    }  # fmt: skip
    details["steps"] = [{k: v for k, v in s.items() if k != "spectrum_sq"} for s in steps]
    details["paths"] = sorted({s["path"] for s in steps})
    given = "tol" if tol is not None else "max_rank"
    rows = []
    if tol is not None:
        rows.append({"rule": "tol", "threshold": tol, "ranks": ranks, "given": True})
    if any(math.isfinite(c) for c in caps):
        rows.append({"rule": "max_rank", "threshold": [int(c) if math.isfinite(c) else None
                                                       for c in caps],
                     "ranks": ranks, "given": True})  # fmt: skip
    rows += _tol_rows(given, tol, norm_sq, err_sq, svals, n_modes)
    rank = {"value": ranks, "rule": "tol+max_rank" if (tol is not None and given and
                                                       any(math.isfinite(c) for c in caps))
            else given, "threshold": tol if tol is not None else rows[0]["threshold"],
            "max_rank": [1] + [int(min(math.prod(shape[:k]), math.prod(shape[k:])))
                               for k in range(1, n_modes)] + [1],
            "clamped": False, "by_rule": rows}  # fmt: skip
    arrays = {f"cores/{k}": c for k, c in enumerate(cores)}
    return Result(
        arrays=arrays,
        method=method,
        method_reason=reason,
        metrics=metrics,
        details=details,
        warnings=tuple(warnings),
        rank=rank,
    )


def _zero(shape, wdt, tol, caps, warnings, details, method) -> Result:
    warnings.append("the tensor is all zeros: the cores are zero (ranks 1)")
    cores = [np.zeros((1, i, 1), dtype=wdt) for i in shape]
    for c in cores[:-1]:
        c[0, 0, 0] = 1.0  # left-orthogonal
    ranks = [1] * (len(shape) + 1)
    params = T.tt_parameters(shape, ranks)
    metrics = {"relative_frobenius_error": 0.0, "error_method": "zero tensor",
               "error_bounds": [0.0, 0.0], "norm_fro": 0.0, "a_priori_error_bound": 0.0,
               "tt_ranks": ranks, "n_parameters": params,
               "compression_ratio": math.prod(shape) / params}  # fmt: skip
    given = "tol" if tol is not None else "max_rank"
    rank = {
        "value": ranks,
        "rule": given,
        "threshold": tol,
        "max_rank": ranks,
        "clamped": False,
        "by_rule": [{"rule": given, "threshold": tol, "ranks": ranks, "given": True}],
    }
    return Result(arrays={f"cores/{k}": c for k, c in enumerate(cores)}, method=method,
                  method_reason="zero tensor", metrics=metrics, details=details,
                  warnings=tuple(warnings), rank=rank, stop_reason="zero tensor")  # fmt: skip


def _scale_warning(warnings, scale):
    e = int(round(math.log2(scale)))
    warnings.append(f"entries of magnitude near 2^{-e} were scaled by 2^{e} (exactly) to keep "
                    "the norms finite; the last core is scaled back")  # fmt: skip


def _precision_warning(warnings, tol, wdt):
    if tol is not None and wdt == np.float32 and tol < 1e3 * _eps(np.float32):
        warnings.append(f"tol = {tol:g} is near float32 precision: the guarantee holds up to "
                        "float32 rounding")  # fmt: skip


def tt_round(cores, *, tol: float | None = None, max_rank=None) -> Result:
    """Round a tensor train (a list of cores, or a dict with ``cores/k`` keys): QR
    orthogonalisation right to left, then truncated SVDs left to right with
    ``δ = ε‖T‖/√(N−1)``, so ``‖T − T'‖ ≤ ε‖T‖`` (when no ``max_rank`` cap binds)."""
    check_parameters(tol=tol, max_rank=max_rank)
    cores, shape, wdt = _check_cores(cores)
    n_modes = len(shape)
    caps = _caps(max_rank, n_modes)
    ranks_in = _ranks(cores)
    warnings: list[str] = []
    scale = power_of_two_scale(max(abs_max(c) for c in cores), wdt)
    if scale != 1.0:  # spread the exact power of two over the cores' product: scale core 0
        cores[0] = cores[0] * wdt.type(scale)
        _scale_warning(warnings, scale)
    cores = _right_orthogonalise(cores)
    norm_sq = T.sq_norm(cores[0])
    details = {"working_dtype": str(wdt), "ranks_in": ranks_in, "scale": scale}
    if norm_sq == 0.0:
        return _zero(shape, wdt, tol, caps, warnings, details, "tt-round")
    delta_sq = None if tol is None else tol**2 * norm_sq / max(1, n_modes - 1)
    _precision_warning(warnings, tol, wdt)
    cores, svals, tails, wants = _lr_sweep(cores, delta_sq, caps)
    err_sq = float(sum(tails))
    err = math.sqrt(err_sq / norm_sq)
    gamma = 10.0 * sum(shape) * max(ranks_in) * _eps(wdt) * norm_sq
    ranks = _ranks(cores)
    capped = [k + 1 for k, (r, w) in enumerate(zip(ranks[1:-1], wants, strict=True)) if r < w]
    if tol is not None and capped:
        warnings.append(f"max_rank capped bond(s) {capped} below the rank the tol rule needs: "
                        f"the bound ε = {tol:g} does not hold; error {err:.3g}")  # fmt: skip
    inv = 1.0 / scale
    if scale != 1.0:
        cores[-1] = cores[-1] * wdt.type(inv)
    cores = [np.ascontiguousarray(c, dtype=wdt) for c in cores]
    params = T.tt_parameters(shape, ranks)
    guaranteed = tol is not None and not capped
    metrics = {
        "relative_frobenius_error": err,
        "error_method": "Σ of the discarded squared singular values (exact: the discarded parts "
                        "are orthogonal), relative to ‖T‖",
        "error_bounds": _bounds(err_sq, gamma, norm_sq), "norm_fro": math.sqrt(norm_sq) * inv,
        "a_priori_error_bound": tol if guaranteed else err,
        "tt_ranks": ranks, "tt_ranks_in": ranks_in, "n_parameters": params,
        "compression_ratio": math.prod(shape) / params,
        "bond_singular_values": {str(k + 1): [float(v) * inv for v in s[:REPORT_SPECTRUM]]
                                 for k, s in enumerate(svals)},
        "orthogonality_loss": _left_loss(cores),
    }  # fmt: skip
    given = "tol" if tol is not None else "max_rank"
    rows = [{"rule": given, "threshold": tol if tol is not None else
             [int(c) if math.isfinite(c) else None for c in caps], "ranks": ranks,
             "given": True}]  # fmt: skip
    rows += _tol_rows(given, tol, norm_sq, err_sq, svals, n_modes)
    rank = {"value": ranks, "rule": given, "threshold": rows[0]["threshold"],
            "max_rank": ranks_in, "clamped": False, "by_rule": rows}  # fmt: skip
    return Result(
        arrays={f"cores/{k}": c for k, c in enumerate(cores)},
        method="tt-round",
        method_reason="QR right-to-left, truncated SVD left-to-right (Oseledets)",
        metrics=metrics,
        details=details,
        warnings=tuple(warnings),
        rank=rank,
    )


# --- streaming ---------------------------------------------------------------------------------


def _project_slab(blk, shape, vts: dict, lowest: int):
    """Apply the bond projections V_k (k = N-1 … lowest) to a slab (rows along axis 0)."""
    c = blk
    r_next = 1
    for k in range(len(shape) - 1, lowest - 1, -1):
        vt = vts[k]
        c = c.reshape(-1, shape[k] * r_next) @ vt.T
        r_next = vt.shape[0]
    return c, r_next


def _streaming(src, shape, dtype, wdt, tol, caps, max_memory, chunk_rows, svd, warnings,
               hook) -> Result:  # fmt: skip
    n_modes = len(shape)
    item = max(np.dtype(dtype).itemsize, wdt.itemsize)
    rows = T.stream_rows(shape, item, max_memory, chunk_rows)
    row = math.prod(shape[1:])
    slab_bytes = 3 * rows * row * np.dtype(dtype).itemsize + 2 * rows * row * wdt.itemsize
    gram_last = shape[-1] ** 2 * 8
    if max_memory is not None and slab_bytes + gram_last > max_memory:
        raise BudgetError(f"streamed tt needs about {T.human(slab_bytes + gram_last)} (slabs of "
                          f"{rows} rows and the {shape[-1]}×{shape[-1]} Gram) but the memory "
                          f"budget is {T.human(max_memory)}")  # fmt: skip
    pass_seconds: list[float] = []
    bytes_read = 0

    def slabs(scale, first=False):
        nonlocal bytes_read
        for start, raw in T.iter_slabs(src, rows, prefetch=True, hook=hook if first else None):
            blk = np.asarray(raw)
            bytes_read += blk.nbytes
            if first:
                T.check_finite_tensor(blk, method="tt")
            blk = np.ascontiguousarray(blk, dtype=wdt)
            if scale != 1.0:
                blk = blk * wdt.type(scale)
            yield start, blk

    def tsqr_for(n: int) -> bool:
        return svd == "svd" or (svd == "auto" and T.svd_needed(tol, n_modes - 1, n))

    def gram_pass(scale, vts, lowest, first=False):
        """One pass: the Gram (or, for small tolerances, the TSQR R factor) of the unfolding
        at bond ``lowest - 1`` after projecting the bonds ≥ lowest; ‖X‖² and max|X| on the
        first pass."""
        t0 = time.perf_counter()
        k = lowest - 1
        r_low = 1 if lowest == n_modes else vts[lowest].shape[0]
        n = shape[k] * r_low
        acc = T.StreamingR(n) if tsqr_for(n) else None
        g = None
        norm_sq, amax = 0.0, 0.0
        for _, blk in slabs(scale, first):
            if first:
                amax = max(amax, abs_max(blk))
                norm_sq += T.sq_norm(blk)
            c, _ = _project_slab(blk, shape, vts, lowest)
            a = c.reshape(-1, n)
            if acc is not None:
                acc.add(a)
            else:
                g = T.mode_gram(a, 1, out=g)
        pass_seconds.append(time.perf_counter() - t0)
        if acc is not None:
            lam, vec = acc.eig()
            how = f"SVD of the {n}×{n} R factor accumulated over slabs (TSQR)"
        else:
            lam, vec = T.gram_eig(g)
            how = f"eigh of the {n}×{n} Gram AᵀA summed over slabs"
        return (lam, vec, how), norm_sq, amax

    vts: dict[int, np.ndarray] = {}
    steps = []
    eig, norm_sq, amax = gram_pass(1.0, vts, n_modes, first=True)
    scale = power_of_two_scale(amax, wdt)
    if scale != 1.0:
        eig, norm_sq, _ = gram_pass(scale, vts, n_modes, first=False)
        _scale_warning(warnings, scale)
    details = {"working_dtype": str(wdt), "streaming": True, "slab_rows": int(rows),
               "svd_path": svd, "scale": scale,
               "sweep": "right-to-left TT-SVD (Grams summed over slabs until the projected "
                        "tensor fits), then a left-to-right SVD sweep"}  # fmt: skip
    if norm_sq == 0.0:
        details.update(passes=len(pass_seconds), bytes_read=int(bytes_read))
        return _zero(shape, wdt, tol, caps, warnings, details, "tt-svd-streaming")
    delta_sq = None if tol is None else tol**2 * norm_sq / max(1, n_modes - 1)
    _precision_warning(warnings, tol, wdt)
    budget_left = None if max_memory is None else GATHER_SHARE * (max_memory - slab_bytes)
    k = n_modes - 1
    r_next = 1
    while True:
        # bond k from the (I_0…I_{k-1}) × (I_k r_{k+1}) unfolding's Gram or R factor
        lam, vec, how = eig
        n = vec.shape[0]
        lam = lam[: min(math.prod(shape[:k]), n)]
        r, want = _choose(lam, delta_sq, caps[k - 1])
        if ("Gram" in how and delta_sq is not None and lam[0] > 0
                and delta_sq < T.RESOLVE_MARGIN * T.gram_resolution(lam[0], n)):  # fmt: skip
            warnings.append(f"bond {k}: the tol threshold is below what the summed Gram "
                            "resolves; the rank decision is limited by rounding")  # fmt: skip
        vts[k] = np.ascontiguousarray(vec[:, :r].T, dtype=wdt)
        steps.append(_step(k, r, want, lam, how, "streamed"))
        r_next = r
        k -= 1
        carrier = math.prod(shape[: k + 1]) * r_next * wdt.itemsize
        if k == 0 or budget_left is None or carrier <= budget_left:
            break
        eig, _, _ = gram_pass(scale, vts, k + 1)
    if budget_left is not None and carrier > budget_left:
        raise BudgetError(
            f"streamed tt: the projected tensor needs {T.human(carrier)}, more than "
            f"the memory budget allows; use a larger tol or a smaller max_rank"
        )
    # gather the carrier C (I_0 … I_k × r_{k+1}) and finish in memory
    t0 = time.perf_counter()
    c = np.empty((*shape[: k + 1], r_next), dtype=wdt)
    for start, blk in slabs(scale):
        proj, _ = _project_slab(blk, shape, vts, k + 1)
        c[start : start + blk.shape[0]] = proj.reshape(blk.shape[0], *c.shape[1:])
    pass_seconds.append(time.perf_counter() - t0)
    core0, right, mem_steps = _rl_sweep(c, shape, k, r_next, delta_sq, caps,
                                        "auto" if svd == "auto" else svd)  # fmt: skip
    del c
    cores = [core0] + [right[j] for j in range(1, k + 1)]
    for j in range(k + 1, n_modes):
        rj1 = vts[j + 1].shape[0] if j + 1 < n_modes else 1
        cores.append(vts[j].reshape(vts[j].shape[0], shape[j], rj1))
    reason = (f"streamed TT-SVD from the last mode: {len(vts)} bond(s) from Grams summed over "
              f"slabs of {rows} rows, the rest in memory")  # fmt: skip
    scaled = T.ScaledSlabs(src, scale, wdt) if scale != 1.0 else src
    res = _finish(cores, steps + mem_steps, shape, wdt, norm_sq, tol, caps, warnings, details,
                  scale, "tt-svd-streaming", reason,
                  residual=lambda cs: T.residual_sq(
                      scaled, lambda s0, s1: T.tt_rows(cs, s0, s1), rows=rows),
                  passes=pass_seconds)  # fmt: skip
    res.details.update(passes=len(pass_seconds), bytes_read=int(bytes_read),
                       pass_seconds=[round(t, 4) for t in pass_seconds],
                       streamed_bonds=sorted(vts))  # fmt: skip
    return res


def tt_to_tensor(cores, dtype=np.float64) -> np.ndarray:
    """Dense tensor of a TT (small tensors and tests)."""
    if isinstance(cores, dict):
        cores = [cores[f"cores/{k}"] for k in range(len(cores))]
    return T.tt_to_dense(cores, dtype)


__all__ = ["tt", "tt_round", "tt_to_tensor", "check_parameters", "estimate_bytes", "SVD_PATHS"]
