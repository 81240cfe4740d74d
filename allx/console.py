"""What both CLIs (`allx`, `allx-edge`) share: one line per error, the exit codes, and one progress bar.

Only command-line modules import this (it knows typer); library code raises AllxError and never prints.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from allx.errors import EXIT_CODES, AllxError

stdout = Console()
stderr = Console(stderr=True)

Report = Callable[[str, int, int], None]  # report(stage, done, total)


def exit_codes_help(*codes: int) -> str:
    """"Exit codes: 0 ok; 2 ..." for --help, from allx.errors.EXIT_CODES (all of them when none named)."""
    chosen = codes or tuple(EXIT_CODES)
    return "Exit codes: " + "; ".join(f"{code} {EXIT_CODES[code]}" for code in chosen) + "."


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
            heavy = ("tensorflow", "keras", "matplotlib", "sklearn")
            hint = 'pip install "allx[train]"' if err.name in heavy else f"pip install {err.name}"
            raise fail(f"missing dependency {err.name!r}: {hint}", 2) from None

    return wrapper


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
                stderr.print(f"{stage}: {done}/{total}", markup=False, highlight=False)

        yield line_at_end
        return
    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=transient) as bars:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update
