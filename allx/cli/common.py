"""What every allx command shares: turning AllxError into one line on stderr and an exit code.

Exit codes (both CLIs): 0 ok; 1 some inputs failed (a batch went on); 2 usage, data or model error;
3 a converted model failed its accuracy check; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import warnings

import typer
from rich.console import Console

from allx.errors import AllxError

stdout = Console()
stderr = Console(stderr=True)
LIBRARY_MODULES = r"(tensorflow|keras|tf_keras|absl|sklearn|h5py|google|ml_dtypes)(\.|$)"
settings = {"verbose": False}


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
    stderr.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


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


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr (one line, no markup) and return the Exit to raise."""
    stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
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
            hint = 'pip install "allx[train]"' if err.name in ("tensorflow", "keras", "matplotlib", "sklearn") else f"pip install {err.name}"
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


def show_progress() -> bool:
    """Progress bars only on a terminal (CI logs and pipes stay clean)."""
    return sys.stderr.isatty()
