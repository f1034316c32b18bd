"""Input URIs: `file.h5:/group/dataset`, `store.zarr[:path]`, `file.npz[:key]`, `x.npy`, `x.mtx`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .detect import INPUT_EXTENSIONS
from .errors import UsageError


@dataclass(frozen=True)
class URI:
    """A parsed input reference: the raw text, the file/store path and the key inside it."""

    raw: str
    path: Path
    key: str | None

    def __str__(self) -> str:
        return self.raw


def _has_known_extension(text: str) -> bool:
    return Path(text).suffix.lower() in INPUT_EXTENSIONS


def parse_uri(text: str | os.PathLike[str] | URI) -> URI:
    """Split `text` into path and key.

    The whole string wins when it names an existing path (file names may contain ':'); otherwise
    the longest existing prefix before a ':' is the path; otherwise a prefix ending in a known
    extension is taken as the (missing) path so the error says which file is missing.
    """
    if isinstance(text, URI):
        return text
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"invalid input URI {text!r}: expected PATH or PATH:KEY")
    if os.path.exists(text):
        return URI(text, Path(text), None)
    colons = [i for i, ch in enumerate(text) if ch == ":"]
    # Rightmost existing prefix: keys may contain ':' but rarely does "file:key" also exist.
    for i in reversed(colons):
        left = text[:i]
        if left and os.path.exists(left):
            return URI(text, Path(left), text[i + 1 :] or None)
    for i in colons:
        left = text[:i]
        if left and _has_known_extension(left):
            return URI(text, Path(left), text[i + 1 :] or None)
    return URI(text, Path(text), None)
