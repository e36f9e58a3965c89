"""Capsules against CNNs: paired comparisons, model by model and across training seeds."""

from __future__ import annotations

import shlex

import pandas as pd

from capsrobust.evaluation.compare import BEST_ATTACK, NORM_ORDER, compare_models, is_capsule_model
from capsrobust.evaluation.seeds import compare_across_seeds, model_groups, multi_seed_groups
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    mode_note,
    num,
    pct,
    points_interval,
    seed_difference_numbers,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph, Table
from capsrobust.reporting.sources import Source


def _capsule_pairs(results: pd.DataFrame, names: dict[str, str]) -> list[tuple[str, str]]:
    """(baseline, candidate) for every CNN and capsule network among ``names`` (name → one of its models)."""
    rows = results.drop_duplicates("model").set_index("model")
    capsules = [name for name, model in names.items() if is_capsule_model(rows.loc[model])]
    others = [name for name, model in names.items() if not is_capsule_model(rows.loc[model])]
    return [(baseline, candidate) for candidate in capsules for baseline in others]


def comparison(context: ReportContext, draft: Draft) -> None:
    pairs, group_pairs = [], []
    for source in context.sources:
        results = source.tables.results
        grouped = multi_seed_groups(results)
        # recipes with several seeds are compared as groups; single runs model by model, as before seeds
        singles = {model: model for group, members in model_groups(results).items() if group not in grouped
                   for model, _ in members}
        pairs += [(source, baseline, candidate) for baseline, candidate in _capsule_pairs(results, singles)]
        group_pairs += [(source, baseline, candidate) for baseline, candidate in
                        _capsule_pairs(results, {group: members[0][0] for group, members in grouped.items()})]
    if group_pairs:
        _group_comparison(context, draft, group_pairs)
    if not pairs:
        return
    draft.add(Heading("Capsules against CNNs: paired comparison"))
    draft.add(Paragraph(
        "Candidate (capsule network) minus baseline (CNN) robust accuracy on the same images, in points, with a "
        "bootstrap 95% interval over images and McNemar's exact p-value on the images where exactly one model is "
        "robust (only_b: baseline only, only_c: candidate only). p-values are per row, not corrected for the "
        "number of rows. **best attack** rows compare the per-image worst cases."))
    raw = []
    for source, baseline, candidate in pairs:
        frame = compare_models(source.tables, baseline, candidate, n_resamples=context.n_resamples,
                               seed=context.seed)
        frame = frame.assign(_best=frame["attack"] != BEST_ATTACK, _norm=frame["norm"].map(NORM_ORDER))
        frame = frame.sort_values(["_best", "_norm", "label", "eps"], kind="stable")
        frame = frame.drop(columns=["_best", "_norm"]).reset_index(drop=True)
        raw.append(tagged(context, frame, source))
        display = frame.assign(
            attack=["**best attack**" if a == BEST_ATTACK else f"{label}/{backend}"
                    for a, label, backend in zip(frame["attack"], frame["label"], frame["backend"], strict=True)],
            norm=frame["norm"].map(NORM_TITLES),
            baseline_pct=[pct(v) for v in frame["baseline_robust_accuracy"]],
            candidate_pct=[pct(v) for v in frame["candidate_robust_accuracy"]],
            difference_pts=points_interval(frame["difference"], frame["ci_low"], frame["ci_high"]),
            p=[num(v) for v in frame["mcnemar_p"]],
        )
        display = display[["attack", "norm", "eps", "n", "baseline_pct", "candidate_pct", "difference_pts",
                           "only_baseline", "only_candidate", "p"]].rename(columns={
            "baseline_pct": baseline, "candidate_pct": candidate, "difference_pts": "difference (pts) [95% CI]",
            "only_baseline": "only_b", "only_candidate": "only_c", "p": "McNemar p"})
        command = shlex.join(["capsrobust", "compare", source.shown, "--baseline", baseline, "--candidate",
                              candidate])
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table("comparison", display, (("compute this table", command), context.rebuild()),
                                  f"{candidate} (candidate) against {baseline} (baseline){suffix}: robust "
                                  f"accuracy (%) on the same {int(frame['n'].max())} images."
                                  f"{mode_note(source.tables.results)}"))
    draft.tables["comparison"] = concat(raw)


def _group_comparison(context: ReportContext, draft: Draft, pairs: list[tuple[Source, str, str]]) -> None:
    draft.add(Heading("Capsules against CNNs across training seeds"))
    draft.add(Paragraph(
        "Candidate (capsule network) minus baseline (CNN) best-attack robust accuracy, in points, averaged over "
        "each recipe's training seeds, over the attacks every seed of both recipes faced. The 95% interval "
        "resamples each recipe's seeds independently and the test images jointly (they are the same images for "
        "both, so the pairing is kept). *per seed*: seed k against seed k, with an interval over images only."))
    raw = []
    for source, baseline, candidate in pairs:
        frame = compare_across_seeds(source.tables.results, source.tables.examples, baseline, candidate,
                                     n_resamples=context.n_resamples, seed=context.seed)
        raw.append(tagged(context, frame, source))
        display = seed_difference_numbers(frame)[
            ["norm", "eps", "n", "base", "cand", "difference", "per_seed_differences"]].rename(columns={
            "base": baseline, "cand": candidate, "difference": "difference (pts) [95% CI]",
            "per_seed_differences": "per seed (pts) [95% CI, images]"})
        command = shlex.join(["capsrobust", "compare", source.shown, "--baseline", baseline, "--candidate",
                              candidate])
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table("seed_comparison", display, (("compute this table", command), context.rebuild()),
                                  f"{candidate} (candidate) against {baseline} (baseline){suffix}, seeds "
                                  f"{frame['candidate_seeds'].iloc[0] if not frame.empty else ''} against "
                                  f"{frame['baseline_seeds'].iloc[0] if not frame.empty else ''}."))
    draft.tables["seed_comparison"] = concat(raw)
