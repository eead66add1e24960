"""W2 written by hand, as a whole program: the churn MLP 12-6-6-1 (ReLU, Adam lr 0.001, batch
10, 10 epochs) on Churn_Modelling.csv read with the csv module, one-hot Geography, 0/1 Gender,
standardized with the training rows' statistics, an 80/10/10 split, then the test accuracy.

    python bench/hand_w2.py DATA_DIR
"""

import csv
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

NUMERIC = ["CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard",
           "IsActiveMember", "EstimatedSalary"]  # fmt: skip


def features(row: dict[str, str]) -> list[float]:
    geography = [float(row["Geography"] == g) for g in ("France", "Germany", "Spain")]
    return [float(row[name]) for name in NUMERIC] + geography + [float(row["Gender"] == "Male")]


def main() -> None:
    with (Path(sys.argv[1]) / "churn" / "Churn_Modelling.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    x = torch.tensor([features(row) for row in rows])
    y = torch.tensor([float(row["Exited"]) for row in rows])
    torch.manual_seed(0)
    order = torch.randperm(len(y))
    train, test = order[:8000], order[9000:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    for _ in range(10):
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(shuffled), 10):
            rows_ = shuffled[start : start + 10]
            loss = F.binary_cross_entropy_with_logits(model(x[rows_]).squeeze(1), y[rows_])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = (model(x[test]).squeeze(1) > 0).float()
    print(f"test accuracy {float((predicted == y[test]).float().mean()):.4f}")


if __name__ == "__main__":
    main()
