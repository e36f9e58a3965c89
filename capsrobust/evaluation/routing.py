"""Does routing buy robustness? Per model and budget: what survives the attacks through the routing, what the
routing-free (vote) attacks break on top, and what survives every attack.

Attacks that differentiate the model's own forward pass go through its routing; the vote attacks (Gu & Tresp 2021,
generalised per variant: ``capsrobust.attacks.vote``) score the votes without it. An image robust to every attack
through the routing but broken by a routing-free one was protected only by the routing's gradients: the *masking
gap* is the share of such images, "how much robustness the routing's gradients fake". Computed per image from the
examples table, within each budget and every smaller one (``compare.worst_case_examples``). Transfer cells
(adversarials crafted on another model: the one-iteration twin, a CNN) count as routing-free too.

In a cascade the gap is bracketed, not exact: an image a routing-free attack broke (at this budget, or at a smaller
one) is never attacked again, so whether the attacks through the routing would have broken it is unknown. The
``masking_gap`` counts such images as broken through the routing (a lower bound: each cascade cell's robust flags
carry every earlier break), ``masking_gap_max`` as robust (an upper bound: only breaks a cell made itself count).
They agree for full sweeps, and at the smallest budget of a suite that lists every attack through the routing
before the routing-free ones (attacks/routing.toml); above it the vote attack's breaks at smaller budgets open the
bracket. The mnist suite runs APGD after the vote attack, so there even the smallest budget is bracketed.

``routing_table`` gives these per trained model with intervals over images; ``routing_across_seeds`` per routing
variant (a recipe trained with several seeds), averaged over seeds with intervals that resample seeds and images,
since a second training seed moves these numbers as much as a second set of test images does.

``against_no_routing`` answers the question head on: each routing variant's best-attack robust accuracy minus that
of its no-routing ablation (the same architecture with one routing iteration, named by the suite's
``routing_baselines``), paired over the same test images, with intervals over seeds and images. A variant's own
numbers, each with its own interval, cannot say whether two variants differ; a paired difference can.
"""

from __future__ import annotations

import pandas as pd

from capsrobust.attacks.registry import AttackError, get_attack
from capsrobust.evaluation.compare import worst_case_examples
from capsrobust.evaluation.seeds import (
    SEED_COMPARE_COLUMNS,
    common_cells,
    compare_across_seeds,
    model_groups,
    outcome_matrix,
)
from capsrobust.evaluation.stats import two_level_interval, wilson_interval

COLUMNS = ["model", "norm", "eps", "n", "clean_accuracy", "through_routing", "through_routing_low",
           "through_routing_high", "masking_gap", "masking_gap_max", "best_attack", "best_attack_low",
           "best_attack_high", "through_attacks", "routing_free_attacks"]
VARIANT_COLUMNS = ["group", "norm", "eps", "n", "n_seeds", "seeds", "clean_accuracy", "through_routing",
                   "through_routing_low", "through_routing_high", "masking_gap", "masking_gap_low", "masking_gap_high",
                   "masking_gap_max", "best_attack", "best_attack_low", "best_attack_high", "per_seed_best_attack",
                   "common_attacks"]


def _surface(attack: str) -> str | None:
    """"model" (through the routing), "votes" (around it), or None: gradient-free or unknown attacks."""
    try:
        spec = get_attack(attack)
    except AttackError:
        return None
    return None if spec.gradient_free else spec.surface


def _surfaces(results: pd.DataFrame) -> pd.Series:
    """Per result row: "model" (through the routing), "votes" (around it: vote and transfer attacks) or None."""
    surfaces = results["attack"].map(_surface).astype(object)  # None where neither side: keep it a plain object
    if "transfer_from" in results:  # crafted on another model: around this one's routing, like the vote attacks
        surfaces = surfaces.where(results["transfer_from"].astype(object).fillna("") == "", "votes")
    return surfaces


def routing_table(results: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, norm, eps) of every model that faced a routing-free attack: robust accuracy under the
    attacks through the routing, the masking gap, and robust accuracy under every attack, with Wilson intervals."""
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    surfaces = _surfaces(results)
    with_votes = set(results.loc[surfaces == "votes", "model"])
    rows = []
    through = worst_case_examples(results[surfaces == "model"], examples)
    through_max = worst_case_examples(results[surfaces == "model"], own_breaks(examples))
    gradient = worst_case_examples(results[surfaces.isin(["model", "votes"])], examples)  # through and around
    every = worst_case_examples(results, examples)
    for (model, norm, eps), group in every.groupby(["model", "norm", "eps"], sort=True):
        if model not in with_votes:
            continue
        key = (model, norm, eps)
        kept_through, kept_gradient, kept_all = _kept(through, key), _kept(gradient, key), int(group["robust"].sum())
        if kept_through < 0:
            continue
        cells = results[(results["model"] == model) & (results["norm"] == norm) & (results["eps"] <= eps)]
        n = len(group)
        rows.append({
            "model": model, "norm": norm, "eps": eps, "n": n, "clean_accuracy": float(group["clean"].mean()),
            "through_routing": kept_through / n, **dict(zip(("through_routing_low", "through_routing_high"),
                                                            wilson_interval(kept_through, n), strict=True)),
            "masking_gap": (kept_through - kept_gradient) / n,
            "masking_gap_max": (_kept(through_max, key) - kept_gradient) / n,
            "best_attack": kept_all / n, **dict(zip(("best_attack_low", "best_attack_high"),
                                                    wilson_interval(kept_all, n), strict=True)),
            "through_attacks": " ".join(sorted(set(cells.loc[surfaces[cells.index] == "model", "label"]))),
            "routing_free_attacks": " ".join(sorted(set(cells.loc[surfaces[cells.index] == "votes", "label"]))),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def own_breaks(examples: pd.DataFrame) -> pd.DataFrame:
    """``examples`` with each cell's robust flags reduced to the breaks that cell made: an image it did not attack
    (broken before it in a cascade) counts as robust, a misclassified clean image as broken. For a full sweep's cells,
    which attack every image, nothing changes."""
    attacked = examples["attacked"].astype(bool) if "attacked" in examples else True
    clean = examples["clean_pred"] == examples["label"]
    return examples.assign(robust=clean & ~(attacked & ~examples["robust"].astype(bool)))


def _kept(frame: pd.DataFrame, key: tuple[str, str, float]) -> int:
    """Images left robust for (model, norm, eps) in a worst-case frame; -1 when that model faced none of its cells."""
    model, norm, eps = key
    chosen = frame[(frame["model"] == model) & (frame["norm"] == norm) & (frame["eps"] == eps)]
    return -1 if chosen.empty else int(chosen["robust"].sum())


def routing_across_seeds(
    results: pd.DataFrame, examples: pd.DataFrame, *, min_seeds: int = 1, n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """One row per (routing variant, norm, eps): ``routing_table``'s three numbers averaged over training seeds.

    A variant is a recipe's runs that differ only in their training seed (``capsrobust.evaluation.seeds``); every
    seed of it must have faced a routing-free attack. As in ``across_seeds``, only the attack cells every seed
    faced count, so no seed looks weaker for having met more attacks. Intervals are two-level bootstrap 95%
    intervals (seeds, then images; images only for a one-seed variant), the masking gap's over the per-image
    indicator "robust through the routing, broken around it". Variants with fewer than ``min_seeds`` seeds are
    skipped before any resampling (the report wants only those with several).
    """
    rows = []
    for group, members in model_groups(results).items():
        if len(members) < min_seeds:
            continue
        models = [model for model, _ in members]
        common = common_cells(results, models)
        surfaces = _surfaces(common)
        if not all(((common["model"] == model) & (surfaces == "votes")).any() for model in models):
            continue
        if not (surfaces == "model").any():
            continue
        through = worst_case_examples(common[surfaces == "model"], examples)
        through_max = worst_case_examples(common[surfaces == "model"], own_breaks(examples))
        gradient = worst_case_examples(common[surfaces.isin(["model", "votes"])], examples)
        every = worst_case_examples(common, examples)
        for (norm, eps), at in every.groupby(["norm", "eps"], sort=True):
            if not ((through["norm"] == norm) & (through["eps"] == eps)).any():
                continue
            kept = {name: outcome_matrix(frame, models, norm, eps) for name, frame in
                    (("through_routing", through), ("gradient", gradient), ("best_attack", every))}
            kept["masking_gap"] = kept["through_routing"] & ~kept["gradient"]
            gap_max = outcome_matrix(through_max, models, norm, eps) & ~kept["gradient"]
            intervals = {name: two_level_interval(kept[name], n_resamples=n_resamples, seed=seed)
                         for name in ("through_routing", "masking_gap", "best_attack")}
            labels = common.loc[common["model"] == models[0], "label"]
            rows.append({
                "group": group, "norm": norm, "eps": float(eps), "n": kept["best_attack"].shape[1],
                "n_seeds": len(models), "seeds": " ".join(str(s) for _, s in members),
                "clean_accuracy": float(at.groupby("model")["clean"].mean().mean()),
                **{column: value for name, (low, high) in intervals.items() for column, value in
                   ((name, float(kept[name].mean())), (f"{name}_low", low), (f"{name}_high", high))},
                "masking_gap_max": float(gap_max.mean()),
                "per_seed_best_attack": " ".join(f"s{s}:{v:.3f}" for (_, s), v in
                                                 zip(members, kept["best_attack"].mean(axis=1), strict=True)),
                "common_attacks": " ".join(sorted(set(labels))),
            })
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


def against_no_routing(
    results: pd.DataFrame, examples: pd.DataFrame, baseline: str, *, n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Every other group of ``baseline``'s architecture minus ``baseline``, best attack against best attack.

    ``baseline`` is the no-routing ablation (a recipe group: one routing iteration, uniform coupling), so each row
    is what routing adds to robustness: positive, the routing variant keeps more images. Rows come from
    ``compare_across_seeds`` (the attacks every seed of both faced; images paired; two-level 95% intervals over
    seeds and images; seed k against seed k beside them). Empty when ``baseline`` is not a group of the sweep.

    Seeds are paired too where both hold the same seeds (``seeds_paired``): the routing profile's variants have the
    parameters of their no-routing twins, so one training seed gives both the same initial weights and the same
    batches (tests/test_routing.py checks it), and seed k of the one is a matched pair with seed k of the other.
    Resampled independently, a seed that makes both twins fragile (or both robust) would widen the interval of
    their difference, though it moves both alike. For variants that differ in more than routing the pairs are
    independent draws and the interval is as valid, only no narrower.
    """
    groups = model_groups(results)
    if baseline not in groups:
        return pd.DataFrame(columns=SEED_COMPARE_COLUMNS)
    architectures = results.drop_duplicates("model").set_index("model")["architecture"]
    architecture = architectures[groups[baseline][0][0]]
    variants = [group for group, members in groups.items()
                if group != baseline and architectures[members[0][0]] == architecture]
    seeds = {group: [s for _, s in members] for group, members in groups.items()}
    frames = [compare_across_seeds(results, examples, baseline, variant, n_resamples=n_resamples, seed=seed,
                                   paired_seeds=seeds[variant] == seeds[baseline]) for variant in variants]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SEED_COMPARE_COLUMNS)


def below_accuracy_floor(results: pd.DataFrame, floor: float) -> dict[str, float]:
    """Models whose clean accuracy on the attacked images is below ``floor``, with that accuracy, in sweep order.

    Accuracy first: a model that misclassifies many clean images is trivially "not robust", so its robustness says
    nothing about its routing (the suite's ``min_clean_accuracy``).
    """
    if results.empty or floor <= 0:
        return {}
    clean = results.groupby("model", sort=False)["clean_accuracy"].min()
    return {str(model): float(accuracy) for model, accuracy in clean.items() if accuracy < floor}
