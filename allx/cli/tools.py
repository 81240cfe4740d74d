"""`allx tools install imx500`: the separate environments some targets need, created ahead of time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allx.console import handle_errors, stderr, stdout
from allx.convert import imx500_env
from allx.errors import UsageError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Tool environments for conversion targets that cannot run in allx's own environment.")

TOOLS = {imx500_env.NAME: imx500_env}


@app.command()
@handle_errors
def install(
    name: Annotated[str, typer.Argument(help=f"The tool environment: {', '.join(TOOLS)}.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Install again even when it is already there.")] = False,
):
    """Create a tool environment in the allx cache (ALLX_CACHE_DIR, else ~/.cache/allx/tools).

    imx500: Sony's IMX500 converter with MCT in a virtualenv of the system Python 3.11 (TensorFlow 2.15,
    Keras 2.15); `allx convert --imx500` creates it on first use otherwise. Needs Java 17. Exit codes:
    0 installed (or already there); 2 unknown name, missing Java or Python, or pip failed.
    """
    tool = TOOLS.get(name.strip().lower())
    if tool is None:
        raise UsageError(f"got tool {name!r}, expected one of {', '.join(TOOLS)}")
    stdout.print(tool.describe(), highlight=False, markup=False)
    if not force and tool.installed() is not None:
        stdout.print(f"already installed in {tool.env_path()}", highlight=False, markup=False)
        return
    log_path = Path(tool.tools_dir()) / f"{tool.NAME}-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    java = tool.java_version()
    stdout.print(f"Java {java} found; pip output goes to {log_path}", highlight=False, markup=False)
    env = tool.install(log_path, lambda text: stderr.print(text, highlight=False, markup=False))
    stdout.print(f"installed: {env.converter}", highlight=False, markup=False)
