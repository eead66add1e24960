"""`dlcourse.compare(runs)`: the table and picture of `dlcourse compare`, as an object."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcourse.api.display import html_table
from dlcourse.api.run import Run
from dlcourse.tools import compare as compare_tool

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Comparison:
    """Runs side by side: what differs in their configs and what it gave, best run first.

    `table` has a dict per run; `figure` (compare.png) and `csv` (compare.csv) are the files
    written as by the command; `plot()` draws the loss curves again, for a notebook.
    """

    def __init__(self, result: compare_tool.Comparison):
        self.result = result
        self.figure = result.figure
        self.csv = result.table

    @property
    def table(self) -> list[dict[str, Any]]:
        """A dict per run: the differing config keys, best/last dev and test metrics, epochs,
        seconds, status and the run folder."""
        return compare_tool.table_rows(self.result)

    def plot(self) -> Figure:
        """Train and dev loss per epoch, one colour per run (the picture of compare.png)."""
        return compare_tool.curves_figure(self.result)

    def __repr__(self) -> str:
        return f"<dlcourse.Comparison of {len(self.result.rows)} runs, table in {self.csv}>"

    def _repr_html_(self) -> str:
        rows = self.table
        return html_table(list(rows[0]), [list(row.values()) for row in rows])


def compare(runs: Sequence[Run | str | Path], *, out: str | Path | None = None) -> Comparison:
    """`dlcourse compare`: compare.csv and compare.png into `out` (default: the folder that
    holds the runs), and the table as a Comparison."""
    paths = [run.path if isinstance(run, Run) else Path(run) for run in runs]
    return Comparison(compare_tool.compare_runs(paths, out=Path(out) if out else None))
