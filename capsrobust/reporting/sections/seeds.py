"""Across training seeds: each recipe's best-attack robust accuracy averaged over its seeds, two-level interval."""

from __future__ import annotations

import pandas as pd

from capsrobust.evaluation.seeds import across_seeds
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.context import (
    ReportContext,
    pct,
    pct_interval,
    tables_per_source,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph


def seeds(context: ReportContext, draft: Draft) -> None:
    """Per recipe over its training seeds: mean robust accuracy with an interval over seeds and images."""
    frames = [(source, across_seeds(source.tables.results, source.tables.examples, n_resamples=context.n_resamples,
                                    seed=context.seed)) for source in context.sources]
    frames = [(source, frame) for source, frame in frames if not frame.empty]
    if not frames:
        return
    draft.add(Heading("Across training seeds"))
    draft.add(Paragraph(
        "Each recipe was trained with several seeds (runs `RECIPE-sK`). Robust accuracy (%) under the best attack "
        "over the attacks that **every seed** of the recipe faced, averaged over seeds, with a 95% bootstrap "
        "interval that resamples training seeds and test images (two-level; with three seeds the seed level is a "
        "rough spread). *per seed*: each seed's own number. *full suite*: the worst case over every attack for "
        "the seed that faced the most (expensive attacks may run on one seed only), so the gap between the two "
        "columns is what those attacks add."))
    tables_per_source(
        context, draft, "seeds", frames, _shown,
        lambda suffix: f"Best-attack robust accuracy across training seeds{suffix}; the attacks shared by every seed "
                       f"are listed per row in tables/seeds.csv (common_attacks).")


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The seeds table as printed."""
    return frame.assign(
        norm=frame["norm"].map(NORM_TITLES),
        clean=[pct(v) for v in frame["clean_accuracy"]],
        robust=pct_interval(frame["robust_accuracy"], frame["ci_low"], frame["ci_high"], bold=True),
        per_seed=[" ".join(f"{part.split(':')[0]} {pct(float(part.split(':')[1]))}" for part in cell.split())
                  for cell in frame["per_seed"]],
        full=[f"{pct(v)} (s{int(s)})" if not pd.isna(v) else "" for v, s in
              zip(frame["full_suite_robust_accuracy"], frame["full_suite_seed"], strict=True)],
    )[["group", "norm", "eps", "n", "n_seeds", "clean", "robust", "per_seed", "full"]].rename(columns={
        "group": "recipe", "n_seeds": "seeds", "clean": "clean (mean)", "robust": "robust [95% CI]",
        "per_seed": "per seed", "full": "full suite"})
