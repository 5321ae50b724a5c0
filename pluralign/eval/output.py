"""An eval output directory holds all of one run's files or none of them.

A run writes into a sibling temp directory, ``<output>.tmp-<pid>``, and swaps it into place only
once everything is written. So two runs on one output never mix their files (an old run's
``images/adapter_w0.5`` next to a new run's results), and a run that fails half way (a full disk,
a judge that crashes, Ctrl-C) leaves the previous results as they were. The output's lock
(:func:`pluralign.locks.directory_lock`, shared with the trainer's run directories) keeps a
second run off the same output while one is under way; a lock left by a run that died is taken
over, and what that run left half written is removed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pluralign.config import ConfigError
from pluralign.locks import LockedError, directory_lock

# Everything an eval run writes at the top of its output (pluralign.eval.report, runner). The swap
# replaces the whole directory, so a directory holding anything else is not the eval's to replace.
ARTIFACTS = frozenset({"results.json", "report.md", "report.html", "grid.png", "adherence_by_attribute.png",
                       "dial_curve.png", "category_curves.png", "category_dials.png", "images"})


class OutputError(ValueError):
    """The output directory cannot take this run's results; the message says why and what to do."""


OutputLocked = LockedError  # another live run owns the output; the message names it and its process


class OutputDiskFull(OutputError):
    """The disk filled up while the run wrote its results; the previous results are intact."""


def _sibling(output: Path, suffix: str) -> Path:
    return output.with_name(f"{output.name}.{suffix}")


def _recover(output: Path) -> None:
    """Clean up after runs that died on this output (called holding its lock, so none of them is alive):
    drop their temp directories and, if one died in the middle of the swap, put the results it had
    moved aside back in place."""
    pattern = re.compile(rf"{re.escape(output.name)}\.(tmp|old)-\d+")
    for left in sorted(output.parent.iterdir()):
        if not pattern.fullmatch(left.name):
            continue
        if left.name.startswith(f"{output.name}.old-") and not output.exists():
            left.rename(output)
        else:
            shutil.rmtree(left, ignore_errors=True)


def _check_replaceable(output: Path) -> None:
    if output.is_symlink():
        raise OutputError(f"output {output} is a symbolic link; pass the directory it points to")
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} is a file, not a directory; choose another output")
    if output.is_dir():
        foreign = sorted(p.name for p in output.iterdir() if p.name not in ARTIFACTS)
        if foreign:
            raise OutputError(f"output {output} holds files that are not eval results ({', '.join(foreign[:3])}"
                              f"{', ...' if len(foreign) > 3 else ''}); an eval run replaces the whole directory, so "
                              "choose a new or empty output directory")


def _swap(tmp: Path, output: Path) -> None:
    old = _sibling(output, f"old-{os.getpid()}")
    had_old = output.exists()
    if had_old:
        output.rename(old)
    try:
        tmp.rename(output)
    except OSError:
        if had_old:
            old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def output_transaction(output: str | Path) -> Iterator[Path]:
    """Lock ``output``, yield a fresh temp directory to write into, and swap it into place on success.

    On any failure the temp directory is removed and ``output`` is left as it was; a full disk
    becomes :class:`OutputDiskFull`. Raises :class:`OutputLocked` if a live run holds the lock and
    :class:`OutputError` if ``output`` holds files that are not eval results (the swap would delete them).
    """
    final = Path(os.path.abspath(os.path.expanduser(str(output))))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output {final} is not writable ({exc.strerror or exc}); choose another output") from None
    with directory_lock(final, "output"):
        _recover(final)
        _check_replaceable(final)
        tmp = _sibling(final, f"tmp-{os.getpid()}")
        try:
            try:
                tmp.mkdir()
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise
                raise ConfigError(f"output {final} is not writable ({exc.strerror or exc}); choose another "
                                  "output") from None
            yield tmp
            _swap(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                previous = (f"the previous results in {final} are intact" if final.exists()
                            else f"nothing was written to {final}")
                raise OutputDiskFull(f"output {final}: the disk is full (no space left on device while writing "
                                     f"{exc.filename or 'the results'}); {previous} and the partial output was "
                                     "removed. Free some space or choose another output, then run again") from exc
            raise
