"""MNIST from the four IDX files in `<data_dir>/MNIST/raw/` (torchvision's layout).

The files are read straight into uint8 tensors: no PIL image per sample, no DataLoader. The
reader is written here, not taken from torchvision, because torchvision's reader fails on a
bad file with a bare assertion while a student needs to hear which file is wrong and how; it
also keeps torchvision's 1.7 s import off the training path. torchvision is used for what it
does well: downloading the files when they are missing. The images' augmentation (random
shifts and rotations of a whole batch on its device) is here too.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dlcourse.config import Config
from dlcourse.data import SplitData, TaskData, split_rows
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions
CLASS_NAMES = [str(digit) for digit in range(10)]
IDX_LIMIT = 128 * 2**20  # bytes; MNIST's largest file is 47 MB


def load(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    """The 60,000 training images divided into train/dev, and the official 10,000 as test."""
    images, labels = load_mnist(data_dir, "train")
    test_images, test_labels = load_mnist(data_dir, "test")
    if cfg.data.limit:
        images, labels = images[: cfg.data.limit], labels[: cfg.data.limit]
        test_images, test_labels = test_images[: cfg.data.limit], test_labels[: cfg.data.limit]
    source = f"{raw_dir(data_dir)}/"
    parts = split_rows(cfg, len(labels), labels, saved, source)
    if saved is None:
        preprocess = {"kind": "image", **pixel_statistics(images[parts["train"]])}
        if preprocess["std"] == 0:
            raise UserError(
                f"{source}: every training image has the same pixels; these are not MNIST images"
            )
        if not cfg.data.normalize:  # raw pixels, only scaled to [0, 1]
            preprocess.update(mean=0.0, std=1.0)
    else:
        preprocess = saved["preprocess"]
    parts_data = {
        name: (images[rows], labels[rows], rows) for name, rows in parts.items() if name != "test"
    }
    parts_data["test"] = (test_images, test_labels, torch.arange(len(test_labels)))
    splits = {
        name: SplitData(normalize_images(x, preprocess), y, rows)
        for name, (x, y, rows) in parts_data.items()
        if len(y)
    }
    return TaskData(
        task="mnist",
        kind="multiclass",
        splits=splits,
        input_shape=(1, 28, 28),
        n_outputs=10,
        feature_names=[],
        class_names=CLASS_NAMES,
        preprocess=preprocess,
        source=f"{source}; test: the official t10k files",
    )


def pixel_statistics(images: torch.Tensor) -> dict[str, float]:
    """Mean and std of uint8 pixels (scaled to [0, 1]), exactly, from a 256-bin histogram:
    no float copy of the images is made."""
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1)
    return {"mean": float(mean), "std": float(variance.sqrt())}


def normalize_images(images: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardized with the training statistics
    (mean 0 and std 1 when data.normalize is false: pixel / 255)."""
    # (pixel / 255 - mean) / std, as one multiply-add over the float copy
    scale = 1 / (255 * preprocess["std"])
    x = images.float().mul_(scale).sub_(preprocess["mean"] / preprocess["std"])
    return x.unsqueeze(1)


def raw_dir(data_dir: Path) -> Path:
    return data_dir / "MNIST" / "raw"


def load_mnist(data_dir: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the 'train' or 'test' files."""
    folder = raw_dir(data_dir)
    ensure_files(folder)
    image_file, label_file = (folder / name for name in FILES[part])
    images = read_idx(image_file, IMAGE_MAGIC)
    labels = read_idx(label_file, LABEL_MAGIC).long()
    if tuple(images.shape[1:]) != (28, 28):
        raise UserError(
            f"{image_file}: holds {images.shape[1]}x{images.shape[2]} images; MNIST's are 28x28"
        )
    if len(images) == 0:
        raise UserError(f"{image_file}: holds 0 images; MNIST's files hold 60,000 and 10,000")
    if len(images) != len(labels):
        raise UserError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} "
            "labels; the two files must come from the same set"
        )
    if len(labels) and int(labels.max()) > 9:
        raise UserError(f"{label_file}: label {int(labels.max())} is not a digit 0-9")
    return images, labels


def read_idx(path: Path, magic: int) -> torch.Tensor:
    """An IDX file of unsigned bytes as a tensor of its declared shape, after checking it."""
    raw = read_bounded(path, IDX_LIMIT, "MNIST IDX file")
    ndim = magic - 0x800
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: {len(raw)} bytes is too short for an IDX file (empty or cut off)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise UserError(
            f"{path}: wrong magic number {found} (expected {magic} for MNIST {kind}); "
            "is it the right file, and uncompressed (not .gz)?"
        )
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise UserError(
            f"{path}: the header declares shape {tuple(shape)} ({expected} bytes) but the file "
            f"has {len(raw)} bytes; it is truncated or corrupt, download it again"
        )
    if expected == header:  # no values: frombuffer refuses an empty view
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(shape)


def ensure_files(folder: Path) -> None:
    """Make sure the four files exist, downloading them through torchvision when online."""
    missing = [name for pair in FILES.values() for name in pair if not (folder / name).exists()]
    if not missing:
        return
    root = folder.parent.parent
    made = [path for path in (root, root / "MNIST", folder) if not path.exists()]
    try:
        download(root)
    except Exception as exc:  # any network or archive failure means: do it by hand
        for path in reversed(made):  # leave no empty folders behind a mistyped --data-dir
            with contextlib.suppress(OSError):
                path.rmdir()
        reason = (str(exc).strip().splitlines() or [""])[0][:120].rstrip(":")
        raise UserError(
            f"MNIST is not in {folder}/ (missing: {', '.join(missing)}) and downloading it "
            f"failed ({type(exc).__name__}: {reason}).\n"
            f"Offline, put the four uncompressed IDX files (train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) in "
            f"{folder}/, or point --data-dir (or DLCOURSE_DATA_DIR) at a folder that has "
            "MNIST/raw/ with them."
        ) from None
    still_missing = [
        name for pair in FILES.values() for name in pair if not (folder / name).exists()
    ]
    if still_missing:
        raise UserError(f"downloading MNIST left {', '.join(still_missing)} missing in {folder}/")


def download(root: Path) -> None:
    """torchvision's MNIST download: fetches and extracts the files into root/MNIST/raw/."""
    from torchvision.datasets import MNIST  # imported only when needed: it takes 1.7 s

    for train in (True, False):
        MNIST(root=str(root), train=train, download=True)


# ------------------------------------------------------------------ from augment.py


def augment_images(
    images: torch.Tensor, shift: int, rotate: float, generator: torch.Generator
) -> torch.Tensor:
    """Shift each image by up to `shift` pixels and rotate it by up to `rotate` degrees.

    Every image gets its own random transform, applied to the batch (B, C, H, W) in one
    affine_grid + grid_sample call; the random numbers come from the given (CPU) generator so
    that a seeded run, and a resumed one, sees the same transforms.
    """
    batch, _, height, width = images.shape
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(rotate)
    offset = torch.randint(-shift, shift + 1, (batch, 2), generator=generator).float()
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = angle.cos()
    theta[:, 0, 1], theta[:, 1, 0] = -angle.sin(), angle.sin()
    theta[:, 0, 2] = offset[:, 0] * 2 / width  # grid coordinates span [-1, 1]
    theta[:, 1, 2] = offset[:, 1] * 2 / height
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    # Pixels shifted in from outside take the background value (the image's minimum).
    background = images.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(images - background, grid, align_corners=False) + background
