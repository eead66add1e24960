"""Issue 20, classes 6, 12, 13 and 15: inputs from someone else (a CSV, a weights file, a
model.safetensors, a checkpoint, command-line numbers, Python values given to the API) are
bounded and checked before they cost anything, and refused with exit 2 (or dlcourse's own
exception) naming the file and the key, column, option or tensor at fault: never a traceback,
a hang, a huge allocation or a silently wrong prediction."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import dlcourse
from dlcourse.cli import app
from dlcourse.config import validate_config
from dlcourse.data import load_task_data
from dlcourse.errors import ConfigError, UserError
from tests.conftest import CHURN_HEADER, QUIET, REPO, churn_rows, write_csv

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
CUSTOMER = [
    "CreditScore=600", "Age=45", "Tenure=3", "Balance=80000", "NumOfProducts=2", "HasCrCard=1",
    "IsActiveMember=0", "EstimatedSalary=50000", "Geography=Germany", "Gender=Male",
]  # fmt: skip
WORKED = REPO / "configs" / "examples" / "backprop_worked.yaml"
WORKED_WEIGHTS = REPO / "configs" / "examples" / "backprop_worked.weights.yaml"


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(arg) for arg in args])


def refused(result: Any, *expected: str) -> str:
    """The output of a command refused with exit 2 and one message holding every `expected`."""
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    for text in expected:
        assert text in output, (text, output)
    return output


def csv_config(tmp_path: Path, path: Path, target: str, **data: Any) -> Path:
    keys = {"path": str(path), "target": target, **data}
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"task": "csv", "data": keys, "model": {"hidden": [4]},
                                  "train": {"epochs": 1}}))  # fmt: skip
    return config


def train_csv(tmp_path: Path, path: Path, target: str, **data: Any) -> Any:
    config = csv_config(tmp_path, path, target, **data)
    return invoke("train", config, "--runs-dir", tmp_path / "runs", *QUIET)


# ------------------------------------------------------------------ 6: costs bounded


def test_a_csv_of_100000_columns_is_typed_in_linear_time(tmp_path: Path) -> None:
    """Each column was looked up in the header list: quadratic, a million columns never ended."""
    columns = 100_000
    header = [f"c{i}" for i in range(columns)] + ["y"]
    rows = [[str(i % 7)] * columns + [str(i % 2)] for i in range(6)]
    path = write_csv(tmp_path / "wide.csv", header, rows)
    cfg = validate_config({"task": "csv", "data": {"path": str(path), "target": "y"}})
    start = time.perf_counter()
    data = load_task_data(cfg, tmp_path)
    seconds = time.perf_counter() - start
    assert data.input_shape == (columns,) and data.kind == "binary"
    assert seconds < 30, seconds  # quadratic: several minutes; linear: about a second


def id_table(tmp_path: Path, ids: list[str], **extra: list[str]) -> Path:
    """A table of 60 rows: x, a few-valued group, y, and an id column of the given cells."""
    header = ["id", "x", "group", "y", *extra]
    rows = [
        [ids[i], str(i % 9), "abc"[i % 3], str(i % 2), *(column[i] for column in extra.values())]
        for i in range(60)
    ]
    return write_csv(tmp_path / "t.csv", header, rows)


@pytest.mark.parametrize(
    "ids",
    [
        [f"Name{i}" for i in range(60)],  # a name per customer
        [f"{i:08x}-4b1e-9c2d" for i in range(60)],  # uuids
        [f"cust-{i // 2}" for i in range(60)],  # 30 values in 60 rows: over half distinct
    ],
    ids=["names", "uuids", "half-unique"],
)
def test_a_text_column_that_looks_like_an_id_is_refused_before_one_hot(
    tmp_path: Path, ids: list[str]
) -> None:
    result = train_csv(tmp_path, id_table(tmp_path, ids), "y")
    refused(result, "t.csv: column id: ", "looks like an id", "list it in data.drop")
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    control = train_csv(tmp_path, id_table(tmp_path, ids), "y", drop=["id"])
    assert control.exit_code == 0, control.output


def test_a_numeric_id_listed_as_categorical_is_refused_too(tmp_path: Path) -> None:
    path = id_table(tmp_path, [str(1000 + i) for i in range(60)])
    refused(train_csv(tmp_path, path, "y", categorical=["id"]), "column id: ", "looks like an id")
    few = id_table(tmp_path, [str(i % 4) for i in range(60)])  # 4 categories: one-hot is fine
    result = train_csv(tmp_path, few, "y", categorical=["id"])
    assert result.exit_code == 0, result.output


def test_a_target_that_looks_like_an_id_is_refused(tmp_path: Path) -> None:
    path = id_table(tmp_path, [f"Name{i}" for i in range(60)])
    refused(train_csv(tmp_path, path, "id", drop=["group"]), "column id (data.target)",
            "looks like an id")  # fmt: skip


def test_features_larger_than_the_limit_are_refused_naming_the_widest_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlcourse.data import tabular

    monkeypatch.setattr(tabular, "FEATURES_LIMIT", 60 * 10 * 8)  # bytes: 60 rows x 10 features
    path = id_table(tmp_path, [f"k{i % 12}" for i in range(60)])  # 12 values, each 5 times
    result = train_csv(tmp_path, path, "y")
    refused(result, "t.csv: 60 rows x ", "GiB", "column id alone is one-hot")


HUGE_MODELS = [
    (["--set", "model.hidden=[65536, 65536, 65536]"], "model.hidden.1: ", "tiny_churn_dir"),
    (["--set", "model.hidden=[20000, 20000]"], "model.hidden.1: ", "tiny_churn_dir"),
    (["--set", "model.conv=[]", "--set", "model.hidden=[65536, 65536]"], "model.hidden.1: ",
     "tiny_mnist_dir"),
    (["--set", "model.conv=[{channels: 1024, pool: none}, {channels: 1024, pool: none}]"],
     "model.conv.", "tiny_mnist_dir"),
]  # fmt: skip


@pytest.mark.parametrize(("sets", "key", "data"), HUGE_MODELS)
@pytest.mark.parametrize("mode", ["train", "overfit", "lr-find"])
def test_a_network_that_cannot_fit_is_refused_before_it_is_built(
    tmp_path: Path, request: pytest.FixtureRequest, sets: list[str], key: str, data: str,
    mode: str,
) -> None:  # fmt: skip
    data_dir = request.getfixturevalue(data)
    task = "churn_mlp" if data == "tiny_churn_dir" else "mnist_cnn"
    config = REPO / "configs" / f"{task}.yaml"
    common = [config, "--data-dir", data_dir, *sets, *QUIET]
    runs = tmp_path / "runs"
    command = {
        "train": ["train", *common, "--runs-dir", runs],
        "overfit": ["train", *common, "--overfit-batch"],
        "lr-find": ["lr-find", *common, "--runs-dir", runs],
    }[mode]
    if mode == "overfit" and "model.conv=" in sets[1]:
        pytest.skip("the activations of overfit-batch's 16 examples fit: it is not refused")
    start = time.perf_counter()
    output = refused(invoke(*command), f"{config} is not a valid config", key, "GiB",
                     "fixed cap of 4 GiB")  # fmt: skip
    assert time.perf_counter() - start < 20  # nothing of 17 GB was allocated
    assert "its largest layer is" in output
    assert not runs.exists()


def test_the_memory_estimate_counts_the_parameters_build_model_makes() -> None:
    """Known answer: layer_sizes counts what build_model allocates (batch norm's statistics
    too), without allocating it; and MEMORY_CAP refuses by the estimate."""
    from dlcourse.config import Model
    from dlcourse.models import build_model, layer_sizes, memory_needed, memory_problem

    cases = [
        (Model(hidden=[7, 5]), (12,), 1),
        (Model(hidden=[]), (3,), 4),
        (
            Model(conv=[{"channels": 4}, {"channels": 6, "kernel": 5, "batch_norm": False}]),
            (1, 28, 28),
            10,
        ),
        (Model(conv=[{"channels": 3, "padding": "valid", "pool": "avg"}], hidden=[]), (1, 9, 9), 2),
    ]
    for cfg, shape, outputs in cases:
        model = build_model(cfg, shape, outputs)
        real = sum(t.numel() for t in model.state_dict().values())
        assert sum(size.parameters for size in layer_sizes(cfg, shape, outputs)) == real
    big = Model(hidden=[65536, 65536, 65536])
    needed = memory_needed(layer_sizes(big, (8,), 1))  # the weights alone: 34 GB
    assert needed > 32 * 2**30
    problem = memory_problem(big, (8,), 1)
    assert problem is not None and problem[0] == "model.hidden.1"
    assert memory_problem(Model(hidden=[4096, 4096]), (784,), 10, batch=128, copies=5) is None
    # the activations of a batch count: a layer that fits for 128 examples, not for 60,000
    wide = Model(conv=[{"channels": 64, "pool": "none"}], hidden=[])
    assert memory_problem(wide, (1, 28, 28), 10, batch=128, copies=5) is None
    problem = memory_problem(wide, (1, 28, 28), 10, batch=60_000, copies=5)
    assert problem is not None and problem[0] == "model.conv.0"
    assert "the activations of a batch of 60,000" in problem[1]
    with pytest.raises(UserError, match="model.hidden.1: the network would need"):
        build_model(big, (8,), 1)


def test_the_api_refuses_a_network_that_cannot_fit(tiny_churn_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden\.1: the network would need about"):
        dlcourse.train(REPO / "configs" / "churn_mlp.yaml", set={"model.hidden": [65536] * 3},
                       runs_dir=tmp_path / "runs", data_dir=tiny_churn_dir, quiet=True)  # fmt: skip
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["lr-find", WORKED, "--steps", "0"], "'--steps'"),
        (["lr-find", WORKED, "--steps", "1"], "'--steps'"),
        (["lr-find", WORKED, "--steps", "10001"], "'--steps'"),
        (["lr-find", WORKED, "--steps", "9" * 400], "'--steps'"),
        (["train", WORKED, "--nproc", "0"], "'--nproc'"),
        (["train", WORKED, "--nproc", "65"], "'--nproc'"),
        (["train", WORKED, "--nproc", "9" * 5000], "'--nproc'"),
        (["data", "make", "spam", "--rows", "9"], "'--rows'"),
        (["data", "make", "spam", "--rows", "1000001"], "'--rows'"),
        (["data", "make", "spam", "--rows", "9" * 400], "'--rows'"),
        (["data", "make", "spam", "--seed", "-1"], "'--seed'"),
        (["data", "make", "spam", "--seed", str(2**63)], "'--seed'"),
        (["data", "make", "spam", "--seed", "9" * 400], "'--seed'"),
        (["data", "make", "spam", "--seed", "9" * 5000], "'--seed'"),
    ],
)
def test_sizes_given_on_the_command_line_are_bounded(
    tmp_path: Path, args: list[Any], option: str
) -> None:
    out = tmp_path / "made.csv"
    extra = ["--out", out] if args[0] == "data" else ["--runs-dir", tmp_path / "runs"]
    result = invoke(*args, *extra)
    assert result.exit_code == 2, result.output
    assert option in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_library_bounds_the_same_sizes() -> None:
    from dlcourse.cli import experiments, setup
    from dlcourse.data import examples
    from dlcourse.tools import lr_find

    assert experiments.MAX_STEPS == lr_find.MAX_STEPS  # the CLI's copies (no torch import)
    assert (setup.MIN_ROWS, setup.MAX_ROWS, setup.MAX_SEED) == (
        examples.MIN_ROWS,
        examples.MAX_ROWS,
        examples.MAX_SEED,
    )
    for steps in (1, 10_001, 10**400):
        with pytest.raises(UserError, match="--steps: the test takes 2 to 10,000 steps"):
            lr_find.lr_schedule(1e-5, 1.0, steps)
    for rows, seed in ((10**400, 0), (5, 0), (100, -1), (100, 10**400)):
        with pytest.raises(UserError, match="--rows|--seed"):
            examples.make_example("spam", Path("never-written.csv"), rows, seed)
    assert not Path("never-written.csv").exists()


def test_a_weights_yaml_is_bounded_by_its_model_before_it_is_parsed(tmp_path: Path) -> None:
    """The worked example has 9 values: 64 characters each and 64 KB of comments at most."""
    text = WORKED_WEIGHTS.read_text()
    padded = {
        "comment": text + "# " + "x" * 100_000 + "\n",
        "spaces": text.replace("[1, 1]", "[1," + " " * 100_000 + "1]"),
        "values": text + "extra: [" + ", ".join(["1.0"] * 400_000) + "]\n",  # 2 MB
    }
    for name, content in padded.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(content)
        start = time.perf_counter()
        result = invoke("forward", WORKED, "--weights", path, "--input", "2,3")
        refused(result, f"{path}: ", "bytes, more than a weights file of this model can need",
                "9 values")  # fmt: skip
        assert time.perf_counter() - start < 5
    within = tmp_path / "within.yaml"
    within.write_text(text + "# " + "x" * 30_000 + "\n")  # a long comment that fits
    result = invoke("forward", WORKED, "--weights", within, "--input", "2,3")
    assert result.exit_code == 0, result.output


def test_a_safetensors_weights_file_is_bounded_by_its_model(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"fc1.weight": torch.zeros(5_000_000)}, str(path))  # 20 MB for 9 values
    refused(invoke("forward", WORKED, "--weights", path, "--input", "2,3"), f"{path}: larger than")


# ------------------------------------------------------------------ 12: model.safetensors alone


def rewrite(source: Path, target: Path, *, tensors: dict[str, Any] | None = None,
            **metadata: Any) -> Path:  # fmt: skip
    """A copy of a model.safetensors with tensors and metadata values (JSON, or raw text when
    given as bytes) replaced (None: removed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as file:
        meta = dict(file.metadata())
        weights = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    for name, tensor in (tensors or {}).items():
        if tensor is None:
            del weights[name]
        else:
            weights[name] = tensor
    for key, value in metadata.items():
        meta[key] = value.decode() if isinstance(value, bytes) else json.dumps(value)
    save_file(weights, str(target), meta)
    return target


def metadata(weights: Path, key: str) -> Any:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as file:
        return json.loads(file.metadata()[key])


BAD_METADATA = [
    ({"input_shape": [0]}, "metadata 'input_shape'[0]"),
    ({"input_shape": [-12]}, "metadata 'input_shape'[0]"),
    ({"input_shape": [10**12]}, "metadata 'input_shape'[0]"),
    ({"input_shape": [1, 2, 3, 4]}, "metadata 'input_shape'"),
    ({"input_shape": [4096, 4096, 4096]}, "metadata 'input_shape'"),
    ({"input_shape": "12"}, "metadata 'input_shape'"),
    ({"input_shape": [13]}, "metadata 'preprocess': its columns make 12 features"),
    ({"n_outputs": 0}, "metadata 'n_outputs'"),
    ({"n_outputs": 10**9}, "metadata 'n_outputs'"),
    ({"n_outputs": 2}, "metadata 'n_outputs': 2, but a binary model has one output"),
    ({"n_outputs": "1"}, "metadata 'n_outputs'"),
    ({"kind": "banana"}, "metadata 'kind'"),
    ({"kind": 3}, "metadata 'kind'"),
    ({"kind": "multiclass"}, "metadata 'n_outputs': 1, but a multiclass model"),
    ({"class_names": ["a", "b", "c"]}, "metadata 'class_names': 3 names"),
    ({"class_names": ["a", "a"]}, "metadata 'class_names': a class is named twice"),
    ({"feature_names": "Age"}, "metadata 'feature_names'"),
    ({"epoch": -1}, "metadata 'epoch'"),
    ({"epoch": "3"}, "metadata 'epoch'"),
    ({"epoch": b"9" * 5000}, "metadata 'epoch' is not JSON"),
    ({"preprocess": b"{not json"}, "metadata 'preprocess' is not JSON"),
    ({"preprocess": b"[" * 100_000 + b"]" * 100_000}, "metadata 'preprocess' is not JSON"),
    ({"config": [1]}, "metadata 'config' is [1]"),
]  # fmt: skip
# Changes of the preprocessing, as (key, value): None removes the key.
BAD_PREPROCESS = [
    ("kind", "audio", "kind is 'audio'; it is image or table"),
    ("mean", [0.0] * 11, "mean is"),
    ("mean", [0.0] * 13, "mean is"),
    ("std", [1.0] * 11 + [0.0], "std[11] is 0.0; a standard deviation"),
    ("std", [1.0] * 11 + [-2.0], "std[11] is -2.0"),
    ("mean", [float("nan")] + [0.0] * 11, "mean[0] is nan; expected a finite number"),
    ("std", [float("inf")] + [1.0] * 11, "std[0] is inf"),
    ("std", ["1"] * 12, "std[0] is '1'"),
    ("numeric", "Age", "numeric is 'Age'"),
    ("categorical", ["Geography"], "categories: expected the values of each categorical column"),
    ("categories", {"Geography": ["France", "Germany", "Spain"], "Gender": []},
     "categories.Gender is []"),
    ("categories", {"Geography": ["France", "France"], "Gender": ["Female", "Male"]},
     "categories.Geography is"),
    ("target", {"mean": 0.0, "std": 1.0}, "target: a binary model's target is not standardized"),
    ("surprise", 1, "surprise: not a key of table preprocessing"),
    ("target_name", ["x"], "target_name is ['x']"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "expected"), BAD_METADATA)
def test_bad_metadata_of_a_model_safetensors_is_refused_naming_the_key(
    churn_run: tuple[Path, Path], tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    folder, data_dir = churn_run
    weights = rewrite(folder / "model.safetensors", tmp_path / "m.safetensors", **changes)
    refused(invoke("predict", weights, *(f"--set={value}" for value in CUSTOMER)),
            f"{weights}: ", expected)  # fmt: skip
    handed_in = copy_run(folder, tmp_path / "run")  # a run folder without its checkpoints
    shutil.rmtree(handed_in / "checkpoints")
    rewrite(folder / "model.safetensors", handed_in / "model.safetensors", **changes)
    refused(invoke("evaluate", handed_in, "--data-dir", data_dir),
            f"{handed_in / 'model.safetensors'}: ", expected)  # fmt: skip


@pytest.mark.parametrize(("key", "value", "expected"), BAD_PREPROCESS)
def test_a_preprocessing_that_does_not_fit_its_model_is_refused(
    churn_run: tuple[Path, Path], tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    source = churn_run[0] / "model.safetensors"
    preprocess = metadata(source, "preprocess")
    preprocess[key] = value
    weights = rewrite(source, tmp_path / "m.safetensors", preprocess=preprocess)
    refused(invoke("predict", weights, *(f"--set={v}" for v in CUSTOMER)),
            f"{weights}: metadata 'preprocess': ", expected)  # fmt: skip


def test_an_image_preprocessing_needs_an_image_shape_and_a_positive_std(
    churn_run: tuple[Path, Path], tmp_path: Path
) -> None:
    source = churn_run[0] / "model.safetensors"
    cases = [
        ({"kind": "image", "mean": 0.1, "std": 0.0}, [1, 28, 28], "std is 0.0"),
        ({"kind": "image", "mean": 0.1, "std": -1}, [1, 28, 28], "std is -1"),
        ({"kind": "image", "mean": None, "std": 0.3}, [1, 28, 28], "mean is None"),
        ({"kind": "image", "mean": [0.1], "std": 0.3}, [1, 28, 28], "mean is [0.1]; expected a"),
        ({"kind": "image", "mean": 1e39, "std": 0.3}, [1, 28, 28], "mean is 1e+39"),
        ({"kind": "image", "mean": 0.1, "std": 0.3}, [12], "input_shape is (channels, height"),
    ]
    for preprocess, shape, expected in cases:
        weights = rewrite(source, tmp_path / "m.safetensors", preprocess=preprocess,
                          input_shape=shape, feature_names=[])  # fmt: skip
        refused(invoke("predict", weights, tmp_path), f"{weights}: metadata 'preprocess'",
                expected)  # fmt: skip


BAD_TENSORS = [
    ("fc1.weight", lambda t: t.to(torch.int8), "tensor fc1.weight is of type I8"),
    ("fc1.weight", lambda t: t.bool(), "tensor fc1.weight is of type BOOL"),
    ("fc1.weight", lambda t: t.double(), "tensor fc1.weight is of type F64"),
    ("fc1.weight", lambda t: t.half(), "tensor fc1.weight is of type F16"),
    ("out.bias", lambda t: torch.full_like(t, float("nan")), "tensor out.bias has values that"),
    ("out.weight", lambda t: t.clone().fill_(float("inf")), "tensor out.weight has values"),
    ("fc1.weight", lambda t: t[:, :5].contiguous(), "tensor fc1.weight is torch.float32 of shape"),
    ("fc1.bias", lambda t: None, "it lacks fc1.bias"),
    ("fc9.weight", lambda t: torch.zeros(2), "it has fc9.weight"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "change", "expected"), BAD_TENSORS)
def test_weights_that_are_not_finite_float32_of_the_model_are_refused(
    churn_run: tuple[Path, Path], tmp_path: Path, name: str, change: Any, expected: str
) -> None:
    from safetensors import safe_open

    source = churn_run[0] / "model.safetensors"
    with safe_open(str(source), framework="pt") as file:
        tensor = file.get_tensor(name) if name in file.keys() else torch.zeros(1)  # noqa: SIM118
    weights = rewrite(source, tmp_path / "m.safetensors", tensors={name: change(tensor)})
    refused(invoke("predict", weights, *(f"--set={value}" for value in CUSTOMER)),
            f"{weights}: ", expected)  # fmt: skip


def test_a_huge_network_in_a_safetensors_config_is_refused_before_it_is_built(
    churn_run: tuple[Path, Path], tmp_path: Path
) -> None:
    source = churn_run[0] / "model.safetensors"
    config = metadata(source, "config")
    config["model"]["hidden"] = [65536, 65536, 65536]
    weights = rewrite(source, tmp_path / "m.safetensors", config=config)
    refused(
        invoke("predict", weights, *(f"--set={value}" for value in CUSTOMER)),
        f"{weights} (the config stored in it)",
        "model.hidden.1: the network would need",
    )


def copy_run(folder: Path, tmp_path: Path) -> Path:
    copied = tmp_path / folder.name
    shutil.copytree(folder, copied)
    return copied


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["data"]["preprocess"].update(std=[0.0] * 12), "std[0] is 0.0"),
        (lambda c: c["data"]["preprocess"].update(mean=[1.0]), "mean is [1.0]"),
        (lambda c: c["data"].update(kind="banana"), "field data.kind"),
        (lambda c: c["data"].update(input_shape=[10**9]), "field data.input_shape.0"),
        (lambda c: c["model"].update({"fc1.weight": c["model"]["fc1.weight"].to(torch.int8)}),
         "tensor fc1.weight is torch.int8 of shape"),
        (lambda c: c["model"]["out.bias"].fill_(float("nan")), "tensor out.bias has values that"),
    ],
)  # fmt: skip
def test_a_checkpoint_gets_the_same_checks(
    churn_run: tuple[Path, Path], tmp_path: Path, change: Any, expected: str
) -> None:
    folder, data_dir = churn_run
    run = copy_run(folder, tmp_path)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        checkpoint = torch.load(path, weights_only=True)
        change(checkpoint)
        torch.save(checkpoint, path)
    result = invoke("evaluate", run, "--data-dir", data_dir, "--json")
    refused(result, "checkpoints/", expected)


# ------------------------------------------------------------------ 13: duplicates, huge numbers


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "fc1:\n  weight: [[9, 9], [9, 9]]\n  bias: [0, 0]\n",
         "fc1: duplicate key on line 14; first given on line 5"),
        (lambda t: t.replace("  bias: [0, 0]\n", "  bias: [0, 0]\n  bias: [1, 1]\n"),
         "fc1.bias: duplicate key on line 10; first given on line 9"),
        (lambda t: t.replace("out:\n  weight:\n  - [2, -1]   # a0, a1\n  bias: [0]",
                             "out: {weight: [[2, -1]], bias: [0], weight: [[5, 5]]}"),
         "out.weight: duplicate key on line 10; first given on line 10"),
        (lambda t: t.replace("[1, 1]", "[1, " + "9" * 400 + "]"),
         "fc1.weight[0][1]: a whole number of 400 digits"),
        (lambda t: t.replace("bias: [0]", "bias: [-" + "9" * 300 + "]"),
         "out.bias[0]: a whole number of 300 digits"),
        (lambda t: t.replace("[1, 1]", "[1, " + "9" * 5000 + "]"),
         "not a readable YAML weights file"),
    ],
)  # fmt: skip
def test_a_weights_yaml_with_a_key_twice_or_a_huge_number_is_refused(
    tmp_path: Path, edit: Any, expected: str
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(edit(WORKED_WEIGHTS.read_text()))
    refused(invoke("forward", WORKED, "--weights", path, "--input", "2,3"), f"{path}: ", expected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (["a", "b", "a", "y"], "names column 'a' twice (columns 1 and 3)"),
        (["a", "b", " b ", "y"], "names column 'b' twice (columns 2 and 3)"),
        (["a", "y", "b", "y"], "names column 'y' twice (columns 2 and 4)"),
        (["", "a", "", "y"], "names column '' twice (columns 1 and 3)"),
    ],
)
def test_a_csv_header_that_names_a_column_twice_is_refused(
    tmp_path: Path, header: list[str], expected: str
) -> None:
    rows = [[str(i % 5), str(i % 3), str(i % 7), str(i % 2)] for i in range(40)]
    path = write_csv(tmp_path / "d.csv", header, rows)
    refused(train_csv(tmp_path, path, "y"), f"{path}: line 1: the header ", expected)
    assert not (tmp_path / "runs").exists()


def test_a_csv_to_predict_with_a_column_twice_is_refused(
    churn_run: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = churn_run
    header = [*CHURN_HEADER, "Age"]
    path = write_csv(tmp_path / "new.csv", header, [[*row, "30"] for row in churn_rows(3)])
    refused(invoke("predict", folder, path), f"{path}: line 1: the header names column 'Age' "
            "twice (columns 7 and 15)")  # fmt: skip
    data = tmp_path / "data" / "churn" / "Churn_Modelling.csv"
    write_csv(data, header, [[*row, "30"] for row in churn_rows(50)])
    config = REPO / "configs" / "churn_mlp.yaml"
    result = invoke("train", config, "--data-dir", tmp_path / "data", "--runs-dir",
                    tmp_path / "runs", *QUIET)  # fmt: skip
    refused(result, "Churn_Modelling.csv: line 1: the header names column 'Age' twice")


def test_a_column_given_twice_on_the_command_line_is_refused(
    churn_run: tuple[Path, Path],
) -> None:
    folder, data_dir = churn_run
    twice = [*CUSTOMER, "Age=99"]
    refused(invoke("predict", folder, *(f"--set={value}" for value in twice)),
            "--set Age: given twice ('45' and '99')")  # fmt: skip
    refused(invoke("forward", folder, "--data-dir", data_dir, *(f"--input={v}" for v in twice)),
            "--input Age: given twice")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--input", "test=" + "9" * 400], "--input test=...: an index of 400 digits"),
        (["--input", "dev=" + "9" * 5000], "--input dev=...: an index of 5,000 digits"),
        (["--input", "test=99999"], "--input test=99999: out of range"),
        (["--input", "Age=" + "9" * 400, *[f"--input={v}" for v in CUSTOMER if "Age" not in v]],
         "--input Age: a number of 400 characters"),
        (["--input", "test=0", "--target", "9" * 5000], "not a class of this model"),
        (["--input", "test=0", "--target", "²"], "not a class of this model"),
    ],
)  # fmt: skip
def test_huge_numbers_on_the_command_line_are_refused(
    churn_run: tuple[Path, Path], args: list[str], expected: str
) -> None:
    folder, data_dir = churn_run
    refused(invoke("forward", folder, "--data-dir", data_dir, *args), expected)


# ------------------------------------------------------------------ 15: the Python API


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ({"seed": "12"}, "grid 'seed': give a non-empty list of the values to try"),
        ({"seed": 12}, "grid 'seed': give a non-empty list"),
        ({"seed": []}, "not an empty list"),
        ({"seed": {1, 2}}, "not the set {1, 2}"),
        ({"seed": range(3)}, "not the range range(0, 3)"),
        ({"optim.lr": [0.1, object()]}, "grid 'optim.lr'[1]: a object is not a config value"),
        ({"data.path": [Path("a.csv")]}, "write a path as a string"),
        ({"optim.lr": [{1: 2}]}, "the key 1 is a int; keys are strings"),
        ({3: [1]}, "a key is a string such as 'optim.lr'"),
        (["seed"], "grid: give a dict {key: [values]}, not a list"),
    ],
)
def test_the_api_sweep_refuses_a_grid_that_is_not_lists_of_values(
    tmp_path: Path, grid: Any, expected: str
) -> None:
    with pytest.raises(UserError) as caught:
        dlcourse.sweep(WORKED, grid=grid, runs_dir=tmp_path / "runs", quiet=True)
    assert expected in str(caught.value), str(caught.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"optim.lr": object()}, "set 'optim.lr': a object is not a config value"),
        ({"data.path": Path("x.csv")}, "set 'data.path': a PosixPath is not a config value"),
        ({"model.hidden": [4, {3}]}, "set 'model.hidden' at 1: a set is not a config value"),
        ({"optim": {"lr": b"0.1"}}, "set 'optim' at lr: a bytes is not"),
        ({"optim": {2: 0.1}}, "set 'optim': the key 2 is a int"),
        ("optim.lr=0.1", "set: give a dict {key: value} or a list of 'KEY=VALUE' strings"),
        ([("optim.lr", 0.1)], "set: ('optim.lr', 0.1) is not a 'KEY=VALUE' string"),
        (12, "set: give a dict"),
    ],
)  # fmt: skip
def test_the_api_refuses_set_values_that_are_not_yaml_naming_the_key(
    tmp_path: Path, overrides: Any, expected: str
) -> None:
    for call in (dlcourse.train, dlcourse.sweep, dlcourse.lr_find):
        with pytest.raises(UserError) as caught:
            call(WORKED, set=overrides, runs_dir=tmp_path / "runs", quiet=True)
        assert expected in str(caught.value), (call, str(caught.value))
    assert not (tmp_path / "runs").exists()


def deep(levels: int) -> dict[str, Any]:
    config: dict[str, Any] = {}
    inner = config
    for _ in range(levels):
        inner["a"] = {}
        inner = inner["a"]
    return config


def test_the_api_refuses_a_config_dict_too_deep_or_not_plain(tmp_path: Path) -> None:
    looped: dict[str, Any] = {"task": "transactions"}
    looped["data"] = looped
    cases = [
        (deep(100_000), "the config dict is not a valid config", "a.a.a", "deeper than 32"),
        (deep(40), "the config dict", "nested deeper than 32 levels"),
        (looped, "the config dict", "data.data.data", "nested deeper than"),
        ({"task": "transactions", "optim": {"lr": object()}}, "optim.lr: a object is not a"),
        ({"task": "transactions", 5: {}}, "(top): the key 5 is a int"),
        ({"task": "transactions", "model": {"hidden": [1] * 20_000}}, "more than 10,000 values"),
    ]  # fmt: skip
    for config, *expected in cases:
        with pytest.raises(ConfigError) as caught:
            dlcourse.train(config, runs_dir=tmp_path / "runs", quiet=True)
        for text in expected:
            assert text in str(caught.value), str(caught.value)
    with pytest.raises(UserError, match="config: give a YAML file's path or a dict"):
        dlcourse.train(12, runs_dir=tmp_path / "runs", quiet=True)  # type: ignore[arg-type]
    assert not (tmp_path / "runs").exists()
    plain = {"task": "transactions", "train": {"epochs": 1}, "logging": {"tensorboard": False}}
    fine = dlcourse.train(plain, runs_dir=tmp_path / "runs", quiet=True)
    assert fine.summary is not None and not math.isnan(fine.summary.epochs_run)
