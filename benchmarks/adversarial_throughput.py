"""Images per second of adversarial training (training attack + update) against natural training, on one device.

Not a test: a measurement for docs/adversarial-training.md. Times ``batches`` training steps of ``batch_size``
mnist-5k images after one warm-up step, for each recipe and each number of PGD steps (0 = natural training).

    PYTHONPATH=. .venv/bin/python benchmarks/adversarial_throughput.py capsnet-paper-at cnn-small-at --steps 0 10 40
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from capsrobust.data import load_dataset
from capsrobust.models.recipes import build_model, load_recipe
from capsrobust.precision import precision_scope, resolve_precision
from capsrobust.runtime import resolve_device
from capsrobust.training.adversarial import adversarial_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 40])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device, training=True)
    data = load_dataset("mnist-5k").train
    print(f"device {device}, precision {precision.value}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {args.batches} timed batches")
    print("recipe,steps,images_per_second")
    for name in args.recipes:
        recipe = load_recipe(name)
        torch.manual_seed(0)
        model = build_model(recipe).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for steps in args.steps:
            config = dataclasses.replace(recipe.adversarial, steps=max(steps, 1)) if steps else None
            generator = torch.Generator().manual_seed(0)
            seconds = 0.0
            for batch in range(args.batches + 1):
                images = data.images[batch * args.batch_size : (batch + 1) * args.batch_size].to(device)
                labels = data.labels[batch * args.batch_size : (batch + 1) * args.batch_size].to(device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                model.train()
                if config is None:
                    with precision_scope(precision, device):
                        output = model(images, labels)
                        loss = model.loss(output, images, labels).total
                else:
                    output, loss = adversarial_loss(model, images, labels, config, config.eps, generator, precision)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if batch > 0:  # the first batch warms up allocators and kernels
                    seconds += time.perf_counter() - started
            print(f"{name},{steps},{args.batches * args.batch_size / seconds:.1f}", flush=True)


if __name__ == "__main__":
    main()
