"""One process at a time per output directory.

Two runs writing into one directory interleave their files (checkpoints of one run pruned by the
other, an eval report built from two runs' images). A lock file created with ``O_EXCL`` beside
the directory holds the owner's host and pid; a second process is refused with both named. A lock
left by a process that died (SIGKILL, power loss) on this host is taken over with a message, so a
kill never needs a manual clean-up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
from pathlib import Path


class LockedError(ValueError):
    """Another live process holds the lock; the message names it and the directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(lock: Path) -> tuple[str, int] | None:
    try:
        host, pid = lock.read_text(encoding="utf-8").split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str):
    """Hold ``<directory>.lock`` for the block; ``what`` names the option that chose the directory."""
    directory = Path(directory)
    lock = directory.with_name(f".{directory.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(lock)
            if owner is not None and (owner[0] != socket.gethostname() or _alive(owner[1])):
                raise LockedError(f"{what} {directory} is in use by process {owner[1]} on {owner[0]} (lock file "
                                  f"{lock}); wait for it to finish or choose another {what}") from None
            print(f"{what} {directory}: taking over the lock of a process that is gone ({lock})", file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES):
                raise LockedError(f"{what} {directory}: cannot create the lock file {lock} ({exc.strerror})") from None
            raise
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - the lock was re-taken between our unlink and our create
        raise LockedError(f"{what} {directory}: another process took the lock {lock}; try again")
    try:
        yield lock
    finally:
        if _read(lock) == (socket.gethostname(), os.getpid()):
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
