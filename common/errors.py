"""User-facing errors: each one ends a command with a single line and a non-zero exit code."""


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
