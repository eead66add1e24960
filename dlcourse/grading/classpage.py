"""class.html: a graded class on one self-contained page.

The distribution of the measured scores against the target (an inline SVG histogram), the
leaderboard, a table of every hand-in that sorts by any column (a few lines of inline
JavaScript), the flags and rejections in words, and a link to each student's report. The page
loads nothing (its Content-Security-Policy forbids any fetch), and every text that came from a
hand-in (student ids, titles, config values inside flags) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from dlcourse.fileio import write_text_atomic
from dlcourse.grading.assignment import Assignment
from dlcourse.grading.gradebook import Row

LEADERS = 10
POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.lead { color: #444; }
.counts span { display: inline-block; margin-right: 1.2em; font-weight: bold; }
.graded { color: #1a7f37; } .flagged { color: #b35900; } .rejected { color: #c62828; }
table { border-collapse: collapse; font-size: 0.9em; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; cursor: pointer; user-select: none; white-space: nowrap; }
th.sorted-up::after { content: " \\25B2"; } th.sorted-down::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
td.flags { text-align: left; max-width: 32em; font-size: 0.9em; }
tr.row-flagged { background: #fff8ec; } tr.row-rejected { background: #fdeeee; }
ol.leaders li { margin: 0.2em 0; }
.badge { font-size: 0.8em; padding: 0.05em 0.4em; border-radius: 0.3em; color: white; }
.badge.graded { background: #1a7f37; } .badge.flagged { background: #b35900; }
.badge.rejected { background: #c62828; }
svg text { font-family: system-ui, sans-serif; font-size: 12px; fill: #333; }
.bar { fill: #8aa9d6; } .bar.reached { fill: #4f9a5f; }
.target { stroke: #c62828; stroke-width: 2; stroke-dasharray: 6 4; }
ul.flag-list li { margin: 0.3em 0; }
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var up = !th.classList.contains('sorted-up');
      table.querySelectorAll('th').forEach(function (h) {
        h.classList.remove('sorted-up', 'sorted-down');
      });
      th.classList.add(up ? 'sorted-up' : 'sorted-down');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if ((x === '') !== (y === '')) { return x === '' ? 1 : -1; }  // empty cells last
        var nx = Number(x), ny = Number(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def write_class_page(
    rows: list[Row],
    assignment: Assignment,
    path: Path,
    root: Path,
    measured_on: str,
    notes: Sequence[str] = (),  # about the grading data
) -> Path:
    """class.html for the rows of a graded class (gradebook.finish_rows)."""
    counts = {
        status: sum(row.status == status for row in rows)
        for status in ("graded", "flagged", "rejected")
    }
    title = f"{assignment.title}: the class"
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="lead">{len(rows)} hand-ins graded against {e(assignment.target_text())}, '
        f"measured on {e(measured_on)} with each hand-in's kept weights (model.safetensors). "
        "Claimed: summary.json's number; reproduced: the kept weights on the assignment's own "
        "split, where the claim was made.</p>",
        *(f'<p class="note">note: {e(note)}</p>' for note in notes),
        '<p class="counts">'
        + "".join(
            f'<span class="{status}">{count} {status}</span>' for status, count in counts.items()
        )
        + "</p>",
        '<section id="distribution"><h2>Measured scores</h2>',
        histogram(rows, assignment),
        "</section>",
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        leaderboard(rows, assignment),
        "</section>",
        '<section id="students"><h2>Every hand-in</h2>',
        "<p>Click a column's name to sort by it.</p>",
        students_table(rows, assignment),
        "</section>",
        '<section id="flags"><h2>Flags and rejections</h2>',
        flag_list(rows),
        "</section>",
        '<p class="lead">Reports are written again by dlcourse from each hand-in\'s verified '
        "files (the student's own report.html is never shown): their numbers are the run's "
        "claims; the measured ones are on this page.</p>",
    ]
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        f"<title>{e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
    write_text_atomic(path, document, root)
    return path


@dataclass
class Frame:
    """The histogram's drawing: `count` bins of width `step` from `low`, in an SVG of fixed
    size with margins."""

    low: float
    step: float
    count: int
    width: int = 720
    height: int = 300
    left: int = 30
    bottom: int = 40
    top: int = 50
    right: int = 60

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.bottom - self.top

    @property
    def base(self) -> int:  # the y of the value axis
        return self.top + self.plot_h

    def x_of(self, value: float) -> float:
        return self.left + (value - self.low) / (self.step * self.count) * self.plot_w


def histogram(rows: list[Row], assignment: Assignment) -> str:
    """An SVG histogram of the measured scores on round bins, the target as a dashed line."""
    shown = [
        row
        for row in rows
        if row.status != "rejected" and row.measured is not None and math.isfinite(row.measured)
    ]
    threshold = assignment.target.threshold
    frame = Frame(*bins([row.measured for row in shown if row.measured is not None], threshold))
    metric = e(assignment.target.metric)
    return "\n".join([
        f'<svg id="histogram" xmlns="http://www.w3.org/2000/svg" width="{frame.width}" '
        f'height="{frame.height}" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="histogram of the measured {metric}">',
        f'<line x1="{frame.left}" y1="{frame.base}" x2="{frame.left + frame.plot_w}" '
        f'y2="{frame.base}" stroke="#555"/>',
        *bars(binned(shown, frame), frame, assignment),
        *ticks(frame, assignment),
        target_line(frame, threshold, assignment),
        f'<text x="{frame.left + frame.plot_w / 2:.1f}" y="{frame.height - 4}" '
        f'text-anchor="middle">measured {metric}: {len(shown)} hand-ins (a bin is green when '
        "all in it reached the target; rejected hand-ins are not drawn)</text>",
        "</svg>",
    ])  # fmt: skip


def binned(rows: list[Row], frame: Frame) -> list[list[Row]]:
    """The rows of each bin, by their measured value."""
    members: list[list[Row]] = [[] for _ in range(frame.count)]
    for row in rows:
        assert row.measured is not None
        index = int((row.measured - frame.low) / frame.step + 1e-9)
        members[min(frame.count - 1, max(0, index))].append(row)
    return members


def bars(members: list[list[Row]], frame: Frame, assignment: Assignment) -> list[str]:
    """A bar per non-empty bin, its count above it and its students on hovering; green when
    every one of them reached the target."""
    tallest = max([len(group) for group in members] + [1])
    bar_w = frame.plot_w / frame.count
    parts = []
    for index, group in enumerate(members):
        if not group:
            continue
        bar_h = len(group) / tallest * frame.plot_h
        reached = all(assignment.reached(row.measured) for row in group)
        x, y = frame.x_of(frame.low + index * frame.step) + 1, frame.base - bar_h
        who = e(", ".join(sorted(row.student for row in group)))
        parts.append(
            f'<rect class="bar{" reached" if reached else ""}" data-count="{len(group)}" '
            f'x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{bar_h:.1f}">'
            f"<title>{len(group)}: {who}</title></rect>"
            f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y - 4:.1f}" text-anchor="middle">'
            f"{len(group)}</text>"
        )
    return parts


def ticks(frame: Frame, assignment: Assignment) -> list[str]:
    """At most 9 labelled ticks on the bin edges."""
    every = max(1, math.ceil(frame.count / 8))
    parts = []
    for tick in range(0, frame.count + 1, every):
        value = frame.low + tick * frame.step
        x = frame.x_of(value)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.base}" x2="{x:.1f}" y2="{frame.base + 4}" '
            f'stroke="#555"/><text x="{x:.1f}" y="{frame.base + 18}" text-anchor="middle">'
            f"{e(assignment.format(value))}</text>"
        )
    return parts


def target_line(frame: Frame, threshold: float, assignment: Assignment) -> str:
    tx = frame.x_of(threshold)
    return (
        f'<line class="target" x1="{tx:.1f}" y1="{frame.top - 30}" x2="{tx:.1f}" '
        f'y2="{frame.base}"/><text x="{tx + 4:.1f}" y="{frame.top - 22}" fill="#c62828">'
        f"target {e(assignment.format(threshold))}</text>"
    )


def bins(values: list[float], threshold: float) -> tuple[float, float, int]:
    """(first edge, width, count) of round bins that hold the values and the target: about
    ten bins of a width of 1, 2, 2.5 or 5 times a power of ten."""
    low, high = min([*values, threshold]), max([*values, threshold])
    span = max(high - low, abs(high) * 0.01, 1e-9)
    raw = span / 10
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    count = max(1, math.floor((high - first) / step + 1e-9) + 1)
    return first, step, count


def leaderboard(rows: list[Row], assignment: Assignment) -> str:
    ranked = [row for row in rows if row.status != "rejected" and row.measured is not None]
    ranked.sort(
        key=lambda row: (
            -row.measured if assignment.maximized else row.measured,  # type: ignore[operator]
            row.student,
        )
    )
    if not ranked:
        return "<p>No hand-in could be measured.</p>"
    items = []
    for row in ranked[:LEADERS]:
        flag = ' <span class="badge flagged">flagged</span>' if row.status == "flagged" else ""
        items.append(
            f"<li><b>{e(row.student)}</b>: {e(assignment.format(row.measured))}, "
            f"{e(_grade(row))} points{flag}</li>"
        )
    return '<ol class="leaders">' + "".join(items) + "</ol>"


def _grade(row: Row) -> str:
    return "-" if row.grade is None else f"{row.grade:g}"


def students_table(rows: list[Row], assignment: Assignment) -> str:
    retrained = any(row.retrained is not None for row in rows)
    header = ["student", "status", "grade", "measured", "claimed", "reproduced"]
    header += ["retrained"] if retrained else []
    header += ["late days", "flags", "report"]
    text_columns = {"student", "status", "flags", "report"}
    head = "".join(
        f'<th class="{"text" if name in text_columns else ""}">{e(name)}</th>' for name in header
    )
    body = []
    for row in rows:
        cells = [
            _cell(row.student, row.student, "text"),
            _cell(
                f'<span class="badge {row.status}">{row.status}</span>',
                row.status,
                "text",
                raw=True,
            ),
            _cell(_grade(row), row.grade),
            _cell(assignment.format(row.measured), row.measured),
            _cell(assignment.format(row.claimed), row.claimed),
            _cell(assignment.format(row.reproduced), row.reproduced),
        ]
        if retrained:
            cells.append(_cell(assignment.format(row.retrained), row.retrained))
        cells.append(_cell(str(row.late_days), row.late_days))
        reasons = row.reasons or row.flags
        cells.append(
            _cell(
                "<br>".join(e(reason) for reason in reasons) or "-", len(reasons), "flags", raw=True
            )
        )
        link = f'<a href="{e(quote(row.report))}">report</a>' if row.report else "-"
        if not row.report and row.notes:  # why not, on hovering
            link = f'<span title="{e("; ".join(row.notes))}">none</span>'

        cells.append(_cell(link, row.report or "", "text", raw=True))
        body.append(f'<tr class="row-{row.status}">' + "".join(cells) + "</tr>")
    return (
        f'<table id="students-table" class="sortable"><thead><tr>{head}</tr></thead>\n'
        "<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
    )


def _cell(content: str, value: object, css: str = "", raw: bool = False) -> str:
    shown = content if raw else e(content)
    sort = "" if value is None else e(value)
    cls = f' class="{css}"' if css else ""
    return f'<td{cls} data-value="{sort}">{shown}</td>'


def flag_list(rows: list[Row]) -> str:
    items = []
    for row in rows:
        reasons = row.reasons or row.flags
        if not reasons:
            continue
        listed = "".join(f"<li>{e(reason)}</li>" for reason in reasons)
        items.append(
            f'<li><b>{e(row.student)}</b> <span class="badge {row.status}">'
            f"{row.status}</span> ({e(row.bundle)})<ul>{listed}</ul></li>"
        )
    if not items:
        return "<p>Nothing to look at: every hand-in was verified.</p>"
    return '<ul class="flag-list">' + "\n".join(items) + "</ul>"
