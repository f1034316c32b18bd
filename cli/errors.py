"""The one mapping from exceptions to exit codes (DESIGN.md §3)."""

from __future__ import annotations

import sys
import traceback
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in rankwise
    USAGE = 2
    CHECK_FAILED = 3  # a quality check (--max-error) failed; outputs and report are written
    DATA = 65  # bad data, or a size beyond the memory budget
    NO_INPUT = 66  # input missing or unreadable
    UNAVAILABLE = 69  # engine unavailable
    CANT_CREATE = 73  # output exists without --force, would overwrite an input, no directory
    IO = 74  # I/O error while reading or writing
    CHECKPOINTED = 75  # interrupted after a checkpoint; rerun with --resume
    INTERRUPTED = 130  # SIGINT before any checkpoint: nothing was written
    TERMINATED = 143  # SIGTERM before any checkpoint: nothing was written


class CheckFailed(Exception):
    """A result missed the user's --max-error (exit 3, after writing it)."""


class EngineUnavailable(Exception):
    """The compute engine cannot be reached or started (exit 69)."""


class CliUsageError(Exception):
    """A usage error found by the CLI itself (option combinations, sizes)."""


class Interrupted(Exception):
    """A signal or --time-limit stopped an iterative command (exit 75): its checkpoint, if
    any, is written; rerunning with --resume continues."""


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that cleanup code runs as for Ctrl-C."""


def exit_code_for(exc: BaseException) -> ExitCode:
    from rankwise.core import errors as core_errors
    from rankwise.formats import errors as fmt_errors

    table = (
        (CliUsageError, ExitCode.USAGE),
        (EngineUnavailable, ExitCode.UNAVAILABLE),
        (CheckFailed, ExitCode.CHECK_FAILED),
        (Interrupted, ExitCode.CHECKPOINTED),
        (fmt_errors.UsageError, ExitCode.USAGE),
        (core_errors.ParameterError, ExitCode.USAGE),
        (fmt_errors.InputMissingError, ExitCode.NO_INPUT),
        (fmt_errors.OutputError, ExitCode.CANT_CREATE),
        (fmt_errors.StorageError, ExitCode.IO),
        (fmt_errors.DataError, ExitCode.DATA),
        (core_errors.DataError, ExitCode.DATA),
        (core_errors.BudgetError, ExitCode.DATA),
        (KeyboardInterrupt, ExitCode.INTERRUPTED),
        (Terminated, ExitCode.TERMINATED),
    )
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return ExitCode.INTERNAL


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def report_error(command: str, exc: BaseException, *, debug: bool) -> ExitCode:
    """Print the error the way every command does and return its exit code."""
    code = exit_code_for(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    done = getattr(exc, "rankwise_committed", None)  # the signal came after the commit
    if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED) and done:
        what = "interrupted" if code == ExitCode.INTERRUPTED else "terminated"
        msg = f"{what} after writing {' and '.join(done)}: they are complete"
    elif code == ExitCode.INTERRUPTED:
        msg = "interrupted; no output was written"
    elif code == ExitCode.TERMINATED:
        msg = "terminated; no output was written"
    elif code in (ExitCode.CHECK_FAILED, ExitCode.CHECKPOINTED):
        what = "check failed" if code == ExitCode.CHECK_FAILED else "interrupted"
        sys.stderr.write(f"rankwise {command}: {what}: {one_line(str(exc))}\n")
        sys.stderr.flush()
        return code
    elif code == ExitCode.INTERNAL:
        detail = one_line(f"{type(exc).__name__}: {exc}")
        hint = "" if debug else " (rerun with --debug for the traceback)"
        msg = f"internal error: {detail}{hint}; please report it"
    else:
        msg = one_line(str(exc)) or type(exc).__name__
    sys.stderr.write(f"rankwise {command}: error: {msg}\n")
    sys.stderr.flush()
    return code
