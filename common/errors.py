"""User-facing errors: each one ends a command with a single line and a non-zero exit code (:func:`exit_code`)."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Callable

from common.atomic import disk_full


class UserError(Exception):
    """A mistake the user can fix (bad option, missing data, impossible schedule).

    The command-line entry points print ``error: <message>`` on one line and exit with
    status 2; the message must name the problem and the fix.
    """


class DatasetMissing(UserError):
    """A dataset's files are not where they were expected and download is off."""


class DamagedFile(UserError):
    """A file of the run store that exists but cannot be used: not a regular file (a folder, a FIFO), not JSON, or not
    the shape the code expects. ``str()`` is one line: the path, the problem, the fix; readers of the whole store
    (``collect``, ``runs list``) skip the run with a warning built from ``problem`` and ``fix`` instead."""

    def __init__(self, path, problem: str, fix: str = "remove it and run again"):
        super().__init__(f"{path} {problem}; {fix}")
        self.path, self.problem, self.fix = Path(path), problem, fix


def no_permission(path, action: str = "use") -> UserError:
    """The one-line error for a file or folder this user may not ``action`` (``read``, ``write`` or ``use``: either):
    it names the first folder on the way that this user cannot enter, else the path and the permission it lacks
    (for a path that does not exist yet: its folder's write permission)."""
    path = Path(os.path.abspath(path))
    user = _user()
    fix = "grant it (chmod, as the owner) or use a run store this user may read and write (--runs-dir)"
    for folder in reversed(path.parents):
        if os.path.isdir(folder) and not os.access(folder, os.X_OK):
            return UserError(f"permission denied: {path}: this user ({user}) cannot enter the folder {folder}, "
                             f"which needs x (search) permission for it; {fix}")
    target, wanted = path, []
    if not os.path.lexists(path):
        target, action = path.parent, "write"
    if action in ("read", "use"):
        wanted += ["r"] + ["x"] * os.path.isdir(target)
    if action in ("write", "use"):
        wanted += ["w"] + ["x"] * os.path.isdir(target)
    bit = {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}
    missing = "".join(c for c in "rwx" if c in wanted and not os.access(target, bit[c]))
    if not missing:  # os.access cannot tell (root, ACLs, a read-only mount): the system's word
        return UserError(f"permission denied: {path}; {fix}")
    kind = "folder" if os.path.isdir(target) else "file"
    return UserError(f"permission denied: {path}: the {kind} {target} needs {missing} permission for this user "
                     f"({user}) to {action if action != 'use' else 'be used'}; {fix}")


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


class RunFailed(RuntimeError):
    """The run computed to its end but its outcome is not what it was asked for; recorded as failed, never done.

    The command-line entry points print ``error: run failed: <message>`` and exit with status 3.
    """


class Diverged(RunFailed):
    """The training loss became NaN or infinite; the run is recorded as failed."""


# A run whose final measured sparsity differs from its target by more than this (a fraction: 0.005 = 0.5 point)
# is recorded as failed: its numbers would be plotted at a sparsity it does not have.
SPARSITY_TOLERANCE = 0.005


def check_sparsity(measured: float, target: float, why: str = "") -> None:
    """Raise :class:`RunFailed` when ``measured`` misses ``target`` by more than :data:`SPARSITY_TOLERANCE`.

    ``why`` is the likely cause and its fix, added to the message (e.g. "the schedule ends after the run").
    """
    if abs(measured - target) > SPARSITY_TOLERANCE:
        raise RunFailed(f"final sparsity {measured:.4f} misses the target {target:.4f} by more than "
                        f"{100 * SPARSITY_TOLERANCE:.1f} point" + (f": {why}" if why else ""))


def exit_code(action, where: Callable[[], str | None] | None = None) -> int:
    """Run ``action()``; a user mistake or a failed run ends in one ``error:`` line and a non-zero status.

    Status 2: a user mistake, a file or folder this user may not use (``no_permission``), or a folder where a file
    belongs (a store edited by hand); 3: a failed run; 1: the disk is full (``where()``: the folder to name when the
    error does not say which file it was writing; a writer that reports a full disk as a ``RuntimeError``, as
    ``torch.save`` does, is recognized by the disk at ``where()`` having no room left: ``common.atomic.disk_full``);
    130: interrupted.
    """
    try:
        action()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: run failed: {exc}", file=sys.stderr)
        return 3
    except PermissionError as exc:
        print(f"error: {no_permission(exc.filename or (where and where()) or os.getcwd())}", file=sys.stderr)
        return 2
    except IsADirectoryError as exc:  # a folder where a file belongs (a store edited by hand)
        print(f"error: {exc.filename2 or exc.filename} is a folder where a file belongs; remove it (rm -r) and run "
              "the command again", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        folder = (where and where()) or os.getcwd()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            path = os.path.dirname(os.path.abspath(exc.filename)) if exc.filename else folder
        elif isinstance(exc, RuntimeError) and disk_full(folder):
            path = folder
        else:
            raise
        print(f"error: the disk at {path} is full; free some space there (or pass --runs-dir on a disk with room) "
              "and run the command again: a run resumes from its last checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: a run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130
    return 0
