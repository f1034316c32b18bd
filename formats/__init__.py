"""rankwise.formats: reading, writing, URIs, safety checks and atomic commits.

Heavy engines (h5py, zarr, scipy) are imported only when a file of that format is touched, so
`import rankwise.formats` stays cheap.
"""

from __future__ import annotations

from .detect import KNOWN_FORMATS, detect_format
from .errors import (
    BudgetError,
    DataError,
    FormatsError,
    InputMissingError,
    OutputError,
    StorageError,
    UsageError,
)
from .fingerprints import Fingerprinter, fingerprint, fingerprint_entries, fingerprint_many
from .handle import ArrayHandle
from .outputs import (
    Staged,
    check_output,
    check_target,
    commit_all,
    read_result,
    stage,
    stage_json,
    write,
    write_json,
)
from .registry import OUTPUT_EXTENSIONS, list_arrays, open_array
from .sparse import Entries
from .uri import URI, parse_uri

open = open_array  # formats.open(uri); the builtin is never used in this package namespace

__all__ = [
    "KNOWN_FORMATS",
    "OUTPUT_EXTENSIONS",
    "URI",
    "ArrayHandle",
    "BudgetError",
    "DataError",
    "Entries",
    "Fingerprinter",
    "FormatsError",
    "InputMissingError",
    "OutputError",
    "Staged",
    "StorageError",
    "UsageError",
    "check_output",
    "check_target",
    "commit_all",
    "detect_format",
    "fingerprint",
    "fingerprint_entries",
    "fingerprint_many",
    "list_arrays",
    "open",
    "open_array",
    "parse_uri",
    "read_result",
    "stage",
    "stage_json",
    "write",
    "write_json",
]
