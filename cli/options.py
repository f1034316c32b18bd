"""Option declarations shared by the commands, so names and help read the same everywhere."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs and report.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, warnings or summary.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="BLAS threads [default: SLURM_CPUS_PER_TASK, OMP_NUM_THREADS, else CPU count].",
        show_default=False,
    ),
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        metavar="SIZE",
        help="Memory budget, e.g. 256M, 8G, 1.5GiB [default: 0.8 × free memory, "
        "cgroup or SLURM limit].",
        show_default=False,
    ),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Seed of every random step.")]
ReportPath = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Where to write the JSON report [default: <output stem>.report.json].",
        show_default=False,
        dir_okay=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Also print the report to stdout.")]
Output = Annotated[
    Path,
    typer.Option(
        "--output", "-o", help="Output file: .h5/.hdf5, .zarr or .npz.", show_default=False
    ),
]
InputURI = Annotated[
    str,
    typer.Argument(
        metavar="URI",
        help="Input: file.h5:/dataset, store.zarr[:path], file.npz[:key], file.npy, file.mtx.",
        show_default=False,
    ),
]


class Locking(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


Hdf5Locking = Annotated[
    Locking,
    typer.Option(
        "--hdf5-locking",
        help="HDF5 file locking: auto locks where the file system supports it, on always, "
        "off never (NFS/Lustre without working locks).",
    ),
]  # fmt: skip

# The options every compute command takes (DESIGN.md §3), in the order --help lists them.
COMMON_OPTIONS = {
    "force": (Force, False),
    "quiet": (Quiet, False),
    "debug": (Debug, False),
    "threads": (Threads, None),
    "max_memory": (MaxMemory, None),
    "seed": (Seed, 0),
    "report": (ReportPath, None),
    "json_": (Json, False),
    "hdf5_locking": (Hdf5Locking, Locking.auto),
}


def appended_options(options: dict, name: str, build):
    """A decorator appending ``options`` ({parameter: (annotation, default)}) to a command's
    Typer signature and handing their values to it as one keyword argument ``name``, made by
    ``build(values)``."""
    import functools
    import inspect

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for n, p in sig.parameters.items() if n != name]
        extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                   annotation=annotation)
                 for n, (annotation, default) in options.items()]  # fmt: skip

        @functools.wraps(fn)
        def command(*args, **kwargs):
            values = {n: kwargs.pop(n, default) for n, (_, default) in options.items()}
            return fn(*args, **{name: build(values)}, **kwargs)

        command.__signature__ = sig.replace(parameters=own + extra)
        command.__annotations__ = {p.name: p.annotation for p in own + extra}
        return command

    return decorate


def _common(values: dict):
    from .run import Common

    values["json"] = values.pop("json_")
    values["hdf5_locking"] = str(values["hdf5_locking"])  # a StrEnum: its value
    return Common(**values)


# Give a command the shared options as one ``common`` (a rankwise.cli.run.Common) argument.
with_common = appended_options(COMMON_OPTIONS, "common", _common)
