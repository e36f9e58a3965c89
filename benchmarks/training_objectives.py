"""Which objective should a capsule network's training attack maximise? The one whose PGD breaks the most images.

Not a test: the evidence behind the capsule AT recipes' ``objective`` (docs/adversarial-training.md). Runs the
training attack itself (``capsrobust.training.adversarial.pgd``, random start, fp32) with every Madry objective on the
first ``n`` test images of a checkpoint and prints robust accuracy per (objective, eps): the lowest is strongest.

    PYTHONPATH=. .venv/bin/python benchmarks/training_objectives.py runs/capsnet-paper --eps 0.05 0.1 --steps 10
"""

from __future__ import annotations

import argparse
import time

import torch

from capsrobust.data import load_dataset
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.recipes import AdversarialConfig
from capsrobust.precision import Precision
from capsrobust.training.adversarial import adversarial_examples

OBJECTIVES = ("margin", "ce-log-lengths", "ce-lengths", "margin-log-lengths", "vote-margin", "vote-ce-log-lengths")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    args = parser.parse_args()
    model = load_checkpoint(args.checkpoint).model.eval()
    test = load_dataset("mnist-5k").test
    images, labels = test.images[: args.n], test.labels[: args.n]
    with torch.no_grad():
        clean = float((model(images).predictions == labels).float().mean())
    print(f"{args.checkpoint}: clean accuracy {clean:.3f} on {args.n} test images; PGD {args.steps} steps of "
          f"2.5·eps/steps, random start (seed 0)")
    print("objective,eps,robust_accuracy,seconds")
    for eps in args.eps:
        for objective in args.objectives:
            config = AdversarialConfig(eps=eps, steps=args.steps, step_size=2.5 * eps / args.steps,
                                       objective=objective)
            started = time.perf_counter()
            adversarial = adversarial_examples(model, images, labels, config, eps=eps, steps=args.steps,
                                               step_size=config.step_size, generator=torch.Generator().manual_seed(0),
                                               precision=Precision.FP32)
            with torch.no_grad():
                robust = float((model(adversarial).predictions == labels).float().mean())
            print(f"{objective},{eps:g},{robust:.3f},{time.perf_counter() - started:.1f}", flush=True)


if __name__ == "__main__":
    main()
