"""The resolved config as data and as text: what a run folder stores and `config show` prints,
and the JSON Schema of a config file (`config schema`), from the same field descriptions.

Keys that do not apply to the config (other tasks', other optimizers' options: see applies.py)
are left out, so what is written validates again as it is.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from dlcourse.config.applies import unused_keys
from dlcourse.config.schema import Config


def config_data(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, without unset optional keys or keys that do not
    apply to it (run folders store it and `--resume` reloads it)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    for key in unused_keys(cfg):
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.get(section) or {}
        node.pop(name, None)
    return data


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, in section order (see config_data)."""
    return yaml.safe_dump(config_data(cfg), sort_keys=False, default_flow_style=None)


def describe_config(cfg: Config) -> str:
    """The resolved config as YAML with every key's description as a comment.

    Keys left unset (null) are shown too, so this doubles as the reference of what a config
    can hold; the text is valid YAML that loads back into the same config.
    """
    lines: list[tuple[str, str]] = []
    _describe_model(cfg, "", lines, skip=unused_keys(cfg))
    width = min(max(len(text) for text, _ in lines) + 2, 56)
    return "".join(
        f"{text:<{width}}# {comment}\n" if comment else f"{text}\n" for text, comment in lines
    )


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as {dotted key: value} (lists are values, not sections)."""
    return flatten(cfg.model_dump(mode="json"))


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings (a config's data) as {dotted key: value}; lists are values."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = value

    walk(data, "")
    return flat


def config_diff(a: Config, b: Config) -> list[str]:
    """The dotted keys whose values differ between two configs, sorted."""
    left, right = flat_config(a), flat_config(b)
    return sorted(key for key in left.keys() | right.keys() if left.get(key) != right.get(key))


def _describe_model(
    model: BaseModel, indent: str, lines: list[tuple[str, str]], skip: set[str], path: str = ""
) -> None:
    first_prefix = indent
    for name, field in type(model).model_fields.items():
        key = f"{path}{name}"
        if key in skip:
            continue
        value, comment = getattr(model, name), field.description or ""
        extra = field.json_schema_extra
        choices = extra.get("choices") if isinstance(extra, dict) else None
        if isinstance(choices, dict) and value in choices:  # what this choice does
            comment = f"{value}: {choices[value]}"
        if isinstance(value, BaseModel):
            lines.append((f"{first_prefix}{name}:", comment))
            _describe_model(value, indent + "  ", lines, skip, f"{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines.append((f"{first_prefix}{name}:", comment))
            for item in value:
                item_lines: list[tuple[str, str]] = []
                _describe_model(item, indent + "    ", item_lines, skip, f"{key}.")
                text, note = item_lines[0]
                item_lines[0] = (f"{indent}  - {text.lstrip()}", note)
                lines += item_lines
        else:
            lines.append((f"{first_prefix}{name}: {_yaml_value(value)}", comment))
        first_prefix = indent


def _yaml_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


# The JSON Schema dialect pydantic writes, which VS Code's YAML extension reads.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file: every key with its description, default, range and
    choices, and no other key (a misspelt one is an error in the editor as it is here)."""
    schema = Config.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "dlcourse config",
        "description": "An experiment config: dlcourse train CONFIG.yaml",
        **{key: value for key, value in schema.items() if key != "title"},
    }
