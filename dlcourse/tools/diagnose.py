"""`dlcourse diagnose`: the bias/variance diagnosis of a run, as the course teaches it.

    avoidable bias = train error - baseline error      (how far from the best possible)
    variance       = dev error - train error            (how much worse on unseen examples)

The error is 1 - accuracy for classification and 1 - R^2 (the share of the target's variance
left unexplained) for regression. The baseline is the error of the best possible model:
human-level error for classification (0 unless given), and for data with a known noise floor
(summary.json's `reference.best_r2`) 1 - best R^2. A gap above the threshold is high.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse.errors import UserError
from dlcourse.runs import Metrics, RunFolder, Summary

THRESHOLD = 0.02  # a gap of two points of error (2% of accuracy, 0.02 of R^2) is high
REMEDIES = {
    "bias": [
        "a bigger network (model.hidden, model.conv)",
        "train longer (train.epochs) or with a better optimizer (optim.name: adam)",
        "less regularization (regularization.l2, model.dropout)",
        "another architecture",
    ],
    "variance": [
        "more training data (data.split, data.limit)",
        "regularization (regularization.l2, model.dropout)",
        "early stopping (train.early_stopping.patience)",
        "data augmentation (data.augment, for images)",
        "a smaller network (model.hidden)",
    ],
}


@dataclass
class Diagnosis:
    kind: str  # multiclass, binary or regression
    error: str  # what "error" means here: "1 - accuracy" or "1 - R^2"
    baseline_error: float
    baseline: str  # where the baseline comes from
    train_error: float
    dev_error: float | None  # None without a dev split
    avoidable_bias: float
    variance: float | None  # None without a dev split, or when train error >= 100%
    threshold: float
    verdict: str  # high bias, high variance, high bias and high variance, fine
    remedies: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The diagnosis in one line (printed at the end of `dlcourse train`)."""
        text = f"diagnosis: {self.verdict}: avoidable bias {percent(self.avoidable_bias)}"
        if self.variance is not None:
            text += f", variance {percent(self.variance)}"
        text += f" (error = {self.error}; baseline {self.baseline_error:.1%}, {self.baseline}"
        return text + f"; high above {self.threshold:.1%})"


def percent(share: float, decimals: int = 1) -> str:
    """A share as a percentage; a gap that rounds to zero reads 0.0%, never -0.0%."""
    text = f"{share:.{decimals}%}"
    return text[1:] if text.startswith("-") and float(text[1:-1]) == 0 else text


def baseline_for(summary: Summary, kind: str) -> tuple[float, str]:
    """The default baseline error of a run and where it comes from."""
    best_r2 = summary.reference.get("best_r2")
    if kind == "regression" and best_r2 is not None:
        return 1 - float(best_r2), f"the data's noise floor: best possible R^2 {best_r2:.3g}"
    return 0.0, "default: give --baseline-error for human-level error"


def error_of(kind: str, metrics: Metrics | None) -> float | None:
    """1 - accuracy, or 1 - R^2; None when the metric is missing or undefined."""
    value = (metrics or {}).get("r2" if kind == "regression" else "accuracy")
    return 1 - float(value) if isinstance(value, (int, float)) else None


def diagnose_summary(
    summary: Summary, baseline_error: float | None = None, threshold: float = THRESHOLD
) -> Diagnosis:
    """The diagnosis of a run's summary; the train and dev errors are those of the kept
    weights, measured after training."""
    kind = summary.metric_kind
    train_error = error_of(kind, summary.train)
    if train_error is None:
        raise UserError("the run has no train metrics: no epoch completed, nothing to diagnose")
    dev_error = error_of(kind, summary.dev)
    if baseline_error is None:
        baseline_error, baseline = baseline_for(summary, kind)
    else:
        baseline = "given"
    bias = train_error - baseline_error
    # A model no better than predicting the mean (R^2 <= 0) has only its bias to fix first:
    # the difference between its train and dev errors says nothing about generalizing.
    judged = dev_error is not None and train_error < 1
    variance = dev_error - train_error if judged and dev_error is not None else None
    # Rounded: 0.10 - 0.08 is 0.020000000000000018 in floating point, not above 2%.
    high = [name for name, gap in (("bias", bias), ("variance", variance))
            if gap is not None and round(gap, 9) > threshold]  # fmt: skip
    verdict = " and ".join(f"high {name}" for name in high) or "fine"
    remedies = [remedy for name in high for remedy in REMEDIES[name]]
    error = "1 - R^2" if kind == "regression" else "1 - accuracy"
    return Diagnosis(kind, error, baseline_error, baseline, train_error, dev_error, bias,
                     variance, threshold, verdict, remedies)  # fmt: skip


def diagnose_run(
    run_dir: Path, baseline_error: float | None = None, threshold: float = THRESHOLD
) -> Diagnosis:
    """The diagnosis of a run folder, from its summary.json."""
    folder = RunFolder(run_dir).require()
    if baseline_error is not None and not 0 <= baseline_error < 1:
        raise UserError(f"--baseline-error: must be from 0 to 1 (a share), got {baseline_error}")
    if not 0 < threshold < 1:
        raise UserError(f"--threshold: must be between 0 and 1 (a share), got {threshold}")
    summary = folder.read_summary()
    if summary is None:
        raise UserError(
            f"{run_dir / 'summary.json'}: missing; the run has not finished (or was killed): "
            f"resume it with dlcourse train --resume {run_dir}"
        )
    try:
        return diagnose_summary(summary, baseline_error, threshold)
    except UserError as exc:
        raise UserError(f"{run_dir / 'summary.json'}: {exc}") from None


def to_json(diagnosis: Diagnosis) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(diagnosis), indent=2)
