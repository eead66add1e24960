"""Config loading and validation: every problem named by its key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlcourse.config import Config, dump_config, load_config, validate_config
from dlcourse.errors import ConfigError, UserError
from tests.conftest import CONFIGS, config_id


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path, text), overrides)
    return str(info.value)


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_shipped_config_is_valid_and_its_resolved_form_reloads(path: Path) -> None:
    cfg = load_config(path)
    written = yaml.safe_load(path.read_text())
    assert cfg.name == written.get("name", "run") and cfg.task == written["task"]
    again = validate_config(yaml.safe_load(dump_config(cfg)))
    assert again.model_dump() == cfg.model_dump()


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_config_show_documents_every_key_and_reloads(path: Path) -> None:
    from dlcourse.config import describe_config

    cfg = load_config(path)
    text = describe_config(cfg)
    assert validate_config(yaml.safe_load(text)).model_dump() == cfg.model_dump()
    lines = [line for line in text.splitlines() if line.strip()]
    assert all("  # " in line for line in lines)  # a description on every line
    assert "optim:" in text and "lr:" in text and "regularization:" in text


def test_minimal_config_gets_task_defaults() -> None:
    cfg = validate_config({"task": "churn"})
    assert (cfg.split.train, cfg.split.dev, cfg.split.test) == (0.6, 0.2, 0.2)
    assert cfg.model.hidden == [32, 16]
    mnist = validate_config({"task": "mnist"})
    assert mnist.split.test == 0 and mnist.model.conv and len(mnist.model.conv) == 2
    assert validate_config({"task": "transactions"}).data.n_samples == 2000


def test_momentum_defaults_to_what_each_optimizer_uses() -> None:
    assert validate_config({"task": "churn", "optim": {"name": "momentum"}}).optim.momentum == 0.9
    rmsprop = validate_config({"task": "churn", "optim": {"name": "rmsprop"}})
    assert rmsprop.optim.momentum == 0.0
    assert validate_config(yaml.safe_load(dump_config(rmsprop))).optim.momentum == 0.0
    assert validate_config({"task": "churn", "optim": {"name": "adam"}}).optim.momentum is None


def test_overrides_set_nested_keys_with_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "task: churn\n"),
        ["optim.lr=0.05", "train.batch_size=full", "model.hidden=[8, 4]", "name=exp_1"],
    )
    assert cfg.optim.lr == 0.05
    assert cfg.train.batch_size == "full"
    assert cfg.model.hidden == [8, 4]
    assert cfg.name == "exp_1"


def test_override_into_a_list_item(tmp_path: Path) -> None:
    text = "task: mnist\nmodel:\n  conv: [{channels: 4}, {channels: 8}]\n"
    cfg = load_config(write(tmp_path, text), ["model.conv.1.channels=6"])
    assert cfg.model.conv is not None and [b.channels for b in cfg.model.conv] == [4, 6]


def test_every_problem_is_listed_with_key_and_line(tmp_path: Path) -> None:
    text = "task: churn\noptim:\n  lr: -1\ntrain:\n  epoch: 3\n  batch_size: 0\n"
    message = problems(tmp_path, text, ("model.dropout=1.5",))
    assert "4 problems" in message
    assert "optim.lr (line 3): Input should be greater than 0" in message
    assert "train.epoch (line 5): unknown key; did you mean 'epochs'?" in message
    assert "train.batch_size (line 6): must be a positive integer or 'full', got 0\n" in message
    assert "model.dropout (from the command line): Input should be less than 1" in message
    assert str(tmp_path / "config.yaml") in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "task: churn\ndata:\n  split: {train: 0.5, dev: 0.2, test: 0.2}\n",
            "data.split (line 3): train + dev + test must sum to 1",
        ),
        (
            "task: mnist\ndata:\n  split: {train: 0.8, dev: 0.1, test: 0.1}\n",
            "data.split.test (line 3): MNIST's test split is its official 10,000 test images",
        ),
        (
            "task: churn\ntrain:\n  early_stopping: {monitor: r2}\n",
            "train.early_stopping.monitor (line 3): 'r2' is not a metric of the churn task",
        ),
        (
            "task: churn\ndata:\n  split: {train: 0.7, test: 0.3}\ntrain:\n"
            "  early_stopping: {patience: 3}\n",
            "train.early_stopping.patience (line 5): early stopping watches the dev split",
        ),
        (
            "task: churn\noptim: {name: sgd, momentum: 0.9}\n",
            "optim.momentum (line 2): only used with optim.name: momentum, sgd_momentum, "
            "nesterov, rmsprop (this config has optim.name: sgd)",
        ),
        (
            "task: mnist\ndata: {n_samples: 100}\n",
            "data.n_samples (line 2): only used with task: transactions, playground "
            "(this config has task: mnist)",
        ),
        (
            "task: churn\nmodel:\n  conv: [{channels: 8}]\n",
            "model.conv (line 3): only used with task: mnist (this config has task: churn)",
        ),
        ("task: churn\nname: ../evil\n", "name (line 2): '../evil' is not a safe run-folder name"),
        ("task: churn\nname: /abs/path\n", "is not a safe run-folder name"),
        (
            "task: regression\n",
            "task (line 1): Input should be 'mnist', 'churn', 'transactions', 'csv' or "
            "'playground'",
        ),
        ("seed: 1\n", "task: missing; choose one of mnist, churn, transactions, csv, playground"),
        ("task: churn\ntrain: {epochs: ten}\n", "train.epochs (line 2): Input should be a valid"),
        ("task: churn\nmodel: {activation: swish}\n", "model.activation (line 2): Input should be"),
        ("task: churn\noptim: {betas: [0.9, 1.5]}\n", "optim.betas (line 2): each beta must be"),
        (
            "task: churn\nmodel: {hidden: [8, 0]}\n",
            "model.hidden (line 2): layer sizes must be from 1 to 65536",
        ),
        ("task: churn\nlogging: {insight_evry: 2}\n", "did you mean 'insight_every'?"),
        ("task: churn\ntrain: 5\n", "train (line 2): Input should be a valid dictionary"),
        (
            "task: churn\noptim: {schedule: {name: cosine, step_size: 5}}\n",
            "optim.schedule.step_size (line 2): only used with optim.schedule.name: step "
            "(this config has optim.schedule.name: cosine)",
        ),
        (
            "task: churn\nmodel: {activation: relu, leaky_slope: 0.1}\n",
            "model.leaky_slope (line 2): only used with model.activation: leaky_relu "
            "(this config has model.activation: relu)",
        ),
        (
            "task: churn\nmodel: {init: xavier, init_std: 0.1}\n",
            "model.init_std (line 2): only used with model.init: normal "
            "(this config has model.init: xavier)",
        ),
        (
            "task: churn\ndata: {split: {train: 0.7, test: 0.3}}\n"
            "optim: {schedule: {name: plateau}}\n",
            "optim.schedule.name (line 3): 'plateau' watches the dev split",
        ),
        (
            "task: churn\nregularization: {l2: .inf}\n",
            "regularization.l2 (line 2): Input should be a finite number",
        ),
        (
            "task: churn\nseed: 18446744073709551616\n",
            "seed (line 2): Input should be less than or equal to",
        ),
    ],
)
def test_bad_config_is_named_by_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, "task: churn\ntrain:\n  epochs: 3\n  epochs: 5\n")
    assert "train.epochs: duplicate key on line 4; first given on line 3" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task: churn\ntrain: {epochs: 3\n", "YAML syntax error"),
        ("- task: churn\n", "a config must be a mapping of sections"),
        ("", "the config is empty"),
        ("task: !!python/object/apply:os.system ['echo hi']\n", "unsupported YAML tag"),
    ],
)
def test_unreadable_yaml_gets_one_message(tmp_path: Path, text: str, expected: str) -> None:
    message = problems(tmp_path, text)
    assert expected in message and str(tmp_path / "config.yaml") in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = problems(tmp_path, "task: churn\ntrain:\n  epochs: [1, 2\n")
    assert "YAML syntax error" in message
    assert "while parsing a flow sequence started on line 3" in message


@pytest.mark.parametrize("override", ["optim.lr", "=3", "optim..lr=1", "task.x=1"])
def test_bad_override_expression(tmp_path: Path, override: str) -> None:
    message = problems(tmp_path, "task: churn\n", (override,))
    assert "--set" in message or "task.x" in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_error_lists_every_problem_as_key_message() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"task": "churn", "optim": {"lr": 0}, "train": {"epochs": 0}}, "x.yaml")
    keys = [key for key, _ in info.value.problems]
    assert keys == ["optim.lr", "train.epochs"]


def test_every_field_is_documented() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
                for inner in [arg, *getattr(arg, "__args__", ())]:
                    if isinstance(inner, type) and hasattr(inner, "model_fields"):
                        missing += walk(inner)
        return missing

    assert walk(Config) == []
