"""rankwise svd: truncated SVD / PCA of a matrix."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from . import options as opt
from .errors import CliUsageError
from .run import Common, Run, guarded


class SVDMethod(StrEnum):
    auto = "auto"
    exact = "exact"
    randomized = "randomized"
    lanczos = "lanczos"
    streaming = "streaming"


RULE_OPTIONS = {"rank": "--rank", "tol": "--tol", "energy": "--energy", "rel_sv": "--rel-sv"}


def rank_rule(rank, tol, energy, rel_sv):
    from rankwise.core.rank import RankRule

    given = {k: v for k, v in (("rank", rank), ("tol", tol), ("energy", energy),
                               ("rel_sv", rel_sv)) if v is not None}  # fmt: skip
    if not given:
        raise CliUsageError("choose the rank: give one of --rank, --tol, --energy, --rel-sv")
    if len(given) > 1:
        names = ", ".join(RULE_OPTIONS[k] for k in given)
        raise CliUsageError(f"give only one rank rule, got {names}")
    ((kind, value),) = given.items()
    return RankRule(kind, value)


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
        int, typer.Option("--oversample", help="Extra sketch columns (randomized).")
    ] = 10,
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
    force: opt.Force = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
    threads: opt.Threads = None,
    max_memory: opt.MaxMemory = None,
    seed: opt.Seed = 0,
    report: opt.ReportPath = None,
    json_: opt.Json = False,
) -> None:
    """Truncated SVD / PCA: A ≈ U·diag(S)·Vt, written as U, S, Vt (and mean with --center)."""
    common = Common(force=force, quiet=quiet, debug=debug, threads=threads,
                    max_memory=max_memory, seed=seed, report=report, json=json_)  # fmt: skip
    with guarded("svd", debug):
        run = Run("svd", common)
        _svd(run, uri, output, rank_rule(rank, tol, energy, rel_sv), method.value, center,
             oversample, power_iters, block_size, spectral_iters)  # fmt: skip


STREAMABLE_FORMATS = ("hdf5", "zarr", "npy")


def _svd(run: Run, uri, output, rule, method, center, oversample, power_iters, block_size,
         spectral_iters):  # fmt: skip
    import numpy as np

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
    fingerprint = None
    if plan.method == "streaming":
        # The data never sits in memory: hash it during the first pass over the file.
        data = handle
        hasher = formats.Fingerprinter(handle.dtype, handle.shape, sparse=False)
        on_first_pass = lambda start, block: hasher.update(block)  # noqa: E731
    else:
        data = run.load(handle, method="svd")
        on_first_pass = hasher = None

    def on_step(event):
        size = event.get("basis_size", event.get("rank", ""))
        run.progress(f"basis {size}, error {event.get('relative_error', float('nan')):.3g}")
        return False

    with run.compute(f"svd ({plan.method})"):
        res = core_svd.truncated_svd(
            data, rule, method=method, planned=plan, center=center,
            rng=np.random.default_rng(run.common.seed), oversample=oversample,
            power_iters=power_iters, block_size=block_size, max_memory=run.budget,
            spectral_iters=spectral_iters, on_first_pass=on_first_pass, callback=on_step,
        )  # fmt: skip
    if hasher is not None:
        fingerprint = hasher.hexdigest()
    parameters = {
        "rank": rule.value if rule.kind == "rank" else None,
        "tol": rule.value if rule.kind == "tol" else None,
        "energy": rule.value if rule.kind == "energy" else None,
        "rel_sv": rule.value if rule.kind == "rel_sv" else None,
        "method": method,
        "center": center,
        "oversample": oversample,
        # effective values; "auto" choices resolved (null where the method has none)
        "power_iters": res.details.get("power_iters"),
        "power_iters_mode": res.details.get("power_iters_mode"),
        "block_size": res.details.get("block_size"),
        "spectral_iters": res.details.get("spectral_iters"),
    }
    err = res.metrics["relative_frobenius_error"]
    summary = (f"rank {res.rank['value']} ({rule.kind} {rule.value:g}, {res.method}), "
               f"relative error {err:.3g}")  # fmt: skip
    run.commit(res, handle=handle, data=data, fingerprint=fingerprint, requested=method,
               parameters=parameters, summary=summary,
               attrs={"rank": int(res.rank["value"]), "method": res.method})  # fmt: skip
