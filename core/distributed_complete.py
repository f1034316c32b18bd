"""Matrix completion on the Dask engine: alternating minimisation with exact row-wise solves
(:func:`rankwise.core.complete_matrix.altmin`, ``solver="exact"``), by row blocks.

The input is a dense matrix whose NaN entries are missing, in row blocks (one actor each,
:mod:`rankwise.core.dask_blocks`). In the first pass every block extracts its observed entries
(in C order, as the local engine's :func:`~rankwise.core.complete.observations`) and keeps
them; the blocks' rows of ``A`` live with them, ``B`` (n×k) on the client. A sweep is the
local one:

* the A step is row-block parallel: each block solves its rows' k×k normal equations against
  ``B`` with the local engine's batched solver (:class:`~rankwise.core.complete.Groups`,
  :func:`~rankwise.core.complete.solve_spd`) — the same arithmetic, row by row;
* the B step needs every column's entries: each block forms its part of every column's normal
  equations (``Σ a_r a_rᵀ`` and ``Σ a_r x_rj`` over its entries of column j, batched the same
  way), the parts are summed on the client, which solves the n systems;
* the re-balancing takes ``A``'s R factor by a tree QR (block QRs on the workers, the stacked
  R's on the client; signs fixed so that R's diagonal is positive, as CholeskyQR2's), and the
  blocks apply the k×k result; the residual, the objective and the held-out error of the
  iterate are sums over the blocks.

The hold-out split draws the same entries as the local engine (one ``rng.choice`` over the
C-ordered observed entries, split by the blocks' offsets), the spectral initialisation runs
the same randomized subspace iteration with the same draws, and the baseline is the same
alternating bias fit, its column sums added over the blocks. What differs is the order of
floating-point sums across blocks and the QR method, so the iterates agree to rounding (up to
the signs of the components, which the output convention fixes).

Memory: the workers keep the observed entries (~20 bytes each, plus the solver's index groups);
per sweep the client receives each block's n×k×(k+1) part of the column equations.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .complete import (
    BASELINE_MAX_PASSES,
    BASELINE_REG,
    BASELINE_TOL,
    OVERSAMPLE,
    Groups,
    check_clip,
    check_parameters,
    rowdot,
    solve_spd,
)
from .complete_matrix import POWER_ITERS, REG_DEFAULT
from .dask_blocks import RowBlocks, add_all
from .errors import BudgetError, DataError, ParameterError
from .errors import human_bytes as _human
from .linalg import orthogonality_loss, qr_tall, svd_flip, tall_svd, thin_svd
from .loop import run_loop
from .result import Result
from .validate import working_dtype

# Bytes a worker keeps per observed entry: row and column index, value, index groups.
ENTRY_BYTES = 40


# --- block steps (run by the actors) ------------------------------------------------------------


def _entries(raw, wdt) -> dict:
    """The observed entries of a block (C order), values in the working dtype then float64."""
    x = np.asarray(raw)
    seen = ~np.isnan(x) if x.dtype.kind in "fc" else np.ones(x.shape, dtype=bool)
    r, c = np.nonzero(seen)
    return {"all": (r.astype(np.intp), c.astype(np.intp),
                    np.asarray(x[seen], dtype=wdt).astype(np.float64))}  # fmt: skip


def _stats(raw) -> dict:
    x = np.asarray(raw)
    inf = int(np.count_nonzero(np.isinf(x))) if x.dtype.kind in "fc" else 0
    seen = ~np.isnan(x) if x.dtype.kind in "fc" else np.ones(x.shape, dtype=bool)
    return {"inf": inf, "nnz": int(np.count_nonzero(seen))}


def _split(x, state, picked, nrows: int, n: int, k: int):
    """Training and test entries (``picked``: positions of test entries in this block), the
    row groups of the A step and the column groups of this block's part of the B step."""
    r, c, v = state.pop("all")
    test = None
    if picked is not None and picked.size:
        mask = np.zeros(r.shape[0], dtype=bool)
        mask[picked] = True
        test = (r[mask], c[mask], v[mask])
        r, c, v = r[~mask], c[~mask], v[~mask]
    nnz = r.shape[0]
    rcount = np.bincount(r, minlength=nrows)
    ccount = np.bincount(c, minlength=n)
    # the local engine's groups, over the indices that have entries in this block
    present_r, present_c = np.flatnonzero(rcount), np.flatnonzero(ccount)
    rmap = np.zeros(nrows, dtype=np.intp)
    rmap[present_r] = np.arange(present_r.size)
    cmap = np.zeros(n, dtype=np.intp)
    cmap[present_c] = np.arange(present_c.size)
    groups = (Groups(rmap[r], rcount[present_r], nnz, k),
              Groups(cmap[c], ccount[present_c], nnz, k))  # fmt: skip
    st = {"r": r, "c": c, "v": v, "test": test, "nrows": nrows, "n": n, "groups": groups,
          "rows_present": present_r, "cols_present": present_c,
          "vals_ext": np.append(v, 0.0), "c_ext": np.append(c, n),
          "r_ext": np.append(r, nrows)}  # fmt: skip
    tsq = float(test[2] @ test[2]) if test is not None else 0.0
    return st, (
        nnz,
        rcount,
        ccount,
        (groups[0].padded, groups[1].padded),
        float(v @ v),
        float(np.sum(v)),
        tsq,
    )


def _set_a(x, state, a):
    state["a"] = np.ascontiguousarray(a, dtype=np.float64)
    return state, None


def _batched(groups, other_ext, idx_ext, vals_ext):
    """For each chunk of a Groups: (indices, Σ f fᵀ, Σ f x) of its rows' entries (padding
    points at a zero row and a zero value), as the local engine's exact solves form them."""
    for g, pos in groups.chunks:
        f = other_ext[idx_ext[pos]]  # g × L × k
        ft = f.transpose(0, 2, 1)
        yield g, ft @ f, (ft @ vals_ext[pos][:, :, None])[:, :, 0]


def _a_step(x, state, b, lam):
    """This block's rows of A given B (exact row solves), then its part of every column's
    normal equations given the new A."""
    k = b.shape[1]
    a = np.zeros((state["nrows"], k))
    sub = np.empty((state["rows_present"].size, k))
    bext = np.vstack([b, np.zeros((1, k))])
    for g, gram, rhs in _batched(state["groups"][0], bext, state["c_ext"], state["vals_ext"]):
        sub[g] = solve_spd(gram, rhs, lam)
    a[state["rows_present"]] = sub
    state["a"] = a
    n = state["n"]
    gram_all, rhs_all = np.zeros((n, k, k)), np.zeros((n, k))
    aext = np.vstack([a, np.zeros((1, k))])
    cols = state["cols_present"]
    for g, gram, rhs in _batched(state["groups"][1], aext, state["r_ext"], state["vals_ext"]):
        gram_all[cols[g]] = gram
        rhs_all[cols[g]] = rhs
    return state, (gram_all, rhs_all)


def _qr(x, state, key):
    """Householder QR of this block's rows of ``state[key]``: Q kept, R returned."""
    import scipy.linalg as sla

    q, r = sla.qr(state[key], mode="economic", check_finite=False)
    state["_q"] = q
    return state, r


def _apply_q(x, state, m, key, scale):
    """``state[key] ← Q·m`` (this block's Q of the tree QR) and, with ``scale``, also
    ``state["a"] ← Q·m·diag(scale)``."""
    u = state.pop("_q") @ m
    state[key] = u
    if scale is not None:
        state["a"] = u * scale
    return state, None


def _sums(x, state, b):
    """Σ residual², ‖A_i‖² and Σ (test error)² of the iterate A Bᵀ."""
    a = state["a"]
    resid = state["v"] - rowdot(a, b, state["r"], state["c"])
    tsq = 0.0
    t = state["test"]
    if t is not None:
        d = rowdot(a, b, t[0], t[1]) - t[2]
        tsq = float(d @ d)
    return state, (float(resid @ resid), float(np.sum(a * a)), tsq)


def _omega(state):
    import scipy.sparse as sp

    return sp.csr_array((state["v"], (state["r"], state["c"])),
                        shape=(state["nrows"], state["n"]))  # fmt: skip


def _mm(x, state, f, key):
    """``state[key] ← P_Ω(X_i)·f``."""
    state[key] = np.asarray(_omega(state) @ f)
    return state, None


def _rmm(x, state, key):
    """This block's part of P_Ω(X)ᵀ·state[key] (n × ·)."""
    return state, np.asarray(_omega(state).T @ state[key])


def _fit_scale(x, state, uz, s, v):
    """Σ fit·x and Σ fit² of the model (Q·uz)·diag(s)·vᵀ on the entries."""
    fit = rowdot((state["q"] @ uz) * s, v, state["r"], state["c"])
    return state, (float(fit @ state["v"]), float(fit @ fit))


def _a_from_q(x, state, m):
    state["a"] = state.pop("q") @ m
    return state, None


def _get(x, state, key):
    return state, state[key]


def _errors_sums(x, state, us, b, clip, part):
    """Σ d², Σ|d|, Σ t², n of the model (this block's rows ``us``, columns ``b``) on the
    training or test entries."""
    r, c, v = (state["r"], state["c"], state["v"]) if part == "train" else state["test"]
    p = rowdot(us, b, r, c)
    if clip is not None:
        np.clip(p, clip[0], clip[1], out=p)
    d = p - v
    return state, (float(d @ d), float(np.sum(np.abs(d))), float(v @ v), int(v.shape[0]))


# baseline: core.complete.fit_baseline with its column sums added over the blocks


def _base_start(x, state, mu, reg):
    state["b_resid"] = state["v"] - mu
    state["b_rows"] = np.zeros(state["nrows"])
    state["b_den"] = np.bincount(state["r"], minlength=state["nrows"]) + reg
    return state, None


def _base_pass(x, state, col):
    """One pass: the previous column update applied, the row biases updated, the column
    biases taken out again and this block's column sums for their update returned (the
    local engine's operations on each residual, in its order)."""
    r, c = state["r"], state["c"]
    resid = state["b_resid"]
    if col is not None:
        resid -= col[c]
    old = state["b_rows"]
    resid += old[r]
    den = state["b_den"]
    new = np.divide(np.bincount(r, weights=resid, minlength=old.shape[0]), den,
                    out=np.zeros(old.shape[0]), where=den > 0)  # fmt: skip
    moved = float(np.max(np.abs(new - old), initial=0.0))
    scale = float(np.max(np.abs(new), initial=0.0))
    state["b_rows"] = new
    resid -= new[r]
    if col is not None:
        resid += col[c]
    return state, (moved, scale, np.bincount(c, weights=resid, minlength=state["n"]))


def _base_errors(x, state, mu, col, clip, part):
    r, c, v = (state["r"], state["c"], state["v"]) if part == "train" else state["test"]
    p = np.full(v.shape[0], mu)
    p += state["b_rows"][r]
    p += col[c]
    if clip is not None:
        np.clip(p, clip[0], clip[1], out=p)
    d = p - v
    return state, (float(d @ d), float(np.sum(np.abs(d))), float(v @ v), int(v.shape[0]))


# --- client side ---------------------------------------------------------------------------------


def _errors(sums) -> dict:
    """:func:`rankwise.core.complete.errors` from the blocks' sums."""
    sq, ab, tt, n = sums
    norm = math.sqrt(tt)
    rel = math.sqrt(sq) / norm if norm > 0 else (0.0 if sq == 0 else math.inf)
    return {"n": int(n), "rmse": math.sqrt(sq / n) if n else 0.0,
            "mae": ab / n if n else 0.0, "relative_error": rel}  # fmt: skip


def _baseline(blocks: RowBlocks, mu: float, col_counts, clip, with_test: bool) -> dict:
    """:func:`rankwise.core.complete.fit_baseline` and its errors, on the blocks."""
    reg = BASELINE_REG
    den = col_counts + reg
    blocks.step(_base_start, mu, reg, data=False)
    col, passes = None, 0
    while passes < BASELINE_MAX_PASSES:
        passes += 1
        parts = blocks.step(_base_pass, col, data=False)
        moved = max(p[0] for p in parts)
        scale = max(p[1] for p in parts)
        old = col if col is not None else np.zeros(col_counts.shape[0])
        new = np.divide(add_all([p[2] for p in parts]), den, out=np.zeros(den.shape[0]),
                        where=den > 0)  # fmt: skip
        moved = max(moved, float(np.max(np.abs(new - old), initial=0.0)))
        scale = max(scale, float(np.max(np.abs(new), initial=0.0)))
        col = new
        if moved <= BASELINE_TOL * max(scale, abs(mu), 1e-300):
            break
    out = {"reg": float(reg), "passes": passes, "mean": mu,
           "train": _errors(add_all(blocks.step(_base_errors, mu, col, clip, "train",
                                                 data=False)))}  # fmt: skip
    if with_test:
        out["test"] = _errors(add_all(blocks.step(_base_errors, mu, col, clip, "test",
                                                   data=False)))  # fmt: skip
    return out


class _Tree:
    """Tree QR of a factor kept in the blocks (state key ``key``): block QRs on the workers,
    the QR of the stacked R's on the client, its diagonal made positive (as CholeskyQR2's)."""

    def __init__(self, blocks: RowBlocks):
        self.b = blocks

    def qr(self, key: str):
        """(R, the blocks' parts of the combining Q)."""
        import scipy.linalg as sla

        rs = self.b.step(_qr, key, data=False)
        q2, r = sla.qr(np.vstack(rs), mode="economic", check_finite=False)
        d = np.sign(np.diag(r))
        d[d == 0] = 1.0
        r, q2 = r * d[:, None], q2 * d
        ends = np.cumsum([ri.shape[0] for ri in rs])
        return r, np.split(q2, ends[:-1])

    def apply(self, key: str, parts, m, scale=None) -> None:
        """``state[key] ← Q·m`` in every block (with ``scale``: A ← Q·m·diag(scale))."""
        self.b.step(_apply_q, key, scale, per_block=[(p @ m,) for p in parts], data=False)


def _orth_kept(y, keep):
    """Orthonormal basis of the kept rows of ``y`` (others zero), as the local ``orth``."""
    from .linalg import orth

    out = np.zeros_like(y)
    out[keep] = orth(np.ascontiguousarray(y[keep]))
    return out


def altmin(a, rank: int, *, reg: float | None = None, tol: float = 1e-7, max_iter: int = 300,
           init: str = "auto", holdout: float | None = None, clip=None, rng=None, callback=None,
           max_memory: int | None = None, also=None, on_first_pass=None) -> Result:  # fmt: skip
    """Alternating minimisation with exact row solves of the dask array ``a`` (a dense matrix,
    NaN = missing, in row blocks holding every column) on the current Dask client; parameters
    and result as :func:`rankwise.core.complete_matrix.altmin` with ``solver="exact"``
    (``rng``: a seed or Generator). ``max_memory`` bounds what the client holds. ``also``: a
    dask array over the same chunks computed in the first pass, handed to
    ``on_first_pass``."""
    check_parameters(method="altmin", rank=rank, reg=reg, tol=tol, max_iter=max_iter,
                     solver="exact", init=init, holdout=holdout, clip=clip)  # fmt: skip
    clip = check_clip(clip)
    seed = int(rng) if isinstance(rng, (int, np.integer)) else None
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if a.ndim != 2:
        raise DataError(f"altmin needs a matrix; got {a.ndim}-D shape {tuple(a.shape)}")
    if 0 in a.shape:
        raise DataError(f"altmin needs a non-empty array; got shape {tuple(a.shape)}")
    if len(a.chunks[1]) != 1:
        raise ParameterError("the dask altmin needs row blocks holding every column")
    wdt = working_dtype(np.dtype(a.dtype), method="altmin")
    m, n = (int(v) for v in a.shape)
    k = int(rank)
    kw = min(k, m, n)  # the groups' width (their chunk sizes only)
    client_bytes = 2 * n * kw * (kw + 1) * 8 + 12 * (m + n) * kw * 8
    if max_memory is not None and client_bytes > max_memory:
        raise BudgetError(f"the dask altmin needs about {_human(client_bytes)} on the client "
                          "(the column equations, n×k×(k+1), and the factors) but the memory "
                          f"budget is {_human(max_memory)}")  # fmt: skip
    blocks = RowBlocks(a, np.asarray, also=also, persist=False)
    t0 = time.perf_counter()
    stats, extra = blocks.first_pass(_stats, keep=lambda raw: _entries(raw, wdt))
    blocks.stages[-1]["stage"] = "observed entries (kept on the workers)"
    inf = sum(st["inf"] for st in stats)
    if inf:
        raise DataError(f"input holds {inf} infinite value{'s' if inf > 1 else ''}; altmin "
                        "needs finite observed values (NaN marks a missing entry)")  # fmt: skip
    counts = [st["nnz"] for st in stats]
    nnz = sum(counts)
    if nnz == 0:
        raise DataError("every entry of the input is NaN (missing); altmin needs observed "
                        "entries")  # fmt: skip
    if on_first_pass is not None:
        on_first_pass(extra)
    limit = blocks.worker_memory()
    if limit and nnz * ENTRY_BYTES > 0.8 * limit:
        raise BudgetError(
            f"the {nnz} observed entries need about {_human(nnz * ENTRY_BYTES)} "
            f"on the workers, more than they have ({_human(limit)} in all)"
        )
    # the hold-out split: the local engine's draw over the C-ordered entries
    split, n_test = None, 0
    picked_by_block = [None] * len(blocks)
    if holdout is not None:
        n_test = int(round(float(holdout) * nnz))
        if n_test < 1 or n_test > nnz - 1:
            raise DataError(f"a hold-out fraction of {float(holdout):g} of {nnz} observed "
                            f"entries leaves {n_test} test and {nnz - n_test} training "
                            "entries; both need at least one")  # fmt: skip
        picked = np.sort(rng.choice(nnz, size=n_test, replace=False, shuffle=False))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        cuts = np.searchsorted(picked, offsets)
        picked_by_block = [picked[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(blocks))]
        split = {"seed": None, "fraction": float(holdout), "n_train": nnz - n_test,
                 "n_test": n_test}  # fmt: skip
    per = [(picked_by_block[i], e - s) for i, (s, e) in enumerate(blocks.row_ranges())]
    parts = blocks.step(_split, n, kw, per_block=per, data=False)
    n_train = sum(p[0] for p in parts)
    row_counts = np.concatenate([p[1] for p in parts])
    col_counts = add_all([p[2] for p in parts])
    padded = [sum(p[3][0] for p in parts), sum(p[3][1] for p in parts)]
    norm_sq = sum(p[4] for p in parts)
    mu = sum(p[5] for p in parts) / n_train
    test_norm = math.sqrt(sum(p[6] for p in parts))
    keep_r, keep_c = row_counts > 0, col_counts > 0
    m_kept, n_kept = int(np.count_nonzero(keep_r)), int(np.count_nonzero(keep_c))
    warnings: list[str] = []
    if k > min(m_kept, n_kept):
        bound = min(m_kept, n_kept)
        warnings.append(f"rank {k} exceeds min(observed rows, observed columns) = {bound}; "
                        f"clamped to {bound}")  # fmt: skip
        k = bound
    er, ec = m - m_kept, n - n_kept
    if er or ec:
        warnings.append(f"{er} row(s) and {ec} column(s) have no training entry: their rows of "
                        "U / columns of Vt are zero (the model predicts 0 there)")  # fmt: skip
    if norm_sq == 0.0:
        raise DataError("every observed value is 0, so the model is 0; the local engine "
                        "returns it")  # fmt: skip
    details = {"init": "spectral" if init == "auto" else init, "working_dtype": str(wdt),
               "compute_dtype": "float64", "estimate_bytes": int(client_bytes),
               "source": "dense", "seed": seed, "blas_threads": 1, "solver": "altmin-exact",
               "engine": "dask", "blocks": len(blocks), "block_rows": int(a.chunks[0][0]),
               "cost_per_sweep": "row solves O(|Ω|k²) and the column equations' parts on the "
                                 "workers, n k×k solves on the client, a tree QR: 4 steps "
                                 "on the blocks"}  # fmt: skip
    reason = ("alternating minimisation with exact row-wise k×k solves (batched); dask engine: "
              f"A in {len(blocks)} row blocks on the workers (row solves there), the column "
              "equations summed over the blocks and solved on the client")  # fmt: skip
    tree = _Tree(blocks)

    def embed_cols(f):
        out = np.zeros((n, f.shape[1]))
        out[keep_c] = f
        return out

    # --- λ and the initialisation: complete_matrix._lambda and _leading on the blocks
    t1 = time.perf_counter()
    init_used = details["init"]
    trip, lmax = None, math.nan
    if init_used == "spectral" or reg is None:
        ell = min(k + OVERSAMPLE, m_kept, n_kept)
        blocks.step(_mm, embed_cols(rng.standard_normal((n_kept, ell))), "q", data=False)
        _, qp = tree.qr("q")
        tree.apply("q", qp, np.eye(ell))
        for _ in range(POWER_ITERS):
            z = _orth_kept(add_all(blocks.step(_rmm, "q", data=False)), keep_c)
            blocks.step(_mm, z, "q", data=False)
            _, qp = tree.qr("q")
            tree.apply("q", qp, np.eye(ell))
        w = add_all(blocks.step(_rmm, "q", data=False))[keep_c]
        v_k, sv, zt, _ = tall_svd(w)
        lmax = float(sv[0]) if sv.size else 0.0
        uz = np.ascontiguousarray(zt.T[:, :k])
        sv = sv[:k] / (n_train / (m_kept * n_kept))
        v0 = embed_cols(v_k[:, :k])
        # Σ/p̂ overestimates the scale when sampling is sparse: least squares on Ω fixes it
        num, den = add_all(blocks.step(_fit_scale, uz, sv, v0, data=False))
        if num > 0 and den > 0:
            sv = sv * (num / den)
        trip = (uz, sv, v0)  # U = Q·uz, Q still in the blocks
    lam = float(reg) if reg is not None else REG_DEFAULT * lmax
    details.update({"reg": lam, "reg_rule": "given" if reg is not None else
                    f"{REG_DEFAULT:g}·λ_max",
                    "lambda_max": lmax if math.isfinite(lmax) else None})  # fmt: skip
    if init_used == "spectral":
        rs = np.sqrt(trip[1])
        blocks.step(_a_from_q, trip[0] * rs, data=False)
        b = trip[2] * rs
    else:  # Gaussian factors whose product has the data's scale
        sd = math.sqrt(math.sqrt(norm_sq / n_train) / math.sqrt(k))
        a0 = np.zeros((m, k))
        a0[keep_r] = rng.standard_normal((m_kept, k)) * sd
        b = embed_cols(rng.standard_normal((n_kept, k)) * sd)
        blocks.step(_set_a, per_block=[(a0[lo:hi],) for lo, hi in blocks.row_ranges()],
                    data=False)  # fmt: skip
    blocks.stage(f"initialisation ({init_used})", t1, False)

    def balance(b):
        """complete_matrix._balance on the blocks: (B, S, V); U's rows stay there."""
        ra, qa = tree.qr("a")
        qb, rb, _ = qr_tall(b)
        us, sv, vt, _ = thin_svd(ra @ rb.T)
        v = qb @ vt.T
        rs = np.sqrt(sv)
        tree.apply("u", qa, us, scale=rs)
        return v * rs, sv, v

    def objective(b):
        sq, asq, tsq = add_all(blocks.step(_sums, b, data=False))
        return 0.5 * sq + 0.5 * lam * (asq + float(np.sum(b * b))), sq, tsq

    cur = dict(zip(("b", "s", "v"), balance(b), strict=True))
    obj0 = objective(cur["b"])[0]

    def sweep(it):
        gram, rhs = add_all(blocks.step(_a_step, cur["b"], lam, data=False))
        cur["b"], cur["s"], cur["v"] = balance(solve_spd(gram, rhs, lam))
        obj, sq, tsq = objective(cur["b"])
        extras = {"rmse": math.sqrt(sq / n_train)}
        if split is not None:
            extras.update(test_rmse=math.sqrt(tsq / n_test),
                          test_relative_error=math.sqrt(tsq) / test_norm if test_norm > 0
                          else 0.0)  # fmt: skip
        return obj, extras

    t2 = time.perf_counter()
    rounds0 = blocks.rounds
    loop = run_loop(sweep, tol=float(tol), max_iter=int(max_iter), callback=callback,
                    initial_objective=obj0)  # fmt: skip
    blocks.stage(f"altmin: {loop.iterations} sweep(s), {blocks.rounds - rounds0} steps on the "
                 "blocks", t2, False)  # fmt: skip
    details.update(iterations=loop.iterations, padded_entries=padded)
    # --- the result: complete_matrix._finish with sums over the blocks
    t3 = time.perf_counter()
    u = np.concatenate(blocks.step(_get, "u", data=False), axis=0)
    u, vt = svd_flip(np.ascontiguousarray(u), np.ascontiguousarray(cur["v"].T))
    arrays = {"U": u.astype(wdt), "S": np.ascontiguousarray(cur["s"]).astype(wdt),
              "Vt": vt.astype(wdt)}  # fmt: skip
    s64 = arrays["S"].astype(np.float64)
    us = np.asarray(arrays["U"], np.float64) * s64
    vv = np.ascontiguousarray(np.asarray(arrays["Vt"], np.float64).T)
    rows = [(us[lo:hi],) for lo, hi in blocks.row_ranges()]

    def model_errors(cl, part):
        return add_all(blocks.step(_errors_sums, vv, cl, part, per_block=rows, data=False))

    metrics = {"train": _errors(model_errors(clip, "train"))}
    metrics["baseline"] = _baseline(blocks, mu, col_counts, clip, split is not None)
    if split is not None:
        metrics["test"] = _errors(model_errors(clip, "test"))
    metrics.update({
        "objective": 0.5 * model_errors(None, "train")[0] + lam * float(np.sum(s64)),
        "reg": lam, "lambda_max": details["lambda_max"],
        "n_observed": n_train + n_test, "n_train": n_train, "n_test": n_test,
        "observed_fraction": (n_train + n_test) / (m * n),
        "empty_rows": er, "empty_cols": ec, "holdout": split,
        "clip": list(clip) if clip is not None else None,
        "orthogonality_loss": max(orthogonality_loss(arrays["U"]),
                                  orthogonality_loss(arrays["Vt"].T)),
        "n_parameters": int(k * (m + n + 1)),
    })  # fmt: skip
    blocks.stage("metrics and baseline", t3, False)
    r_eff = int(np.count_nonzero(s64 > 0))
    if r_eff < k:
        warnings.append(f"{k - r_eff} of {k} singular values are 0 at λ = {lam:.3g} "
                        "(returned last, with orthonormal vectors)")  # fmt: skip
    details.update(stages=blocks.stages, rounds=blocks.rounds,
                   setup_seconds=round(t1 - t0, 4))  # fmt: skip
    rank_info = {"value": r_eff, "rule": "rank", "threshold": int(rank),
                 "max_rank": int(min(m, n)), "clamped": bool(k < int(rank))}  # fmt: skip
    return Result(arrays=arrays, method="altmin", method_reason=reason, metrics=metrics,
                  details=details, history=loop.history, converged=loop.converged,
                  stop_reason=loop.stop_reason, warnings=tuple(warnings),
                  rank=rank_info)  # fmt: skip


__all__ = ["altmin"]
