"""`allx`: the workstation CLI (data, weights, train, evaluate, convert, report, demo).

Each verb group is a small module under allx/cli; heavy libraries (TensorFlow, matplotlib) are
imported inside the commands so `allx --help` starts fast.
"""

import os

import typer

from allx import __version__
from allx.cli import convert, data, demo, report, tools, train, weights
from allx.console import exit_codes_help, set_verbose

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides our output

app = typer.Typer(
    name="allx",
    no_args_is_help=True,
    add_completion=False,
    help="Train, quantize and check an ALL blood-smear classifier for Raspberry Pi / Coral. "
    + exit_codes_help(),
)
app.add_typer(data.app, name="data")
app.add_typer(weights.app, name="weights")
app.add_typer(tools.app, name="tools")
app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("convert")(convert.convert)
app.command("report")(report.report)
app.command("demo")(demo.demo)


def version_callback(value: bool):
    if value:
        typer.echo(f"allx {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit."),
         verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's start-up lines and library "
                                      "warnings (hidden by default).")):
    """allx: ALL blood-smear classifier toolkit."""
    set_verbose(verbose)
