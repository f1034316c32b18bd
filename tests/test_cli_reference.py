"""The README's command reference stays in sync with the Typer app: every command has a
section, and every option of a command is documented in its section (the shared options in
their own tables)."""

from __future__ import annotations

import re

import pytest
import typer
from helpers import REPO

from rankwise.cli.checkpoint import CHECKPOINT_OPTIONS
from rankwise.cli.main import app
from rankwise.cli.options import COMMON_OPTIONS

README = (REPO / "README.md").read_text(encoding="utf-8")
# documented once for all commands: "Options every compute command takes", the Dask section
# and "Checkpoint and resume"
SHARED = {"--help", "-h", "--output", "-o", "-q", "--engine", "--scheduler",
          "--scheduler-file", "--workers", "--connect-timeout",
          *("--" + n.rstrip("_").replace("_", "-") for n in (*COMMON_OPTIONS,
                                                              *CHECKPOINT_OPTIONS))}  # fmt: skip


def _commands(group, prefix=()):
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            yield from _commands(sub, (*prefix, name))
        else:
            yield (*prefix, name), sub


COMMANDS = sorted(_commands(typer.main.get_command(app)), key=lambda c: c[0])


def _section(path: tuple) -> str:
    """The README text under the heading of ``rankwise <path>`` (a group's heading covers
    its subcommands)."""
    for n in range(len(path), 0, -1):
        words = " ".join(path[:n])
        m = re.search(rf"^### `rankwise {re.escape(words)}[ `].*$", README, flags=re.M)
        if m:
            end = re.search(r"^#{2,3} ", README[m.end() :], flags=re.M)
            return README[m.start() : m.end() + (end.start() if end else len(README))]
    return ""


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_and_option_is_documented(path, command):
    section = _section(path)
    assert section, f"README has no section for rankwise {' '.join(path)}"
    options = set()
    for p in command.params:
        names = [o for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("-")]
        # a short alias (-k) is documented through its long name
        options |= {o for o in names if o.startswith("--") or len(names) == 1}
    missing = sorted(o for o in options - SHARED
                     if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section))  # fmt: skip
    assert not missing, f"rankwise {' '.join(path)}: undocumented in its README section: {missing}"


def test_shared_options_are_documented_once():
    table = README[README.index("## Options every compute command takes") :]
    for name in COMMON_OPTIONS:
        assert f"`--{name.rstrip('_').replace('_', '-')}" in table
    dask = README[README.index("## Distributed engine (Dask)") :]
    for opt in ("--engine", "--scheduler", "--scheduler-file", "--workers", "--connect-timeout"):
        assert f"`{opt}" in dask
