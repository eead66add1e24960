"""W1 written by hand, as a whole program: pytorch/examples' MNIST CNN (conv32-conv64-fc128,
dropout, Adadelta lr 1.0), 300 batches of 64 from in-memory tensors, then the 10,000 test
images. What a careful student writes; `make bench` times it as a process against `dlcourse
train` on the same workload.

    python bench/hand_w1.py DATA_DIR
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BATCHES, BATCH = 300, 64


class Net(nn.Module):  # pytorch/examples mnist/main.py
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def read(path: Path, offset: int) -> torch.Tensor:
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8, offset=offset)


def images(path: Path) -> torch.Tensor:
    return read(path, 16).view(-1, 1, 28, 28).float().div(255).sub(0.1307).div(0.3081)


def main() -> None:
    raw = Path(sys.argv[1]) / "MNIST" / "raw"
    x = images(raw / "train-images-idx3-ubyte")[: BATCHES * BATCH]
    y = read(raw / "train-labels-idx1-ubyte", 8)[: BATCHES * BATCH].long()
    test_x, test_y = images(raw / "t10k-images-idx3-ubyte"), read(raw / "t10k-labels-idx1-ubyte", 8)
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    model.train()
    order = torch.randperm(len(y))
    for start in range(0, len(y), BATCH):
        rows = order[start : start + BATCH]
        loss = F.nll_loss(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_y), 1000):
            predicted = model(test_x[start : start + 1000]).argmax(1)
            correct += int((predicted == test_y[start : start + 1000].long()).sum())
    print(f"test accuracy {correct / len(test_y):.4f}")


if __name__ == "__main__":
    main()
