"""A run folder as a Python object: `train()` makes one, `open_run()` opens one.

Every method calls the library function of its command (`evaluate` -> tools/evaluate.py,
`predict` -> tools/predict.py, ...), on the same run folder the command line uses, so
`run.evaluate()` prints nothing and returns what `dlcourse evaluate` shows.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dlcourse.config import Config, apply_overrides, load_config, validate_config
from dlcourse.config.source import plain_data_problem
from dlcourse.errors import ConfigError, InterruptedRun, UserError
from dlcourse.fileio import resolve_data_dir
from dlcourse.runs import MAIN_METRIC, RunFolder, Summary

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pandas import DataFrame

    from dlcourse.tools.diagnose import Diagnosis
    from dlcourse.tools.evaluate import Evaluation
    from dlcourse.tools.forward import ForwardResult
    from dlcourse.tools.predict import Predictions
    from dlcourse.tools.visualize import LayerPicture
    from dlcourse.training.trainer import Callback
from html import escape

from dlcourse.tasks import format_metric

ConfigSource = str | Path | Mapping[str, Any]
Overrides = Mapping[str, Any] | Sequence[str] | None


class History(list[dict[str, Any]]):
    """metrics.jsonl: one dict per epoch, oldest first (epoch, train, dev, lr, seconds, best,
    step_losses; train and dev are {metric: value})."""

    def to_pandas(self) -> DataFrame:
        """The rows as a pandas DataFrame, one column per value (`train.loss`, `dev.accuracy`,
        ...; step_losses left out). Needs pandas, which dlcourse does not install."""
        try:
            import pandas
        except ImportError:
            raise ImportError("History.to_pandas() needs pandas: pip install pandas") from None
        rows = [{k: v for k, v in row.items() if k != "step_losses"} for row in self]
        return pandas.json_normalize(rows)


class Run:
    """One run folder (runs/<name>-<time>/): its results, and the commands that use it.

    `summary`, `history` and `config` are read from the folder each time, so they follow a
    `resume()`. `data_dir` is where evaluate, report and visualize_activations find the data.
    """

    def __init__(self, path: str | Path, *, data_dir: str | Path | None = None):
        self.path = Path(path)
        self.data_dir = resolve_data_dir(Path(data_dir) if data_dir is not None else None)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Config:
        """The run's resolved config.yaml, validated."""
        return RunFolder(self.path).read_config()

    @property
    def summary(self) -> Summary | None:
        """summary.json, typed; None while a first training session has not ended."""
        return RunFolder(self.path).read_summary()

    @property
    def history(self) -> History:
        """The epoch rows of metrics.jsonl."""
        return History(row.to_json() for row in RunFolder(self.path).read_metrics())

    def plot(self, metrics: Sequence[str] | None = None) -> Figure:
        """Train and dev curves per epoch, a panel per metric (default: the loss and the task's
        main metric, accuracy or R^2), the best epoch marked. A notebook displays it."""
        from dlcourse.insight.figures import curves_figure

        summary = self.summary
        if metrics is None:
            kind = summary.metric_kind if summary else self.config.task
            metrics = ["loss", MAIN_METRIC.get(kind, "accuracy")]
        rows = RunFolder(self.path).read_metrics()
        return curves_figure(rows, list(metrics), summary.weights_epoch if summary else 0)

    def evaluate(self, split: str = "test", checkpoint: str = "kept") -> Evaluation:
        """`dlcourse evaluate`: the metrics of the kept (or best, or last) weights on a split
        (as in summary.json), the confusion matrix or predictions, the figures written to the
        run."""
        from dlcourse.tools.evaluate import evaluate_run

        return evaluate_run(self.path, data_dir=self.data_dir, split=split, checkpoint=checkpoint)

    def diagnose(self, baseline_error: float | None = None) -> Diagnosis:
        """`dlcourse diagnose`: avoidable bias and variance of the kept weights, the verdict
        and what to try (`.line()` is the line training prints)."""
        from dlcourse.tools.diagnose import diagnose_run

        return diagnose_run(self.path, baseline_error)

    def predict(self, inputs: str | Path | Mapping[str, Any]) -> Predictions:
        """`dlcourse predict` with the kept weights: a picture of a digit or a folder of them
        (image models), a CSV file, or one row as {column: value} (table models)."""
        from dlcourse.tools.predict import predict

        if isinstance(inputs, Mapping):
            return predict(self.path, None, [f"{key}={value}" for key, value in inputs.items()])
        return predict(self.path, Path(inputs))

    def forward(
        self,
        inputs: str | Mapping[str, Any] | Sequence[str],
        *,
        target: str | None = None,
        backward: bool = False,
        checkpoint: str = "kept",
    ) -> ForwardResult:
        """`dlcourse forward`: one example through every layer. `inputs` is {name: value}, or
        what --input takes: "test=3", a CSV row of the inputs, an image file."""
        from dlcourse.tools.forward import forward

        given = [inputs] if isinstance(inputs, str) else inputs
        if isinstance(given, Mapping):
            given = [f"{name}={value}" for name, value in given.items()]
        return forward(self.path, list(given), data_dir=self.data_dir, target=target,
                       backward=backward, checkpoint=checkpoint)  # fmt: skip

    def visualize_activations(
        self, split: str = "test", indices: Sequence[int] | None = None, checkpoint: str = "kept"
    ) -> list[LayerPicture]:
        """`dlcourse visualize-activations`: a PNG per layer in <run>/activations/ (each
        LayerPicture has its path), the layer statistics and the predictions printed."""
        from dlcourse.tools.visualize import visualize_run

        return visualize_run(self.path, data_dir=self.data_dir, console=notebook_console(False),
                             checkpoint=checkpoint, split=split,
                             indices=list(indices) if indices else None)  # fmt: skip

    def report(self, out: str | Path | None = None, markdown: bool = False) -> Path:
        """`dlcourse report`: the hand-in report (HTML, or Markdown); returns its path."""
        from dlcourse.tools.report import write_report

        target = Path(out) if out is not None else None
        return write_report(self.path, data_dir=self.data_dir, out=target, markdown=markdown)

    def resume(
        self,
        epochs: int | None = None,
        *,
        progress: bool = True,
        quiet: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> Run:
        """`dlcourse train --resume`: continue an interrupted run, or extend a finished one to
        `epochs` epochs; returns this run."""
        from dlcourse.app.training import resume

        overrides = [] if epochs is None else [f"train.epochs={epochs}"]
        console = notebook_console(quiet)
        overrides.append(f"logging.progress={json.dumps(show_progress(progress, console))}")
        with python_resume_hint():
            resume(self.path, data_dir=self.data_dir, console=console, overrides=overrides,
                   callbacks=callbacks)  # fmt: skip
        return self

    def __repr__(self) -> str:
        return f"<dlcourse.Run {run_line(self.path, self.summary)}>"

    def _repr_html_(self) -> str:
        summary = self.summary
        return f"<p><code>{self.path}</code></p>" + (metrics_html(summary) if summary else "")


def train(
    config: ConfigSource,
    *,
    set: Overrides = None,  # the name of the command's --set option
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    callbacks: Sequence[Callback] = (),
) -> Run:
    """`dlcourse train`: train a config (a YAML file, or a dict of the same keys) with the
    overrides `set` ({"optim.lr": 0.01}, or ["optim.lr=0.01"]) into a new run folder under
    `runs_dir`. `progress=False` hides the progress bar, `quiet=True` prints nothing.

    Raises ConfigError (naming each bad key), UserError, DivergedError, or InterruptedRun
    (interrupted: the run is saved, `dlcourse.open_run(path).resume()` continues it).
    """
    from dlcourse.app.training import train as train_job

    console = notebook_console(quiet)
    overrides = [
        *override_strings(set),
        f"logging.progress={json.dumps(show_progress(progress, console))}",
    ]
    cfg = read_config(config, overrides)
    folder = resolve_data_dir(Path(data_dir) if data_dir is not None else None)
    with python_resume_hint():
        result = train_job(cfg, runs_dir=Path(runs_dir), data_dir=folder, console=console,
                           callbacks=callbacks)  # fmt: skip
    return Run(result.folder.path, data_dir=folder)


def open_run(path: str | Path, *, data_dir: str | Path | None = None) -> Run:
    """The Run of an existing run folder; UserError when `path` is not one."""
    folder = RunFolder(Path(path))
    if not folder.path.is_dir():
        raise UserError(f"{path}: no such run folder")
    folder.read_config()  # UserError: not a run folder, or a damaged config.yaml
    return Run(folder.path, data_dir=data_dir)


def override_strings(values: Overrides, name: str = "set") -> list[str]:
    """--set's KEY=VALUE strings; a mapping's values written as JSON (which YAML reads).
    UserError naming the key when a value is not plain data (plain_data_problem)."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [f"{key}={yaml_value(f'{name} {key!r}', key, value)}" for key, value in
                values.items()]  # fmt: skip
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise UserError(
            f"{name}: give a dict {{key: value}} or a list of 'KEY=VALUE' strings, not a "
            f"{type(values).__name__}"
        )
    for value in values:
        if not isinstance(value, str):
            raise UserError(f"{name}: {value!r} is not a 'KEY=VALUE' string")
    return list(values)


def yaml_value(label: str, key: Any, value: Any) -> str:
    """A Python value as the YAML (JSON) text of an override; UserError naming it (`label`)
    when it is not plain data."""
    if not isinstance(key, str):
        raise UserError(f"{label}: a key is a string such as 'optim.lr', not a "
                        f"{type(key).__name__}")  # fmt: skip
    problem = plain_data_problem(value)
    if problem is not None:
        inner, message = problem
        raise UserError(f"{label}{'' if inner == '(top)' else f' at {inner}'}: {message}")
    return json.dumps(value)


def read_config(config: ConfigSource, overrides: list[str]) -> Config:
    """A config file or mapping, overridden and validated (ConfigError naming the keys)."""
    if not isinstance(config, Mapping):
        if not isinstance(config, str | PurePath):
            raise UserError(
                f"config: give a YAML file's path or a dict of the config's keys, not a "
                f"{type(config).__name__}"
            )
        return load_config(Path(config), overrides)
    problem = plain_data_problem(dict(config))
    if problem is not None:  # before deepcopy, which recurses
        raise ConfigError("the config dict", [problem])
    data = copy.deepcopy(dict(config))
    overridden = apply_overrides(data, overrides, "set")
    return validate_config(data, "the config dict", overridden=overridden)


def notebook_console(quiet: bool) -> Console:
    """Where training prints: the terminal, or a notebook's output (rich detects Jupyter)."""
    return Console(quiet=quiet, soft_wrap=True, markup=False)  # user text is printed as text


def show_progress(asked: bool, console: Console) -> bool:
    """Whether to draw the progress bar: as asked, except in a notebook without ipywidgets,
    which rich needs for a live display there (the epoch lines print either way)."""
    if console.is_jupyter and importlib.util.find_spec("ipywidgets") is None:
        return False
    return asked


@contextmanager
def python_resume_hint() -> Iterator[None]:
    """Adds the Python way to resume to the message of an interrupted run."""
    try:
        yield
    except InterruptedRun as exc:
        if exc.path is None:
            raise
        hint = f"In Python: dlcourse.open_run({str(exc.path)!r}).resume()"
        raise InterruptedRun(f"{exc}\n{hint}", exc.path) from None


# ------------------------------------------------------------------ from display.py

SPLITS = ("train", "dev", "test")


def run_line(path: Path, summary: Summary | None) -> str:
    """The run's folder, task, how it ended and its test metrics, in one line."""
    if summary is None:
        return f"{path} (no summary.json yet)"
    line = f"{path}: {summary.task}, {summary.stop_reason} after {summary.epochs_run} epochs"
    if summary.test:
        metrics = ", ".join(f"{k} {format_metric(k, v)}" for k, v in summary.test.items())
        line += f"; test {metrics}"
    return line


def metrics_html(summary: Summary) -> str:
    """How the run ended, and a table of the kept weights' metrics: a row per split."""
    splits = {name: getattr(summary, name) for name in SPLITS if getattr(summary, name)}
    names = list(next(iter(splits.values()), {}))
    rows = [[split, *(format_metric(k, metrics.get(k)) for k in names)]
            for split, metrics in splits.items()]  # fmt: skip
    caption = (
        f"{summary.task}: {summary.stop_reason} after {summary.epochs_run} epochs, "
        f"{summary.kept} weights (epoch {summary.best_epoch} is the best), {summary.seconds:g} s"
    )
    return html_table(["split", *names], rows, caption)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A plain HTML table, every cell escaped."""
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell_text(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
