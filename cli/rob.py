"""rankwise rob: reduced-order bases from snapshot matrices (dofs × snapshots)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from . import checkpoint as checkpoints
from . import options as opt
from .checkpoint import CheckpointOptions, with_checkpoint
from .engine import Engine, EngineOptions, with_engine
from .errors import CheckFailed, CliUsageError
from .run import Common, Run, guarded

app = typer.Typer(
    name="rob",
    help="Reduced-order bases: POD, enrichment, merging, local bases, projection checks, DEIM.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Criterion(StrEnum):
    rel_frob = "rel-frob"
    abs_frob = "abs-frob"
    energy = "energy"
    rel_sv = "rel-sv"
    abs_sv = "abs-sv"


class PODMethod(StrEnum):
    auto = "auto"
    svd = "svd"
    snapshots = "snapshots"
    randomized = "randomized"


class Layout(StrEnum):
    columns = "columns"
    rows = "rows"


class Dissimilarity(StrEnum):
    sine = "sine"
    euclidean = "euclidean"
    grassmann = "grassmann"


class DEIMMethod(StrEnum):
    qdeim = "qdeim"
    deim = "deim"


Tol = Annotated[
    float | None,
    typer.Option("--tol", help="Truncation threshold for --criterion (give --tol or --rank)."),
]
CriterionOption = Annotated[
    Criterion,
    typer.Option(
        "--criterion",
        help="How --tol truncates: rel-frob (‖X − VVᵀMX‖_F ≤ TOL‖X‖_F), abs-frob (≤ TOL), "
        "energy (keep ≥ TOL of ‖X‖²), rel-sv (σ ≥ TOL·σ₁), abs-sv (σ ≥ TOL).",
    ),
]  # fmt: skip
Rank = Annotated[int | None, typer.Option("--rank", "-k", min=1, help="Keep N modes.")]
Mass = Annotated[
    str | None,
    typer.Option("--mass", metavar="URI", help="Sparse SPD mass matrix M (e.g. MatrixMarket): "
                 "inner product xᵀMy, M-orthonormal basis."),
]  # fmt: skip
Weights = Annotated[
    str | None,
    typer.Option("--weights", metavar="URI",
                 help="Positive weight per dof (1-D): the diagonal of M."),
]  # fmt: skip
Snapshots = Annotated[
    Layout,
    typer.Option("--snapshots", help="columns: the input is dofs × snapshots; rows: snapshots × "
                 "dofs (transposed on reading)."),
]  # fmt: skip


def _rule(criterion, tol, rank):
    from rankwise.core.pod import rule_from

    if (tol is None) == (rank is None):
        raise CliUsageError("choose the basis size: give --tol (with --criterion) or --rank")
    if rank is not None and criterion != Criterion.rel_frob:
        raise CliUsageError("--criterion applies to --tol, not to --rank")
    return rule_from(criterion.value if tol is not None else None, tol, rank)


def _rule_parameters(rule, criterion, tol, rank) -> dict:
    return {"tol": tol, "criterion": criterion.value if tol is not None else None, "rank": rank}


def _aux(run: Run, uri: str | None, what: str):
    """A mass matrix (kept sparse) or a weight vector, with its report entry."""
    if uri is None:
        return None, None
    from rankwise import formats

    handle = run.open_input(uri)
    data = run.read(handle)
    info = {"uri": handle.uri.raw, "format": handle.format,
            "shape": [int(s) for s in handle.shape], "dtype": str(handle.dtype),
            "fingerprint": formats.fingerprint(data)}  # fmt: skip
    if what == "--weights" and handle.sparse:
        data = data.toarray()
    return data, info


def _inner(run: Run, mass, weights):
    if mass is not None and weights is not None:
        raise CliUsageError("give --mass or --weights, not both")
    m, m_info = _aux(run, mass, "--mass")
    w, w_info = _aux(run, weights, "--weights")
    if w is not None:
        import numpy as np

        w = np.ravel(w) if np.ndim(w) == 2 and 1 in np.shape(w) else w
    return m, w, m_info, w_info


def _snapshots(run: Run, handle, layout: Layout, method: str):
    data = run.load(handle, method=method)
    if handle.sparse:
        data = data.toarray()  # snapshot matrices are dense; the budget check was done
    return data.T if layout == Layout.rows else data


def _read_basis(run: Run, path: Path, *, local_ok: bool = False):
    from rankwise import formats
    from rankwise.core.errors import DataError

    path = Path(path)
    if not path.exists():
        raise formats.InputMissingError(f"{path}: no such file or directory")
    run.inputs.append(path)
    with run.step("read", f"reading {path}"):
        arrays, attrs = formats.read_result(path, max_bytes=run.budget)
    kind = attrs.get("kind", "")
    if "basis" in arrays and "singular_values" in arrays:
        return arrays, attrs, False
    if local_ok and "medoids" in arrays and any(k.startswith("basis/") for k in arrays):
        return arrays, attrs, True
    want = (
        "a rob pod, enrich, merge or local output"
        if local_ok
        else "a rob pod, enrich or merge output"
    )
    found = ", ".join(sorted(arrays)) or "no arrays"
    raise DataError(f"{path}: not a basis ({want}: arrays basis and singular_values); found "
                    f"{kind or 'no kind'} with {found}")  # fmt: skip


def _basis_section(path: Path, arrays: dict, attrs: dict) -> dict:
    from rankwise import formats

    b = arrays.get("basis")
    return {"path": str(Path(path).resolve()), "kind": attrs.get("kind"),
            "modes": None if b is None else int(b.shape[1]),
            "fingerprint": formats.fingerprint_many(arrays)}  # fmt: skip


def _file_input(path: Path, arrays: dict, attrs: dict) -> dict:
    """The report's input section for a command whose input is a basis file."""
    from rankwise import formats

    b = arrays.get("basis")
    return {"uri": str(path), "path": str(Path(path).resolve()), "key": None,
            "format": formats.detect_format(Path(path)),
            "shape": [] if b is None else [int(s) for s in b.shape],
            "dtype": str(b.dtype) if b is not None else "float64", "sparse": False, "nnz": None,
            "missing": 0, "nonfinite": 0, "size_bytes": None,
            "fingerprint": formats.fingerprint_many(arrays)}  # fmt: skip


def _basis_attrs(res, rule) -> dict:
    return {"modes": int(res.arrays["basis"].shape[1]), "method": res.method,
            "discarded_energy": float(res.metrics.get("discarded_energy", 0.0)),
            "rule": rule.kind, "threshold": float(rule.value)}  # fmt: skip


def _pod_summary(res, what: str) -> str:
    m = res.metrics
    n = res.rank["value"]
    text = f"{what}: {n} mode(s) ({res.rank['rule']} {res.rank['threshold']:g}, {res.method})"
    if "relative_frobenius_error" in m:
        text += f", relative error {m['relative_frobenius_error']:.3g}"
    if "error_bound" in m:
        text += f", error bound {m['error_bound']['relative']:.3g}"
    return text


# --- rob pod ------------------------------------------------------------------------------------


@app.command("pod")
@opt.with_common
@with_engine
def pod(
    uri: opt.InputURI,
    output: opt.Output,
    tol: Tol = None,
    criterion: CriterionOption = Criterion.rel_frob,
    rank: Rank = None,
    method: Annotated[
        PODMethod,
        typer.Option(
            "--method",
            help="svd, snapshots (Gram + eigh, re-orthonormalised), "
            "randomized; auto picks and says why.",
        ),
    ] = PODMethod.auto,  # fmt: skip
    center: Annotated[bool, typer.Option("--center", help="Subtract the mean snapshot.")] = False,
    mass: Mass = None,
    weights: Weights = None,
    snapshots: Snapshots = Layout.columns,
    oversample: Annotated[
        int, typer.Option("--oversample", min=0, help="Extra sketch columns (randomized).")
    ] = 10,
    power_iters: Annotated[
        int | None,
        typer.Option(
            "--power-iters",
            min=0,
            help="Subspace iterations (randomized) [default: adaptive].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    streaming: Annotated[
        bool | None,
        typer.Option(
            "--streaming/--in-memory",
            help="Method of snapshots over row blocks of "
            "an HDF5/Zarr/NPY file [default: when it does not fit --max-memory].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    eng: EngineOptions = None,  # the engine options, from @with_engine
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """POD basis of a snapshot matrix: basis (dofs × N), singular_values (and mean)."""
    with guarded("rob pod", common.debug):
        import numpy as np

        from rankwise import formats
        from rankwise.core import pod as core

        from .svd import STREAMABLE_FORMATS

        rule = _rule(criterion, tol, rank)
        eng.check()
        if eng.engine == Engine.dask:
            local_only = {"--mass": mass is not None,
                          "--streaming/--in-memory": streaming is not None,
                          "--snapshots rows": snapshots == Layout.rows,
                          "--method": method not in (PODMethod.auto, PODMethod.svd),
                          "--power-iters": power_iters is not None}  # fmt: skip
            given = [k for k, v in local_only.items() if v]
            if given:
                raise CliUsageError(f"{', '.join(given)} do(es) not run on --engine dask (POD "
                                    "there is a TSQR of W^½X)")  # fmt: skip
        run = Run("rob pod", common)
        handle = run.open_input(uri)
        if handle.ndim != 2:
            raise CliUsageError(f"rob pod needs a snapshot matrix, got {handle.ndim}-D input")
        m, w, m_info, w_info = _inner(run, mass, weights)
        parameters = {**_rule_parameters(rule, criterion, tol, rank), "method": method.value,
                      "center": center, "mass": m_info, "weights": w_info,
                      "snapshots": snapshots.value, "oversample": oversample,
                      "power_iters": power_iters, "streaming": bool(streaming)}  # fmt: skip
        if eng.engine == Engine.dask:
            from rankwise.core import distributed

            from .engine import run_on_dask

            run.prepare_outputs(output)

            def fn(a, also, on_first_pass):
                return distributed.pod(a, rule, center=center, weights=w, also=also,
                                       on_first_pass=on_first_pass)  # fmt: skip

            res, fp = run_on_dask(run, handle, eng, "POD", fn)
            run.commit(res, handle=handle, data=None, fingerprint=fp, requested=method.value,
                       parameters=parameters, summary=_pod_summary(res, "POD (dask)"),
                       attrs={**_basis_attrs(res, rule), "engine": "dask"})  # fmt: skip
            return
        streamable = not handle.sparse and handle.format in STREAMABLE_FORMATS
        if streaming and (not streamable or snapshots == Layout.rows):
            raise CliUsageError("--streaming reads dofs × snapshots HDF5, Zarr or NPY arrays "
                                "in row blocks (not --snapshots rows, sparse or "
                                f"{handle.format} input)")  # fmt: skip
        run.prepare_outputs(output)
        hasher = None
        if streaming is None:
            k = int(rule.value) if rule.kind == "rank" else None
            need = core.estimate_bytes(handle.shape, handle.dtype, method=method.value,
                                       center=center, rank=k)  # fmt: skip
            streaming = bool(streamable and snapshots == Layout.columns and need > run.budget)
            if streaming and method.value not in ("auto", "snapshots"):
                from rankwise.core.errors import BudgetError, human_bytes

                raise BudgetError(f"rob pod --method {method.value} needs the snapshots in "
                                  f"memory (about {human_bytes(need)}) but the memory budget is "
                                  f"{human_bytes(run.budget)}; the method of snapshots "
                                  "streams")  # fmt: skip
        if streaming:
            data = handle
            hasher = formats.Fingerprinter(handle.dtype, handle.shape, sparse=False)
        else:
            data = _snapshots(run, handle, snapshots, "rob pod")
        with run.compute("POD" + (", streaming" if streaming else "")):
            res = core.pod(data, rule, method=method.value, center=center, mass=m, weights=w,
                           rng=np.random.default_rng(run.common.seed), oversample=oversample,
                           power_iters=power_iters, max_memory=run.budget, streaming=streaming,
                           on_first_pass=None if hasher is None
                           else hasher.update_rows)  # fmt: skip
        parameters["streaming"] = bool(streaming)
        run.commit(res, handle=handle, data=data,
                   fingerprint=None if hasher is None else hasher.hexdigest(),
                   requested=method.value, parameters=parameters,
                   summary=_pod_summary(res, "POD"), attrs=_basis_attrs(res, rule))  # fmt: skip


# --- rob enrich ---------------------------------------------------------------------------------


@app.command("enrich")
@opt.with_common
def enrich(
    basis: Annotated[
        Path,
        typer.Argument(metavar="BASIS", help="A rob pod/enrich/merge output.", show_default=False),
    ],
    uri: opt.InputURI,
    output: opt.Output,
    tol: Tol = None,
    criterion: CriterionOption = Criterion.rel_frob,
    rank: Rank = None,
    mass: Mass = None,
    weights: Weights = None,
    snapshots: Snapshots = Layout.columns,
    one_at_a_time: Annotated[
        bool,
        typer.Option(
            "--one-at-a-time",
            help="Brand's update per snapshot instead of one block "
            "update (the same result up to rounding; for streams of snapshots).",
        ),
    ] = False,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Add new snapshots to a basis without the old ones (incremental SVD)."""
    with guarded("rob enrich", common.debug):
        from rankwise.core import pod as core

        rule = _rule(criterion, tol, rank)
        run = Run("rob enrich", common)
        arrays, attrs, _ = _read_basis(run, basis)
        _no_mean(arrays, basis)
        handle = run.open_input(uri)
        m, w, m_info, w_info = _inner(run, mass, weights)
        run.prepare_outputs(output)
        data = _snapshots(run, handle, snapshots, "rob enrich")
        with run.compute("incremental POD"):
            res = core.enrich(arrays["basis"], arrays["singular_values"], data, rule, mass=m,
                              weights=w, discarded_energy=float(attrs.get("discarded_energy", 0.0)),
                              columns_per_update=1 if one_at_a_time else None)  # fmt: skip
        parameters = {**_rule_parameters(rule, criterion, tol, rank),
                      "basis": _basis_section(basis, arrays, attrs), "mass": m_info,
                      "weights": w_info, "snapshots": snapshots.value,
                      "one_at_a_time": one_at_a_time}  # fmt: skip
        run.commit(res, handle=handle, data=data, requested="incremental",
                   parameters=parameters, summary=_pod_summary(res, "enriched basis"),
                   attrs=_basis_attrs(res, rule))  # fmt: skip


def _no_mean(arrays, path):
    if "mean" in arrays:
        from rankwise.core.errors import DataError

        raise DataError(f"{path}: a centred basis (it has a mean) cannot be enriched or "
                        "merged: the mean would move with the new snapshots; build it without "
                        "--center")  # fmt: skip


# --- rob merge ----------------------------------------------------------------------------------


@app.command("merge")
@opt.with_common
def merge(
    bases: Annotated[
        list[Path],
        typer.Argument(
            metavar="BASIS...", help="Two or more rob pod/enrich/merge outputs.", show_default=False
        ),
    ],
    output: opt.Output,
    tol: Tol = None,
    criterion: CriterionOption = Criterion.rel_frob,
    rank: Rank = None,
    mass: Mass = None,
    weights: Weights = None,
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Merge bases of separate snapshot sets (HAPOD), with the error bound in the report."""
    with guarded("rob merge", common.debug):
        from rankwise import formats
        from rankwise.core import pod as core

        rule = _rule(criterion, tol, rank)
        if len(bases) < 2:
            raise CliUsageError("rob merge needs at least two bases")
        run = Run("rob merge", common)
        parts, sections, all_arrays = [], [], {}
        for i, path in enumerate(bases):
            arrays, attrs, _ = _read_basis(run, path)
            _no_mean(arrays, path)
            parts.append((arrays["basis"], arrays["singular_values"],
                          float(attrs.get("discarded_energy", 0.0))))  # fmt: skip
            sections.append(_basis_section(path, arrays, attrs))
            all_arrays.update({f"{i}/{k}": v for k, v in arrays.items()})
        m, w, m_info, w_info = _inner(run, mass, weights)
        run.prepare_outputs(output)
        with run.compute("HAPOD merge"):
            res = core.merge(parts, rule, mass=m, weights=w)
        first = parts[0][0]
        info = {"uri": " ".join(map(str, bases)), "path": str(Path(bases[0]).resolve()),
                "key": None, "format": formats.detect_format(Path(bases[0])),
                "shape": [int(first.shape[0]), sum(int(p[0].shape[1]) for p in parts)],
                "dtype": str(first.dtype), "sparse": False, "nnz": None, "missing": 0,
                "nonfinite": 0, "size_bytes": None,
                "fingerprint": formats.fingerprint_many(all_arrays)}  # fmt: skip
        parameters = {**_rule_parameters(rule, criterion, tol, rank), "bases": sections,
                      "mass": m_info, "weights": w_info}  # fmt: skip
        run.commit(res, handle=None, data=None, input_section=info, requested="hapod",
                   parameters=parameters, summary=_pod_summary(res, "merged basis"),
                   attrs=_basis_attrs(res, rule))  # fmt: skip


# --- rob local ----------------------------------------------------------------------------------


def parse_clusters(text: str):
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            if lo < 1 or hi < lo:
                raise ValueError
            return range(lo, hi + 1)
        k = int(text)
        if k < 1:
            raise ValueError
        return k
    except ValueError:
        raise CliUsageError(
            f"--clusters takes K or a range LO:HI (e.g. 2:8), got {text!r}"
        ) from None


@app.command("local")
@opt.with_common
@with_checkpoint
def local(
    uri: opt.InputURI,
    output: opt.Output,
    clusters: Annotated[
        str,
        typer.Option(
            "--clusters",
            metavar="K|LO:HI",
            help="Number of clusters, or a range: "
            "the K with the smallest feasible efficiency η(K) is kept.",
        ),
    ],  # fmt: skip
    tol: Tol = None,
    criterion: CriterionOption = Criterion.rel_frob,
    rank: Rank = None,
    dissimilarity: Annotated[
        Dissimilarity,
        typer.Option(
            "--dissimilarity",
            help="sine: √(1 − cos²θ) between snapshots "
            "(scale-invariant); euclidean; grassmann: principal angles between the "
            "bases of whole simulations (needs --groups).",
        ),
    ] = Dissimilarity.sine,  # fmt: skip
    groups: Annotated[
        str | None,
        typer.Option(
            "--groups",
            metavar="URI",
            help="One integer label per snapshot: which simulation it comes from (for grassmann).",
        ),
    ] = None,  # fmt: skip
    n_init: Annotated[
        int, typer.Option("--n-init", min=1, help="Seeded k-medoids restarts; the best is kept.")
    ] = 10,
    refine: Annotated[
        bool,
        typer.Option(
            "--refine",
            help="k-subspaces refinement: reassign each snapshot to "
            "the basis that projects it best, recompute, repeat.",
        ),
    ] = False,  # fmt: skip
    max_iter: Annotated[
        int, typer.Option("--max-iter", min=0, help="Most k-medoids / refinement sweeps.")
    ] = 100,
    mass: Mass = None,
    weights: Weights = None,
    snapshots: Snapshots = Layout.columns,
    common: Common = None,  # the shared options, from @opt.with_common
    checkpointing: CheckpointOptions = None,  # from @with_checkpoint
) -> None:
    """Local POD bases: cluster the snapshots, one basis per cluster."""
    with guarded("rob local", common.debug):
        import numpy as np

        from rankwise.core import local as core

        rule = _rule(criterion, tol, rank)
        ks = parse_clusters(clusters)
        if (dissimilarity == Dissimilarity.grassmann) != (groups is not None):
            raise CliUsageError("--dissimilarity grassmann needs --groups (and --groups only "
                                "applies to grassmann)")  # fmt: skip
        run = Run("rob local", common)
        handle = run.open_input(uri)
        g, g_info = _aux(run, groups, "--groups")
        m, w, m_info, w_info = _inner(run, mass, weights)
        run.prepare_outputs(output)
        data = _snapshots(run, handle, snapshots, "rob local")
        parameters = {**_rule_parameters(rule, criterion, tol, rank), "clusters": clusters,
                      "dissimilarity": dissimilarity.value, "groups": g_info, "n_init": n_init,
                      "refine": refine, "max_iter": max_iter, "mass": m_info, "weights": w_info,
                      "snapshots": snapshots.value}  # fmt: skip
        ck = checkpoints.start(run, checkpointing, data=data, parameters=parameters)
        with run.compute("local POD"):
            res = core.local_pod(data, rule, clusters=ks, dissimilarity=dissimilarity.value,
                                 groups=None if g is None else np.ravel(g), n_init=n_init,
                                 refine=refine, max_iter=max_iter,
                                 rng=np.random.default_rng(run.common.seed), mass=m,
                                 weights=w, callback=ck.callback(), resume=ck.state)  # fmt: skip
        ck.solved()
        mt = res.metrics
        summary = (f"{mt['chosen_k']} clusters ({dissimilarity.value}), modes "
                   f"{','.join(map(str, res.rank['value']))} against {mt['global']['rank']} "
                   f"global, efficiency η = {mt['efficiency']:.3g}"
                   f"{'' if mt['feasible'] else ' (infeasible)'}")  # fmt: skip
        run.commit(res, handle=handle, data=data, requested=dissimilarity.value,
                   parameters=parameters, summary=summary, fingerprint=ck.fingerprint,
                   attrs={"clusters": int(mt["chosen_k"]), "dissimilarity": dissimilarity.value,
                          "method": res.method})  # fmt: skip
        ck.done()


# --- rob project --------------------------------------------------------------------------------


@app.command("project")
@opt.with_common
@with_engine
def project(
    basis: Annotated[
        Path,
        typer.Argument(
            metavar="BASIS", help="A rob pod/enrich/merge/local output.", show_default=False
        ),
    ],
    uri: opt.InputURI,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the errors (.h5/.hdf5, .zarr, .npz); the report goes next to it.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    max_error: Annotated[
        float | None,
        typer.Option(
            "--max-error",
            min=0.0,
            help="Exit 3 when the worst relative projection "
            "error exceeds this (the report is still written).",
        ),
    ] = None,  # fmt: skip
    mass: Mass = None,
    weights: Weights = None,
    snapshots: Snapshots = Layout.columns,
    eng: EngineOptions = None,  # the engine options, from @with_engine
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Projection errors of snapshots on a basis (local bases: nearest medoid, and the best)."""
    with guarded("rob project", common.debug):
        eng.check()
        run = Run("rob project", common)
        arrays, attrs, is_local = _read_basis(run, basis, local_ok=True)
        on_dask = eng.engine == Engine.dask
        if on_dask and (is_local or mass is not None or snapshots == Layout.rows):
            raise CliUsageError("--engine dask projects on one basis with the Euclidean or "
                                "--weights inner product, dofs × snapshots; local bases, "
                                "--mass and --snapshots rows run on the local engine")  # fmt: skip
        handle = run.open_input(uri)
        m, w, m_info, w_info = _inner(run, mass, weights)
        run.prepare_outputs(output)
        res, data, fingerprint = _project(run, handle, arrays, attrs, is_local, m, w, snapshots,
                                          eng if on_dask else None)  # fmt: skip
        mt = res.metrics
        parameters = {"basis": _basis_section(basis, arrays, attrs), "max_error": max_error,
                      "mass": m_info, "weights": w_info, "snapshots": snapshots.value,
                      "centred": "mean" in arrays}  # fmt: skip
        failed = max_error is not None and mt["worst"] > max_error
        summary = (
            f"{handle.shape[1 if snapshots == Layout.columns else 0]} snapshot(s): mean "
            "relative projection error "
            f"{mt['mean']:.3g}, worst {mt['worst']:.3g} (snapshot {mt['worst_snapshot']})"
        )
        if max_error is not None:
            summary += f"; {'ABOVE' if failed else 'within'} --max-error {max_error:g}"
        run.commit(res, handle=handle, data=data, fingerprint=fingerprint, requested="project",
                   parameters=parameters, summary=summary,
                   attrs={"local": bool(is_local)})  # fmt: skip
        if failed:
            raise CheckFailed(f"worst relative projection error {mt['worst']:.3g} > --max-error "
                              f"{max_error:g} (snapshot {mt['worst_snapshot']})")  # fmt: skip


def _project(run: Run, handle, arrays, attrs, is_local, m, w, snapshots, eng):
    """(result, data, fingerprint): on the dask engine the data stays on the workers."""
    from rankwise.core import pod as core

    if eng is not None:
        from rankwise.core import distributed

        from .engine import run_on_dask

        def fn(a, also, on_first_pass):
            return distributed.project(arrays["basis"], a, weights=w, mean=arrays.get("mean"),
                                       also=also, on_first_pass=on_first_pass)  # fmt: skip

        res, fingerprint = run_on_dask(run, handle, eng, "projection", fn)
        return res, None, fingerprint
    data = _snapshots(run, handle, snapshots, "rob project")
    if "mean" in arrays:
        data = data - arrays["mean"][:, None]
    kw = {}
    if is_local:
        k = sum(1 for n in arrays if n.startswith("basis/"))
        bases = [arrays[f"basis/{i}"] for i in range(k)]
        # medoids of whole simulations (grassmann) are assigned by angle
        dis = attrs.get("dissimilarity", "sine")
        kw = {"medoids": arrays["medoids"], "dissimilarity": "sine" if dis == "grassmann" else dis}
    else:
        bases = arrays["basis"]
    with run.compute("projection errors"):
        return core.project(bases, data, mass=m, weights=w, **kw), data, None


# --- rob deim -----------------------------------------------------------------------------------


@app.command("deim")
@opt.with_common
def deim(
    basis: Annotated[
        Path,
        typer.Argument(metavar="BASIS", help="A rob pod/enrich/merge output.", show_default=False),
    ],
    output: opt.Output,
    method: Annotated[
        DEIMMethod,
        typer.Option(
            "--method",
            help="qdeim: pivoted QR of Vᵀ (Drmač & Gugercin); deim: the "
            "greedy selection (Chaturantabut & Sorensen).",
        ),
    ] = DEIMMethod.qdeim,  # fmt: skip
    points: Annotated[
        int | None,
        typer.Option(
            "--points",
            min=1,
            help="Interpolation points M ≥ N (oversampling beyond the N modes) [default: N].",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """DEIM interpolation indices of a basis."""
    with guarded("rob deim", common.debug):
        from rankwise.core import deim as core

        run = Run("rob deim", common)
        arrays, attrs, _ = _read_basis(run, basis)
        run.prepare_outputs(output)
        with run.compute("DEIM"):
            res = core.deim(arrays["basis"], method=method.value, points=points)
        mt = res.metrics
        summary = (f"{len(mt['indices'])} point(s) ({method.value}), error constant "
                   f"‖(PᵀV)⁺‖₂ = {mt['error_constant']:.3g}")  # fmt: skip
        run.commit(res, handle=None, data=None, input_section=_file_input(basis, arrays, attrs),
                   requested=method.value, parameters={"method": method.value, "points": points},
                   summary=summary,
                   attrs={"method": res.method, "points": len(mt["indices"])})  # fmt: skip
