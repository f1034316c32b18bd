"""rankwise complete: fill in the missing entries of a matrix or tensor."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from . import checkpoint as checkpoints
from . import options as opt
from .checkpoint import CheckpointOptions, with_checkpoint
from .engine import Engine, EngineOptions, with_engine
from .errors import CliUsageError
from .matrix import _progress
from .run import Common, Run, guarded


class Method(StrEnum):
    auto = "auto"
    softimpute = "softimpute"
    altmin = "altmin"
    cp = "cp"


class Solver(StrEnum):
    exact = "exact"
    cg = "cg"


class Init(StrEnum):
    auto = "auto"
    spectral = "spectral"
    random = "random"


def parse_clip(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(p) for p in text.split(","))
    except ValueError:
        raise CliUsageError(f"--clip takes LO,HI (e.g. 1,5), got {text!r}") from None
    if not lo < hi:
        raise CliUsageError(f"--clip needs LO < HI, got {text!r}")
    return (lo, hi)


@opt.with_common
@with_checkpoint
@with_engine
def complete(
    uri: opt.InputURI,
    output: opt.Output,
    rank: Annotated[int, typer.Option("--rank", "-k", min=1, help="Rank of the model (cap).")],
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="softimpute, altmin (matrices), cp (tensors of order ≥ 3); "
            "auto: softimpute for a matrix, cp for a tensor.",
        ),
    ] = Method.auto,  # fmt: skip
    reg: Annotated[
        float | None,
        typer.Option(
            "--reg",
            help="Regularisation λ > 0 [default: a small fraction of the "
            "largest useful λ, see the README].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    reg_path: Annotated[
        int | None,
        typer.Option(
            "--reg-path",
            min=1,
            metavar="N",
            help="softimpute: a decreasing path of N "
            "λ values from λ_max down to --reg, warm-started.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    solver: Annotated[
        Solver,
        typer.Option(
            "--solver",
            help="altmin row problems: exact (k×k solves, O(|Ω|k²) per "
            "sweep) or cg (a few preconditioned CG steps, O(|Ω|k)).",
        ),
    ] = Solver.exact,  # fmt: skip
    cg_steps: Annotated[
        int, typer.Option("--cg-steps", min=1, help="altmin --solver cg: CG steps per row.")
    ] = 3,
    init: Annotated[
        Init,
        typer.Option(
            "--init",
            help="Matrix methods: spectral (randomized SVD of the "
            "observed entries) or random; auto: spectral.",
        ),
    ] = Init.auto,  # fmt: skip
    n_init: Annotated[
        int, typer.Option("--n-init", min=1, help="cp: random restarts, the best kept.")
    ] = 1,
    tol: Annotated[
        float | None,
        typer.Option(
            "--tol",
            min=0.0,
            help="Stop when the training objective decreases by less "
            "than this fraction per sweep [default: 1e-7; cp 1e-9].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    max_iter: Annotated[
        int | None,
        typer.Option(
            "--max-iter",
            min=0,
            help="Most sweeps [default: softimpute 1000 (per λ), altmin 300, cp 500].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    holdout: Annotated[
        float | None,
        typer.Option(
            "--holdout",
            metavar="F",
            help="Keep a seeded random fraction F of the "
            "observed entries out of training and report RMSE, MAE and relative "
            "error on them, next to the mean-plus-biases baseline.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    clip: Annotated[
        str | None,
        typer.Option(
            "--clip",
            metavar="LO,HI",
            help="Clip predictions (metrics and the "
            "completed array) to [LO, HI], e.g. 1,5 for ratings.",
        ),
    ] = None,  # fmt: skip
    write_completed: Annotated[
        bool,
        typer.Option(
            "--write-completed",
            help="Also write the completed dense array "
            "(`completed`: observed entries as given, the model elsewhere) when it "
            "fits --max-memory.",
        ),
    ] = False,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint
    eng: EngineOptions = None,  # the engine options, from @with_engine
) -> None:
    """Complete a matrix or tensor with missing entries (NaN in dense input; the stored
    entries of sparse input are the observed ones)."""
    with guarded("complete", common.debug):
        import numpy as np

        from rankwise.core import complete as core

        box = parse_clip(clip)
        eng.check()
        if eng.engine == Engine.dask:
            from . import dask_commands

            checkpointing.not_applicable("the dask engine does not checkpoint; rerun instead")
            dask_commands.complete(Run("complete", common), uri, output, rank=rank,
                                   method=method.value, reg=reg, reg_path=reg_path,
                                   solver=solver.value, cg_steps=cg_steps, init=init.value,
                                   n_init=n_init, tol=tol, max_iter=max_iter, holdout=holdout,
                                   clip=box, write_completed=write_completed, eng=eng)  # fmt: skip
            return
        run = Run("complete", common)
        handle = run.open_input(uri)
        order = handle.ndim
        used = method.value
        if used == "auto":
            used = "softimpute" if order == 2 else "cp"
        if (used == "cp") != (order >= 3):
            raise CliUsageError(f"--method {used} is for "
                                f"{'tensors of order ≥ 3' if used == 'cp' else 'matrices'}; "
                                f"the input is {order}-D")  # fmt: skip
        misplaced = {"--reg-path": (reg_path is not None, ("softimpute",)),
                     "--solver": (solver != Solver.exact, ("altmin",)),
                     "--cg-steps": (cg_steps != 3, ("altmin",)),
                     "--init": (init != Init.auto, ("softimpute", "altmin")),
                     "--n-init": (n_init != 1, ("cp",))}  # fmt: skip
        wrong = [k for k, (given, ok) in misplaced.items() if given and used not in ok]
        if wrong:
            raise CliUsageError(f"{', '.join(wrong)} do(es) not apply to --method {used}")
        if cg_steps != 3 and solver != Solver.cg:
            raise CliUsageError("--cg-steps applies to --solver cg")
        tol = (1e-9 if used == "cp" else 1e-7) if tol is None else tol
        max_iter = {"softimpute": 1000, "altmin": 300, "cp": 500}[used] if max_iter is None \
            else max_iter  # fmt: skip
        core.check_parameters(method=used, rank=rank, reg=reg, reg_path=reg_path, tol=tol,
                              max_iter=max_iter, solver=solver.value, cg_steps=cg_steps,
                              init=init.value, n_init=n_init, holdout=holdout,
                              clip=box)  # fmt: skip
        nnz = handle.nnz if handle.sparse else int(np.prod(handle.shape))
        est = core.estimate_bytes(handle.shape, handle.dtype, rank, nnz=nnz or 0, method=used,
                                  solver=solver.value, dense_input=not handle.sparse,
                                  holdout=holdout is not None)  # fmt: skip
        core.budget(est, run.budget, "complete", handle.shape, handle.dtype)
        if write_completed:
            need = core.completed_bytes(handle.shape, handle.dtype)
            if need > run.budget:
                from rankwise.core.errors import BudgetError, human_bytes

                raise BudgetError(f"--write-completed: the completed array needs "
                                  f"{human_bytes(need)} but the memory budget is "
                                  f"{human_bytes(run.budget)}")  # fmt: skip
        run.prepare_outputs(output)
        fingerprint = None
        if handle.sparse:
            from rankwise import formats

            with run.step("read", f"reading {handle.uri.raw}"):
                entries = handle.read_entries(run.budget)
            data = (entries.indices, entries.values, entries.shape)
            fingerprint = formats.fingerprint_entries(entries)
        else:
            data = run.load(handle, method="complete", allow_nan=True)
        ck = checkpoints.start(run, checkpointing, data=data, fingerprint=fingerprint,
                               parameters={"rank": rank, "method": used, "reg": reg,
                                           "reg_path": reg_path, "solver": solver.value,
                                           "cg_steps": cg_steps, "init": init.value,
                                           "n_init": n_init, "tol": tol, "max_iter": max_iter,
                                           "holdout": holdout,
                                           "clip": None if box is None else list(box)})  # fmt: skip
        kw = {"reg": reg, "tol": tol, "max_iter": max_iter, "holdout": holdout, "clip": box,
              "rng": run.common.seed, "callback": ck.callback(_progress(run, "completion")),
              "max_memory": run.budget, "resume": ck.state}  # fmt: skip
        if used == "softimpute":
            kw.update(reg_path=reg_path, init=init.value)
        elif used == "altmin":
            kw.update(solver=solver.value, cg_steps=cg_steps, init=init.value)
        else:
            kw.update(n_init=n_init)
        with run.compute(f"completion ({used})"):
            res = core.complete(data, rank, method=used, **kw)
            ck.solved()
            if write_completed:
                res.arrays["completed"] = core.completed(
                    res, observed=data if not handle.sparse else _observed(core, data),
                    clip=box, max_memory=run.budget)  # fmt: skip
        parameters = {"rank": rank, "method": used, "reg": reg, "reg_path": reg_path,
                      "solver": solver.value if used == "altmin" else None,
                      "cg_steps": cg_steps if used == "altmin" and solver == Solver.cg else None,
                      "init": init.value if used != "cp" else None,
                      "n_init": n_init if used == "cp" else None, "tol": tol,
                      "max_iter": max_iter, "holdout": holdout,
                      "clip": None if box is None else list(box),
                      "write_completed": write_completed}  # fmt: skip
        m = res.metrics
        summary = f"{used} rank {rank}, train relative error {_train(m):.3g}"
        test = m.get("test")
        if test:
            summary += (f", held-out RMSE {test['rmse']:.4g} (baseline "
                        f"{m['baseline']['test']['rmse']:.4g})")  # fmt: skip
        if not res.converged:
            summary += f" (not converged: {res.stop_reason})"
        # the one rule here is the rank given
        row = {"rule": "rank", "threshold": rank, "rank": int(res.rank["value"]), "given": True}
        res.rank.setdefault("by_rule", [row])
        run.commit(res, handle=handle, data=data if not handle.sparse else None,
                   fingerprint=ck.fingerprint, requested=method.value, parameters=parameters,
                   summary=summary, attrs={"rank": int(rank), "method": used})  # fmt: skip
        ck.done()


def _observed(core, data):
    return core.observations(data, method="complete")


def _train(metrics: dict) -> float:
    train = metrics.get("train") or {}
    return float(train.get("relative_error", metrics.get("relative_frobenius_error", 0.0)))
