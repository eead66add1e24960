"""What `train --resume` checks before it touches a run folder, and the trainer it restores.

A resume continues the run exactly, so the config may change only where that stays true
(RESUMABLE_CHANGES); an edited config.yaml counts as a --set of the keys it changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from dlcourse.config import (
    Config,
    apply_overrides,
    config_data,
    config_diff,
    dump_config,
    load_config,
    validate_config,
)
from dlcourse.errors import UserError
from dlcourse.restore import RestoredRun, open_run
from dlcourse.runs import RunFolder
from dlcourse.training.device import place_data
from dlcourse.training.job import prepare_model, resolve_device, seed_everything
from dlcourse.training.state import TrainingState, checked
from dlcourse.training.trainer import Trainer

# Keys a resume may change: they do not change what the run computes, or extend it.
RESUMABLE_CHANGES = {
    "train.epochs", "train.early_stopping.patience", "train.restore_best", "device",
    "logging.progress", "train.precision",
}  # fmt: skip
PLANNED_OVER_EPOCHS = {"onecycle", "cosine"}  # schedules whose shape depends on train.epochs


def prepare_resume(
    folder: RunFolder,
    data_dir: Path,
    config: Path | None,
    overrides: list[str],
    build: Callable[..., Trainer] = Trainer,
) -> tuple[Trainer, list[dict[str, Any]]]:
    """A trainer restored from last.pt and the metrics rows to keep; nothing is written.

    `build` makes the trainer (Trainer's arguments; distributed_job gives its own)."""
    if not folder.last.is_file():
        raise UserError(
            f"{folder.last}: no checkpoint to resume from (the run never completed an epoch); "
            "start it again without --resume"
        )
    opened = open_run(folder.path, "last")
    state = checked(TrainingState, opened.raw, folder.last)
    cfg = resumed_config(opened, config, overrides)
    check_resumable(cfg, opened.cfg, state, folder)
    rows = [row for row in folder.read_metrics() if row["epoch"] <= state.epoch]
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = opened.load_data(data_dir)
    model = prepare_model(cfg, opened.model.train(), device)
    trainer = build(cfg, place_data(data, device), model, device=device, folder=folder)
    trainer.load_state_dict(state, folder.last)
    return trainer, rows


def resumed_config(opened: RestoredRun, config: Path | None, overrides: list[str]) -> Config:
    """The config to continue with: config.yaml as it is now (or the given CONFIG file) with
    the overrides applied, provided it differs from the checkpoint's only in keys a resume may
    change. An edit of config.yaml counts as a --set of the keys it changed."""
    folder = opened.folder
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        data = config_data(opened.edited)
        overridden = apply_overrides(data, overrides)
        cfg = validate_config(data, f"{folder.config} with --set", overridden=overridden)
    changed = sorted(set(config_diff(opened.cfg, cfg)) - RESUMABLE_CHANGES - {"name"})
    if changed:
        edited = set(config_diff(opened.cfg, opened.edited)) & set(changed)
        where = f" ({', '.join(sorted(edited))} edited in {folder.config})" if edited else ""
        raise UserError(
            f"--resume {folder.path}: the run was trained with a different config; these keys "
            f"differ: {', '.join(changed)}{where}. Only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume; start a new run "
            "for the others."
        )
    return cfg.model_copy(update={"name": opened.cfg.name})


def check_resumable(cfg: Config, saved: Config, state: TrainingState, folder: RunFolder) -> None:
    """Refuse a resume that has nothing to do, or that cannot continue the run exactly."""
    done, schedule = state.epoch, cfg.optim.schedule.name
    if cfg.train.epochs != saved.train.epochs and schedule in PLANNED_OVER_EPOCHS:
        raise UserError(
            f"train.epochs: the {schedule!r} learning-rate schedule of this run is planned over "
            f"its {saved.train.epochs} epochs, so the run cannot be extended; start a new run "
            "with more epochs"
        )
    if cfg.train.epochs < done:
        raise UserError(
            f"train.epochs: {cfg.train.epochs} is fewer than the {done} epochs the run has done"
        )
    patience = cfg.train.early_stopping.patience
    if patience is not None and state.early_stopping.bad_epochs >= patience:
        raise UserError(
            f"{folder.path}: the run stopped early at epoch {done} (no dev improvement in "
            f"{patience} epochs), so resuming would stop again at once; to train longer, raise "
            f"train.early_stopping.patience (--set train.early_stopping.patience=N)"
        )
    if done == cfg.train.epochs and state.progress is None:
        longer = (
            "start a new run with more epochs"
            if schedule in PLANNED_OVER_EPOCHS
            else f"resume with --set train.epochs=N (N > {done})"
        )
        raise UserError(f"{folder.path}: the run already finished its {done} epochs; {longer}")


def begin_resume(folder: RunFolder, trainer: Trainer, rows: list[dict[str, Any]],
                 console: Console) -> None:  # fmt: skip
    """The first changes to the folder, once every check has passed: the config as resumed,
    the metrics rows up to the checkpoint (later ones are redone), no temporary files."""
    folder.write_config(dump_config(trainer.cfg))
    folder.write_metrics(rows)
    folder.remove_temporary_files()
    where = f"epoch {trainer.epoch + 1}"
    if trainer.progress is not None:
        where += f", batch {trainer.progress.batch + 1}"
    console.print(f"resuming [bold]{folder.path}[/bold] at {where}", highlight=False)
