"""The console scripts `allx` and `allx-edge`: Ctrl-C while the command line loads is exit 130, one line;
after the command has finished it is ignored (the exit code stays the command's).

Loading a CLI imports typer, numpy and (for `allx`) TensorFlow, which takes seconds; a Ctrl-C then would
otherwise print a traceback from deep inside an import. Once the app runs, allx.console.handle_errors
gives the same answer.
"""

import importlib
import signal
import sys

from allx.errors import EXIT_CODES  # imports nothing itself: loads in no time, before the guard

INTERRUPTED = next(code for code, words in EXIT_CODES.items() if words.startswith("interrupted"))


def load_and_run(module: str) -> None:
    try:
        app = importlib.import_module(module).app
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    try:
        app()
    finally:  # the command has finished: a Ctrl-C while Python shuts down must not change its exit code
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def allx() -> None:
    load_and_run("allx.cli.main")


def allx_edge() -> None:
    load_and_run("allx.edge_runner.cli")
