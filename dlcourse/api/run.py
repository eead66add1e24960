"""A run folder as a Python object: `train()` makes one, `open_run()` opens one.

Every method calls the library function of its command (`evaluate` -> tools/evaluate.py,
`predict` -> tools/predict.py, ...), on the same run folder the command line uses, so
`run.evaluate()` returns what `dlcourse evaluate` shows.

What prints: the functions that train (`train`, `Run.resume`, `sweep`, `lr_find`) print what
their command prints (the epoch lines and the final table, a progress bar unless
`progress=False`, and in Jupyter a live plot of the loss), or nothing with `quiet=True`;
every other function prints nothing and returns its result. Pictures come back as matplotlib
Figures, which a notebook displays. Training seeds Python's and torch's global random
generators; every function here puts the caller's random state back as it was.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from html import escape
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from dlcourse.config import Config, apply_overrides, load_config, validate_config
from dlcourse.config.source import plain_data_problem
from dlcourse.errors import ConfigError, DivergedError, InterruptedRun, UserError
from dlcourse.fileio import resolve_data_dir
from dlcourse.runs import MAIN_METRIC, RunFolder, Summary
from dlcourse.tasks import format_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pandas import DataFrame
    from torch import nn

    from dlcourse.insight.hidden import HiddenSpace
    from dlcourse.tools.answers import AnswersResult
    from dlcourse.tools.diagnose import Diagnosis
    from dlcourse.tools.evaluate import Evaluation
    from dlcourse.tools.forward import ForwardResult
    from dlcourse.tools.landscape import Landscape
    from dlcourse.tools.predict import Predictions
    from dlcourse.tools.visualize import LayerPicture
    from dlcourse.training.trainer import Callback

F = TypeVar("F", bound=Callable[..., Any])

ConfigSource = str | Path | Mapping[str, Any]
Overrides = Mapping[str, Any] | Sequence[str] | None


class History(Mapping[str, list[Any]]):
    """metrics.jsonl as Keras' `History.history`: a list per value, one item per epoch, under
    the keys "epoch", "train.loss", "dev.accuracy", ..., "lr", "seconds" and "best" (None
    where an epoch has no such value); `rows` has the epoch rows themselves (train and dev as
    {metric: value}, and the sampled step losses)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self.rows = [dict(row) for row in rows]
        flat = [flat_row(row) for row in self.rows]
        keys = list(dict.fromkeys(key for row in flat for key in row))
        self._columns = {key: [row.get(key) for row in flat] for key in keys}

    def __getitem__(self, key: str) -> list[Any]:
        if key not in self._columns:
            known = ", ".join(self._columns) or "none: no epoch has ended"
            raise KeyError(f"{key!r}: the history has {known}")
        return self._columns[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def to_pandas(self) -> DataFrame:
        """The history as a pandas DataFrame, one row per epoch and one column per key
        (needs pandas: pip install pandas)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("History.to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(self._columns)

    def __repr__(self) -> str:
        return f"<dlcourse.History of {len(self.rows)} epochs: {', '.join(self._columns)}>"


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An epoch row with its split dicts flattened ("dev.loss"); step losses left out."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{name}": number for name, number in value.items()})
        elif key != "step_losses":
            flat[key] = value
    return flat


def keeps_random_state(function: F) -> F:
    """Put the caller's global random state (Python's random, torch's CPU and CUDA
    generators) back after the function, which seeds them as training does."""

    @functools.wraps(function)
    def keeping(*args: Any, **kwargs: Any) -> Any:
        import torch

        state = random.getstate()
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                return function(*args, **kwargs)
        finally:
            random.setstate(state)

    return keeping  # type: ignore[return-value]


class Run:
    """One run folder (runs/<name>-<time>/): its results, and the commands that use it.

    `summary`, `history` and `config` are read from the folder each time, so they follow a
    `resume()`. `data_dir` is where evaluate, report and visualize_activations find the data.
    """

    def __init__(self, path: str | Path, *, data_dir: str | Path | None = None):
        self.path = Path(path)
        self.data_dir = resolve_data_dir(Path(data_dir) if data_dir is not None else None)
        self._model: tuple[int | None, nn.Module] | None = None  # (file's time, model)

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
        """metrics.jsonl: `history["dev.loss"]` is the dev loss of each epoch, `history.rows`
        the epoch rows, `history.to_pandas()` a DataFrame."""
        return History([row.to_json() for row in RunFolder(self.path).read_metrics()])

    @property
    def model(self) -> nn.Module:
        """The trained network with the weights the run kept (those summary.json measured),
        on the CPU, in eval mode: `run.model(x)` gives the raw outputs (logits, or values) of
        preprocessed inputs x. The same module each time, until the run's weights change."""
        folder = RunFolder(self.path)
        kept = folder.weights if folder.weights.exists() else folder.best
        try:
            stamp = os.stat(kept).st_mtime_ns
        except OSError:
            stamp = None
        if self._model is None or self._model[0] != stamp:
            self._model = (stamp, self.load_model())
        return self._model[1]

    def load_model(self, checkpoint: str = "kept") -> nn.Module:
        """A new copy of the trained network, on the CPU, in eval mode, with the kept weights
        (or `checkpoint="best"` or `"last"`: those checkpoints')."""
        from dlcourse.tools.trained import open_run as open_trained

        return open_trained(self.path, checkpoint).model

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

    def plot_step_loss(self, beta: float | None = None) -> Figure:
        """The recorded step losses with their exponentially weighted average v_t and the
        bias-corrected v_t / (1 - beta^t) (default beta: the run's logging.ewa_beta), as in
        the run's step_loss_ewa.png."""
        from dlcourse.insight.averages import averaged, ewa_figure, step_losses

        beta = self.config.logging.ewa_beta if beta is None else beta
        if not 0 < beta < 1:
            raise UserError(f"beta: an average's beta is between 0 and 1, not {beta!r}")
        series = averaged(step_losses(RunFolder(self.path).read_metrics()), beta)
        return ewa_figure(series, f"{self.name}: the step loss and its average (beta {beta:g})")

    @keeps_random_state
    def evaluate(
        self,
        split: str | None = None,
        checkpoint: str = "kept",
        *,
        data: str | Path | None = None,
        where: Mapping[str, Any] | None = None,
        where_not: Mapping[str, Any] | None = None,
        save: bool = False,
    ) -> Evaluation:
        """`dlcourse evaluate`: the metrics of the kept (or best, or last) weights on a split
        (as in summary.json), the confusion matrix or predictions, and `.figures` (file name
        -> matplotlib Figure); `save=True` also writes them into the run folder and its
        TensorBoard, as the command does. A table run (churn, csv) is measured instead on
        every row of another CSV (`data`) or of its own that the filters keep
        (`where={"Geography": "Germany"}`, `where_not`; a value or a list of values per
        column), as `--data`, `--where` and `--where-not` do. `split` is "test" unless given;
        with a filter of the run's own CSV it keeps only the rows of that split of the run
        (`where={"Geography": "Germany"}, split="test"`), and `.in_splits` and `.notes` say
        how many of the rows measured were in each of the run's splits (its training rows
        among them)."""
        from dlcourse.tools.evaluate import evaluate_run, evaluate_table

        if data is None and not where and not where_not:
            return evaluate_run(self.path, data_dir=self.data_dir, split=split or "test",
                                checkpoint=checkpoint, write=save)  # fmt: skip
        return evaluate_table(
            self.path, data_dir=self.data_dir, path=None if data is None else Path(data),
            where=where, where_not=where_not, checkpoint=checkpoint, split=split,
        )  # fmt: skip

    def diagnose(self, baseline_error: float | None = None) -> Diagnosis:
        """`dlcourse diagnose`: avoidable bias and variance of the kept weights, the verdict
        and what to try (`.line()` is the line training prints)."""
        from dlcourse.tools.diagnose import diagnose_run

        return diagnose_run(self.path, baseline_error)

    @keeps_random_state
    def predict(self, inputs: str | Path | Mapping[str, Any]) -> Predictions:
        """`dlcourse predict` with the kept weights: a picture of a digit or a folder of them
        (image models), a CSV file, or one row as {column: value} (table models)."""
        from dlcourse.tools.predict import predict

        if isinstance(inputs, Mapping):
            return predict(self.path, None, [f"{key}={value}" for key, value in inputs.items()])
        return predict(self.path, Path(inputs))

    @keeps_random_state
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

    @keeps_random_state
    def check_answers(self, answers: str | Path, checkpoint: str = "kept") -> AnswersResult:
        """`dlcourse forward RUN --check answers.yaml`: a hand computation (z, a, the loss,
        dL/dW... per layer) against this run's network; `.first_wrong` is the first wrong
        value, with its formula and the right number."""
        from dlcourse.tools.answers import check_answers

        return check_answers(self.path, Path(answers), data_dir=self.data_dir,
                             checkpoint=checkpoint)  # fmt: skip

    @keeps_random_state
    def visualize_activations(
        self, split: str = "test", indices: Sequence[int] | None = None, checkpoint: str = "kept"
    ) -> list[LayerPicture]:
        """`dlcourse visualize-activations`: a PNG per layer in <run>/activations/; each
        LayerPicture has its path, its picture and the layer's statistics."""
        from dlcourse.tools.visualize import visualize_run

        return visualize_run(self.path, data_dir=self.data_dir, console=notebook_console(True),
                             checkpoint=checkpoint, split=split,
                             indices=list(indices) if indices else None)  # fmt: skip

    @keeps_random_state
    def hidden_space(self, split: str = "test", checkpoint: str = "kept") -> HiddenSpace:
        """`dlcourse visualize-activations --hidden-space`: every example of a split in the
        input space and in the last hidden layer's space (PCA to 2-D), coloured by class;
        `.input_accuracy`, `.hidden_accuracy`, `.output_accuracy` (how well a linear
        classifier separates them in each) and `.figure`; the PNG goes to activations/."""
        from dlcourse.tools.visualize import visualize_hidden_space

        return visualize_hidden_space(self.path, data_dir=self.data_dir, checkpoint=checkpoint,
                                      split=split)  # fmt: skip

    @keeps_random_state
    def landscape(
        self,
        other: str | Path | Run | None = None,
        *,
        points: int = 41,
        grid: int = 21,
        examples: int = 2000,
        seed: int = 0,
        out: str | Path | None = None,
        checkpoint: str = "kept",
    ) -> Landscape:
        """`dlcourse landscape`: the loss around the kept weights along one and two random
        filter-normalized directions, and (`other`: another run of the same network) along
        the straight line between the two runs' weights. The numbers (`.centre`,
        `.curve_min`, `.surface_min`, `.line.barrier`, ...) and `.figure`, every panel in one
        matplotlib Figure; the PNGs are written as the command writes them."""
        from dlcourse.tools.landscape import landscape

        other_path = other.path if isinstance(other, Run) else other
        return landscape(
            self.path, data_dir=self.data_dir,
            other=None if other_path is None else Path(other_path),
            out=None if out is None else Path(out), points=points, grid=grid,
            examples=examples, seed=seed, checkpoint=checkpoint,
        )  # fmt: skip

    @keeps_random_state
    def report(self, out: str | Path | None = None, markdown: bool = False) -> Path:
        """`dlcourse report`: the hand-in report (HTML, or Markdown); returns its path."""
        from dlcourse.tools.report import write_report

        target = Path(out) if out is not None else None
        return write_report(self.path, data_dir=self.data_dir, out=target, markdown=markdown)

    @keeps_random_state
    def resume(
        self,
        epochs: int | None = None,
        *,
        progress: bool = True,
        quiet: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> Run:
        """`dlcourse train --resume`: continue an interrupted run, or extend a finished one to
        `epochs` epochs; returns this run (also when it diverged: see `train`)."""
        from dlcourse.app.training import resume

        overrides = [] if epochs is None else [f"train.epochs={epochs}"]
        console = notebook_console(quiet)
        overrides.append(f"logging.progress={json.dumps(show_progress(progress, console))}")
        extra = [*callbacks, *live_plot(console, progress and not quiet)]
        with python_resume_hint(), diverged_run(console):
            resume(self.path, data_dir=self.data_dir, console=console, overrides=overrides,
                   callbacks=extra)  # fmt: skip
        return self

    def __repr__(self) -> str:
        return f"<dlcourse.Run {run_line(self.path, self.summary)}>"

    def _repr_html_(self) -> str:
        summary = self.summary
        return f"<p><code>{self.path}</code></p>" + (metrics_html(summary) if summary else "")


@keeps_random_state
def train(
    config: ConfigSource,
    *,
    overrides: Overrides = None,
    set: Overrides = None,  # the name of the command's --set option: overrides' other name
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    callbacks: Sequence[Callback] = (),
    init_weights: str | Path | None = None,
) -> Run:
    """`dlcourse train`: train a config (a YAML file, or a dict of the same keys) with the
    `overrides` ({"optim.lr": 0.01}, or ["optim.lr=0.01"]; `set=` is the same) into a new
    run folder under `runs_dir`, and return its Run. `progress=False` hides the progress bar
    (and, in Jupyter, the live loss plot), `quiet=True` prints nothing. `init_weights`: a
    weights file (`dlcourse weights --out`'s) to start from (--init-weights).

    A run whose loss became NaN or infinite is returned too, with what happened printed:
    `run.summary.stop_reason == "diverged"` and `run.summary.diverged` says where.
    Raises ConfigError (naming each bad key), UserError, or InterruptedRun (Ctrl-C: the run
    is saved, and `dlcourse.open_run(path).resume()` continues it).
    """
    from dlcourse.app.training import train as train_job

    console = notebook_console(quiet)
    given = [
        *override_strings(one_of(overrides, set)),
        f"logging.progress={json.dumps(show_progress(progress, console))}",
    ]
    cfg = read_config(config, given)
    folder = resolve_data_dir(Path(data_dir) if data_dir is not None else None)
    extra = [*callbacks, *live_plot(console, progress and not quiet)]
    with python_resume_hint(), diverged_run(console) as diverged:
        result = train_job(
            cfg,
            runs_dir=Path(runs_dir),
            data_dir=folder,
            console=console,
            callbacks=extra,
            init_weights=None if init_weights is None else Path(init_weights),
        )
        return Run(result.folder.path, data_dir=folder)
    assert diverged.path is not None
    return Run(diverged.path, data_dir=folder)


def one_of(overrides: Overrides, set_: Overrides) -> Overrides:
    """The overrides, given as `overrides=` or as `set=` (the command's name), not both."""
    if overrides is not None and set_ is not None:
        raise UserError("give the overrides once: overrides= and set= are the same argument")
    return overrides if overrides is not None else set_


class Diverged:
    """Where a diverged run is (diverged_run's result): None while none has."""

    path: Path | None = None


@contextmanager
def diverged_run(console: Console) -> Iterator[Diverged]:
    """A run that diverges is not an error in a notebook: its message is printed (unless
    quiet) and the run folder kept in the result; the caller returns its Run."""
    diverged = Diverged()
    try:
        yield diverged
    except DivergedError as exc:
        if exc.path is None:
            raise
        console.print(f"{exc}", style="red", highlight=False)
        diverged.path = exc.path


def live_plot(console: Console, wanted: bool) -> list[Callback]:
    """In Jupyter, a plot of the loss that grows epoch by epoch (when `wanted`)."""
    if not (wanted and console.is_jupyter):
        return []
    try:
        from IPython.display import display
    except ImportError:  # rich saw a notebook without IPython's display: nothing to draw on
        return []
    from dlcourse.insight.live import LiveLossPlot

    return [LiveLossPlot(display)]


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
