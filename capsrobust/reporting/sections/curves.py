"""Robustness curves under the best attack, with the best-attack table behind them."""

from __future__ import annotations

import pandas as pd

from capsrobust.evaluation.compare import worst_case
from capsrobust.evaluation.stats import wilson_interval
from capsrobust.figures.results import NORM_TITLES, robustness_curves
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    pct,
    seconds_text,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading


def curves(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Robustness curves"))
    rows, raw = [], []
    for source in context.sources:
        worst = worst_case(source.tables.results, source.tables.examples)
        for _, row in worst.iterrows():
            low, high = wilson_interval(int(row["n_robust"]), int(row["n"]))
            series = f"{row['model']} ({source.shown})" if context.many else str(row["model"])
            rows.append({"series": series, "norm": row["norm"], "eps": row["eps"],
                         "robust_accuracy": row["robust_accuracy"], "ci_low": low, "ci_high": high,
                         "n": row["n"], "measured": True})
        for (model, norm), group in worst.groupby(["model", "norm"], sort=False):
            if (group["eps"] == 0).any():
                continue
            # At eps 0 no attack can change an image: robust accuracy is the clean accuracy.
            n, clean = int(group["n"].iloc[0]), float(group["clean_accuracy"].iloc[0])
            low, high = wilson_interval(round(clean * n), n)
            series = f"{model} ({source.shown})" if context.many else str(model)
            rows.append({"series": series, "norm": norm, "eps": 0.0, "robust_accuracy": clean, "ci_low": low,
                         "ci_high": high, "n": n, "measured": False})
        raw.append(tagged(context, worst, source))
    curves = pd.DataFrame(rows).sort_values(["series", "norm", "eps"], kind="stable").reset_index(drop=True)
    draft.tables["curves"] = curves
    draft.figure("robustness_curves.png", robustness_curves(curves),
                 "Robust accuracy under the best attack (per-image worst case over every attack at that eps) "
                 "against eps, one line per model, with 95% Wilson bands; L∞ and L2 threat models in separate "
                 "panels. Where no attack ran at eps 0 the curve starts at the clean accuracy (`tables/curves.csv`, "
                 "column measured = False).")
    best = concat(raw)
    display = best.assign(
        robust=[pct(v) for v in best["robust_accuracy"]],
        interval=[f"[{pct(lo)}, {pct(hi)}]" for lo, hi in (wilson_interval(int(k), int(n)) for k, n in
                                                             zip(best["n_robust"], best["n"], strict=True))],
        clean=[pct(v) for v in best["clean_accuracy"]],
        seconds=[seconds_text(v) for v in best["seconds"]],
        norm=best["norm"].map(NORM_TITLES),
        carried=best["n_carried"],
    )
    keep = [c for c in ("sweep", "model", "norm", "eps", "n", "clean", "robust", "interval", "attacks", "carried",
                        "seconds") if c in display.columns]
    draft.table("best_attack", best, display[keep],
                [("produced by", context.sweep_command(s)) for s in context.sources] + [context.rebuild()],
                "Best attack per (model, norm, eps): robust accuracy (%) with its 95% Wilson interval, the attacks "
                "(label/backend) run at that eps whose per-image outcomes were combined, and their summed wall time "
                "in seconds. An image broken at a smaller eps of the same norm counts as broken (an adversarial "
                "within 0.2 is one within 0.25 too); carried: how many images only that rule broke.")
