"""Quickstart: train a small embedding model with pml, then evaluate retrieval accuracy.

Runs on the CPU in a few seconds on the bundled default data: a deterministic synthetic
dataset of class-clustered points seen through a random non-linear map (train and test use
disjoint classes, as in metric-learning benchmarks).

    hatch run quickstart [--epochs 5] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from pml.eval import AccuracyCalculator
from pml.losses import TripletMarginLoss
from pml.miners import MultiSimilarityMiner
from pml.samplers import MPerClassSampler


def default_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """40 classes x 40 samples in 32-D: Gaussian clusters pushed through a fixed random MLP."""
    g = torch.Generator().manual_seed(seed)
    num_classes, per_class, dim = 40, 40, 32
    centers = torch.randn(num_classes, dim, generator=g) * 1.5
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    points = centers[labels] + torch.randn(len(labels), dim, generator=g)
    mix = torch.randn(dim, dim, generator=g) / dim**0.5
    return torch.tanh(points @ mix) + 0.3 * torch.randn(len(labels), dim, generator=g), labels


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        emb = model(x)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    return calc.get_accuracy(emb, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x, y = default_data(args.seed)
    train = y < 20  # classes 0-19 train, 20-39 test
    x_train, y_train, x_test, y_test = x[train], y[train], x[~train], y[~train]

    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    loss_func = TripletMarginLoss(margin=0.1)
    miner = MultiSimilarityMiner(epsilon=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = MPerClassSampler(y_train, m=4, batch_size=64, length_before_new_iter=len(y_train))

    before = evaluate(model, x_test, y_test)
    print(f"before training: {before}")
    for epoch in range(args.epochs):
        model.train()
        order = torch.tensor(list(iter(sampler)))
        total = 0.0
        for batch in order.split(64):
            emb = model(x_train[batch])
            pairs = miner(emb, y_train[batch])
            loss = loss_func(emb, y_train[batch], pairs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch + 1}: mean loss {total / max(1, len(order) // 64):.4f}")
    after = evaluate(model, x_test, y_test)
    print(f"after training:  {after}")


if __name__ == "__main__":
    main()
