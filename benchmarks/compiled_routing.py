"""Training-step time of a recipe with its routing eager and compiled (``compile_routing``), and their agreement.

    python benchmarks/compiled_routing.py em-capsnet-small --batch-size 50 --threads 1

Builds the recipe twice from one seed (eager, compiled), runs one step to compile (timed apart), then ``--steps``
timed forward + backward steps on the same random batch each, and prints seconds per step with the largest logit
difference and the cosine between the two gradients of the first capsule layer: compiling must change the speed,
not the mathematics.
"""

from __future__ import annotations

import dataclasses
import time

import click
import torch

from capsrobust.models.recipes import build_model, load_recipe


def _step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    output = model(images)
    model.loss(output, images, labels).total.backward()
    return output.logits.detach()


@click.command()
@click.argument("recipe", default="em-capsnet-small")
@click.option("--batch-size", default=50, show_default=True)
@click.option("--steps", default=3, show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
def main(recipe: str, batch_size: int, steps: int, threads: int, seed: int) -> None:
    torch.set_num_threads(threads)
    loaded = load_recipe(recipe)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    results = {}
    for compiled in (False, True):
        torch.manual_seed(seed)
        model = build_model(dataclasses.replace(loaded, model=dataclasses.replace(loaded.model,
                                                                                  compile_routing=compiled)))
        model.train()
        start = time.perf_counter()
        logits = _step(model, images, labels)
        first = time.perf_counter() - start
        gradient = model.convcaps1.weights.grad.flatten().clone()
        start = time.perf_counter()
        for _ in range(steps):
            _step(model, images, labels)
        per_step = (time.perf_counter() - start) / steps
        results[compiled] = (logits, gradient)
        print(f"{recipe} {'compiled' if compiled else 'eager   '}: {per_step:.2f} s/step at batch {batch_size} on "
              f"{threads} thread(s) (first step {first:.1f} s)")
    (eager_logits, eager_gradient), (compiled_logits, compiled_gradient) = results[False], results[True]
    cosine = torch.nn.functional.cosine_similarity(eager_gradient, compiled_gradient, dim=0).item()
    print(f"largest logit difference {(eager_logits - compiled_logits).abs().max().item():.2e}, gradient cosine "
          f"{cosine:.6f}")


if __name__ == "__main__":
    main()
