"""One example for `dlcourse forward`, from what the student types after `--input`.

    --input children=2 --input accounts=3     a value per input column, by name
    --input 2,3                               a CSV row: the values in the columns' order
    --input test=12                           example 12 of a split (train, dev or test)
    --input digit.png                         an image file (MNIST models)

The example goes through the preprocessing its model was trained with (standardization of
table columns, MNIST's pixel normalization), and the result keeps both the values given and
the values the network sees.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dlcourse.data.tabular import FLOAT32_MAX, Table, TabularEncoder
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.tools.model_source import ModelSource

IMAGE_LIMIT = 32 * 2**20  # bytes
MAX_PIXELS = 4096 * 4096
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"}
_SPLIT_INDEX = re.compile(r"(train|dev|test)=(\d+)")


@dataclass
class InputValue:
    name: str  # the column (children, Geography), or the pixel (row 3, col 14)
    raw: str  # as given, or as it is in the data
    value: float  # what the network sees


@dataclass
class Example:
    x: torch.Tensor  # (1, *input_shape), preprocessed
    description: str
    values: list[InputValue]
    target: str | None = None  # the example's label or value, when it comes from the data
    notes: list[str] = field(default_factory=list)


def read_example(inputs: list[str], source: ModelSource) -> Example:
    """Parse --input values into one preprocessed example; UserError saying what was expected."""
    if not inputs:
        raise UserError(f"give the example with --input ({_expected(source)})")
    if len(inputs) == 1 and (match := _SPLIT_INDEX.fullmatch(inputs[0].strip())):
        return _from_data(source, match.group(1), int(match.group(2)))
    if source.preprocess.get("kind") == "image":
        if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in IMAGE_SUFFIXES:
            return _from_image(source, Path(inputs[0]))
        raise UserError(f"--input {inputs[0]!r}: expected {_expected(source)}")
    if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"--input {inputs[0]}: an image, but this model reads a table's columns: "
                        f"{_expected(source)}")  # fmt: skip
    if len(inputs) == 1 and "=" not in inputs[0]:
        return _from_row(source, inputs[0])
    return _from_table(source, _named_values(inputs, source))


def _expected(source: ModelSource) -> str:
    if source.preprocess.get("kind") == "image":
        return "an image file (.png, .jpg...) or a split and index such as test=12"
    columns = _columns(source)
    named = " ".join(f"--input {name}=..." for name in columns)
    return f"{named}; or one CSV row of {', '.join(columns)}; or a split and index: test=12"


def _columns(source: ModelSource) -> list[str]:
    return [*source.preprocess["numeric"], *source.preprocess["categorical"]]


def _named_values(inputs: list[str], source: ModelSource) -> dict[str, str]:
    columns = _columns(source)
    given: dict[str, str] = {}
    for item in inputs:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise UserError(f"--input {item!r}: expected NAME=VALUE ({_expected(source)})")
        if name not in columns:
            raise UserError(
                f"--input {item!r}: the model has no input {name!r}; its inputs are "
                f"{', '.join(columns)}"
            )
        if name in given:
            raise UserError(f"--input {name}: given twice")
        given[name] = value.strip()
    missing = [name for name in columns if name not in given]
    if missing:
        raise UserError(
            f"--input: missing {', '.join(missing)} (the model reads {', '.join(columns)})"
        )
    return given


def _from_row(source: ModelSource, row: str) -> Example:
    columns = _columns(source)
    cells = next(csv.reader(io.StringIO(row)), [])
    if len(cells) != len(columns):
        raise UserError(
            f"--input {row!r}: a CSV row of {len(cells)} values, but the model reads "
            f"{len(columns)}: {', '.join(columns)} (in this order)"
        )
    return _from_table(source, dict(zip(columns, (cell.strip() for cell in cells), strict=True)))


def _from_table(source: ModelSource, given: dict[str, str]) -> Example:
    """Raw column values -> the standardized (1, F) features, as training transformed them."""
    encoder = TabularEncoder.from_state_dict(source.preprocess)
    numeric: dict[str, list[float]] = {}
    for name in encoder.numeric:
        numeric[name] = [_number(name, given[name])]
    for name in encoder.categorical:
        known = encoder.categories[name]
        if given[name] not in known:
            raise UserError(
                f"--input {name}={given[name]}: not a value seen in training ({', '.join(known)})"
            )
    categorical = {name: [given[name]] for name in encoder.categorical}
    x = encoder.transform(Table(Path("--input"), numeric, categorical, [1]))
    values = _encoded_values(source, x[0], given)
    description = ", ".join(f"{name}={value}" for name, value in given.items())
    return Example(x, description, values)


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--input {name}={text}: not a number") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise UserError(f"--input {name}={text}: not a finite number within float32's range")
    return value


def _encoded_values(
    source: ModelSource, features: torch.Tensor, given: dict[str, str] | None = None
) -> list[InputValue]:
    """Each feature the network sees, with its raw value (given, or undone from the data)."""
    mean, std = source.preprocess["mean"], source.preprocess["std"]
    values = []
    for i, name in enumerate(source.feature_names):
        raw = float(features[i]) * std[i] + mean[i]
        column, _, category = name.partition("=")
        if given is not None and not category:
            shown = given[column]
        elif given is not None:  # a one-hot column: 1 where the given category is this one
            shown = f"{given[column]} -> {int(given[column] == category)}"
        else:
            shown = f"{round(raw, 6):g}"
        values.append(InputValue(name, shown, float(features[i])))
    return values


def _from_data(source: ModelSource, split: str, index: int) -> Example:
    data = source.task_data()
    if split not in data.splits:
        raise UserError(f"--input {split}={index}: the data has no {split} split "
                        f"(it has {', '.join(data.splits)})")  # fmt: skip
    examples = data.splits[split]
    if index >= len(examples):
        raise UserError(
            f"--input {split}={index}: out of range; the {split} split has {len(examples):,} "
            f"examples (0 to {len(examples) - 1})"
        )
    x = examples.x[index : index + 1].cpu()
    label = examples.y[index]
    target = source.class_names[int(label)] if source.class_names else f"{float(label):g}"
    row = int(examples.rows[index])
    description = f"{split} example {index} (source row {row}, target {target})"
    if source.preprocess.get("kind") == "image":
        return Example(x, description, _pixel_values(source, x), target)
    return Example(x, description, _encoded_values(source, x[0]), target)


def _pixel_values(source: ModelSource, x: torch.Tensor) -> list[InputValue]:
    mean, std = source.preprocess["mean"], source.preprocess["std"]
    flat = x.flatten()
    width = source.input_shape[-1]
    return [
        InputValue(f"pixel ({i // width}, {i % width})", f"{round((v * std + mean) * 255):d}", v)
        for i, v in enumerate(flat.tolist())
    ]


def _from_image(source: ModelSource, path: Path) -> Example:
    """A picture of a digit: grey levels, resized to the model's 28x28 if it is not."""
    from dlcourse.data.mnist import normalize_images

    image = _decode_image(path)  # (H, W) uint8
    notes = []
    height, width = source.input_shape[-2:]
    if tuple(image.shape) != (height, width):
        notes.append(
            f"{path.name} is {image.shape[1]}x{image.shape[0]}: resized to {width}x{height}"
        )
        image = (
            torch.nn.functional.interpolate(
                image[None, None].float(), size=(height, width), mode="area"
            )[0, 0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    if float(image.float().mean()) > 127:
        notes.append(
            f"{path.name} is mostly light: MNIST digits are light strokes on a dark background, "
            "so a dark-on-light drawing looks like no digit the model has seen (invert it)"
        )
    x = normalize_images(image[None], source.preprocess)
    return Example(x, str(path), _pixel_values(source, x), notes=notes)


def _decode_image(path: Path) -> torch.Tensor:
    # Pillow (matplotlib's image library): torchvision's decoders are deprecated from 0.29.
    from PIL import Image, UnidentifiedImageError

    raw = read_bounded(path, IMAGE_LIMIT, "image")
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            if picture.width * picture.height > MAX_PIXELS:
                raise UserError(
                    f"{path}: {picture.width}x{picture.height} pixels is far larger than a "
                    "digit needs; crop or shrink it"
                )
            grey = picture.convert("L")  # grey levels 0-255
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
    pixels = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8)
    return pixels.view(grey.height, grey.width)
