"""Does routing matter? Per capsule model: robust accuracy through its routing, the masking gap the routing-free
attacks expose, and what is left under every attack (``capsrobust.evaluation.routing``)."""

from __future__ import annotations

import shlex

import numpy as np
import pandas as pd

from capsrobust.detection.summary import undetected_success
from capsrobust.evaluation.routing import (
    against_no_routing,
    below_accuracy_floor,
    routing_across_seeds,
    routing_table,
)
from capsrobust.evaluation.seeds import seed_models
from capsrobust.figures.results import NORM_TITLES, robustness_curves
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    num,
    pct,
    pct_interval,
    points_interval,
    seed_difference_numbers,
    suite_of,
    tables_per_source,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading, Paragraph, Table
from capsrobust.reporting.sources import Source


def routing(context: ReportContext, draft: Draft) -> None:
    """Only for sweeps where some model faced a routing-free (vote) attack."""
    if all(routing_table(source.tables.results, source.tables.examples).empty for source in context.sources):
        return
    draft.add(Heading("Does routing matter?"))
    for source in context.sources:
        _accuracy_first(context, draft, source)
    frames = [(source, routing_table(*_accurate_enough(source))) for source in context.sources]
    frames = [(source, frame) for source, frame in frames if not frame.empty]
    if not frames:
        return
    draft.add(Paragraph(
        "Robust accuracy (%) under every attack that differentiates the model's own forward pass, **through** its "
        "routing; the **masking gap**: the share of images that every such attack left robust and a routing-free "
        "attack broke (the vote attack: the squashed mean of the votes for dynamic and self-attention routing, one "
        "M-step with uniform assignments for EM), i.e. robustness that only the routing's gradients provided; and "
        "robust accuracy under the **best attack** per image. Intervals: Wilson 95% over images. A one-iteration "
        "model routes nothing (uniform coupling): its row is the no-routing baseline of the same architecture. "
        "The gap is through-routing accuracy minus the accuracy under the attacks through and around the routing "
        "together, per image, not minus a routing-free attack's standalone accuracy: in a cascade the "
        "routing-free attacks only see what the attacks through the routing left robust, so no standalone number "
        "exists there. In a cascade an image a routing-free attack broke is not attacked again, so whether the "
        "attacks through the routing would also have broken it is unknown: the gap counts such images as broken "
        "through the routing (a lower bound; so does the through-routing column), **up to** as robust (an upper "
        "bound). The two agree in a full sweep and at the smallest budget of a suite that runs every attack "
        "through the routing first (attacks/routing.toml)."))
    tables_per_source(
        context, draft, "routing", frames,
        lambda frame: _three_numbers(frame)[["model", "norm", "eps", "n", "clean", "through", "gap", "best"]].rename(
            columns={"through": "through routing [95% CI]", "gap": "masking gap (pts)",
                     "best": "best attack [95% CI]"}),
        lambda suffix: f"Through the routing, the masking gap and the best attack per model{suffix} (a CNN has no "
                       f"routing: its row holds its own gradients on the left and transfer from the other models as "
                       f"the routing-free side, the usual masking check for a baseline); the attacks on each side are "
                       f"listed per row in tables/routing.csv.")
    _variants(context, draft)
    _against_no_routing(context, draft)


def _variants(context: ReportContext, draft: Draft) -> None:
    """The same three numbers per routing variant over its training seeds, beside the detector's AUCs."""
    frames = []
    for source in context.sources:
        frame = routing_across_seeds(*_accurate_enough(source), min_seeds=2, n_resamples=context.n_resamples)
        if not frame.empty:
            frames.append((source, frame.merge(_detector_aucs(source), on=["group", "norm", "eps"], how="left")))
    if not frames:
        return
    draft.add(Paragraph(
        "Per routing variant (and per CNN, as the baseline), over its training seeds: the same numbers averaged "
        "over seeds, counting only the "
        "attacks every seed faced, with 95% intervals from a two-level bootstrap (training seeds, then images), "
        "beside the reconstruction detector's ROC AUC (mean over seeds; the lowest over the standard attacks at "
        "that eps, and against the defense-aware attack; blank for models without a class decoder)."))
    tables_per_source(
        context, draft, "routing_variants", frames,
        lambda frame: _three_numbers(frame).assign(
            auc=[num(v) for v in frame["auc_standard_min"]],
            aware=[num(v) for v in frame["auc_defense_aware"]],
        )[["group", "norm", "eps", "n", "n_seeds", "clean", "through", "gap", "best", "auc", "aware"]].rename(columns={
            "group": "variant", "through": "through routing [95% CI]", "gap": "masking gap (pts) [95% CI]",
            "best": "best attack [95% CI]", "auc": "detector AUC, standard", "aware": "detector AUC, defense-aware"}),
        lambda suffix: f"Does routing matter, per variant over training seeds{suffix}; each seed's best-attack "
                       f"number is in tables/routing_variants.csv (per_seed_best_attack).")
    curves = pd.concat([pd.DataFrame({
        "series": [f"{group} ({source.shown})" if context.many else group for group in frame["group"]],
        "norm": frame["norm"], "eps": frame["eps"], "robust_accuracy": frame["best_attack"],
        "ci_low": frame["best_attack_low"], "ci_high": frame["best_attack_high"]}) for source, frame in frames],
        ignore_index=True)
    draft.figure("routing_variants.png", robustness_curves(curves),
                 "Best-attack robust accuracy against eps per routing variant and CNN, averaged over training seeds, "
                 "with two-level bootstrap 95% bands (seeds, then images): the variants table above as curves.")


def _against_no_routing(context: ReportContext, draft: Draft) -> None:
    """Routing variant minus its no-routing ablation (the suite's ``routing_baselines``), paired over images."""
    raw = []
    for source in context.sources:
        results, examples = _accurate_enough(source)
        for baseline in suite_of(source).get("routing_baselines", []):
            frame = against_no_routing(results, examples, baseline, n_resamples=context.n_resamples,
                                       seed=context.seed)
            if frame.empty:
                continue
            if not raw:
                draft.add(Paragraph(
                    "**Routing against no routing.** Each variant of a no-routing model's architecture minus that "
                    "model (one routing iteration, or uniform coupling: every coupling 1/K, no agreement step), in "
                    "points of best-attack robust accuracy: what routing adds (positive) or costs (negative) under "
                    "the strongest attacks this sweep ran. Averaged over training seeds, over the attacks every "
                    "seed of both faced. The 95% interval resamples training seeds and test images; both are "
                    "paired: the images are the same for both, and a variant has the parameters of its no-routing "
                    "twin, so one training seed gives the two the same initial weights and the same batches and "
                    "the interval draws seed k of both together (where the two hold different seeds, each "
                    "recipe's seeds are drawn on their own; `seeds_paired` in the table). *Per seed*: seed k "
                    "against seed k, interval over images only. An interval that holds 0 means this sweep cannot "
                    "tell the two apart."))
            raw.append(tagged(context, frame, source))
            display = seed_difference_numbers(frame)[["candidate", "norm", "eps", "n", "candidate_seeds", "base",
                                                       "cand", "difference", "per_seed_differences"]]
            display.columns = ["variant", "norm", "eps", "n", "seeds", f"{baseline} (no routing)", "with routing",
                               "routing adds (pts) [95% CI]", "per seed (pts) [95% CI, images]"]
            paired = frame.groupby("candidate", sort=False)["seeds_paired"].all()
            commands = tuple((f"compute the {variant} rows", shlex.join(
                ["capsrobust", "compare", source.shown, "--baseline", baseline, "--candidate", variant,
                 *(["--paired-seeds"] if is_paired else [])]))
                for variant, is_paired in paired.items())
            suffix = f" ({source.shown})" if context.many else ""
            draft.blocks.append(Table("routing_against_none", display, (*commands, context.rebuild()),
                                      f"Routing variants against {baseline}{suffix}: best-attack robust accuracy "
                                      f"(%) on the same {int(frame['n'].max())} images."))
    if raw:
        draft.tables["routing_against_none"] = concat(raw)


def _floor(source: Source) -> float:
    return float(suite_of(source).get("min_clean_accuracy", 0.0))


def _accurate_enough(source: Source) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sweep's results and examples without the models below its suite's clean-accuracy floor."""
    results, examples = source.tables.results, source.tables.examples
    weak = below_accuracy_floor(results, _floor(source))
    return results[~results["model"].isin(weak)], examples[~examples["model"].isin(weak)]


def _accuracy_first(context: ReportContext, draft: Draft, source: Source) -> None:
    """Say which floor the suite set and which models it left out."""
    floor = _floor(source)
    if not floor:
        return
    weak = below_accuracy_floor(source.tables.results, floor)
    where = f" ({source.shown})" if context.many else ""
    left_out = ("; left out: " + ", ".join(f"{model} ({pct(accuracy)}%)" for model, accuracy in weak.items())
                if weak else "; every model meets it")
    draft.add(Paragraph(
        f"**Accuracy first**{where}: only models with at least {pct(floor)}% clean accuracy on the attacked images "
        f"are in these tables, since a weak model is trivially not robust{left_out}."))


def _three_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its numbers as printed: through the routing and the best attack with their intervals, the
    masking gap in signed points (with its interval where the frame has one)."""
    if "masking_gap_low" in frame:
        gap = points_interval(frame["masking_gap"], frame["masking_gap_low"], frame["masking_gap_high"])
    else:
        gap = [f"{100 * v:+.1f}" for v in frame["masking_gap"]]
    if "masking_gap_max" in frame:  # a cascade's bracket: shown where it is open
        gap = [text if round(100 * most, 1) <= round(100 * least, 1) else f"{text} (up to {100 * most:+.1f})"
               for text, least, most in zip(gap, frame["masking_gap"], frame["masking_gap_max"], strict=True)]
    return frame.assign(
        norm=frame["norm"].map(NORM_TITLES),
        clean=[pct(v) for v in frame["clean_accuracy"]],
        through=pct_interval(frame["through_routing"], frame["through_routing_low"], frame["through_routing_high"]),
        gap=gap,
        best=pct_interval(frame["best_attack"], frame["best_attack_low"], frame["best_attack_high"], bold=True),
    )


def _detector_aucs(source: Source) -> pd.DataFrame:
    """Mean over a variant's seeds of the detector's lowest standard-attack AUC and its defense-aware AUC."""
    columns = ["group", "norm", "eps", "auc_standard_min", "auc_defense_aware"]
    summary = undetected_success(source.detection) if source.detection is not None else pd.DataFrame()
    if summary.empty:
        return pd.DataFrame(columns=columns).astype({"eps": float, "auc_standard_min": float,
                                                     "auc_defense_aware": float})
    groups = seed_models(source.tables.results).set_index("model")["group"]
    summary = summary.assign(group=summary["model"].map(groups), eps=summary["eps"].astype(float))
    means = summary.groupby(["group", "norm", "eps"])[["auc_standard_min", "auc_defense_aware"]]
    return means.agg(lambda v: float(np.nanmean(v)) if v.notna().any() else np.nan).reset_index()[columns]
