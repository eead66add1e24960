"""Example CSVs for `task: csv`, generated (no download): the lectures' property prices and spam.

Each comes from a fixed formula plus seeded noise, so what a model can reach is known: the
house prices are a non-linear function of area, bedrooms, distance to the centre and age with
noise set so that the best possible R^2 is HOUSE_BEST_R2; the spam labels come from a logistic
model of word counts. `make_example` writes one (`dlcourse data make NAME --out FILE`).

Their noise floors are known, so a run on them knows the best possible score
(`example_reference`, summary.json's `reference`): R^2 HOUSE_BEST_R2 for the house prices, and
for spam the accuracy of the generator's own rule (spam when its probability is above 1/2),
spam_best_accuracy(), about 81.6%. `dlcourse diagnose` measures the bias against them.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import write_text_atomic

HOUSE_BEST_R2 = 0.9  # what the noise of the house prices allows, in expectation


@dataclass(frozen=True)
class Example:
    file_name: str  # the name the shipped config expects
    columns: tuple[str, ...]
    note: str  # what a model can reach, for the user
    generate: Callable[[int, torch.Generator], torch.Tensor]  # (rows, generator) -> (rows, columns)


def house_features(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) area (m^2), bedrooms, distance to the centre (km), age (years)."""
    area = 40 + 180 * torch.rand(n, generator=generator, dtype=torch.float64)
    jitter = torch.rand(n, generator=generator, dtype=torch.float64) * 1.4 - 0.7
    bedrooms = (area / 40 + jitter).round().clamp(1, 6)
    distance = 0.5 + 24.5 * torch.rand(n, generator=generator, dtype=torch.float64)
    age = 70 * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([area, bedrooms, distance, age], dim=1)


def house_value(features: torch.Tensor) -> torch.Tensor:
    """The noise-free price in thousands: (n, 4) -> (n,). Non-linear on purpose: the centre's
    pull decays exponentially with distance, age first lowers the price and later (old
    buildings, renovated) less so, and area multiplies both."""
    area, bedrooms, distance, age = features.unbind(1)
    location = 0.35 + 0.65 * torch.exp(-distance / 8)
    ageing = 1 - 0.006 * age + 0.00004 * age**2
    return 4.0 * area * location * ageing + 12 * bedrooms


@functools.cache
def house_noise() -> float:
    """The noise std (thousands) at which the best possible R^2 is HOUSE_BEST_R2, from the
    variance of the noise-free price over a large fixed sample."""
    sample = house_features(200_000, torch.Generator().manual_seed(12345))
    variance = float(house_value(sample).var())
    return math.sqrt(variance * (1 / HOUSE_BEST_R2 - 1))


def house_prices(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 5): area, bedrooms, distance, age, price (whole units, rounded to hundreds)."""
    features = house_features(n, generator)
    noise = house_noise() * torch.randn(n, generator=generator, dtype=torch.float64)
    price = ((house_value(features) + noise) * 1000).round(decimals=-2)
    features[:, 0] = features[:, 0].round()
    features[:, 2:] = features[:, 2:].round(decimals=1)
    return torch.cat([features, price.unsqueeze(1)], dim=1)


SPAM_WORDS = ("free", "money", "winner", "click", "meeting", "project", "hello", "exclamations")
# How much each word count moves the log-odds of spam; the last column is a bias.
SPAM_WEIGHTS = (0.9, 0.8, 1.2, 0.7, -1.1, -0.9, -0.2, 0.5)
SPAM_BIAS = -2.5


def spam(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 9): counts of eight words in an e-mail and whether it is spam (0/1), drawn from a
    logistic model of the counts."""
    counts = torch.poisson(torch.full((n, len(SPAM_WORDS)), 1.2, dtype=torch.float64), generator)
    logits = counts @ torch.tensor(SPAM_WEIGHTS, dtype=torch.float64) + SPAM_BIAS
    is_spam = torch.rand(n, generator=generator, dtype=torch.float64) < torch.sigmoid(logits)
    return torch.cat([counts, is_spam.double().unsqueeze(1)], dim=1)


@functools.cache
def spam_best_accuracy() -> float:
    """The accuracy of the best possible classifier of the spam data, in expectation: the
    generator's own rule (spam when its probability is above 1/2) is right with probability
    max(p, 1 - p); averaged over a large fixed sample of word counts (standard error 0.0006)."""
    counts = torch.poisson(torch.full((400_000, len(SPAM_WORDS)), 1.2, dtype=torch.float64),
                           torch.Generator().manual_seed(12345))  # fmt: skip
    p = torch.sigmoid(counts @ torch.tensor(SPAM_WEIGHTS, dtype=torch.float64) + SPAM_BIAS)
    return float(torch.maximum(p, 1 - p).mean())


EXAMPLES: dict[str, Example] = {
    "house-prices": Example(
        file_name="house_prices.csv",
        columns=("area", "bedrooms", "distance", "age", "price"),
        note=f"the best possible R^2 of price is about {HOUSE_BEST_R2}",
        generate=house_prices,
    ),
    "spam": Example(
        file_name="spam.csv",
        columns=(*SPAM_WORDS, "spam"),
        note="spam or not from word counts (a logistic model: no classifier is perfect here)",
        generate=spam,
    ),
}


REFERENCES: dict[str, Callable[[], dict[str, float]]] = {
    "house-prices": lambda: {"best_r2": HOUSE_BEST_R2},
    "spam": lambda: {"best_accuracy": spam_best_accuracy()},
}


def example_reference(columns: Sequence[str], target: str) -> dict[str, float]:
    """The best possible score of a table that `dlcourse data make` wrote, which its generator
    knows: recognized by its columns (exactly an example's, in order) and its target (the last
    of them). {} for any other table."""
    for name, example in EXAMPLES.items():
        if tuple(columns) == example.columns and target == example.columns[-1]:
            return REFERENCES[name]()
    return {}


def example_rows(name: str, rows: int, seed: int) -> list[list[str]]:
    """The rows of an example CSV, header first, as text."""
    example = EXAMPLES[name]
    values = example.generate(rows, torch.Generator().manual_seed(seed))
    lines = [list(example.columns)]
    lines += [[_number(value) for value in row] for row in values.tolist()]
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ------------------------------------------------------------------ from make_data.py


@dataclass
class MadeFile:
    path: Path
    rows: int
    columns: tuple[str, ...]
    note: str


MIN_ROWS, MAX_ROWS = 10, 1_000_000  # a million rows is 40 MB of CSV, far past a course's
MAX_SEED = 2**63 - 1  # as the config's seed


def make_example(name: str, out: Path, rows: int = 1000, seed: int = 0) -> MadeFile:
    """Write the example CSV `name` to `out` (never over an existing file)."""
    if name not in EXAMPLES:
        raise UserError(f"no example data set {name!r}; choose one of {', '.join(EXAMPLES)}")
    if not MIN_ROWS <= rows <= MAX_ROWS:
        raise UserError(
            f"--rows {rows}: an example has {MIN_ROWS} to {MAX_ROWS:,} rows"
            if abs(rows) < 10**30
            else f"--rows: a number of {len(str(rows)):,} digits; an example has {MIN_ROWS} to "
            f"{MAX_ROWS:,} rows"
        )
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed: a seed is a whole number from 0 to {MAX_SEED:,}")
    if out.exists():
        raise UserError(f"{out}: already exists; remove it or choose another --out")
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(example_rows(name, rows, seed))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out.parent}: cannot create the folder ({exc.strerror})") from None
    write_text_atomic(out, text.getvalue())
    example = EXAMPLES[name]
    return MadeFile(out, rows, example.columns, example.note)
