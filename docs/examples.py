"""Regenerate the command output the docs show: `make docs-examples`.

Every output block in the docs is included from a file in docs/snippets/ that this script
writes: it runs the documented commands, as shown, in a scratch folder (`configs/` linked to
the repository's, a fresh `runs/`), and writes each command line with its real output. A
command whose exit code is not the one the page says stops the script, so the docs cannot
quietly show what the code no longer does. docs/snippets/machine.md records where and when the
outputs were made; the pages include it next to their outputs.

It trains the three assignments and runs the six comparison sweeps, so it takes several
minutes (MNIST and churn need the real data: DLCOURSE_DATA_DIR, as the Makefile sets it).

    python docs/examples.py                 # every example
    python docs/examples.py forward_worked  # only these (and the runs they need)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNIPPETS = REPO / "docs" / "snippets"
COLUMNS = 130  # the terminal width the outputs are rendered for


@dataclass
class Step:
    command: str  # shell text, as shown; {name} is replaced by a saved run folder
    exit: int = 0  # the exit code the docs promise


@dataclass
class Example:
    name: str  # the snippet file: docs/snippets/<name>.txt
    steps: list[Step]
    save: str | None = None  # remember the run folder this makes, as {save}
    head: int | None = None  # keep only the first lines of the last step's output ...
    tail: int | None = None  # ... and its last lines ("..." between)
    needs: list[str] = field(default_factory=list)  # examples that make the runs it uses


def ex(name: str, *commands: str | Step, **options: object) -> Example:
    steps = [c if isinstance(c, Step) else Step(c) for c in commands]
    return Example(name, steps, **options)  # type: ignore[arg-type]


FORWARD_WORKED = (
    "dlcourse forward configs/examples/backprop_worked.yaml \\\n"
    "    --weights configs/examples/backprop_worked.weights.yaml "
    "--input children=2 --input accounts=3"
)
CUSTOMER = (
    "--input CreditScore=600 --input Geography=Germany \\\n    --input Gender=Female "
    "--input Age=48 --input Tenure=3 --input Balance=110000 \\\n    --input NumOfProducts=1 "
    "--input HasCrCard=1 --input IsActiveMember=0 \\\n    --input EstimatedSalary=90000"
)

EXAMPLES = [
    # ---- the three assignments, and the other shipped configs
    ex("train_transactions", "dlcourse train configs/transactions_regression.yaml",
       save="transactions"),
    ex("train_churn", "dlcourse train configs/churn_mlp.yaml", save="churn", head=3, tail=14),
    ex("train_mnist", "dlcourse train configs/mnist_cnn.yaml", save="mnist"),
    ex("data_make", "dlcourse data make house-prices --out data/house_prices.csv",
       "dlcourse data make spam --out data/spam.csv"),
    ex("train_house_prices", "dlcourse train configs/house_prices.yaml", tail=11,
       needs=["data_make"]),
    ex("train_spam", "dlcourse train configs/spam.yaml", tail=11, needs=["data_make"]),
    ex("train_xor", "dlcourse train configs/playground_xor.yaml", tail=11),
    ex("train_xor_linear", "dlcourse train configs/playground_xor_linear.yaml", tail=11),
    # ---- training: configs, what a run prints, resume
    ex("config_show", "dlcourse config show configs/transactions_regression.yaml"),
    ex("config_validate",
       Step("dlcourse config validate configs/churn_mlp.yaml --set train.epoch=5", exit=2),
       Step("dlcourse config validate configs/churn_mlp.yaml --set optim.name=sgd "
            "--set optim.betas=[0.9,0.99]", exit=2)),
    ex("train_kept", "dlcourse train configs/transactions_regression.yaml --set optim.lr=0.05 "
       "--set train.early_stopping.patience=5", tail=13),
    ex("train_last", "dlcourse train configs/transactions_regression.yaml --set optim.lr=0.05 "
       "--set train.early_stopping.patience=5 --set train.restore_best=false", tail=11),
    ex("train_diverged",
       Step("dlcourse train configs/transactions_regression.yaml --set optim.name=sgd "
            "--set optim.lr=5", exit=3)),
    ex("train_short", "dlcourse train configs/churn_mlp.yaml --set train.epochs=3 "
       "--name churn_short", save="short", tail=9),
    ex("train_resume", "dlcourse train --resume {short} --set train.epochs=5", head=4, tail=10,
       needs=["train_short"]),
    ex("summary_threads", 'grep -E \'"(threads|kept|kept_epoch)"\' {mnist}/summary.json',
       needs=["train_mnist"]),
    # ---- the lectures' numbers
    ex("forward_worked", FORWARD_WORKED),
    ex("forward_backward", f"{FORWARD_WORKED} \\\n    --target 13 --backward"),
    ex("forward_transactions",
       "dlcourse forward {transactions} --input children=3 --input accounts=5 --target 23",
       needs=["train_transactions"], tail=9),
    ex("forward_churn", f"dlcourse forward {{churn}} {CUSTOMER} \\\n    --target exited",
       needs=["train_churn"]),
    ex("forward_mnist", "dlcourse forward {mnist} --input test=0", needs=["train_mnist"],
       head=32, tail=20),
    ex("weights_layer", "dlcourse weights {churn} --layer out", needs=["train_churn"]),
    ex("weights_roundtrip", "dlcourse weights {churn} --out w.yaml", "head -7 w.yaml",
       "dlcourse forward {churn}/config.yaml --weights w.yaml --input test=0 --json > b.json",
       "dlcourse forward {churn} --input test=0 --json > a.json",
       Step("diff a.json b.json     # the same numbers; only the source differs", exit=1),
       needs=["train_churn"]),
    ex("gradcheck", "dlcourse gradcheck configs/mnist_cnn.yaml"),
    ex("validate_step",
       Step("dlcourse config validate configs/churn_mlp.yaml --set model.activation=step",
            exit=2)),
    ex("train_unnormalized", "dlcourse train configs/churn_mlp.yaml --set data.normalize=false",
       head=5, tail=12),
    ex("train_zeros", "dlcourse train configs/transactions_regression.yaml "
       "--set model.init=zeros --set train.epochs=3", head=8),
    ex("train_mnist_mlp", "dlcourse train configs/mnist_cnn.yaml --set model.conv=[] "
       "--set model.hidden=[128] --name mnist_mlp", tail=9),
    ex("train_perceptron", "dlcourse train configs/examples/perceptron.yaml", tail=9),
    # ---- using a run
    ex("evaluate_mnist", "dlcourse evaluate {mnist}", needs=["train_mnist"]),
    ex("evaluate_json", "dlcourse evaluate {mnist} --json", needs=["train_mnist"]),
    ex("evaluate_churn", "dlcourse evaluate {churn}", needs=["train_churn"]),
    ex("evaluate_transactions", "dlcourse evaluate {transactions} --split dev "
       "--checkpoint last", needs=["train_transactions"]),
    ex("predict_transactions",
       "dlcourse predict {transactions} --set children=3 --set accounts=5",
       needs=["train_transactions"]),
    ex("predict_churn", 'head -3 "$DLCOURSE_DATA_DIR/churn/Churn_Modelling.csv" > two.csv',
       "dlcourse predict {churn} two.csv", "dlcourse predict {churn} two.csv --json",
       needs=["train_churn"]),
    ex("visualize", "dlcourse visualize-activations {mnist}", needs=["train_mnist"]),
    ex("report", "dlcourse report {mnist}", needs=["train_mnist"]),
    # ---- experiments
    ex("overfit_batch", "dlcourse train configs/churn_mlp.yaml --overfit-batch"),
    ex("overfit_batch_small_lr",
       "dlcourse train configs/churn_mlp.yaml --overfit-batch --set optim.lr=1e-6"),
    ex("lr_find", "dlcourse lr-find configs/transactions_regression.yaml"),
    ex("sweep_learning_rate", "dlcourse sweep configs/experiments/learning_rate.sweep.yaml",
       tail=10),
    ex("sweep_batch_size", "dlcourse sweep configs/experiments/batch_size.sweep.yaml", tail=10),
    ex("sweep_optimizers", "dlcourse sweep configs/experiments/optimizers.sweep.yaml", tail=12),
    ex("sweep_activations", "dlcourse sweep configs/experiments/activations.sweep.yaml",
       tail=10),
    ex("sweep_regularization", "dlcourse sweep configs/experiments/regularization.sweep.yaml",
       tail=11),
    ex("sweep_split", "dlcourse sweep configs/experiments/split.sweep.yaml", tail=9),
    ex("runs", "dlcourse runs runs/optimizers --sort dev", needs=["sweep_optimizers"]),
    ex("diagnose", "dlcourse diagnose runs/regularization/none-*",
       needs=["sweep_regularization"]),
    ex("export_onnx", "dlcourse export {mnist} --out mnist.onnx", "python onnx_example.py",
       needs=["train_mnist"]),
    ex("environment", "cat {mnist}/environment.json", needs=["train_mnist"]),
    # ---- loss landscapes, seeds, distribution shift, the hidden space (lectures-landscape.md)
    ex("train_xor_seed0", "dlcourse train configs/playground_xor.yaml --set data.seed=0 "
       "--set seed=0 --name xor_seed0", save="xor_a", tail=3),
    ex("train_xor_seed1", "dlcourse train configs/playground_xor.yaml --set data.seed=0 "
       "--set seed=1 --name xor_seed1", save="xor_b", tail=3),
    ex("split_same", "cmp {xor_a}/split.pt {xor_b}/split.pt && echo the same split",
       needs=["train_xor_seed0", "train_xor_seed1"]),
    ex("landscape_xor", "dlcourse landscape {xor_a} --other {xor_b}",
       needs=["train_xor_seed0", "train_xor_seed1"]),
    ex("train_france", "dlcourse train configs/experiments/churn_france.yaml", save="france",
       head=2, tail=3),
    ex("evaluate_france", "dlcourse evaluate {france} --json",
       "dlcourse evaluate {france} --where Geography=Germany --json",
       "dlcourse evaluate {france} --where Geography=Spain --json",
       "dlcourse evaluate {france} --where Geography=Germany", head=18, needs=["train_france"]),
    ex("predict_france", 'head -4 "$DLCOURSE_DATA_DIR/churn/Churn_Modelling.csv" > three.csv',
       "dlcourse predict {france} three.csv", needs=["train_france"]),
    ex("hidden_space_xor", "dlcourse visualize-activations {xor_a} --hidden-space --split train",
       needs=["train_xor_seed0"]),
    ex("hidden_space_churn", "dlcourse visualize-activations {churn} --hidden-space",
       needs=["train_churn"]),
    # ---- set-up
    ex("doctor", "dlcourse doctor"),
    ex("init", "dlcourse init course"),
    # ---- the notebook API
    ex("notebook", "python notebook_example.py"),
]  # fmt: skip

NOTEBOOK_EXAMPLE = """\
import dlcourse

run = dlcourse.train(
    "configs/transactions_regression.yaml", overrides={"optim.lr": 0.02}, quiet=True
)
print(run)
print(run.summary.kept, run.summary.kept_epoch, run.summary.test)
print(run.history["dev.loss"])
print(run.model)
print(run.evaluate("test").metrics)
print(run.predict({"children": 3, "accounts": 5}).records())
"""


# The exported MNIST model used from plain Python: numpy and onnxruntime, no torch, no dlcourse.
ONNX_EXAMPLE = """\
import json
import os

import numpy as np
import onnxruntime

session = onnxruntime.InferenceSession("mnist.onnx")
meta = session.get_modelmeta().custom_metadata_map
scale = json.loads(meta["dlcourse.preprocess"])  # {"kind": "image", "mean": ..., "std": ...}
classes = json.loads(meta["dlcourse.class_names"])

# the first five test digits, from MNIST's own file (16 bytes of header, then 28x28 bytes each)
path = os.path.expandvars("$DLCOURSE_DATA_DIR/MNIST/raw/t10k-images-idx3-ubyte")
pixels = np.fromfile(path, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:5]
x = ((pixels / 255 - scale["mean"]) / scale["std"]).astype(np.float32)

(logits,) = session.run(None, {"input": x})
p = np.exp(logits - logits.max(axis=1, keepdims=True))
p /= p.sum(axis=1, keepdims=True)
for i, row in enumerate(p):
    print(f"test {i}: {classes[row.argmax()]} ({row.max():.2%})")
"""
SCRIPTS = {"notebook_example.py": NOTEBOOK_EXAMPLE, "onnx_example.py": ONNX_EXAMPLE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these examples (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    by_name = {example.name: example for example in EXAMPLES}
    unknown = [name for name in args.names if name not in by_name]
    if unknown:
        sys.exit(f"unknown example(s): {', '.join(unknown)}; known: {', '.join(by_name)}")
    chosen = wanted(args.names or list(by_name), by_name)
    scratch = Path(tempfile.mkdtemp(prefix="dlcourse-docs-"))
    (scratch / "configs").symlink_to(REPO / "configs")
    for name, script in SCRIPTS.items():
        (scratch / name).write_text(script, encoding="utf-8")
    SNIPPETS.mkdir(exist_ok=True)
    env = environment()
    saved: dict[str, str] = {}
    started = time.perf_counter()
    for example in EXAMPLES:
        if example.name in chosen:
            run_example(example, scratch, env, saved)
    for name, script in SCRIPTS.items():
        (SNIPPETS / name).write_text(script, encoding="utf-8")
    (SNIPPETS / "machine.md").write_text(machine_note(), encoding="utf-8")
    print(f"{len(chosen)} examples in {time.perf_counter() - started:.0f} s; scratch: {scratch}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def wanted(names: list[str], by_name: dict[str, Example]) -> set[str]:
    chosen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo += by_name[name].needs
    return chosen


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = str(COLUMNS)
    env.pop("TERMINAL_WIDTH", None)
    if not env.get("DLCOURSE_DATA_DIR"):
        shared = REPO.parent / "shared" / "data"
        env["DLCOURSE_DATA_DIR"] = str(shared if shared.is_dir() else REPO / "data")
    return env


def run_example(example: Example, scratch: Path, env: dict[str, str], saved: dict[str, str]
                ) -> None:  # fmt: skip
    shown = []
    started = time.perf_counter()
    for step in example.steps:
        command = step.command.format(**saved)
        done = subprocess.run(["bash", "-c", command], cwd=scratch, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        output = done.stdout
        if done.returncode != step.exit:
            sys.exit(f"{example.name}: `{command}` exited {done.returncode}, the docs say "
                     f"{step.exit}; its output:\n{output}")  # fmt: skip
        if example.save and step is example.steps[-1]:
            found = re.search(r"run folder: (runs/\S+)", output)
            if not found:
                sys.exit(f"{example.name}: no run folder in the output of `{command}`")
            saved[example.save] = found.group(1)
        lines = output.rstrip("\n").splitlines()
        if step is example.steps[-1]:
            lines = trimmed(lines, example.head, example.tail)
        shown += [f"$ {command}", *lines]
    text = "\n".join(line.rstrip() for line in shown) + "\n"
    (SNIPPETS / f"{example.name}.txt").write_text(text, encoding="utf-8")
    print(f"{example.name}: {time.perf_counter() - started:.1f} s", flush=True)


def trimmed(lines: list[str], head: int | None, tail: int | None) -> list[str]:
    if head is None and tail is None:
        return lines
    first, last = head or 0, tail or 0
    if first + last >= len(lines):
        return lines
    return [*lines[:first], "...", *(lines[-last:] if last else [])]


def machine_note() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    versions = ", ".join(
        f"{package} {metadata.version(package)}" for package in ("dlcourse", "torch")
    )
    return (
        f"The outputs on this page are real: `make docs-examples` (docs/examples.py) ran "
        f"these commands on {date.today().isoformat()}, on {cpu} ({os.cpu_count()} cores, {gpu}), "
        f"{platform.system()}, Python {platform.python_version()}, {versions}. "
        "Times are that machine's on that day; a few digits of some results depend on the "
        "CPU and its thread count (see [Speed](speed.md#threads)).\n"
    )


if __name__ == "__main__":
    main()
