"""`dlcourse diagnose`: the bias/variance diagnosis of a run, as the course teaches it.

    avoidable bias = train error - baseline error      (how far from the best possible)
    variance       = dev error - train error            (how much worse on unseen examples)

The error is 1 - accuracy for classification and 1 - R^2 (the share of the target's variance
left unexplained) for regression. The baseline is the error of the best possible model: the
one given (human-level error), else the data's noise floor where the data knows it (the
generated data: summary.json's `reference.best_r2` or `reference.best_accuracy`), else 0, which
is right for clean digits and the playground but unknown for real tables (churn, any CSV): there
part of a "high bias" may be noise no model can learn, and the advice says how to find out (a
bigger network over seeds) instead of promising that a bigger network helps. A run whose train
error is at the noise floor is said to be there; below it, it has learned noise.

Remedies are grouped by cause (bias, variance), fitted to the run's config where it is known
(no "use Adam" to a run that uses Adam, no "less regularization" to one without any), and never
contradict: with both high bias and high variance, the bias comes first and "a smaller network"
is left out of the variance's remedies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse.config import Config
from dlcourse.errors import UserError
from dlcourse.runs import Metrics, RunFolder, Summary

THRESHOLD = 0.02  # a gap of two points of error (2% of accuracy, 0.02 of R^2) is high
# The course's remedies for each cause; remedies_for fits them to a run's config.
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


# Tasks whose best possible error is about 0 (clean digits, the separable playground sets):
# there the default baseline of 0 is the true one.
ZERO_FLOOR_TASKS = ("mnist", "playground")
ADAM = ("adam", "adamw")
UNKNOWN_BASELINE = "default: this data's best possible error is unknown; give --baseline-error"
SMALLER_NETWORK = "a smaller network (model.hidden)"  # left out when the bias is high too


def remedies_for(cause: str, cfg: Config | None, both: bool) -> list[str]:
    """What the course suggests against one cause, fitted to the run's config (None: all)."""
    if cause == "bias":
        remedies = ["a bigger network (model.hidden, model.conv)", "train longer (train.epochs)"]
        if cfg is None or cfg.optim.name not in ADAM:
            remedies[-1] = (
                "train longer (train.epochs) or with a better optimizer (optim.name: adam)"
            )
        if cfg is None or regularized(cfg):
            remedies.append("less regularization (regularization.l2, model.dropout)")
        remedies.append("another architecture")
        # The lecture's causes of a network that cannot learn, first when the config has them.
        if cfg is not None and cfg.model.init in ("zeros", "constant"):
            remedies.insert(0, f"break the symmetry: model.init: {cfg.model.init} starts every "
                            "unit of a layer the same; use default, xavier or kaiming")  # fmt: skip
        if cfg is not None and not cfg.data.normalize:
            remedies.insert(0, "normalize the inputs (data.normalize: true): on their own scales "
                            "one learning rate cannot suit every weight")  # fmt: skip
        return remedies
    remedies = ["more training data (data.split, data.limit)"]
    more = cfg is not None and regularized(cfg)
    remedies.append(f"{'more ' if more else ''}regularization (regularization.l2, model.dropout)")
    if cfg is None or cfg.train.early_stopping.patience is None:
        remedies.append("early stopping (train.early_stopping.patience)")
    if cfg is None or cfg.task == "mnist":
        remedies.append("data augmentation (data.augment, for images)")
    return remedies if both else [*remedies, SMALLER_NETWORK]


def regularized(cfg: Config) -> bool:
    reg = cfg.regularization
    return bool(reg.l2 or reg.l1 or cfg.model.dropout)


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
    remedies: list[str] = field(default_factory=list)  # every cause's, bias first
    causes: dict[str, list[str]] = field(default_factory=dict)  # cause -> its remedies
    floor: str | None = None  # the run against the data's noise floor, in words
    baseline_known: bool = True  # False: 0 assumed for data whose best error is unknown

    def line(self) -> str:
        """The diagnosis in one line (printed at the end of `dlcourse train`)."""
        text = f"diagnosis: {self.verdict}: avoidable bias {percent(self.avoidable_bias)}"
        if self.variance is not None:
            text += f", variance {percent(self.variance)}"
        text += f" (error = {self.error}; baseline {self.baseline_error:.1%}, {self.baseline}"
        text += f"; high above {self.threshold:.1%})"
        return text + (f". {self.floor}" if self.floor else "")

    def remedy_lines(self) -> list[str]:
        """The remedies, one sentence per cause: "against the bias: ...; ..."."""
        return [f"against the {cause}: " + "; ".join(remedies)
                for cause, remedies in self.causes.items()]  # fmt: skip


def percent(share: float, decimals: int = 1) -> str:
    """A share as a percentage; a gap that rounds to zero reads 0.0%, never -0.0%."""
    text = f"{share:.{decimals}%}"
    return text[1:] if text.startswith("-") and float(text[1:-1]) == 0 else text


def baseline_for(summary: Summary, kind: str) -> tuple[float, str]:
    """The default baseline error of a run and where it comes from."""
    best_r2 = summary.reference.get("best_r2")
    if kind == "regression" and best_r2 is not None:
        return 1 - float(best_r2), f"the data's noise floor: best possible R^2 {best_r2:.3g}"
    best_accuracy = summary.reference.get("best_accuracy")
    if kind != "regression" and best_accuracy is not None:
        return 1 - float(best_accuracy), (
            f"the data's noise floor: best possible accuracy {best_accuracy:.1%}"
        )
    if summary.task in ZERO_FLOOR_TASKS:
        return 0.0, "default: about every example can be right; --baseline-error to change"
    return 0.0, UNKNOWN_BASELINE


def floor_words(diagnosis: Diagnosis, known: bool) -> str | None:
    """The run against the data's noise floor, in words (None when there is nothing to say)."""
    bias, floor = diagnosis.avoidable_bias, diagnosis.baseline_error
    if not known:
        if round(bias, 9) <= diagnosis.threshold:
            return None
        return (f"This data's best possible error is unknown (0 assumed), so part of the "
                f"{percent(bias)} may be noise that no network can learn")  # fmt: skip
    if floor <= 0:
        return None
    if round(bias, 9) < -diagnosis.threshold:
        return (f"The train error is below the data's noise floor ({floor:.1%}): the network "
                "has learned noise of its training examples; trust the dev error")  # fmt: skip
    if round(bias, 9) <= diagnosis.threshold:
        return (f"The run is at the data's noise floor ({floor:.1%} error): no network does "
                "better on this data, and a bigger one would only learn the noise")  # fmt: skip
    return None


def error_of(kind: str, metrics: Metrics | None) -> float | None:
    """1 - accuracy, or 1 - R^2; None when the metric is missing or undefined."""
    value = (metrics or {}).get("r2" if kind == "regression" else "accuracy")
    return 1 - float(value) if isinstance(value, (int, float)) else None


def diagnose_summary(
    summary: Summary,
    baseline_error: float | None = None,
    threshold: float = THRESHOLD,
    cfg: Config | None = None,
) -> Diagnosis:
    """The diagnosis of a run's summary; the train and dev errors are those of the kept
    weights, measured after training. With the run's config, the remedies fit it."""
    kind = summary.metric_kind
    train_error = error_of(kind, summary.train)
    if train_error is None:
        raise UserError("the run has no train metrics: no epoch completed, nothing to diagnose")
    dev_error = error_of(kind, summary.dev)
    if baseline_error is None:
        baseline_error, baseline = baseline_for(summary, kind)
    else:
        baseline = "given"
    known = baseline != UNKNOWN_BASELINE
    bias = train_error - baseline_error
    # A model no better than predicting the mean (R^2 <= 0) has only its bias to fix first:
    # the difference between its train and dev errors says nothing about generalizing.
    judged = dev_error is not None and train_error < 1
    variance = dev_error - train_error if judged and dev_error is not None else None
    # Rounded: 0.10 - 0.08 is 0.020000000000000018 in floating point, not above 2%.
    high = [name for name, gap in (("bias", bias), ("variance", variance))
            if gap is not None and round(gap, 9) > threshold]  # fmt: skip
    verdict = " and ".join(f"high {name}" for name in high) or "fine"
    causes = {name: remedies_for(name, cfg, len(high) == 2) for name in high}
    if "bias" in causes and not known:  # it may be the data's noise: find out first (after
        # a cause the config shows: unscaled inputs, symmetric units)
        against = causes["bias"]
        first = sum(r.startswith(("normalize the inputs", "break the symmetry")) for r in against)
        against.insert(first, FIND_OUT + (f" ({bigger_sweep(cfg)})" if cfg else ""))
    remedies = [remedy for name in high for remedy in causes[name]]
    error = "1 - R^2" if kind == "regression" else "1 - accuracy"
    found = Diagnosis(kind, error, baseline_error, baseline, train_error, dev_error, bias,
                      variance, threshold, verdict, remedies, causes,
                      baseline_known=known)  # fmt: skip
    found.floor = floor_words(found, known)
    return found


FIND_OUT = (
    "first find out whether the bias is avoidable: give the best possible error if you know "
    "it (--baseline-error), or train a bigger network over seeds: if its train error is no "
    "lower, this is the data's noise, not bias"
)


def bigger_sweep(cfg: Config) -> str:
    """The sweep that tells bias from noise: this network against one twice as wide."""
    hidden = cfg.model.hidden
    if not hidden:
        return "dlcourse sweep CONFIG --grid model.hidden=... --seeds 3"
    now = ", ".join(str(n) for n in hidden)
    wider = ", ".join(str(2 * n) for n in hidden)
    return f"dlcourse sweep CONFIG --grid 'model.hidden=[{now}],[{wider}]' --seeds 3"


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
    try:
        cfg: Config | None = folder.read_config()
    except UserError:  # the remedies are then the general ones
        cfg = None
    if summary is None:
        raise UserError(
            f"{run_dir / 'summary.json'}: missing; the run has not finished (or was killed): "
            f"resume it with dlcourse train --resume {run_dir}"
        )
    try:
        return diagnose_summary(summary, baseline_error, threshold, cfg)
    except UserError as exc:
        raise UserError(f"{run_dir / 'summary.json'}: {exc}") from None


def to_json(diagnosis: Diagnosis) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(diagnosis), indent=2)
