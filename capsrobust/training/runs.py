"""One recipe trained once or with several seeds, here or through an executor, and what each run reached.

``capsrobust train`` and Python users ask the same question: train this recipe (with these seeds, on this
executor) and tell me where each run is and how it went. The branching lives here, not in the command line: one
seed without an executor trains here with progress bars; several seeds, or any executor, go through
``train_runs`` as jobs into ``OUT-sK`` (``OUT`` for a single seed), and a run that failed on every try is reported
rather than stopping the others.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from capsrobust.data import Dataset
from capsrobust.errors import RunError
from capsrobust.evaluation.stats import at_chance
from capsrobust.execution import Executor, Failure, LocalExecutor
from capsrobust.models.recipes import Recipe
from capsrobust.profiles import BenchmarkError
from capsrobust.runtime import read_table
from capsrobust.training.loop import TrainJob, TrainSettings, selection_metric, train, train_runs

DEFAULT_SETTINGS = TrainSettings()


@dataclass(frozen=True)
class TrainedRuns:
    """The runs that finished (run directory → its metrics, one row per epoch) and the jobs that failed."""

    finished: dict[Path, pd.DataFrame] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def seed_run_dir(out: Path, seed: int) -> Path:
    """Where seed ``seed`` of a multi-seed run goes: ``OUT-sK`` beside ``OUT`` (what ``capsrobust compare`` groups)."""
    return out.with_name(f"{out.name}-s{seed}")


def train_recipe(
    recipe: Recipe, dataset: Dataset, out: Path, settings: TrainSettings = DEFAULT_SETTINGS, *,
    seeds: Sequence[int] | None = None, executor: Executor | None = None,
) -> TrainedRuns:
    """Train ``recipe`` into ``out`` (one run, ``settings.seed``) or into ``OUT-sK`` for each of ``seeds``.

    One seed on no executor (or the local one) trains here, with ``settings.progress``; otherwise every run is a
    job of ``executor`` (default: here, one after another) without progress bars, and failures are returned.
    """
    if seeds is None and (executor is None or isinstance(executor, LocalExecutor)):
        return TrainedRuns({out: train(recipe, dataset, out, settings)})
    quiet = replace(settings, progress=False)
    jobs = ([TrainJob(recipe, seed_run_dir(out, seed), replace(quiet, seed=seed)) for seed in seeds]
            if seeds is not None else [TrainJob(recipe, out, quiet)])
    failures = train_runs(jobs, dataset, executor)
    failed = {failure.job.key for failure in failures}
    finished = {job.out_dir: read_table(job.out_dir / "metrics.csv") for job in jobs if str(job.out_dir) not in failed}
    return TrainedRuns(finished, failures)


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reached, as ``capsrobust train`` prints it; ``warning`` says when it is at chance."""

    line: str
    warning: str | None


def summarise_run(recipe: Recipe, dataset: Dataset, out: Path, metrics: pd.DataFrame) -> RunSummary:
    """The best epoch (by robust validation accuracy for adversarial runs), its time and throughput; a model at
    chance is named, since robust accuracy of a model at chance means nothing."""
    if metrics.empty:
        raise RunError(f"{out}: no epoch was trained; ask for at least one with --epochs")
    metric = selection_metric(recipe)
    best = metrics.loc[metrics[metric].idxmax()]
    robust = (f", robust {best[metric]:.4f} under {recipe.adversarial.val_steps}-step PGD at eps "
              f"{recipe.adversarial.eps:g}" if recipe.adversarial else "")
    precision = json.loads((out / "run.json").read_text(encoding="utf-8")).get("precision", "fp32")
    line = (f"{recipe.name} on {dataset.name}: best validation accuracy {best['val_accuracy']:.4f}{robust} "
            f"(epoch {int(best['epoch'])}), {metrics['seconds'].sum():.0f} s training, "
            f"{metrics['images_per_second'].mean():.0f} images/s in {precision}; run in {out}")
    warning = None
    if at_chance(float(best["val_accuracy"]), len(dataset.val), len(dataset.classes)):
        warning = (f"{recipe.name} is at chance (validation accuracy {best['val_accuracy']:.4f} on {len(dataset.val)} "
                   f"images, {len(dataset.classes)} classes): robust accuracy of a model at chance means nothing; "
                   f"retrain it (adversarial training: add --warmup-epochs)")
    return RunSummary(line, warning)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → (0, 1, 2); anything but distinct non-negative ASCII integers below 2^63 is refused in one line."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() and int(part) < 2**63 for part in parts):
        raise BenchmarkError(f"--seeds takes distinct non-negative integers separated by commas, e.g. 0,1,2; "
                             f"got {text!r}")
    return check_seeds([int(part) for part in parts])


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """Distinct integer training seeds, at least one; anything else is refused with one line."""
    values = tuple(seeds)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values) \
            or len(set(values)) != len(values):
        raise BenchmarkError(f"training seeds must be distinct non-negative integers, e.g. 0,1,2; got {list(values)!r}")
    return values
