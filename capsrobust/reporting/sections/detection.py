"""The reconstruction-error detector: thresholds, undetected success with and without the defense-aware
attack, per-cell AUCs, and one ROC figure drawn from the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capsrobust.detection.pipeline import DetectionTables
from capsrobust.detection.summary import DEFENSE_AWARE_ATTACKS, undetected_success
from capsrobust.figures.results import NORM_TITLES, roc_panels
from capsrobust.reporting.context import (
    ReportContext,
    caption,
    concat,
    figure_name,
    num,
    pct,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph
from capsrobust.reporting.sources import Source


def detection(context: ReportContext, draft: Draft) -> None:
    draft.add(Heading("Reconstruction-error detector"))
    with_tables = [s for s in context.sources if s.detection is not None and not s.detection.detection.empty]
    if not with_tables:
        names = " ".join(s.shown for s in context.sources)
        draft.add(Paragraph(f"No detection tables in these sweeps: run `capsrobust detect {names}` (needs a sweep "
                            f"run with `--save-adversarials` and a model with a decoder) and rebuild the report."))
        return
    _introduce(draft, with_tables)
    commands = [("produced by", _detection_command(context, s)) for s in with_tables]
    _thresholds_table(context, draft, with_tables, commands)
    _defense_aware_table(context, draft, with_tables, commands)
    _cells_table(context, draft, with_tables, commands)
    _roc_figure(context, draft, with_tables)
    for source in with_tables:
        # the report draws its one ROC figure above from the tables; `capsrobust detect`'s own ROC would repeat it
        for path in (p for p in source.detection_figures if not p.stem.startswith(DETECT_ROC_FIGURE)):
            name = figure_name(context, source, path.name)
            draft.figure(name, path, f"{caption(path)} (written by `capsrobust detect`"
                                     f"{', ' + source.shown if context.many else ''}).")


def _tables(source: Source) -> DetectionTables:
    assert source.detection is not None  # the section keeps only sources with detection tables
    return source.detection


def _introduce(draft: Draft, with_tables: list[Source]) -> None:
    draft.add(Paragraph(
        "The detector flags an input when its reconstruction from the predicted class lies farther from it than a "
        "threshold, the chosen percentile of clean validation scores (DARCCC, Frosst et al. 2018). **Undetected "
        "success** is the share of attacked images that are misclassified and not flagged: what an attacker "
        "facing model and detector achieves. The defense-aware attack (`pgd-linf-recon`, Qin et al. 2020) "
        "minimises the reconstruction distance while it attacks the class; a detector is only worth what it "
        "keeps against that attack."))
    if not any(_tables(s).detection["attack"].isin(DEFENSE_AWARE_ATTACKS).any() for s in with_tables):
        draft.add(Paragraph(
            f"**No defense-aware attack in these detection tables**: the detector is measured only against attacks "
            f"that ignore it, which overstates it. Add `pgd-linf-recon` to the suite "
            f"({', '.join(sorted(DEFENSE_AWARE_ATTACKS))} are recognised)."))
    skipped = [f"{row['model']} ({row['reason']})" for source in with_tables
               for _, row in _tables(source).skipped.iterrows()]
    if skipped:
        draft.add(Paragraph("Not measured: " + "; ".join(skipped) + "."))


Commands = list[tuple[str, str]]


def _thresholds_table(context: ReportContext, draft: Draft, with_tables: list[Source], commands: Commands) -> None:
    frame = concat([tagged(context, _tables(source).thresholds, source) for source in with_tables])
    if frame.empty:
        return
    display = frame.assign(**{k: [num(v, 4) for v in frame[k]] for k in ("threshold",) if k in frame},
                           **{k: [pct(v) for v in frame[k]] for k in ("clean_test_fpr",) if k in frame})
    draft.table("detection_thresholds", frame, display, [*commands, context.rebuild()],
                "Thresholds per model: the percentile of clean validation scores, and the false-positive rate "
                "that threshold gives on the clean test images (%).")


def _defense_aware_table(context: ReportContext, draft: Draft, with_tables: list[Source], commands: Commands) -> None:
    frame = concat([tagged(context, undetected_success(_tables(source)), source) for source in with_tables])
    if frame.empty:
        return
    display = frame.assign(**{k: [pct(v) for v in frame[k]] for k in
                              ("standard_worst", "defense_aware", "all_worst")},
                           **{k: [num(v) for v in frame[k]] for k in ("auc_standard_min", "auc_defense_aware")},
                           norm=frame["norm"].map(NORM_TITLES)).rename(columns=DEFENSE_AWARE_HEADERS)
    draft.table("detection_defense_aware", frame, display, [*commands, context.rebuild()],
                "Undetected success (%) per model and eps: worst case per image over the standard attacks, the "
                "defense-aware attack alone, and the worst case over all attacks (an image an attack got past "
                "model and detector at a smaller eps of the same norm counts at larger ones); lowest AUC among "
                "the standard attacks at that eps and the AUC against the defense-aware attack.")


def _cells_table(context: ReportContext, draft: Draft, with_tables: list[Source], commands: Commands) -> None:
    cells = []
    for source in with_tables:
        shown = _tables(source).detection
        if "command" in shown:
            shown = shown.assign(command=[context.paths.command(str(c)) for c in shown["command"].fillna("")])
        cells.append(tagged(context, shown, source))
    frame = concat(cells)
    display = frame.assign(
        attack=[f"{label}/{backend}" for label, backend in zip(frame["label"], frame["backend"], strict=True)],
        **{k: [num(v) for v in frame[k]] for k in ("auc", "auc_all") if k in frame},
        **{k: [pct(v) for v in frame[k]] for k in ("true_positive_rate", "false_positive_rate",
                                                   "attack_success_rate", "undetected_success_rate") if k in frame},
    )
    keep = [c for c in ("sweep", "model", "attack", "eps", "n", "auc", "auc_all", "false_positive_rate",
                        "true_positive_rate", "attack_success_rate", "undetected_success_rate") if c in display]
    draft.table("detection", frame, display[keep], [*commands, context.rebuild()],
                "Per attack cell: ROC AUC of successful adversarials (auc) and of every attacked image (auc_all) "
                "against clean images; rates in %: false positives on clean test images, true positives among "
                "successful adversarials, attack success, undetected success.")


def _roc_figure(context: ReportContext, draft: Draft, with_tables: list[Source]) -> None:
    roc = concat([_roc_scores(context, source, _tables(source)) for source in with_tables])
    if roc.empty:
        return
    fprs = {str(row["model"]): float(row.get("clean_test_fpr", np.nan))
            for source in with_tables for _, row in _tables(source).thresholds.iterrows()}
    draft.figure("detector_roc.png", roc_panels(roc, fprs),
                 "ROC curves of the detector per model, every attack in one panel (defense-aware ones marked) at "
                 "its largest eps: successful adversarials against the same images clean. The dashed line is "
                 "the calibrated threshold's false-positive rate on clean test images.")


#: The ROC figure `capsrobust detect` writes beside its tables (detection_roc.png), left out of reports.
DETECT_ROC_FIGURE = "detection_roc"

DEFENSE_AWARE_HEADERS = {
    "standard_worst": "undetected, standard attacks (worst case)", "defense_aware": "undetected, defense-aware",
    "all_worst": "undetected, all attacks (worst case)", "auc_standard_min": "AUC, standard (lowest)",
    "auc_defense_aware": "AUC, defense-aware",
}


def _detection_command(context: ReportContext, source: Source) -> str:
    assert source.detection is not None
    commands = source.detection.detection.get("command")
    if commands is not None and len(commands.dropna()):
        return context.paths.command(str(commands.dropna().iloc[0]))
    return f"capsrobust detect {source.shown}"


def _roc_scores(context: ReportContext, source: Source, tables: DetectionTables) -> pd.DataFrame:
    """Score rows for the ROC figure: each attack (label/backend) at its largest eps, against the same images clean."""
    cells, examples = tables.detection, tables.examples
    if cells.empty or examples.empty:
        return pd.DataFrame()
    frames = []
    for (_, _, _), group in cells.groupby(["model", "label", "backend"], sort=False):
        cell = group.loc[group["eps"].idxmax()]
        rows = examples[examples["cell_id"] == cell["cell_id"]]
        mark = " (defense-aware)" if cell["attack"] in DEFENSE_AWARE_ATTACKS else ""
        name = f"{cell['label']}/{cell['backend']} eps {cell['eps']:g}{mark}"
        model = f"{cell['model']} ({source.shown})" if context.many else str(cell["model"])
        successful = rows[rows["success"].astype(bool)]
        frames.append(pd.DataFrame({"model": model, "curve": name, "kind": "adversarial",
                                    "score": successful["adv_score"].to_numpy()}))
        frames.append(pd.DataFrame({"model": model, "curve": name, "kind": "clean",
                                    "score": rows["clean_score"].to_numpy()}))
    return concat(frames)
