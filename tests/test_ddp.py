"""CUDA-ready training and several processes (torchrun, DistributedDataParallel).

The device-dependent logic that torch runs on a CPU is tested here without a GPU: bf16
autocast, checkpoints written on a GPU loading onto the CPU, the backend choice, where the data
goes. The tests marked ddp start real torchrun processes (gloo, 2 ranks) on tiny data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, REPO, write_tiny_mnist
from typer.testing import CliRunner

from dlcourse.app.distributed import KILL_ENV, torchrun_args, worker_args
from dlcourse.cli import app
from dlcourse.data import SplitData, TaskData
from dlcourse.errors import UserError
from dlcourse.training import device as device_module
from dlcourse.training.checkpoint import load_checkpoint, save_checkpoint
from dlcourse.training.distributed import backend_for, rank_device, shard, weights_fingerprint
from dlcourse.training.progress import epoch_order

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# A small MLP (no batch norm: on the CPU each rank would normalize its half of the batch).
MLP = """name: mlp
task: mnist
model: {conv: [], hidden: [16]}
optim: {name: sgd, lr: 0.1}
train: {batch_size: 64}
logging: {insight: false, progress: false}
"""


def mlp_config(folder: Path) -> Path:
    path = folder / "mlp.yaml"
    path.write_text(MLP, encoding="utf-8")
    return path


def sets(*overrides: str) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


# ---------------------------------------------------------------- sharding, backends


@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_cover_each_batch_and_change_every_epoch(world: int) -> None:
    n, batch = 103, 16  # a last batch of 7, uneven across the ranks
    generator = torch.Generator().manual_seed(0)
    seen_by_rank: list[list[set[int]]] = [[] for _ in range(world)]
    for _ in range(2):  # epochs
        order = epoch_order(n, batch, True, generator, torch.device("cpu")).tolist()
        mine: list[set[int]] = [set() for _ in range(world)]
        for start in range(0, n, batch):
            end = min(start + batch, n)
            parts = [shard(start, end, rank, world) for rank in range(world)]
            assert parts[0][0] == start and parts[-1][1] == end  # contiguous and covering
            assert all(parts[r][1] == parts[r + 1][0] for r in range(world - 1))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1
            for rank, (lo, hi) in enumerate(parts):
                mine[rank] |= set(order[lo:hi])
        assert set().union(*mine) == set(range(n))
        assert sum(len(part) for part in mine) == n  # disjoint
        for rank in range(world):
            seen_by_rank[rank].append(mine[rank])
    assert all(epochs[0] != epochs[1] for epochs in seen_by_rank)  # reshuffled each epoch


def test_a_batch_smaller_than_the_world_leaves_some_ranks_nothing() -> None:
    assert [shard(10, 12, rank, 4) for rank in range(4)] == [(10, 11), (11, 12), (12, 12),
                                                              (12, 12)]  # fmt: skip


def test_backend_and_device_per_rank() -> None:
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda")) == "nccl"
    assert rank_device(torch.device("cuda"), 3) == torch.device("cuda", 3)
    assert rank_device(torch.device("cpu"), 3) == torch.device("cpu")


def test_weights_fingerprint_tells_equal_weights_from_different() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(weights_fingerprint(a), weights_fingerprint(b))
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert not torch.equal(weights_fingerprint(a), weights_fingerprint(b))


# ---------------------------------------------------------------- GPU logic, on the CPU


def tiny_data() -> TaskData:
    split = SplitData(torch.zeros(1000, 250), torch.zeros(1000, dtype=torch.long),
                      torch.arange(1000))  # fmt: skip
    return TaskData("t", "multiclass", {"train": split}, (250,), 2, [], ["a", "b"], {}, "here")


def test_data_goes_to_the_gpu_only_when_it_fits() -> None:
    data = tiny_data()  # 1,008,000 bytes
    assert device_module.data_bytes(data) == 1000 * 250 * 4 + 1000 * 8
    cpu = device_module.place_data(data, torch.device("cpu"))
    assert cpu.splits["train"].x.device.type == "cpu"
    with pytest.raises(UserError, match="does not fit in half of the free memory of cuda"):
        device_module.place_data(data, torch.device("cuda"), lambda device: (10**6, 10**9))


@CUDA
def test_data_on_the_gpu() -> None:
    placed = device_module.place_data(tiny_data(), torch.device("cuda"))
    assert placed.splits["train"].x.is_cuda and placed.splits["train"].rows.device.type == "cpu"


def test_precision_autocast_on_the_cpu() -> None:
    layer = torch.nn.Linear(4, 2)
    bf16 = device_module.Precision("bf16", torch.device("cpu"), list(layer.parameters()))
    with bf16.autocast():
        assert layer(torch.ones(3, 4)).dtype == torch.bfloat16
    fp32 = device_module.Precision("fp32", torch.device("cpu"), list(layer.parameters()))
    with fp32.autocast():
        assert layer(torch.ones(3, 4)).dtype == torch.float32
    assert bf16.scaler is None and fp32.scaler is None
    with pytest.raises(UserError, match="train.precision: fp16 needs a CUDA GPU"):
        device_module.Precision("fp16", torch.device("cpu"), [])


@CUDA
def test_fp16_steps_with_a_gradient_scaler() -> None:
    from dlcourse.training.optimizers import Optimizer, sgd

    layer = torch.nn.Linear(4, 1).cuda()
    fp16 = device_module.Precision("fp16", torch.device("cuda"), list(layer.parameters()))
    with fp16.autocast():
        loss = layer(torch.ones(8, 4, device="cuda")).float().mean()
    fp16.backward(loss)
    before = layer.weight.detach().clone()
    fp16.step(Optimizer(layer.parameters(), sgd, (), lr=0.1, weight_decay=0.0))  # dlcourse's
    assert not torch.equal(before, layer.weight)


def test_cudnn_autotuner_only_on_cuda_and_not_when_deterministic() -> None:
    torch.backends.cudnn.benchmark = False
    device_module.tune_backends(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    try:
        device_module.make_deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic is True
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
        device_module.tune_backends(torch.device("cuda"))
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    device_module.tune_backends(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    torch.backends.cudnn.benchmark = False


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file says its tensors live on cuda:0 (as a GPU run's do); loading maps them."""
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a load without map_location does
    loaded = load_checkpoint(path)
    assert loaded["model"]["w"].device.type == "cpu" and loaded["model"]["w"].sum() == 2


def test_bf16_training_on_the_cpu(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(mlp_config(tmp_path)), "--runs-dir", str(runs),
            "--data-dir", str(tiny_mnist_dir), *QUIET, "--deterministic",
            *sets("train.epochs=1", "train.precision=bf16")]  # fmt: skip
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["dev"]["loss"] < 2.3


def test_fp16_on_the_cpu_is_refused_before_a_run_folder_exists(
    tmp_path: Path, tiny_mnist_dir: Path
) -> None:
    args = ["train", str(REPO / "configs" / "mnist_cnn.yaml"), "--runs-dir", str(tmp_path / "r"),
            "--data-dir", str(tiny_mnist_dir), "--device", "cpu",
            *sets("train.precision=fp16")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "fp16 needs a CUDA GPU" in result.output
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- the launcher


def test_nproc_runs_the_same_command_through_torchrun(tmp_path: Path) -> None:
    args = worker_args(config=Path("c.yaml"), sets=["a=1"], name=None, runs_dir=Path("runs"),
                       data_dir=Path("data"), device="cpu", resume=None, deterministic=True,
                       debug=False)  # fmt: skip
    assert args == ["train", "c.yaml", "--set", "a=1", "--runs-dir", "runs", "--data-dir",
                    "data", "--device", "cpu", "--deterministic"]  # fmt: skip
    assert torchrun_args(2, args)[:4] == ["--standalone", "--nproc-per-node=2", "--module",
                                          "dlcourse"]  # fmt: skip
    result = CliRunner().invoke(app, ["train", str(REPO / "configs" / "mnist_cnn.yaml"),
                                      "--nproc", "2", "--overfit-batch"])  # fmt: skip
    assert result.exit_code == 2 and "--nproc cannot be used with --overfit-batch" in result.output


# ---------------------------------------------------------------- several processes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("ddp") / "data")


def dlcourse(args: list[str], env: dict[str, str] | None = None, torchrun: list[str] | None = None
             ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`python -m dlcourse ARGS` (or torchrun TORCHRUN -m dlcourse ARGS) from this checkout."""
    command = [sys.executable, "-m", *(["torch.distributed.run", *torchrun, "-m"] if torchrun
                                       else []), "dlcourse", *args]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def train_args(runs: Path, data_dir: Path, *overrides: str) -> list[str]:
    return ["train", str(mlp_config(data_dir.parent)), "--runs-dir", str(runs),
            "--data-dir", str(data_dir), *sets(*overrides)]  # fmt: skip


def only_run(runs: Path) -> Path:
    (folder,) = [path for path in runs.iterdir()]  # no pointer file left behind either
    return folder


def metrics(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ddp
def test_two_processes_train_as_one_and_resume_in_one(tmp_path: Path, data_dir: Path) -> None:
    two = dlcourse([*train_args(tmp_path / "two", data_dir, "train.epochs=2"), "--nproc", "2"])
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes (gloo)" in two.stdout and two.stdout.count("epoch 1/2") == 1
    folder = only_run(tmp_path / "two")  # one run folder, TensorBoard written by rank 0 only
    one = CliRunner().invoke(app, train_args(tmp_path / "one", data_dir, "train.epochs=2"))
    assert one.exit_code == 0, one.output
    # events.out.tfevents.TIME.HOST.PID.N: one process wrote them, the files one process writes
    # (the scalars, and the HParams that add_hparams writes through a writer of its own)
    events = [list((only_run(tmp_path / name) / "tb").glob("events.out.tfevents.*"))
              for name in ("two", "one")]  # fmt: skip
    assert len({path.name.split(".")[-2] for path in events[0]}) == 1
    assert len(events[0]) == len(events[1]) >= 1
    dev = [json.loads((only_run(tmp_path / name) / "summary.json").read_text())["dev"]
           for name in ("two", "one")]  # fmt: skip
    assert dev[0]["loss"] == pytest.approx(dev[1]["loss"], rel=1e-4)
    assert dev[0]["accuracy"] == dev[1]["accuracy"]
    # the 2-process checkpoint continues in one process
    resumed = CliRunner().invoke(app, ["train", "--resume", str(folder), "--data-dir",
                                       str(data_dir), *sets("train.epochs=3")])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in metrics(folder)] == [1, 2, 3]


@pytest.mark.ddp
def test_one_process_checkpoint_resumes_in_two_and_divergence_exits_3(
    tmp_path: Path, data_dir: Path
) -> None:
    one = CliRunner().invoke(app, train_args(tmp_path / "runs", data_dir, "train.epochs=1"))
    assert one.exit_code == 0, one.output
    folder = only_run(tmp_path / "runs")
    resumed = dlcourse(["train", "--resume", str(folder), "--data-dir", str(data_dir),
                        "--nproc", "2", *sets("train.epochs=2")])  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout and [row["epoch"] for row in metrics(folder)] == [1, 2]
    diverged = dlcourse([*train_args(tmp_path / "nan", data_dir, "optim.lr=1e6"), "--nproc", "2"])
    assert diverged.returncode == 3, diverged.stdout + diverged.stderr
    assert diverged.stderr.count("training diverged") == 1  # rank 0 reports, the other is quiet


@pytest.mark.ddp
def test_a_killed_worker_recovers_under_max_restarts(tmp_path: Path, data_dir: Path) -> None:
    runs = tmp_path / "runs"
    torchrun = ["--standalone", "--nproc-per-node=2", "--max-restarts=1"]
    args = train_args(runs, data_dir, "train.epochs=3", "logging.tensorboard=false")
    result = dlcourse(args, env={KILL_ENV: "1:2"}, torchrun=torchrun)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = only_run(runs)
    assert "resuming" in result.stdout and "at epoch 2" in result.stdout
    assert [row["epoch"] for row in metrics(folder)] == [1, 2, 3]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stop_reason"] == "completed"
