"""The opening paragraphs: what was attacked, with what, and how to read the numbers."""

from __future__ import annotations

from capsrobust.reporting.context import (
    ReportContext,
    suite_of,
)
from capsrobust.reporting.document import Draft, Paragraph


def title(context: ReportContext, draft: Draft) -> None:
    lines = []
    for source in context.sources:
        request = source.record.get("request", {})
        models = ", ".join(str(m.get("model")) for m in request.get("models", []))
        suite = suite_of(source)
        described = f" ({suite['description']})" if suite.get("description") else ""
        lines.append(f"`{source.shown}`: models {models}; suite **{suite.get('name', '?')}**{described}; data "
                     f"{request.get('dataset')} test split, first {request.get('n')} images; backend "
                     f"{request.get('backend')}; seed {request.get('seed')}.")
    draft.add(Paragraph("Built from the result tables on disk only: " + " ".join(lines)))
    draft.add(Paragraph(
        "Robust accuracy is the share of the n images a model classifies correctly and the attack did not break "
        "(images it misclassifies clean count as broken). The **best attack** row is the per-image worst case "
        "over every attack run at that budget, as AutoAttack reports it, not an average. Intervals are 95%: "
        "Wilson intervals for single accuracies, bootstrap over images for paired differences. Percentages are "
        "rounded; `tables/*.csv` hold the raw numbers."))
