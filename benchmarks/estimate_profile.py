"""How long a benchmark profile takes on a GPU, derived from costs measured on one (docs/gpu.md), not guessed.

Not a test: a planning tool. It plans the profile's sweep exactly as ``capsrobust benchmark`` would (every cell of
its suite for every recipe and training seed) and prices each cell from measured rates:

* attacks: image-passes (one forward and backward of one image) per cell from the attack's parameters, divided by
  the recipe's measured PGD image-steps per second at batch 1,000 in the attack precision
  (``docs/gpu/throughput-h100.json``), times a calibration factor: the median of measured / predicted seconds
  over the sweep cells measured on the same card (``docs/gpu/sweep-cells-h100.csv``), plus a per-cell overhead;
* training: epochs × training images / the recipe's measured training rate, plus the measured per-epoch overhead
  (``docs/gpu/training-h100.csv``); adversarial training adds, per image, the training attack's steps at the
  measured PGD rate at batch 100 in tf32 (the training precision), and per epoch the robust validation's PGD on the
  500 validation images (an adversarially trained recipe is priced with its natural recipe's rates).

Adaptive attacks (APGD-T, AutoAttack, Square) attack only the images still robust; they are priced as if every
image stayed robust, so their share is an upper bound. Stages nobody has timed on a GPU (detection, figures,
report) are a stated allowance.

    .venv/bin/python benchmarks/estimate_profile.py gpu
    .venv/bin/python benchmarks/estimate_profile.py full --train-images 55000
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.registry import Backend
from capsrobust.attacks.suites import load_suite
from capsrobust.benchmark import run_name
from capsrobust.evaluation.plan import PlannedModel, plan_cells
from capsrobust.models.base import capabilities_of
from capsrobust.models.recipes import Recipe, build_model, load_recipe
from capsrobust.profiles import get_profile

MEASURED = Path(__file__).resolve().parents[1] / "docs" / "gpu"
CELL_OVERHEAD_S = 0.3  # predicting, scoring and saving one cell of 1,000 images (outside the attack)
# Recipes the throughput table lacks, priced as another: cnn-recon is cnn-small's trunk plus a 3-MFLOP decoder.
PROXIES = {"cnn-recon": "cnn-small", "capsnet-paper-at": "capsnet-paper", "cnn-small-at": "cnn-small",
           "cnn-recon-at": "cnn-small"}
VALIDATION_IMAGES = 500  # mnist-5k's validation split, attacked after every epoch of an adversarial run
UNTIMED_STAGES_S = 60.0  # detection, figures and report: not yet timed on a GPU
PASSES_PER_APGD_STEP = 1.5  # ART's APGD: two forward passes and one backward per iteration
PASSES_PER_SQUARE_QUERY = 1.0  # ART's Square: three forward passes per query ≈ one forward and backward
ART_CW_FACTOR = 10.0  # ART's Carlini-Wagner line-searches every step: ~10× Foolbox's time on the CPU (docs/attacks.md)


def passes_per_image(attack: str, params: Mapping[str, float], backend: str = "art") -> float:
    """Forward-and-backward passes one image costs in one cell of ``attack`` (an upper bound for adaptive ones)."""
    restarts = params.get("restarts", 1)
    if attack == "fgsm":
        return 1.0
    if attack in {"apgd-ce", "apgd-ce-lengths", "apgd-dlr", "vote-apgd-ce"}:
        return PASSES_PER_APGD_STEP * params["steps"] * restarts
    if attack in {"apgd-t", "vote-apgd-t"}:
        return PASSES_PER_APGD_STEP * params["steps"] * params["targets"] * restarts
    if attack == "autoattack":
        apgd = PASSES_PER_APGD_STEP * params["apgd_steps"] * restarts * (1 + params["targets"])
        return apgd + PASSES_PER_SQUARE_QUERY * params["square_queries"]
    if attack == "square":
        return PASSES_PER_SQUARE_QUERY * params["queries"] * restarts
    if attack == "cw-l2":
        return params["binary_search_steps"] * params["max_iter"] * (ART_CW_FACTOR if backend == "art" else 1.0)
    return params["steps"] * restarts  # PGD and its vote and defense-aware variants


def rates(precision: str) -> dict[str, tuple[float, float]]:
    """recipe → (PGD image-steps/s at batch 1,000 in ``precision``, training img/s at batch 100 in tf32)."""
    rows = json.loads((MEASURED / "throughput-h100.json").read_text(encoding="utf-8"))["rows"]
    ok = [r for r in rows if r["status"] == "ok" and r["model"] == "capsrobust"]
    attack = {r["recipe"]: r["pgd_image_steps_s"] for r in ok if r["batch"] == 1000 and r["precision"] == precision}
    train = {r["recipe"]: r["train_img_s"] for r in ok if r["batch"] == 100 and r["precision"] == "tf32"}
    return {recipe: (attack[recipe], train[recipe]) for recipe in attack if recipe in train}


def training_attack_rates() -> dict[str, float]:
    """recipe → PGD image-steps/s at batch 100 in tf32: the training attack's rate (it attacks one training batch)."""
    rows = json.loads((MEASURED / "throughput-h100.json").read_text(encoding="utf-8"))["rows"]
    return {r["recipe"]: r["pgd_image_steps_s"] for r in rows if r["status"] == "ok" and r["model"] == "capsrobust"
            and r["batch"] == 100 and r["precision"] == "tf32"}


def training_seconds(recipe: Recipe, epochs: int, train_images: int, train_rate: float, attack_rate: float,
                     validation_rate: float) -> float:
    """Epochs of natural or adversarial training: updates, training attack steps, robust validation, overhead."""
    seconds = epochs * train_images / train_rate + epochs * training_overhead_per_epoch()
    if recipe.adversarial is not None:
        steps = recipe.adversarial.steps + (1 if recipe.adversarial.trades else 0)
        seconds += epochs * (train_images * steps / attack_rate
                             + VALIDATION_IMAGES * recipe.adversarial.val_steps / validation_rate)
    return seconds


def calibration(measured_rates: Mapping[str, tuple[float, float]]) -> float:
    """Median of measured / predicted seconds over the sweep cells measured on the card (ART's own overhead)."""
    cells = pd.read_csv(MEASURED / "sweep-cells-h100.csv")
    ratios = []
    for cell in cells.itertuples(index=False):
        rate = measured_rates[PROXIES.get(cell.recipe, cell.recipe)][0]
        predicted = cell.n * passes_per_image(cell.attack, json.loads(cell.params), cell.backend) / rate
        if cell.attack != "fgsm":  # FGSM cells are all overhead
            ratios.append(cell.seconds / predicted)
    return statistics.median(ratios)


def training_overhead_per_epoch() -> float:
    """Measured wall time of the gpu profile's training stage not spent in epochs, per epoch."""
    runs = pd.read_csv(MEASURED / "training-h100.csv")
    stage_seconds = json.loads((MEASURED / "stages-h100.json").read_text(encoding="utf-8"))["train"]
    return (stage_seconds - runs["seconds"].sum()) / len(runs)


def estimate(profile_name: str, train_images: int, precision: str | None = None) -> pd.DataFrame:
    profile = get_profile(profile_name)
    chosen_precision = precision or profile.attack_precision
    measured = rates(chosen_precision)
    factor = calibration(rates("tf32"))  # the measured sweep ran with cuDNN's default TF32 convolutions
    seeds = profile.seeds or (0,)
    suite = load_suite(profile.suite)
    training_attack = training_attack_rates()
    validation = rates("fp32")  # robust validation runs in fp32
    rows = []
    for seed in seeds:
        for recipe_name, epochs in profile.recipes:
            recipe = load_recipe(recipe_name)
            model = build_model(recipe)
            label = run_name(recipe_name, seed, seeds)
            backends = (Backend.ART, Backend.FOOLBOX) if profile.backend == "both" else (Backend(profile.backend),)
            planned = PlannedModel(label, AttackObjective.MARGIN, capabilities_of(model), seed)
            cells, _ = plan_cells(suite, [planned], backends, 0)
            attack_rate, train_rate = measured[PROXIES.get(recipe_name, recipe_name)]
            runs = {cell.run_key: cell for cell in cells}  # a minimisation attack runs once for all thresholds
            attack_seconds = sum(profile.n * passes_per_image(cell.attack, dict(cell.params), cell.backend.value)
                                 / attack_rate * factor for cell in runs.values()) + CELL_OVERHEAD_S * len(cells)
            measured_as = PROXIES.get(recipe_name, recipe_name)
            train_seconds = training_seconds(recipe, epochs, train_images, train_rate, training_attack[measured_as],
                                             validation[measured_as][0])
            rows.append({"run": label, "cells": len(cells), "attack_s": attack_seconds, "train_s": train_seconds})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--train-images", type=int, default=3500, help="training images (mnist-5k 3,500; MNIST 55,000)")
    parser.add_argument("--precision", help="attack precision [the profile's]")
    args = parser.parse_args()
    frame = estimate(args.profile, args.train_images, args.precision)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    train, attack = frame["train_s"].sum(), frame["attack_s"].sum()
    total = train + attack + UNTIMED_STAGES_S
    print(f"\n{args.profile}: training {train:.0f} s, sweep {attack:.0f} s ({frame['cells'].sum()} cells), "
          f"detection/figures/report {UNTIMED_STAGES_S:.0f} s (allowance) → about {total / 60:.1f} min on one H100")


if __name__ == "__main__":
    main()
