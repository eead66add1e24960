"""The assignment file: what a student may change in a base config, the target, and how a
hand-in is graded.

    title: "Who leaves the bank?"
    question: |                      # Markdown, shown by `dlcourse assignment show`
      Predict which customers leave ...
    config: ../churn_mlp.yaml        # the base config: a path (relative to this file) or inline
    locked: [task, seed, data]       # keys or whole sections the student may not change
    free:                            # keys the student may change, with what is allowed
      model.hidden: {max_items: 3, min: 1, max: 256}
      optim.name: any
      train.epochs: {max: 100}
    unlisted: free                   # keys in neither list: free (default) or locked
    max_parameters: 250000           # optional: the network's size budget
    target: {metric: accuracy, split: test, threshold: 0.855}
    grading:                         # optional: points per threshold, late hand-ins, tolerances
      points: [{at: 0.855, points: 10}, {at: 0.84, points: 8}]
      late: {deadline: 2026-06-01T23:59:00+02:00, per_day: 0.1, max_days: 7}

It is read like a config: safe, bounded YAML, strict keys with a did-you-mean, and every problem
named with its line. A rule is found by the longest key that covers a config key (`data` locks
`data.split.test`; `data.augment` under it may still be free). The assignment's identity (its
SHA-256, which a hand-in's manifest carries) covers the title, the base config and the rules a
student works under; the question's wording, the target and the grading rules are the
instructor's to adjust after handing the assignment out. Nothing here imports torch.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from dlcourse.config import Config, flat_config, load_config, validate_config
from dlcourse.config.messages import Lines, describe_errors, locate
from dlcourse.config.source import load_yaml_node, parse_config, read_yaml_text
from dlcourse.errors import ConfigError, UserError
from dlcourse.tasks import MAXIMIZED, TASKS, format_metric

ASSIGNMENT_LIMIT = 2**20  # bytes: an assignment is a few KB
SUFFIXES = (".assignment.yaml", ".assignment.yml")
# What an assignment's identity covers: a change to these makes earlier hand-ins "another
# version". The question, the target and the grading rules may be edited after handing out.
IDENTITY = ("title", "config", "locked", "free", "unlisted", "max_parameters")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FreeRule(_Section):
    """What a free key may be (`any`: every value the config allows)."""

    min: float | None = Field(None, description="the smallest value (of each item, for a list)")
    max: float | None = Field(None, description="the largest value (of each item, for a list)")
    choices: list[JsonValue] | None = Field(None, min_length=1, description="the values allowed")
    min_items: int | None = Field(None, ge=0, description="the fewest items of a list")
    max_items: int | None = Field(None, ge=0, description="the most items of a list (layers)")

    @model_validator(mode="before")
    @classmethod
    def _any(cls, value: Any) -> Any:
        if value == "any" or value is None:
            return {}
        return value

    def describe(self) -> str:
        """The rule in words: "a list of at most 3 items, each from 1 to 256"."""
        parts = []
        if self.min_items is not None or self.max_items is not None:
            parts.append("a list of " + _between(self.min_items, self.max_items, "items"))
        bounds = _between(self.min, self.max)
        if bounds:
            parts.append(("each " if parts else "") + bounds)
        if self.choices is not None:
            parts.append("one of " + ", ".join(json.dumps(choice) for choice in self.choices))
        return ", ".join(parts) or "any value the config allows"

    def problems(self, value: Any) -> list[str]:
        """What is wrong with a value under this rule ([] when nothing is)."""
        found = []
        if self.choices is not None and value not in self.choices:
            listed = ", ".join(json.dumps(choice) for choice in self.choices)
            close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], 1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            found.append(f"{json.dumps(value)} is not one of {listed}{hint}")
        if isinstance(value, list):
            if self.max_items is not None and len(value) > self.max_items:
                found.append(f"{len(value)} items, more than {self.max_items}")
            if self.min_items is not None and len(value) < self.min_items:
                found.append(f"{len(value)} items, fewer than {self.min_items}")
        numbers = [v for v in (value if isinstance(value, list) else [value]) if _is_number(v)]
        each = "an item " if isinstance(value, list) else ""
        if self.max is not None and any(v > self.max for v in numbers):
            found.append(f"{json.dumps(value)}: {each}above the largest allowed, {self.max:g}")
        if self.min is not None and any(v < self.min for v in numbers):
            found.append(f"{json.dumps(value)}: {each}below the smallest allowed, {self.min:g}")
        return found


class Target(_Section):
    metric: str = Field(description="the metric graded: accuracy, f1, roc_auc, r2, loss, ...")
    split: Literal["test", "dev"] = Field(
        "test", description="the split it is measured on (the grader's test data replaces test)"
    )
    threshold: float = Field(description="the value to reach (at least, or at most for losses)")


class Level(_Section):
    at: float = Field(description="a value of the target metric")
    points: float = Field(ge=0, le=1e6, description="the points for reaching it")


class Late(_Section):
    deadline: datetime.datetime = Field(description="with its time zone: 2026-06-01T23:59:00+02:00")
    per_day: float = Field(
        ge=0, le=1, description="share of the points taken off per day (or part of one) late"
    )
    max_days: int | None = Field(None, ge=0, description="later than this many days: 0 points")

    @model_validator(mode="after")
    def _aware(self) -> Late:
        if self.deadline.tzinfo is None:
            raise ValueError(
                "grading.late.deadline: give its time zone, e.g. 2026-06-01T23:59:00+02:00"
            )
        return self


class Grading(_Section):
    points: list[Level] | None = Field(
        None,
        min_length=1,
        description="points per threshold; the best one reached counts "
        "(default: 1 point for reaching the target)",
    )
    below: float = Field(0.0, ge=0, le=1e6, description="the points when no threshold is reached")
    late: Late | None = Field(None, description="late hand-ins (by the time the zip was received)")
    claim_tolerance: float = Field(
        0.002,
        ge=0,
        le=1,
        description="largest gap between the claimed metric and the kept "
        "weights measured again on the same split",
    )
    retrain_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="largest gap between the claimed metrics and those of a "
        "CPU retraining (grade --retrain)",
    )


class AssignmentFile(_Section):
    """The keys of an assignment file."""

    title: str = Field(min_length=1, max_length=200, description="the assignment's name")
    question: str = Field(description="what to do, in Markdown")
    config: str | dict[str, Any] = Field(
        description="the base config: a path relative to this file, or the config inline"
    )
    locked: list[str] = Field(
        default_factory=list, description="config keys or sections the student may not change"
    )
    free: dict[str, FreeRule] = Field(
        default_factory=dict, description="config keys the student may change, with their rules"
    )
    unlisted: Literal["free", "locked"] = Field(
        "free", description="keys in neither list: free to change, or locked"
    )
    max_parameters: int | None = Field(None, ge=1, description="the network's parameter budget")
    target: Target = Field(description="the metric, split and threshold to reach")
    grading: Grading = Field(default_factory=Grading, description="how a hand-in earns points")


# ------------------------------------------------------------------ problems


@dataclass(frozen=True)
class Problem:
    """A config key that breaks an assignment's rule."""

    key: str  # the config key, e.g. data.split.test
    message: str  # what is wrong, e.g. "locked"
    where: str  # the rule: "configs/assignments/churn.assignment.yaml:12"
    kind: str  # locked, range or budget

    def __str__(self) -> str:
        return f"{self.key}: {self.message} ({self.where})"


class AssignmentError(UserError):
    """An assignment file that is not valid: every problem, each with its key and line."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = [f"{source} is not a valid assignment ({count}):"]
        lines += [f"  {key}: {message}" if key else f"  {message}" for key, message in problems]
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------ the loaded assignment


@dataclass
class Assignment:
    spec: AssignmentFile
    base: Config  # the base config, validated and resolved
    source: str  # the file it was read from
    lines: Lines  # key path -> line of the file
    resolved: dict[str, Any]  # the file's data with the base config inline
    # each locked or free entry: ("locked", None) or ("free", its rule)
    rules: dict[str, tuple[str, FreeRule | None]] = field(init=False)

    def __post_init__(self) -> None:
        self.rules = {entry: ("locked", None) for entry in self.spec.locked}
        self.rules.update({entry: ("free", rule) for entry, rule in self.spec.free.items()})

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def target(self) -> Target:
        return self.spec.target

    @property
    def grading(self) -> Grading:
        return self.spec.grading

    @property
    def task(self) -> str:
        return self.base.task

    @property
    def sha256(self) -> str:
        """The assignment's identity: its title, base config and rules (see IDENTITY)."""
        identity = {key: self.resolved.get(key) for key in IDENTITY}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        """The assignment with its base config inline: what a run folder and a hand-in keep."""
        return yaml.safe_dump(self.resolved, sort_keys=False, allow_unicode=True)

    def where(self, *path: Any) -> str:
        """`file:line` of a key path of the assignment file."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return f"{self.source}:{self.lines[path[:end]]}"
        return self.source

    def rule_of(self, key: str) -> tuple[str, FreeRule | None, str, str]:
        """(locked|free, the free rule, the entry that decides, where it is) for a config key:
        the longest locked or free entry that covers it, else `unlisted`."""
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            entry = ".".join(parts[:end])
            if entry in self.rules:
                kind, rule = self.rules[entry]
                place = (
                    self.where("free", entry)
                    if kind == "free"
                    else self.where("locked", self.spec.locked.index(entry))
                )
                return kind, rule, entry, place
        return self.spec.unlisted, None, "", self.where("unlisted")

    def fixes_the_training_rows(self) -> bool:
        """Whether the locked keys decide the training rows and their statistics: the whole
        data section, and the seed that splits it (data.seed, or else the run's seed). Then
        every honest run has the base config's preprocessing."""
        data_keys = [key for key in flat_config(self.base) if key.startswith("data.")]
        split_seed = "seed" if self.base.data.seed is None else "data.seed"
        return all(self.rule_of(key)[0] == "locked" for key in [*data_keys, split_seed])

    # ------------------------------------------------------------------ checks

    def check(self, cfg: Config) -> list[Problem]:
        """Every key of cfg that breaks a rule: a locked key changed from the base config, a
        free value outside its range, a key outside both lists changed (unlisted: locked)."""
        before, after = flat_config(self.base), flat_config(cfg)
        changed = sorted(
            key
            for key in before.keys() | after.keys()
            if before.get(key) != after.get(key) and key != "name"
        )
        problems: list[Problem] = []
        for key in changed:
            kind, _, entry, place = self.rule_of(key)
            if kind == "locked":
                was, now = json.dumps(before.get(key)), json.dumps(after.get(key))
                why = f"locked by the assignment ({entry})" if entry else "not free to change"
                problems.append(Problem(key, f"{why}; {was} -> {now}", place, "locked"))
        data = cfg.model_dump(mode="json")
        for entry, (kind, rule) in self.rules.items():
            if kind != "free" or rule is None:
                continue
            value = value_at(data, entry)
            for message in rule.problems(value):
                problems.append(Problem(entry, message, self.where("free", entry), "range"))
        return problems

    def check_parameters(self, count: int) -> Problem | None:
        """The parameter budget, for a network of `count` parameters."""
        budget = self.spec.max_parameters
        if budget is None or count <= budget:
            return None
        message = f"{count:,} parameters, more than the budget of {budget:,}"
        return Problem("model", message, self.where("max_parameters"), "budget")

    def refuse(
        self, problems: list[Problem], lines: Lines, overridden: set[Any], config: str = ""
    ) -> None:
        """UserError naming every problem: the key (with where the config set it: its file
        `config` and line, or the command line), the rule and the assignment file's line.
        Nothing to say: returns."""
        if not problems:
            return
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        shown = [f"{self.source}: the assignment does not allow this config ({count}):"]
        for problem in problems:
            origin = locate(tuple(problem.key.split(".")), lines, overridden)
            if config:
                origin = re.sub(r"\(line (\d+)\)$", lambda m: f"({config}:{m[1]})", origin)
            shown.append(f"  {origin}: {problem.message} ({problem.where})")
        shown.append(f"`dlcourse assignment show {self.source}` lists what may change and how far")
        raise UserError("\n".join(shown))

    # ------------------------------------------------------------------ the target

    @property
    def maximized(self) -> bool:
        return self.target.metric in MAXIMIZED

    def reached(self, value: float | None, threshold: float | None = None) -> bool:
        if value is None or value != value:  # None or NaN
            return False
        at = self.target.threshold if threshold is None else threshold
        return value >= at if self.maximized else value <= at

    def target_text(self, split: str | None = None) -> str:
        """ "test accuracy >= 85.50%"."""
        sign = ">=" if self.maximized else "<="
        metric = self.target.metric
        return f"{split or self.target.split} {metric} {sign} {self.format(self.target.threshold)}"

    def format(self, value: float | None) -> str:
        return format_metric(self.target.metric, value)

    def levels(self) -> list[Level]:
        """The point levels, the best first (default: 1 point for the target)."""
        levels = self.grading.points or [Level(at=self.target.threshold, points=1)]
        return sorted(levels, key=lambda level: level.at, reverse=self.maximized)

    def points(self, value: float | None) -> float:
        """The points a measured value earns before any late penalty."""
        for level in self.levels():
            if self.reached(value, level.at):
                return level.points
        return self.grading.below

    def late_penalty(self, received: datetime.datetime) -> tuple[int, float]:
        """(days late, share of the points kept) for a hand-in received at that time."""
        late = self.grading.late
        if late is None or received <= late.deadline:
            return 0, 1.0
        seconds = (received - late.deadline).total_seconds()
        days = int(-(-seconds // 86400))  # a day or part of one
        if late.max_days is not None and days > late.max_days:
            return days, 0.0
        return days, max(0.0, 1.0 - late.per_day * days)


def _between(low: float | None, high: float | None, unit: str = "") -> str:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}{unit}"
    if high is not None:
        return f"at most {high:g}{unit}"
    if low is not None:
        return f"at least {low:g}{unit}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def value_at(data: Any, key: str) -> Any:
    """The value at a dotted key of plain nested data (None where there is none)."""
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


# ------------------------------------------------------------------ reading


def is_assignment_file(path: Path) -> bool:
    """Whether a file given where a config goes is an assignment: named *.assignment.yaml, or
    a mapping with the keys only an assignment has (target and config)."""
    if path.name.endswith(SUFFIXES):
        return True
    try:
        data, _ = read_mapping(path)
    except UserError:
        return False  # load_config will say what is wrong with it
    return "target" in data and "config" in data


def read_mapping(path: Path) -> tuple[dict[str, Any], Lines]:
    """The mapping a YAML file holds and the line of each key path (safe, bounded)."""
    return parse_mapping(read_yaml_text(path, ASSIGNMENT_LIMIT, "assignment"), str(path))


def parse_mapping(text: str, source: str) -> tuple[dict[str, Any], Lines]:
    root = load_yaml_node(text, source)
    if root is None:
        raise UserError(f"{source}: the assignment is empty; it needs a title, config and target")
    if not isinstance(root, yaml.MappingNode):
        raise UserError(f"{source}: an assignment is a mapping (title, question, config, ...)")
    try:
        return parse_config(text, source)
    except ConfigError as exc:  # duplicate keys: said as an assignment's problems
        raise AssignmentError(source, exc.problems) from None


def load_assignment(path: Path) -> Assignment:
    """Read and check an assignment file; AssignmentError or UserError naming every problem."""
    data, lines = read_mapping(path)
    return build_assignment(data, lines, str(path), path.parent)


def parse_assignment(text: str, source: str) -> Assignment:
    """An assignment from its text (one with its config inline: a hand-in's)."""
    data, lines = parse_mapping(text, source)
    if not isinstance(data.get("config"), dict):
        raise UserError(f"{source}: config: a handed-in assignment holds its config inline")
    return build_assignment(data, lines, source, None)


def build_assignment(
    data: dict[str, Any], lines: Lines, source: str, folder: Path | None
) -> Assignment:
    try:
        spec = AssignmentFile.model_validate(data)
    except ValidationError as exc:
        raise AssignmentError(source, describe_errors(exc, AssignmentFile, lines, set())) from None
    resolved = dict(data)
    if isinstance(spec.config, dict):
        inner = {path[1:]: line for path, line in lines.items() if path[:1] == ("config",)}
        base = validate_config(dict(spec.config), f"{source} (its config)", lines=inner)
    else:
        assert folder is not None  # parse_assignment requires the config inline
        config_path = folder / spec.config
        if not config_path.is_file():
            raise AssignmentError(
                source,
                [
                    (
                        locate(("config",), lines, set()),
                        f"{spec.config}: no such config file (a path relative to the assignment)",
                    )
                ],
            )
        base = load_config(config_path)
        resolved["config"], _ = read_mapping(config_path)
    assignment = Assignment(spec, base, source, lines, resolved)
    problems = check_rules(assignment)
    if problems:
        raise AssignmentError(source, problems)
    return assignment


def check_rules(assignment: Assignment) -> list[tuple[str, str]]:
    """The rules' own problems: keys that are not config keys, a key both locked and free,
    rules that do not fit the key's values, a base config that breaks its own rules, a target
    that is not a metric of the task (or out of its range, or on a split the data lacks)."""
    problems = entry_problems(assignment)
    if not problems:
        problems = [
            (locate(("config",), assignment.lines, set()),
             f"the base config breaks its own rule: {problem}")
            for problem in assignment.check(assignment.base)
        ]  # fmt: skip
    return problems + target_problems(assignment)


def entry_problems(assignment: Assignment) -> list[tuple[str, str]]:
    """Each locked and free entry that names no config key (with the nearest key), is both
    locked and free, or has a rule that does not fit the key's value in the base config."""
    spec, lines = assignment.spec, assignment.lines
    flat = flat_config(assignment.base)
    known = set(flat) | {
        ".".join(key.split(".")[:end]) for key in flat for end in range(1, key.count(".") + 1)
    }
    problems: list[tuple[str, str]] = []

    def unknown(entry: str, path: tuple[Any, ...]) -> bool:
        if entry in known or any(key.startswith(entry + ".") for key in known):
            return False
        close = difflib.get_close_matches(entry, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append((locate(path, lines, set()), f"{entry!r} is not a config key{hint}"))
        return True

    for index, entry in enumerate(spec.locked):
        if not unknown(entry, ("locked", index)) and entry in spec.free:
            problems.append(
                (locate(("locked", index), lines, set()), f"{entry} is both locked and free")
            )
    base = assignment.base.model_dump(mode="json")
    for entry, rule in spec.free.items():
        if not unknown(entry, ("free", entry)):
            where = locate(("free", entry), lines, set())
            problems += [(where, why) for why in rule_misfits(entry, rule, value_at(base, entry))]
    return problems


def rule_misfits(entry: str, rule: FreeRule, value: Any) -> list[str]:
    """Why a free rule cannot apply to its key's value: bounds for a value that is no number,
    item counts for one that is no list."""
    items = value if isinstance(value, list) else [value]
    why = []
    if (rule.min is not None or rule.max is not None) and not all(
        _is_number(item) or item is None for item in items
    ):
        why.append(f"min and max need numbers, but {entry} is {json.dumps(value)}")
    if (rule.min_items is not None or rule.max_items is not None) and not isinstance(
        value, list | type(None)
    ):
        why.append(f"min_items and max_items need a list, but {entry} is {json.dumps(value)}")
    return why


def target_problems(assignment: Assignment) -> list[tuple[str, str]]:
    """A target metric the task does not have, a target or points level out of the metric's
    range, a target split the base config's data does not have."""
    spec, lines, task = assignment.spec, assignment.lines, assignment.base.task
    problems: list[tuple[str, str]] = []
    metrics = TASKS[task].metrics(assignment.base.data.kind)
    if spec.target.metric not in metrics:
        close = difflib.get_close_matches(spec.target.metric, metrics, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append((
            locate(("target", "metric"), lines, set()),
            f"{spec.target.metric!r} is not a metric of the {task} task; {hint}choose one "
            f"of {', '.join(metrics)}",
        ))  # fmt: skip
    problems += out_of_range_levels(spec, lines)
    split = spec.target.split
    if getattr(assignment.base.split, split) == 0 and not (
        split == "test" and TASKS[task].fixed_test
    ):
        problems.append((
            locate(("target", "split"), lines, set()),
            f"the base config has no {split} split (data.split.{split} is 0)",
        ))  # fmt: skip
    return problems


def out_of_range_levels(spec: Any, lines: Lines) -> list[tuple[str, str]]:
    """A target or points level that its metric can never reach: above 1 for a share
    (accuracy 85.5 is 8550%), below 0 for one of them or for an error."""
    metric = spec.target.metric
    values: list[tuple[tuple[Any, ...], float]] = [(("target", "threshold"), spec.target.threshold)]
    values += [(("grading", "points", index, "at"), level.at)
               for index, level in enumerate(spec.grading.points or [])]  # fmt: skip
    problems = []
    for path, value in values:
        why = ""
        if metric in MAXIMIZED and value > 1:
            hint = f"; did you mean {value / 100:g}?" if value <= 100 else ""
            why = f"{value:g}: {metric} is at most 1{hint}"
        elif metric not in ("r2",) and value < 0:
            why = f"{value:g}: {metric} is never below 0"
        if why:
            problems.append((locate(path, lines, set()), why))
    return problems


# ------------------------------------------------------------------ a student's config


def variant_config(
    assignment: Assignment, overrides: list[str], config: Path | None = None
) -> Config:
    """The config a student trains: the base config with `--set` overrides (or the student's
    own config file, `config`, with them), refused with every rule it breaks."""
    from dlcourse.config import apply_overrides
    from dlcourse.config.source import read_config_file

    if config is not None:
        data, lines = read_config_file(config)
        source = str(config)
    else:  # the base config as written (resolved, keys of other choices would be refused)
        data, lines = copy.deepcopy(assignment.resolved["config"]), {}
        source = f"{assignment.source} (its config)"
    overridden = apply_overrides(data, overrides, source)
    cfg = validate_config(data, source, lines=lines, overridden=overridden)
    assignment.refuse(assignment.check(cfg), lines, overridden, str(config or ""))
    return cfg


def describe_assignment(assignment: Assignment) -> str:
    """What `dlcourse assignment show` prints: the question, what may change, the target and
    how it is graded."""
    spec, base = assignment.spec, assignment.base
    lines = [f"# {spec.title}", "", spec.question.strip(), "", "## What you may change", ""]
    width = max([len(key) for key in spec.free] + [8])
    for key, rule in spec.free.items():
        now = json.dumps(value_at(base.model_dump(mode="json"), key))
        now = now if len(now) <= 40 else now[:37] + "..."
        lines.append(f"  {key:<{width}}  {rule.describe()} (the base config has {now})")
    if not spec.free:
        lines.append("  (no key is listed as free)")
    if spec.max_parameters is not None:
        lines.append(f"  the network: at most {spec.max_parameters:,} parameters")
    lines += ["", "Locked (these stay as the base config has them): " + ", ".join(spec.locked)]
    others = "may change" if spec.unlisted == "free" else "are locked too"
    lines.append(f"Every other key {others}.")
    lines += ["", "## Target", ""]
    lines.append(
        f"  {assignment.target_text()}, measured by the grader on the kept weights "
        f"(model.safetensors) with the grader's own {spec.target.split} data. Check yours with "
        f"`dlcourse assignment check {assignment.source} RUN_DIR` on the dev split."
    )
    lines += ["", "## Grading", ""]
    for level in assignment.levels():
        sign = ">=" if assignment.maximized else "<="
        lines.append(
            f"  {spec.target.metric} {sign} {assignment.format(level.at)}: {level.points:g} points"
        )
    lines.append(f"  otherwise: {spec.grading.below:g} points")
    late = spec.grading.late
    if late is not None:
        text = (
            f"  late: deadline {late.deadline.isoformat()}; {late.per_day:.0%} of the "
            "points off per day (or part of one) late"
        )
        if late.max_days is not None:
            text += f"; 0 points after {late.max_days} days"
        lines.append(text)
    lines.append(
        "  A hand-in whose claimed metrics, locks or ranges do not hold up is flagged for the "
        "instructor; a damaged or unsafe one is rejected."
    )
    lines += [
        "",
        "## How",
        "",
        f"  dlcourse train {assignment.source} --set KEY=VALUE ...",
        f"  dlcourse assignment check {assignment.source} RUN_DIR",
        "  dlcourse handin RUN_DIR --student ID --out ID.zip",
    ]
    return "\n".join(lines) + "\n"
