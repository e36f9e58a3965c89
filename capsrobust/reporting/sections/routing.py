"""Does routing matter? Per capsule model: robust accuracy through its routing, the masking gap the routing-free
attacks expose, and what is left under every attack (``capsrobust.evaluation.routing``)."""

from __future__ import annotations

from capsrobust.evaluation.routing import routing_table
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.context import ReportContext, concat, pct, pct_interval, tagged
from capsrobust.reporting.document import Draft, Heading, Paragraph, Table


def routing(context: ReportContext, draft: Draft) -> None:
    """Only for sweeps where some model faced a routing-free (vote) attack."""
    frames = [(source, routing_table(source.tables.results, source.tables.examples)) for source in context.sources]
    frames = [(source, frame) for source, frame in frames if not frame.empty]
    if not frames:
        return
    draft.add(Heading("Does routing matter?"))
    draft.add(Paragraph(
        "Robust accuracy (%) under every attack that differentiates the model's own forward pass, **through** its "
        "routing; the **masking gap**: the share of images that every such attack left robust and a routing-free "
        "attack broke (the vote attack: the squashed mean of the votes for dynamic and self-attention routing, one "
        "M-step with uniform assignments for EM), i.e. robustness that only the routing's gradients provided; and "
        "robust accuracy under the **best attack** per image. Intervals: Wilson 95% over images. A one-iteration "
        "model routes nothing (uniform coupling): its row is the no-routing baseline of the same architecture."))
    raw = []
    for source, frame in frames:
        raw.append(tagged(context, frame, source))
        display = frame.assign(
            norm=frame["norm"].map(NORM_TITLES),
            clean=[pct(v) for v in frame["clean_accuracy"]],
            through=pct_interval(frame["through_routing"], frame["through_routing_low"],
                                 frame["through_routing_high"]),
            gap=[f"{100 * v:+.1f}" for v in frame["masking_gap"]],
            best=pct_interval(frame["best_attack"], frame["best_attack_low"], frame["best_attack_high"], bold=True),
        )[["model", "norm", "eps", "n", "clean", "through", "gap", "best"]].rename(columns={
            "through": "through routing [95% CI]", "gap": "masking gap (pts)", "best": "best attack [95% CI]"})
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table(
            "routing", display, (("produced by", context.sweep_command(source)), context.rebuild()),
            f"Through the routing, the masking gap and the best attack per capsule model{suffix}; the attacks on "
            f"each side are listed per row in tables/routing.csv."))
    draft.tables["routing"] = concat(raw)
