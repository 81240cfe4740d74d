"""What every allx command shares: turning AllxError into one line on stderr and an exit code.

Exit codes (both CLIs): 0 ok; 1 some inputs failed (a batch went on); 2 usage, data or model error;
3 a converted model failed its accuracy check; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from allx.errors import AllxError

stdout = Console()
stderr = Console(stderr=True)


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
