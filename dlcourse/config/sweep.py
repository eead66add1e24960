"""A sweep file (*.sweep.yaml): a base training config, the overrides every run gets, and the
grid (and named variants) whose every combination is a run. Read and checked here, key by key
with each problem's line, as a config is; `dlcourse sweep` runs it (app/sweep.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlcourse.config.messages import describe_errors
from dlcourse.config.source import read_config_file
from dlcourse.errors import ConfigError

MAX_SEEDS = 100  # runs per combination
Values = Annotated[list[Any], Field(min_length=1)]
Overrides = dict[str, Any]


class SweepFile(BaseModel):
    """The keys of a sweep file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    config: str = Field(
        min_length=1, description="the base training config: its path, relative to this file"
    )
    name: str | None = Field(
        None, min_length=1, max_length=100,
        description="the sweep folder's name (default: the file's name without .sweep.yaml)",
    )  # fmt: skip
    set: Overrides | None = Field(None, description="config overrides every run gets: {key: value}")
    grid: dict[str, Values] | None = Field(
        None, description="the values to try, {key: [value, ...]}: every combination is a run"
    )
    variants: dict[str, Overrides] | None = Field(
        None, description="named sets of overrides, {name: {key: value}}, each crossed with "
        "the grid",
    )  # fmt: skip
    seeds: int = Field(
        1, ge=1, le=MAX_SEEDS, strict=True,
        description="runs per combination, with the seeds S, S+1, ... (S: the run's own seed)",
    )  # fmt: skip


def read_sweep_config(path: Path) -> SweepFile:
    """The sweep file, checked: one ConfigError listing every wrong key with its line."""
    data, lines = read_config_file(path)
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), describe_errors(exc, SweepFile, lines, set())) from None
