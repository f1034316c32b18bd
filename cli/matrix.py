"""Matrix factorizations beyond the SVD: rankwise nmf, cur, kpsvd."""

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
from .svd import RULE_OPTIONS, rank_rule


class NMFSolver(StrEnum):
    auto = "auto"
    hals = "hals"
    mu = "mu"


class NMFLoss(StrEnum):
    frobenius = "frobenius"
    kl = "kl"


class NMFInit(StrEnum):
    auto = "auto"
    nndsvd = "nndsvd"
    nndsvda = "nndsvda"
    nndsvdar = "nndsvdar"
    random = "random"
    svd = "svd"


class CURMethod(StrEnum):
    randomized = "randomized"
    exact = "exact"


class KPSVDMethod(StrEnum):
    auto = "auto"
    exact = "exact"
    randomized = "randomized"
    lanczos = "lanczos"


def _common(**kw) -> Common:
    return Common(**{("json" if k == "json_" else k): v for k, v in kw.items()})


Rank = Annotated[int, typer.Option("--rank", "-k", min=1, help="Number of components.")]
Tol = Annotated[
    float,
    typer.Option("--tol", min=0.0, help="Stop when the objective decreases by less than this "
                 "fraction per sweep."),
]  # fmt: skip
MaxIter = Annotated[int, typer.Option("--max-iter", min=0, help="Most sweeps per restart.")]
Oversample = Annotated[
    int, typer.Option("--oversample", min=0, help="Extra sketch columns (randomized).")
]


def _penalty(name: str):
    kind, factor = name.upper().split("-")
    return Annotated[
        float,
        typer.Option(f"--{name}", min=0.0, help=f"{kind} penalty on {factor} (0: none)."),
    ]


@opt.with_common
@with_checkpoint
@with_engine
def nmf(
    uri: opt.InputURI,
    output: opt.Output,
    rank: Rank,
    semi: Annotated[
        bool,
        typer.Option(
            "--semi", help="Semi-NMF (Ding, Li & Jordan): W free, H ≥ 0, for mixed-sign data."
        ),
    ] = False,  # fmt: skip
    solver: Annotated[
        NMFSolver,
        typer.Option("--solver", help="auto: hals for the Frobenius loss, mu for KL."),
    ] = NMFSolver.auto,
    loss: Annotated[NMFLoss, typer.Option("--loss", help="Objective.")] = NMFLoss.frobenius,
    init: Annotated[
        NMFInit,
        typer.Option(
            "--init",
            help="auto: nndsvda (NMF) or svd (semi-NMF); nndsvd* are "
            "NMF-only, svd is semi-NMF-only.",
        ),
    ] = NMFInit.auto,  # fmt: skip
    l1_w: _penalty("l1-w") = 0.0,
    l1_h: _penalty("l1-h") = 0.0,
    l2_w: _penalty("l2-w") = 0.0,
    l2_h: _penalty("l2-h") = 0.0,
    tol: Tol = 1e-4,
    max_iter: MaxIter = 200,
    n_init: Annotated[
        int, typer.Option("--n-init", min=1, help="Restarts; the lowest objective is kept.")
    ] = 1,
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint
    eng: EngineOptions = None,  # the engine options, from @with_engine
) -> None:
    """Nonnegative matrix factorization A ≈ W·H (W, H ≥ 0), or semi-NMF with --semi.

    NaN entries of a dense input are missing: the fit covers the observed entries only.
    """
    with guarded("nmf", common.debug):
        if semi:
            nmf_only = {"--solver": solver != "auto", "--loss": loss != "frobenius",
                        "--l1-w": l1_w, "--l1-h": l1_h, "--l2-w": l2_w, "--l2-h": l2_h}  # fmt: skip
            given = [k for k, v in nmf_only.items() if v]
            if given:
                raise CliUsageError(f"{', '.join(given)} do(es) not apply to --semi (semi-NMF "
                                    "minimises the Frobenius loss by its own updates)")  # fmt: skip
            if init.value.startswith("nndsvd"):
                raise CliUsageError(f"--init {init.value} is for NMF; semi-NMF starts from "
                                    "svd or random")  # fmt: skip
        elif init == NMFInit.svd:
            raise CliUsageError("--init svd is for --semi; NMF starts from nndsvd, nndsvda, "
                                "nndsvdar or random")  # fmt: skip
        eng.check()
        if eng.engine == Engine.dask:
            from . import dask_commands

            checkpointing.not_applicable("the dask engine does not checkpoint; rerun instead")
            dask_commands.nmf(Run("nmf", common), uri, output, rank=rank, semi=semi,
                              solver=solver.value, loss=loss.value, init=init.value, l1_w=l1_w,
                              l1_h=l1_h, l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter,
                              n_init=n_init, eng=eng)  # fmt: skip
            return
        run = Run("nmf", common)
        _nmf(run, uri, output, rank=rank, semi=semi, solver=solver.value, loss=loss.value,
             init=init.value, l1_w=l1_w, l1_h=l1_h, l2_w=l2_w, l2_h=l2_h, tol=tol,
             max_iter=max_iter, n_init=n_init, checkpointing=checkpointing)  # fmt: skip


def _progress(run: Run, what: str):
    def on_sweep(event):
        restart = event.extras.get("restart")
        err = event.extras.get("relative_error")
        text = f"{what}: sweep {event.iteration}"
        if restart:
            text += f" (restart {restart + 1})"
        if err is not None:
            text += f", relative error {err:.3g}"
        run.progress(text)
        return False

    return on_sweep


def _nmf(run: Run, uri, output, *, rank, semi, solver, loss, init, l1_w, l1_h, l2_w, l2_h, tol,
         max_iter, n_init, checkpointing):  # fmt: skip
    import numpy as np

    from rankwise.core import nmf as core

    if semi:
        core.check_parameters(rank=rank, init="svd" if init == "auto" else init, tol=tol,
                              max_iter=max_iter, n_init=n_init, semi=True)  # fmt: skip
    else:
        core.check_parameters(rank=rank, solver=solver, loss=loss, init=init, l1_w=l1_w,
                              l1_h=l1_h, l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter,
                              n_init=n_init)  # fmt: skip
    handle = run.open_input(uri)
    run.prepare_outputs(output)
    # NaN = missing for NMF (masked fit); semi-NMF has no masked variant
    data = run.load(handle, method="semi-NMF" if semi else "nmf", allow_nan=not semi)
    bound = {"rank": rank, "semi": semi, "solver": solver, "loss": loss, "init": init,
             "l1_w": l1_w, "l1_h": l1_h, "l2_w": l2_w, "l2_h": l2_h, "tol": tol,
             "max_iter": max_iter, "n_init": n_init}  # fmt: skip
    ck = checkpoints.start(run, checkpointing, data=data, parameters=bound)
    rng = np.random.default_rng(run.common.seed)
    what = "semi-NMF" if semi else "NMF"
    callback = ck.callback(_progress(run, what))
    with run.compute(what):
        if semi:
            res = core.semi_nmf(data, rank, init="svd" if init == "auto" else init, tol=tol,
                                max_iter=max_iter, n_init=n_init, rng=rng, callback=callback,
                                max_memory=run.budget, resume=ck.state)  # fmt: skip
        else:
            res = core.nmf(data, rank, solver=solver, loss=loss, init=init, l1_w=l1_w,
                           l1_h=l1_h, l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter,
                           n_init=n_init, rng=rng, callback=callback, max_memory=run.budget,
                           resume=ck.state)  # fmt: skip
    ck.solved()
    d = res.details
    parameters = {
        "rank": rank,
        "semi": semi,
        "solver": d["solver"],
        "loss": d["loss"],
        "init": d["init"],
        "l1_w": l1_w,
        "l1_h": l1_h,
        "l2_w": l2_w,
        "l2_h": l2_h,
        "tol": tol,
        "max_iter": max_iter,
        "n_init": n_init,
    }
    err = res.metrics["relative_frobenius_error"]
    where = " over observed entries" if d.get("masked") else ""
    summary = (f"{what} rank {res.rank['value']} ({d['solver']}, {d['loss']}), "
               f"{d['iterations']} sweeps, relative error{where} {err:.3g}")  # fmt: skip
    if not res.converged:
        summary += f" (not converged: {res.stop_reason})"
    run.commit(res, handle=handle, data=data, requested=solver if not semi else "semi-nmf",
               parameters=parameters, summary=summary, fingerprint=ck.fingerprint,
               attrs={"rank": int(res.rank["value"]), "method": res.method,
                      "semi": bool(semi)})  # fmt: skip
    ck.done()


@opt.with_common
def cur(
    uri: opt.InputURI,
    output: opt.Output,
    rank: Rank,
    method: Annotated[
        CURMethod,
        typer.Option(
            "--method",
            help="randomized: pivoted QR of a sketch, O(mnk); exact: "
            "pivoted QR of the whole (dense) matrix.",
        ),
    ] = CURMethod.randomized,  # fmt: skip
    oversample: Oversample = 10,
    power_iters: Annotated[
        int, typer.Option("--power-iters", min=0, help="Subspace iterations of the sketch.")
    ] = 1,
    optimal: Annotated[
        bool,
        typer.Option(
            "--optimal/--no-optimal",
            help="Also compute the optimal rank-K error (a truncated SVD) to compare with.",
        ),
    ] = True,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """CUR decomposition A ≈ C·U·R with C = A[:, cols] and R = A[rows, :]."""
    with guarded("cur", common.debug):
        import numpy as np

        from rankwise.core import cur as core

        run = Run("cur", common)
        handle = run.open_input(uri)
        run.prepare_outputs(output)
        data = run.load(handle, method="cur")
        with run.compute(f"CUR ({method.value})"):
            res = core.cur(data, rank, oversample=oversample, power_iters=power_iters,
                           rng=np.random.default_rng(run.common.seed), method=method.value,
                           compare_optimal=optimal, max_memory=run.budget)  # fmt: skip
        parameters = {"rank": rank, "method": method.value, "oversample": oversample,
                      "power_iters": power_iters, "optimal": optimal}  # fmt: skip
        m = res.metrics
        summary = f"rank {res.rank['value']}, relative error {m['relative_frobenius_error']:.3g}"
        if "error_ratio" in m:
            summary += f" ({m['error_ratio']:.3g}× the optimal {m['optimal_relative_error']:.3g})"
        run.commit(res, handle=handle, data=data, requested=method.value,
                   parameters=parameters, summary=summary,
                   attrs={"rank": int(res.rank["value"]), "method": res.method})  # fmt: skip


def parse_block(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        m1, n1 = (int(p) for p in parts)
    except ValueError:
        raise CliUsageError(f"--block must look like M1xN1 (e.g. 4x8), got {text!r}") from None
    if m1 < 1 or n1 < 1:
        raise CliUsageError(f"--block sizes must be positive, got {text!r}")
    return m1, n1


@opt.with_common
def kpsvd(
    uri: opt.InputURI,
    output: opt.Output,
    block: Annotated[
        str,
        typer.Option(
            "--block", metavar="M1xN1", help="Shape of the A factors; B factors are (m/M1)×(n/N1)."
        ),
    ],  # fmt: skip
    rank: Annotated[
        int | None, typer.Option("--rank", "-k", min=1, help="Keep this many terms.")
    ] = None,
    tol: Annotated[
        float | None,
        typer.Option("--tol", help="Fewest terms with relative Frobenius error ≤ TOL."),
    ] = None,
    energy: Annotated[
        float | None,
        typer.Option("--energy", help="Fewest terms keeping this fraction of ‖A‖²_F (0–1]."),
    ] = None,
    rel_sv: Annotated[
        float | None,
        typer.Option("--rel-sv", help="Keep terms with S_i ≥ REL_SV × S_1."),
    ] = None,
    elbow: Annotated[
        bool,
        typer.Option("--elbow", help="Number of terms at the elbow of the Kronecker spectrum."),
    ] = False,
    method: Annotated[
        KPSVDMethod,
        typer.Option("--method", help="SVD of the rearranged matrix (--elbow needs exact)."),
    ] = KPSVDMethod.auto,
    oversample: Oversample = 10,
    power_iters: Annotated[
        int | None,
        typer.Option(
            "--power-iters",
            min=0,
            help="Subspace iterations (randomized) [default: adaptive].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Kronecker-product SVD: A ≈ Σ S_i A_i ⊗ B_i (Van Loan–Pitsianis)."""
    with guarded("kpsvd", common.debug):
        import numpy as np

        from rankwise.core import kpsvd as core

        m1, n1 = parse_block(block)
        rules = [rank, tol, energy, rel_sv]
        if elbow and any(v is not None for v in rules):
            given = [o for o, v in zip(RULE_OPTIONS.values(), rules, strict=True) if v is not None]
            raise CliUsageError(f"give either --elbow or a rank rule, not both ({given[0]})")
        rule = None if elbow else rank_rule(rank, tol, energy, rel_sv, extra="--elbow")
        run = Run("kpsvd", common)
        handle = run.open_input(uri)
        if handle.ndim != 2:
            raise CliUsageError(f"kpsvd needs a matrix, got {handle.ndim}-D input")
        core.parse_block((m1, n1), handle.shape)
        run.prepare_outputs(output)
        data = run.load(handle, method="kpsvd")
        with run.compute("Kronecker-product SVD"):
            res = core.kpsvd(data, (m1, n1), rule=rule, elbow=elbow, method=method.value,
                             rng=np.random.default_rng(run.common.seed), oversample=oversample,
                             power_iters=power_iters, max_memory=run.budget)  # fmt: skip
        svd_details = res.details["svd"]
        parameters = {
            "block": [m1, n1],
            "rank": rank,
            "tol": tol,
            "energy": energy,
            "rel_sv": rel_sv,
            "elbow": elbow,
            "method": method.value,
            "oversample": oversample,
            "power_iters": svd_details.get("power_iters"),
        }
        k = res.rank["value"]
        err = res.metrics["relative_frobenius_error"]
        m2, n2 = handle.shape[0] // m1, handle.shape[1] // n1
        summary = (f"{k} Kronecker term(s) of {m1}×{n1} ⊗ {m2}×{n2} ({res.rank['rule']}), "
                   f"relative error {err:.3g}")  # fmt: skip
        run.commit(res, handle=handle, data=data, requested=method.value,
                   parameters=parameters, summary=summary,
                   attrs={"rank": int(k), "method": res.method, "block": [m1, n1]})  # fmt: skip
