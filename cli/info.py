"""rankwise info: what a file or store holds, without loading it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from . import options as opt
from .run import guarded


def info(
    uri: opt.InputURI,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    scan: Annotated[
        bool,
        typer.Option("--scan", help="Read the data block by block to count NaN, Inf and nnz."),
    ] = False,
    max_memory: opt.MaxMemory = None,
    debug: opt.Debug = False,
) -> None:
    """Every array in a file or store (or the one a URI names): shape, dtype, chunks,
    compression, nnz; NaN/Inf counts with --scan."""
    with guarded("info", debug):
        listing, failed = _info(uri, scan, max_memory)
        if json_:
            sys.stdout.write(json.dumps(listing, indent=2, allow_nan=False) + "\n")
        else:
            _print_table(listing)
        if failed:
            from rankwise.formats import DataError

            raise DataError(f"{failed[0]} (and {len(failed) - 1} more; see the notes)"
                            if len(failed) > 1 else failed[0])  # fmt: skip


def _info(uri: str, scan: bool, max_memory: str | None) -> tuple[dict, list[str]]:
    """The listing, and the errors of arrays whose scan failed (listed, not fatal)."""
    from rankwise import formats

    from .runtime import resolve_memory

    budget, _ = resolve_memory(max_memory)
    parsed = formats.parse_uri(uri)
    if parsed.key is None:
        listing = formats.list_arrays(parsed.path)
        uris = [a.get("uri") for a in listing["arrays"]]
    else:
        with formats.open_array(parsed, max_bytes=budget) as h:
            listing = {
                "path": str(parsed.path),
                "format": h.format,
                "size_bytes": None,
                "arrays": [h.describe()],
            }
        uris = [parsed.raw]
    listing["uri"] = uri
    failed: list[str] = []
    if scan:
        for entry, u in zip(listing["arrays"], uris, strict=True):
            if u is None or any(str(n).startswith("refused") for n in entry.get("notes", [])):
                continue
            try:
                with formats.open_array(u, max_bytes=budget) as h:
                    entry.update(h.scan())
            except formats.FormatsError as exc:
                msg = " ".join(str(exc).split())
                entry.setdefault("notes", []).append(f"scan failed: {msg}")
                failed.append(msg)
    return listing, failed


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, list | tuple):
        return "×".join(str(x) for x in v) if v else "()"
    return str(v)


def _print_table(listing: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    arrays = listing["arrays"]
    scanned = any("nan" in a for a in arrays)
    title = f"{listing['path']} ({listing['format']}"
    if listing.get("size_bytes") is not None:
        title += f", {listing['size_bytes']:,} bytes"
    title += ")"
    table = Table(title=title, title_justify="left")
    cols = ["name", "shape", "dtype", "chunks", "compression", "nnz"]
    if scanned:
        cols += ["NaN", "Inf"]
    cols.append("notes")
    for c in cols:
        table.add_column(c, overflow="fold")
    for a in arrays:
        row = [
            _fmt(a.get("name")),
            _fmt(a.get("shape")),
            _fmt(a.get("dtype")),
            _fmt(a.get("chunks")),
            _fmt(a.get("compression")),
            _fmt(a.get("nnz")),
        ]
        if scanned:
            row += [_fmt(a.get("nan")), _fmt(a.get("inf"))]
        row.append("; ".join(a.get("notes") or []) or ("sparse" if a.get("sparse") else ""))
        table.add_row(*row)
    Console(soft_wrap=False, width=max(100, Console().width)).print(table)
