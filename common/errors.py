"""User-facing errors: each one ends a command with a single line and a non-zero exit code."""


class UserError(Exception):
    """A mistake the user can fix (bad option, missing data, impossible schedule).

    The command-line entry points print ``error: <message>`` on one line and exit with
    status 2; the message must name the problem and the fix.
    """


class DatasetMissing(UserError):
    """A dataset's files are not where they were expected and download is off."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the run is recorded as failed."""
