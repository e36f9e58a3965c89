"""The self-checks: their flags first (so a flagged evaluation is never read past), the full table near the end."""

from __future__ import annotations

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
        for _, row in checks[checks["status"] == "flag"].iterrows():
            where = f"{source.shown}: " if context.many else ""
            items.append(f"{where}**{row['check']}** ({row['model']}): {row['detail']}")
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
