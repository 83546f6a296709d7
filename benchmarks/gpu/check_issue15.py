"""CUDA check of issue 15's additions (run on a machine with a GPU; prints a small report).

``python benchmarks/gpu/check_issue15.py`` (with ``packages/*/src`` on ``PYTHONPATH``):

* ``mat=``: MultiSimilarityMiner + MultiSimilarityLoss with one shared matrix give the same
  gradients as without it (N = 4096, D = 128);
* ``anchor_batched_backward``: the same gradients as the plain backward, and the peak CUDA
  memory of both, for four losses that decompose over anchors;
* ``pml train --device cuda`` (one process; a second GPU is needed for nccl DDP) for 2 epochs.

Exit status 1 when a gradient differs by more than the tolerance.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import torch

import pml.losses as L
import pml.miners as M

TOL = 1e-4


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    dev = "cuda"
    failed = False
    torch.manual_seed(0)
    labels = torch.arange(512).repeat_interleave(8).to(dev)
    x = torch.randn(4096, 128, device=dev, requires_grad=True)

    loss_fn, miner = L.MultiSimilarityLoss(), M.MultiSimilarityMiner()
    mat = loss_fn.distance(x)
    loss_fn(x, labels, miner(x, labels, mat=mat), mat=mat).backward()
    shared = x.grad.clone()
    x.grad = None
    loss_fn(x, labels, miner(x, labels)).backward()
    diff = (shared - x.grad).abs().max().item()
    x.grad = None
    failed |= diff > TOL
    print(f"mat= shared vs not: max |grad diff| {diff:.2e}")

    for name in ("MultiSimilarityLoss", "TripletMarginLoss", "NTXentLoss", "ContrastiveLoss"):
        loss_fn = getattr(L, name)()
        torch.cuda.reset_peak_memory_stats()
        loss_fn(x, labels).backward()
        plain_peak = torch.cuda.max_memory_allocated() >> 20
        plain = x.grad.clone()
        x.grad = None
        torch.cuda.reset_peak_memory_stats()
        L.anchor_batched_backward(loss_fn, x, labels, 512)
        peak = torch.cuda.max_memory_allocated() >> 20
        diff = (plain - x.grad).abs().max().item()
        x.grad = None
        failed |= diff > TOL
        print(
            f"{name}: anchor_batched_backward max |grad diff| {diff:.2e}; peak {peak} MiB "
            f"(plain backward {plain_peak} MiB)"
        )

    with tempfile.TemporaryDirectory() as runs:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pml.cli",
                "train",
                "--device",
                "cuda",
                "--epochs",
                "2",
                "--runs-dir",
                runs,
            ],
            capture_output=True,
            text=True,
        )
        last = (proc.stdout.strip().splitlines() or [""])[-3:]
        print(f"pml train --device cuda: exit {proc.returncode}; " + " | ".join(last))
        failed |= proc.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
