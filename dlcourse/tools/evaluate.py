"""`dlcourse evaluate`: a trained run's metrics on one split, from the run folder alone.

The model, its preprocessing and the split's rows come from the run folder (by default the
weights the run kept, those summary.json measured); the outputs and metrics come from the same
functions, with the same loss (training.losses.loss_for), in the same memory layout and with
the same threads as the trainer's final summary, so on the CPU the numbers equal
summary.json's to the last digit. Beside the metrics: the confusion matrix
(classification), the most confidently wrong examples (image tasks), the predicted-vs-true
plot (regression), written into the run folder and to its TensorBoard.

A binary classifier (churn) says "positive" when its probability is above a threshold, 0.5
unless chosen (`predict --threshold`). Its ROC curve (true against false positive rate) and
precision-recall curve show every threshold at once, and the metrics by threshold
(THRESHOLDS) what each would give: a lower threshold finds more of the positives (recall)
and is wrong about more of those it names (precision). A threshold is applied to the logit
(p > T exactly when logit > log(T / (1 - T))), so at 0.5 it is training's own rule.

A table run (churn, csv) can also be measured on rows it was not trained on: another CSV with
the training columns and the target (`--data`), or the rows of a filter (`--where`,
`--where-not`) of that CSV or of its own, e.g. a France-only run on the customers of Germany:
the train/test distribution mismatch of the lectures (evaluate_table).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import RenderableType
from rich.table import Table

from dlcourse.data import ALL, SPLITS, SplitData, TaskData, in_target_units, load_task_data
from dlcourse.data.tabular import Filter, describe_filter
from dlcourse.errors import UserError
from dlcourse.insight.figures import (
    confusion_figure,
    examples_figure,
    figure_pixels,
    roc_pr_figure,
    save_png,
    scatter_figure,
)
from dlcourse.runs import Metrics
from dlcourse.tasks import format_metric
from dlcourse.tools.trained import TrainedRun, open_run, probabilities
from dlcourse.training.losses import loss_for
from dlcourse.training.metrics import compute_metrics, confusion_matrix, train_sample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WRONG_SHOWN = 24  # confidently wrong examples in the grid
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the rows of the threshold table


@dataclass
class ThresholdRow:
    """A binary classifier's counts and metrics when it says "positive" above `threshold`."""

    threshold: float
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int

    @property
    def accuracy(self) -> float:
        total = self.true_positive + self.false_positive + self.false_negative + self.true_negative
        return (self.true_positive + self.true_negative) / total if total else 0.0

    @property
    def precision(self) -> float:  # of those it calls positive, the share that are
        named = self.true_positive + self.false_positive
        return self.true_positive / named if named else 0.0

    @property
    def recall(self) -> float:  # of the positives, the share it finds
        positives = self.true_positive + self.false_negative
        return self.true_positive / positives if positives else 0.0

    @property
    def f1(self) -> float:
        both = self.precision + self.recall
        return 2 * self.precision * self.recall / both if both else 0.0


@dataclass
class Curves:
    """ROC and precision-recall curves: one point per distinct score, highest first."""

    fpr: list[float]  # false positive rate, from 0 to 1 (ROC starts at (0, 0))
    tpr: list[float]  # true positive rate = recall
    recall: list[float]  # the PR curve, without the ROC's (0, 0) start
    precision: list[float]
    positive_share: float  # the PR curve of a model that knows nothing


def logit_of(threshold: float) -> float:
    """The logit above which a probability is above `threshold`."""
    return math.log(threshold / (1 - threshold))


def metrics_at(logits: torch.Tensor, targets: torch.Tensor, threshold: float) -> ThresholdRow:
    """The counts of saying "positive" when p > threshold. logits, targets (N,)."""
    predicted = logits > logit_of(threshold)
    actual = targets > 0.5
    return ThresholdRow(threshold, int((predicted & actual).sum()),
                        int((predicted & ~actual).sum()), int((~predicted & actual).sum()),
                        int((~predicted & ~actual).sum()))  # fmt: skip


def threshold_rows(logits: torch.Tensor, targets: torch.Tensor,
                   thresholds: tuple[float, ...] = THRESHOLDS) -> list[ThresholdRow]:  # fmt: skip
    return [metrics_at(logits, targets, threshold) for threshold in thresholds]


def roc_pr_curves(scores: torch.Tensor, targets: torch.Tensor) -> Curves:
    """The ROC and PR curves of scores (N,) (logits or probabilities: only their order
    matters) against 0/1 targets (N,): at each distinct score, "positive" when at least it."""
    order = scores.double().argsort(descending=True, stable=True)
    ordered, actual = scores.double()[order], (targets[order] > 0.5).double()
    _, counts = torch.unique_consecutive(ordered, return_counts=True)
    ends = counts.cumsum(0) - 1  # the last example of each run of equal scores
    true_pos, false_pos = actual.cumsum(0)[ends], (1 - actual).cumsum(0)[ends]
    positives, negatives = float(actual.sum()), float(len(actual) - actual.sum())
    tpr = (true_pos / positives if positives else true_pos * 0).tolist()
    fpr = (false_pos / negatives if negatives else false_pos * 0).tolist()
    precision = (true_pos / (true_pos + false_pos)).tolist()
    share = positives / len(actual) if len(actual) else 0.0
    return Curves([0.0, *fpr], [0.0, *tpr], tpr, precision, share)


def curve_area(x: list[float], y: list[float]) -> float:
    """The area under a curve through the points (x sorted ascending), by trapezoids."""
    return sum((x1 - x0) * (y0 + y1) / 2
               for x0, x1, y0, y1 in zip(x, x[1:], y, y[1:], strict=False))  # fmt: skip


@dataclass
class Evaluation:
    split: str
    checkpoint: str  # kept, best or last
    weights: str  # which weights, for the user: "the kept weights (epoch 3, the best dev epoch)"
    epoch: int  # of the weights
    kind: str  # multiclass, binary or regression
    class_names: list[str]  # [] for regression
    metrics: Metrics  # as in summary.json
    outputs: torch.Tensor  # (N, outputs) the model's raw outputs (logits, or values)
    targets: torch.Tensor  # (N,) as the model was trained on them
    confusion: list[list[int]] | None  # [true class][predicted class]; None for regression
    figures: dict[str, Figure]  # file name -> the matplotlib Figure its PNG is drawn from
    of: int = 0  # examples in the whole split: more than len(targets) when a sample was measured
    thresholds: list[ThresholdRow] = field(default_factory=list)  # binary: by threshold
    curves: Curves | None = None  # binary: ROC and precision-recall
    written: list[Path] = field(default_factory=list)  # where the figures went
    not_written: str | None = None  # why they are not in the run folder (a read-only one)
    source: str = ""  # what was measured, when it is not a split of the run (evaluate --data)
    notes: list[str] = field(default_factory=list)  # what to know of those rows
    # rows of the run's own CSV (--where, no --data): how many of those measured were in each
    # of the run's splits (train, dev, test); empty otherwise, or when it cannot be counted
    in_splits: dict[str, int] = field(default_factory=dict)

    @property
    def probabilities(self) -> torch.Tensor | None:
        """(N, classes) for classification, None for regression."""
        return probabilities(self.kind, self.outputs)


def evaluate_run(
    run_dir: Path,
    *,
    data_dir: Path,
    split: str = "test",
    checkpoint: str = "kept",
    write: bool = True,
) -> Evaluation:
    """`dlcourse evaluate`: the metrics and figures of a run's model on one split.

    With `write`, the figures go into the run folder (`confusion_test.png`, ...; with
    checkpoint 'best' or 'last', `confusion_test_best.png`, ...) and to its TensorBoard. A
    folder that cannot take them (read-only, handed in) still gets its metrics:
    `not_written` says why.
    """
    opened = open_run(run_dir, checkpoint)
    data = opened.load_data(data_dir)
    evaluation = evaluate_split(opened, data, split, checkpoint)
    if write:
        try:
            evaluation.written = save_figures(evaluation, run_dir)
            if opened.cfg.logging.tensorboard:
                log_figures(opened, evaluation)
        except (UserError, OSError) as exc:
            evaluation.not_written = f"the figures are not saved: {exc}"
    return evaluation


def evaluate_split(opened: TrainedRun, data: TaskData, split: str, checkpoint: str) -> Evaluation:
    """The metrics and figures of an opened run on one split of its data (the train split:
    the fixed sample of its examples that summary.json measures, when it is larger)."""
    whole = split_of(data, split)
    examples = train_sample(whole) if split == "train" else whole
    outputs = opened.outputs(examples.x)
    metrics = compute_metrics(data.kind, outputs, examples.y, loss_for(opened.cfg, data.kind),
                              data.target_scale)  # fmt: skip
    names = opened.class_names
    confusion = None
    if data.kind != "regression":
        confusion = confusion_matrix(data.kind, outputs, examples.y, len(names))
    evaluation = Evaluation(
        split, checkpoint, opened.weights, opened.epoch or 0, data.kind, names, metrics, outputs,
        examples.y, confusion, figures={}, of=len(whole),
    )  # fmt: skip
    if data.kind == "binary":
        logits = outputs.squeeze(1).float()
        evaluation.thresholds = threshold_rows(logits, examples.y)
        evaluation.curves = roc_pr_curves(logits, examples.y)
    evaluation.figures = draw_figures(evaluation, examples, data)
    return evaluation


# ------------------------------------------------------------------ other rows: --data, --where

TABLE_TASKS = ("churn", "csv")  # the tasks whose rows a filter or another CSV can give
CLI_FILTER_KEYS = ("--where", "--where-not")


def evaluate_table(
    run_dir: Path,
    *,
    data_dir: Path,
    path: Path | None = None,
    where: Filter | None = None,
    where_not: Filter | None = None,
    checkpoint: str = "kept",
    split: str | None = None,
) -> Evaluation:
    """`dlcourse evaluate RUN --data other.csv` (and `--where`, `--where-not`): a table
    run's model measured on every row of another CSV (`path`; default: the run's own CSV)
    that the filters keep, with the run's saved preprocessing, its loss and its metrics
    (regression errors in the target's units). The run's own data.where and data.where_not
    are not applied: these filters replace them (`--where-not Geography=France` measures the
    rows a France-only run never saw). Nothing is written.

    Rows of the run's own CSV may be rows it trained on: `in_splits` and a note say how many
    of them were in each of its splits (split.pt's rows, mapped to the file's lines through
    the run's own data.where), and `split` keeps only those of one split (`--where
    Geography=Germany --split test`: Germany's test rows)."""
    for given, key in ((where, CLI_FILTER_KEYS[0]), (where_not, CLI_FILTER_KEYS[1])):
        check_filter(given, key)
    if split is not None and path is not None:
        raise UserError(
            "--split chooses rows of the run's own split; --data measures every row of "
            "another CSV that the filters keep (leave out --data to filter the run's own CSV)"
        )
    if split is not None and split not in SPLITS:
        raise UserError(f"--split {split}: choose one of {', '.join(SPLITS)}")
    opened = open_run(run_dir, checkpoint)
    if opened.cfg.task not in TABLE_TASKS:
        raise UserError(
            f"--data, --where and --where-not measure a model of a table (task "
            f"{' or '.join(TABLE_TASKS)}) on other rows; {run_dir} is a {opened.cfg.task} run"
        )
    data_cfg = opened.cfg.data.model_copy(update={
        "path": str(path) if path is not None else opened.cfg.data.path,
        "where": dict(where) if where else None,
        "where_not": dict(where_not) if where_not else None,
        "limit": None,
    })  # fmt: skip
    cfg = opened.cfg.model_copy(update={"data": data_cfg})
    saved = {"preprocess": opened.preprocess, "rows": None, "filter_keys": CLI_FILTER_KEYS}
    data = load_task_data(cfg, data_dir, saved)
    filters = describe_filter(where, where_not)
    run_lines, why = split_lines(opened, data_dir) if path is None else (None, "")
    if split is not None:
        if run_lines is None:
            raise UserError(f"--split {split}: {why}")
        data = rows_of_split(data, run_lines, split, filters)
    evaluation = evaluate_split(opened, data, ALL, checkpoint)
    shown = path if path is not None else "the run's own CSV"
    evaluation.source = f"{len(evaluation.targets):,} rows of {shown}" + (
        f" with {filters}" if filters else "") + (
        f" in the run's {split} split" if split else "")  # fmt: skip
    evaluation.notes = list(data.notes)
    if path is None:
        measured = [data.lines[int(row)] for row in data.splits[ALL].rows]
        if run_lines is None:
            evaluation.notes.append(
                f"how many of these rows the run trained on cannot be counted: {why}"
            )
        else:
            evaluation.in_splits = {name: sum(line in lines for line in measured)
                                    for name, lines in run_lines.items()}  # fmt: skip
            if split is None:
                evaluation.notes.append(overlap_note(evaluation.in_splits, len(measured)))
    return evaluation


def split_lines(opened: TrainedRun, data_dir: Path) -> tuple[dict[str, set[int]] | None, str]:
    """The file lines of the rows of each of the run's splits: split.pt's rows index the rows
    the run's own data.where, data.where_not and data.limit kept, whose lines its data gives.
    (None, why) when the split cannot be rebuilt."""
    folder = opened.folder
    if folder is None or not folder.splits.exists():
        where = folder.splits if folder is not None else opened.file
        return None, f"{where}: missing, so the run's split cannot be rebuilt"
    try:
        data = opened.load_data(data_dir)
    except UserError as exc:
        return None, str(exc)
    return {name: {data.lines[int(row)] for row in part.rows}
            for name, part in data.splits.items()}, ""  # fmt: skip


def rows_of_split(
    data: TaskData, run_lines: dict[str, set[int]], split: str, filters: str
) -> TaskData:
    """The rows measured, only those in the run's `split`."""
    if split not in run_lines:
        raise UserError(
            f"--split {split}: the run has no {split} split (it has {', '.join(run_lines)})"
        )
    whole = data.splits[ALL]
    keep = torch.tensor([data.lines[int(row)] in run_lines[split] for row in whole.rows],
                        dtype=torch.bool)  # fmt: skip
    if not bool(keep.any()):
        raise UserError(
            f"--split {split}: none of the {len(whole):,} rows of the run's own CSV with "
            f"{filters} is in the run's {split} split"
        )
    part = SplitData(whole.x[keep], whole.y[keep], whole.rows[keep])
    return replace(data, splits={ALL: part})


def overlap_note(in_splits: dict[str, int], total: int) -> str:
    """How many rows of the run's own CSV measured were in each of its splits."""
    train, dev, test = (in_splits.get(name, 0) for name in ("train", "dev", "test"))
    outside = total - sum(in_splits.values())
    others = [f"{test:,} in its test split"] if test else []
    if outside:
        others.append(f"{outside:,} left out of the run's data by its data.where or data.limit")
    if not train and not dev:
        return (f"none of these {total:,} rows was in the run's train or dev split "
                f"({' and '.join(others)}): the model never trained on them")  # fmt: skip
    parts = [f"{train:,} of these {total:,} rows were in the run's train split"]
    if dev:
        parts.append(f"{dev:,} in its dev split")
    parts += others
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return (
        f"{listed}: the model was trained on its train rows (and its dev rows chose the "
        "epoch kept), so these metrics overstate how it does on new rows; --split test "
        "measures only the rows it never saw"
    )


def check_filter(given: Filter | None, key: str) -> None:
    """A filter from Python (Run.evaluate): {column: a value, or a non-empty list of them}."""
    if given is None:
        return
    if not isinstance(given, Mapping):
        raise UserError(f"{key}: give {{column: value}}, not a {type(given).__name__}")
    for column, value in given.items():
        values = value if isinstance(value, list) else [value]
        if (not isinstance(column, str) or not values
                or not all(isinstance(v, str | int | float) and not isinstance(v, bool)
                           for v in values)):  # fmt: skip
            raise UserError(
                f"{key} {column!r}: a column name with a value, or a non-empty list of values "
                f"(text or numbers), not {value!r}"
            )


def parse_filter(items: Sequence[str], option: str) -> dict[str, str | list[str]]:
    """--where COLUMN=VALUE (or COLUMN=V1,V2: one of them), repeatable, as {column: value}."""
    found: dict[str, str | list[str]] = {}
    for item in items:
        column, equals, value = item.partition("=")
        column, values = column.strip(), [v.strip() for v in value.split(",")]
        if not equals or not column or not all(values):
            raise UserError(
                f"{option} {item!r}: expected COLUMN=VALUE, or COLUMN=V1,V2 for one of "
                "several values (e.g. Geography=Germany)"
            )
        if column in found:
            raise UserError(f"{option} {column}: given twice; list the values once, "
                            f"{column}=V1,V2")  # fmt: skip
        found[column] = values[0] if len(values) == 1 else values
    return found


def split_of(data: TaskData, split: str) -> SplitData:
    if split not in data.splits:
        raise UserError(
            f"the run has no {split} split (it has {', '.join(data.splits)}); choose --split"
        )
    return data.splits[split]


def draw_figures(evaluation: Evaluation, examples: SplitData, data: TaskData) -> dict[str, Figure]:
    suffix = "" if evaluation.checkpoint == "kept" else f"_{evaluation.checkpoint}"
    name = f"{evaluation.split}{suffix}"
    where = f"{evaluation.split} split, {evaluation.weights}"
    figures = {}
    if evaluation.confusion is not None:
        title = f"confusion matrix\n{where}"
        figure = confusion_figure(evaluation.confusion, evaluation.class_names, title)
        figures[f"confusion_{name}.png"] = figure
    if evaluation.curves is not None:
        marks = [(row.threshold, row.false_positive / max(1, row.false_positive
                  + row.true_negative), row.recall, row.precision)
                 for row in evaluation.thresholds if row.threshold in (0.3, 0.5, 0.7)]  # fmt: skip
        auc = evaluation.metrics.get("roc_auc")
        curves = evaluation.curves
        title = f"ROC and precision-recall, {where}"
        figure = roc_pr_figure(curves.fpr, curves.tpr, curves.recall, curves.precision, marks,
                               auc, curves.positive_share, title)  # fmt: skip
        figures[f"roc_pr_{name}.png"] = figure
    if evaluation.kind == "multiclass" and data.preprocess.get("kind") == "image":
        wrong = confidently_wrong(evaluation, examples, data)
        if wrong is not None:
            figures[f"wrong_{name}.png"] = wrong
    if evaluation.kind == "regression":
        predicted = in_target_units(evaluation.outputs.squeeze(1), data.preprocess)
        true = in_target_units(evaluation.targets, data.preprocess)
        r2 = format_metric("r2", evaluation.metrics.get("r2"))
        title = f"predicted vs true, {where}: R^2 {r2}"
        figures[f"predicted_{name}.png"] = scatter_figure(predicted, true, title)
    return figures


def confidently_wrong(evaluation: Evaluation, examples: SplitData, data: TaskData) -> Figure | None:
    """A grid of the wrong predictions the model was surest of (None when none is wrong)."""
    probs = evaluation.probabilities
    assert probs is not None
    chosen = most_confident_errors(probs, evaluation.targets, WRONG_SHOWN)
    if len(chosen) == 0:
        return None
    confidence, predicted = probs.max(1)
    stats = data.preprocess
    images = (examples.x[chosen, 0] * stats["std"] + stats["mean"]).clamp(0, 1)  # (K, H, W)
    names = evaluation.class_names
    captions = [
        f"#{int(examples.rows[i])}\n{names[int(evaluation.targets[i])]} -> "
        f"{names[int(predicted[i])]} {100 * float(confidence[i]):.1f}%"
        for i in chosen
    ]
    errors = int((predicted != evaluation.targets).sum())
    title = (
        f"the {len(chosen)} most confidently wrong of {errors} errors "
        "(example number: true -> predicted, confidence)"
    )
    return examples_figure(images, captions, title)


def most_confident_errors(
    probabilities: torch.Tensor, targets: torch.Tensor, count: int
) -> torch.Tensor:
    """Indices of up to `count` wrong predictions, the most confident first.

    probabilities (N, classes), targets (N,).
    """
    confidence, predicted = probabilities.max(1)
    wrong = (predicted != targets).nonzero().squeeze(1)
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:count]]


def save_figures(evaluation: Evaluation, run_dir: Path) -> list[Path]:
    written: list[Path] = []
    for name, figure in evaluation.figures.items():
        path = run_dir / name
        save_png(figure, path, root=run_dir)
        written.append(path)
        evaluation.written = written  # those written before a failure
    return written


def log_figures(opened: TrainedRun, evaluation: Evaluation) -> None:
    """The figures as TensorBoard images under evaluate/, at the epoch of the weights."""
    from torch.utils.tensorboard import SummaryWriter

    assert opened.folder is not None
    with SummaryWriter(log_dir=str(opened.folder.folder(opened.folder.tensorboard))) as writer:
        for name, figure in evaluation.figures.items():
            tag = f"evaluate/{name.removesuffix('.png')}"
            writer.add_image(tag, figure_pixels(figure), evaluation.epoch)


def evaluation_tables(evaluation: Evaluation) -> list[RenderableType]:
    """What `dlcourse evaluate` prints: the metrics, and the confusion matrix."""
    title = f"{evaluation.source or f'{evaluation.split} split'}, {evaluation.weights}"
    metrics = Table(title=title)
    if evaluation.of > len(evaluation.targets):
        metrics.caption = (f"a fixed random sample of {len(evaluation.targets):,} of the "
                           f"{evaluation.of:,} examples, as in summary.json")  # fmt: skip
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name, value in evaluation.metrics.items():
        metrics.add_row(name, format_metric(name, value))
    shown: list[RenderableType] = [metrics, *(f"note: {note}" for note in evaluation.notes)]
    if evaluation.confusion is not None:
        names = evaluation.class_names
        confusion = Table(title="confusion matrix (rows: true class, columns: predicted)")
        confusion.add_column("true")
        for name in names:
            confusion.add_column(name, justify="right")
        for name, counts in zip(names, evaluation.confusion, strict=True):
            confusion.add_row(name, *(str(count) for count in counts))
        shown.append(confusion)
    if evaluation.kind == "binary":
        m = evaluation.metrics
        shown.append(
            f"at the 0.5 threshold: precision {format_metric('precision', m['precision'])}, "
            f"recall {format_metric('recall', m['recall'])}; "
            f"ROC-AUC {format_metric('roc_auc', m['roc_auc'])} (all thresholds)"
        )
        shown.append(threshold_table(evaluation))
    return shown


def threshold_table(evaluation: Evaluation) -> Table:
    """The metrics if the model said "positive" above each threshold (predict --threshold)."""
    positive = evaluation.class_names[1] if len(evaluation.class_names) > 1 else "1"
    table = Table(title=f"by threshold: {positive} when its probability is above it",
                  caption="predict --threshold T uses one; 0.5 is the default")  # fmt: skip
    for column in ("threshold", f"as {positive}", "accuracy", "precision", "recall", "f1"):
        table.add_column(column, justify="right")
    for row in evaluation.thresholds:
        table.add_row(
            f"{row.threshold:.1f}", str(row.true_positive + row.false_positive),
            *(format_metric(name, getattr(row, name))
              for name in ("accuracy", "precision", "recall", "f1")),
        )  # fmt: skip
    return table
