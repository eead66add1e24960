"""Where `forward` and `gradcheck` get their model: a run folder, or a config and weights.

A run folder gives its checkpoint's weights and the preprocessing fitted when it trained. A
config gives the network it describes, with the weights of a weights file (weights_file.py);
its preprocessing is fitted on the config's training split exactly as training would fit it,
so a run's exported weights behave in its config as they do in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.config import Config, load_config
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import UserError
from dlcourse.models import build_model
from dlcourse.restore import RestoredRun, open_run
from dlcourse.tools.weights_file import load_weights


@dataclass
class ModelSource:
    cfg: Config
    model: nn.Sequential  # on the CPU, in eval mode
    label: str  # where the weights come from, for the user
    kind: str  # multiclass, binary or regression
    input_shape: tuple[int, ...]
    class_names: list[str]
    feature_names: list[str]
    preprocess: dict[str, Any]  # what turns a raw input into what the network sees
    data_dir: Path
    run: RestoredRun | None = None
    _data: TaskData | None = field(default=None, repr=False)

    def task_data(self) -> TaskData:
        """The data, split and preprocessed as the weights were trained with (loaded once)."""
        if self._data is None:
            assert self.run is not None  # a config's data is loaded when it is opened
            self._data = self.run.load_data(self.data_dir)
        return self._data


def open_source(
    source: Path,
    *,
    data_dir: Path,
    weights: Path | None = None,
    overrides: list[str] | None = None,
    checkpoint: str = "best",
    need_weights: bool = True,
) -> ModelSource:
    """A run folder (its checkpoint, or --weights in its place) or a config with --weights.

    need_weights=False lets a config stand alone with the seeded initialization it trains from.
    """
    if source.is_dir():
        if overrides:
            raise UserError(
                f"{source}: --set changes a config; a run folder keeps the config its weights "
                "were trained with (give the config file instead)"
            )
        return _from_run(source, data_dir, weights, checkpoint)
    if not source.is_file():
        raise UserError(f"{source}: no such run folder or config file")
    if weights is None and need_weights:
        raise UserError(
            f"{source}: a config holds no trained weights; give --weights FILE (typed in, or "
            "written by `dlcourse weights RUN_DIR --out FILE`), or a run folder instead"
        )
    cfg = load_config(source, overrides or [])
    data = load_task_data(cfg, data_dir)
    torch.manual_seed(cfg.seed)  # the initialization training would start from
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    label = f"{source} (initialized with seed {cfg.seed})"
    if weights is not None:
        load_weights(weights, model)
        label = f"{source} with {weights}"
    model.eval()
    return ModelSource(
        cfg, model, label, data.kind, data.input_shape, data.class_names, data.feature_names,
        data.preprocess, data_dir, _data=data,
    )  # fmt: skip


def _from_run(path: Path, data_dir: Path, weights: Path | None, checkpoint: str) -> ModelSource:
    opened = open_run(path, checkpoint)
    label = f"{path} ({checkpoint} checkpoint, epoch {opened.checkpoint.epoch})"
    if weights is not None:
        load_weights(weights, opened.model)
        label = f"{path} with {weights}"
    info = opened.info
    return ModelSource(
        opened.cfg, opened.model, label, info.kind, tuple(info.input_shape),
        list(info.class_names), list(info.feature_names), dict(info.preprocess), data_dir,
        run=opened,
    )  # fmt: skip
