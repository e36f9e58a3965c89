"""The PNGs the benchmark drew into the sweeps' figures/ folders: reconstructions, tweaks, gallery."""

from __future__ import annotations

from capsrobust.reporting.context import (
    ReportContext,
    caption,
    figure_name,
    figure_order,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph


def figures(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Reconstructions, capsule tweaks and adversarial gallery"))
    found = [(source, path) for source in context.sources for path in sorted(source.figures, key=figure_order)]
    if not found:
        names = " ".join(source.shown for source in context.sources)
        draft.add(Paragraph(
            f"No figures in the sweeps' `figures/` folders. `capsrobust benchmark` writes them; by hand: "
            f"`capsrobust reconstruct RUN --out SWEEP/figures/reconstruction-MODEL.png`, `capsrobust tweak RUN "
            f"--out SWEEP/figures/tweak-MODEL.png`, `capsrobust gallery SWEEP --out SWEEP/figures/gallery.png` "
            f"(for {names}), then rebuild the report."))
        return
    draft.add(Paragraph("These PNGs are taken as they are from the result directories' `figures/` folders, where "
                        "`capsrobust benchmark` drew them from the swept checkpoints with `capsrobust.figures`, "
                        "so the report needs neither the models nor the data to be rebuilt."))
    for source, path in found:
        draft.figure(figure_name(context, source, path.name), path, caption(path) + (
            f" ({source.shown})" if context.many else ""))
