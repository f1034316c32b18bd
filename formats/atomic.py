"""Atomic commits: stage next to the final path, fsync, then rename into place.

The staging path lives in the output's directory so the final rename never crosses a file
system. A crash at any moment leaves the old output or nothing at the final path (a SIGKILL
may leave a `.<name>.rankwise-staging-*` file behind, never a partial final file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path

from .errors import OutputError

STAGING_TAG = ".rankwise-staging-"
OLD_TAG = ".rankwise-old-"


def _sibling(final: Path, tag: str) -> Path:
    return final.parent / f".{final.name}{tag}{os.getpid()}-{secrets.token_hex(4)}"


def staging_path(final: Path) -> Path:
    return _sibling(final, STAGING_TAG)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems refuse fsync on a directory descriptor; the data files are synced.
        if not (os.path.isdir(path) and exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EBADF)):
            raise
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def remove(path: Path) -> None:
    """Best-effort removal of a staging or old path (never raises)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()


def _exists_error(final: Path) -> OutputError:
    return OutputError(f"{final}: already exists (pass --force to replace it)")


def _commit_file(staging: Path, final: Path, force: bool) -> None:
    if force:
        if final.is_dir() and not final.is_symlink():
            raise OutputError(f"{final}: is a directory, refusing to replace it with a file")
        os.replace(staging, final)
        return
    try:
        # link() fails if the final path appeared since check_output(): no silent clobbering.
        os.link(staging, final)
    except FileExistsError:
        raise _exists_error(final) from None
    except OSError:
        # No hard links on this file system: check, then rename (a tiny race window).
        if os.path.lexists(final):
            raise _exists_error(final) from None
        os.replace(staging, final)
        return
    os.unlink(staging)


def _commit_dir(staging: Path, final: Path, force: bool) -> None:
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if not force:
        raise _exists_error(final)
    old = _sibling(final, OLD_TAG)
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(old, final)  # put the old output back
        raise
    fsync_path(final.parent)
    remove(old)


def sync(staging: Path, *, is_dir: bool) -> None:
    """Make a staged output durable (its data, and for a directory every entry)."""
    if is_dir:
        fsync_tree(staging)
    else:
        fsync_path(staging)


def commit(staging: Path, final: Path, *, force: bool, is_dir: bool) -> None:
    """Move a staged output (already synced with sync()) onto `final`, then sync the directory."""
    if is_dir:
        _commit_dir(staging, final, force)
    else:
        _commit_file(staging, final, force)
    fsync_path(final.parent)
