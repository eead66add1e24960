"""`dlcourse sweep`: every combination of a grid of config values as its own run, then the
comparison of them all.

    runs/<sweep name>/
      sweep.yaml           the base config, fixed overrides, grid and variants of the last start
      <label>-<time>/      one run folder per combination (label: its values, e.g. lr-0.01)
      sweep.csv  compare.png

All runs train in this one process (torch is imported once). Every combination's config is
validated before the first run starts. A sweep started again with the same folder skips the
runs that finished (completed, stopped early, or diverged: a seeded run would diverge again),
resumes the interrupted ones, and trains the rest; a run belongs to a combination when its
config.yaml is that combination's resolved config.

A sweep file (`*.sweep.yaml`) describes a sweep:

    config: ../transactions_regression.yaml   # the base config, relative to this file
    name: lr                                  # the sweep folder (default: the file's name)
    set: {optim.name: sgd}                    # overrides of every run
    grid: {optim.lr: [0.001, 0.05, 5]}        # every combination of these values
    variants:                                 # named sets of overrides, crossed with the grid
      none: {}
      l2: {regularization.l2: 1.0}
    seeds: 3                                  # every combination over 3 seeds (--seeds)

Seeds: with `seeds: N` (or `--seeds N`) every combination trains N times, with the seeds
S, S+1, ..., S+N-1, where S is the combination's own `seed` (the config's, 0 by default); the
runs are named <label>_seed-<seed>. The comparison then has one row per combination: the mean
and the standard deviation over its seeds (compare.py), and says which differences are larger
than the seed-to-seed spread.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.text import Text

from dlcourse.app.training import resume, train
from dlcourse.config import Config, config_data, load_config
from dlcourse.config.schema import is_safe_name
from dlcourse.config.sweep import MAX_SEEDS, read_sweep_config
from dlcourse.errors import DivergedError, InterruptedRun, UserError
from dlcourse.fileio import make_folder, write_text_atomic
from dlcourse.runs import RunFolder, RunInfo, read_run
from dlcourse.tools.compare import SWEEP_TABLE, Comparison, compare_runs, short_key

SWEEP_SUFFIX = ".sweep.yaml"
DONE = ("completed", "early_stopping", "diverged")  # a sweep runs these no more (seeded: a
# diverged run would diverge again)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class SweepSpec:
    config: Path  # the base training config
    name: str  # the sweep folder's name
    overrides: list[str] = field(default_factory=list)  # KEY=VALUE for every run
    grid: dict[str, list[str]] = field(default_factory=dict)  # key -> values (YAML text)
    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> KEY=VALUE
    seeds: int = 1  # runs per combination, with seeds S, S+1, ... (S: the config's seed)


@dataclass
class Combination:
    label: str  # the run's name: its values, e.g. l2_lr-0.01 (+ _seed-1 with seeds)
    overrides: list[str]  # KEY=VALUE of this combination
    variant: str = ""  # the variant's name, if the sweep has variants
    group: str = ""  # the combination's label without the seed: its runs' row in the table


@dataclass
class SweepResult:
    folder: Path
    comparison: Comparison
    skipped: list[str]  # labels of runs found finished
    diverged: list[str]  # labels of runs that diverged this time


def split_values(text: str) -> list[str]:
    """V1,V2,... split at the commas outside brackets, braces and quotes."""
    values, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_grid(options: list[str]) -> dict[str, list[str]]:
    """--grid KEY=V1,V2,... options as {key: [value text, ...]}."""
    grid: dict[str, list[str]] = {}
    for option in options:
        key, sep, text = option.partition("=")
        values = split_values(text) if sep else []
        if not key.strip() or not values or not all(values):
            raise UserError(f"--grid {option!r}: expected KEY=V1,V2,... e.g. optim.lr=0.001,0.01")
        grid[key.strip()] = values
    return grid


def read_sweep_file(path: Path) -> SweepSpec:
    """A *.sweep.yaml file (config/sweep.py checks it); ConfigError naming each wrong key."""
    sweep = read_sweep_config(path)
    return SweepSpec(
        config=path.parent / sweep.config,
        name=sweep.name or path.name.removesuffix(SWEEP_SUFFIX),
        overrides=[f"{key}={json.dumps(value)}" for key, value in (sweep.set or {}).items()],
        grid={key: [json.dumps(v) for v in values] for key, values in (sweep.grid or {}).items()},
        variants={
            variant: [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
            for variant, overrides in (sweep.variants or {}).items()
        },
        seeds=sweep.seeds,
    )


def combinations(spec: SweepSpec) -> list[Combination]:
    """Every variant crossed with every combination of the grid's values, in order."""
    variants = list(spec.variants.items()) or [("", [])]
    keys = list(spec.grid)
    found = []
    for (variant, fixed), values in itertools.product(
        variants, itertools.product(*spec.grid.values())
    ):
        parts = [variant] if variant else []
        parts += [
            f"{short_key(key)}-{label_of(value)}" for key, value in zip(keys, values, strict=True)
        ]
        label = _UNSAFE.sub("_", "_".join(parts) or "run").strip("_.-")[:80] or "run"
        overrides = fixed + [f"{key}={value}" for key, value in zip(keys, values, strict=True)]
        found.append(Combination(label, overrides, variant))
    return found


def check_seeds(seeds: int, option: str = "--seeds") -> None:
    if not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"{option} {seeds}: give 1 to {MAX_SEEDS} seeds per combination")


def seeded(spec: SweepSpec, combo: Combination, cfg: Config) -> list[Combination]:
    """The combination's runs over spec.seeds seeds: cfg.seed (its own seed), cfg.seed + 1,
    ..., each named <label>_seed-<seed>."""
    if any(key == "seed" for key in spec.grid) or any(
        override.partition("=")[0].strip() == "seed" for override in combo.overrides
    ):
        raise UserError(
            "--seeds runs every combination over several seeds; a grid (or variant) of seed "
            "values does that too: choose one"
        )
    stem = cfg.name if combo.label == "run" else combo.label  # seeds alone: <name>_seed-0
    return [
        Combination(f"{stem}_seed-{seed}", [*combo.overrides, f"seed={seed}"], combo.variant,
                    group=stem)
        for seed in range(cfg.seed, cfg.seed + spec.seeds)
    ]  # fmt: skip


def label_of(value: str) -> str:
    """A grid value as it reads in a run name: the text without quotes."""
    return value.strip().strip("'\"")


def check_name(name: str) -> None:
    """A sweep's name becomes its folder under the runs folder: one plain name, never a path
    (absolute, or with '..', which would put the folder and its files anywhere)."""
    if not is_safe_name(name):
        raise UserError(
            f"sweep name {name!r} (--name, or name: in the sweep file): not a safe folder name; "
            "use letters, digits, '.', '_' and '-' (no '/', '..' or spaces)"
        )


def resolve(spec: SweepSpec) -> list[tuple[Combination, Config]]:
    """Every combination with its validated config (all checked before any run starts)."""
    check_seeds(spec.seeds)
    if not spec.grid and not spec.variants and spec.seeds <= 1:
        raise UserError(
            "a sweep needs at least one --grid KEY=V1,V2,... (or variants, or --seeds N)"
        )
    resolved, seen = [], set()
    for combo in combinations(spec):
        while combo.label in seen:  # two values that read the same in a run name
            combo.label += "_"
        seen.add(combo.label)
        combo.group = combo.label
        runs = [combo]
        if spec.seeds > 1:
            runs = seeded(spec, combo, load_config(spec.config, [*spec.overrides,
                                                                 *combo.overrides]))  # fmt: skip
        for run in runs:
            name = f"name={json.dumps(run.label)}"
            resolved.append((run, load_config(spec.config, [*spec.overrides, *run.overrides,
                                                             name])))  # fmt: skip
    return resolved


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A config's data without the keys that do not change a run's results."""
    data = json.loads(json.dumps(data))  # plain lists, not tuples
    data.get("logging", {}).pop("progress", None)
    return data


def find_run(folder: Path, cfg: Config) -> Path | None:
    """The newest run folder in the sweep folder whose config is `cfg`, if any."""
    wanted = comparable(config_data(cfg))
    found = None
    for path in sorted(folder.glob(f"{cfg.name}-*")):  # names end with the time: oldest first
        if (path / "config.yaml").is_file():
            data = config_data(RunFolder(path).read_config())
            if comparable(data) == wanted:
                found = path
    return found


def run_sweep(spec: SweepSpec, *, runs_dir: Path, data_dir: Path, console: Console) -> SweepResult:
    """Train every combination not yet finished, then compare them all (sweep.csv,
    compare.png in the sweep folder)."""
    resolved = resolve(spec)
    check_name(spec.name)
    folder = make_folder(runs_dir / spec.name, runs_dir)
    write_text_atomic(folder / "sweep.yaml", describe_spec(spec), root=folder)
    skipped, diverged, paths = [], [], []
    for index, (combo, cfg) in enumerate(resolved, start=1):
        path = find_run(folder, cfg)
        run = read_run(path) if path is not None else None
        head = Text(f"sweep {spec.name}: run {index}/{len(resolved)}, {combo.label}", "bold")
        if run is not None and run.status in DONE:
            console.print(Text.assemble(head, f": {run.status} already ({run.path.name}), "
                                        "skipped"), highlight=False)  # fmt: skip
            skipped.append(combo.label)
            paths.append(run.path)
            continue
        console.rule(head)
        if train_combination(run, cfg, folder, data_dir, console):
            diverged.append(combo.label)
        found = find_run(folder, cfg)
        assert found is not None  # the run just made its folder
        paths.append(found)
    variants = [combo.variant for combo, _ in resolved] if spec.variants else None
    groups = [combo.group for combo, _ in resolved]  # a row per combination, over its seeds
    comparison = compare_runs(paths, folder, SWEEP_TABLE, list(spec.grid), variants, groups)
    return SweepResult(folder, comparison, skipped, diverged)


def train_combination(
    run: RunInfo | None, cfg: Config, folder: Path, data_dir: Path, console: Console
) -> bool:
    """Resume the combination's unfinished run, or train it anew; True if it diverged."""
    if run is not None and run.status == "running":
        raise UserError(f"{run.path}: another process is training it (the same sweep twice?)")
    try:
        if run is not None and (run.path / "checkpoints" / "last.pt").is_file():
            try:
                resume(run.path, data_dir=data_dir, console=console)
                return False
            except UserError as exc:  # e.g. killed after its last epoch, before its summary
                console.print(f"cannot resume it ({exc}); training it anew", highlight=False)
        train(cfg, runs_dir=folder, data_dir=data_dir, console=console)
    except DivergedError as exc:
        console.print(Text(str(exc), "red"), highlight=False)
        return True
    except InterruptedRun as exc:
        raise InterruptedRun(
            f"{exc}\nThe sweep stopped; run the same command again to continue it (finished "
            "runs are skipped, this one resumes)."
        ) from None
    return False


def describe_spec(spec: SweepSpec) -> str:
    """sweep.yaml: what the sweep was started with (for people; runs are matched by config)."""
    data = {
        "config": str(spec.config),
        "set": spec.overrides,
        "grid": {key: [label_of(v) for v in values] for key, values in spec.grid.items()},
        "variants": spec.variants,
        "seeds": spec.seeds,
    }
    return yaml.safe_dump(data, sort_keys=False)
