"""Provenance: what each sweep ran with, the git commit, and attack wall times."""

from __future__ import annotations

import pandas as pd

import capsrobust
from capsrobust.attacks.registry import AttackKind
from capsrobust.reporting.context import (
    ReportContext,
    seconds_text,
    suite_of,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph


def provenance(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Provenance"))
    rows, cells = [], []
    for source in context.sources:
        request, results = source.record.get("request", {}), source.tables.results
        minimization = results["kind"] == AttackKind.MINIMIZATION.value
        once = pd.concat([results[~minimization],  # one CW run serves every threshold: count it once
                          results[minimization].drop_duplicates(["model", "label", "backend", "objective"])])
        versions = source.record.get("versions", {})
        rows.append({
            "sweep": source.shown, "command": context.sweep_command(source), "seed": request.get("seed"),
            "suite": suite_of(source).get("name"), "suite_sha256": str(request.get("suite_sha256", ""))[:12],
            "data": request.get("dataset"), "n": request.get("n"), "backend": request.get("backend"),
            "objective": request.get("objective") or "each model's default",
            "device": ", ".join(sorted(set(map(str, results["device"])))),
            "batch_size": request.get("batch_size"), "cells": len(results),
            "attack_seconds": float(once["seconds"].sum()),
            "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        })
        per_model = once.groupby("model", sort=False)["seconds"].sum()
        for model, seconds in per_model.items():
            cells.append({**({"sweep": source.shown} if context.many else {}), "model": model,
                          "cells": int((results["model"] == model).sum()), "attack_seconds": float(seconds)})
    frame = pd.DataFrame(rows)
    draft.add(Paragraph(f"Git commit of the capsrobust checkout that built this report: `{context.commit}`. "
                        f"capsrobust {capsrobust.__version__}. Rebuild the whole report with `{context.command}`. "
                        f"Every path in this report is relative to the directory in which this report is "
                        f"`{context.paths.show(context.target)}`; run the commands from there."))
    display = frame.assign(attack_seconds=[seconds_text(v) for v in frame["attack_seconds"]])
    if len(display) == 1:  # one sweep: a two-column table reads better than one very wide row
        display = pd.DataFrame({"field": display.columns, "value": display.iloc[0].astype(str).to_numpy()})
    draft.table("provenance", frame, display, [context.rebuild()],
                "What each sweep was asked for and ran with: its command line, seed, suite (and its SHA-256), data, "
                "backend, device, library versions, and the wall time of its attacks in seconds (a CW run counted "
                "once). Per-cell wall times and seeds are in tables/headline.csv.")
    wall = pd.DataFrame(cells)
    draft.table("wall_times", wall, wall.assign(attack_seconds=[seconds_text(v) for v in wall["attack_seconds"]]),
                [context.rebuild()], "Attack wall time per model (seconds).")
