"""The training runs behind the swept checkpoints."""

from __future__ import annotations

import pandas as pd

from capsrobust.reporting.context import (
    ReportContext,
    concat,
    pct,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph


def training(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Training runs"))
    frame = concat([tagged(context, source.runs, source) for source in context.sources])
    if frame.empty or not frame.get("found", pd.Series(dtype=bool)).any():
        draft.add(Paragraph("The run directories named in sweep.json were not found from here; the sweep tables "
                            "still identify each checkpoint by its SHA-256."))
    if frame.empty:
        return
    display = frame.assign(
        **{k: [pct(v) for v in frame[k]] for k in ("best_val_accuracy",) if k in frame},
        **{k: ["" if pd.isna(v) else f"{v:.0f}" for v in frame[k]] for k in ("train_seconds", "images_per_second")
           if k in frame},
    )
    keep = [c for c in ("sweep", "model", "run", "recipe", "epochs", "best_val_accuracy", "best_epoch",
                        "train_seconds", "images_per_second", "device", "seed", "weights_sha256") if c in display]
    commands = sorted({str(c) for c in frame.get("command", pd.Series(dtype=str)).dropna() if str(c)})
    draft.table("training", frame, display[keep], [("trained by", c) for c in commands] + [context.rebuild()],
                "Training runs behind the swept checkpoints (best = highest validation accuracy, %); wall time in "
                "seconds; the first 12 hex digits of the weights' SHA-256.")
