"""`allx report`: thin wrapper over allx.report.write_report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import handle_errors, stderr, stdout
from allx.report import write_report


@handle_errors
def report(
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT", show_default=False, help="JSON results: allx-edge bench --json, allx convert's model.json or "
        "--json output (or its OUT_DIR), allx evaluate --json, allx train's cv.json and metrics.json (or its RUN "
        "folder), benchmarks/*.py results.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML report to write (self-contained: plots embedded).")],
    markdown: Annotated[Optional[Path], typer.Option(help="Also write a Markdown twin here, its plots as PNG files "
                                                          "beside it.")] = None,
    title: Annotated[Optional[str], typer.Option(help="Report title.")] = None,
):
    """Write a site report: device speed and memory, float vs int8 accuracy, a verdict per device, the limits.

    Input kinds are told apart by their keys; the first match wins:

    "benchmark": a benchmarks/*.py result.

    "machine" and "results": allx-edge bench --json.

    "passed", "float", "quantized", "agreement", "per_class" (at the top or under "check"): allx convert.

    "accuracy", "per_class", "confusion_matrix", "classes": allx evaluate --json.

    "kind": "cv": allx train --cv's cv.json (per fold, mean with a 95% interval; the cv.png beside it embedded).

    A missing kind leaves its section out and says so. Unusable files are named in one error line (exit 2).
    """

    result = write_report(inputs, out, markdown, title)
    for verdict in result.verdicts:
        console = stdout if verdict.ok else stderr  # a failed check must be seen even when stdout is piped away
        console.print(f"{verdict.subject}: {verdict.text}", markup=False, highlight=False, soft_wrap=True)
    written = [str(result.html)] + ([str(result.markdown)] if result.markdown else [])
    stdout.print(f"wrote {', '.join(written)}" + (f" and {len(result.figures)} PNG plot(s)" if result.figures else ""),
                 markup=False, highlight=False, soft_wrap=True)
