"""CUDA check of the issue-11 losses: dtypes, autocast, agreement with CPU float64, timings.

Run on a machine with a GPU (the pml sources on PYTHONPATH, the reference optional):

    python benchmarks/gpu/check_losses.py [--out results.md]

Prints (and writes) a markdown report: one agreement row per loss and input dtype, then
forward+backward timings (CUDA events, median of 10 after 3 warm-ups) and peak memory for
100,000 classes (D=512, batch 256) and the ranking losses at N=1024/4096, with the reference
beside pml where it is installed and fits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import traceback
from collections.abc import Callable

import torch

import pml.losses as L

try:
    import pytorch_metric_learning.losses as R
except ImportError:  # the reference is optional
    R = None

DEV = torch.device("cuda")
LINES: list[str] = []


def out(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


CLASS_LOSSES = {
    "ArcFaceLoss": dict(num_classes=10, embedding_size=32),
    "CosFaceLoss": dict(num_classes=10, embedding_size=32),
    "SphereFaceLoss": dict(num_classes=10, embedding_size=32),
    "LargeMarginSoftmaxLoss": dict(num_classes=10, embedding_size=32),
    "NormalizedSoftmaxLoss": dict(num_classes=10, embedding_size=32),
    "SubCenterArcFaceLoss": dict(num_classes=10, embedding_size=32),
    "ProxyAnchorLoss": dict(num_classes=10, embedding_size=32),
    "ProxyNCALoss": dict(num_classes=10, embedding_size=32),
    "SoftTripleLoss": dict(num_classes=10, embedding_size=32),
    "P2SGradLoss": dict(descriptors_dim=32, num_classes=10),
}
OTHER_LOSSES = {
    "FastAPLoss": {},
    "PNPLoss": {},
    "SmoothAPLoss": {},
    "RankedListLoss": dict(margin=0.4, Tn=1.0),
    "VICRegLoss": {},
    "ManifoldLoss": dict(l=32, K=8),
}


def call(name: str, loss, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor):
    if name == "VICRegLoss":
        return loss(emb, ref_emb=ref)
    if name == "ManifoldLoss":
        return loss(emb, indices_tuple=labels % 8)
    return loss(emb, labels)


def agreement() -> None:
    out("## Agreement with CPU float64 (N=40, 10 classes x 4, D=32)")
    out()
    out("| loss | input | loss value | max rel. grad error | parameter dtype after | status |")
    out("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(4)
    base = torch.randn(40, 32, generator=g) + 2 * torch.randn(10, 32, generator=g)[labels]
    ref_view = base + 0.1 * torch.randn(40, 32, generator=g)
    for name, kwargs in {**CLASS_LOSSES, **OTHER_LOSSES}.items():
        try:
            torch.manual_seed(1)
            cpu = getattr(L, name)(**kwargs).double()
            e64 = base.double().requires_grad_()
            l64 = call(name, cpu, e64, labels, ref_view.double())
            (g64,) = torch.autograd.grad(l64, e64)
            for mode in ("float32", "float16", "bfloat16", "autocast-bf16", "autocast-fp16"):
                torch.manual_seed(1)
                loss = getattr(L, name)(**kwargs).to(DEV)
                dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
                    mode, torch.float32
                )
                emb = base.to(DEV, dtype).requires_grad_()
                ref = ref_view.to(DEV, dtype)
                ac = {"autocast-bf16": torch.bfloat16, "autocast-fp16": torch.float16}.get(mode)
                with torch.autocast("cuda", dtype=ac or torch.float16, enabled=ac is not None):
                    value = call(name, loss, emb, labels.to(DEV), ref)
                (grad,) = torch.autograd.grad(value.float(), emb)
                rel = (
                    (grad.double().cpu() - g64).abs().max() / g64.abs().max().clamp_min(1e-12)
                ).item()
                params = sorted(
                    {str(p.dtype).removeprefix("torch.") for p in loss.parameters()}
                ) or ["-"]
                tol = 1e-3 if mode == "float32" else 5e-2
                vrel = abs(value.double().item() - l64.item()) / max(abs(l64.item()), 1e-12)
                ok = torch.isfinite(value).item() and vrel < tol and rel < tol * 5
                ok = ok and all(p.dtype == torch.float32 for p in loss.parameters())
                status = "ok" if ok else "CHECK"
                out(
                    f"| {name} | {mode} | {value.item():.6g} (f64 {l64.item():.6g}) | "
                    f"{rel:.2e} | {','.join(params)} | {status} |"
                )
        except Exception as err:  # keep going: report it
            out(f"| {name} | - | error: {type(err).__name__}: {str(err)[:120]} | | | ERROR |")
            traceback.print_exc()


def timed(step: Callable[[], None], repeats: int = 10) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return statistics.median(times), peak


def bench_row(label: str, params: str, make: Callable[[object], Callable[[], None]]) -> None:
    cells = []
    for lib in (L, R):
        if lib is None:
            cells.append(("not installed", ""))
            continue
        try:
            step = make(lib)
            ms, peak = timed(step)
            cells.append((f"{ms:.2f} ms", f"{peak:.0f} MiB"))
        except torch.cuda.OutOfMemoryError:
            cells.append(("out of memory", ""))
        except Exception as err:
            cells.append((f"error: {type(err).__name__}", ""))
        finally:
            torch.cuda.empty_cache()
    out(f"| {label} | {params} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")


def classifier_step(
    name: str, amp: torch.dtype | None, **kw
) -> Callable[[object], Callable[[], None]]:
    def make(lib):
        g = torch.Generator(device=DEV).manual_seed(0)
        emb = torch.randn(256, 512, device=DEV, generator=g).requires_grad_()
        labels = torch.randint(0, 100_000, (256,), device=DEV, generator=g)
        loss = getattr(lib, name)(num_classes=100_000, embedding_size=512, **kw).to(DEV)

        def step():
            with torch.autocast("cuda", dtype=amp or torch.float16, enabled=amp is not None):
                value = loss(emb, labels)
            value.backward()
            emb.grad = None
            for p in loss.parameters():
                p.grad = None

        return step

    return make


def ranking_step(name: str, n: int, **kw) -> Callable[[object], Callable[[], None]]:
    def make(lib):
        g = torch.Generator(device=DEV).manual_seed(0)
        per = 8 if name != "SmoothAPLoss" else int(n**0.5)
        labels = torch.arange(n // per, device=DEV).repeat_interleave(per)
        emb = torch.randn(len(labels), 128, device=DEV, generator=g).requires_grad_()
        loss = getattr(lib, name)(**kw).to(DEV)

        def step():
            loss(emb, labels).backward()
            emb.grad = None

        return step

    return make


def timings() -> None:
    out()
    out("## Forward + backward on the GPU")
    out()
    out("Median of 10 (CUDA events) after 3 warm-ups; peak = max allocated above the inputs.")
    out()
    out("| case | parameters | pml | reference 2.9 | pml peak | reference peak |")
    out("|---|---|---|---|---|---|")
    for name, kw in (
        ("ArcFaceLoss", {}),
        ("CosFaceLoss", {}),
        ("SubCenterArcFaceLoss", {}),
        ("NormalizedSoftmaxLoss", {}),
        ("ProxyAnchorLoss", {}),
    ):
        for amp in (None, torch.bfloat16):
            params = f"C=100,000, D=512, N=256, {'bf16 autocast' if amp else 'float32'}"
            bench_row(name, params, classifier_step(name, amp, **kw))
    for name, sizes in (
        ("SmoothAPLoss", (1024, 4096)),
        ("PNPLoss", (1024, 4096)),
        ("FastAPLoss", (1024, 4096)),
        ("RankedListLoss", (1024, 4096)),
    ):
        kw = dict(margin=0.4, Tn=1.0) if name == "RankedListLoss" else {}
        for n in sizes:
            bench_row(name, f"N={n}, D=128", ranking_step(name, n, **kw))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--skip-timings", action="store_true")
    args = parser.parse_args()
    out(f"# GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    out()
    agreement()
    if not args.skip_timings:
        timings()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(LINES) + "\n")
    bad = [line for line in LINES if line.endswith("CHECK |") or line.endswith("ERROR |")]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
