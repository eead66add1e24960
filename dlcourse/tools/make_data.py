"""`dlcourse data make NAME --out FILE`: write one of the example CSVs (data/examples.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from dlcourse.data.examples import EXAMPLES, example_rows
from dlcourse.errors import UserError
from dlcourse.fileio import write_text_atomic


@dataclass
class MadeFile:
    path: Path
    rows: int
    columns: tuple[str, ...]
    note: str


def make_example(name: str, out: Path, rows: int = 1000, seed: int = 0) -> MadeFile:
    """Write the example CSV `name` to `out` (never over an existing file)."""
    if name not in EXAMPLES:
        raise UserError(f"no example data set {name!r}; choose one of {', '.join(EXAMPLES)}")
    if rows < 10:
        raise UserError(f"--rows {rows}: an example needs at least 10 rows")
    if out.exists():
        raise UserError(f"{out}: already exists; remove it or choose another --out")
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(example_rows(name, rows, seed))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out.parent}: cannot create the folder ({exc.strerror})") from None
    write_text_atomic(out, text.getvalue())
    example = EXAMPLES[name]
    return MadeFile(out, rows, example.columns, example.note)
