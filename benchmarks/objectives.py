"""Which attack objective breaks a CapsNet best? PGD L∞ with every objective on the same images.

Cross-entropy on raw capsule lengths has nearly flat gradients (lengths lie in [0, 1)), so an attack that uses
it underestimates how breakable a CapsNet is. This benchmark measures robust accuracy under PGD L∞ for every
objective of ``capsrobust.attacks.objectives.AttackObjective`` on the first N test images, with the same random starts
(same seed) for every objective, and prints a Markdown table for docs/attack-objectives.md. The lowest robust
accuracy marks the strongest objective, which ``capsrobust.attacks.objectives.CAPSNET_DEFAULT_OBJECTIVE`` should name.

    .venv/bin/python benchmarks/objectives.py --run runs/capsnet-paper --n 500 --eps 0.1 0.2
"""

from __future__ import annotations

import argparse
import sys
import time

from attack_table import attack_parser, print_table

from capsrobust.attacks import run_attack
from capsrobust.attacks.objectives import AttackObjective, attack_target, default_objective
from capsrobust.data import load_dataset
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.models.inference import predict
from capsrobust.runtime import command_line, resolve_device, versions


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    return attack_parser(__doc__.splitlines()[0], run_help="run directory or checkpoint of the model to attack",
                         n_help="first N test images (default: 500)", eps=[0.1, 0.2], steps=40, rel_step=0.0625,
                         seed=0).parse_args(argv)


def measure(arguments: argparse.Namespace) -> str:
    """Run the comparison and return it as Markdown."""
    device = resolve_device(arguments.device)
    loaded = load_checkpoint(arguments.run, device)
    model = loaded.model
    split = load_dataset(arguments.data, arguments.data_dir).test.head(arguments.n)
    images, labels = split.images, split.labels
    correct = predict(model, images, device, arguments.batch_size) == labels
    params = {"steps": arguments.steps, "rel_step": arguments.rel_step, "random_start": True, "restarts": 1}
    header = " | ".join(f"robust acc @ eps {eps:g}" for eps in arguments.eps)
    lines = [
        f"Model `{loaded.recipe.name}` ({loaded.path}), {arguments.data} test images 0–{len(labels) - 1}, "
        f"clean accuracy {correct.float().mean().item():.4f}. PGD L∞, {arguments.steps} steps of "
        f"{arguments.rel_step:g} · eps, one random start, seed {arguments.seed}, {arguments.backend}.",
        "",
        f"| objective | differentiates | {header} | seconds |",
        "|---|---|" + "---|" * len(arguments.eps) + "---|",
    ]
    best: tuple[float, str] | None = None
    for objective in AttackObjective:
        started = time.perf_counter()
        accuracies = []
        for eps in arguments.eps:
            result = run_attack(
                "pgd-linf", model, images, labels, eps=eps, params=params, objective=objective,
                backend=arguments.backend, device=device, seed=arguments.seed, batch_size=arguments.batch_size,
            )
            adversarial = predict(model, result.adversarials, device, arguments.batch_size)
            accuracies.append((correct & (adversarial == labels)).float().mean().item())
        seconds = time.perf_counter() - started
        mark = " (default)" if objective is default_objective(model) else ""
        cells = " | ".join(f"{accuracy:.4f}" for accuracy in accuracies)
        described = attack_target(model, objective).describe()
        lines.append(f"| `{objective.value}`{mark} | {described} | {cells} | {seconds:.0f} |")
        if best is None or sum(accuracies) < best[0]:
            best = (sum(accuracies), objective.value)
    assert best is not None
    lines += [
        "",
        f"Strongest (lowest robust accuracy summed over eps): `{best[1]}`.",
        "",
        f"Command: `{command_line()}`  ",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in versions().items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return print_table(measure, parse_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
