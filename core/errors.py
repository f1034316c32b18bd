"""Exceptions raised by the numerical core.

The CLI maps them to exit codes; the core itself never exits or prints.
"""


class CoreError(Exception):
    """Base class of every error the core raises on purpose."""


class DataError(CoreError, ValueError):
    """The data cannot be used by the method (NaN/Inf, empty, wrong shape or dtype)."""


class ParameterError(CoreError, ValueError):
    """A parameter value or combination is invalid."""


class BudgetError(CoreError):
    """The method cannot run within the memory budget."""


def human_bytes(nbytes) -> str:
    """A byte count for messages: 1.5 GiB; None is an unbounded budget."""
    if nbytes is None:
        return "unbounded"
    x = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if x < 1024 or unit == "PiB":
            return f"{x:.1f} {unit}" if unit != "B" else f"{int(x)} B"
        x /= 1024
    return f"{x:.1f} PiB"
