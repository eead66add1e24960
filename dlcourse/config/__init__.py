"""The experiment config: one typed tree, read from YAML, with `--set KEY=VALUE` overrides.

`load_config(path, overrides)` is the way in from a file: it reads the YAML (safe and bounded,
source.py), refuses duplicate keys, applies the overrides, validates everything (schema.py;
which keys apply to which choice: applies.py) and, on failure, raises one ConfigError listing
every problem as `dotted.key (line N): message` (messages.py). The sections are in data.py,
model.py and training.py, the root and its checks across sections in schema.py.
Task-dependent defaults are
filled in, so the resolved config that `config show` prints (show.py) and a run folder
stores is complete. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlcourse.config.messages import Lines, describe_errors
from dlcourse.config.schema import Config
from dlcourse.config.sections import Augment, ConvBlock, Data, Model, Optim, Schedule, Split, Train
from dlcourse.config.show import (
    config_data,
    config_diff,
    describe_config,
    dump_config,
    flat_config,
    flatten,
)
from dlcourse.config.source import apply_overrides, parse_config, read_config_file
from dlcourse.errors import ConfigError

__all__ = [
    "Augment", "Config", "ConfigError", "ConvBlock", "Data", "Model", "Optim", "Schedule",
    "Split", "Train", "apply_overrides", "config_data", "config_diff", "describe_config",
    "dump_config", "flat_config", "flatten", "load_config", "parse_config", "stored_config",
    "validate_config",
]  # fmt: skip


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError naming every problem."""
    path = Path(path)
    data, lines = read_config_file(path)
    overridden = apply_overrides(data, overrides, str(path))
    return validate_config(data, str(path), lines=lines, overridden=overridden)


# Keys older versions of dlcourse wrote into run folders, which no longer mean anything (the
# optimizers are dlcourse's own and always take their fast path): a stored config that still
# has them opens, without them.
RETIRED_KEYS = ("train.compile", "train.fused_adam")


def stored_config(data: dict[str, Any], source: str, lines: Lines | None = None) -> Config:
    """A config a run folder or checkpoint stored, validated (retired keys dropped)."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for key in RETIRED_KEYS:
        section, name = key.split(".")
        if isinstance(data.get(section), dict):
            data[section].pop(name, None)
    return validate_config(data, source, lines=lines)


def validate_config(
    data: dict[str, Any],
    source: str = "<config>",
    *,
    lines: Lines | None = None,
    overridden: set[tuple[Any, ...]] | None = None,
) -> Config:
    """Validate a config mapping (from YAML or a run's config.yaml) into a Config."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = describe_errors(exc, Config, lines or {}, overridden or set())
        raise ConfigError(source, problems) from None
    cfg._source = source
    return cfg
