"""Config errors as a student reads them: `dotted.key (line N): message`, with did-you-mean.

pydantic reports where a value failed (a location tuple) and why; this turns each error into
the dotted key, the line of the YAML file it came from (or "from the command line" for a
--set), the bad value, and for misspelled keys and choices the closest known name.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

SECTIONS = ("name", "task", "seed", "device", "data", "model", "optim", "regularization",
            "train", "logging")  # fmt: skip
Lines = dict[tuple[Any, ...], int]  # key path -> line of the YAML file

_KEYED_MESSAGE = re.compile(rf"^((?:{'|'.join(SECTIONS)})(?:\.\w+)*): (.+)$", re.DOTALL)


def describe_errors(
    exc: ValidationError, root: type[BaseModel], lines: Lines, overridden: set[tuple[Any, ...]]
) -> list[tuple[str, str]]:
    """(located key, message) for every problem of a failed validation."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(root, loc)
        elif error["type"] == "literal_error":
            message += _did_you_mean(error["input"], error.get("ctx", {}).get("expected", ""))
        elif error["type"] != "value_error" and _is_scalar(error.get("input")):
            # pydantic's own messages leave out the value; dlcourse's validators say it
            message += f", got {error['input']!r}"
            if error["type"] in ("list_type", "tuple_type"):  # hidden=64,32 is one string
                message += f"; write a list in brackets: [{error['input']}]"
        if error["type"] == "missing" and loc == ("task",):
            message = f"missing; choose one of {root.model_fields['task'].description}"
        # Validators name the key they are about ("optim.momentum: ..."), one problem per line.
        for part in message.split("\n"):
            keyed = _KEYED_MESSAGE.match(part)
            key_path = tuple(keyed.group(1).split(".")) if keyed else loc
            text = keyed.group(2) if keyed else part
            problems.append((locate(key_path, lines, overridden), text))
    return problems


def choice_error(value: Any, choices: list[str]) -> str:
    """pydantic's wording for a value outside a fixed list, with a did-you-mean."""
    quoted = [repr(choice) for choice in choices]
    listed = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    return f"Input should be {listed}" + _did_you_mean(value, listed)


def locate(path: tuple[Any, ...], lines: Lines, overridden: set[tuple[Any, ...]]) -> str:
    """`dotted.key (line N)`, or `(from the command line)`; the nearest enclosing key gives
    the line."""
    key = dotted(path)
    if any(path[: len(set_path)] == set_path for set_path in overridden):
        return f"{key} (from the command line)"
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return f"{key} (line {lines[path[:end]]})"
    return key


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)


def _unknown_key_message(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    section = _section_model(root, loc[:-1])
    if section is None:
        return "unknown key"
    known = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}known keys: {', '.join(known)}"


def _did_you_mean(value: Any, expected: str) -> str:
    choices = re.findall(r"'([^']*)'", expected)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f", got {value!r}; did you mean {close[0]!r}?" if close else f", got {value!r}"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 40


def _section_model(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model found at a location of the config tree (None if there is none)."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list of sections, e.g. model.conv.0
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        nested = [arg for arg in _flatten_types(field.annotation) if _is_model(arg)]
        if not nested:
            return None
        model = nested[0]
    return model


def _flatten_types(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    return [flat for arg in args for flat in _flatten_types(arg)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
