"""Quickstart: train a small embedding model with pml, then evaluate retrieval accuracy.

Runs on the CPU in a few seconds on the bundled default data: a deterministic synthetic
dataset of class-clustered points seen through a random non-linear map (train and test use
disjoint classes, as in metric-learning benchmarks).

    hatch run quickstart [--epochs 10] [--seed 0] [--lr 0.003]
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
    """40 classes x 40 samples in 32-D: 8 informative directions hidden among 24 noisy ones.

    Class centres live in an 8-D subspace; every sample also gets large nuisance noise in
    the other 24 dimensions, and a fixed random rotation mixes all 32. Raw distances are
    dominated by the nuisance, so a model must learn which directions matter.
    """
    g = torch.Generator().manual_seed(seed)
    num_classes, per_class, informative, nuisance = 40, 40, 8, 24
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centers = torch.randn(num_classes, informative, generator=g)
    signal = centers[labels] + 0.35 * torch.randn(len(labels), informative, generator=g)
    noise = 1.5 * torch.randn(len(labels), nuisance, generator=g)
    rotation, _ = torch.linalg.qr(
        torch.randn(informative + nuisance, informative + nuisance, generator=g)
    )
    return torch.cat([signal, noise], dim=1) @ rotation, labels


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        emb = model(x)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count"
    )
    return calc.get_accuracy(emb, y)


def run(epochs: int = 10, seed: int = 0, lr: float = 3e-3) -> tuple[dict, dict]:
    """Train for ``epochs`` and return the test accuracies before and after training."""
    torch.manual_seed(seed)
    x, y = default_data(seed)
    train = y < 20  # classes 0-19 train, 20-39 test
    x_train, y_train, x_test, y_test = x[train], y[train], x[~train], y[~train]

    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16))
    loss_func = TripletMarginLoss(margin=0.1)
    miner = MultiSimilarityMiner(epsilon=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    sampler = MPerClassSampler(y_train, m=4, batch_size=64, length_before_new_iter=len(y_train))

    before = evaluate(model, x_test, y_test)
    print(f"before training: {before}")
    for epoch in range(epochs):
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
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    run(args.epochs, args.seed, args.lr)


if __name__ == "__main__":
    main()
