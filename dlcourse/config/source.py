"""Where a config's values come from: the YAML file (with the line of every key) and `--set`.

YAML is read with PyYAML's safe loader, which builds plain data only, and bounded: a config is
a few kilobytes of shallow mappings, so a huge file, nesting deeper than MAX_DEPTH, aliases
that refer to themselves or expand past MAX_VALUES values ("billion laughs"), and numbers of
thousands of digits are refused at once with the line, instead of running for minutes.

Every YAML file dlcourse reads (configs, sweep files, weights files) goes through SAFE_LOADER,
chosen here only: libyaml's CSafeLoader when PyYAML was built with it, else the pure-Python
SafeLoader. The bounds are dlcourse's own and give the same message with either loader (the
tests run both): `check_nesting` reads the parse events flat, and libyaml's own limit (1,000
levels, "exceeded maximum nesting depth") is reported as the same TooDeep.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Any

import yaml

from dlcourse.config.messages import SECTIONS, Lines, dotted
from dlcourse.errors import ConfigError, UserError
from dlcourse.fileio import read_bounded

CONFIG_LIMIT = 2**20  # bytes: a config is a few KB
MAX_DEPTH = 32  # levels of nesting
MAX_VALUES = 10_000  # values after aliases are expanded
MAX_DIGITS = 100  # of a number
_KEY_PART = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the one choice of loader


class TooDeep(Exception):
    """YAML nested deeper than its reader allows; `line` (1-based) is where."""

    def __init__(self, line: int):
        self.line = line


def check_nesting(text: str, max_depth: int) -> None:
    """Raise TooDeep where the text nests deeper than max_depth levels, reading SAFE_LOADER's
    parse events one at a time (PyYAML's composer recurses, and crashes on deep nesting).
    libyaml refuses 1,000 levels with its own error before the events get that deep: that is
    TooDeep too. Any other YAML error is raised as it is."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=SAFE_LOADER):
            depth += isinstance(event, yaml.CollectionStartEvent)
            depth -= isinstance(event, yaml.CollectionEndEvent)
            if depth > max_depth:
                raise TooDeep(event.start_mark.line + 1 if event.start_mark else 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if "maximum nesting depth" not in str(exc.problem) or mark is None:
            raise
        raise TooDeep(mark.line + 1) from None


def safe_load(text: str) -> Any:
    """The plain data of a YAML text read with SAFE_LOADER (check its nesting first)."""
    return yaml.load(text, Loader=SAFE_LOADER)  # a safe loader: plain data only


def read_yaml_text(path: Path, limit: int, what: str) -> str:
    """A YAML file's text, read bounded (fileio.read_bounded); UserError naming the file when
    it is not UTF-8."""
    raw = read_bounded(path, limit, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc})") from None


def read_config_file(path: Path) -> tuple[dict[str, Any], Lines]:
    """The mapping a config file holds and the line of each key path."""
    return parse_config(read_yaml_text(path, CONFIG_LIMIT, "config"), str(path))


def parse_config(text: str, source: str) -> tuple[dict[str, Any], Lines]:
    """safe_load the text, bounded; map every key path to its line; refuse duplicate keys."""
    root = load_yaml_node(text, source)
    if root is None:
        raise UserError(f"{source}: the config is empty; it needs at least 'task'")
    data = construct(root, source)
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: a config must be a mapping of sections ({', '.join(SECTIONS)}), "
            f"not a {type(data).__name__}"
        )
    lines: Lines = {}
    duplicates: list[tuple[str, str]] = []
    _walk_nodes(root, (), lines, duplicates)
    if duplicates:
        raise ConfigError(source, duplicates)
    return data, lines


def load_yaml_node(text: str, source: str) -> yaml.Node | None:
    """The composed YAML document, after the bounds are checked; UserError on any problem."""
    try:
        check_nesting(text, MAX_DEPTH)  # before composing: the composer recurses
        loader = SAFE_LOADER(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except TooDeep as exc:
        raise UserError(
            f"{source}:{exc.line}: nesting deeper than {MAX_DEPTH} levels; a config is a few "
            "levels of sections"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_yaml_error(exc, source, text)) from None
    if root is not None:
        _check_expansion(root, source)
    return root


def construct(node: yaml.Node, source: str) -> Any:
    """The plain Python data of a checked node (safe constructors only)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        tag = re.search(r"tag '([^']*)'", str(exc.problem))
        if tag is None:  # e.g. a list used as a key
            raise UserError(f"{where}: YAML error: {exc.problem}") from None
        raise UserError(
            f"{where}: unsupported YAML tag {tag.group(1)} "
            "(configs are plain YAML; tags that build Python objects are refused)"
        ) from None
    finally:
        loader.dispose()


class YamlSyntaxError(UserError):
    """Text that is not YAML."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse self-referring aliases, and documents whose aliases expand past MAX_VALUES
    values or MAX_DEPTH levels. Each shared node is counted once (memoized), so a bomb of
    nine levels of ten aliases is measured in microseconds, not expanded."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) when expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # depth-first, without recursion
        node, children_done = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if children_done:
            on_path.discard(key)
            inner = [sizes[id(child)] for child in _children(node)]
            values = 1 + sum(size for size, _ in inner)
            depth = 1 + max((levels for _, levels in inner), default=0)
            if values > MAX_VALUES or depth > MAX_DEPTH:
                raise UserError(
                    f"{source}:{line}: the aliases (*name) here expand to more than "
                    f"{MAX_VALUES:,} values or {MAX_DEPTH} levels; a config is far smaller"
                )
            sizes[key] = (values, depth)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UserError(f"{source}:{line}: an alias refers to itself (a recursive &anchor)")
        is_int = isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int")
        if is_int and len(node.value) > MAX_DIGITS:
            raise UserError(
                f"{source}:{line}: a number of {len(node.value):,} digits; no config value "
                "needs more than a few"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _yaml_error(exc: yaml.YAMLError, source: str, text: str = "") -> str:
    problem_mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    tab = _tab_indent(text, problem_mark.line if problem_mark else None)
    if tab is not None:  # the scanner's words ("cannot start any token") do not say it
        return (
            f"{source}:{tab + 1}: YAML syntax error: line {tab + 1} is indented with a tab; "
            "YAML does not allow tabs for indentation: indent with spaces"
        )
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark and "end of stream" in problem:
        # e.g. an unclosed quote: where it opened says more than the end of the file
        line, column = context_mark.line + 1, context_mark.column + 1
        return (
            f"{source}:{line}:{column}: YAML syntax error: {context} that starts here never "
            "ends (the file ends first); close its quote or bracket"
        )
    where = (
        f"{source}:{problem_mark.line + 1}:{problem_mark.column + 1}" if problem_mark else source
    )
    if context and context_mark:
        problem += f" ({context} started on line {context_mark.line + 1})"
    return f"{where}: YAML syntax error: {problem}"


def _tab_indent(text: str, line: int | None) -> int | None:
    """The line (from 0) of a YAML error when its indentation has a tab; None otherwise."""
    lines = text.splitlines()
    if line is None or not 0 <= line < len(lines):
        return None
    content = lines[line]
    return line if "\t" in content[: len(content) - len(content.lstrip(" \t"))] else None


def compose(text: str) -> yaml.Node | None:
    """The YAML text composed with SAFE_LOADER (check its nesting first: the composer
    recurses)."""
    loader = SAFE_LOADER(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def duplicate_keys(root: yaml.Node) -> list[tuple[str, str]]:
    """(dotted key, message) for each key a mapping gives twice, as parse_config reports them
    (YAML itself keeps the last silently). Each node is visited once, so aliases that share a
    node many times (an alias "bomb") cost nothing."""
    found: list[tuple[int, str, str]] = []  # (line, key, message)
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:  # depth-first, without recursion
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(((item, (*path, i)) for i, item in enumerate(node.value)))
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first:
                message = f"duplicate key on line {line}; first given on line {first[key]}"
                found.append((line, dotted((*path, key)), f"{message} (YAML keeps only one)"))
            first.setdefault(key, line)
            stack.append((value_node, (*path, key)))
    return [(key, message) for _, key, message in sorted(found)]


def _walk_nodes(
    node: yaml.Node, path: tuple[Any, ...], lines: Lines, duplicates: list[tuple[str, str]]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            line = key_node.start_mark.line + 1
            if key_path in lines:
                first = lines[key_path]
                message = f"duplicate key on line {line}; first given on line {first}"
                duplicates.append((dotted(key_path), f"{message} (YAML keeps only one of them)"))
            lines[key_path] = line
            _walk_nodes(value_node, key_path, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            lines[item_path] = item.start_mark.line + 1
            _walk_nodes(item, item_path, lines, duplicates)


def plain_data_problem(data: Any) -> tuple[str, str] | None:
    """(dotted key, message) where Python data (a config given as a dict, a `set=` value) is
    not what a YAML file could hold: a value of another type (a Path, a numpy number, an
    object), a key that is not a string, more than MAX_VALUES values, or nesting deeper than
    MAX_DEPTH (a dict that contains itself included); None when it is plain data. Iterative:
    no depth reaches Python's recursion limit."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    count = 0
    while stack:
        value, path = stack.pop()
        count += 1
        if len(path) > MAX_DEPTH:
            return dotted(path[:MAX_DEPTH]), (
                f"nested deeper than {MAX_DEPTH} levels; a config is a few levels of sections"
            )
        if count > MAX_VALUES:
            return dotted(path), f"more than {MAX_VALUES:,} values; a config is far smaller"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return dotted(path) or "(top)", (
                        f"the key {_shorten(repr(key))} is a {type(key).__name__}; keys are strings"
                    )
                stack.append((item, (*path, key)))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif not isinstance(value, str | int | float | bool | None):
            hint = " (write a path as a string: str(path))" if isinstance(value, PurePath) else ""
            return dotted(path) or "(top)", (
                f"a {type(value).__name__} is not a config value: give a string, number, "
                f"True/False, None, list or dict{hint}"
            )
    return None


def apply_overrides(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str = "--set"
) -> set[tuple[Any, ...]]:
    """Apply `KEY=VALUE` overrides in place (VALUE parsed as YAML); return the paths set."""
    overridden: set[tuple[Any, ...]] = set()
    for expression in overrides:
        key, sep, raw = expression.partition("=")
        label = f"--set {_shorten(expression)!r}"
        parts = key.strip().split(".")
        if not sep or not all(_KEY_PART.fullmatch(part) for part in parts):
            raise UserError(
                f"{label}: expected KEY=VALUE with a dotted key of letters, digits and '_', "
                "e.g. --set optim.lr=0.01"
            )
        value = _override_value(label, raw)
        path = tuple(int(part) if part.isdigit() else part for part in parts)
        _set_path(data, path, value, label)
        overridden.add(path)
    return overridden


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _override_value(label: str, raw: str) -> Any:
    if not raw.strip():
        return None
    try:
        node = load_yaml_node(raw, label)
    except YamlSyntaxError as exc:
        problem = (
            str(exc).removeprefix(label).lstrip(":0123456789 ").removeprefix("YAML syntax error: ")
        )
        raise UserError(
            f"{label}: the value is not valid YAML ({problem}); quote it or close its brackets"
        ) from None
    return None if node is None else construct(node, label)


def _set_path(data: dict[str, Any], path: tuple[Any, ...], value: Any, label: str) -> None:
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            raise UserError(f"{label}: {dotted(path[: depth + 1])} is not a section that has keys")
    if node is None or not isinstance(node, dict | list):
        raise UserError(f"{label}: {dotted(path[:-1])} has no keys to set")
    last = path[-1]
    if isinstance(node, list) and (not isinstance(last, int) or last >= len(node)):
        raise UserError(f"{label}: no item {last} in {dotted(path[:-1])}")
    node[last] = value
