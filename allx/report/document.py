"""A report as plain data (paragraphs, lists, tables, figures) rendered as self-contained HTML or Markdown."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

from allx.text import markdown_table

# Inline CSS only (no fonts or scripts fetched): readable on a phone, wide tables scroll sideways.
CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:0 1rem;
     color:#1b1f24;background:#fff}
main{max-width:56rem;margin:0 auto;padding:1rem 0 3rem}
h1{font-size:1.6rem;line-height:1.25;margin-bottom:.25rem}
h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
h3{font-size:1.05rem;margin-top:1.5rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.75rem 0}
table{border-collapse:collapse;font-size:.9rem}
th,td{padding:.35rem .6rem;border:1px solid #d0d7de;text-align:left;white-space:nowrap;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:14rem}
figure{margin:1rem 0}
img{max-width:100%;height:auto}
figcaption,.note{font-size:.88rem;color:#57606a}
.verdict{border-left:4px solid #1a7f37;background:#f0fff4;padding:.5rem .75rem;margin:.5rem 0}
.warning{border-left:4px solid #cf222e;background:#fff5f5;padding:.5rem .75rem;margin:.5rem 0}
""".strip()
TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # what a Markdown renderer could take for raw HTML
NUMERIC = re.compile(r"^[≤≥~+\-−]?\s*[\d.,]+\s*(%|ms|MB|KB|x|pp|/h)?$")


@dataclass(frozen=True)
class Paragraph:
    text: str
    style: str = ""  # "", "note", "verdict" or "warning"


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    style: str = ""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""  # shown under the table: what the columns mean, where a number comes from


@dataclass(frozen=True)
class Figure:
    name: str  # file-name safe, unique within the report (Markdown writes NAME.png, or NAME.svg for a drawing)
    png: bytes
    caption: str
    svg: str = ""  # a drawing made as SVG text (the monitor chart): inlined in the HTML instead of the PNG

    @property
    def suffix(self) -> str:
        return ".svg" if self.svg else ".png"

    @property
    def data(self) -> bytes:
        return self.svg.encode("utf-8") if self.svg else self.png


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple = ()
    level: int = 2


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    sections: tuple[Section, ...]

    def figures(self) -> list[Figure]:
        return [block for section in self.sections for block in section.blocks if isinstance(block, Figure)]


def render_html(document: Document) -> str:
    """One HTML file with the CSS inline and every figure as a data: URI; nothing is fetched when opened."""
    body = [f"<h1>{escape(document.title)}</h1>", f'<p class="note">{escape(document.subtitle)}</p>']
    for section in document.sections:
        body.append(f"<h{section.level}>{escape(section.title)}</h{section.level}>")
        body.extend(html_block(block) for block in section.blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(document.title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def html_block(block) -> str:
    style = f' class="{block.style}"' if getattr(block, "style", "") else ""
    if isinstance(block, Paragraph):
        return f"<p{style}>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return f"<ul{style}>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{escape(cell)}</th>" for cell in block.header)
        rows = "".join("<tr>" + "".join(html_cell(cell) for cell in row) + "</tr>" for row in block.rows)
        note = f'<p class="note">{escape(block.note)}</p>' if block.note else ""
        return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{note}'
    if isinstance(block, Figure) and block.svg:
        return f"<figure>{block.svg}<figcaption>{escape(block.caption)}</figcaption></figure>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(block.caption)}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>")
    raise TypeError(f"got a {type(block).__name__} block, expected Paragraph, Bullets, Table or Figure")


def html_cell(cell: str) -> str:
    """Numbers right-aligned; long text may wrap (short cells never do, so a row stays one line on a phone)."""
    style = ' class="num"' if NUMERIC.match(cell) else ' class="wrap"' if len(cell) > 40 else ""
    return f"<td{style}>{escape(cell)}</td>"


def escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def render_markdown(document: Document, figure_files: dict[str, str]) -> str:
    """Markdown twin: the same blocks; figures link to the PNG files named in figure_files (name -> file)."""
    lines = [f"# {markdown_text(document.title)}", "", f"*{markdown_text(document.subtitle)}*", ""]
    for section in document.sections:
        lines += ["#" * section.level + f" {markdown_text(section.title)}", ""]
        for block in section.blocks:
            lines += markdown_block(block, figure_files) + [""]
    return "\n".join(lines).rstrip() + "\n"


def markdown_block(block, figure_files: dict[str, str]) -> list[str]:
    if isinstance(block, Paragraph):
        prefix = {"verdict": "> ", "warning": "> **Warning:** "}.get(block.style, "")
        return [prefix + markdown_text(block.text)]
    if isinstance(block, Bullets):
        return [f"- {markdown_text(item)}" for item in block.items]
    if isinstance(block, Table):
        lines = markdown_table([markdown_cell(cell) for cell in block.header],
                               ([markdown_cell(cell) for cell in row] for row in block.rows))
        return lines + (["", f"*{markdown_text(block.note)}*"] if block.note else [])
    if isinstance(block, Figure):
        caption = markdown_text(block.caption)
        return [f"![{caption}]({figure_files[block.name]})", "", f"*{caption}*"]
    raise TypeError(f"got a {type(block).__name__} block, expected Paragraph, Bullets, Table or Figure")


def markdown_cell(cell) -> str:
    """A table cell from input files: its text escaped, a "|" kept inside the cell, a line break made a space."""
    return markdown_text(cell).replace("|", "\\|").replace("\n", " ")


def markdown_text(text: str) -> str:
    """Text from input files shown as text: a "<tag" is backslash-escaped so no renderer runs it as HTML."""
    return TAG_START.sub(r"\\<", str(text))
