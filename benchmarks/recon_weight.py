"""Which weight λ makes the reconstructive attack strongest against the detector? Plain PGD L∞ vs pgd-linf-recon.

The defense-aware attack maximises min(margin, κ) − λ · ‖r(x') − x'‖₂ (``capsrobust.attacks.reconstructive``). A small
λ barely moves the reconstruction distance; a large one fights the class term and leaves fewer misclassified
inputs. What counts for an attacker facing model + detector is the *undetected success rate*: misclassified and
not flagged, among the clean-correct images. This benchmark measures it for plain PGD and for each λ on the same
images with the same random starts, the threshold calibrated at the 95th percentile of the clean validation
scores, and prints a Markdown table for docs/detection.md.

The images are spread evenly over the test split (every k-th), not its first N: mnist-5k's test split is ordered by
class, so its first 200 images are zeros and ones only.

    .venv/bin/python benchmarks/recon_weight.py --run runs/capsnet-paper --n 500 --eps 0.1 0.2 0.3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from attack_table import attack_parser, print_table

from capsrobust.attacks import run_attack
from capsrobust.data import load_dataset
from capsrobust.detection.detector import calibrate, reconstruction_distances
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.inference import predict
from capsrobust.runtime import command_line, resolve_device, versions


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = attack_parser(__doc__.splitlines()[0], run_help="run directory or checkpoint of a model with a decoder",
                           n_help="test images, spread evenly over the split (default 500)", eps=[0.1, 0.2, 0.3],
                           steps=20, rel_step=0.125, seed=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0], help="λ values")
    parser.add_argument("--confidence", type=float, default=2.0, help="κ, the hinge of the class term (default 2)")
    parser.add_argument("--percentile", type=float, default=95.0, help="detector threshold percentile")
    return parser.parse_args(argv)


def measure(arguments: argparse.Namespace) -> str:
    """Run the comparison and return it as Markdown."""
    device = resolve_device(arguments.device)
    loaded = load_checkpoint(arguments.run, device)
    model = loaded.model
    dataset = load_dataset(arguments.data, arguments.data_dir)
    chosen = torch.as_tensor(np.linspace(0, len(dataset.test) - 1, min(arguments.n, len(dataset.test))).astype(int))
    images, labels = dataset.test.images[chosen], dataset.test.labels[chosen]
    correct = (predict(model, images, device, arguments.batch_size) == labels).numpy()
    threshold = calibrate(reconstruction_distances(model, dataset.val.images, device=device), arguments.percentile)
    params = {"steps": arguments.steps, "rel_step": arguments.rel_step, "random_start": True, "restarts": 1}
    lines = [
        f"Model `{loaded.recipe.name}` ({loaded.path}), {len(labels)} {arguments.data} test images spread over the "
        f"split, {int(correct.sum())} classified correctly. Threshold {threshold.value:.3f} (the "
        f"{arguments.percentile:g}th percentile of {threshold.n_calibration} clean validation L2 distances). PGD L∞, "
        f"{arguments.steps} steps of {arguments.rel_step:g} · eps, one random start, seed {arguments.seed}, "
        f"{arguments.backend}; κ = {arguments.confidence:g}. Rates over the correctly classified images.",
        "",
        "| eps | attack | success | undetected success | mean distance (successful) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    attacks = [("pgd-linf", "plain PGD (objective: model default)", {})] + [
        ("pgd-linf-recon", f"pgd-linf-recon λ {weight:g}", {"recon_weight": weight, "confidence": arguments.confidence})
        for weight in arguments.weights
    ]
    for eps in arguments.eps:
        for name, title, extra in attacks:
            started = time.perf_counter()
            result = run_attack(name, model, images, labels, eps=eps, params={**params, **extra},
                                backend=arguments.backend, device=device, seed=arguments.seed,
                                batch_size=arguments.batch_size)
            seconds = time.perf_counter() - started
            adversarial = predict(model, result.adversarials, device, arguments.batch_size).numpy()
            scores = reconstruction_distances(model, result.adversarials, device=device)
            success = (adversarial != labels.numpy()) & correct
            undetected = success & ~threshold.flag(scores)
            distance = f"{scores[success].mean():.2f}" if success.any() else "—"
            lines.append(f"| {eps:g} | {title} | {success[correct].mean():.2f} | {undetected[correct].mean():.2f} | "
                         f"{distance} | {seconds:.0f} |")
    found = versions()
    lines += ["", "Versions: " + ", ".join(f"{key} {value}" for key, value in found.items()) + ".",
              f"Command: `{command_line()}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return print_table(measure, parse_arguments(argv))


if __name__ == "__main__":
    raise SystemExit(main())
