"""What every compute command does around its algorithm: open, check, read, time,
limit threads, write atomically, report last."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import report_error
from .runtime import (
    Timer,
    blas_info,
    library_versions,
    peak_rss_bytes,
    rankwise_version,
    resolve_memory,
    resolve_threads,
)

REPORT_SCHEMA = "rankwise-report/1"


@dataclass(frozen=True)
class Common:
    """The options every compute command takes (DESIGN.md §3)."""

    force: bool = False
    quiet: bool = False
    debug: bool = False
    threads: int | None = None
    max_memory: str | None = None
    seed: int = 0
    report: Path | None = None
    json: bool = False
    hdf5_locking: str = "auto"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_report_path(output: Path) -> Path:
    name = output.name
    for ext in (".zarr", ".hdf5", ".h5", ".npz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return output.with_name(f"{name}.report.json")


@contextmanager
def guarded(command: str, debug: bool):
    """Turn any exception into the documented exit code and one line on stderr."""
    import typer

    try:
        yield
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure must map to an exit code
        code = report_error(command, exc, debug=debug)
        raise typer.Exit(int(code)) from None


class Run:
    def __init__(self, command: str, common: Common):
        self.command = command
        self.common = common
        self.timer = Timer()
        self.started = _now()
        from rankwise.formats import hdf5

        hdf5.set_locking(common.hdf5_locking)
        self.threads, self.threads_source = resolve_threads(common.threads)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        if cpus and self.threads > cpus:
            self.warn(f"{self.threads} threads on {cpus} CPU(s): BLAS will oversubscribe them")
        self.budget, self.budget_source = resolve_memory(common.max_memory)
        self.inputs: list[Path] = []
        self.missing = 0  # NaN entries of the input (missing values where a method allows)
        self.engine: dict = {"name": "local"}  # the report's engine section
        self.sections: dict = {}  # optional report sections (e.g. checkpoint)
        self.output: Path | None = None
        self.report_path: Path | None = None
        self._console = None
        if not common.quiet and sys.stderr.isatty():
            from rich.console import Console

            self._console = Console(stderr=True)
        self._status = None

    # --- progress ---------------------------------------------------------------------

    @contextmanager
    def step(self, name: str, label: str):
        """Time a step and show a spinner for it when stderr is a terminal."""
        ctx = (
            self._console.status(f"[bold]{self.command}[/]: {label}")
            if self._console is not None
            else nullcontext()
        )
        with self.timer.stage(name), ctx as status:
            from rankwise.formats.atomic import pause_point

            pause_point(name)  # test-only: RANKWISE_TEST_PAUSE_AT=read|compute|write
            self._status = status
            try:
                yield
            finally:
                self._status = None

    def progress(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"[bold]{self.command}[/]: {text}")

    def warn(self, text: str) -> None:
        if not self.common.quiet:
            sys.stderr.write(f"rankwise {self.command}: warning: {text}\n")

    # --- input and outputs ------------------------------------------------------------

    def open_input(self, uri: str):
        from rankwise import formats

        handle = formats.open_array(uri, max_bytes=self.budget)
        self.inputs.append(handle.uri.path)
        return handle

    def prepare_outputs(self, output: Path | None) -> None:
        """Refuse unusable output paths before any computation (exit 73 / 2). Without an
        output (a check such as rob project) the report is written only to --report."""
        from rankwise import formats

        if output is None:
            self.report_path = self.common.report
            if self.report_path is None:
                return
        else:
            self.report_path = Path(self.common.report or default_report_path(Path(output)))
            self.output = formats.check_output(output, force=self.common.force,
                                               inputs=self.inputs,
                                               report=self.report_path)  # fmt: skip
        if self.report_path.suffix.lower() != ".json":
            from .errors import CliUsageError

            raise CliUsageError(f"--report must name a .json file, got {self.report_path}")
        # The report must not clobber an input or the output either.
        others = [*self.inputs, *([self.output] if self.output is not None else [])]
        formats.check_target(self.report_path, force=self.common.force, inputs=others)

    def read(self, handle):
        with self.step("read", f"reading {handle.uri.raw}"):
            return handle.read(max_bytes=self.budget)

    def load(self, handle, *, method: str, allow_nan: bool = False):
        """Read the whole input and check it: Inf always refused, NaN unless the method
        treats it as missing (the count goes to the report)."""
        from rankwise.core.validate import check_finite

        data = self.read(handle)
        self.missing, _ = check_finite(data, method=method, allow_nan=allow_nan)
        return data

    @contextmanager
    def compute(self, label: str = "computing"):
        import scipy.linalg  # noqa: F401 - load scipy's own BLAS first: threadpoolctl limits only loaded ones
        from threadpoolctl import threadpool_limits

        with self.step("compute", label), threadpool_limits(limits=self.threads):
            yield

    def stage(self, arrays: dict, attrs: dict):
        """Write the output to its staging path; it becomes visible only with the report
        in :meth:`finish` (a ``formats.Staged``: use it as a context manager)."""
        from rankwise import formats

        attrs = {"kind": self.command, "rankwise_version": rankwise_version(), **attrs}
        with self.step("write", f"writing {self.output}"):
            return formats.stage(
                self.output, arrays, attrs, force=self.common.force, inputs=self.inputs
            )

    # --- report -----------------------------------------------------------------------

    def input_section(self, handle, data, *, missing: int = 0, nonfinite: int = 0,
                      fingerprint: str | None = None, nnz: int | None = None) -> dict:  # fmt: skip
        """``nnz`` overrides the header's count (symmetric MatrixMarket stores one triangle)."""
        from rankwise import formats

        path = handle.uri.path
        try:
            size = _path_size(path)
        except OSError:
            size = None
        return {
            "uri": handle.uri.raw,
            "path": str(path),
            "key": handle.uri.key,
            "format": handle.format,
            "shape": [int(s) for s in handle.shape],
            "dtype": str(handle.dtype),
            "sparse": bool(handle.sparse),
            "nnz": int(nnz)
            if nnz is not None
            else (None if handle.nnz is None else int(handle.nnz)),
            "missing": int(missing),
            "nonfinite": int(nonfinite),
            "size_bytes": size,
            "fingerprint": fingerprint or formats.fingerprint(data),
        }

    def finish(self, report: dict, summary: str, staged) -> None:
        """Fill in the shared report fields, then commit the staged output and the report
        together (signals deferred between the two renames), then print the summary."""
        from rankwise import formats

        with self.threadpool_snapshot() as blas:
            threads = {"count": self.threads, "source": self.threads_source, "blas": blas}
        report.update(
            timings={
                "read": round(self.timer.stages.get("read", 0.0), 6),
                "compute": round(self.timer.stages.get("compute", 0.0), 6),
                "write": round(self.timer.stages.get("write", 0.0), 6),
                "total": round(self.timer.total(), 6),
            },
            memory={
                "peak_rss_bytes": peak_rss_bytes(),
                "budget_bytes": int(self.budget),
                "budget_source": self.budget_source,
                **report.pop("memory", {}),
            },
            threads=threads,
            finished_at=_now(),
        )
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        if self.report_path is not None:
            with formats.stage_json(self.report_path, json.loads(text), force=self.common.force,
                                    inputs=self.inputs) as staged_report:  # fmt: skip
                formats.commit_all([s for s in (staged, staged_report) if s is not None])
        if self.common.json:
            sys.stdout.write(text)
            sys.stdout.flush()
        if not self.common.quiet:
            sys.stderr.write(f"rankwise {self.command}: {summary}\n")

    def commit(self, res, *, handle, data, requested: str, parameters: dict, summary: str,
               attrs: dict, fingerprint: str | None = None,
               input_section: dict | None = None) -> None:  # fmt: skip
        """Stage the result's arrays, build the whole report, commit both together.

        ``res`` is a core result (``arrays``, ``method``, ``method_reason``, ``details``,
        ``metrics``, ``rank``, ``history``, ``converged``, ``stop_reason``, ``warnings``);
        ``parameters`` the command's own effective parameters (the shared ones are added);
        ``input_section`` replaces the one built from ``handle`` (inputs that are not arrays).
        """
        staging = self.stage(res.arrays, attrs) if self.output is not None else nullcontext()
        with staging as staged:
            for w in res.warnings:
                self.warn(w)
            rep = self.report_head(["rankwise", *sys.argv[1:]])
            nnz = getattr(data, "nnz", None) if handle is not None and handle.sparse else None
            rep.update(
                input=input_section
                or self.input_section(
                    handle, data, fingerprint=fingerprint, nnz=nnz, missing=self.missing
                ),  # fmt: skip
                output={
                    **(
                        staged.info
                        if staged is not None
                        else {"path": None, "format": None, "arrays": {}}
                    ),
                    "report": None if self.report_path is None else str(self.report_path.resolve()),
                },  # fmt: skip
                parameters={
                    **parameters,
                    "seed": self.common.seed,
                    "threads": self.threads,
                    "max_memory_bytes": self.budget,
                    "force": self.common.force,
                    "hdf5_locking": self.common.hdf5_locking,
                },
                method={
                    "requested": requested,
                    "used": res.method,
                    "reason": res.method_reason,
                    "details": res.details,
                },  # fmt: skip
                rank=res.rank,
                metrics=res.metrics,
                history=res.history,
                converged=res.converged,
                stop_reason=res.stop_reason,
                warnings=list(res.warnings),
                memory={"estimate_bytes": int(res.details.get("estimate_bytes", 0))},
                engine=self.engine,
                **self.sections,
            )
            where = [f"→ {self.output}"] if self.output is not None else []
            where += [f"report {self.report_path}"] if self.report_path is not None else []
            self.finish(rep, " ".join([summary, "; ".join(where)]).strip(), staged)

    @contextmanager
    def threadpool_snapshot(self):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            yield blas_info()

    def report_head(self, argv: list[str]) -> dict:
        return {
            "schema": REPORT_SCHEMA,
            "command": self.command,
            "tool": {"name": "rankwise", "version": rankwise_version(), "argv": argv},
            "started_at": self.started,
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
            },
            "seed": int(self.common.seed),
            "versions": library_versions(),
        }


def _path_size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


__all__ = ["Common", "Run", "guarded", "default_report_path", "REPORT_SCHEMA"]
