"""Carlini–Wagner L2 perturbation sizes: how far the minimisation attack had to go per model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capsrobust.attacks.registry import AttackKind
from capsrobust.figures.results import perturbation_sizes
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    num,
    seconds_text,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph


def perturbations(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Carlini–Wagner L2 perturbation sizes"))
    sizes, summary = [], []
    for source in context.sources:
        results, examples = source.tables.results, source.tables.examples
        cw = results[results["kind"] == AttackKind.MINIMIZATION.value]
        # Every threshold cell of one CW run holds the same adversarials: read the first cell of each run.
        for (model, label, backend, _), run in cw.groupby(["model", "label", "backend", "objective"],
                                                                  sort=False):
            first = run.iloc[0]
            cell = examples[examples["cell_id"] == first["cell_id"]]
            correct = cell["clean_pred"] == cell["label"]
            found = cell[correct & (cell["adv_pred"] != cell["label"])]
            name = f"{model} ({backend})" if cw["backend"].nunique() > 1 else str(model)
            if context.many:
                name = f"{name} — {source.shown}"
            sizes.append(pd.DataFrame({"series": name, "l2": found["l2"].to_numpy()}))
            l2 = found["l2"]
            summary.append({
                **({"sweep": source.shown} if context.many else {}), "model": model, "label": label,
                "backend": backend, "objective_used": first["objective_used"], "n": len(cell),
                "n_clean_correct": int(correct.sum()), "n_found": len(found),
                "found_rate": len(found) / int(correct.sum()) if int(correct.sum()) else np.nan,
                "l2_q25": l2.quantile(0.25) if len(l2) else np.nan, "l2_median": l2.median() if len(l2) else np.nan,
                "l2_q75": l2.quantile(0.75) if len(l2) else np.nan, "l2_mean": l2.mean() if len(l2) else np.nan,
                "params": first["params"], "seconds": float(first["seconds"]), "seed": first["seed"],
                "command": context.sweep_command(source),
            })
    if not summary:
        draft.add(Paragraph("No Carlini–Wagner L2 cells in these sweeps (the quick suite has none); the standard "
                            "and full suites run `cw-l2`."))
        return
    frame = pd.DataFrame(summary)
    draft.figure("cw_l2.png", perturbation_sizes(concat(sizes)),
                 "L2 size of the Carlini–Wagner adversarials per model, over the clean-correct images the attack "
                 "misclassified (left: histogram, right: cumulative share). Larger means harder to fool; the "
                 "images where CW found nothing are counted in the table (n_found).")
    found = [f"{f} / {c}" for f, c in zip(frame["n_found"], frame["n_clean_correct"], strict=True)]
    display = frame.assign(found=found,
                           **{key: [num(v) for v in frame[key]] for key in ("l2_q25", "l2_median", "l2_q75",
                                                                              "l2_mean")},
                           seconds=[seconds_text(v) for v in frame["seconds"]])
    keep = [c for c in ("sweep", "model", "backend", "objective_used", "found", "l2_q25", "l2_median", "l2_q75",
                        "l2_mean", "seconds") if c in display.columns]
    draft.table("cw_l2", frame.drop(columns=["command"]), display[keep],
                [("produced by", context.sweep_command(s)) for s in context.sources] + [context.rebuild()],
                "CW L2 adversarials found among the clean-correct images, and the quartiles and mean of their L2 "
                "norm; seconds: wall time of the one CW run per model and backend.")
