"""A picture of a digit made into an MNIST digit, so a model trained on MNIST can read it.

MNIST's digits were made from scans this way: the digit scaled to fit a 20x20 box keeping its
aspect ratio (anti-aliased, hence the grey edges), then placed in a 28x28 field so that its
centre of mass is the field's centre, light ink on a black background. A picture of any size
gets the same treatment, after being made to look like a scan: grayscale (transparent pixels
as white paper), inverted when the background is light, its contrast stretched from the
background's level to the darkest ink, and faint paper texture or shadows set to 0.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded

IMAGE_LIMIT = 50 * 2**20  # bytes: a phone photo is a few MB
PIXEL_LIMIT = 50_000_000  # a larger picture (a decompression bomb) is refused before decoding
FIELD, BOX = 28, 20  # MNIST: the digit fits a 20x20 box inside the 28x28 field
NOISE_FLOOR = 0.2  # after stretching, below this a pixel is paper, not ink
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(path: Path) -> list[Path]:
    """The image itself, or the PNG and JPEG files of a folder (sorted by name)."""
    if not path.is_dir():
        return [path]
    files = sorted(
        item for item in path.iterdir()
        if item.suffix.lower() in IMAGE_SUFFIXES and not item.name.startswith(".")
    )  # fmt: skip
    if not files:
        raise UserError(f"{path}: the folder has no PNG or JPEG files")
    return files


def read_grayscale(path: Path) -> torch.Tensor:
    """The picture's gray levels (H, W) in [0, 1]; UserError naming the file if it is not a
    readable image."""
    from PIL import Image, UnidentifiedImageError

    raw = read_bounded(path, IMAGE_LIMIT, "PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > PIXEL_LIMIT:
                raise UserError(
                    f"{path}: {image.width}x{image.height} pixels is far larger than a picture "
                    "of one digit needs; scale it down"
                )
            image.load()  # decodes now: a truncated file fails here
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (PNG or JPEG expected)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
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
