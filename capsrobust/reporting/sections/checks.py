"""The self-checks: their flags first (so a flagged evaluation is never read past), the full table near the end."""

from __future__ import annotations

import pandas as pd

from capsrobust.evaluation.stats import at_chance
from capsrobust.evaluation.store import SweepTables
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    tagged,
)
from capsrobust.reporting.document import Alert, Draft, Heading

FEW_MODELS = 6  # an unfinished budget names its models up to this many, then counts them


def flags(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Self-checks: flags"))
    items, passed, skipped = [], 0, 0
    missing: list[pd.DataFrame] = []
    for source in context.sources:
        checks = source.tables.checks
        where = f"{source.shown}: " if context.many else ""
        if checks.empty:  # a sweep writes its checks when it ends: this one was stopped, or is still running
            items.append(f"{where}{_unfinished(source.tables)}")
            missing.append(tagged(context, source.tables.missing_cells(), source))
        for _, row in checks[checks["status"] == "flag"].iterrows():
            items.append(f"{where}**{row['check']}** ({row['model']}): {row['detail']}")
        items += [f"{where}{item}" for item in _at_chance(source.tables.results, source.tables.examples)]
        passed += int((checks["status"] == "pass").sum())
        skipped += int((checks["status"] == "skip").sum())
    if any(not frame.empty for frame in missing):
        draft.tables["unfinished"] = concat(missing)
    if items:
        draft.add(Alert(f"{len(items)} self-check(s) flagged: read these before trusting any number below",
                        tuple(items), True))
    else:
        draft.add(Alert("No self-check flagged", (f"{passed} passed, {skipped} skipped (see the full table of "
                                                  f"checks near the end; after Carlini et al. 2019)",), False))


def all_checks(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Self-checks: full table"))
    frame = concat([tagged(context, source.tables.checks, source) for source in context.sources])
    draft.table("checks", frame, frame, [("produced by", context.sweep_command(s)) for s in context.sources]
                + [context.rebuild()],
                "Every self-check of the sweeps (pass, flag, skip), after Carlini et al. (2019), *On Evaluating "
                "Adversarial Robustness*; see docs/attacks.md for what each one tests.")


def _unfinished(tables: SweepTables) -> str:
    """What a sweep that has not ended leaves open: the budgets still missing cells (where a model's best-attack
    number misses attacks, so it is an upper bound), the complete ones, and that no self-check has run."""
    planned, missing = tables.plan, tables.missing_cells()
    if planned.empty:  # a sweep from before plans were recorded: how much is left is unknown
        return ("**unfinished sweep**: no self-check has been computed for it (they are written when the sweep "
                "ends); resume it with `--resume` before trusting its numbers")

    def budget(norm: str, eps: float) -> str:
        return f"{NORM_TITLES.get(norm, norm)} {eps:g}"

    def models(rows: pd.DataFrame) -> str:
        names = list(dict.fromkeys(rows["model"]))
        return f": {', '.join(names)}" if len(names) <= FEW_MODELS else f" of {len(names)} models"

    open_budgets = [f"{budget(norm, eps)} ({len(rows)} cells{models(rows)})"
                    for (norm, eps), rows in missing.groupby(["norm", "eps"], sort=True)]
    done = sorted({(norm, eps) for norm, eps in zip(planned["norm"], planned["eps"], strict=True)}
                  - {(norm, eps) for norm, eps in zip(missing["norm"], missing["eps"], strict=True)})
    complete = ", ".join(budget(norm, eps) for norm, eps in done) or "none yet"
    return (f"**unfinished sweep**: {len(planned) - len(missing)} of {len(planned)} planned cells done. Still to run: "
            f"{'; '.join(open_budgets) or 'nothing (the sweep has not written its checks yet)'}; at those budgets the "
            f"best-attack numbers of those models miss attacks and are upper bounds (tables/unfinished.csv lists "
            f"the cells). Complete for every model: {complete}. No self-check has run yet (they are written when "
            f"the sweep ends); resume it with `--resume` before trusting the open budgets")


def _at_chance(results: pd.DataFrame, examples: pd.DataFrame) -> list[str]:
    """A line for each model whose clean accuracy is at chance (``stats.at_chance``); K is the number of labels the
    attacked images carry."""
    classes = int(examples["label"].nunique()) if len(examples) else 10
    lines = []
    for model, rows in results.groupby("model", sort=False):
        accuracy, n = float(rows["clean_accuracy"].iloc[0]), int(rows["n"].iloc[0])
        if at_chance(accuracy, n, classes):
            lines.append(f"**at chance** ({model}): clean accuracy {100 * accuracy:.1f}% on {n} images of {classes} "
                         f"classes; robust accuracy of a model at chance means nothing")
    return lines
