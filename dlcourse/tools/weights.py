"""`dlcourse weights`: a trained model's weights as numbers, or exported to a weights file;
the weights files themselves; and `open_source`, the model of a run folder or of a config
with a weights file, which `forward` and `gradcheck` use.

The export is the file `dlcourse forward --weights` reads: edit one weight, pass the same
example through, and see what changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml
from torch import nn

from dlcourse.config import load_config
from dlcourse.config.sections import BIG
from dlcourse.config.source import TooDeep, check_nesting, compose, duplicate_keys
from dlcourse.data import load_task_data
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded, write_atomic, write_text_atomic
from dlcourse.models import build_model
from dlcourse.tools.trained import TrainedRun, open_run
from dlcourse.training.checkpoint import DataInfo


@dataclass
class TensorNumbers:
    name: str  # layer.tensor, e.g. fc1.weight
    shape: list[int]
    values: Any  # nested lists: one row per unit for a weight matrix
    mean: float
    std: float
    min: float
    max: float


@dataclass
class WeightsResult:
    source: str
    tensors: list[TensorNumbers]
    written: str | None = None  # the file the weights were exported to


def model_weights(
    run_dir: Path, *, checkpoint: str = "kept", layer: str | None = None, out: Path | None = None
) -> WeightsResult:
    """The weights of a run's checkpoint (one layer's, or every layer's), or export them."""
    if out is not None:
        check_suffix(out)
        if layer is not None:
            raise UserError(
                "--layer picks what to print; --out exports every layer (forward needs them all)"
            )
    opened = open_run(run_dir, checkpoint)
    layers = layer_tensors(opened.model)
    if layer is not None and layer not in layers:
        raise UserError(
            f"--layer {layer}: the model has no layer {layer!r} with weights; its layers with "
            f"weights are {', '.join(layers)}"
        )
    source = opened.label
    written = None
    if out is not None:
        write_weights(opened.model, out, source)
        written = str(out)
    tensors = [
        _numbers(f"{name}.{key}", tensor)
        for name, named in layers.items()
        if layer is None or name == layer
        for key, tensor in named.items()
    ]
    return WeightsResult(source, tensors, written)


def _numbers(name: str, tensor: Any) -> TensorNumbers:
    values = tensor.double()
    spread = float(values.std()) if values.numel() > 1 else 0.0
    return TensorNumbers(
        name, list(tensor.shape), tensor.tolist(), float(values.mean()), spread,
        float(values.min()), float(values.max()),
    )  # fmt: skip


# ------------------------------------------------------------------ weights files

WEIGHTS_LIMIT = 256 * 2**20  # bytes: the course's largest model is a few MB of text
# A weights file is read only up to what a file of its model can hold: this many characters a
# value (the export writes at most 16: "-1.2345678e-05, ") and room for comments and names.
# Parsing is what costs (60 MB of YAML took 97 s and 6 GB), so the size is checked first.
CHARS_PER_VALUE, CHARS_SPARE = 64, 2**16
MAX_DEPTH = 8  # levels of nesting: a layer, a tensor and up to 4 dimensions, with room
YAML_SUFFIXES = {".yaml", ".yml"}
SUFFIXES = (*sorted(YAML_SUFFIXES), ".safetensors")
HEADER = """\
# Weights of {source}, as `dlcourse forward --weights` reads them.
# One entry per layer, named as in the model. A weight matrix has one row per unit of the
# layer and one value per input: z_j = sum_i weight[j][i] * a_i + bias[j]. Conv kernels:
# one line per output channel, [input channel][row][column].
"""


def layer_tensors(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """The model's parameters and buffers by layer, in the model's order: {fc1: {weight, bias}}."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in model.state_dict().items():
        layer, _, name = key.partition(".")
        layers.setdefault(layer, {})[name] = tensor.detach().cpu()
    return layers


def check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(
            f"{path}: a weights file is {', '.join(SUFFIXES)}; name it with one of these endings"
        )


def write_weights(model: nn.Module, path: Path, source: str) -> None:
    """Write the model's weights to a new file (YAML or safetensors, by the file's ending)."""
    check_suffix(path)
    if path.exists():
        raise UserError(f"{path}: already exists; choose another file or remove it first")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        flat = {key: t.detach().cpu().contiguous() for key, t in model.state_dict().items()}
        data = save(flat)
        write_atomic(path, lambda file: _write_bytes(file, data))
        return
    write_text_atomic(path, weights_yaml(model, source))


def _write_bytes(file: IO[bytes], data: bytes) -> None:
    file.write(data)


def weights_yaml(model: nn.Module, source: str) -> str:
    lines = [HEADER.format(source=source)]
    for layer, tensors in layer_tensors(model).items():
        lines.append(f"{layer}:")
        for name, tensor in tensors.items():
            texts, shape = number_texts(tensor), tuple(tensor.shape)
            if len(shape) < 2:
                lines.append(f"  {name}: {_flow(texts, shape)}")
                continue
            lines.append(f"  {name}:")
            per_unit = len(texts) // shape[0]
            lines += [
                f"  - {_flow(texts[j * per_unit : (j + 1) * per_unit], shape[1:])}"
                for j in range(shape[0])
            ]  # one line per unit
    return "\n".join(lines) + "\n"


def _flow(texts: list[str], shape: tuple[int, ...]) -> str:
    """Values (flat, row-major) of a tensor of this shape in YAML flow style: 1.5, [1.5, -2.0]
    or [[...], [...]]."""
    if not shape:
        return texts[0]
    step = len(texts) // shape[0] if shape[0] else 0
    parts = (_flow(texts[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0]))
    return "[" + ", ".join(parts) + "]"


def number_texts(tensor: torch.Tensor) -> list[str]:
    """Every value of the tensor (flat, row-major) as YAML text that reads back exactly.

    float32 values get the fewest digits that read back as the same float32 (numpy's shortest
    representation; the rare one that a double's rounding would change keeps all its digits).
    """
    flat = tensor.detach().cpu().flatten()
    if not flat.is_floating_point():
        return [str(value) for value in flat.tolist()]
    values = flat.float().numpy()
    texts = [str(value) for value in values]  # shortest float32 text
    exact = np.array(texts, dtype=np.float64).astype(np.float32)
    for i in np.flatnonzero((exact != values) & np.isfinite(values)):
        texts[i] = repr(float(values[i]))
    return [_yaml_float(text) for text in texts]


def _yaml_float(text: str) -> str:
    """Numpy's text of a float as YAML 1.1 reads a float: 1e-08 -> 1.0e-08, inf -> .inf."""
    if text in ("inf", "-inf", "nan"):
        return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}[text]
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def read_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The file's tensors as a state dict for the model; UserError naming the layer at fault."""
    check_suffix(path)
    expected = layer_tensors(model)
    values = sum(t.numel() for tensors in expected.values() for t in tensors.values())
    limit = WEIGHTS_LIMIT
    if path.suffix.lower() in YAML_SUFFIXES:
        limit = min(limit, values * CHARS_PER_VALUE + CHARS_SPARE)
        size = path.stat().st_size if path.is_file() else 0  # (read_bounded reports the rest)
        if size > limit:
            raise UserError(
                f"{path}: {size:,} bytes, more than a weights file of this model can need "
                f"({values:,} values, at most {CHARS_PER_VALUE} characters each, with "
                f"comments: {limit:,} bytes); is it for another model?"
            )
    else:  # safetensors: 4 or 8 bytes a value and a header (a run's metadata: names, config)
        limit = min(limit, values * 8 + 16 * 2**20)
    raw = read_bounded(path, limit, "weights file")
    if path.suffix.lower() == ".safetensors":
        found = _read_safetensors(path, raw)
        return _check_tensors(path, found, expected)
    layers = _parse_yaml(path, raw)
    _check_names(path, set(layers), list(expected), "layer", "the model")
    state = {}
    for layer, tensors in expected.items():
        given = layers[layer]
        if not isinstance(given, dict):
            raise UserError(
                f"{path}: {layer}: expected its tensors ({', '.join(tensors)}), found "
                f"{_describe(given)}"
            )
        _check_names(path, set(given), list(tensors), "tensor", f"layer {layer}")
        for name, like in tensors.items():
            state[f"{layer}.{name}"] = _tensor(path, f"{layer}.{name}", given[name], like)
    return state


def _check_names(path: Path, given: set[Any], expected: list[str], what: str, owner: str) -> None:
    missing = [name for name in expected if name not in given]
    unknown = sorted(str(name) for name in given if name not in expected)
    if missing:
        raise UserError(
            f"{path}: {what} {', '.join(missing)} missing ({owner} has {', '.join(expected)})"
        )
    if unknown:
        raise UserError(
            f"{path}: {what} {', '.join(unknown)} is not in {owner} (it has "
            f"{', '.join(expected)}); is the file for another model?"
        )


def _parse_yaml(path: Path, raw: bytes) -> dict[Any, Any]:
    """safe-load the YAML (with config.source's SAFE_LOADER) after checking, event by event,
    that it nests no deeper than MAX_DEPTH (PyYAML's composer recurses, and crashes on deep
    nesting); a layer or tensor given twice is refused with its line. Aliases are harmless
    here: loading shares their values instead of copying them, and each tensor is read only
    as far as its expected shape goes, so no alias "bomb" is ever expanded."""
    try:
        text = raw.decode("utf-8")
        check_nesting(text, MAX_DEPTH)
        root = compose(text)
        duplicates = duplicate_keys(root) if root is not None else []
        if duplicates:  # YAML would keep the second silently
            key, message = duplicates[0]
            raise UserError(f"{path}: {key}: {message}")
        data = _construct(root) if root is not None else None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read the weights file ({exc})") from None
    except TooDeep as exc:
        raise UserError(
            f"{path}:{exc.line}: nested deeper than {MAX_DEPTH} levels; a weights file has "
            "layers, their tensors and the tensors' rows"
        ) from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of 5,000 digits
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable YAML weights file ({first})") from None
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a weights file maps each layer name to its tensors (fc1: {{weight: ..., "
            f"bias: ...}}), not {_describe(data)}"
        )
    return data


def _construct(node: yaml.Node) -> Any:
    """The plain data of a composed node, with PyYAML's safe constructors (a tag that builds
    a Python object is a yaml.YAMLError)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _tensor(path: Path, key: str, value: Any, like: torch.Tensor) -> torch.Tensor:
    """The nested lists of one tensor, checked against its expected shape, as a tensor."""
    level, where = [value], [key]
    for size in like.shape:  # breadth first, one dimension at a time
        items, places = [], []
        for item, place in zip(level, where, strict=True):
            if not isinstance(item, list) or len(item) != size:
                raise UserError(
                    f"{path}: {place}: expected {size} values (shape of {key}: "
                    f"{tuple(like.shape)}), found {_describe(item)}"
                )
            items += item
            places += [f"{place}[{i}]" for i in range(size)]
        level, where = items, places
    for item, place in zip(level, where, strict=True):
        integer = isinstance(item, int) and not isinstance(item, bool)
        if not (integer or isinstance(item, float)):
            raise UserError(f"{path}: {place}: {_describe(item)} is not a number")
        if integer and abs(item) > 2**62:  # before float(): 10**400 would overflow it
            raise UserError(f"{path}: {place}: a whole number of {len(str(abs(item))):,} digits; "
                            f"a weight is within +-{BIG:g}")  # fmt: skip
        if like.is_floating_point() and not (math.isfinite(item) and abs(item) <= BIG):
            raise UserError(f"{path}: {place}: {item} is not a finite number within +-{BIG:g}")
        if not like.is_floating_point() and not (integer and 0 <= item <= 2**62):
            raise UserError(f"{path}: {place}: {item} is not a count (a whole number >= 0)")
    return torch.tensor(level, dtype=like.dtype).reshape(like.shape)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _read_safetensors(path: Path, raw: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None


def _check_tensors(
    path: Path, found: dict[str, torch.Tensor], expected: dict[str, dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    keys = [f"{layer}.{name}" for layer, tensors in expected.items() for name in tensors]
    _check_names(path, set(found), keys, "tensor", "the model")
    for key in keys:
        layer, _, name = key.partition(".")
        like, given = expected[layer][name], found[key]
        if given.shape != like.shape or given.dtype != like.dtype:
            raise UserError(
                f"{path}: {key}: expected {like.dtype} of shape {tuple(like.shape)}, found "
                f"{given.dtype} of shape {tuple(given.shape)}"
            )
        if like.is_floating_point() and not bool(given.isfinite().all()):
            raise UserError(f"{path}: {key}: has values that are not finite numbers")
    return found


def load_weights_file(path: Path, model: nn.Module) -> None:
    """Put the file's weights into the model (after every check has passed)."""
    state = read_weights(path, model)
    model.load_state_dict(state)


# ------------------------------------------------------------------ a model from a weights file


def open_source(
    source: Path,
    *,
    data_dir: Path,
    weights: Path | None = None,
    overrides: list[str] | None = None,
    checkpoint: str = "kept",
    need_weights: bool = True,
) -> TrainedRun:
    """A run folder (its weights, or --weights in their place) or a config with --weights.

    need_weights=False lets a config stand alone with the seeded initialization it trains from.
    """
    if source.is_dir():
        if overrides:
            raise UserError(
                f"{source}: --set changes a config; a run folder keeps the config its weights "
                "were trained with (give the config file instead)"
            )
        run = open_run(source, checkpoint)
        if weights is not None:
            load_weights_file(weights, run.model)
            run.label, run.epoch, run.weights = f"{source} with {weights}", None, str(weights)
        return run
    if not source.is_file():
        raise UserError(f"{source}: no such run folder or config file")
    if weights is None and need_weights:
        raise UserError(
            f"{source}: a config holds no trained weights; give --weights FILE (typed in, or "
            "written by `dlcourse weights RUN_DIR --out FILE`), or a run folder instead"
        )
    cfg = load_config(source, overrides or [])
    data = load_task_data(cfg, data_dir)
    torch.manual_seed(cfg.seed)  # the initialization training would start from
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    label = f"{source} (initialized with seed {cfg.seed})"
    if weights is not None:
        load_weights_file(weights, model)
        label = f"{source} with {weights}"
    model.eval()
    info = DataInfo.model_validate(data.info())
    return TrainedRun(cfg, model, info, None, label, _data=data)
