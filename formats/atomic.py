"""Atomic commits: stage next to the final path, fsync, then rename into place.

The staging path lives in the output's directory so the final rename never crosses a file
system. A crash at any moment leaves the old output or nothing at the final path (a SIGKILL
may leave a `.<name>.rankwise-staging-*` file behind, never a partial final file). Such
leftovers carry the pid and a host tag in their name; the next run writing the same path
removes those whose process is gone (clean_stale).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
from pathlib import Path

from .errors import OutputError

STAGING_TAG = ".rankwise-staging-"
OLD_TAG = ".rankwise-old-"


PAUSE_ENV = "RANKWISE_TEST_PAUSE_AT"
_paused: set[str] = set()


def pause_point(name: str) -> None:
    """Test-only hook: with RANKWISE_TEST_PAUSE_AT=<name> the process stops itself (SIGSTOP)
    the first time it reaches that point, so tests/cli/test_kill_safety.py can signal it at
    an exact moment. Unset (always, outside those tests) this is one dict lookup. Points:
    read, compute, write (cli/run.py), output-partial, staged, between-commits (outputs.py),
    dir-swap (here)."""
    if os.environ.get(PAUSE_ENV) == name and name not in _paused:
        _paused.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)


def _host_tag() -> str:
    # A pid only means something on its host and in its pid namespace: leftovers written
    # from another node of a shared file system must never be judged by our process table.
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return hashlib.sha256(f"{socket.gethostname()}:{ns}".encode()).hexdigest()[:8]


HOST_TAG = _host_tag()
_SIBLING_ID = re.compile(r"(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8}")


def _sibling(final: Path, tag: str) -> Path:
    name = f".{final.name}{tag}{os.getpid()}-{HOST_TAG}-{secrets.token_hex(4)}"
    return final.parent / name


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def clean_stale(final: Path) -> None:
    """Tidy what killed runs left next to `final` (never raises).

    Only names of our pattern, made on this host, whose pid is no longer alive: a staging path
    is removed; an old output moved aside by a directory swap that was cut between its two
    renames is put back when nothing is at `final` (it is the last committed output), else
    removed.
    """
    prefix = f".{final.name}"
    try:
        with os.scandir(final.parent) as it:
            names = [e.name for e in it if e.name.startswith(prefix)]
    except OSError:
        return
    for name in names:
        for tag in (STAGING_TAG, OLD_TAG):
            if not name.startswith(prefix + tag):
                continue
            m = _SIBLING_ID.fullmatch(name[len(prefix + tag) :])
            if m is None or m["host"] != HOST_TAG or _alive(int(m["pid"])):
                continue
            path = final.parent / name
            if tag == OLD_TAG and not os.path.lexists(final):
                with contextlib.suppress(OSError):  # if it fails, a later run tries again
                    os.rename(path, final)
            else:
                remove(path)
            break


def staging_path(final: Path) -> Path:
    clean_stale(final)
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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. NFS: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _commit_dir(staging: Path, final: Path, force: bool) -> None:
    if not os.path.lexists(final):
        os.rename(staging, final)
        return
    if not force:
        raise _exists_error(final)
    # A directory cannot be renamed over a non-empty one. Swapping is atomic: a SIGKILL leaves
    # the old store or the new one at `final` (and the other at a staging name, for
    # clean_stale). Without the swap, two renames; a kill between them leaves nothing at
    # `final` until clean_stale puts the old store back.
    if _exchange(staging, final):
        remove(staging)  # now the old store
        return
    old = _sibling(final, OLD_TAG)
    os.rename(final, old)
    try:
        pause_point("dir-swap")
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


def commit(
    staging: Path, final: Path, *, force: bool, is_dir: bool, sync_parent: bool = True
) -> None:
    """Move a staged output (already synced with sync()) onto `final`, then sync the directory
    (unless `sync_parent` is False: the caller syncs it after a group of renames)."""
    if is_dir:
        _commit_dir(staging, final, force)
    else:
        _commit_file(staging, final, force)
    if sync_parent:
        fsync_path(final.parent)
