"""The hand-in report as a document: sections of paragraphs, code, tables and figures, written
as one self-contained HTML file (figures embedded as base64 data URIs: no network, no other
file) or as Markdown with the figures as PNG files beside it.

Every text comes from a run (run and column names, class labels, cells of a CSV) and is text:
escaped for HTML in both formats (Markdown passes HTML through, so a `<script>` in a column
name would otherwise run when the report is viewed), with Markdown's own table and emphasis
characters escaped too, and code in a fence longer than any run of backticks it holds. The
report's own mentions of commands (`Span`, inside a paragraph) are code: <code> in HTML, a code
span in Markdown.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from dlcourse.fileio import make_folder, write_bytes_atomic, write_text_atomic


@dataclass
class Cell:
    text: str  # as shown
    value: float | None = None  # the exact number behind a rounded text (data-value in HTML)


@dataclass
class Span:
    """Code inside a paragraph (a command such as `dlcourse evaluate`): code in both formats."""

    text: str


@dataclass
class Paragraph:
    text: str | list[str | Span]  # plain text, or plain text with spans of code


@dataclass
class Code:
    text: str
    language: str = ""


@dataclass
class TableBlock:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Figure:
    name: str  # file name of the PNG (Markdown) and its alt text
    png: bytes
    caption: str


Block = Paragraph | Code | TableBlock | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
.table { max-width: 100%; overflow-x: auto; }
.table.scroll { max-height: 30em; overflow-y: auto; }
"""
# Every table sits in a box as wide as the page at most: a wider one scrolls sideways inside it
# (and a long one, down), instead of running past the page or having columns cut off; cells
# never wrap (an lr of 1.00e-03 stays on one line).


def write_html(path: Path, title: str, sections: list[Section], root: Path | None = None) -> None:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<section>\n<h2>{html.escape(section.title)}</h2>")
        body += [html_block(block) for block in section.blocks]
        body.append("</section>")
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    write_text_atomic(path, document, root)


def html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{html_inline(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img alt="{html.escape(block.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
        )
    head = "".join(f"<th>{html.escape(name)}</th>" for name in block.header)
    rows = "".join("<tr>" + "".join(html_cell(cell) for cell in row) + "</tr>\n"
                   for row in block.rows)  # fmt: skip
    caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
    table = f"<table>{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody></table>"
    box = "table scroll" if len(block.rows) > 25 else "table"
    return f'<div class="{box}">{table}</div>'


def html_inline(text: str | list[str | Span]) -> str:
    parts = [text] if isinstance(text, str) else text
    return "".join(f"<code>{html.escape(part.text)}</code>" if isinstance(part, Span)
                   else html.escape(part) for part in parts)  # fmt: skip


def html_cell(cell: Cell) -> str:
    value = "" if cell.value is None else f' data-value="{cell.value!r}"'
    return f"<td{value}>{html.escape(cell.text)}</td>"


def write_markdown(
    path: Path, title: str, sections: list[Section], root: Path | None = None
) -> list[Path]:
    """report.md, and its figures in a folder beside it (<stem>_files/); returns every file
    written (with `root`, only inside that folder)."""
    folder = path.parent / f"{path.stem}_files"
    written = []
    lines = [f"# {md(title)}", ""]
    for section in sections:
        lines += [f"## {md(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Figure):
                make_folder(folder, root)
                image = folder / block.name
                write_bytes_atomic(image, block.png, root)
                written.append(image)
                lines += [f"![{md(block.name)}]({quote(folder.name)}/{quote(block.name)})", "",
                          f"*{md(block.caption)}*"]  # fmt: skip
            else:
                lines += markdown_block(block)
            lines.append("")
    write_text_atomic(path, "\n".join(lines), root)
    return [path, *written]


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # emphasis, code, links, tables
BLOCK_START = re.compile(r"^([#>+*-] |\d+\. )")  # a heading, quote or list item


def md(text: str) -> str:
    """Text as Markdown shows it literally: HTML escaped, Markdown's marks backslashed, one
    line (a newline would end a table row or a heading)."""
    escaped = html.escape(" ".join(text.splitlines()), quote=False)
    return MARKDOWN_SPECIAL.sub(r"\\\1", escaped)


def md_paragraph(text: str | list[str | Span]) -> str:
    """md(text) for a paragraph, which must not begin like a heading, quote or list; its
    spans of code as code spans."""
    parts = [text] if isinstance(text, str) else text
    shown = "".join(md_code(part.text) if isinstance(part, Span) else md(part) for part in parts)
    return shown if parts and isinstance(parts[0], Span) else BLOCK_START.sub(r"\\\1", shown)


def md_code(text: str) -> str:
    """A code span: between runs of backticks longer than any inside (spaced when it begins
    or ends with one). Markdown shows a code span's text as it is, HTML tags included."""
    text = " ".join(text.splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def markdown_block(block: Paragraph | Code | TableBlock) -> list[str]:
    if isinstance(block, Paragraph):
        return [md_paragraph(block.text)]
    if isinstance(block, Code):
        longest = max((len(run) for run in re.findall(r"`+", block.text)), default=0)
        fence = "`" * max(3, longest + 1)  # no run of backticks inside can close it
        return [f"{fence}{block.language}", block.text.rstrip("\n"), fence]
    lines = [f"**{md(block.caption)}**", ""] if block.caption else []
    lines.append("| " + " | ".join(md(name) for name in block.header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(block.header) - 1)) + "|")
    lines += ["| " + " | ".join(md(cell.text) for cell in row) + " |" for row in block.rows]
    return lines
