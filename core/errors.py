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
