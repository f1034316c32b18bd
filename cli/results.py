"""Working with results: rankwise reconstruct, error, report."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import CheckFailed, CliUsageError
from .matrix import _common
from .run import Common, Run, guarded

Factors = Annotated[
    Path,
    typer.Argument(
        metavar="FACTORS",
        help="A rankwise output (.h5/.hdf5, .zarr, .npz) holding the factors of a decomposition "
        "or completion.",
        show_default=False,
    ),
]  # fmt: skip


# --- shared helpers ------------------------------------------------------------------------------


def _read_factors(run: Run, path: Path) -> tuple[dict, dict, str | None, str]:
    """(arrays, root attrs, kind, format) of a result file; it becomes an input of the run
    (so no output or report may overwrite it)."""
    from rankwise import formats
    from rankwise.core.errors import DataError

    path = Path(path)
    if not path.exists():
        raise formats.InputMissingError(f"{path}: no such file or directory")
    fmt = formats.detect_format(path)
    if fmt not in formats.OUTPUT_EXTENSIONS.values():
        raise DataError(f"{path}: a {fmt} file is not a rankwise result (results are the "
                        ".h5/.hdf5, .zarr or .npz outputs of rankwise commands)")  # fmt: skip
    if path not in run.inputs:
        run.inputs.append(path)
    with run.step("read", f"reading {path}"):
        arrays, attrs = formats.read_result(path, max_bytes=run.budget)
    kind = attrs.get("kind")
    if not kind:
        raise DataError(f"{path}: no 'kind' attribute: not a rankwise result (found "
                        f"{', '.join(sorted(arrays)) or 'no arrays'})")  # fmt: skip
    return arrays, attrs, str(kind), fmt


def _size(path: Path) -> int | None:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    except OSError:
        return None


def _factors_section(path: Path, fmt: str, kind: str, arrays: dict, shape, dtype) -> dict:
    """What the report says about a factors file (the parameters of `error`)."""
    from rankwise import formats

    return {"path": str(Path(path).resolve()), "format": fmt, "kind": kind,
            "shape": [int(s) for s in shape], "dtype": str(dtype),
            "fingerprint": formats.fingerprint_many(arrays)}  # fmt: skip


def _dims(shape) -> str:
    return "×".join(str(int(s)) for s in shape) or "scalar"


# --- reconstruct ---------------------------------------------------------------------------------


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or key == "__attrs__":
        raise CliUsageError(f"--key must be an array name (parts separated by '/', no empty, "
                            f"'.' or '..' parts, not __attrs__), got {key!r}")  # fmt: skip


@opt.with_common
def reconstruct(
    factors: Factors,
    output: opt.Output,
    slice_: Annotated[
        str | None,
        typer.Option(
            "--slice",
            metavar="SPEC",
            help="Only this part, one item per axis separated by commas: START:STOP[:STEP] "
            "(parts optional) or a single index, which drops the axis (e.g. 0:10,:,5). "
            "Computed from the selected factor rows only.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    key: Annotated[str, typer.Option("--key", help="Name of the array in the output.")] = (
        "reconstruction"
    ),
    common: Common = None,  # the shared options, from @opt.with_common
) -> None:
    """Rebuild the dense array (or a slice of it) from the factors of any result.

    svd U·diag(S)·Vt (+ mean), nmf W·H, cur C·U·R, kpsvd Σ S_i A_i ⊗ B_i, cp, tucker, tt,
    complete. The output holds one array (--key) in the factors' dtype.
    """
    with guarded("reconstruct", common.debug):
        from rankwise.core import reconstruct as core
        from rankwise.core.errors import BudgetError, human_bytes
        from rankwise.core.result import Result
        from rankwise.core.tensor import sq_norm

        _check_key(key)
        run = Run("reconstruct", common)
        path = Path(factors)
        if not path.exists():
            from rankwise.formats import InputMissingError

            raise InputMissingError(f"{path}: no such file or directory")
        run.inputs.append(path)
        run.prepare_outputs(output)  # exit 73 before reading anything
        arrays, attrs, kind, fmt = _read_factors(run, path)
        model = core.model(arrays, kind)
        sel = core.parse_slice(slice_, model.shape) if slice_ is not None else None
        sel = sel or core.full_selection(model.shape)
        est = core.estimate_bytes(model, kind, sel)
        what = f"{_dims(sel.shape)} {model.dtype}" + (" slice" if slice_ is not None else "")
        if est > run.budget:
            raise BudgetError(f"reconstruct needs about {human_bytes(est)} for the {what} "
                              f"array but the memory budget is {human_bytes(run.budget)}; "
                              "rebuild a part with --slice, or raise --max-memory")  # fmt: skip
        with run.compute(f"rebuilding the {what} array"):
            x = core.take_slice(model, kind, sel)
            norm = math.sqrt(sq_norm(x))
        full = math.prod(model.shape)
        source = {k: attrs[k] for k in ("kind", "method", "rank", "ranks", "modes") if k in attrs}
        res = Result(
            arrays={key: x},
            method=model.method,
            method_reason=f"{kind} factors: {model.reason}",
            metrics={
                "shape": [int(s) for s in x.shape],
                "full_shape": [int(s) for s in model.shape],
                "dtype": str(x.dtype),
                "entries": int(x.size),
                "norm_fro": norm,
                "n_parameters": model.n_parameters,
                "compression_ratio": full / max(1, model.n_parameters),
                "source_kind": kind,
            },  # fmt: skip
            details={
                "estimate_bytes": int(est),
                "block_bytes": core.BLOCK_BYTES,
                "working_dtype": str(model.dtype),
                "source": source,
            },  # fmt: skip
        )
        info = {"uri": str(path), "path": str(path.resolve()), "key": None, "format": fmt,
                "shape": [int(s) for s in model.shape], "dtype": str(model.dtype),
                "sparse": False, "nnz": None, "missing": 0, "nonfinite": 0,
                "size_bytes": _size(path),
                "fingerprint": _fingerprint_many(arrays)}  # fmt: skip
        out_attrs = {"source_kind": kind, "full_shape": [int(s) for s in model.shape]}
        if slice_ is not None:
            out_attrs["slice"] = sel.text
        summary = f"{kind} factors → {_dims(x.shape)} {x.dtype}"
        if slice_ is not None:
            summary += f" (slice {sel.text} of {_dims(model.shape)})"
        summary += f", ‖X̂‖_F {norm:.4g}"
        run.commit(res, handle=None, data=None, input_section=info, requested="reconstruct",
                   parameters={"slice": None if slice_ is None else sel.text, "key": key},
                   summary=summary, attrs=out_attrs)  # fmt: skip


def _fingerprint_many(arrays: dict) -> str:
    from rankwise import formats

    return formats.fingerprint_many(arrays)


# --- error ---------------------------------------------------------------------------------------


def error(
    factors: Annotated[
        Path,
        typer.Argument(
            metavar="FACTORS",
            help="A rankwise output (.h5/.hdf5, .zarr, .npz): the factors of a decomposition or "
            "completion, or a rob pod/enrich/merge basis.",
            show_default=False,
        ),
    ],
    uri: opt.InputURI,
    max_error: Annotated[
        float | None,
        typer.Option(
            "--max-error",
            min=0.0,
            help="Exit 3 when the relative error exceeds this (after the report is written).",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    force: opt.Force = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
    threads: opt.Threads = None,
    max_memory: opt.MaxMemory = None,
    seed: opt.Seed = 0,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the JSON report here (no report file without it).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,  # fmt: skip
    json_: opt.Json = False,
) -> None:
    """Relative Frobenius error ‖X − X̂‖_F/‖X‖_F between the data at URI and its factors.

    The data is streamed in row blocks and X̂ rebuilt block by block (float64). NaN in the
    data of a complete or nmf result marks a missing entry (left out); a sparse input to a
    complete result is compared at its stored entries. For a basis (rob pod/enrich/merge):
    the projection error of the snapshots at URI, ‖X_c − VVᵀX_c‖/‖X_c‖ (mean subtracted).
    """
    # its own --report help (no report file without it), so not @opt.with_common
    common = _common(force=force, quiet=quiet, debug=debug, threads=threads,
                     max_memory=max_memory, seed=seed, report=report, json_=json_)  # fmt: skip
    with guarded("error", debug):
        from rankwise.core import reconstruct as core

        run = Run("error", common)
        arrays, attrs, kind, fmt = _read_factors(run, factors)
        if kind not in core.BASIS_KINDS:
            core.check_kind(kind)  # refuse non-models before opening the data
        handle = run.open_input(uri)
        run.prepare_outputs(None)
        if kind in core.BASIS_KINDS:
            res, fp, section, compare = _basis_error(run, handle, factors, fmt, kind, arrays)
        else:
            res, fp, section, compare = _model_error(run, handle, factors, fmt, kind, arrays)
        m = res.metrics
        rel = m["relative_frobenius_error"]
        failed = max_error is not None and rel > max_error
        m.update(max_error=max_error, passed=not failed)
        lo, hi = m["error_bounds"]
        what = "projection error" if kind in core.BASIS_KINDS else "relative error"
        summary = (f"{what} {rel:.4g} (bounds {lo:.4g} … {hi:.4g}) of {_dims(handle.shape)} "
                   f"data against {kind} factors")  # fmt: skip
        if m.get("missing"):
            summary += f", {m['missing']} missing entries left out"
        if "projection_error" in m:
            pe = m["projection_error"]
            summary += f"; worst snapshot {pe['worst_snapshot']} at {pe['worst']:.3g}"
        if max_error is not None:
            summary += f"; {'ABOVE' if failed else 'within'} --max-error {max_error:g}"
        parameters = {"factors": section, "max_error": max_error,
                      "measure": "projection" if kind in core.BASIS_KINDS else "reconstruction",
                      "compare": compare}  # fmt: skip
        run.commit(res, handle=handle, data=None, fingerprint=fp, requested="error",
                   parameters=parameters, summary=summary, attrs={})  # fmt: skip
        if failed:
            raise CheckFailed(f"{what} {rel:.4g} > --max-error {max_error:g}")


def _rows(run: Run, handle, itemsize: int = 8) -> int:
    from rankwise.core.tensor import stream_rows

    chunk = int(handle.chunks[0]) if getattr(handle, "chunks", None) else None
    return stream_rows(handle.shape, max(itemsize, handle.dtype.itemsize), run.budget, chunk)


def _blocks(handle, rows: int, hasher):
    """The data's row blocks (sparse ones densified), hashed on the way."""
    for start, blk in handle.iter_blocks(rows):
        if hasher is not None:
            hasher.update(blk)
        yield start, (blk.toarray() if handle.sparse else blk)


def _error_metrics(stats, how: str, kind: str) -> dict:
    from rankwise.core.errors import DataError

    rel = stats.relative
    if rel is None:
        raise DataError(f"the data is zero but the {kind} reconstruction is not (‖X − X̂‖_F "
                        f"= {math.sqrt(stats.residual_sq):.4g}): the relative error is "
                        "undefined")  # fmt: skip
    return {"relative_frobenius_error": rel, "error_method": how, "error_bounds": stats.bounds,
            "norm_fro": math.sqrt(stats.norm_sq), "residual_fro": math.sqrt(stats.residual_sq),
            "entries": int(stats.entries), "missing": int(stats.missing),
            "source_kind": kind}  # fmt: skip


def _model_error(run: Run, handle, path, fmt, kind, arrays):
    from rankwise import formats
    from rankwise.core import reconstruct as core
    from rankwise.core.errors import DataError
    from rankwise.core.result import Result

    model = core.model(arrays, kind)
    if tuple(handle.shape) != tuple(model.shape):
        raise DataError(f"{handle.uri.raw}: data of shape {_dims(handle.shape)} does not match "
                        f"the {kind} factors in {path} ({_dims(model.shape)})")  # fmt: skip
    section = _factors_section(path, fmt, kind, arrays, model.shape, model.dtype)
    if handle.sparse and kind == "complete":
        # The stored entries are the observed ones: compare there only (as complete fits).
        with run.step("read", f"reading {handle.uri.raw}"):
            entries = handle.read_entries(run.budget)
        fp = formats.fingerprint_entries(entries)
        with run.compute("error at the observed entries"):
            stats = core.entries_error(model, kind, entries.indices, entries.values)
        how = "explicit residual at the stored (observed) entries, float64"
        compare = "stored entries"
        est = int(handle.entries_nbytes)
        rows = None
    else:
        if handle.sparse and handle.ndim != 2:
            raise DataError(f"{handle.uri.raw}: a sparse tensor is compared at its stored "
                            "entries, which only a complete result models; densify it for a "
                            f"{kind} result")  # fmt: skip
        skip_nan = kind in ("complete", "nmf")
        rows = _rows(run, handle)
        hasher = formats.Fingerprinter(handle.dtype, handle.shape, sparse=handle.sparse)
        with run.compute("error, block by block"):
            stats = core.error_stats(model, kind, _blocks(handle, rows, hasher),
                                     skip_nan=skip_nan)  # fmt: skip
        fp = hasher.hexdigest()
        run.missing = stats.missing
        how = ("explicit residual, row blocks of the data against the reconstruction of the "
               "same rows, float64 sums")  # fmt: skip
        if stats.missing:
            how += " (NaN entries left out)"
        compare = "non-NaN entries" if skip_nan else "all entries"
        # a data block and its float64 copy, plus the reconstruction of its rows (with the
        # temporaries of computing it)
        row = math.prod(handle.shape[1:])
        block = core.parse_slice(f"0:{rows}", model.shape)
        est = rows * row * (handle.dtype.itemsize + 8) + core.estimate_bytes(
            model, kind, block, dtype="float64"
        )
    metrics = _error_metrics(stats, how, kind)
    if stats.centred_norm_sq is not None:
        # the centred svd's own report divides by ‖X − 1·meanᵀ‖
        metrics["relative_error_centred"] = stats.relative_centred
        metrics["norm_fro_centred"] = math.sqrt(stats.centred_norm_sq)
    details = {"estimate_bytes": int(est), "working_dtype": "float64",
               "model": model.method, "block_rows": rows,
               "n_parameters": model.n_parameters}  # fmt: skip
    reason = f"{kind} factors rebuilt block by block: {model.reason}"
    res = Result(arrays={}, method="reconstruction", metrics=metrics, details=details,
                 method_reason=reason)  # fmt: skip
    return res, fp, section, compare


def _basis_error(run: Run, handle, path, fmt, kind, arrays):
    from rankwise import formats
    from rankwise.core import reconstruct as core
    from rankwise.core.errors import DataError
    from rankwise.core.result import Result

    if "basis" not in arrays:
        raise DataError(f"{path}: a {kind} result without a basis array (found "
                        f"{', '.join(sorted(arrays)) or 'none'})")  # fmt: skip
    basis = arrays["basis"]
    mean = arrays.get("mean")
    if handle.ndim != 2 or basis.ndim != 2 or handle.shape[0] != basis.shape[0]:
        raise DataError(f"{handle.uri.raw}: snapshots of shape {_dims(handle.shape)} do not "
                        f"match the basis in {path} ({_dims(basis.shape)}: dofs × modes; "
                        "snapshots are dofs × snapshots)")  # fmt: skip
    section = _factors_section(path, fmt, kind, arrays, basis.shape, basis.dtype)
    rows = _rows(run, handle)
    hasher = formats.Fingerprinter(handle.dtype, handle.shape, sparse=handle.sparse)
    first = [True]

    def passes():
        h = hasher if first[0] else None  # hash the data during the first pass only
        first[0] = False
        return _blocks(handle, rows, h)

    with run.compute("projection error, two passes"):
        out = core.projection_error(basis, passes, mean=mean)
    stats = out["stats"]
    per = out["per_snapshot"]
    how = ("explicit projection residual X_c − V(VᵀX_c), Euclidean, two passes over row "
           "blocks, float64 sums")  # fmt: skip
    metrics = _error_metrics(stats, how, kind)
    metrics.update(
        projection_error={"mean": float(per.mean()), "worst": float(per.max()),
                          "worst_snapshot": int(out["worst_snapshot"])},
        orthogonality_loss=out["orthogonality_loss"], modes=int(basis.shape[1]),
        centred=mean is not None,
    )  # fmt: skip
    warnings = []
    if out["orthogonality_loss"] > 1e-6:
        warnings.append(
            f"the basis is not orthonormal in the Euclidean inner product (max|VᵀV − I| = "
            f"{out['orthogonality_loss']:.3g}): it was probably built with --mass or --weights; "
            "`rankwise rob project --mass/--weights` measures errors in that inner product"
        )
    n_snap = out["snapshots"]
    details = {"estimate_bytes": int(3 * rows * handle.shape[1] * 8 + basis.shape[1] * n_snap * 8),
               "working_dtype": "float64", "block_rows": rows, "passes": 2}  # fmt: skip
    res = Result(arrays={}, method="projection", metrics=metrics, details=details,
                 method_reason=f"{kind} result: a basis approximates snapshots only with their "
                 "coefficients VᵀX_c, so the error is the projection error",
                 warnings=tuple(warnings))  # fmt: skip
    run.missing = 0
    return res, hasher.hexdigest(), section, "all entries"


# --- report --------------------------------------------------------------------------------------


def report(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="REPORT",
            help="A JSON report written by a rankwise command.",
            show_default=False,
        ),
    ],  # fmt: skip
    debug: opt.Debug = False,
) -> None:
    """A readable summary of a report: input, method and why, rank, metrics with their
    error bounds, convergence, timings, memory, threads, warnings, engine."""
    with guarded("report", debug):
        rep, checked = load_report(Path(path))
        render(rep, checked=checked)


def load_report(path: Path) -> tuple[dict, bool]:
    """The report, validated against the schema when jsonschema is installed (returns
    whether it was); exit 66 when missing, 65 when not JSON or not a valid report."""
    import json

    from rankwise.core.errors import DataError
    from rankwise.formats import InputMissingError

    if not path.exists():
        raise InputMissingError(f"{path}: no such file or directory")
    if path.is_dir():
        raise InputMissingError(f"{path}: is a directory, not a report")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise InputMissingError(f"{path}: cannot be read (permission denied)") from None
    try:
        rep = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a report (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column "
                        f"{exc.colno})") from None  # fmt: skip
    if not isinstance(rep, dict):
        raise DataError(f"{path}: not a rankwise report (a JSON {type(rep).__name__}, not an "
                        "object)")  # fmt: skip
    try:
        import jsonschema
    except ImportError:
        if rep.get("schema") != "rankwise-report/1" or "command" not in rep:
            raise DataError(
                f"{path}: not a rankwise report (no schema rankwise-report/1)"
            ) from None
        return rep, False
    from .schema import validate

    try:
        validate(rep)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        msg = " ".join(exc.message.split())
        if len(msg) > 240:
            msg = msg[:237] + "…"
        raise DataError(f"{path}: not a valid rankwise report: {where}: {msg}") from None
    return rep, True


# --- rendering -----------------------------------------------------------------------------------


def _num(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def _val(v, depth: int = 0) -> str:
    """A short, one-line rendering of any JSON value."""
    if isinstance(v, bool | int | float) or v is None:
        return _num(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        if not v:
            return "[]"
        if all(isinstance(x, bool | int | float) or x is None for x in v):
            if len(v) <= 6:
                text = ", ".join(_num(x) for x in v)
            else:
                text = ", ".join(_num(x) for x in v[:5]) + f", … ({len(v)} values)"
            return text if depth == 0 else f"[{text}]"  # brackets inside key=value lists
        if depth > 0:
            return f"{len(v)} entries"
        return "; ".join(_val(x, depth + 1) for x in v[:4]) + (
            f"; … ({len(v)} entries)" if len(v) > 4 else ""
        )
    if isinstance(v, dict):
        if depth > 1:
            return "{…}"
        text = ", ".join(f"{k}={_val(x, depth + 1)}" for k, x in v.items())
        return text if depth == 0 else "{" + text + "}"
    return str(v)


def _bytes(n) -> str:
    from rankwise.core.errors import human_bytes

    return "–" if n is None else human_bytes(n)


def _shape(s) -> str:
    return "×".join(str(x) for x in s) if isinstance(s, list) and s else _val(s)


def _ranks(v, command: str) -> str:
    if isinstance(v, list):
        return ("×" if command == "tucker" else ",").join(_num(x) for x in v)
    return _num(v)


_LABELS = {
    "relative_frobenius_error": "relative Frobenius error",
    "norm_fro": "‖X‖_F",
    "explained_energy": "explained energy",
    "orthogonality_loss": "orthogonality loss",
    "singular_values": "singular values",
    "singular_values_computed": "singular values (computed)",
    "n_parameters": "parameters",
    "compression_ratio": "compression ratio",
    "a_priori_error_bound": "a-priori error bound",
}


def render(rep: dict, *, checked: bool = True, file=None) -> None:
    """Print the summary of a report with rich (plain text when not a terminal)."""
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    file = file or sys.stdout
    tty = file.isatty() if hasattr(file, "isatty") else False
    width = max(100, Console(file=file).width)
    buf = io.StringIO()
    # Rendered to a buffer so that the cell padding at line ends can be stripped.
    con = Console(file=buf, soft_wrap=False, width=width, highlight=False, force_terminal=tty,
                  color_system="auto" if tty else None)  # fmt: skip
    command = str(rep.get("command", "?"))

    def section(title: str, rows: list[tuple[str, str]]) -> None:
        con.print(Text(title, style="bold"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="cyan", no_wrap=True)
        grid.add_column(overflow="fold")
        for k, v in rows:
            if k:
                grid.add_row(Text("  " + k), Text(v))
            else:  # a value alone: no key column
                grid.add_row(Text("  " + v), Text(""))
        con.print(grid)

    tool = rep.get("tool") or {}
    head = Text(f"rankwise {command}", style="bold")
    head.append(f"  report {rep.get('schema', '?')}, rankwise {tool.get('version', '?')}",
                style="dim")  # fmt: skip
    con.print(head)
    if not checked:
        con.print(Text("(schema not checked: install jsonschema to validate the report)",
                       style="yellow"))  # fmt: skip
    host = rep.get("host") or {}
    section("Run", [
        ("command line", " ".join(tool.get("argv") or [])),
        ("started", f"{rep.get('started_at', '–')} → {rep.get('finished_at', '–')}"),
        ("host", f"{host.get('hostname', '–')} ({host.get('platform', '–')}, "
                 f"{_num(host.get('cpu_count'))} CPUs)"),
        ("seed", _num(rep.get("seed"))),
    ])  # fmt: skip

    inp = rep.get("input") or {}
    kind = "sparse" if inp.get("sparse") else "dense"
    if inp.get("sparse") and inp.get("nnz") is not None:
        kind += f", {inp['nnz']} stored entries"
    rows = [
        ("uri", str(inp.get("uri", "–"))),
        ("data", f"{inp.get('format', '–')}, {_shape(inp.get('shape'))} "
                 f"{inp.get('dtype', '–')}, {kind}"),
    ]  # fmt: skip
    if inp.get("missing") or inp.get("nonfinite"):
        rows.append(("missing", f"{_num(inp.get('missing'))} NaN, "
                                f"{_num(inp.get('nonfinite'))} Inf"))  # fmt: skip
    rows += [("size", _bytes(inp.get("size_bytes"))),
             ("fingerprint", str(inp.get("fingerprint", "–")))]  # fmt: skip
    section("Input", rows)

    out = rep.get("output") or {}
    arrays = out.get("arrays") or {}
    section("Output", [
        ("path", f"{out.get('path')} ({out.get('format')})" if out.get("path") else "none"),
        ("arrays", "; ".join(f"{k} {_shape(a.get('shape'))} {a.get('dtype')}"
                             for k, a in arrays.items()) or "none"),
        ("report", str(out.get("report") or "none")),
    ])  # fmt: skip

    meth = rep.get("method") or {}
    rows = [("used", f"{meth.get('used', '–')} (requested {meth.get('requested', '–')})"),
            ("why", str(meth.get("reason", "–")))]  # fmt: skip
    details = {k: v for k, v in (meth.get("details") or {}).items()
               if v is not None and not isinstance(v, dict | list)}  # fmt: skip
    if details:
        rows.append(
            (
                "details",
                "; ".join(
                    f"{k} {_bytes(v) if k.endswith('bytes') else _val(v)}"
                    for k, v in details.items()
                ),
            )
        )
    section("Method", rows)

    params = rep.get("parameters") or {}
    shown = []
    for k, v in params.items():
        if v is None:  # rules and options that do not apply
            continue
        if isinstance(v, dict):
            text = _val(v.get("uri") or v.get("path") or v)
            if v.get("kind"):
                text += f" ({v['kind']})"
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            text = "; ".join(str(x.get("uri") or x.get("path") or _val(x)) for x in v)
        elif k.endswith("bytes") and isinstance(v, int):
            text = _bytes(v)
        else:
            text = _val(v)
        shown.append((k, text))
    section("Parameters", shown or [("", "none")])

    _render_rank(con, rep.get("rank"), command, section)
    _render_metrics(rep.get("metrics") or {}, section)

    hist = rep.get("history") or []
    rows = [("converged", f"{_num(rep.get('converged'))} — {rep.get('stop_reason', '–')}")]
    if hist:
        rows.append(("history", f"{len(hist)} entries"))
        first, last = hist[0], hist[-1]
        skip = {"iteration", "restart", "stage", "step", "pass"}
        keys = [k for k in last if k in first and k not in skip
                and isinstance(last[k], int | float) and not isinstance(last[k], bool)]  # fmt: skip
        for k in keys[:5]:
            rows.append((k, f"{_num(first[k])} → {_num(last[k])}"))
    section("Convergence", rows)

    t = rep.get("timings") or {}
    mem = rep.get("memory") or {}
    thr = rep.get("threads") or {}
    section("Resources", [
        ("timings", "  ".join(f"{k} {_num(t[k])} s" for k in ("read", "compute", "write",
                                                                 "total") if k in t)),
        ("memory", f"peak RSS {_bytes(mem.get('peak_rss_bytes'))}, budget "
                   f"{_bytes(mem.get('budget_bytes'))} ({mem.get('budget_source', '–')}), "
                   f"estimate {_bytes(mem.get('estimate_bytes'))}"),
        ("threads", f"{_num(thr.get('count'))} ({thr.get('source', '–')})"),
        *[("BLAS", f"{b.get('internal_api', b.get('user_api', '?'))} {b.get('version', '')}: "
                   f"{_num(b.get('num_threads'))} threads"
                   + (f", {b['threading_layer']}" if b.get("threading_layer") else "")
                   + (f", {b['architecture']}" if b.get("architecture") else ""))
          for b in thr.get("blas") or []],
    ])  # fmt: skip

    warns = rep.get("warnings") or []
    section("Warnings", [("⚠", w) for w in warns] or [("", "none")])
    eng = rep.get("engine") or {}
    rows = [("name", str(eng.get("name", "local")))]
    for k, v in eng.items():
        if k == "name":
            continue
        if k == "stages" and isinstance(v, list):
            v = "; ".join(f"{s.get('stage')} {_num(s.get('seconds'))} s" for s in v)
        rows.append((k, _val(v)))
    section("Engine", rows)
    file.write("\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n")
    file.flush()


def _render_rank(con, rank, command: str, section) -> None:
    from rich.table import Table
    from rich.text import Text

    if not rank:
        section("Rank", [("", "– (no rank rule for this command)")])
        return
    thr = rank.get("threshold")
    rows = [("value", _ranks(rank.get("value"), command)),
            ("rule", f"{rank.get('rule', '–')} {_ranks(thr, command) if thr is not None else ''}"
                     .strip())]  # fmt: skip
    if rank.get("max_rank") is not None:
        rows.append(("max rank", _ranks(rank.get("max_rank"), command)))
    if rank.get("clamped"):
        rows.append(("clamped", "yes"))
    if "global" in rank:
        rows.append(("global basis", _num(rank.get("global"))))
    section("Rank", rows)
    by = rank.get("by_rule") or []
    if not by:
        return
    table = Table(title=None, show_edge=False, pad_edge=False, box=None, padding=(0, 2))
    for col in ("  rule", "threshold", "rank", ""):
        table.add_column(col, no_wrap=True)
    for row in by:
        r = row.get("rank", row.get("ranks"))
        value = _ranks(r, command) if r is not None else (
            f"≥ {row['at_least']}" if row.get("at_least") else "?")  # fmt: skip
        note = "← chosen" if row.get("given") else str(row.get("basis", ""))
        table.add_row(
            Text("  " + str(row.get("rule", "–"))),
            Text(_ranks(row.get("threshold"), command)),
            Text(value),
            Text(note),
        )
    con.print(table)


def _render_metrics(m: dict, section) -> None:
    rows = []
    if "relative_frobenius_error" in m:
        text = _num(m["relative_frobenius_error"])
        b = m.get("error_bounds")
        if isinstance(b, list) and len(b) == 2:
            text += f"  (bounds {_num(b[0])} … {_num(b[1])})"
        if m.get("error_method"):
            text += f"  by {m['error_method']}"
        rows.append((_LABELS["relative_frobenius_error"], text))
    done = {"relative_frobenius_error", "error_bounds", "error_method"}
    for k, v in m.items():
        if k in done:
            continue
        rows.append((_LABELS.get(k, k.replace("_", " ")), _val(v)))
    section("Metrics", rows or [("", "none")])


__all__ = ["error", "load_report", "reconstruct", "render", "report"]
