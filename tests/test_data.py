"""Data loaders on tiny generated files: shapes, preprocessing, splits, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlcourse.config import validate_config
from dlcourse.data import load_task_data, mnist, split_indices, transactions
from dlcourse.errors import UserError
from tests.conftest import CHURN_HEADER, churn_rows, write_csv, write_idx

# ------------------------------------------------------------------ MNIST


def test_mnist_reads_idx_files_into_tensors(tiny_mnist_dir: Path) -> None:
    data = load_task_data(validate_config({"task": "mnist"}), tiny_mnist_dir)
    assert {name: len(s) for name, s in data.splits.items()} == {
        "train": 270,
        "dev": 30,
        "test": 100,
    }
    train = data.splits["train"]
    assert train.x.shape == (270, 1, 28, 28) and train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64
    # Standardized with the training split's own statistics.
    assert abs(float(train.x.mean())) < 1e-4 and abs(float(train.x.std()) - 1) < 1e-3
    assert data.preprocess["kind"] == "image" and 0 < data.preprocess["mean"] < 1


def test_mnist_labels_round_trip(tmp_path: Path) -> None:
    labels = torch.tensor([7, 2, 1, 0, 4], dtype=torch.uint8)
    write_idx(tmp_path / "labels", labels)
    assert mnist.read_idx(tmp_path / "labels", mnist.LABEL_MAGIC).tolist() == [7, 2, 1, 0, 4]


def test_idx_with_wrong_magic_is_named(tmp_path: Path) -> None:
    write_idx(tmp_path / "images", torch.zeros(2, 28, 28))
    with pytest.raises(UserError, match=r"images: wrong magic number 2051 \(expected 2049"):
        mnist.read_idx(tmp_path / "images", mnist.LABEL_MAGIC)


def test_truncated_idx_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, torch.zeros(4, 28, 28))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        mnist.read_idx(path, mnist.IMAGE_MAGIC)


def test_empty_idx_is_named(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(UserError, match="too short for an IDX file"):
        mnist.read_idx(tmp_path / "x", mnist.IMAGE_MAGIC)


def test_image_and_label_counts_must_match(tiny_mnist_dir: Path) -> None:
    raw = mnist.raw_dir(tiny_mnist_dir)
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.zeros(99, dtype=torch.uint8))
    with pytest.raises(UserError, match="holds 100 images but .* holds 99 labels"):
        mnist.load_mnist(tiny_mnist_dir, "test")


def test_missing_mnist_offline_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(root: Path) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(mnist, "download", offline)
    with pytest.raises(UserError) as info:
        mnist.load_mnist(tmp_path, "train")
    message = str(info.value)
    assert f"MNIST is not in {tmp_path}/MNIST/raw/" in message
    assert "train-images-idx3-ubyte" in message and "network is unreachable" in message
    assert "--data-dir" in message and "DLCOURSE_DATA_DIR" in message


def test_data_limit_caps_each_source(tiny_mnist_dir: Path) -> None:
    cfg = validate_config({"task": "mnist", "data": {"limit": 50}})
    data = load_task_data(cfg, tiny_mnist_dir)
    assert len(data.splits["train"]) + len(data.splits["dev"]) == 50
    assert len(data.splits["test"]) == 50


# ------------------------------------------------------------------ churn


def test_churn_features_are_encoded_and_standardized(tiny_churn_dir: Path) -> None:
    data = load_task_data(validate_config({"task": "churn"}), tiny_churn_dir)
    assert data.feature_names == [
        "CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard",
        "IsActiveMember", "EstimatedSalary", "Geography=France", "Geography=Germany",
        "Geography=Spain", "Gender=Male",
    ]  # fmt: skip
    train = data.splits["train"]
    assert train.x.shape == (240, 12) and data.input_shape == (12,)
    assert torch.allclose(train.x.mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(train.x.std(0, unbiased=False), torch.ones(12), atol=1e-4)
    # Statistics come from train only: dev is standardized with them, not with its own.
    assert not torch.allclose(data.splits["dev"].x.mean(0), torch.zeros(12), atol=1e-3)
    assert set(train.y.unique().tolist()) == {0.0, 1.0}
    assert data.preprocess["categories"]["Geography"] == ["France", "Germany", "Spain"]


def test_churn_rows_keep_their_file_row(tiny_churn_dir: Path) -> None:
    data = load_task_data(validate_config({"task": "churn"}), tiny_churn_dir)
    all_rows = torch.cat([s.rows for s in data.splits.values()]).sort().values
    assert torch.equal(all_rows, torch.arange(400))


def bad_churn(tmp_path: Path, header: list[str], rows: list[list[str]]) -> str:
    path = write_csv(tmp_path / "bad.csv", header, rows)
    cfg = validate_config({"task": "churn", "data": {"path": str(path)}})
    with pytest.raises(UserError) as info:
        load_task_data(cfg, tmp_path)
    return str(info.value)


def test_missing_churn_column_is_named(tmp_path: Path) -> None:
    header = [c for c in CHURN_HEADER if c != "Age"]
    rows = [row[:6] + row[7:] for row in churn_rows(5)]
    assert "missing column(s) Age" in bad_churn(tmp_path, header, rows)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("Age", "forty", "line 4, column Age: 'forty' is not a number"),
        ("Balance", "nan", "line 4, column Balance: 'nan' is not finite"),
        ("Balance", "", "line 4, column Balance: the cell is empty; every row needs a value here"),
        ("Exited", "2", "line 4, column Exited: 2 is not a label 0 or 1"),
        ("Geography", "", "line 4, column Geography: the cell is empty"),
    ],
)
def test_bad_churn_cell_is_named(tmp_path: Path, column: str, value: str, expected: str) -> None:
    rows = churn_rows(10)
    rows[2][CHURN_HEADER.index(column)] = value
    message = bad_churn(tmp_path, CHURN_HEADER, rows)
    assert expected in message and "bad.csv" in message


def test_empty_and_headerless_churn_files(tmp_path: Path) -> None:
    assert "no data rows" in bad_churn(tmp_path, CHURN_HEADER, [])
    path = tmp_path / "empty.csv"
    path.write_text("")
    cfg = validate_config({"task": "churn", "data": {"path": str(path)}})
    with pytest.raises(UserError, match="empty.csv: the file is empty"):
        load_task_data(cfg, tmp_path)


def test_missing_churn_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"churn/Churn_Modelling.csv: file not found"):
        load_task_data(validate_config({"task": "churn"}), tmp_path)


# ------------------------------------------------------------------ transactions


def test_transactions_follow_the_course_network() -> None:
    # The generating network at children=2, accounts=3 (hidden units 0, 0, 2 -> 2*... + 2).
    value = transactions.true_transactions(torch.tensor([[2.0, 3.0]]))
    hidden = torch.relu(torch.tensor([3 * 2 + 2 * 3 - 12, -3 * 2 + 4 * 3 - 10, 2 * 2 - 3 + 1.0]))
    assert float(value) == float(hidden @ torch.tensor([2.0, 1.0, 3.0]) + 2)


def test_transactions_default_noise_allows_r2_of_098() -> None:
    features, target = transactions.generate(200_000, transactions.default_noise(), seed=0)
    truth = transactions.true_transactions(features)
    r2 = 1 - float(((target - truth) ** 2).sum() / ((target - target.mean()) ** 2).sum())
    assert abs(r2 - 0.98) < 0.002
    assert transactions.best_possible_r2(transactions.default_noise()) == pytest.approx(0.98)


def test_transactions_are_seeded() -> None:
    a = transactions.generate(100, 1.0, seed=3)
    b = transactions.generate(100, 1.0, seed=3)
    c = transactions.generate(100, 1.0, seed=4)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    children, accounts = a[0][:, 0], a[0][:, 1]
    assert children.min() >= 0 and children.max() <= 5
    assert accounts.min() >= 1 and accounts.max() <= 8


def test_transactions_task_reports_its_noise_floor() -> None:
    data = load_task_data(validate_config({"task": "transactions"}), Path("."))
    assert data.reference["best_r2"] == pytest.approx(0.98)
    assert {name: len(s) for name, s in data.splits.items()} == {
        "train": 1200,
        "dev": 400,
        "test": 400,
    }


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize(
    "fractions",
    [(0.7, 0.0, 0.3), (0.6, 0.2, 0.2), (0.98, 0.01, 0.01), (1.0, 0.0, 0.0)],
)
def test_split_sizes_follow_the_fractions(fractions: tuple[float, float, float]) -> None:
    named = dict(zip(("train", "dev", "test"), fractions, strict=True))
    parts = split_indices(10_000, named, seed=0)
    for name, fraction in named.items():
        assert len(parts[name]) == round(10_000 * fraction)
    together = torch.cat(list(parts.values())).sort().values
    assert torch.equal(together, torch.arange(10_000))  # disjoint and complete


def test_stratified_split_keeps_the_class_balance() -> None:
    labels = (torch.arange(10_000) < 2037).long()  # 20.37% positives, like churn
    labels = labels[torch.randperm(10_000, generator=torch.Generator().manual_seed(1))]
    parts = split_indices(10_000, {"train": 0.6, "dev": 0.2, "test": 0.2}, 0, labels=labels)
    for rows in parts.values():
        assert abs(float(labels[rows].float().mean()) - 0.2037) < 0.001


def test_splits_are_seeded() -> None:
    fractions = {"train": 0.5, "dev": 0.25, "test": 0.25}
    assert torch.equal(
        split_indices(100, fractions, 7)["dev"], split_indices(100, fractions, 7)["dev"]
    )
    assert not torch.equal(
        split_indices(100, fractions, 7)["dev"], split_indices(100, fractions, 8)["dev"]
    )


def test_a_split_too_small_for_one_example_is_refused() -> None:
    with pytest.raises(
        UserError, match="data.split.test: 0.01 of the 50 examples of .* is less than one example"
    ):
        split_indices(50, {"train": 0.98, "dev": 0.01, "test": 0.01}, 0)
