"""Candidate against baseline, the comparison their names call for: model against model, or recipe over seeds.

``capsrobust compare`` takes two names. Two models of one sweep are compared image by image on every cell they
share (``compare.compare_models``: paired bootstrap and McNemar). Two recipes trained with several seeds
(``capsnet-paper-s0``, ``-s1``... in the sweep) are compared on their best attack, averaged over seeds, with an
interval over seeds and images (``seeds.compare_across_seeds``), since one seed's difference says little about the
recipe. Which of the two applies, and how its table reads, is decided here once, for the CLI and for Python users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pandas as pd

from capsrobust.evaluation.compare import CompareError, compare_models
from capsrobust.evaluation.seeds import compare_across_seeds, multi_seed_groups
from capsrobust.evaluation.store import SweepTables


class ComparisonKind(str, Enum):
    MODELS = "models"  # two models, cell by cell on the same images
    SEEDS = "seeds"  # two recipes, each trained with several seeds


@dataclass(frozen=True)
class Comparison:
    """The numbers (``table``, as the comparison functions return them) and how to read them."""

    kind: ComparisonKind
    baseline: str
    candidate: str
    table: pd.DataFrame
    paired_seeds: bool = False

    @property
    def heading(self) -> str:
        what = ("best-attack robust accuracy in % averaged over training seeds, over the attacks every seed of both "
                "faced" if self.kind is ComparisonKind.SEEDS else "robust accuracy in % on the same images")
        return f"{self.candidate} (candidate) minus {self.baseline} (baseline), {what}:"

    @property
    def footnote(self) -> str:
        if self.kind is ComparisonKind.SEEDS:
            seeds = "seed pairs (seed k of both together)" if self.paired_seeds else "seeds"
            return (f"difference in points with a 95% bootstrap interval over {seeds} and images; per seed: seed k "
                    "against seed k, interval over images")
        return ("difference in points with its bootstrap 95% interval over images; p: exact McNemar on the images "
                "where only one model is robust (per row, not corrected for the number of rows)")

    def display(self) -> pd.DataFrame:
        """The table as printed: percentages with one decimal, the difference with its interval."""
        frame = self.table
        if self.kind is ComparisonKind.SEEDS:
            first = ["norm", "eps", "n", "baseline_seeds", "candidate_seeds"]
            last = ["per_seed_differences"]
        else:
            frame = frame.assign(cell=[f"{label}/{backend}" for label, backend in
                                       zip(frame["label"], frame["backend"], strict=True)],
                                 p=[f"{value:.3g}" for value in frame["mcnemar_p"]])
            first = ["cell", "norm", "eps", "objective_baseline", "objective_candidate", "n"]
            last = ["only_baseline", "only_candidate", "p"]
        shown = frame.assign(
            baseline_robust=[f"{100 * value:.1f}" for value in frame["baseline_robust_accuracy"]],
            candidate_robust=[f"{100 * value:.1f}" for value in frame["candidate_robust_accuracy"]],
            difference_pts=[f"{100 * d:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]" for d, low, high in
                            zip(frame["difference"], frame["ci_low"], frame["ci_high"], strict=True)],
        )
        return shown[[*first, "baseline_robust", "candidate_robust", "difference_pts", *last]]


def compare(
    tables: SweepTables, baseline: str, candidate: str, *, n_resamples: int = 10_000, seed: int = 0,
    paired_seeds: bool = False,
) -> Comparison:
    """Seeds against seeds when both names are recipes trained with several seeds in the sweep, else model
    against model (``CompareError`` names the models there are when a name is neither). ``paired_seeds``
    resamples seed k of both recipes together (twins that one seed starts alike, ``seeds.compare_across_seeds``);
    it means nothing for two models and is refused there."""
    if {baseline, candidate} <= set(multi_seed_groups(tables.results)):
        table = compare_across_seeds(tables.results, tables.examples, baseline, candidate, n_resamples=n_resamples,
                                     seed=seed, paired_seeds=paired_seeds)
        return Comparison(ComparisonKind.SEEDS, baseline, candidate, table, paired_seeds)
    if paired_seeds:
        raise CompareError(f"paired seeds compare two recipes trained with several seeds; {baseline!r} and "
                           f"{candidate!r} are not both such recipes here: drop --paired-seeds")
    table = compare_models(tables, baseline, candidate, n_resamples=n_resamples, seed=seed)
    return Comparison(ComparisonKind.MODELS, baseline, candidate, table)
