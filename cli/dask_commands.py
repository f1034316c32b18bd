"""The `--engine dask` paths of tucker, nmf and complete (svd and rob keep theirs in their
modules): what runs on the workers, what each command refuses there, and the report."""

from __future__ import annotations

from .engine import run_on_dask
from .errors import CliUsageError
from .run import Run


def _refuse(given: dict, why: str) -> None:
    names = [k for k, v in given.items() if v]
    if names:
        raise CliUsageError(f"{', '.join(names)} do(es) not run on --engine dask ({why})")


# --- tucker --------------------------------------------------------------------------------------


def tucker(run: Run, uri, output, *, ranks, tol, budget, hooi: bool, svd: str, streaming, eng):
    from rankwise.core import distributed_tucker

    from .tensor import _check_order

    _refuse({"--budget": budget is not None, "--method hooi": hooi,
             "--streaming/--in-memory": streaming is not None},
            "there tucker is T-HOSVD of modes 1…N-1 from Grams summed on the workers, then "
            "mode 0 on the projected tensor; use --ranks or --tol")  # fmt: skip
    handle = run.open_input(uri)
    from rankwise.core import tucker as core

    _check_order(handle, method="tucker", min_order=3, hint=core.HINT_ORDER)
    if isinstance(ranks, list) and len(ranks) != handle.ndim:
        raise CliUsageError(f"--ranks needs 1 or {handle.ndim} values for a tensor of "
                            f"order {handle.ndim}, got {len(ranks)}")  # fmt: skip
    run.prepare_outputs(output)

    def fn(a, also, on_first_pass):
        return distributed_tucker.tucker(a, ranks=ranks, tol=tol, svd=svd, max_memory=run.budget,
                                         also=also, on_first_pass=on_first_pass)  # fmt: skip

    res, fingerprint = run_on_dask(run, handle, eng, "Tucker", fn)
    parameters = {"ranks": ranks, "tol": tol, "budget": None, "method": "sthosvd",
                  "budget_search": None, "iter_tol": None, "max_iter": None, "svd": svd,
                  "streaming": False}  # fmt: skip
    m = res.metrics
    shape = "×".join(map(str, res.rank["value"]))
    summary = (f"core {shape} ({res.rank['rule']}, {res.method} on {run.engine['workers']} "
               f"dask workers), relative error {m['relative_frobenius_error']:.3g} (a-priori "
               f"bound {m['a_priori_error_bound']:.3g}), {m['compression_ratio']:.3g}× "
               "compression")  # fmt: skip
    run.commit(res, handle=handle, data=None, fingerprint=fingerprint, requested="sthosvd",
               parameters=parameters, summary=summary,
               attrs={"ranks": [int(r) for r in res.rank["value"]], "method": res.method,
                      "engine": "dask"})  # fmt: skip


# --- nmf -----------------------------------------------------------------------------------------


def nmf(run: Run, uri, output, *, rank, semi, solver, loss, init, l1_w, l1_h, l2_w, l2_h, tol,
        max_iter, n_init, eng):  # fmt: skip
    import numpy as np

    from rankwise.core import distributed_nmf
    from rankwise.core import nmf as core

    from .matrix import _progress

    _refuse({"--semi": semi, "--solver mu": solver == "mu", "--loss kl": loss == "kl"},
            "there nmf is fast HALS for the Frobenius loss, W kept in row blocks on the "
            "workers")  # fmt: skip
    core.check_parameters(rank=rank, solver=solver, loss=loss, init=init, l1_w=l1_w, l1_h=l1_h,
                          l2_w=l2_w, l2_h=l2_h, tol=tol, max_iter=max_iter,
                          n_init=n_init)  # fmt: skip
    handle = run.open_input(uri)
    if handle.ndim != 2:
        raise CliUsageError(f"nmf needs a matrix, got {handle.ndim}-D input")
    run.prepare_outputs(output)

    def fn(a, also, on_first_pass):
        return distributed_nmf.nmf(
            a, rank, solver=solver, loss=loss, init=init, l1_w=l1_w, l1_h=l1_h, l2_w=l2_w,
            l2_h=l2_h, tol=tol, max_iter=max_iter, n_init=n_init,
            rng=np.random.default_rng(run.common.seed), callback=_progress(run, "NMF"),
            also=also, on_first_pass=on_first_pass,
        )  # fmt: skip

    res, fingerprint = run_on_dask(run, handle, eng, "NMF", fn, balance=True)
    d = res.details
    parameters = {"rank": rank, "semi": False, "solver": d["solver"], "loss": d["loss"],
                  "init": d["init"], "l1_w": l1_w, "l1_h": l1_h, "l2_w": l2_w, "l2_h": l2_h,
                  "tol": tol, "max_iter": max_iter, "n_init": n_init}  # fmt: skip
    err = res.metrics["relative_frobenius_error"]
    summary = (f"NMF rank {res.rank['value']} (hals, frobenius, {run.engine['workers']} dask "
               f"workers), {d['iterations']} sweeps, relative error {err:.3g}")  # fmt: skip
    if not res.converged:
        summary += f" (not converged: {res.stop_reason})"
    run.commit(res, handle=handle, data=None, fingerprint=fingerprint, requested=solver,
               parameters=parameters, summary=summary,
               attrs={"rank": int(res.rank["value"]), "method": res.method, "semi": False,
                      "engine": "dask"})  # fmt: skip


# --- complete ------------------------------------------------------------------------------------


def complete(run: Run, uri, output, *, rank, method, reg, reg_path, solver, cg_steps, init,
             n_init, tol, max_iter, holdout, clip, write_completed, eng):  # fmt: skip
    from rankwise.core import complete as core
    from rankwise.core import distributed_complete

    from .matrix import _progress

    if method != "altmin":
        raise CliUsageError("--engine dask completes matrices with --method altmin (exact row "
                            "solves, row-block parallel); softimpute and cp run on the local "
                            "engine")  # fmt: skip
    _refuse({"--solver cg": solver == "cg", "--cg-steps": cg_steps != 3,
             "--reg-path": reg_path is not None, "--n-init": n_init != 1,
             "--write-completed": write_completed},
            "there completion is altmin with exact row solves, by row blocks")  # fmt: skip
    tol = 1e-7 if tol is None else tol
    max_iter = 300 if max_iter is None else max_iter
    core.check_parameters(method="altmin", rank=rank, reg=reg, tol=tol, max_iter=max_iter,
                          solver="exact", init=init, holdout=holdout, clip=clip)  # fmt: skip
    handle = run.open_input(uri)
    if handle.ndim != 2:
        raise CliUsageError(f"--method altmin is for matrices; the input is {handle.ndim}-D")
    run.prepare_outputs(output)

    def fn(a, also, on_first_pass):
        return distributed_complete.altmin(
            a, rank, reg=reg, tol=tol, max_iter=max_iter, init=init, holdout=holdout,
            clip=clip, rng=run.common.seed, callback=_progress(run, "completion"),
            max_memory=run.budget, also=also, on_first_pass=on_first_pass,
        )  # fmt: skip

    res, fingerprint = run_on_dask(run, handle, eng, "completion (altmin)", fn, balance=True)
    run.missing = int(handle.shape[0] * handle.shape[1] - res.metrics["n_observed"])
    parameters = {"rank": rank, "method": "altmin", "reg": reg, "reg_path": None,
                  "solver": "exact", "cg_steps": None, "init": init, "n_init": None,
                  "tol": tol, "max_iter": max_iter, "holdout": holdout,
                  "clip": None if clip is None else list(clip),
                  "write_completed": False}  # fmt: skip
    m = res.metrics
    summary = (f"altmin rank {rank} on {run.engine['workers']} dask workers, train relative "
               f"error {m['train']['relative_error']:.3g}")  # fmt: skip
    if m.get("test"):
        summary += (f", held-out RMSE {m['test']['rmse']:.4g} (baseline "
                    f"{m['baseline']['test']['rmse']:.4g})")  # fmt: skip
    if not res.converged:
        summary += f" (not converged: {res.stop_reason})"
    res.rank.setdefault("by_rule", [{"rule": "rank", "threshold": rank,
                                     "rank": int(res.rank["value"]), "given": True}])  # fmt: skip
    run.commit(res, handle=handle, data=None, fingerprint=fingerprint, requested=method,
               parameters=parameters, summary=summary,
               attrs={"rank": int(rank), "method": "altmin", "engine": "dask"})  # fmt: skip
