"""The one error family of allx: every expected failure is an AllxError with a one-line message.

CLIs catch AllxError, print `error: <message>` to stderr and exit with `exit_code`.
Messages say what was got and what was expected ("got X, expected Y").
"""

# The one list of exit codes of both CLIs; --help texts and the README are rendered from it.
EXIT_CODES = {
    0: "ok",
    1: "some inputs failed (a batch went on)",
    2: "usage, data or model error",
    3: "a check failed (a converted model's accuracy check, every accuracy-control try too; a tampered audit log; "
       "the monitor's latest window alarms)",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}


class AllxError(Exception):
    """A failure the user can fix; never shown with a traceback."""

    exit_code = 2


class UsageError(AllxError):
    """Options that do not fit together or are out of range."""


class OutputError(AllxError):
    """An output file or folder cannot be written."""


class MissingDependency(AllxError):
    """An optional package or command that this feature needs is not installed."""


class DataError(AllxError):
    """Bad data directory, split file or image set."""


class ImageError(AllxError):
    """One image could not be read; a batch records it and goes on."""

    exit_code = 1


class ModelError(AllxError):
    """Missing, corrupt or unsuitable model file, weights or labels."""


class ConversionError(AllxError):
    """TensorFlow Lite conversion failed (details in the log file named in the message)."""


class ClusterError(AllxError):
    """A worker of a multi-worker run did not join in time, stopped answering or failed."""


class Terminated(AllxError):
    """SIGTERM arrived while a command that stops cleanly on it was running."""

    exit_code = 143


class CheckFailed(AllxError):
    """A converted model failed its accuracy check; the good model was left in place."""

    exit_code = 3
