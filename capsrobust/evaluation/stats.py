"""Paired statistics for comparing two models on the same examples.

Two models attacked on the same test images give paired per-example outcomes (robust or not). The difference of
their robust accuracies gets a bootstrap 95% interval that resamples *examples* (keeping the pairing), and
McNemar's exact test asks whether the examples on which exactly one of the two models is robust split evenly.
Both are standard for paired classifier comparisons (Dietterich 1998, *Approximate Statistical Tests for Comparing
Supervised Classification Learning Algorithms*).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline accuracy on the same examples, with its uncertainty."""

    n: int
    baseline_accuracy: float
    candidate_accuracy: float
    difference: float
    ci_low: float
    ci_high: float
    only_baseline: int  # examples the baseline gets right and the candidate wrong
    only_candidate: int  # examples the candidate gets right and the baseline wrong
    mcnemar_p: float


def bootstrap_interval(
    baseline: np.ndarray, candidate: np.ndarray, n_resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(candidate) − mean(baseline), resampling paired examples."""
    per_example = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = per_example.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # chunks keep memory at 1000 × n
        count = min(1000, n_resamples - start)
        means[start : start + count] = per_example[rng.integers(0, n, size=(count, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def mcnemar_exact(only_baseline: int, only_candidate: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against Binomial(b + c, ½)."""
    discordant = only_baseline + only_candidate
    if discordant == 0:
        return 1.0
    from scipy.stats import binom  # scipy.stats costs half a second: only where a test is asked for

    return float(min(1.0, 2.0 * binom.cdf(min(only_baseline, only_candidate), discordant, 0.5)))


def compare_paired(
    baseline_correct: np.ndarray, candidate_correct: np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> PairedComparison:
    """Compare two boolean per-example outcome vectors over the same examples."""
    baseline = np.asarray(baseline_correct, dtype=bool)
    candidate = np.asarray(candidate_correct, dtype=bool)
    if baseline.shape != candidate.shape:
        raise ValueError(f"paired outcomes differ in length: {baseline.size} vs {candidate.size}")
    low, high = bootstrap_interval(baseline, candidate, n_resamples, seed=seed)
    only_baseline = int((baseline & ~candidate).sum())
    only_candidate = int((candidate & ~baseline).sum())
    n = int(baseline.size)
    return PairedComparison(
        n=n,
        baseline_accuracy=float(baseline.mean()) if n else float("nan"),
        candidate_accuracy=float(candidate.mean()) if n else float("nan"),
        difference=float(candidate.mean() - baseline.mean()) if n else float("nan"),
        ci_low=low,
        ci_high=high,
        only_baseline=only_baseline,
        only_candidate=only_candidate,
        mcnemar_p=mcnemar_exact(only_baseline, only_candidate),
    )


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: sensible at 0 and 1, where robust accuracies often sit."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: rounding leaves 1e-17 otherwise
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)


def _resample_counts(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` bootstrap resamples of ``size`` items, as how often each item was drawn: (count, size)."""
    draws = rng.integers(0, size, size=(count, size))
    counts = np.zeros((count, size))
    np.add.at(counts, (np.repeat(np.arange(count), size), draws.ravel()), 1.0)
    return counts


def seed_image_means(
    outcomes: Sequence[np.ndarray], image_counts: np.ndarray, rng: np.random.Generator, paired_seeds: bool = False
) -> list[np.ndarray]:
    """Resampled grand means of (seeds, images) outcome matrices: seeds drawn per matrix, images shared.

    ``image_counts`` (R, n) says how often each image is drawn in each of R resamples; every matrix gets its own
    seed resample, so two models' seeds stay independent while their images stay paired. With ``paired_seeds``
    one seed resample serves every matrix (row k of each is seed k: they must have as many rows).
    """
    shared = None
    if paired_seeds:
        rows = {np.shape(matrix)[0] for matrix in outcomes}
        if len(rows) != 1:
            raise ValueError(f"paired seeds need as many seeds (rows) in every matrix, got {sorted(rows)}")
        shared = _resample_counts(rng, image_counts.shape[0], rows.pop())
    means = []
    for matrix in outcomes:
        values = np.asarray(matrix, dtype=np.float64)  # (S, n)
        seeds, n = values.shape
        seed_counts = shared if shared is not None else _resample_counts(rng, image_counts.shape[0], seeds)  # (R, S)
        means.append(np.einsum("rs,sn,rn->r", seed_counts, values, image_counts) / (seeds * n))
    return means


def two_level_interval(
    candidate: np.ndarray, baseline: np.ndarray | None = None, n_resamples: int = 10_000, level: float = 0.95,
    seed: int = 0, paired_seeds: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval over training seeds *and* test images.

    ``candidate`` (and ``baseline``) hold per-image outcomes, one row per training seed: (S, n), the same n images
    in the same order in every row. Each resample draws seeds with replacement (by default each model on its own,
    for models whose seed k has nothing to do with each other's; see ``paired_seeds``) and images with replacement
    (one draw shared by both models, which keeps the images paired), then takes the grand mean. Without ``baseline``
    the interval is for the candidate's mean accuracy; with it, for candidate − baseline. Crossed rather than
    nested: every seed was evaluated on the same images, so the images are one factor, not one per seed. With few
    seeds (three, say) the seed level is a rough spread, not a precise one; the interval is still wider, and more
    honest, than one that resamples images of a single training run.

    ``paired_seeds`` draws seed *pairs* instead: row k of ``candidate`` and of ``baseline`` must be one training
    seed that fixes the same things for both, as for twins that differ only in routing (the same seed gives them
    the same initial weights and the same batches). What the seed does to both then cancels in the difference, as
    what an image does cancels through the shared image draw; with seeds that link nothing the pairs are still
    independent draws, so the interval stays valid, only no narrower.
    """
    matrices = [np.atleast_2d(candidate)] + ([np.atleast_2d(baseline)] if baseline is not None else [])
    n = matrices[0].shape[1]
    if n == 0 or any(m.shape[1] != n or m.shape[0] == 0 for m in matrices):
        raise ValueError("two-level bootstrap needs the same non-empty set of images for every seed and model")
    rng = np.random.default_rng(seed)
    samples = np.empty(n_resamples)
    for start in range(0, n_resamples, 1000):  # chunks keep memory at 1000 × n
        count = min(1000, n_resamples - start)
        means = seed_image_means(matrices, _resample_counts(rng, count, n), rng, paired_seeds=paired_seeds)
        samples[start : start + count] = means[0] - (means[1] if baseline is not None else 0.0)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def at_chance(accuracy: float, n: int, classes: int) -> bool:
    """Whether a clean accuracy says the model learned nothing worth attacking: below 50%, or a 95% Wilson interval
    that holds 1/K. Robust accuracy of such a model means nothing (a tiny CNN adversarially trained without warm-up
    collapses to 10%, and every attack then "fails" on the images it gets right by luck)."""
    if n <= 0:
        return False
    low, high = wilson_interval(round(accuracy * n), n)
    return accuracy < 0.5 or low <= 1.0 / max(classes, 1) <= high
