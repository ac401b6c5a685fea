"""User-facing errors: each one ends a command with a single line and a non-zero exit code (:func:`exit_code`)."""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad option, missing data, impossible schedule).

    The command-line entry points print ``error: <message>`` on one line and exit with
    status 2; the message must name the problem and the fix.
    """


class DatasetMissing(UserError):
    """A dataset's files are not where they were expected and download is off."""


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

    Status 2: a user mistake; 3: a failed run; 1: the disk is full (``where()``: the folder to name when the error
    does not say which file it was writing); 130: interrupted.
    """
    try:
        action()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: run failed: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        path = os.path.dirname(os.path.abspath(exc.filename)) if exc.filename else (where and where()) or os.getcwd()
        print(f"error: the disk at {path} is full; free some space there (or pass --runs-dir on a disk with room) "
              "and run the command again: a run resumes from its last checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: a run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130
    return 0
