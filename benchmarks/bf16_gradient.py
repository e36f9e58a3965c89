"""How far a recipe's bf16 training gradient is from its fp32 gradient, next to how far fp32's own moves.

Not a test: the measurement behind ``trains_in_bf16`` (docs/precision.md). At initialisation, on one batch of
mnist-5k's training digits, it prints the cosine similarity of the bf16-autocast gradient (every parameter, one
vector) with the fp32 gradient, and, as the yardstick, the cosine of the fp32 gradient at the same digits with 0.4%
multiplicative noise (bfloat16's relative spacing, 2⁻⁸) with the fp32 gradient at the clean digits. A loss surface
that rough at that scale cannot be descended by gradients rounded at it, whatever part of the network rounds them.
``--fp32-modules`` keeps named submodules out of autocast, to see whether any one of them is the cause.

    .venv/bin/python benchmarks/bf16_gradient.py em-capsnet-small
    .venv/bin/python benchmarks/bf16_gradient.py em-capsnet-small --fp32-modules conv1 primary_poses
    .venv/bin/python benchmarks/bf16_gradient.py capsnet-paper
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn

from capsrobust.data import load_dataset
from capsrobust.models.recipes import build_model, load_recipe

BF16_SPACING = 2.0**-8


def flat_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool, seed: int) -> torch.Tensor:
    """Every parameter's gradient of the training loss as one float64 vector (so the cosine is exact). The model's
    buffers are left as found and the RNG is reseeded, so every call draws the same dropout masks."""
    torch.manual_seed(seed)
    model.zero_grad()
    state = {name: buffer.clone() for name, buffer in model.named_buffers()}  # e.g. EM's step counter
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output = model(images)
        loss = model.loss(output, images, labels).total
    loss.backward()
    for name, buffer in model.named_buffers():
        buffer.copy_(state[name])
    return torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None])


def in_fp32(module: nn.Module) -> None:
    """Run ``module`` outside autocast, on float32 copies of its tensor arguments."""
    forward: Callable[..., object] = module.forward

    def run(*args: object) -> object:
        with torch.autocast("cpu", enabled=False):
            return forward(*[a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args])

    module.forward = run  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fp32-modules", nargs="*", default=[], help="submodule names kept in fp32")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = build_model(load_recipe(args.recipe)).train()
    train = load_dataset("mnist-5k").train
    images, labels = train.images[: args.batch_size], train.labels[: args.batch_size]
    reference = flat_gradient(model, images, labels, bf16=False, seed=args.seed)
    noisy = (images * (1 + BF16_SPACING * torch.randn_like(images))).clamp(0, 1)
    perturbed = flat_gradient(model, noisy, labels, bf16=False, seed=args.seed)
    yardstick = torch.cosine_similarity(reference, perturbed, dim=0)
    for name in args.fp32_modules:
        in_fp32(model.get_submodule(name))
    bf16 = torch.cosine_similarity(reference, flat_gradient(model, images, labels, bf16=True, seed=args.seed), dim=0)
    kept = f" ({', '.join(args.fp32_modules)} in fp32)" if args.fp32_modules else ""
    print(f"{args.recipe}, batch {args.batch_size}, seed {args.seed}: cosine with the fp32 gradient: "
          f"bf16{kept} {float(bf16):.4f}; fp32 at 0.4%-noisy inputs {float(yardstick):.4f}")


if __name__ == "__main__":
    main()
