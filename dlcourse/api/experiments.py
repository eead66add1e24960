"""`dlcourse.compare`, `dlcourse.sweep` and `dlcourse.lr_find`: the experiment commands as
functions; `Comparison` is compare's table and picture as an object."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcourse.api.run import (
    Overrides,
    Run,
    html_table,
    keeps_random_state,
    notebook_console,
    one_of,
    override_strings,
    show_progress,
    yaml_value,
)
from dlcourse.errors import UserError
from dlcourse.fileio import resolve_data_dir
from dlcourse.tools import compare as compare_tool

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlcourse.tools.lr_find import LrFindResult


@keeps_random_state
def sweep(
    config: str | Path,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    overrides: Overrides = None,
    set: Overrides = None,  # the name of the command's --set option: overrides' other name
    name: str | None = None,
    seeds: int | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> Comparison:
    """`dlcourse sweep`: train every combination of `grid` ({"optim.lr": [0.001, 0.01]}) of a
    training config, or of a sweep file (*.sweep.yaml) and `grid`, each as its own run in the
    sweep folder (runs finished before are kept), and compare them, best first; `overrides`
    (or `set`) apply to every run. `seeds=N`
    trains every combination over N seeds: the table is then mean ± std per combination."""
    from dlcourse.app.sweep import SWEEP_SUFFIX, SweepSpec, read_sweep_file, run_sweep

    path = Path(config)
    if path.name.endswith(SWEEP_SUFFIX):
        spec = read_sweep_file(path)
    else:
        spec = SweepSpec(config=path, name=f"{path.stem}-sweep")
    spec.grid.update(grid_values(grid))
    console = notebook_console(quiet)
    spec.overrides += [
        *override_strings(one_of(overrides, set)),
        f"logging.progress={json.dumps(show_progress(progress, console))}",
    ]
    spec.name = name or spec.name
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int):
            raise UserError(f"seeds: give a whole number of seeds, not {seeds!r}")
        spec.seeds = seeds
    folder = resolve_data_dir(Path(data_dir) if data_dir is not None else None)
    result = run_sweep(spec, runs_dir=Path(runs_dir), data_dir=folder, console=console)
    return Comparison(result.comparison)


def grid_values(grid: Mapping[str, Sequence[Any]] | None) -> dict[str, list[str]]:
    """The grid's values as YAML (JSON) text; UserError naming the key whose values are not a
    non-empty list (a string is not: {"seed": "12"} would try seeds 1 and 2)."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise UserError(f"grid: give a dict {{key: [values]}}, not a {type(grid).__name__}")
    texts = {}
    for key, values in grid.items():
        label = f"grid {key!r}"
        if not isinstance(values, list | tuple) or not values:
            raise UserError(
                f"{label}: give a non-empty list of the values to try (e.g. {{{key!r}: "
                f"[{values!r}]}} for one value), not {_described(values)}"
            )
        texts[key] = [yaml_value(f"{label}[{i}]", key, value) for i, value in enumerate(values)]
    return texts


def _described(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "an empty list"
    text = repr(value)
    return f"the {type(value).__name__} {text if len(text) <= 40 else text[:40] + '...'}"


@keeps_random_state
def lr_find(
    config: str | Path,
    *,
    overrides: Overrides = None,
    set: Overrides = None,  # overrides' other name, the command's
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    out: str | Path | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> LrFindResult:
    """`dlcourse lr-find`: the learning-rate range test; `.suggested`, the regions
    (`.too_small`, `.lowest`), the losses per lr, `.figure` (the picture) and `.out`, the
    folder with lr_find.png and lr_find.csv."""
    from dlcourse.app.training import lr_find as range_test
    from dlcourse.config import load_config

    cfg = load_config(Path(config), override_strings(one_of(overrides, set)))
    return range_test(
        cfg, data_dir=resolve_data_dir(Path(data_dir) if data_dir is not None else None),
        runs_dir=Path(runs_dir), console=notebook_console(quiet), start=start, end=end,
        steps=steps, out=Path(out) if out is not None else None,
        progress=progress and not quiet,
    )  # fmt: skip


# ------------------------------------------------------------------ from comparison.py


class Comparison:
    """Runs side by side: what differs in their configs and what it gave, best run first.

    `table` has a dict per run (per group of seeds, with mean and `_std` columns, when runs
    differ only in their seed); `verdicts` says in words which differences are larger than
    the seed-to-seed spread, and `warnings` why no difference means anything (runs of
    different tasks); `figure` is the picture (a matplotlib Figure), and `png`
    (compare.png) and `csv` (compare.csv) the files written as by the command.
    """

    def __init__(self, result: compare_tool.Comparison):
        self.result = result
        self.png = result.figure
        self.csv = result.table

    @property
    def figure(self) -> Figure:
        """compare.png's picture: the loss curves, one colour per run (or group of seeds)."""
        return self.plot()

    @property
    def table(self) -> list[dict[str, Any]]:
        """A dict per run: the differing config keys, best/last dev and test metrics, epochs,
        seconds, status and the run folder."""
        return compare_tool.table_rows(self.result)

    @property
    def warnings(self) -> list[str]:
        """Why the order may mean nothing: the runs are of different tasks, whose losses and
        metrics are not comparable (the command prints it as a warning)."""
        return list(self.result.warnings)

    @property
    def verdicts(self) -> list[str]:
        """Whether each difference is larger than the seed-to-seed spread, in words (what
        the command prints under the table)."""
        return compare_tool.spread_verdicts(self.result)

    def plot(self) -> Figure:
        """Train and dev loss per epoch, one colour per run (the picture of compare.png),
        drawn anew."""
        return compare_tool.curves_figure(self.result)

    def __repr__(self) -> str:
        return f"<dlcourse.Comparison of {len(self.result.rows)} runs, table in {self.csv}>"

    def _repr_html_(self) -> str:
        import html

        rows = self.table
        said = [f"warning: {warning}" for warning in self.warnings] + self.verdicts
        words = "".join(f"<p>{html.escape(line)}</p>" for line in said)
        return html_table(list(rows[0]), [list(row.values()) for row in rows]) + words


def compare(runs: Sequence[Run | str | Path], *, out: str | Path | None = None) -> Comparison:
    """`dlcourse compare`: compare.csv and compare.png into `out` (default: the folder that
    holds the runs), and the table as a Comparison."""
    paths = [run.path if isinstance(run, Run) else Path(run) for run in runs]
    return Comparison(compare_tool.compare_runs(paths, out=Path(out) if out else None))
