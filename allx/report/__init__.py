"""`allx report`: one site report (HTML + Markdown twin) from bench, conversion-check and evaluation JSON files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from allx.files import checked_write
from allx.errors import UsageError
from allx.report.document import render_html, render_markdown
from allx.report.inputs import KIND_RULES, ReportInputError, read_inputs
from allx.report.verdict import Verdict, make_verdicts
from allx.report.sections import build_document

DEFAULT_TITLE = "allx site report: speed and accuracy on the device"
__all__ = ["DEFAULT_TITLE", "KIND_RULES", "ReportInputError", "ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    html: Path
    markdown: Path | None
    figures: tuple[Path, ...]  # PNG (and SVG) files written beside the Markdown
    verdicts: tuple[Verdict, ...]
    sections: tuple[str, ...]


def write_report(inputs, out: str | Path, markdown: str | Path | None = None, title: str | None = None,
                 created: str | None = None) -> ReportResult:
    """Read the inputs, write the self-contained HTML to `out` and, if asked, the Markdown twin and its PNGs."""

    out = Path(out)
    markdown = Path(markdown) if markdown is not None else None
    if markdown is not None and markdown.resolve() == out.resolve():
        raise UsageError(f"--markdown {markdown}: got the same path as --out, expected a different file")
    data = read_inputs(inputs)
    created = created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = build_document(data, title or DEFAULT_TITLE, created)
    checked_write(out, render_html(document).encode("utf-8"))
    figures = []
    if markdown is not None:
        names = {}
        for figure in document.figures():
            path = markdown.with_name(f"{markdown.stem}_{safe_name(figure.name)}{figure.suffix}")
            figures.append(checked_write(path, figure.data))
            names[figure.name] = path.name
        checked_write(markdown, render_markdown(document, names).encode("utf-8"))
    return ReportResult(out, markdown, tuple(figures), tuple(make_verdicts(data)),
                        tuple(section.title for section in document.sections))


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)



