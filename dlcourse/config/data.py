"""The `data` section: where the examples come from, how they are split and augmented."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dlcourse.config.base import BIG, Section


class Split(Section):
    """Fractions of the examples in each split; they must sum to 1."""

    train: float = Field(gt=0, le=1, description="fraction of the examples used for training")
    dev: float = Field(
        0.0, ge=0, lt=1, description="fraction held out to pick the epoch and tune (validation)"
    )
    test: float = Field(0.0, ge=0, lt=1, description="fraction held out for the final report")

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"data.split: train + dev + test must sum to 1, got "
                f"{self.train:g} + {self.dev:g} + {self.test:g} = {total:g}"
            )
        return self


class Augment(Section):
    """Random transformations of each training image, applied batch-wise on the device."""

    shift: int = Field(0, ge=0, le=8, description="translate by up to this many pixels")
    rotate: float = Field(0.0, ge=0, le=45, description="rotate by up to this many degrees")


PlaygroundName = Literal["xor", "circles", "moons", "spirals", "gaussians"]


class Data(Section):
    path: str | None = Field(
        None,
        description="the CSV file (csv: required; churn: default "
        "<data_dir>/churn/Churn_Modelling.csv)",
    )
    target: str | None = Field(None, description="csv: the column to predict")
    kind: Literal["classification", "regression"] | None = Field(
        None,
        description="csv: classification or regression (default: classification when the "
        "target is text or has at most 10 distinct integer values)",
    )
    drop: list[str] | None = Field(None, description="csv: columns not to use (ids, names)")
    categorical: list[str] | None = Field(
        None, description="csv: numeric columns to one-hot encode too (text columns always are)"
    )
    dataset: PlaygroundName | None = Field(
        None, description="playground: the 2-D data set (xor, circles, moons, spirals, gaussians)"
    )
    split: Split | None = Field(
        None, description="train/dev/test fractions (default by task, e.g. 0.6/0.2/0.2)"
    )
    limit: int | None = Field(
        None, ge=1, description="use only the first N examples of each source (tiny runs)"
    )
    n_samples: int | None = Field(
        None, ge=10, le=10_000_000, description="generated data: examples to generate"
    )
    noise: float | None = Field(
        None,
        ge=0,
        le=BIG,
        description="generated data: std of the noise (default by task and data set)",
    )
    augment: Augment | None = Field(None, description="mnist: data augmentation of training images")
    normalize: bool = Field(
        True,
        description="standardize the inputs with training-split statistics (false: raw features; "
        "mnist: pixels / 255)",
    )
