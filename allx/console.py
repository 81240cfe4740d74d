"""What both CLIs (`allx`, `allx-edge`) share: one line per error, the exit codes, and one progress bar.

Only command-line modules import this (it knows typer); library code raises AllxError and never prints.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import warnings
from typing import Callable, Iterator

import typer

from allx.errors import EXIT_CODES, AllxError
from allx.text import printable

Report = Callable[[str, int, int], None]  # report(stage, done, total)
LIBRARY_MODULES = r"(tensorflow|keras|tf_keras|absl|sklearn|h5py|google|ml_dtypes)(\.|$)"
settings = {"verbose": False}
consoles: dict = {}  # "stdout"/"stderr" -> rich Console, made by rich_console


def exit_codes_help(*codes: int) -> str:
    """"Exit codes: 0 ok; 2 ..." for --help, from allx.errors.EXIT_CODES (all of them when none named)."""
    chosen = codes or tuple(EXIT_CODES)
    return "Exit codes: " + "; ".join(f"{code} {EXIT_CODES[code]}" for code in chosen) + "."


def echo(text: str, err: bool = False) -> None:
    """Every line the CLIs print for people: control characters escaped (the text's own line breaks kept), so a
    file name or ID from the user cannot move the cursor, colour the terminal or fake a line. Written as it is
    (no markup, no emoji codes) and flushed, so a pipe sees each line when it is printed."""
    stream = sys.stderr if err else sys.stdout
    stream.write(printable(text, keep="\n") + "\n")
    stream.flush()


def rich_console(err: bool = False):
    """The rich Console on stdout (or stderr) for tables and progress bars, made on first use: a command that
    prints only plain lines (`allx-edge classify`) starts without importing rich."""
    name = "stderr" if err else "stdout"
    if name not in consoles:
        from rich.console import Console

        consoles[name] = Console(stderr=err)
    return consoles[name]


def __getattr__(name: str):
    """`from allx.console import stdout, stderr`: the two rich Consoles, made when first asked for."""
    if name in ("stdout", "stderr"):
        return rich_console(err=name == "stderr")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def escape(text: str) -> str:
    """User text (a path, a class name) for a line printed with rich markup: brackets and control characters
    escaped."""
    from rich.markup import escape as escape_markup

    return escape_markup(printable(text))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr (one line, no markup) and return the Exit to raise."""
    echo(f"error: {printable(message)}", err=True)
    return typer.Exit(code)


def handle_errors(command):
    """Decorator for a Typer command: AllxError -> one line + its exit code; Ctrl-C -> 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AllxError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except ModuleNotFoundError as err:
            heavy = ("tensorflow", "keras", "matplotlib", "sklearn")
            hint = 'pip install "allx[train]"' if err.name in heavy else f"pip install {err.name}"
            raise fail(f"missing dependency {err.name!r}: {hint}", 2) from None
        except OSError as err:  # disk full, read-only or vanished output, a folder where a file was expected
            if interrupted_within(err):
                raise fail("interrupted", 130) from None
            where = f"{err.filename}: " if err.filename else ""
            raise fail(f"{where}cannot write or read ({err.strerror or err}), expected a writable path with free "
                       "space", 2) from None
        except Exception as err:
            if interrupted_within(err):  # a library turned Ctrl-C into its own error type
                raise fail("interrupted", 130) from None
            raise

    return wrapper


def interrupted_within(err: BaseException) -> bool:
    """Whether a Ctrl-C is somewhere in the chain of exceptions that led to `err`."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt) or "KeyboardInterrupt" in str(err)[:2000]:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def set_verbose(verbose: bool) -> None:
    """--verbose shows TensorFlow's start-up lines and library warnings; by default only allx speaks.

    Our own warnings (allx.train.features.CacheRebuilt, ...) are always shown, as `warning: ...` lines.
    """
    settings["verbose"] = verbose
    warnings.showwarning = show_warning
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        warnings.filterwarnings("ignore", module=LIBRARY_MODULES)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    echo(f"warning: {printable(str(message))}", err=True)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (absl, oneDNN) kept off the terminal unless --verbose.

    TF_CPP_MIN_LOG_LEVEL does not reach the lines written before absl's logging starts, so file
    descriptor 2 points at a scratch file during the import; Python's own stderr is untouched.
    """
    if settings["verbose"] or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                import tensorflow as tf  # noqa: F401  (heavy and optional: imported only by commands needing it)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    tf.get_logger().setLevel("ERROR")


def show_progress() -> bool:
    """Progress bars only on a terminal (CI logs and pipes stay clean)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bars(transient: bool = True, lines_when_piped: bool = False,
                  every_step: tuple[str, ...] = ()) -> Iterator[Report | None]:
    """A report(stage, done, total) callback drawing one rich bar per stage on stderr.

    Not on a terminal: None, or with `lines_when_piped` one plain line when a stage ends (and at every
    step of the stages in `every_step`, e.g. epochs), so long jobs still show progress in a log.
    """
    if not show_progress():
        if not lines_when_piped:
            yield None
            return

        def line_at_end(stage: str, done: int, total: int) -> None:
            if done == total or stage in every_step:
                echo(f"{stage}: {done}/{total}", err=True)

        yield line_at_end
        return
    # imported here: `allx-edge classify` starts without the progress-bar code it never draws
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=rich_console(err=True), transient=transient) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update
