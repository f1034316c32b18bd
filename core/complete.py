"""Matrix and tensor completion: a low-rank model fitted to the observed entries only, at a
cost that grows with the number of observed entries |Ω|, never with the full size.

The solvers live in :mod:`rankwise.core.complete_matrix` (``softimpute``, ``altmin``) and
:mod:`rankwise.core.complete_tensor` (``cp_complete``); they are re-exported here, with the
dispatcher :func:`complete`. This module holds what they share: the observed-entry
representation, the hold-out split, the bias baseline, evaluation, prediction and memory
estimates.

Observed entries
----------------
:func:`observations` turns every accepted input into one form, :class:`Observed`: one index
array per mode (``int64``), the values (working dtype) and the shape, sorted in C order
(row-major) with no repeated position.

* a dense array (matrix or tensor): NaN marks a missing entry; ±Inf is a data error;
* a SciPy sparse matrix: the *stored* entries are the observed ones, explicit zeros included
  (an observed 0); the others are missing. It is read through its COO triplets and never
  densified. A stored NaN is a data error (it cannot mark a missing entry there);
* a COO triple ``(indices, values, shape)``: ``indices`` one integer array per mode (or an
  N × nnz array), for tensors of any order.

Checks, each a :class:`DataError` with a one-line message: an empty shape or order < 2; no
observed entry; an index outside ``[0, I_n)``; a non-finite observed value; and a position
stored more than once. Duplicates are refused rather than summed (SciPy's convention) or
averaged: in completion the values are measurements (ratings), and neither sum nor mean is
right for every source — the message gives their count so the user can resolve them upstream.

A row, column or slice with no observed entry carries no information about its factor row.
The solvers drop it from the problem and return that factor row as exact zeros: the model
(which has no bias term) predicts 0 there. ``metrics["empty"]`` counts them per mode and a
warning says how many there are; the bias baseline predicts the global mean plus the other
modes' biases for them. For softImpute this is also the exact optimum (zeroing an unobserved
row never increases the nuclear norm).

Hold-out and evaluation
-----------------------
:func:`holdout_split` draws ``round(fraction·|Ω|)`` observed entries (without replacement,
from the one ``numpy.random.Generator``) as the test set; the same seed gives the same split.
The solvers report, on the training entries and (with a test set) on the held-out ones, the
RMSE, MAE and relative error ``‖x − x̂‖₂/‖x‖₂`` over those entries, next to the same figures
of the baseline: the global mean μ plus one bias per index of each mode, fitted on the
training entries by alternating (Gauss–Seidel) exact minimisation of
``Σ_Ω (x − μ − Σ_n b_n[i_n])² + BASELINE_REG·Σ_n ‖b_n‖²`` with μ fixed at the training mean
(until the biases move by less than ``BASELINE_TOL`` relative, at most ``BASELINE_MAX_PASSES``
passes; on small problems that is the closed-form solution to ~1e-10). With a test set every
history entry also carries ``test_rmse`` and ``test_relative_error`` of the current iterate
(a test entry in a row, column or slice without training entries is predicted 0).
``clip=(lo, hi)`` clips every prediction used in evaluation (model and baseline) and in
:func:`predict` / :func:`completed` when passed there; it is not part of the fit (the
training objective is on the unclipped model).

Prediction and the completed array
----------------------------------
:func:`predict` evaluates a result at given positions in chunks (never the dense array).
:func:`completed_blocks` yields the completed dense array in blocks of leading-mode rows, and
:func:`completed` assembles it after checking :func:`completed_bytes` against the memory
budget (a :class:`BudgetError` naming the size otherwise); with ``observed`` the observed
entries keep their values (softImpute's ``P_Ω(X) + P_Ω⊥(model)``).

Precision and determinism
-------------------------
Values are validated and kept in the working dtype (float32 stays float32, integers become
float64); the solvers work in float64 (their arrays are O(|Ω| + (m+n)k), so the cost is small
next to the accuracy gained) and return arrays in the working dtype. Metrics are computed from
the returned arrays. One ``numpy.random.Generator`` reaches every random step (split,
initialisation): the same input and seed give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import BudgetError, DataError, ParameterError
from .errors import human_bytes as _human
from .validate import count_nonfinite, is_sparse, working_dtype

MATRIX_METHODS = ("softimpute", "altmin")
TENSOR_METHODS = ("cp",)
METHODS = ("auto", *MATRIX_METHODS, *TENSOR_METHODS)
SOLVERS = ("exact", "cg")
INITS = ("auto", "spectral", "random")

# Baseline: ridge on the biases in units of observations (a bias of an index seen c times is
# shrunk by c/(c + BASELINE_REG)), and the alternating passes that fit them.
BASELINE_REG = 5.0
BASELINE_TOL = 1e-10
BASELINE_MAX_PASSES = 50
# Entries per chunk of the sampled products: the two gathered k-column buffers (2 × 8192 × k
# floats, 2.6 MB at k = 20) stay in cache — measured 1.6× faster than 65536 at 4·10⁶ entries.
CHUNK_ENTRIES = 8192
# Blocks of the completed dense array, and of the scan of dense input for observed entries.
BLOCK_BYTES = 16 << 20
_SCAN_BYTES = 16 << 20
# Oversampling of the randomized initialisation (complete_matrix).
OVERSAMPLE = 10
# Padded groups of the row-wise exact solves (see Groups): a chunk takes indices whose counts
# are within GROUP_RATIO (or GROUP_MIN_PAD entries) of its smallest, so padding adds ≈25% to
# the batched products (GROUP_SLACK·nnz positions in all), and its gathered block stays under
# GROUP_BYTES (in cache, and a bounded working set).
GROUP_RATIO = 1.25
GROUP_MIN_PAD = 4
GROUP_SLACK = 1.3
GROUP_BYTES = 4 << 20


# --- observed entries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Observed entries: ``index`` one int64 array per mode, ``values`` (working dtype), in C
    order with no repeated position; ``source`` says what the input was."""

    index: tuple
    values: np.ndarray
    shape: tuple
    source: str = "coo"

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def counts(self, mode: int) -> np.ndarray:
        """Observations per index of ``mode``."""
        return np.bincount(self.index[mode], minlength=self.shape[mode])

    def subset(self, keep: np.ndarray) -> Observed:
        """The entries selected by a boolean mask or sorted positions (order kept)."""
        return Observed(tuple(a[keep] for a in self.index), self.values[keep], self.shape,
                        self.source)  # fmt: skip


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def observations(x, *, method: str = "complete") -> Observed:
    """Normalise a dense array (NaN = missing), a SciPy sparse matrix (stored entries are
    observed) or a COO triple ``(indices, values, shape)`` into :class:`Observed` (see the
    module docstring for the checks). An :class:`Observed` is returned as is."""
    if isinstance(x, Observed):
        return x
    if isinstance(x, tuple) and len(x) == 3 and not isinstance(x[0], (int, np.integer)):
        return _from_coo(*x, method=method, source="coo")
    if is_sparse(x):
        return _from_sparse(x, method=method)
    return _from_dense(np.asarray(x), method=method)


def _check_shape(shape, method: str) -> tuple:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{method}: the shape must be a sequence of integers, "
                        f"got {shape!r}") from exc  # fmt: skip
    if len(shape) < 2:
        raise DataError(f"{method} needs a matrix or a tensor; got {len(shape)}-D shape {shape}")
    if any(s <= 0 for s in shape):
        raise DataError(f"{method} needs a non-empty array; got shape {shape}")
    return shape


def _from_dense(a: np.ndarray, *, method: str) -> Observed:
    shape = _check_shape(a.shape, method)
    wdt = working_dtype(a.dtype, method=method)
    nan, inf = count_nonfinite(a)
    if inf:
        raise DataError(f"input holds {_plural(inf, 'infinite value')}; {method} needs finite "
                        "observed values (NaN marks a missing entry)")  # fmt: skip
    if nan == a.size:
        raise DataError(f"every entry of the input is NaN (missing); {method} needs observed "
                        "entries")  # fmt: skip
    # blocks of leading-mode rows: the masks stay small and the positions come out in C order
    step = max(1, _SCAN_BYTES // max(1, (a.size // shape[0]) * a.itemsize))
    parts = []
    for s in range(0, shape[0], step):
        blk = a[s : s + step]
        seen = ~np.isnan(blk) if a.dtype.kind in "fc" else np.ones(blk.shape, dtype=bool)
        idx = np.nonzero(seen)
        parts.append(((idx[0] + s, *idx[1:]), np.asarray(blk[seen], dtype=wdt)))
    index = tuple(np.concatenate([p[0][n] for p in parts]).astype(np.int64, copy=False)
                  for n in range(len(shape)))  # fmt: skip
    values = np.concatenate([p[1] for p in parts])
    return Observed(index, np.ascontiguousarray(values), shape, "dense")


def _from_sparse(x, *, method: str) -> Observed:
    shape = _check_shape(x.shape, method)
    wdt = working_dtype(x.dtype, method=method)
    coo = x.tocoo()  # keeps explicit zeros and repeated positions; never densifies
    coords = coo.coords if hasattr(coo, "coords") else (coo.row, coo.col)
    vals = np.asarray(coo.data)
    if vals.dtype.kind in "fc":
        nan = int(np.count_nonzero(np.isnan(vals)))
        if nan:
            raise DataError(f"sparse input stores {_plural(nan, 'NaN value')}; in completion "
                            "the stored entries are the observed ones, so NaN cannot mark a "
                            "missing entry: drop those entries")  # fmt: skip
    return _from_coo(coords, vals, shape, method=method, source="sparse", wdt=wdt)


def _from_coo(indices, values, shape, *, method: str, source: str, wdt=None) -> Observed:
    shape = _check_shape(shape, method)
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"{method}: COO values must be 1-D, got shape {values.shape}")
    wdt = working_dtype(values.dtype, method=method) if wdt is None else wdt
    if isinstance(indices, np.ndarray) and indices.ndim == 2:
        indices = tuple(indices)
    indices = tuple(np.asarray(i) for i in indices)
    if len(indices) != len(shape):
        raise DataError(f"{method}: {len(indices)} index arrays for a {len(shape)}-D shape "
                        f"{shape}")  # fmt: skip
    nnz = values.shape[0]
    for n, i in enumerate(indices):
        if i.ndim != 1 or i.shape[0] != nnz:
            raise DataError(f"{method}: index array {n} has shape {i.shape}, expected ({nnz},) "
                            "like the values")  # fmt: skip
        if i.dtype.kind not in "iu":
            raise DataError(f"{method}: index array {n} must hold integers, got {i.dtype}")
    if nnz == 0:
        raise DataError(f"the input has no observed entry; {method} needs data")
    index = []
    for n, i in enumerate(indices):
        i = i.astype(np.int64, copy=False)
        bad = (i < 0) | (i >= shape[n])
        nbad = int(np.count_nonzero(bad))
        if nbad:
            first = int(i[np.argmax(bad)])
            count = _plural(nbad, "entry", "entries")
            raise DataError(f"index out of range: {count} of mode {n} outside [0, {shape[n]}) "
                            f"(e.g. {first})")  # fmt: skip
        index.append(i)
    if values.dtype.kind in "fc":
        nan = int(np.count_nonzero(np.isnan(values)))
        inf = int(np.count_nonzero(np.isinf(values)))
        if nan or inf:
            raise DataError(f"observed values hold {nan} NaN and {inf} infinite value(s); "
                            f"{method} needs finite observed values")  # fmt: skip
    values = np.asarray(values, dtype=wdt)
    index, values = _sorted_unique(index, values, shape, method)
    return Observed(tuple(index), np.ascontiguousarray(values), shape, source)


def _sorted_unique(index, values, shape, method):
    """C-order the entries; refuse repeated positions."""
    if math.prod(shape) < 2**62:
        key = np.ravel_multi_index(tuple(index), shape)
        step = np.diff(key)
        if step.size == 0 or bool(np.all(step > 0)):
            return index, values
        order = np.argsort(key, kind="stable")
        same = np.diff(key[order]) == 0
    else:  # linear positions would overflow int64
        order = np.lexsort(tuple(reversed(index)))
        same = np.ones(order.size - 1, dtype=bool)
        for i in index:
            s = i[order]
            same &= s[1:] == s[:-1]
    extra = int(np.count_nonzero(same))
    if extra:
        where = int(np.count_nonzero(same & ~np.r_[False, same[:-1]]))
        count = _plural(extra, "duplicate entry", "duplicate entries")
        raise DataError(f"the input stores {count} ({_plural(where, 'position')} given more "
                        f"than once); {method} needs each observed entry once: sum, average or "
                        "drop the repeats first")  # fmt: skip
    return [i[order] for i in index], values[order]


def count_observed(x) -> int:
    """Observed entries of an input, without building :class:`Observed` (for budgets)."""
    if isinstance(x, Observed):
        return x.nnz
    if isinstance(x, tuple) and len(x) == 3 and not isinstance(x[0], (int, np.integer)):
        return int(np.shape(x[1])[0]) if np.ndim(x[1]) else 0
    if is_sparse(x):
        return int(x.nnz)
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return int(a.size)
    nan, _ = count_nonfinite(a)
    return int(a.size - nan)


def input_shape(x) -> tuple:
    if isinstance(x, Observed):
        return x.shape
    if isinstance(x, tuple) and len(x) == 3 and not isinstance(x[0], (int, np.integer)):
        return tuple(int(s) for s in x[2])
    return tuple(int(s) for s in x.shape)


# --- hold-out split --------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    train: Observed
    test: Observed
    fraction: float
    seed: int | None  # the seed when one was given (None for a Generator)

    @property
    def n_train(self) -> int:
        return self.train.nnz

    @property
    def n_test(self) -> int:
        return self.test.nnz

    def info(self) -> dict:
        return {"seed": self.seed, "fraction": self.fraction, "n_train": self.n_train,
                "n_test": self.n_test}  # fmt: skip


def as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def holdout_split(obs, fraction: float, rng=None) -> Split:
    """Hold out ``round(fraction·|Ω|)`` observed entries, drawn without replacement by ``rng``
    (a Generator or a seed): deterministic given the seed. Both parts stay in C order."""
    obs = observations(obs)
    try:
        fraction = float(fraction)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"holdout must be a number in (0, 1), got {fraction!r}") from exc
    if not 0.0 < fraction < 1.0:
        raise ParameterError(f"holdout must be in (0, 1), got {fraction}")
    seed = int(rng) if isinstance(rng, (int, np.integer)) else None
    rng = as_rng(rng)
    n_test = int(round(fraction * obs.nnz))
    if n_test < 1 or n_test > obs.nnz - 1:
        raise DataError(f"a hold-out fraction of {fraction:g} of {obs.nnz} observed entries "
                        f"leaves {n_test} test and {obs.nnz - n_test} training entries; both "
                        "need at least one")  # fmt: skip
    picked = rng.choice(obs.nnz, size=n_test, replace=False, shuffle=False)
    mask = np.zeros(obs.nnz, dtype=bool)
    mask[picked] = True
    return Split(obs.subset(~mask), obs.subset(mask), fraction, seed)


# --- baseline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Global mean plus one bias per index of each mode."""

    mean: float
    biases: tuple
    reg: float
    passes: int

    def predict(self, index) -> np.ndarray:
        out = np.full(np.shape(index[0]), self.mean, dtype=np.float64)
        for b, i in zip(self.biases, index, strict=True):
            out += b[i]
        return out


def fit_baseline(obs, *, reg: float = BASELINE_REG) -> Baseline:
    """Fit μ + Σ_n b_n[i_n] to the observed entries (module docstring): μ the mean, each
    mode's biases in turn the exact ridge minimiser given the others, until they settle."""
    obs = observations(obs)
    if not (math.isfinite(reg) and reg >= 0):
        raise ParameterError(f"baseline reg must be finite and ≥ 0, got {reg}")
    x = obs.values.astype(np.float64)
    mu = float(np.mean(x))
    counts = [np.bincount(i, minlength=s).astype(np.float64)
              for i, s in zip(obs.index, obs.shape, strict=True)]  # fmt: skip
    biases = [np.zeros(s) for s in obs.shape]
    resid = x - mu  # x − μ − Σ b, kept current
    passes = 0
    while passes < BASELINE_MAX_PASSES:
        passes += 1
        moved = scale = 0.0
        for n, i in enumerate(obs.index):
            resid += biases[n][i]  # take mode n out
            den = counts[n] + reg
            new = np.divide(np.bincount(i, weights=resid, minlength=obs.shape[n]), den,
                            out=np.zeros(obs.shape[n]), where=den > 0)  # fmt: skip
            moved = max(moved, float(np.max(np.abs(new - biases[n]))))
            scale = max(scale, float(np.max(np.abs(new))))
            biases[n] = new
            resid -= new[i]
        if moved <= BASELINE_TOL * max(scale, abs(mu), 1e-300):
            break
    return Baseline(mu, tuple(biases), float(reg), passes)


# --- evaluation ------------------------------------------------------------------------------


def check_clip(clip):
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"clip must be a pair (lo, hi), got {clip!r}") from exc
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ParameterError(f"clip needs lo ≤ hi, got ({lo}, {hi})")
    return lo, hi


def errors(pred: np.ndarray, truth: np.ndarray, clip=None) -> dict:
    """RMSE, MAE and relative error ‖x − x̂‖/‖x‖ over the given entries (float64 sums)."""
    p = np.asarray(pred, np.float64)
    if clip is not None:
        p = np.clip(p, clip[0], clip[1])
    t = np.asarray(truth, np.float64)
    d = p - t
    n = int(t.shape[0])
    sq = float(d @ d)
    norm = float(np.sqrt(t @ t))
    rel = math.sqrt(sq) / norm if norm > 0 else (0.0 if sq == 0 else math.inf)
    return {"n": n, "rmse": math.sqrt(sq / n) if n else 0.0,
            "mae": float(np.mean(np.abs(d))) if n else 0.0, "relative_error": rel}  # fmt: skip


def evaluate(arrays: dict, train: Observed, test: Observed | None, clip, *,
             baseline_reg: float = BASELINE_REG, train_pred=None) -> dict:  # fmt: skip
    """Train and test figures of the model (``arrays``; ``train_pred`` its values at the
    training entries when already computed) and of the baseline."""
    if train_pred is None:
        train_pred = predict_arrays(arrays, train.index)
    out = {"train": errors(train_pred, train.values, clip)}
    base = fit_baseline(train, reg=baseline_reg)
    out["baseline"] = {"reg": base.reg, "passes": base.passes, "mean": base.mean,
                       "train": errors(base.predict(train.index), train.values, clip)}  # fmt: skip
    if test is not None:
        out["test"] = errors(predict_arrays(arrays, test.index), test.values, clip)
        out["baseline"]["test"] = errors(base.predict(test.index), test.values, clip)
    return out


# --- prediction ------------------------------------------------------------------------------


def _model(arrays: dict):
    """('matrix', U·S, V) or ('cp', weights, factors) in float64."""
    if "U" in arrays:
        us = np.asarray(arrays["U"], np.float64) * np.asarray(arrays["S"], np.float64)
        return (
            "matrix",
            np.ascontiguousarray(us),
            np.ascontiguousarray(np.asarray(arrays["Vt"], np.float64).T),
        )
    if "weights" in arrays:
        n = sum(1 for k in arrays if k.startswith("factors/"))
        f = [np.ascontiguousarray(np.asarray(arrays[f"factors/{i}"], np.float64))
             for i in range(n)]  # fmt: skip
        return "cp", np.asarray(arrays["weights"], np.float64), f
    raise ParameterError("predict needs a completion result (arrays U, S, Vt or weights, factors)")


def rowdot(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray,
           out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``out[l] = a[ia[l]] · b[ib[l]]`` in chunks (a sampled product: the dense ``a bᵀ`` is
    never formed)."""
    nnz = ia.shape[0]
    k = a.shape[1]
    a = np.ascontiguousarray(a, dtype=np.float64)  # row gathers from C order (LAPACK's
    b = np.ascontiguousarray(b, dtype=np.float64)  # F-ordered outputs gather 4× slower)
    out = np.empty(nnz, dtype=np.float64) if out is None else out
    step = CHUNK_ENTRIES
    ba = np.empty((min(step, nnz), k))
    bb = np.empty_like(ba)
    ones = np.ones(k)
    for s in range(0, nnz, step):
        e = min(nnz, s + step)
        x, y = ba[: e - s], bb[: e - s]
        np.take(a, ia[s:e], axis=0, out=x)
        np.take(b, ib[s:e], axis=0, out=y)
        np.multiply(x, y, out=x)
        np.matmul(x, ones, out=out[s:e])
    return out


def cp_values(weights, factors, index, out: np.ndarray | None = None) -> np.ndarray:
    """``Σ_r w_r Π_n A_n[i_n, r]`` at the given positions, in chunks."""
    nnz = index[0].shape[0]
    r = factors[0].shape[1]
    out = np.empty(nnz, dtype=np.float64) if out is None else out
    w = np.asarray(weights, np.float64)
    factors = [np.ascontiguousarray(f, dtype=np.float64) for f in factors]
    step = CHUNK_ENTRIES
    buf = np.empty((min(step, nnz), r))
    tmp = np.empty_like(buf)
    for s in range(0, nnz, step):
        e = min(nnz, s + step)
        x, y = buf[: e - s], tmp[: e - s]
        np.take(factors[0], index[0][s:e], axis=0, out=x)
        for f, i in zip(factors[1:], index[1:], strict=True):
            np.take(f, i[s:e], axis=0, out=y)
            np.multiply(x, y, out=x)
        np.matmul(x, w, out=out[s:e])
    return out


def predict_arrays(arrays: dict, index) -> np.ndarray:
    kind, a, b = _model(arrays)
    index = tuple(np.asarray(i, dtype=np.int64) for i in index)
    if kind == "matrix":
        return rowdot(a, b, index[0], index[1])
    return cp_values(a, b, index)


def predict(result, index, *, clip=None) -> np.ndarray:
    """The model of a completion result at positions ``index`` (one integer array per mode:
    ``(rows, cols)`` for a matrix), clipped to ``clip=(lo, hi)`` if given, in the result's
    dtype. Costs O(len·rank); the dense array is never formed."""
    arrays = result.arrays if hasattr(result, "arrays") else result
    clip = check_clip(clip)
    shape = result_shape(arrays)
    index = tuple(np.asarray(i) for i in index)
    if len(index) != len(shape):
        raise ParameterError(f"predict needs {len(shape)} index arrays, got {len(index)}")
    for n, i in enumerate(index):
        if i.dtype.kind not in "iu":
            raise ParameterError(f"index array {n} must hold integers, got {i.dtype}")
        if i.size and (int(i.min()) < 0 or int(i.max()) >= shape[n]):
            raise ParameterError(f"index array {n} has entries outside [0, {shape[n]})")
    out = predict_arrays(arrays, index)
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    dt = arrays["U"].dtype if "U" in arrays else arrays["weights"].dtype
    return out.astype(dt, copy=False)


def result_shape(arrays: dict) -> tuple:
    if "U" in arrays:
        return (int(arrays["U"].shape[0]), int(arrays["Vt"].shape[1]))
    n = sum(1 for k in arrays if k.startswith("factors/"))
    return tuple(int(arrays[f"factors/{i}"].shape[0]) for i in range(n))


def completed_bytes(shape, dtype) -> int:
    """Bytes of the completed dense array (what ``--write-completed`` needs to hold)."""
    return int(math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize)


def completed_blocks(result, *, observed=None, clip=None,
                     block_bytes: int = BLOCK_BYTES) -> Iterator[tuple]:  # fmt: skip
    """Yield ``(start, stop, block)``: rows ``start:stop`` of the leading mode of the completed
    dense array (the model; with ``observed`` its entries keep their observed values), each
    block about ``block_bytes`` in float64 while being formed."""
    arrays = result.arrays if hasattr(result, "arrays") else result
    clip = check_clip(clip)
    kind, a, b = _model(arrays)
    shape = result_shape(arrays)
    dt = arrays["U"].dtype if kind == "matrix" else arrays["weights"].dtype
    obs = None
    if observed is not None:
        obs = observations(observed)
        if obs.shape != shape:
            raise ParameterError(f"observed entries of shape {obs.shape} do not match the "
                                 f"result's shape {shape}")  # fmt: skip
    rest = math.prod(shape[1:])
    r = a.shape[1] if kind == "matrix" else a.shape[0]
    per_row = rest * 8 + r * 8
    if kind == "cp":  # the batched GEMM's left operand: R values per leading position
        per_row += (rest // shape[-1]) * r * 8
    step = max(1, min(shape[0], block_bytes // max(1, per_row)))
    for s in range(0, shape[0], step):
        e = min(shape[0], s + step)
        if kind == "matrix":
            blk = a[s:e] @ b.T
        else:
            blk = _cp_block(a, b, s, e)
        if clip is not None:
            np.clip(blk, clip[0], clip[1], out=blk)
        if obs is not None:
            lo, hi = np.searchsorted(obs.index[0], [s, e])
            sel = (obs.index[0][lo:hi] - s,) + tuple(i[lo:hi] for i in obs.index[1:])
            blk[sel] = obs.values[lo:hi]
        yield s, e, blk.astype(dt, copy=False)


def _cp_block(w, f, s, e) -> np.ndarray:
    """Rows s:e of mode 0 of [[w; A_0 … A_{N-1}]]: the leading modes' products (one R-vector
    per leading position) times the last two modes by batched GEMMs."""
    lead = f[0][s:e] * w
    for a in f[1:-2]:
        lead = (lead[:, None, :] * a[None, :, :]).reshape(-1, a.shape[1])
    pen, last = f[-2], f[-1]
    if len(f) == 2:
        return lead @ last.T
    out = np.matmul(lead[:, None, :] * pen[None, :, :], last.T)
    return out.reshape((e - s, *[a.shape[0] for a in f[1:]]))


def completed(result, *, observed=None, clip=None, max_memory: int | None = None) -> np.ndarray:
    """The completed dense array (see :func:`completed_blocks`), refused with a
    :class:`BudgetError` when :func:`completed_bytes` exceeds ``max_memory``."""
    arrays = result.arrays if hasattr(result, "arrays") else result
    shape = result_shape(arrays)
    dt = arrays["U"].dtype if "U" in arrays else arrays["weights"].dtype
    need = completed_bytes(shape, dt) + 2 * min(BLOCK_BYTES, completed_bytes(shape, np.float64))
    if max_memory is not None and need > max_memory:
        raise BudgetError(f"the completed array ({'×'.join(map(str, shape))} {np.dtype(dt)}) "
                          f"needs about {_human(need)} but the memory budget is "
                          f"{_human(max_memory)}")  # fmt: skip
    out = np.empty(shape, dtype=dt)
    for s, e, blk in completed_blocks(arrays, observed=observed, clip=clip):
        out[s:e] = blk
    return out


# --- parameters and memory -------------------------------------------------------------------


def _is_int(v) -> bool:
    try:
        return not isinstance(v, bool) and int(v) == v
    except (TypeError, ValueError, OverflowError):
        return False


def check_parameters(*, method: str = "auto", rank=None, reg=None, reg_path=None,
                     tol: float = 1e-7, max_iter: int = 500, solver: str = "exact",
                     cg_steps: int = 3, init: str = "auto", n_init: int = 1, holdout=None,
                     clip=None) -> None:  # fmt: skip
    """Refuse invalid parameters (callers run this before reading any data)."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if rank is not None and (not _is_int(rank) or rank < 1):
        raise ParameterError(f"rank must be a positive integer, got {rank!r}")
    if reg is not None:
        try:
            ok = math.isfinite(float(reg)) and float(reg) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"reg must be finite and > 0, got {reg!r} (λ = 0 leaves rows "
                                 "with fewer observations than the rank undetermined)")  # fmt: skip
    if reg_path is not None:
        if method not in ("auto", "softimpute"):
            raise ParameterError("reg_path applies to the softimpute method only")
        if not _is_int(reg_path) or reg_path < 1:
            raise ParameterError(f"reg_path must be an integer ≥ 1, got {reg_path!r}")
    try:
        tol_ok = math.isfinite(float(tol)) and float(tol) >= 0
    except (TypeError, ValueError):
        tol_ok = False
    if not tol_ok:
        raise ParameterError(f"tol must be finite and ≥ 0, got {tol!r}")
    if not _is_int(max_iter) or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer ≥ 0, got {max_iter!r}")
    if solver not in SOLVERS:
        raise ParameterError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if not _is_int(cg_steps) or cg_steps < 1:
        raise ParameterError(f"cg_steps must be an integer ≥ 1, got {cg_steps!r}")
    if init not in INITS:
        raise ParameterError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    if not _is_int(n_init) or n_init < 1:
        raise ParameterError(f"n_init must be an integer ≥ 1, got {n_init!r}")
    if holdout is not None:
        try:
            ok = 0.0 < float(holdout) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ParameterError(f"holdout must be in (0, 1), got {holdout!r}")
    check_clip(clip)


def estimate_bytes(shape, dtype, rank: int, *, nnz: int, method: str = "softimpute",
                   solver: str = "exact", dense_input: bool = False,
                   holdout: bool = False) -> int:  # fmt: skip
    """Peak bytes of a completion run beyond the input itself, before anything is allocated.

    Counts the observed entries (one int64 index per mode, the values in the working dtype
    and in float64; twice with a hold-out split, and the sort of unsorted input), for dense
    input the NaN mask, the solver's residual and sparse structure (CSR index and data), the
    padded groups and batched systems of the row-wise exact solves, the factors with their
    copies and the randomized initialisation; for CP the padded groups of every mode.
    """
    dims = [int(s) for s in shape]
    nd = len(dims)
    w = np.dtype(dtype).itemsize
    k = max(1, int(rank))
    nnz = int(nnz)
    entries = nnz * (8 * nd + w + 8)  # index arrays, values, float64 copy
    prep = entries * (2 if holdout else 1) + nnz * 16  # split copies; sort key and order
    if dense_input:
        prep += math.prod(dims)  # the NaN mask
    work = nnz * 8 * 3  # residual, a second value buffer, the split mask / sort order
    factors = 8 * sum(dims) * k * 10
    if method in ("softimpute", "altmin", "auto") and nd == 2:
        m, n = dims
        work += nnz * 8 + (m + 1) * 8  # CSR indices (≤ int64) and indptr
        ell = min(m, n, k + OVERSAMPLE)
        init = 4 * (m + n) * ell * 8
        if method == "altmin" and solver == "exact":
            work += 2 * int(GROUP_SLACK * nnz) * 8 + 4 * GROUP_BYTES
        return int(prep + work + factors + init)
    work += nd * int(GROUP_SLACK * nnz) * 8 + (nd + 3) * GROUP_BYTES
    return int(prep + work + factors)


def budget(est: int, max_memory, what: str, shape, dtype) -> None:
    if max_memory is not None and est > max_memory:
        raise BudgetError(f"{what} needs about {_human(est)} for shape "
                          f"{'×'.join(map(str, shape))} {np.dtype(dtype)} but the memory budget "
                          f"is {_human(max_memory)}")  # fmt: skip


# --- the solvers' view of the training entries ------------------------------------------------


class Problem:
    """Training entries as the solvers see them: every index with no observation dropped
    (``keep[n]`` maps compressed → original indices, None when all are kept), compressed
    int64 indices in C order, float64 values, the counts per index and the dropped counts."""

    def __init__(self, obs: Observed):
        self.shape = obs.shape
        self.nnz = obs.nnz
        self.keep, self.idx, self.counts = [], [], []
        for n, a in enumerate(obs.index):
            cnt = np.bincount(a, minlength=obs.shape[n])
            present = cnt > 0
            if bool(present.all()):
                self.keep.append(None)
                self.idx.append(a)
                self.counts.append(cnt)
            else:
                remap = np.cumsum(present) - 1  # monotone: C order is kept
                self.keep.append(np.flatnonzero(present))
                self.idx.append(remap[a])
                self.counts.append(cnt[present])
        self.dims = tuple(int(c.shape[0]) for c in self.counts)
        self.empty = [int(s - d) for s, d in zip(self.shape, self.dims, strict=True)]
        self.vals = obs.values.astype(np.float64)
        self.norm_sq = float(self.vals @ self.vals)

    def tracker(self, test: Observed | None):
        """Held-out figures of the current iterate per sweep (None without a test set)."""
        return None if test is None else Tracker(self, test)

    def embed(self, mode: int, f: np.ndarray) -> np.ndarray:
        """A factor on the kept indices as one on all indices (zero rows for the dropped)."""
        keep = self.keep[mode]
        if keep is None:
            return f
        out = np.zeros((self.shape[mode], f.shape[1]))
        out[keep] = f
        return out


class Tracker:
    """Test entries in the compressed indices of a problem (entries in a dropped row, column
    or slice are predicted 0), for ``test_rmse`` / ``test_relative_error`` in the history."""

    def __init__(self, prob: Problem, test: Observed):
        ok = np.ones(test.nnz, dtype=bool)
        idx = []
        for keep, a in zip(prob.keep, test.index, strict=True):
            if keep is None:
                idx.append(a)
                continue
            where = np.searchsorted(keep, a)
            where = np.minimum(where, keep.shape[0] - 1)
            ok &= keep[where] == a
            idx.append(where)
        self.ok = ok
        self.idx = tuple(a[ok] for a in idx)
        self.vals = test.values.astype(np.float64)
        self.norm = float(np.sqrt(self.vals @ self.vals))

    def extras(self, values_at_ok: np.ndarray) -> dict:
        pred = np.zeros_like(self.vals)
        pred[self.ok] = values_at_ok
        d = pred - self.vals
        sq = float(d @ d)
        return {
            "test_rmse": math.sqrt(sq / d.shape[0]),
            "test_relative_error": math.sqrt(sq) / self.norm if self.norm > 0 else 0.0,
        }


class Groups:
    """The entries of each index of one mode, for batched row-wise k×k solves.

    Indices are sorted by their count and cut into chunks whose counts stay within
    ``GROUP_RATIO`` of each other and whose gathered ``g × L × width`` float64 block stays
    under ``GROUP_BYTES``; ``pos[g, l]`` is the position of the l-th entry of index ``g`` or
    ``nnz`` (padding, pointing at a zero row / zero value appended by the caller). Built once
    per mode: ≈ ``GROUP_SLACK·nnz`` positions in all.
    """

    def __init__(self, idx: np.ndarray, counts: np.ndarray, nnz: int, width: int):
        order = np.argsort(idx, kind="stable")
        starts = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        by = np.argsort(counts, kind="stable")
        sc = counts[by]
        pdt = np.int32 if nnz < 2**31 - 1 else np.int64
        self.chunks = []
        i, total = 0, counts.shape[0]
        while i < total:
            c0 = int(sc[i])
            j = int(np.searchsorted(sc, max(int(c0 * GROUP_RATIO), c0 + GROUP_MIN_PAD),
                                    side="right"))  # fmt: skip
            cap = max(1, GROUP_BYTES // (int(sc[j - 1]) * width * 8))
            j = min(j, i + cap)
            g = by[i:j]
            length = int(sc[j - 1])
            ar = np.arange(length)
            inside = ar[None, :] < counts[g][:, None]
            pos = np.full((j - i, length), nnz, dtype=pdt)
            pos[inside] = order[(starts[g][:, None] + ar[None, :])[inside]]
            self.chunks.append((g, pos))
            i = j
        self.padded = int(sum(p.size for _, p in self.chunks))


def solve_spd(gram: np.ndarray, rhs: np.ndarray, lam: float) -> np.ndarray:
    """Batched ``(G_i + λI) x_i = b_i`` for stacked k×k systems (LAPACK gesv per system)."""
    k = gram.shape[-1]
    d = np.arange(k)
    gram[:, d, d] += lam
    return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]


# --- dispatcher ------------------------------------------------------------------------------


def complete(x, rank: int, *, method: str = "auto", **kwargs):
    """Run a completion method: ``auto`` is ``softimpute`` for a matrix and ``cp`` for a tensor
    of order ≥ 3. Keyword arguments go to the method."""
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    nd = len(input_shape(x))
    if method == "auto":
        method = "softimpute" if nd == 2 else "cp"
    if method in MATRIX_METHODS:
        from . import complete_matrix

        return getattr(complete_matrix, method)(x, rank, **kwargs)
    from .complete_tensor import cp_complete

    return cp_complete(x, rank, **kwargs)


def __getattr__(name):  # the solvers, re-exported lazily (they import this module)
    if name in ("softimpute", "altmin"):
        from . import complete_matrix

        return getattr(complete_matrix, name)
    if name == "cp_complete":
        from .complete_tensor import cp_complete

        return cp_complete
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Observed", "Split", "Baseline", "observations", "holdout_split", "fit_baseline",
           "errors", "evaluate", "predict", "completed", "completed_blocks", "completed_bytes",
           "estimate_bytes", "check_parameters", "complete", "METHODS", "SOLVERS",
           "INITS"]  # fmt: skip
