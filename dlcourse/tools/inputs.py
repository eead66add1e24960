"""What a student gives a trained model, turned into what its network sees: `forward`'s one
example and `predict`'s inputs, read by the same functions, so that the two commands see the
same numbers for the same input.

    --input children=2 --input accounts=3     (forward) a value per input column, by name
    --set children=2 --set accounts=3         (predict) the same
    --input 2,3                               (forward) a CSV row: the values in column order
    rows.csv                                  (predict) a CSV with the training columns
    --input test=12                           (forward) example 12 of a split
    digit.png, or a folder of pictures        a picture of a digit (MNIST models)

What an input is follows the model's saved preprocessing, not the task's name: a model of
images (`preprocess.kind: image`) reads pictures, made MNIST-like the way MNIST's digits were
made (the ink cropped, scaled into a 20x20 box, centred by its mass in the 28x28 field) and
standardized with the training pixel statistics; a model of tables (`preprocess.kind: table`)
reads values of the training columns, encoded by the saved TabularEncoder with the checks of
training's CSV reader: a missing column or an unseen category is refused, naming it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dlcourse.data import in_target_units
from dlcourse.data.mnist import normalize_images
from dlcourse.data.tabular import CSV_LIMIT, FLOAT32_MAX, Table, TabularEncoder, read_table
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.tools.trained import TrainedRun

IMAGE_LIMIT = 50 * 2**20  # bytes: a phone photo is a few MB
PIXEL_LIMIT = 50_000_000  # a larger picture (a decompression bomb) is refused before decoding
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")  # decoded by their content, whatever the file's name
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # what a folder of pictures is searched for
FIELD, BOX = 28, 20  # MNIST: the digit fits a 20x20 box inside the 28x28 field
NOISE_FLOOR = 0.2  # after stretching, below this a pixel is paper, not ink
_SPLIT_INDEX = re.compile(r"(train|dev|test)=(\d+)")


@dataclass
class InputValue:
    name: str  # the column (children, Geography), or the pixel (row 3, col 14)
    raw: str  # as given, or as it is in the data
    value: float  # what the network sees


@dataclass
class Example:
    """forward's one example."""

    x: torch.Tensor  # (1, *input_shape), preprocessed
    description: str
    values: list[InputValue]
    target: str | None = None  # the example's label or value, when it comes from the data
    notes: list[str] = field(default_factory=list)


@dataclass
class Inputs:
    """predict's inputs."""

    x: torch.Tensor  # (N, ...) preprocessed as in training
    names: list[str]  # what each input is: an image file, or "rows.csv line 3"
    header: list[str]  # the input's own columns, repeated in the CSV output
    cells: list[list[str]]  # the input's own cells, one list per input


def is_image_model(run: TrainedRun) -> bool:
    return run.preprocess.get("kind") == "image"


# ------------------------------------------------------------------ forward's example


def read_example(inputs: list[str], run: TrainedRun, data_dir: Path) -> Example:
    """Parse --input values into one preprocessed example; UserError saying what was expected."""
    if not inputs:
        raise UserError(f"give the example with --input ({expected(run)})")
    if len(inputs) == 1 and (match := _SPLIT_INDEX.fullmatch(inputs[0].strip())):
        split, digits = match.groups()
        if len(digits) > 18:  # int() refuses 4,300 digits; no split has 10**18 examples
            raise UserError(
                f"--input {split}=...: an index of {len(digits):,} digits is out of range; give "
                f"the number of an example of the {split} split"
            )
        return _from_data(run, data_dir, split, int(digits))
    looks_like_image = len(inputs) == 1 and Path(inputs[0]).suffix.lower() in IMAGE_SUFFIXES
    if is_image_model(run):
        if looks_like_image:
            x = read_digits(run, [Path(inputs[0])])
            return Example(x, inputs[0], _pixel_values(run, x), notes=[MNIST_LIKE])
        raise UserError(f"--input {inputs[0]!r}: expected {expected(run)}")
    if looks_like_image:
        raise UserError(f"--input {inputs[0]}: an image, but this model reads a table's columns: "
                        f"{expected(run)}")  # fmt: skip
    if len(inputs) == 1 and "=" not in inputs[0]:
        given = _from_row(run, inputs[0])
    else:
        given = named_values(inputs, run, "--input")
    x = encode_values(run, given, "--input")
    description = ", ".join(f"{name}={value}" for name, value in given.items())
    return Example(x, description, _encoded_values(run, x[0], given))


MNIST_LIKE = (
    "the picture was made MNIST-like as predict makes it: the ink cropped, scaled into a 20x20 "
    "box and centred in the 28x28 field"
)


def expected(run: TrainedRun) -> str:
    if is_image_model(run):
        return "an image file (.png, .jpg...) or a split and index such as test=12"
    columns = input_columns(run)
    named = " ".join(f"--input {name}=..." for name in columns)
    return f"{named}; or one CSV row of {', '.join(columns)}; or a split and index: test=12"


def input_columns(run: TrainedRun) -> list[str]:
    return [*run.preprocess["numeric"], *run.preprocess["categorical"]]


def _from_row(run: TrainedRun, row: str) -> dict[str, str]:
    columns = input_columns(run)
    cells = next(csv.reader(io.StringIO(row)), [])
    if len(cells) != len(columns):
        raise UserError(
            f"--input {row!r}: a CSV row of {len(cells)} values, but the model reads "
            f"{len(columns)}: {', '.join(columns)} (in this order)"
        )
    return dict(zip(columns, (cell.strip() for cell in cells), strict=True))


def _encoded_values(
    run: TrainedRun, features: torch.Tensor, given: dict[str, str] | None = None
) -> list[InputValue]:
    """Each feature the network sees, with its raw value (given, or undone from the data)."""
    mean, std = run.preprocess["mean"], run.preprocess["std"]
    values = []
    for i, name in enumerate(run.info.feature_names):
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


def _from_data(run: TrainedRun, data_dir: Path, split: str, index: int) -> Example:
    data = run.load_data(data_dir)
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
    if run.kind == "regression":
        target = f"{float(in_target_units(label.reshape(1).float(), run.preprocess)[0]):g}"
    else:
        target = run.class_names[int(label)]
    row = int(examples.rows[index])
    description = f"{split} example {index} (source row {row}, target {target})"
    if is_image_model(run):
        return Example(x, description, _pixel_values(run, x), target)
    return Example(x, description, _encoded_values(run, x[0]), target)


def _pixel_values(run: TrainedRun, x: torch.Tensor) -> list[InputValue]:
    mean, std = run.preprocess["mean"], run.preprocess["std"]
    flat = x.flatten()
    width = run.input_shape[-1]
    return [
        InputValue(f"pixel ({i // width}, {i % width})", f"{round((v * std + mean) * 255):d}", v)
        for i, v in enumerate(flat.tolist())
    ]


# ------------------------------------------------------------------ predict's inputs


def read_inputs(run: TrainedRun, path: Path | None, values: list[str]) -> Inputs:
    """Pictures (image models), or CSV rows or one row of --set values (table models)."""
    if is_image_model(run):
        if values:
            raise UserError("--set gives the columns of a table row; this model reads images")
        if path is None:
            raise UserError(
                "give INPUT: a PNG, JPEG or BMP picture of a digit, or a folder of them"
            )
        files = image_files(path)
        names = [str(file) for file in files]
        return Inputs(read_digits(run, files), names, ["file"], [[name] for name in names])
    if run.preprocess.get("kind") != "table":
        raise UserError(f"{run.file}: predict reads pictures and table rows; this model's "
                        f"inputs are {run.preprocess.get('kind')!r}")  # fmt: skip
    columns = input_columns(run)
    if path is not None and values:
        raise UserError("give INPUT (a CSV) or --set values, not both")
    if path is None and not values:
        raise UserError(
            f"give INPUT, a CSV with the columns {', '.join(columns)}, or one row as "
            f"--set COLUMN=VALUE for each of them"
        )
    if values:
        given = named_values(values, run, "--set")
        x = encode_values(run, given, "--set")
        return Inputs(x, ["--set values"], columns, [[given[name] for name in columns]])
    assert path is not None
    encoder = TabularEncoder.from_state_dict(run.preprocess)
    table = read_table(path, encoder.numeric, encoder.categorical)
    x = encoder.transform(table)  # an unseen category: UserError naming line and column
    header, rows = raw_rows(path)
    names = [f"{path} line {line}" for line in table.lines]
    return Inputs(x, names, header, [rows[line] for line in table.lines])


def raw_rows(path: Path) -> tuple[list[str], dict[int, list[str]]]:
    """The CSV's header and every row's cells by line number, as read_table numbers lines
    (it has already checked the file)."""
    text = read_bounded(path, CSV_LIMIT, "CSV file").decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader)]
    rows = {}
    for row in reader:
        rows[reader.line_num] = row  # the line the row ends on, as read_table counts
    return header, rows


# ------------------------------------------------------------------ one table row


def named_values(items: list[str], run: TrainedRun, option: str) -> dict[str, str]:
    """COLUMN=VALUE strings as {column: value}, every input column given exactly once."""
    columns = input_columns(run)
    given: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise UserError(f"{option} {item!r}: expected COLUMN=VALUE ({expected(run)})")
        if name not in columns:
            raise UserError(
                f"{option} {item!r}: the model has no input {name!r}; its inputs are "
                f"{', '.join(columns)}"
            )
        if name in given:
            raise UserError(f"{option} {name}: given twice ({given[name]!r} and {value.strip()!r})")
        given[name] = value.strip()
    missing = [name for name in columns if name not in given]
    if missing:
        raise UserError(
            f"{option}: missing {', '.join(missing)} (the model reads {', '.join(columns)})"
        )
    return given


def encode_values(run: TrainedRun, given: dict[str, str], option: str) -> torch.Tensor:
    """One row of raw column values -> the (1, F) features, as training transformed them."""
    encoder = TabularEncoder.from_state_dict(run.preprocess)
    numeric = {name: [parse_number(option, name, given[name])] for name in encoder.numeric}
    for name in encoder.categorical:
        known = encoder.categories[name]
        if given[name] not in known:
            raise UserError(
                f"{option} {name}={given[name]}: {given[name]!r} was not seen in training; "
                f"known values: {', '.join(known)}"
            )
    categorical = {name: [given[name]] for name in encoder.categorical}
    return encoder.transform(Table(Path(option), numeric, categorical, [1]))


def parse_number(option: str, name: str, text: str) -> float:
    if len(text) > 100:
        raise UserError(f"{option} {name}: a number of {len(text):,} characters")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{option} {name}={text}: {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise UserError(f"{option} {name}={text}: not a finite number within float32's range")
    return value


# ------------------------------------------------------------------ pictures of digits


def image_files(path: Path) -> list[Path]:
    """The image itself, or the pictures of a folder (sorted by name)."""
    if not path.is_dir():
        return [path]
    files = sorted(
        item for item in path.iterdir()
        if item.suffix.lower() in IMAGE_SUFFIXES and not item.name.startswith(".")
    )  # fmt: skip
    if not files:
        raise UserError(f"{path}: the folder has no PNG, JPEG or BMP files")
    return files


def read_digits(run: TrainedRun, files: list[Path]) -> torch.Tensor:
    """Pictures of digits as the network sees them (N, 1, H, W): made MNIST-like, then
    standardized as the training images were."""
    channels, height, width = run.input_shape
    if channels != 1 or height != width:
        raise UserError(f"{run.file}: pictures can be read for square grayscale models only")
    digits = []
    for file in files:
        try:
            digits.append(mnist_digit(read_grayscale(file), height, round(height * BOX / FIELD)))
        except ValueError as exc:
            raise UserError(f"{file}: {exc}") from None
    return normalize_images(torch.stack(digits), run.preprocess)


def read_grayscale(path: Path) -> torch.Tensor:
    """The picture's gray levels (H, W) in [0, 1]; UserError naming the file if it is not a
    readable PNG, JPEG or BMP (by its content: a file of another format is never decoded,
    whatever its name)."""
    from PIL import Image, UnidentifiedImageError

    raw = read_bounded(path, IMAGE_LIMIT, "PNG, JPEG or BMP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
            if image.width * image.height > PIXEL_LIMIT:
                raise UserError(
                    f"{path}: {image.width}x{image.height} pixels is far larger than a picture "
                    "of one digit needs; scale it down"
                )
            image.load()  # decodes now: a truncated file fails here
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: not a PNG, JPEG or BMP image ({describe_format(raw)}); dlcourse reads "
            "those three only"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{path}: far more pixels than a picture of one digit needs (a decompression "
            "bomb?); scale it down"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(
            f"{path}: cannot read the image, it is damaged or cut off ({exc})"
        ) from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        paper = Image.new("RGBA", image.size, "white")
        gray = Image.alpha_composite(paper, image.convert("RGBA")).convert("L")
    else:
        gray = image.convert("L")
    pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8)
    return pixels.view(gray.height, gray.width).float() / 255


# The first bytes of formats a picture is mistaken for, to say what the file really is.
SIGNATURES = {
    b"%!PS": "PostScript/EPS", b"\xc5\xd0\xd3\xc6": "EPS", b"GIF8": "GIF", b"RIFF": "WebP",
    b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF", b"<svg": "SVG", b"<?xml": "XML/SVG",
}  # fmt: skip


def describe_format(raw: bytes) -> str:
    for signature, name in SIGNATURES.items():
        if raw.startswith(signature):
            return f"its content is {name}"
    return "its content is no image format dlcourse reads"


def mnist_digit(gray: torch.Tensor, field: int = FIELD, box: int = BOX) -> torch.Tensor:
    """(H, W) gray levels in [0, 1] -> (field, field) uint8, the way MNIST digits were made.

    Raises ValueError when there is no ink (a picture of one flat colour).
    """
    ink = to_ink(gray)
    rows, columns = ink.any(1).nonzero().squeeze(1), ink.any(0).nonzero().squeeze(1)
    crop = ink[int(rows[0]) : int(rows[-1]) + 1, int(columns[0]) : int(columns[-1]) + 1]
    height, width = crop.shape
    scale = box / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    digit = F.interpolate(crop[None, None], size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].clamp(0, 1)  # fmt: skip
    # Place the centre of mass at the field's centre: pixel (14, 14) of 0..27, as in MNIST.
    total = digit.sum()
    centre_row = float((digit.sum(1) * torch.arange(size[0])).sum() / total)
    centre_column = float((digit.sum(0) * torch.arange(size[1])).sum() / total)
    top = min(max(round(field / 2 - centre_row), 0), field - size[0])
    left = min(max(round(field / 2 - centre_column), 0), field - size[1])
    canvas = torch.zeros(field, field)
    canvas[top : top + size[0], left : left + size[1]] = digit
    return (canvas * 255).round().to(torch.uint8)


def to_ink(gray: torch.Tensor) -> torch.Tensor:
    """Gray levels (H, W) -> ink (H, W) in [0, 1]: 0 paper, 1 the darkest ink."""
    if border_level(gray) > 0.5:  # a light background: dark ink on paper
        gray = 1 - gray
    background = border_level(gray)
    peak = float(gray.max())
    if peak - background < 1 / 255:
        raise ValueError("the picture is one flat colour: no digit to read")
    ink = ((gray - background) / (peak - background)).clamp(0, 1)
    return torch.where(ink >= NOISE_FLOOR, ink, torch.zeros_like(ink))


def border_level(gray: torch.Tensor) -> float:
    """The median gray level of the picture's outermost pixels: its background."""
    return float(torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).median())
