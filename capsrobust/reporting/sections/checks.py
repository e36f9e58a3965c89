"""The self-checks: their flags first (so a flagged evaluation is never read past), the full table near the end."""

from __future__ import annotations

import pandas as pd

from capsrobust.evaluation.stats import at_chance
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    tagged,
)
from capsrobust.reporting.document import Alert, Draft, Heading


def flags(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Self-checks: flags"))
    items, passed, skipped = [], 0, 0
    for source in context.sources:
        checks = source.tables.checks
        where = f"{source.shown}: " if context.many else ""
        if checks.empty:  # a sweep writes its checks when it ends: this one was stopped, or is still running
            items.append(f"{where}**unfinished sweep**: no self-check has been computed for it (they are written when "
                         f"the sweep ends); resume it with `--resume` before trusting its numbers")
        for _, row in checks[checks["status"] == "flag"].iterrows():
            items.append(f"{where}**{row['check']}** ({row['model']}): {row['detail']}")
        items += [f"{where}{item}" for item in _at_chance(source.tables.results, source.tables.examples)]
        passed += int((checks["status"] == "pass").sum())
        skipped += int((checks["status"] == "skip").sum())
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
