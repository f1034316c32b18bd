"""Exception classes of rankwise.formats.

The CLI maps each class to one exit code (DESIGN.md section 3), so every error raised by this
package is one of these, with a one-line message naming the file/array and the reason.
"""

from __future__ import annotations


class FormatsError(Exception):
    """Base class of every expected error raised by rankwise.formats."""


class UsageError(FormatsError):
    """The request is wrong (unknown format, ambiguous file, bad URI or extension): exit 2."""


class InputMissingError(FormatsError):
    """The input file, store, dataset or key does not exist or cannot be read: exit 66."""


class DataError(FormatsError):
    """The input content is corrupt, malformed or refused for safety: exit 65."""


class BudgetError(DataError):
    """The declared size of the input exceeds the memory budget: exit 65."""


class OutputError(FormatsError):
    """The output cannot be created (exists, would overwrite an input, no directory): exit 73."""


class StorageError(FormatsError):
    """An operating-system I/O error while reading data or writing output: exit 74."""


__all__ = [
    "BudgetError",
    "DataError",
    "FormatsError",
    "InputMissingError",
    "OutputError",
    "StorageError",
    "UsageError",
]
