"""Tensor decompositions: rankwise cp, tucker, tt."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from . import checkpoint as checkpoints
from . import options as opt
from .checkpoint import CheckpointOptions, with_checkpoint
from .engine import Engine, EngineOptions, with_engine
from .errors import CliUsageError
from .matrix import _progress
from .run import Common, Run, guarded
from .svd import STREAMABLE_FORMATS


class CPInit(StrEnum):
    auto = "auto"
    hosvd = "hosvd"
    random = "random"


class TuckerMethod(StrEnum):
    sthosvd = "sthosvd"
    hooi = "hooi"


class BudgetSearch(StrEnum):
    greedy = "greedy"
    exhaustive = "exhaustive"


class SVDPath(StrEnum):
    auto = "auto"
    gram = "gram"
    svd = "svd"


SVDPathOption = Annotated[
    SVDPath,
    typer.Option(
        "--svd",
        help="How subspaces are computed: gram (eigh of Grams, fast), svd (SVD of unfoldings, "
        "accurate for tiny tails), auto (gram unless the tolerance needs svd).",
    ),
]  # fmt: skip
Streaming = Annotated[
    bool | None,
    typer.Option(
        "--streaming/--in-memory",
        help="Read the tensor slab by slab (HDF5/Zarr/NPY) or load it whole [default: stream "
        "only when it does not fit --max-memory].",
        show_default=False,
    ),
]  # fmt: skip


def parse_ints(text: str, option: str) -> list[int]:
    """``10`` or ``10,8,6`` (also ``10x8x6``) → list of positive ints."""
    parts = text.lower().replace("×", ",").replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise CliUsageError(f"{option} must be positive integers like 10 or 10,8,6, "
                            f"got {text!r}") from None  # fmt: skip
    if any(v < 1 for v in values):
        raise CliUsageError(f"{option} must be positive integers, got {text!r}")
    return values


def _check_order(handle, *, method: str, min_order: int, hint: str = "") -> None:
    """Refuse a tensor of too low an order from its header, before reading it."""
    from rankwise.core.tensor import check_tensor_shape

    check_tensor_shape(handle.shape, method=method, min_order=min_order, hint=hint)


def _load_dense(run: Run, handle, *, method: str):
    """The whole input as a dense array (a sparse matrix is densified when it fits)."""
    data = run.load(handle, method=method)
    if handle.sparse:
        from rankwise.core.errors import BudgetError, human_bytes

        need = math.prod(handle.shape) * max(8, handle.dtype.itemsize)
        if need > run.budget:
            raise BudgetError(f"{method} needs the sparse input densified ({human_bytes(need)}) "
                              f"but the memory budget is {human_bytes(run.budget)}")  # fmt: skip
        data = data.toarray()
    return data


def _source(run: Run, handle, *, method: str, streaming: bool | None, in_memory_need: int):
    """What the core gets: the loaded array, or the handle itself (read slab by slab) when
    streaming is forced or the tensor does not fit the budget. Returns (data, hasher)."""
    from rankwise import formats

    streamable = not handle.sparse and handle.format in STREAMABLE_FORMATS
    if streaming and not streamable:
        raise CliUsageError(f"--streaming reads HDF5, Zarr or NPY arrays slab by slab; "
                            f"{handle.format}{' (sparse)' if handle.sparse else ''} input "
                            "must be loaded (--in-memory)")  # fmt: skip
    if streaming is None:
        streaming = streamable and in_memory_need > run.budget
    if not streaming:
        return _load_dense(run, handle, method=method), None
    # The data never sits in memory whole: hash it during the first pass over the file.
    return handle, formats.Fingerprinter(handle.dtype, handle.shape, sparse=False)


# --- cp ------------------------------------------------------------------------------------------


@opt.with_common
@with_checkpoint
def cp(
    uri: opt.InputURI,
    output: opt.Output,
    rank: Annotated[int, typer.Option("--rank", "-k", min=1, help="Number of rank-one terms R.")],
    nonneg: Annotated[
        bool, typer.Option("--nonneg", help="Nonnegative factors (HALS); the data must be ≥ 0.")
    ] = False,
    init: Annotated[
        CPInit,
        typer.Option(
            "--init",
            help="auto/hosvd: leading eigenvectors of the mode Grams (then a CP of the "
            "compressed core); random: seeded Gaussian (uniform with --nonneg).",
        ),
    ] = CPInit.auto,  # fmt: skip
    tol: Annotated[
        float,
        typer.Option(
            "--tol",
            min=0.0,
            help="Stop when ½‖X − model‖² decreases by less than this fraction per sweep.",
        ),
    ] = 1e-8,  # fmt: skip
    max_iter: Annotated[int, typer.Option("--max-iter", min=0, help="Most sweeps per run.")] = 500,
    n_init: Annotated[
        int,
        typer.Option(
            "--n-init",
            min=1,
            help="Runs: the first from --init, the others random; the best is kept and the "
            "report gives the factor match between the two best.",
        ),
    ] = 1,  # fmt: skip
    linesearch: Annotated[
        bool,
        typer.Option("--linesearch/--no-linesearch", help="Bro's extrapolation after each sweep."),
    ] = True,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint
) -> None:
    """CP decomposition X ≈ Σ_r w_r a_0r ∘ a_1r ∘ … (CP-ALS, or nonnegative CP by HALS).

    Written as weights (R) and factors/0 … factors/N-1 (I_n × R), TensorLy's layout: unit
    columns, weights ≥ 0 in descending order.
    """
    with guarded("cp", common.debug):
        import numpy as np

        from rankwise.core import cp as core

        core.check_parameters(rank=rank, nonneg=nonneg, init=init.value, tol=tol,
                              max_iter=max_iter, n_init=n_init, linesearch=linesearch)  # fmt: skip
        run = Run("cp", common)
        handle = run.open_input(uri)
        _check_order(handle, method="cp", min_order=3)
        used_init = "hosvd" if init == CPInit.auto else init.value
        # Refuse before reading when the working set cannot fit.
        est = core.estimate_bytes(handle.shape, handle.dtype, rank, nonneg=nonneg,
                                  n_init=n_init, init=used_init)  # fmt: skip
        if est > run.budget:
            from rankwise.core.errors import BudgetError, human_bytes

            raise BudgetError(f"cp needs about {human_bytes(est)} for shape "
                              f"{'×'.join(map(str, handle.shape))} but the memory budget is "
                              f"{human_bytes(run.budget)}")  # fmt: skip
        run.prepare_outputs(output)
        data = _load_dense(run, handle, method="cp")
        what = "nonnegative CP" if nonneg else "CP"
        ck = checkpoints.start(run, checkpointing, data=data, parameters={
            "rank": rank, "nonneg": nonneg, "init": init.value, "tol": tol,
            "max_iter": max_iter, "n_init": n_init, "linesearch": linesearch})  # fmt: skip
        with run.compute(what):
            res = core.cp(data, rank, nonneg=nonneg, init=init.value, tol=tol,
                          max_iter=max_iter, n_init=n_init, linesearch=linesearch,
                          rng=np.random.default_rng(run.common.seed),
                          callback=ck.callback(_progress(run, what)), max_memory=run.budget,
                          resume=ck.state)  # fmt: skip
        ck.solved()
        parameters = {"rank": rank, "nonneg": nonneg, "init": res.details["init"], "tol": tol,
                      "max_iter": max_iter, "n_init": n_init, "linesearch": linesearch}  # fmt: skip
        m = res.metrics
        summary = (f"{what} rank {res.rank['value']} ({res.method}), "
                   f"{res.details.get('iterations', 0)} sweeps, relative error "
                   f"{m['relative_frobenius_error']:.3g}")  # fmt: skip
        if "factor_match" in m:
            summary += f", factor match {m['factor_match']:.3f}"
        if not res.converged:
            summary += f" (not converged: {res.stop_reason})"
        run.commit(res, handle=handle, data=data, requested=init.value, parameters=parameters,
                   summary=summary, fingerprint=ck.fingerprint,
                   attrs={"rank": int(res.rank["value"]), "method": res.method,
                          "nonneg": bool(nonneg)})  # fmt: skip
        ck.done()


# --- tucker --------------------------------------------------------------------------------------


@opt.with_common
@with_engine
@with_checkpoint
def tucker(
    uri: opt.InputURI,
    output: opt.Output,
    ranks: Annotated[
        str | None,
        typer.Option(
            "--ranks", metavar="R1,R2,…", help="Core shape (one value: the same for every mode)."
        ),
    ] = None,  # fmt: skip
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol",
            help="Smallest ST-HOSVD core with ‖X − T‖ ≤ TOL·‖X‖ guaranteed (tail rule).",
        ),
    ] = None,  # fmt: skip
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget",
            metavar="P",
            help="Core shape keeping the most energy within P parameters (∏R_n + Σ I_n R_n).",
        ),
    ] = None,  # fmt: skip
    method: Annotated[
        TuckerMethod,
        typer.Option("--method", help="sthosvd, or hooi to refine the chosen shape."),
    ] = TuckerMethod.sthosvd,  # fmt: skip
    budget_search: Annotated[
        BudgetSearch | None,
        typer.Option(
            "--budget-search",
            help="--budget: greedy (fast) or exhaustive (exact packing) [default: greedy].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    iter_tol: Annotated[
        float | None,
        typer.Option(
            "--iter-tol",
            min=0.0,
            help="hooi: stop when the squared error decreases by less than this fraction per "
            "sweep [default: 1e-8].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    max_iter: Annotated[
        int | None,
        typer.Option(
            "--max-iter", min=0, help="hooi: most sweeps [default: 100].", show_default=False
        ),
    ] = None,  # fmt: skip
    svd: SVDPathOption = SVDPath.auto,
    streaming: Streaming = None,
    eng: EngineOptions = None,  # the engine options, from @with_engine
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint (HOOI only)
) -> None:
    """Tucker decomposition X ≈ core ×_0 U_0 ×_1 U_1 … (ST-HOSVD, HOOI).

    Written as core and factors/0 … factors/N-1 (orthonormal columns), TensorLy's layout.
    """
    with guarded("tucker", common.debug):
        from rankwise.core import tucker as core

        given = {"--ranks": ranks, "--tol": tol, "--budget": budget}
        named = [k for k, v in given.items() if v is not None]
        if len(named) != 1:
            text = (
                f"give only one of {', '.join(named)}"
                if named
                else ("choose the core shape: give one of --ranks, --tol, --budget")
            )
            raise CliUsageError(text)
        if budget_search is not None and budget is None:
            raise CliUsageError("--budget-search applies to --budget only")
        hooi = method == TuckerMethod.hooi
        if not hooi and (iter_tol is not None or max_iter is not None):
            raise CliUsageError("--iter-tol and --max-iter apply to --method hooi only")
        if not hooi or eng.engine == Engine.dask:
            checkpointing.not_applicable("checkpoints apply to --method hooi on the local "
                                         "engine (ST-HOSVD does not iterate)")  # fmt: skip
        req = parse_ints(ranks, "--ranks") if ranks is not None else None
        req = req[0] if req is not None and len(req) == 1 else req
        search = (budget_search or BudgetSearch.greedy).value
        iter_tol = 1e-8 if iter_tol is None else iter_tol
        max_iter = 100 if max_iter is None else max_iter
        core.check_parameters(ranks=req, tol=tol, budget=budget, method=method.value,
                              budget_search=search, tol_iter=iter_tol, max_iter=max_iter,
                              svd=svd.value)  # fmt: skip
        eng.check()
        if eng.engine == Engine.dask:
            from . import dask_commands

            dask_commands.tucker(Run("tucker", common), uri, output, ranks=req, tol=tol,
                                 budget=budget, hooi=hooi, svd=svd.value, streaming=streaming,
                                 eng=eng)  # fmt: skip
            return
        run = Run("tucker", common)
        handle = run.open_input(uri)
        _check_order(handle, method="tucker", min_order=3, hint=core.HINT_ORDER)
        if isinstance(req, list) and len(req) != handle.ndim:
            raise CliUsageError(f"--ranks needs 1 or {handle.ndim} values for a tensor of "
                                f"order {handle.ndim}, got {len(req)}")  # fmt: skip
        full = [req] * handle.ndim if isinstance(req, int) else req
        fixed = None if req is None else core.clamp_ranks(handle.shape, full)
        need = core.in_memory_bytes(handle.shape, handle.dtype, ranks=fixed)
        if streaming and (budget is not None or hooi):
            raise CliUsageError(f"{'--budget' if budget is not None else '--method hooi'} "
                                "needs the tensor in memory; --streaming supports --ranks "
                                "and --tol")  # fmt: skip
        if (budget is not None or hooi) and streaming is None and need > run.budget:
            from rankwise.core.errors import BudgetError, human_bytes

            what = "--budget" if budget is not None else "--method hooi"
            raise BudgetError(f"tucker {what} needs the tensor in memory (about "
                              f"{human_bytes(need)}) but the memory budget is "
                              f"{human_bytes(run.budget)}; --ranks and --tol stream")  # fmt: skip
        run.prepare_outputs(output)
        data, hasher = _source(run, handle, method="tucker", streaming=streaming,
                               in_memory_need=need)  # fmt: skip
        label = "Tucker (HOOI)" if hooi else "Tucker (ST-HOSVD)"
        ck = None
        callback = _progress(run, "HOOI")
        if hooi:
            ck = checkpoints.start(run, checkpointing, data=data, parameters={
                "ranks": req, "tol": tol, "budget": budget, "budget_search": search,
                "iter_tol": iter_tol, "max_iter": max_iter, "svd": svd.value})  # fmt: skip
            callback = ck.callback(callback)
        with run.compute(label + (", streaming" if hasher is not None else "")):
            res = core.tucker(
                data, ranks=req, tol=tol, budget=budget, method=method.value,
                budget_search=search, tol_iter=iter_tol, max_iter=max_iter, svd=svd.value,
                callback=callback, max_memory=run.budget,
                streaming=hasher is not None,
                on_first_pass=None if hasher is None else hasher.update_rows,
                resume=None if ck is None else ck.state,
            )  # fmt: skip
        if ck is not None:
            ck.solved()
        parameters = {"ranks": req, "tol": tol, "budget": budget, "method": method.value,
                      "budget_search": search if budget is not None else None,
                      "iter_tol": iter_tol if hooi else None,
                      "max_iter": max_iter if hooi else None, "svd": svd.value,
                      "streaming": hasher is not None}  # fmt: skip
        m = res.metrics
        shape = "×".join(map(str, res.rank["value"]))
        summary = (f"core {shape} ({res.rank['rule']}, {res.method}), relative error "
                   f"{m['relative_frobenius_error']:.3g} (a-priori bound "
                   f"{m['a_priori_error_bound']:.3g}), "
                   f"{m['compression_ratio']:.3g}× compression")  # fmt: skip
        fingerprint = None if hasher is None else hasher.hexdigest()
        run.commit(res, handle=handle, data=data,
                   fingerprint=fingerprint if ck is None else ck.fingerprint,
                   requested=method.value, parameters=parameters, summary=summary,
                   attrs={"ranks": [int(r) for r in res.rank["value"]],
                          "method": res.method})  # fmt: skip
        if ck is not None:
            ck.done()


# --- tt ------------------------------------------------------------------------------------------


@opt.with_common
def tt(
    uri: Annotated[
        str | None,
        typer.Argument(
            metavar="URI",
            help="Input tensor (as for every command); omit it with --round.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    output: opt.Output = ...,
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol",
            help="Relative error TOL guaranteed: every bond truncated at TOL·‖X‖/√(N−1).",
        ),
    ] = None,  # fmt: skip
    max_rank: Annotated[
        str | None,
        typer.Option(
            "--max-rank",
            metavar="R|R1,…,R_{N-1}",
            help="Cap of every bond rank, or one cap per bond.",
        ),
    ] = None,  # fmt: skip
    round_: Annotated[
        Path | None,
        typer.Option(
            "--round",
            metavar="FACTORS",
            help="Round an existing tensor train (a rankwise tt output) instead of "
            "decomposing an input.",
            exists=False,
            dir_okay=True,
        ),
    ] = None,  # fmt: skip
    svd: SVDPathOption = SVDPath.auto,
    streaming: Streaming = None,
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Tensor train (TT-SVD) X ≈ G_0 G_1 … G_{N-1}, or TT rounding with --round.

    Written as cores/0 … cores/N-1 (r_{n-1} × I_n × r_n, r_0 = r_N = 1), TensorLy's layout.
    """
    with guarded("tt", common.debug):
        from rankwise.core import tt as core

        if tol is None and max_rank is None:
            raise CliUsageError("choose the ranks: give --tol, --max-rank or both")
        if (uri is None) == (round_ is None):
            raise CliUsageError("give either an input URI or --round FACTORS"
                                if uri is None else "give either an input URI or --round "
                                "FACTORS, not both")  # fmt: skip
        caps = None if max_rank is None else parse_ints(max_rank, "--max-rank")
        caps = caps[0] if caps is not None and len(caps) == 1 else caps
        core.check_parameters(tol=tol, max_rank=caps, svd=svd.value)
        run = Run("tt", common)
        if round_ is not None:
            if svd != SVDPath.auto or streaming is not None:
                raise CliUsageError("--svd and --streaming/--in-memory apply to TT-SVD of an "
                                    "input, not to --round")  # fmt: skip
            _round(run, round_, output, tol=tol, caps=caps)
            return
        handle = run.open_input(uri)
        _check_order(handle, method="tt", min_order=2)
        if caps is not None and not isinstance(caps, int) and len(caps) != handle.ndim - 1:
            raise CliUsageError(f"--max-rank needs 1 or {handle.ndim - 1} values for a tensor "
                                f"of order {handle.ndim}, got {len(caps)}")  # fmt: skip
        need = core.estimate_bytes(handle.shape, handle.dtype)
        run.prepare_outputs(output)
        data, hasher = _source(run, handle, method="tt", streaming=streaming,
                               in_memory_need=need)  # fmt: skip
        with run.compute("TT-SVD" + (", streaming" if hasher is not None else "")):
            res = core.tt(data, tol=tol, max_rank=caps, svd=svd.value, max_memory=run.budget,
                          streaming=hasher is not None,
                          on_first_pass=None if hasher is None
                          else hasher.update_rows)  # fmt: skip
        _commit_tt(run, res, handle=handle, data=data, requested="tt-svd",
                   fingerprint=None if hasher is None else hasher.hexdigest(),
                   parameters={"tol": tol, "max_rank": caps, "round": None, "svd": svd.value,
                               "streaming": hasher is not None})  # fmt: skip


def _round(run: Run, path: Path, output, *, tol, caps) -> None:
    from rankwise import formats
    from rankwise.core import tt as core
    from rankwise.core.errors import DataError

    path = Path(path)
    if not path.exists():
        from rankwise.formats import InputMissingError

        raise InputMissingError(f"{path}: no such file or directory")
    run.inputs.append(path)
    run.prepare_outputs(output)
    with run.step("read", f"reading {path}"):
        arrays, attrs = formats.read_result(path, max_bytes=run.budget)
    names = sorted((k for k in arrays if k.startswith("cores/")), key=lambda k: int(k[6:])
                   if k[6:].isdigit() else -1)  # fmt: skip
    if not names or [k[6:] for k in names] != [str(i) for i in range(len(names))]:
        raise DataError(f"{path}: no tensor train here (expected arrays cores/0 … cores/N-1, "
                        f"found {', '.join(sorted(arrays)) or 'none'})")  # fmt: skip
    cores = [arrays[k] for k in names]
    shape = [int(c.shape[1]) if c.ndim == 3 else -1 for c in cores]
    info = {
        "uri": str(path),
        "path": str(path.resolve()),
        "key": None,
        "format": formats.detect_format(path),
        "shape": shape,
        "dtype": str(cores[0].dtype),
        "sparse": False,
        "nnz": None,
        "missing": 0,
        "nonfinite": 0,
        "size_bytes": None,
        "fingerprint": formats.fingerprint_many({k: arrays[k] for k in names}),
    }
    with run.compute("TT rounding"):
        res = core.tt_round(cores, tol=tol, max_rank=caps)
    _commit_tt(run, res, handle=None, data=None, input_section=info, requested="tt-round",
               parameters={"tol": tol, "max_rank": caps, "round": str(path), "svd": None,
                           "streaming": False})  # fmt: skip


def _commit_tt(run: Run, res, *, handle, data, requested, parameters, fingerprint=None,
               input_section=None) -> None:  # fmt: skip
    m = res.metrics
    ranks = res.rank["value"]
    summary = (f"TT ranks {','.join(map(str, ranks[1:-1]))} ({res.rank['rule']}, {res.method}), "
               f"relative error {m['relative_frobenius_error']:.3g}, "
               f"{m['compression_ratio']:.3g}× compression")  # fmt: skip
    run.commit(res, handle=handle, data=data, fingerprint=fingerprint, requested=requested,
               parameters=parameters, summary=summary, input_section=input_section,
               attrs={"ranks": [int(r) for r in ranks], "method": res.method})  # fmt: skip
