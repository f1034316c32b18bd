"""Checkpoint and resume for the iterative commands (nmf, cp, tucker --method hooi, complete,
rob local).

A checkpoint is the solver's state at an iteration boundary (core.checkpoint), written
atomically as an NPZ file without pickles: the arrays, plus one JSON member with the state's
skeleton and what binds it — the command, the input's fingerprint and the parameters that
shape the result. It is written

* every ``--checkpoint-every`` seconds (at the first boundary after that much time),
* on SIGTERM, SIGINT or SIGUSR1: the solver stops at the next boundary, the checkpoint is
  written and the command exits 75 (a second SIGINT stops at once),
* before ``--time-limit`` runs out: when the next sweep and the write would not fit.

``--resume`` continues from it to the same bytes as an uninterrupted run; without a checkpoint
it starts afresh, so a requeued batch job can always pass ``--resume``. The checkpoint is
removed once the output and report are committed.
"""

from __future__ import annotations

import json
import math
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .errors import CliUsageError, Interrupted, Terminated, one_line
from .options import appended_options

FORMAT = "rankwise-checkpoint/1"
META_KEY = "__rankwise_checkpoint__"
DEFAULT_EVERY = 600.0
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

# Set by cli.main at start-up: --time-limit counts from here (monotonic clock).
PROCESS_START = time.monotonic()

CheckpointPath = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint file (.npz) [default: <output stem>.checkpoint.npz].",
        show_default=False,
        dir_okay=False,
    ),
]
CheckpointEvery = Annotated[
    float,
    typer.Option(
        "--checkpoint-every",
        metavar="SECONDS",
        min=0.0,
        help="Write a checkpoint at the first sweep boundary after this many seconds "
        "since the last one (0: only on signals and --time-limit).",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue from the checkpoint (same input and parameters); without one, start afresh.",
    ),
]
TimeLimit = Annotated[
    str | None,
    typer.Option(
        "--time-limit",
        metavar="DURATION",
        help="Checkpoint and exit 75 before this much time has passed since start: "
        "seconds, 90s, 45m, 2h, 1d, or [D-]HH:MM:SS.",
        show_default=False,
        callback=lambda value: _checked_duration(value),
    ),
]

CHECKPOINT_OPTIONS = {
    "checkpoint": (CheckpointPath, None),
    "checkpoint_every": (CheckpointEvery, DEFAULT_EVERY),
    "resume": (Resume, False),
    "time_limit": (TimeLimit, None),
}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``45m``, ``2h``, ``1.5d``, ``MM:SS``, ``HH:MM:SS`` or
    ``D-HH:MM:SS`` (SLURM's forms with a colon); a usage error otherwise."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)", t)
    if m:
        seconds = float(m.group(1)) * _UNITS.get(m.group(2) or "s")
    else:
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
        if not m or (m.group(1) is None and m.group(3) is None):
            raise CliUsageError(f"--time-limit: cannot read {text!r}; give seconds, 90s, 45m, "
                                "2h, 1d or [D-]HH:MM:SS")  # fmt: skip
        days = int(m.group(1) or 0)
        parts = [int(p) for p in m.group(2, 3, 4) if p is not None]
        if m.group(1) is not None:
            parts += [0] * (3 - len(parts))  # D-HH, D-HH:MM
        else:
            parts = [0] * (3 - len(parts)) + parts  # MM:SS, HH:MM:SS
        h, mi, s = parts
        seconds = days * 86400 + h * 3600 + mi * 60 + s
    if not seconds > 0 or not math.isfinite(seconds):
        raise CliUsageError(f"--time-limit must be positive, got {text!r}")
    return seconds


def _checked_duration(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_duration(value)
        except CliUsageError as exc:
            raise typer.BadParameter(str(exc).removeprefix("--time-limit: ")) from None
    return value


class _Signals:
    """SIGTERM/SIGINT/SIGUSR1 while a command that checkpoints runs.

    Before the solver's first boundary there is nothing to save: a signal ends the command
    at once, as for any command (130 for SIGINT, else 143; an earlier checkpoint stays).
    While the solver runs, it is recorded and acted on at the next boundary; a second SIGINT
    then stops at once. After the solver, the output is being written and the command
    completes.
    """

    def __init__(self):
        self.received: str | None = None
        self.phase = "before"  # before | solving | after
        self.previous = {}
        for name in SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests calling the command in a thread)
                pass

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.phase == "before":  # nothing to save: as any command stopped before writing
            if name == "SIGINT":
                raise KeyboardInterrupt
            raise Terminated
        if self.phase == "solving" and self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        if self.received is None:
            self.received = name

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


@dataclass
class CheckpointOptions:
    path: Path | None
    every: float
    resume: bool
    time_limit: float | None
    signals: _Signals | None

    def not_applicable(self, why: str) -> None:
        """This run does not iterate: refuse checkpoint options given, leave signals be."""
        if self.signals is not None:
            self.signals.restore()
            self.signals = None
        flags = (
            ("--checkpoint", self.path is not None),
            ("--checkpoint-every", self.every != DEFAULT_EVERY),
            ("--resume", self.resume),
            ("--time-limit", self.time_limit is not None),
        )
        given = [name for name, on in flags if on]
        if given:
            raise CliUsageError(f"{', '.join(given)}: {why}")


def _options(values: dict) -> CheckpointOptions:
    limit = values["time_limit"]
    return CheckpointOptions(
        path=values["checkpoint"],
        every=float(values["checkpoint_every"]),
        resume=bool(values["resume"]),
        time_limit=None if limit is None else parse_duration(limit),
        signals=_Signals(),
    )


# Give a command the checkpoint options as one ``checkpointing`` (CheckpointOptions) argument.
with_checkpoint = appended_options(CHECKPOINT_OPTIONS, "checkpointing", _options)


def default_path(output: Path) -> Path:
    from .run import default_report_path

    report = default_report_path(Path(output))
    return report.with_name(report.name[: -len(".report.json")] + ".checkpoint.npz")


def _canonical(params: dict) -> dict:
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def start(run, opts: CheckpointOptions, *, data, parameters: dict,
          fingerprint: str | None = None) -> Checkpointer:  # fmt: skip
    """The command's Checkpointer, bound to the input's fingerprint (``data``'s unless given;
    pass ``ck.fingerprint`` on to the report) and ``parameters`` (those that shape the
    result; the seed is added)."""
    from rankwise import formats

    if fingerprint is None:
        fingerprint = formats.fingerprint(data)
    ck = Checkpointer(run, opts, fingerprint=fingerprint, parameters=parameters,
                      output=run.output)  # fmt: skip
    _test_signal("start")
    return ck


def _test_signal(moment: str) -> None:
    """Test hook: RANKWISE_TEST_SIGNAL=NAME@MOMENT (MOMENT: start, a sweep number, solved)
    makes the process send itself that signal there, so tests hit each moment exactly."""
    import os

    spec = os.environ.get("RANKWISE_TEST_SIGNAL")
    if spec:
        name, _, at = spec.partition("@")
        if at == moment:
            os.kill(os.getpid(), getattr(signal, name))


def source_identity(handle) -> str:
    """A streamed input's identity without reading it: path, key, shape, dtype, and the
    size and modification time of its file(s) (every file of a Zarr store), and the version
    of the content fingerprint the checkpoint carries (an older one is not resumed)."""
    import hashlib
    import os

    from rankwise.formats.fingerprints import VERSION_TAG

    path = Path(handle.uri.path).resolve()
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path)) if p != path else "", os.stat(p).st_size,
              os.stat(p).st_mtime_ns) for p in files]  # fmt: skip
    text = json.dumps([str(path), handle.uri.key, list(handle.shape), str(handle.dtype), stats,
                       VERSION_TAG])  # fmt: skip
    return "stat-sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Checkpointer:
    """Saves and loads one command's checkpoints; hands the solver its callback."""

    def __init__(self, run, opts: CheckpointOptions, *, fingerprint: str, parameters: dict,
                 output: Path):  # fmt: skip
        from rankwise import formats

        self.run, self.opts = run, opts
        self.signals = opts.signals
        self.fingerprint = fingerprint
        self.parameters = _canonical({**parameters, "seed": run.common.seed})
        self.path = Path(opts.path) if opts.path is not None else default_path(output)
        if self.path.suffix.lower() != ".npz":
            raise CliUsageError(f"--checkpoint must name a .npz file, got {self.path}")
        others = [*run.inputs, *([run.output] if run.output is not None else [])]
        if run.report_path is not None:
            others.append(run.report_path)
        # our own earlier checkpoint may be replaced; anything else needs --force
        formats.check_target(self.path, force=True, inputs=others)
        self.saved = 0
        self.resumed: dict | None = None
        self._last_save = time.monotonic()
        self._last_event: float | None = None
        self._sweeps: list[float] = []
        self._write_seconds = 0.0
        self._stale = False  # an earlier run's checkpoint this run makes obsolete
        self.state = self._load() if opts.resume else self._check_existing()

    # --- reading ------------------------------------------------------------------------

    def _read(self) -> tuple[dict, dict]:
        import zipfile

        import numpy as np

        from rankwise.core.errors import DataError

        size = self.path.stat().st_size
        if size > self.run.budget:
            raise DataError(f"checkpoint {self.path} ({size} bytes) exceeds --max-memory")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if META_KEY not in z.files:
                    raise DataError(f"{self.path} is not a rankwise checkpoint")
                meta = json.loads(bytes(z[META_KEY]).decode("utf-8"))
                arrays = {k[2:]: z[k] for k in z.files if k.startswith("a/")}
        except DataError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise DataError(f"checkpoint {self.path} is damaged ({one_line(str(exc))}); "
                            "remove it or rerun without --resume") from None  # fmt: skip
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{self.path} is not a {FORMAT} file")
        return meta, arrays

    def _check_existing(self) -> None:
        from rankwise.core.errors import DataError
        from rankwise.formats.errors import OutputError

        if self.path.exists():
            try:
                self._read()
            except DataError:
                if not self.run.common.force:
                    raise OutputError(f"{self.path}: exists and is not a rankwise checkpoint "
                                      "(pass --force to replace it)") from None  # fmt: skip
                return None
            self._stale = True
            self.run.warn(f"{self.path} exists; this run starts afresh and replaces it (pass "
                          "--resume to continue from it)")  # fmt: skip
        return None

    def _load(self):
        from rankwise.core.checkpoint import unpack

        if not self.path.exists():
            self.run.warn(f"no checkpoint at {self.path}: starting afresh")
            return None
        meta, arrays = self._read()
        if meta.get("command") != self.run.command:
            raise CliUsageError(f"checkpoint {self.path} is from `rankwise {meta.get('command')}`"
                                f", not `rankwise {self.run.command}`")  # fmt: skip
        if meta.get("fingerprint") != self.fingerprint:
            raise CliUsageError(f"checkpoint {self.path} was made from different input data "
                                f"({meta.get('uri')}); rerun without --resume")  # fmt: skip
        theirs = meta.get("parameters", {})
        diff = sorted(k for k in set(theirs) | set(self.parameters)
                      if theirs.get(k) != self.parameters.get(k))  # fmt: skip
        if diff:
            shown = "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {self.parameters.get(k)!r}"
                              for k in diff[:3])  # fmt: skip
            raise CliUsageError(f"checkpoint {self.path} was made with other parameters ({shown})"
                                "; rerun with the same ones or without --resume")  # fmt: skip
        if meta.get("threads") != self.run.threads:
            self.run.warn(f"the checkpoint ran with {meta.get('threads')} BLAS thread(s), this "
                          f"run has {self.run.threads}: the last bits may differ from an "
                          "uninterrupted run")  # fmt: skip
        try:
            state = unpack(meta["state"], arrays)
        except KeyError as exc:
            from rankwise.core.errors import DataError

            raise DataError(f"checkpoint {self.path} is damaged (missing {exc})") from None
        self.resumed = {"from": str(self.path.resolve()), **meta.get("progress", {}),
                        "written_at": meta.get("written_at")}  # fmt: skip
        return state

    # --- writing ------------------------------------------------------------------------

    def save(self, state: dict, progress: dict) -> None:
        import numpy as np

        from rankwise.core.checkpoint import pack
        from rankwise.formats import atomic
        from rankwise.formats.errors import StorageError

        from .run import _now

        t0 = time.monotonic()
        skeleton, arrays = pack(state)
        meta = {"format": FORMAT, "command": self.run.command, "uri": self._uri(),
                "fingerprint": self.fingerprint, "parameters": self.parameters,
                "threads": self.run.threads, "progress": progress, "written_at": _now(),
                "state": skeleton}  # fmt: skip
        buf = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        staging = atomic.staging_path(self.path)
        try:
            with open(staging, "wb") as f:
                np.savez(f, **{META_KEY: buf}, **{f"a/{k}": v for k, v in arrays.items()})
            atomic.sync(staging, is_dir=False)
            atomic.commit(staging, self.path, force=True, is_dir=False)
        except OSError as exc:
            atomic.remove(staging)
            raise StorageError(f"cannot write checkpoint {self.path}: "
                               f"{exc.strerror or exc}") from None  # fmt: skip
        except BaseException:
            atomic.remove(staging)
            raise
        self.saved += 1
        self._last_save = time.monotonic()
        self._write_seconds = max(self._write_seconds, self._last_save - t0)

    def _uri(self) -> str | None:
        return str(self.run.inputs[0]) if self.run.inputs else None

    # --- the solver's callback ------------------------------------------------------------

    def _time_is_short(self, now: float) -> bool:
        if self.opts.time_limit is None:
            return False
        left = self.opts.time_limit - (now - PROCESS_START)
        sweep = max(self._sweeps[-3:], default=0.0)
        write = max(self._write_seconds, 1.0)
        margin = max(2.0, 0.01 * self.opts.time_limit)
        return left < 1.5 * sweep + 2.0 * write + margin

    def callback(self, progress=None):
        """A solver callback: progress, then periodic saves, signals and the time limit."""
        if self.signals is not None:
            self.signals.phase = "solving"

        def on_event(event):
            if progress is not None and progress(event):
                return True
            _test_signal(str(event.iteration))
            now = time.monotonic()
            last = self._last_event
            self._sweeps.append(now - last if last is not None else event.elapsed)
            self._last_event = now
            if event.state is None:
                return False
            why = None
            if self.signals is not None and self.signals.received:
                why = self.signals.received
            elif self._time_is_short(now):
                why = "time limit"
            if why is None and not (self.opts.every > 0 and now - self._last_save
                                    >= self.opts.every):  # fmt: skip
                return False
            restart = event.extras.get("restart")
            where = {"iteration": event.iteration, "objective": event.objective}
            if restart is not None:
                where["restart"] = int(restart)
            self.save(event.state(), where)
            if why is None:
                return False
            at = f"sweep {event.iteration}" + (f" of restart {restart + 1}" if restart else "")
            cause = "--time-limit is near" if why == "time limit" else f"{why} received"
            raise Interrupted(f"{cause}: stopped after {at}, checkpoint written to "
                              f"{self.path}; rerun with --resume to continue")  # fmt: skip

        return on_event

    def solved(self) -> None:
        """The solver is done: signals from here on let the output be written; the report
        gets its checkpoint section."""
        if self.signals is not None:
            self.signals.phase = "after"
        _test_signal("solved")
        self.run.sections["checkpoint"] = self.report_section()

    def report_section(self) -> dict:
        return {"path": str(self.path.resolve()), "every_seconds": self.opts.every,
                "time_limit_seconds": self.opts.time_limit, "saved": self.saved,
                "resumed": self.resumed}  # fmt: skip

    def done(self) -> None:
        """The output and report are committed: the checkpoint has served."""
        from rankwise.formats import atomic

        if self.signals is not None:
            self.signals.restore()
        if self.path.exists() and (self.saved or self.resumed or self._stale):
            atomic.remove(self.path)


__all__ = ["with_checkpoint", "Checkpointer", "CheckpointOptions", "parse_duration",
           "default_path", "FORMAT"]  # fmt: skip
