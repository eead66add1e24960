"""`dlcourse evaluate`: a trained run's metrics on one split, from the run folder alone.

The model, its preprocessing and the split's rows come from the run folder (by default the
weights the run kept, those summary.json measured); the outputs and metrics come from the same
functions, with the same loss (training.losses.loss_for), in the same memory layout and with
the same threads as the trainer's final summary, so on the CPU the numbers equal
summary.json's to the last digit. Beside the metrics: the confusion matrix
(classification), the most confidently wrong examples (image tasks), the predicted-vs-true
plot (regression), written into the run folder and to its TensorBoard.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import RenderableType
from rich.table import Table

from dlcourse.data import SplitData, TaskData, in_target_units
from dlcourse.errors import UserError
from dlcourse.fileio import write_bytes_atomic
from dlcourse.insight.figures import (
    confusion_figure,
    examples_figure,
    png_bytes,
    scatter_figure,
)
from dlcourse.runs import Metrics
from dlcourse.tasks import format_metric
from dlcourse.tools.trained import TrainedRun, open_run, probabilities
from dlcourse.training.losses import loss_for
from dlcourse.training.metrics import compute_metrics, confusion_matrix, train_sample

WRONG_SHOWN = 24  # confidently wrong examples in the grid


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
    figures: dict[str, bytes]  # file name -> PNG
    of: int = 0  # examples in the whole split: more than len(targets) when a sample was measured
    written: list[Path] = field(default_factory=list)  # where the figures went
    not_written: str | None = None  # why they are not in the run folder (a read-only one)

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
    evaluation.figures = draw_figures(evaluation, examples, data)
    return evaluation


def split_of(data: TaskData, split: str) -> SplitData:
    if split not in data.splits:
        raise UserError(
            f"the run has no {split} split (it has {', '.join(data.splits)}); choose --split"
        )
    return data.splits[split]


def draw_figures(evaluation: Evaluation, examples: SplitData, data: TaskData) -> dict[str, bytes]:
    suffix = "" if evaluation.checkpoint == "kept" else f"_{evaluation.checkpoint}"
    name = f"{evaluation.split}{suffix}"
    where = f"{evaluation.split} split, {evaluation.weights}"
    figures = {}
    if evaluation.confusion is not None:
        title = f"confusion matrix\n{where}"
        figure = confusion_figure(evaluation.confusion, evaluation.class_names, title)
        figures[f"confusion_{name}.png"] = png_bytes(figure)
    if evaluation.kind == "multiclass" and data.preprocess.get("kind") == "image":
        wrong = confidently_wrong(evaluation, examples, data)
        if wrong is not None:
            figures[f"wrong_{name}.png"] = wrong
    if evaluation.kind == "regression":
        predicted = in_target_units(evaluation.outputs.squeeze(1), data.preprocess)
        true = in_target_units(evaluation.targets, data.preprocess)
        r2 = format_metric("r2", evaluation.metrics.get("r2"))
        title = f"predicted vs true, {where}: R^2 {r2}"
        figures[f"predicted_{name}.png"] = png_bytes(scatter_figure(predicted, true, title))
    return figures


def confidently_wrong(evaluation: Evaluation, examples: SplitData, data: TaskData) -> bytes | None:
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
    return png_bytes(examples_figure(images, captions, title))


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
    for name, content in evaluation.figures.items():
        path = run_dir / name
        write_bytes_atomic(path, content, root=run_dir)
        written.append(path)
        evaluation.written = written  # those written before a failure
    return written


def log_figures(opened: TrainedRun, evaluation: Evaluation) -> None:
    """The figures as TensorBoard images under evaluate/, at the epoch of the weights."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    assert opened.folder is not None
    with SummaryWriter(log_dir=str(opened.folder.folder(opened.folder.tensorboard))) as writer:
        for name, content in evaluation.figures.items():
            with Image.open(io.BytesIO(content)) as image:
                pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            tag = f"evaluate/{name.removesuffix('.png')}"
            writer.add_image(tag, pixels, evaluation.epoch, dataformats="HWC")


def evaluation_tables(evaluation: Evaluation) -> list[RenderableType]:
    """What `dlcourse evaluate` prints: the metrics, and the confusion matrix."""
    title = f"{evaluation.split} split, {evaluation.weights}"
    metrics = Table(title=title)
    if evaluation.of > len(evaluation.targets):
        metrics.caption = (f"a fixed random sample of {len(evaluation.targets):,} of the "
                           f"{evaluation.of:,} examples, as in summary.json")  # fmt: skip
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for name, value in evaluation.metrics.items():
        metrics.add_row(name, format_metric(name, value))
    shown: list[RenderableType] = [metrics]
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
    return shown
