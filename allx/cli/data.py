"""`allx data inspect|split` (being implemented)."""

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect and split a directory-labelled image set.")
