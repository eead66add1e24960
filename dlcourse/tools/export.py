"""`dlcourse export`: a trained model as one file to use elsewhere.

- `safetensors`: the weights with what they mean (config, data description, preprocessing),
  the format of a run's model.safetensors, which every dlcourse command that takes a model
  reads (`dlcourse predict FILE.safetensors ...`) and which cannot run code when loaded.
- `onnx`: the network for ONNX Runtime or any other ONNX runtime, without torch or dlcourse.
  It takes the inputs as the model sees them (features scaled as the run scaled them) and
  returns its raw outputs; the file's metadata (`dlcourse.*` keys) holds the preprocessing,
  the class names and what the outputs mean. torch.onnx writes it (its dynamo exporter:
  onnx and onnxscript, the `onnx` extra); when onnxruntime is installed the file is run on
  random inputs and its outputs compared with torch's.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import path_text, write_bytes_atomic
from dlcourse.tools.trained import TrainedRun, open_run, open_trained, refuse_training_file
from dlcourse.training.checkpoint import save_weights

FORMATS = {"onnx": ".onnx", "safetensors": ".safetensors"}
CHECK_EXAMPLES = 16  # random inputs the ONNX file is checked on
ONNX_EXTRA = "pip install 'dlcourse[onnx]' (onnx, onnxscript and onnxruntime)"
OUTPUTS = {
    "multiclass": "one score (logit) per class; softmax gives the class probabilities",
    "binary": "one score (logit); sigmoid gives the probability of the second class",
    "regression": "the prediction, standardized: times preprocess.target.std plus "
    "preprocess.target.mean gives it in the target's units (where the run standardized it)",
}


@dataclass
class Exported:
    path: Path
    format: str
    weights: str  # which weights: "the kept weights (epoch 3, the best dev epoch)"
    replaced: bool  # the file was there before
    difference: float | None = None  # ONNX: largest |onnxruntime - torch| on random inputs
    checked_on: int = 0  # how many random inputs that was measured on


def export_model(source: Path, fmt: str | None, out: Path, checkpoint: str = "kept") -> Exported:
    """Write the model of a run folder (or of a model.safetensors) to `out` as `fmt`; None:
    the format `out`'s extension names (.onnx or .safetensors)."""
    if out.is_dir():
        raise UserError(f"--out {path_text(out)}: is a folder; give the file to write")
    fmt = export_format(fmt, out)
    run = open_trained(source) if checkpoint == "kept" else open_run(source, checkpoint)
    if run.folder is not None:
        refuse_training_file(out, run.folder.path)
    replaced = out.exists()
    if fmt == "safetensors":
        save_weights(out, record(run))
        return Exported(out, fmt, run.weights, replaced)
    difference, count = write_onnx(run, out)
    return Exported(out, fmt, run.weights, replaced, difference, count)


def export_format(fmt: str | None, out: Path) -> str:
    """The format to write: the one given, which `out`'s extension must agree with, or (None)
    the one the extension names."""
    if fmt is not None and fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    suffix = out.suffix.lower()
    if fmt is None:
        named = [name for name, ending in FORMATS.items() if ending == suffix]
        if not named:
            raise UserError(
                f"--out {path_text(out)}: end the file in .onnx (for ONNX Runtime) or "
                ".safetensors (for dlcourse); the format follows the extension"
            )
        return named[0]
    if suffix != FORMATS[fmt]:
        raise UserError(f"--out {path_text(out)}: {fmt} files end in {FORMATS[fmt]}")
    return fmt


def record(run: TrainedRun) -> dict[str, Any]:
    """The model as a checkpoint record (training.checkpoint.ModelCheckpoint's fields)."""
    from dlcourse.config import config_data

    return {
        "config": config_data(run.cfg),
        "data": run.info.model_dump(mode="json"),
        "epoch": run.epoch or 0,
        "model": run.model.state_dict(),
    }


def write_onnx(run: TrainedRun, out: Path) -> tuple[float | None, int]:
    """Export the network to ONNX, write it with its metadata, and compare onnxruntime's
    outputs with torch's (largest difference and the number of inputs; None without
    onnxruntime)."""
    try:
        import onnx  # noqa: F401  (torch.onnx's exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(f"--format onnx needs the onnx packages: {ONNX_EXTRA}") from None
    model = run.model.float().eval()
    example = torch.zeros(2, *run.input_shape)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():  # the exporter's notes on its internals, not the user's
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model, (example,), input_names=["input"], output_names=["outputs"],
                dynamic_shapes=({0: batch},), dynamo=True, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # the exporter raises many kinds: each means "cannot"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"{run.label}: torch.onnx could not export the model ({first})"
                            ) from None  # fmt: skip
    if program is None:  # only torch.onnx.export(..., f=path) returns nothing
        raise UserError(f"{run.label}: torch.onnx returned no ONNX program")
    proto = program.model_proto
    proto.doc_string = (
        f"dlcourse {run.cfg.task} model ({run.weights}); outputs: {OUTPUTS[run.kind]}"
    )
    for key, value in metadata(run).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    write_bytes_atomic(out, proto.SerializeToString())
    return compare_outputs(run, out)


def metadata(run: TrainedRun) -> dict[str, str]:
    """What a program needs to prepare inputs and read outputs, as ONNX metadata."""
    from dlcourse.version import __version__

    return {
        "dlcourse.version": __version__,
        "dlcourse.task": run.cfg.task,
        "dlcourse.kind": run.kind,
        "dlcourse.weights": run.weights,
        "dlcourse.input_shape": json.dumps(list(run.input_shape)),
        "dlcourse.feature_names": json.dumps(run.info.feature_names),
        "dlcourse.class_names": json.dumps(run.class_names),
        "dlcourse.preprocess": json.dumps(run.preprocess),
        "dlcourse.outputs": OUTPUTS[run.kind],
    }


def compare_outputs(run: TrainedRun, path: Path) -> tuple[float | None, int]:
    """The largest difference between onnxruntime's outputs and torch's on CHECK_EXAMPLES
    random inputs (None, 0 without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return None, 0
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(CHECK_EXAMPLES, *run.input_shape, generator=generator)
    with torch.no_grad():
        expected = run.model(x).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (found,) = session.run(["outputs"], {"input": x.numpy()})
    return float(abs(found - expected).max()), CHECK_EXAMPLES
