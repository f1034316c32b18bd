"""rankwise svd: truncated SVD / PCA of a matrix."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from . import checkpoint as checkpoints
from . import options as opt
from .checkpoint import CheckpointOptions, with_checkpoint
from .engine import Engine, EngineOptions, with_engine
from .errors import CliUsageError
from .run import Common, Run, guarded


class SVDMethod(StrEnum):
    auto = "auto"
    exact = "exact"
    randomized = "randomized"
    lanczos = "lanczos"
    streaming = "streaming"


RULE_OPTIONS = {"rank": "--rank", "tol": "--tol", "energy": "--energy", "rel_sv": "--rel-sv"}


def rank_rule(rank, tol, energy, rel_sv, *, extra: str | None = None):
    from rankwise.core.rank import RankRule

    given = {k: v for k, v in (("rank", rank), ("tol", tol), ("energy", energy),
                               ("rel_sv", rel_sv)) if v is not None}  # fmt: skip
    if not given:
        names = ", ".join([*RULE_OPTIONS.values(), *([extra] if extra else [])])
        raise CliUsageError(f"choose the rank: give one of {names}")
    if len(given) > 1:
        names = ", ".join(RULE_OPTIONS[k] for k in given)
        raise CliUsageError(f"give only one rank rule, got {names}")
    ((kind, value),) = given.items()
    return RankRule(kind, value)


@opt.with_common
@with_engine
@with_checkpoint
def svd(
    uri: opt.InputURI,
    output: opt.Output,
    rank: Annotated[
        int | None, typer.Option("--rank", "-k", help="Keep this many components.")
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option("--tol", help="Smallest rank with relative Frobenius error ≤ TOL."),
    ] = None,
    energy: Annotated[
        float | None,
        typer.Option("--energy", help="Smallest rank keeping this fraction of ‖A‖²_F (0–1]."),
    ] = None,
    rel_sv: Annotated[
        float | None,
        typer.Option("--rel-sv", help="Keep singular values ≥ REL_SV × the largest."),
    ] = None,
    center: Annotated[
        bool, typer.Option("--center", help="Subtract the column mean first (PCA).")
    ] = False,
    method: Annotated[
        SVDMethod, typer.Option("--method", help="Algorithm; auto says in the report why.")
    ] = SVDMethod.auto,
    oversample: Annotated[
        int | None,
        typer.Option(
            "--oversample",
            min=0,
            help="Extra sketch columns (randomized) [default: 10].",
            show_default=False,
        ),
    ] = None,
    power_iters: Annotated[
        int | None,
        typer.Option(
            "--power-iters",
            help="Subspace iterations (randomized, streaming) [default: adaptive — iterate "
            "until the rank-k error estimate improves by < 0.5%, at most 10; 2 per block with "
            "an accuracy rule].",
            show_default=False,
        ),
    ] = None,
    spectral_iters: Annotated[
        int | None,
        typer.Option(
            "--spectral-iters",
            help="Block-Krylov products estimating ‖A − UΣVᵀ‖₂ for the report [default: 2; 1 "
            "when streaming (one pass each); 0 skips it]. Exact SVDs report σ_{k+1} instead.",
            show_default=False,
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(
            "--block-size",
            help="Basis growth per step of the adaptive randomized method "
            "[default: min(64, max(8, min(m, n)/20))].",
            show_default=False,
        ),
    ] = None,
    row_weights: Annotated[
        str | None,
        typer.Option(
            "--row-weights",
            metavar="URI",
            help="Positive weight per row (1-D "
            "array): minimise ‖D_r^½(A − L)D_c^½‖_F in closed form.",
        ),
    ] = None,
    col_weights: Annotated[
        str | None,
        typer.Option(
            "--col-weights",
            metavar="URI",
            help="Positive weight per column (1-D array), with or without --row-weights.",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            metavar="URI",
            help="Weight ≥ 0 per entry (same shape as "
            "the input; 0 ignores the entry, which may then be NaN): minimise "
            "Σ w_ij (a_ij − l_ij)² iteratively (EM). Needs --rank.",
        ),
    ] = None,
    iter_tol: Annotated[
        float | None,
        typer.Option(
            "--iter-tol",
            min=0.0,
            help="--weights: stop when the weighted "
            "objective decreases by less than this fraction per sweep "
            "[default: 1e-7].",
            show_default=False,
        ),
    ] = None,
    max_iter: Annotated[
        int | None,
        typer.Option(
            "--max-iter", min=0, help="--weights: most sweeps [default: 500].", show_default=False
        ),
    ] = None,
    eng: EngineOptions = None,  # the engine options, from @with_engine
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint (streaming only)
) -> None:
    """Truncated SVD / PCA: A ≈ U·diag(S)·Vt, written as U, S, Vt (and mean with --center)."""
    with guarded("svd", common.debug):
        rule = rank_rule(rank, tol, energy, rel_sv)
        eng.check()
        if eng.engine == Engine.dask:
            others = {"--center": center, "--weights": weights, "--row-weights": row_weights,
                      "--col-weights": col_weights, "--block-size": block_size,
                      "--spectral-iters": spectral_iters, "--iter-tol": iter_tol,
                      "--max-iter": max_iter}  # fmt: skip
            given = [k for k, v in others.items() if v not in (None, False)]
            if given:
                raise CliUsageError(f"{', '.join(given)} do(es) not run on --engine dask (it "
                                    "computes exact and randomized SVDs)")  # fmt: skip
            if method in (SVDMethod.lanczos, SVDMethod.streaming):
                raise CliUsageError(f"--method {method.value} runs on the local engine; with "
                                    "--engine dask use auto, exact or randomized")  # fmt: skip
            checkpointing.not_applicable(NOT_STREAMING)
            run = Run("svd", common)
            _svd_dask(run, uri, output, rule, method.value, oversample, power_iters, eng)
            return
        if weights is not None or row_weights is not None or col_weights is not None:
            _check_weighted(rule, method, center, row_weights, col_weights, weights,
                            block_size, spectral_iters, oversample, power_iters)  # fmt: skip
        elif iter_tol is not None or max_iter is not None:
            raise CliUsageError("--iter-tol and --max-iter apply to --weights only")
        oversample = 10 if oversample is None else oversample
        run = Run("svd", common)
        if row_weights is not None or col_weights is not None:
            checkpointing.not_applicable(NOT_STREAMING)
        if weights is not None:
            _elementwise(run, uri, output, rule, weights, 1e-7 if iter_tol is None else iter_tol,
                         500 if max_iter is None else max_iter, checkpointing)  # fmt: skip
        elif row_weights is not None or col_weights is not None:
            _weighted(run, uri, output, rule, method.value, row_weights, col_weights,
                      oversample, power_iters, block_size, spectral_iters)  # fmt: skip
        else:
            _svd(run, uri, output, rule, method.value, center, oversample, power_iters,
                 block_size, spectral_iters, checkpointing)  # fmt: skip


def _check_weighted(rule, method, center, row_weights, col_weights, weights, block_size,
                    spectral_iters, oversample, power_iters):  # fmt: skip
    if center:
        raise CliUsageError("--center does not combine with weights (the centre would need "
                            "the weighted mean); centre the data first")  # fmt: skip
    if method == SVDMethod.streaming:
        raise CliUsageError("weighted SVD runs in memory; --method streaming is not available")
    if weights is None:
        return
    if row_weights is not None or col_weights is not None:
        raise CliUsageError("give either --weights (elementwise) or --row-weights/"
                            "--col-weights (closed form), not both")  # fmt: skip
    if rule.kind != "rank":
        raise CliUsageError(f"--weights needs --rank (the iterative fit has no spectrum for "
                            f"--{rule.kind.replace('_', '-')})")  # fmt: skip
    others = {"--method": method != SVDMethod.auto, "--block-size": block_size is not None,
              "--spectral-iters": spectral_iters is not None,
              "--oversample": oversample is not None,
              "--power-iters": power_iters is not None}  # fmt: skip
    given = [k for k, v in others.items() if v]
    if given:
        raise CliUsageError(f"{', '.join(given)} do(es) not apply to --weights (EM with "
                            "subspace-iteration steps)")  # fmt: skip


STREAMABLE_FORMATS = ("hdf5", "zarr", "npy")


NOT_STREAMING = (
    "checkpoints apply to the streaming method and to --weights (EM) on the local engine; "
    "the other methods finish in one go"
)


def _svd(run: Run, uri, output, rule, method, center, oversample, power_iters, block_size,
         spectral_iters, checkpointing):  # fmt: skip
    import numpy as np
    import scipy.linalg  # noqa: F401 - its BLAS starts a worker that spins ~0.1 s: now, not in pass 1

    from rankwise import formats
    from rankwise.core import svd as core_svd

    core_svd.check_parameters(oversample=oversample, power_iters=power_iters,
                              block_size=block_size, spectral_iters=spectral_iters)  # fmt: skip
    handle = run.open_input(uri)
    run.prepare_outputs(output)
    streamable = not handle.sparse and handle.format in STREAMABLE_FORMATS
    chunk_rows = handle.chunks[0] if handle.chunks else None
    plan = core_svd.plan(
        handle.shape, handle.dtype, rule=rule, method=method, sparse=handle.sparse,
        nnz=handle.nnz, center=center, oversample=oversample, max_memory=run.budget,
        streamable=streamable, chunk_rows=chunk_rows,
    )  # fmt: skip
    fingerprint = ck = resume = None
    callback = on_step = _on_step(run)
    if plan.method == "streaming":
        # The data never sits in memory: hash it during the first pass over the file.
        data = handle
        hasher = formats.Fingerprinter(handle.dtype, handle.shape, sparse=False)
        on_first_pass = hasher.update_rows
        ck, callback, resume, fingerprint = _streaming_checkpoints(
            run, checkpointing, handle, hasher, on_step,
            {"rule": [rule.kind, rule.value], "method": method, "center": center,
             "oversample": oversample, "power_iters": power_iters,
             "block_size": block_size, "spectral_iters": spectral_iters})  # fmt: skip
    else:
        checkpointing.not_applicable(NOT_STREAMING)
        data = run.load(handle, method="svd")
        on_first_pass = hasher = None
        # hashed now: the exact tall-skinny path may then reuse the array's memory
        fingerprint = formats.fingerprint(data)

    with run.compute(f"svd ({plan.method})"):
        res = core_svd.truncated_svd(
            data, rule, method=method, planned=plan, center=center,
            rng=np.random.default_rng(run.common.seed), oversample=oversample,
            power_iters=power_iters, block_size=block_size, max_memory=run.budget,
            spectral_iters=spectral_iters, on_first_pass=on_first_pass, callback=callback,
            resume=resume, overwrite_a=plan.method != "streaming",
        )  # fmt: skip
    if ck is not None:
        ck.solved()
    if hasher is not None and fingerprint is None:
        fingerprint = hasher.hexdigest()
    parameters = _parameters(rule, method, center=center, oversample=oversample, res=res)
    err = res.metrics["relative_frobenius_error"]
    summary = (f"rank {res.rank['value']} ({rule.kind} {rule.value:g}, {res.method}), "
               f"relative error {err:.3g}")  # fmt: skip
    run.commit(res, handle=handle, data=data, fingerprint=fingerprint, requested=method,
               parameters=parameters, summary=summary,
               attrs={"rank": int(res.rank["value"]), "method": res.method})  # fmt: skip
    if ck is not None:
        ck.done()


def _on_step(run: Run):
    def on_step(event):
        size = event.get("basis_size", event.get("rank", ""))
        run.progress(f"basis {size}, error {event.get('relative_error', float('nan')):.3g}")
        return False

    return on_step


def _streaming_checkpoints(run: Run, checkpointing, handle, hasher, on_step, parameters):
    """(checkpointer, callback, resume state, fingerprint or None) of a streaming run.

    A streamed input is bound by its file identity (path, size, modification time, shape,
    dtype): rehashing it would cost a pass. Its content fingerprint, hashed in the first
    pass, travels in the checkpoint, since a resumed run does not redo that pass."""
    from rankwise.core.loop import LoopEvent

    ck = checkpoints.start(run, checkpointing, data=None, parameters=parameters,
                           fingerprint=checkpoints.source_identity(handle))  # fmt: skip
    resume, fingerprint = ck.state, None
    if resume is not None:
        resume = dict(resume)
        fingerprint = resume.pop("content_fingerprint")
    saved = fingerprint
    inner = ck.callback(None)

    def callback(ev):
        on_step(ev)
        state = ev["state"]

        def full_state():
            return {**state(), "content_fingerprint": saved or hasher.hexdigest()}

        return inner(LoopEvent(ev["pass"], ev["relative_error"], None, 0.0, ev, full_state))

    return ck, callback, resume, fingerprint


def _svd_dask(run: Run, uri, output, rule, method, oversample, power_iters, eng):
    import numpy as np

    from rankwise.core import distributed

    from .engine import run_on_dask

    dmethod = {"auto": "auto", "exact": "tsqr", "randomized": "randomized"}[method]
    handle = run.open_input(uri)
    if handle.ndim != 2:
        raise CliUsageError(f"svd needs a matrix, got {handle.ndim}-D input")
    distributed.plan(handle.shape, rule, dmethod)  # refuse bad combinations before starting
    run.prepare_outputs(output)
    oversample = 10 if oversample is None else oversample

    def fn(a, also, on_first_pass):
        return distributed.svd(a, rule, method=dmethod, rng=np.random.default_rng(run.common.seed),
                               oversample=oversample, power_iters=power_iters, also=also,
                               on_first_pass=on_first_pass)  # fmt: skip

    res, fingerprint = run_on_dask(run, handle, eng, "svd", fn)
    info = run.engine
    parameters = _parameters(rule, method, oversample=oversample, res=res)
    err = res.metrics["relative_frobenius_error"]
    summary = (f"rank {res.rank['value']} ({rule.kind} {rule.value:g}, {res.method} on "
               f"{info['workers']} dask workers), relative error {err:.3g}")  # fmt: skip
    run.commit(res, handle=handle, data=None, fingerprint=fingerprint, requested=method,
               parameters=parameters, summary=summary,
               attrs={"rank": int(res.rank["value"]), "method": res.method,
                      "engine": "dask"})  # fmt: skip


def _weight_input(run: Run, uri: str) -> tuple:
    """Read a weights array (an input like the matrix: never overwritten, fingerprinted)."""
    from rankwise import formats

    handle = run.open_input(uri)
    data = run.read(handle)
    info = {"uri": handle.uri.raw, "format": handle.format,
            "shape": [int(s) for s in handle.shape], "dtype": str(handle.dtype),
            "fingerprint": formats.fingerprint(data)}  # fmt: skip
    if handle.sparse:
        data = data.toarray()
    return data, info


def _weighted(run: Run, uri, output, rule, method, row_uri, col_uri, oversample, power_iters,
              block_size, spectral_iters):  # fmt: skip
    import numpy as np

    from rankwise.core import svd as core_svd
    from rankwise.core import wsvd

    core_svd.check_parameters(oversample=oversample, power_iters=power_iters,
                              block_size=block_size, spectral_iters=spectral_iters)  # fmt: skip
    handle = run.open_input(uri)
    r, r_info = _weight_input(run, row_uri) if row_uri else (None, None)
    c, c_info = _weight_input(run, col_uri) if col_uri else (None, None)
    for w, name in ((r, "--row-weights"), (c, "--col-weights")):
        if w is not None and np.ndim(w) != 1:
            from rankwise.core.errors import DataError

            raise DataError(f"{name} must be a 1-D array, got shape {np.shape(w)}")
    run.prepare_outputs(output)
    data = run.load(handle, method="svd")
    with run.compute(f"weighted svd ({method})"):
        res = wsvd.weighted_svd(
            data, rule, row_weights=r, col_weights=c, max_memory=run.budget, method=method,
            rng=np.random.default_rng(run.common.seed), oversample=oversample,
            power_iters=power_iters, block_size=block_size, spectral_iters=spectral_iters,
        )  # fmt: skip
    parameters = _parameters(rule, method, oversample=oversample, res=res, row_weights=r_info,
                             col_weights=c_info)  # fmt: skip
    m = res.metrics
    summary = (f"weighted rank {res.rank['value']} ({rule.kind} {rule.value:g}, "
               f"{res.details['svd_method']}), weighted error "
               f"{m['relative_frobenius_error']:.3g}, unweighted "
               f"{m['unweighted_relative_error']:.3g}")  # fmt: skip
    run.commit(res, handle=handle, data=data, requested=method, parameters=parameters,
               summary=summary, attrs={"rank": int(res.rank["value"]), "method": res.method,
                                       "weighted": "rows/columns"})  # fmt: skip


def _elementwise(run: Run, uri, output, rule, weights_uri, iter_tol, max_iter, checkpointing):
    import numpy as np

    from rankwise.core import wsvd

    handle = run.open_input(uri)
    w, w_info = _weight_input(run, weights_uri)
    run.prepare_outputs(output)
    # NaN is allowed where the weight is 0; the core checks that pairing
    data = run.load(handle, method="svd --weights", allow_nan=True)

    def on_sweep(event):
        run.progress(f"sweep {event.iteration}, objective {event.objective:.4g}")
        return False

    ck = checkpoints.start(run, checkpointing, data=data, parameters={
        "rank": int(rule.value), "weights": w_info, "iter_tol": iter_tol,
        "max_iter": max_iter})  # fmt: skip
    with run.compute("elementwise weighted svd (EM)"):
        res = wsvd.elementwise_weighted_svd(
            data, w, int(rule.value), tol=iter_tol, max_iter=max_iter,
            rng=np.random.default_rng(run.common.seed), callback=ck.callback(on_sweep),
            max_memory=run.budget, resume=ck.state,
        )  # fmt: skip
    ck.solved()
    parameters = _parameters(rule, "auto", weights=w_info, iter_tol=iter_tol,
                             max_iter=max_iter)  # fmt: skip
    m = res.metrics
    summary = (f"elementwise-weighted rank {res.rank['value']}, {res.details['iterations']} "
               f"sweeps, weighted error {m['relative_frobenius_error']:.3g}")  # fmt: skip
    run.commit(res, handle=handle, data=data, requested="em", parameters=parameters,
               summary=summary, fingerprint=ck.fingerprint,
               attrs={"rank": int(res.rank["value"]), "method": res.method,
                      "weighted": "entries"})  # fmt: skip
    ck.done()


def _parameters(rule, method, *, center=False, oversample=None, res=None, **weights) -> dict:
    """The report's svd parameters: effective values ("auto" choices resolved; null where
    the method has none)."""
    d = res.details if res is not None else {}
    return {
        **{k: (rule.value if rule.kind == k else None) for k in RULE_OPTIONS},
        "method": method,
        "center": center,
        "oversample": oversample,
        "power_iters": d.get("power_iters"),
        "power_iters_mode": d.get("power_iters_mode"),
        "block_size": d.get("block_size"),
        "spectral_iters": d.get("spectral_iters"),
        "row_weights": None,
        "col_weights": None,
        "weights": None,
        "iter_tol": None,
        "max_iter": None,
        **weights,
    }
