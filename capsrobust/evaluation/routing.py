"""Does routing buy robustness? Per model and budget: what survives the attacks through the routing, what the
routing-free (vote) attacks break on top, and what survives every attack.

Attacks that differentiate the model's own forward pass go through its routing; the vote attacks (Gu & Tresp 2021,
generalised per variant: ``capsrobust.attacks.vote``) score the votes without it. An image robust to every attack
through the routing but broken by a routing-free one was protected only by the routing's gradients: the *masking
gap* is the share of such images, "how much robustness the routing's gradients fake". Computed per image from the
examples table, within each budget and every smaller one (``compare.worst_case_examples``), so it holds for full
sweeps and for cascades whose suite lists the attacks through the routing before the vote attacks (attacks/
routing.toml), where each cell's robust flags already include every earlier attack. Transfer cells (adversarials
crafted on another model: the one-iteration twin, a CNN) count as routing-free too.
"""

from __future__ import annotations

import pandas as pd

from capsrobust.attacks.registry import AttackError, get_attack
from capsrobust.evaluation.compare import worst_case_examples
from capsrobust.evaluation.stats import wilson_interval

COLUMNS = ["model", "norm", "eps", "n", "clean_accuracy", "through_routing", "through_routing_low",
           "through_routing_high", "masking_gap", "best_attack", "best_attack_low", "best_attack_high",
           "through_attacks", "routing_free_attacks"]


def _surface(attack: str) -> str | None:
    """"model" (through the routing), "votes" (around it), or None: gradient-free or unknown attacks."""
    try:
        spec = get_attack(attack)
    except AttackError:
        return None
    return None if spec.gradient_free else spec.surface


def routing_table(results: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, norm, eps) of every model that faced a routing-free attack: robust accuracy under the
    attacks through the routing, the masking gap, and robust accuracy under every attack, with Wilson intervals."""
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    surfaces = results["attack"].map(_surface).astype(object)  # None where neither side: keep it a plain object
    if "transfer_from" in results:  # crafted on another model: around this one's routing, like the vote attacks
        surfaces = surfaces.where(results["transfer_from"].astype(object).fillna("") == "", "votes")
    with_votes = set(results.loc[surfaces == "votes", "model"])
    rows = []
    through = worst_case_examples(results[surfaces == "model"], examples)
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
            "best_attack": kept_all / n, **dict(zip(("best_attack_low", "best_attack_high"),
                                                    wilson_interval(kept_all, n), strict=True)),
            "through_attacks": " ".join(sorted(set(cells.loc[surfaces[cells.index] == "model", "label"]))),
            "routing_free_attacks": " ".join(sorted(set(cells.loc[surfaces[cells.index] == "votes", "label"]))),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def _kept(frame: pd.DataFrame, key: tuple[str, str, float]) -> int:
    """Images left robust for (model, norm, eps) in a worst-case frame; -1 when that model faced none of its cells."""
    model, norm, eps = key
    chosen = frame[(frame["model"] == model) & (frame["norm"] == norm) & (frame["eps"] == eps)]
    return -1 if chosen.empty else int(chosen["robust"].sum())
