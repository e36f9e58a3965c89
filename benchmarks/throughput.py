"""Forward and train-step throughput of the paper models, against this machine's fp32 matmul speed.

Not a test: it measures wall-clock speed. Run it on an idle machine:

    .venv/bin/python benchmarks/throughput.py                 # CPU (or CUDA when present)
    .venv/bin/python benchmarks/throughput.py --device cuda --batch-size 100

For each recipe it prints images/s for inference (eval mode, no gradients) and for a full training step
(forward, loss, backward, Adam update) at the given batch size, the FLOPs of each counted by torch's FLOP
counter, the FLOP/s that achieves, and that as a fraction of a large fp32 matrix product on the same device
(a practical ceiling for dense float work there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from capsrobust.models import CapsRobustModel
from capsrobust.recipes import build_model, load_recipe
from capsrobust.runtime import device_description, resolve_device, versions


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(step: Callable[[], None], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def median_seconds(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    return statistics.median(timed_runs(step, device, repeats))


def matmul_flops_per_second(device: torch.device, size: int, repeats: int) -> float:
    """The best of ``repeats`` large fp32 matrix products: a ceiling, so the fastest run is the fair one."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return 2 * size**3 / min(timed_runs(lambda: torch.mm(a, b), device, max(repeats, 10)))


def counted_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(model: CapsRobustModel, device: torch.device, batch: int, repeats: int) -> dict[str, float]:
    images = torch.rand(batch, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def train_step() -> None:
        output = model(images, labels)
        loss = model.loss(output, images, labels).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.eval()
    forward_seconds = median_seconds(forward, device, repeats)
    forward_flops = counted_flops(forward)
    model.train()
    train_seconds = median_seconds(train_step, device, repeats)
    train_flops = counted_flops(train_step)
    return {
        "forward_images_per_s": batch / forward_seconds,
        "forward_gflop_per_s": forward_flops / forward_seconds / 1e9,
        "train_images_per_s": batch / train_seconds,
        "train_gflop_per_s": train_flops / train_seconds / 1e9,
        "forward_gflop_per_image": forward_flops / batch / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recipes", nargs="+", default=["capsnet-paper", "cnn-baseline", "cnn-small"])
    parser.add_argument("--matmul-size", type=int, default=4096)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    peak = matmul_flops_per_second(device, args.matmul_size, args.repeats) / 1e9
    print(f"load average before measuring: {', '.join(f'{load:.2f}' for load in os.getloadavg())} (want < 0.5)")
    print(f"device: {device_description(device)}; torch {versions()['torch']}; batch {args.batch_size}")
    print(f"fp32 matmul ({args.matmul_size}²): {peak:,.0f} GFLOP/s\n")
    header = (
        f"| {'recipe':<14} | GFLOP/img fwd | fwd img/s | fwd GFLOP/s | fwd % of matmul "
        f"| train img/s | train GFLOP/s | train % of matmul |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name in args.recipes:
        model = build_model(load_recipe(name)).to(device)
        row = measure(model, device, args.batch_size, args.repeats)
        print(
            f"| {name:<14} | {row['forward_gflop_per_image']:>13.3f} | {row['forward_images_per_s']:>9,.0f} "
            f"| {row['forward_gflop_per_s']:>11,.0f} | {row['forward_gflop_per_s'] / peak:>15.0%} "
            f"| {row['train_images_per_s']:>11,.0f} | {row['train_gflop_per_s']:>13,.0f} "
            f"| {row['train_gflop_per_s'] / peak:>17.0%} |"
        )


if __name__ == "__main__":
    main()
