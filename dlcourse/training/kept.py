"""The end of a run: which epoch's weights the model keeps, and what both candidates measure.

A run usually ends with the weights of its best dev epoch restored; `train.restore_best: false`
keeps the last epoch's. Either way the summary reports both, so over-fitting after the best
epoch shows in the final table instead of hiding behind the restored weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlcourse.training.evaluate import final_metrics
from dlcourse.training.records import EpochMetrics, Summary

if TYPE_CHECKING:
    from dlcourse.training.trainer import Trainer

FINISHED = ("completed", "early_stopping")  # stop reasons after which the last weights are
# a whole epoch's (a diverged or interrupted run stopped mid-epoch)


def finish_run(trainer: Trainer, stop_reason: str) -> Summary:
    """The end of a run: keep the best weights (or the last: train.restore_best), measure
    every split, write summary.json and tell the callbacks."""
    data, stopper = trainer.data, trainer.stopper
    monitor = f"dev {stopper.monitor}" if "dev" in data.splits else None
    summary = Summary(data.task, trainer.epoch, stopper.best_epoch, stop_reason, monitor,
                      reference=dict(data.reference), kind=data.kind)  # fmt: skip
    if trainer.best_state is not None:  # at least one epoch completed
        keep_weights(trainer, summary)
    summary.seconds = round(trainer.elapsed_seconds(), 2)
    if trainer.folder:
        trainer.folder.write_summary(summary.to_json())
    for callback in trainer.callbacks:
        callback.on_fit_end(trainer, summary)
    return summary


def keep_weights(trainer: Trainer, summary: Summary) -> None:
    """Put the kept weights in the model and measure them on every split (summary.train, dev,
    test); measure the other epoch's weights on train and dev (summary.best / summary.last).

    A diverged or interrupted run always keeps the best weights, and has no `last`.
    """
    assert trainer.best_state is not None  # at least one epoch completed
    model, epoch, best_epoch = trainer.model, trainer.epoch, summary.best_epoch
    finished = summary.stop_reason in FINISHED
    summary.kept = "last" if finished and not trainer.cfg.train.restore_best else "best"
    if not finished:
        model.load_state_dict(trainer.best_state)
    elif best_epoch != epoch and summary.kept == "best":
        summary.last = epoch_metrics(trainer, epoch)
        model.load_state_dict(trainer.best_state)
    elif best_epoch != epoch:  # keep the last, after measuring the best
        last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(trainer.best_state)
        summary.best = epoch_metrics(trainer, best_epoch)
        model.load_state_dict(last_state)
    # (a run that finished at its best epoch holds those weights already)
    for name, metrics in final_metrics(summary, model, trainer.data, trainer.loss_fn,
                                       trainer.prepare).items():  # fmt: skip
        setattr(summary, name, metrics)
    kept = EpochMetrics(best_epoch if summary.kept == "best" else epoch, summary.train or {},
                        summary.dev)  # fmt: skip
    setattr(summary, summary.kept, kept)
    if finished and best_epoch == epoch:
        summary.best = summary.last = kept


def epoch_metrics(trainer: Trainer, epoch: int) -> EpochMetrics:
    """The model's current weights (those of `epoch`) on the train and dev splits."""
    dev = trainer.evaluate("dev") if "dev" in trainer.data.splits else None
    return EpochMetrics(epoch, trainer.evaluate("train"), dev)
