"""Robust against robust: adversarially trained capsules against adversarially trained CNNs, cost beside robustness.

Naturally trained models all fall to 0% at L∞ 0.3 on MNIST; the question an adversarially trained pair answers is
whether capsules trained the same way keep more. The section shows, for every model whose training run attacked its
batches (``run.json`` records the training attack), the training attack, the wall time and throughput of training
beside the best-attack robust accuracy with Wilson intervals, and then each capsule-minus-CNN difference between
adversarially trained models with its bootstrap interval over the same images. The self-checks come first in the
report (``checks.flags``): adversarially trained capsules are exactly where gradient masking would hide.
"""

from __future__ import annotations

import json
import shlex

import pandas as pd

from capsrobust.evaluation.compare import BEST_ATTACK, compare_models, is_capsule_model, worst_case
from capsrobust.evaluation.stats import wilson_interval
from capsrobust.models.recipes import AdversarialConfig
from capsrobust.reporting.context import ReportContext, concat, pct, pct_interval, seconds_text, tagged
from capsrobust.reporting.document import Draft, Heading, Paragraph, Table
from capsrobust.reporting.sources import Source


def training_attack_text(recorded: str) -> str:
    """``run.json``'s training attack (JSON) as one line, e.g. ``pgd-linf eps 0.3, 40 steps of 0.01``."""
    try:
        return AdversarialConfig(**json.loads(recorded)).describe()
    except (TypeError, ValueError):  # written by another capsrobust version: show it as recorded
        return recorded


def adversarial_models(source: Source) -> list[str]:
    """The models of ``source`` whose training runs were adversarial, in sweep order."""
    runs = source.runs
    if runs.empty or "training_attack" not in runs:
        return []
    return [str(model) for model, attack in zip(runs["model"], runs["training_attack"], strict=True)
            if isinstance(attack, str) and attack]


def robust_training(context: ReportContext, draft: Draft) -> None:
    cost_frames, pair_frames, blocks = [], [], []
    for source in context.sources:
        models = adversarial_models(source)
        if not models:
            continue
        results = source.tables.results
        worst = worst_case(results[results["model"].isin(models)], source.tables.examples)
        runs = source.runs.set_index("model")
        rows = []
        for row in worst.itertuples(index=False):
            low, high = wilson_interval(int(row.n_robust), int(row.n))
            run = runs.loc[row.model]
            rows.append({"model": row.model, "training_attack": training_attack_text(run["training_attack"]),
                         "epochs": run.get("epochs"), "train_seconds": run.get("train_seconds"),
                         "images_per_second": run.get("images_per_second"), "device": run.get("device"),
                         "best_robust_val_accuracy": run.get("best_robust_val_accuracy"), "norm": row.norm,
                         "eps": row.eps, "n": row.n, "clean_accuracy": row.clean_accuracy,
                         "robust_accuracy": row.robust_accuracy, "ci_low": low, "ci_high": high,
                         "attacks": row.attacks})
        frame = pd.DataFrame(rows)
        cost_frames.append(tagged(context, frame, source))
        display = frame.assign(
            training=[f"{attack}; {int(epochs)} epochs, {seconds_text(seconds)} s ({float(rate):.0f} img/s, {device})"
                      for attack, epochs, seconds, rate, device in zip(
                          frame["training_attack"], frame["epochs"], frame["train_seconds"],
                          frame["images_per_second"], frame["device"], strict=True)],
            clean=[pct(v) for v in frame["clean_accuracy"]],
            robust=pct_interval(frame["robust_accuracy"], frame["ci_low"], frame["ci_high"], bold=True),
        )[["model", "norm", "eps", "n", "clean", "robust", "training"]].rename(
            columns={"robust": "best-attack robust (%) [95% Wilson]", "training": "training (cost)"})
        blocks.append(Table("robust_training", display, (context.rebuild(),),
                            f"Adversarially trained models{f' ({source.shown})' if context.many else ''}: clean and "
                            "best-attack robust accuracy (%) beside what training them cost (wall time of the "
                            "training epochs, on the device named)."))
        rows_by_model = results.drop_duplicates("model").set_index("model")
        capsules = [m for m in models if is_capsule_model(rows_by_model.loc[m])]
        cnns = [m for m in models if not is_capsule_model(rows_by_model.loc[m])]
        for candidate in capsules:
            for baseline in cnns:
                pair = compare_models(source.tables, baseline, candidate, n_resamples=context.n_resamples,
                                      seed=context.seed)
                pair = pair[pair["attack"] == BEST_ATTACK].reset_index(drop=True)
                pair_frames.append(tagged(context, pair, source))
                shown = pair.assign(
                    base=[pct(v) for v in pair["baseline_robust_accuracy"]],
                    cand=[pct(v) for v in pair["candidate_robust_accuracy"]],
                    difference=[f"**{100 * d:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in
                                zip(pair["difference"], pair["ci_low"], pair["ci_high"], strict=True)],
                )[["norm", "eps", "n", "base", "cand", "difference"]].rename(columns={
                    "base": baseline, "cand": candidate, "difference": "difference (pts) [95% CI]"})
                command = shlex.join(["capsrobust", "compare", source.shown, "--baseline", baseline,
                                      "--candidate", candidate])
                blocks.append(Table("robust_comparison", shown, (("compute this table", command), context.rebuild()),
                                    f"{candidate} against {baseline}, both adversarially trained: best-attack "
                                    "robust accuracy (%) on the same images, difference with a bootstrap 95% "
                                    "interval over images."))
    if not blocks:
        return
    draft.add(Heading("Robust against robust: adversarially trained models"))
    draft.add(Paragraph(
        "Models trained on their own adversarial examples (Madry et al. 2018; TRADES, Zhang et al. 2019), judged by "
        "the per-image worst case over every attack of the sweep. Read the self-check flags at the top first: a "
        "gradient-free attack beating the gradient attacks, or robustness that does not fall at budgets above the "
        "training eps, would mean masked gradients, not robustness. Madry et al.'s MNIST network (cnn-small), "
        "trained on 60,000 digits, keeps 89.6% against PGD with 50 restarts at L∞ 0.3."))
    draft.blocks.extend(blocks)
    draft.tables["robust_training"] = concat(cost_frames)
    if pair_frames:
        draft.tables["robust_comparison"] = concat(pair_frames)
