"""Paired comparison of two models attacked on the same images, cell by cell and under the worst-case attack.

A sweep attacks every model on the same first n test images, so two models' per-example outcomes (robust or not)
are paired. For each cell the two share (same attack entry, backend, eps), ``compare_models`` gives both robust
accuracies, their difference (candidate − baseline) with a bootstrap 95% interval that resamples images, and
McNemar's exact p-value on the images where exactly one model is robust
(``capsrobust.evaluation.stats.compare_paired``). Paired tests are far more sensitive than comparing two independent
accuracies: the images both models get right, or both get wrong, carry no information about which model is better and
are left out of McNemar's test.

The models' objectives may differ (each model is attacked through its own default objective unless the sweep
was given one), so cells are matched on attack entry, backend and eps, and both objectives are reported.

``worst_case`` is the per-example worst case over every attack a model faced at one (norm, eps): an image is
robust only if it survived all of them. This is how AutoAttack reports robust accuracy, and it is the honest
headline number: an average over attacks would credit a model for surviving the weaker ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capsrobust.errors import CapsRobustError
from capsrobust.evaluation.stats import compare_paired
from capsrobust.evaluation.store import SweepTables, load_sweep
from capsrobust.models.base import CAPSULE_CAPABILITIES, parse_capabilities

BEST_ATTACK = "best-attack"  # the label of worst-case rows
NORM_ORDER = {"linf": 0, "l2": 1}  # tables list L∞ before L2
PAIR_KEY = ["attack", "label", "backend", "norm", "eps", "role"]
COMPARE_COLUMNS = [
    "attack", "label", "backend", "norm", "eps", "baseline", "candidate", "objective_baseline",
    "objective_candidate", "n", "baseline_robust_accuracy", "candidate_robust_accuracy", "difference", "ci_low",
    "ci_high", "only_baseline", "only_candidate", "mcnemar_p",
]
WORST_CASE_COLUMNS = [
    "model", "norm", "eps", "n", "clean_accuracy", "robust_accuracy", "n_robust", "n_cells", "attacks", "seconds",
    "n_carried",
]


class CompareError(CapsRobustError):
    """Two models cannot be compared: one is missing from the sweep, or their cells hold different images."""


def worst_case_examples(results: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """Per (model, norm, eps, image): robust only if no attack of that model broke it within that budget.

    "Within the budget" includes every smaller budget of the same norm: an adversarial found at eps 0.2 is also
    one at eps 0.25, so an image broken at a smaller eps stays broken (the curve can only fall, whichever attacks
    a suite runs at each eps). Every cell counts, the sweep's own 2×-steps PGD check cells included: each is a
    real attack within the same budget, so leaving one out could only overstate robustness. Columns: model, norm,
    eps, index, label, clean (clean prediction correct), robust, carried (broken only by an attack at a smaller
    eps).
    """
    if results.empty or examples.empty:
        return pd.DataFrame(columns=["model", "norm", "eps", "index", "label", "clean", "robust", "carried"])
    cells = results[["cell_id", "norm", "eps"]]
    joined = examples.merge(cells, on="cell_id", how="inner", validate="many_to_one")
    joined = joined.assign(clean=joined["clean_pred"] == joined["label"], robust=joined["robust"].astype(bool))
    grouped = joined.groupby(["model", "norm", "eps", "index"], sort=True)
    frame = grouped.agg(label=("label", "first"), clean=("clean", "all"), robust=("robust", "all")).reset_index()
    # sorted by eps within each (model, norm, index): a running "all" carries breaks up to larger budgets
    at_eps = frame["robust"]
    within = frame.groupby(["model", "norm", "index"], sort=False)["robust"].cummin().astype(bool)
    return frame.assign(robust=within, carried=at_eps & ~within)


def worst_case(results: pd.DataFrame, examples: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, norm, eps): the worst-case robust accuracy over every attack, and which attacks ran.

    ``attacks`` and ``seconds`` describe the cells at that eps (a minimisation attack's one run is counted once per
    threshold); ``n_carried`` counts the images broken only by an attack at a smaller eps (``worst_case_examples``).
    """
    per_example = worst_case_examples(results, examples)
    if per_example.empty:
        return pd.DataFrame(columns=WORST_CASE_COLUMNS)
    rows = []
    for (model, norm, eps), group in per_example.groupby(["model", "norm", "eps"], sort=False):
        cells = results[(results["model"] == model) & (results["norm"] == norm) & (results["eps"] == eps)]
        labels = sorted({f"{label}/{backend}" for label, backend in zip(cells["label"], cells["backend"], strict=True)})
        rows.append({
            "model": model, "norm": norm, "eps": float(eps), "n": len(group),
            "clean_accuracy": float(group["clean"].mean()), "robust_accuracy": float(group["robust"].mean()),
            "n_robust": int(group["robust"].sum()), "n_cells": len(cells), "attacks": ", ".join(labels),
            "seconds": float(cells["seconds"].sum()), "n_carried": int(group["carried"].sum()),
        })
    order = {model: i for i, model in enumerate(dict.fromkeys(results["model"]))}
    frame = pd.DataFrame(rows, columns=WORST_CASE_COLUMNS)
    frame = frame.assign(_order=frame["model"].map(order), _norm=frame["norm"].map(NORM_ORDER).fillna(len(NORM_ORDER)))
    frame = frame.sort_values(["_order", "_norm", "eps"], kind="stable")
    return frame.drop(columns=["_order", "_norm"]).reset_index(drop=True)


def compare_models(
    sweep: SweepTables | str | Path,
    baseline: str,
    candidate: str,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Candidate minus baseline robust accuracy in every cell both models faced, plus worst-case rows.

    ``sweep`` is a sweep directory or its tables (``load_sweep``). Rows: one per shared cell (matched on attack
    entry, backend and eps; the objectives of both sides are columns), then one ``best-attack`` row per (norm,
    eps) comparing the per-example worst cases. ``ci_low``/``ci_high`` bound the difference (bootstrap over images,
    ``n_resamples`` resamples from ``seed``); ``mcnemar_p`` is the two-sided exact McNemar p-value, per row and not
    corrected for the number of rows. Raises ``CompareError`` for an unknown model or mismatched images.
    """
    tables = sweep if isinstance(sweep, SweepTables) else load_sweep(sweep)
    results, examples = tables.results, tables.examples
    known = list(dict.fromkeys(results["model"]))
    for name in (baseline, candidate):
        if name not in known:
            raise CompareError(f"model {name!r} is not in this sweep; choose from: {', '.join(map(str, known))}")
    if baseline == candidate:
        raise CompareError(f"baseline and candidate are both {baseline!r}; compare two different models")

    left = results[results["model"] == baseline]
    right = results[results["model"] == candidate]
    pairs = left.merge(right, on=PAIR_KEY, suffixes=("_b", "_c"), validate="one_to_one")
    by_cell = {cell_id: frame for cell_id, frame in examples.groupby("cell_id", sort=False)}
    rows = []
    for _, pair in pairs.iterrows():
        base, cand = _aligned(by_cell, pair["cell_id_b"], pair["cell_id_c"])
        rows.append(_row(pair[PAIR_KEY[:-1]].to_dict(), baseline, candidate, pair["objective_used_b"],
                         pair["objective_used_c"], base["robust"], cand["robust"], n_resamples, seed))

    worst = worst_case_examples(results, examples)
    budgets = sorted(worst.groupby(["norm", "eps"]).groups, key=lambda key: (NORM_ORDER.get(key[0], 9), key[1]))
    for norm, eps in budgets:
        group = worst[(worst["norm"] == norm) & (worst["eps"] == eps)]
        base = group[group["model"] == baseline].sort_values("index")
        cand = group[group["model"] == candidate].sort_values("index")
        if base.empty or cand.empty:
            continue
        if not np.array_equal(base["index"].to_numpy(), cand["index"].to_numpy()):
            raise CompareError(f"{baseline} and {candidate} were attacked on different images at {norm} eps {eps:g}; "
                               f"compare models from one sweep")
        key = {"attack": BEST_ATTACK, "label": BEST_ATTACK, "backend": "all", "norm": norm, "eps": float(eps)}
        rows.append(_row(key, baseline, candidate, "", "", base["robust"], cand["robust"], n_resamples, seed))
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _aligned(by_cell: dict[str, pd.DataFrame], base_id: str, cand_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two cells' per-example rows in image order, refusing cells that did not attack the same images."""
    try:
        base = by_cell[base_id].sort_values("index")
        cand = by_cell[cand_id].sort_values("index")
    except KeyError as error:
        raise CompareError(f"cell {error.args[0]} has no per-example outcomes in examples.csv; resume the sweep "
                           f"to rebuild its tables") from None
    same = np.array_equal(base["index"].to_numpy(), cand["index"].to_numpy()) and np.array_equal(
        base["label"].to_numpy(), cand["label"].to_numpy())
    if not same:
        raise CompareError(f"cells {base_id} and {cand_id} hold different images; compare models from one sweep")
    return base, cand


def _row(
    key: dict[str, object], baseline: str, candidate: str, objective_b: str, objective_c: str,
    base_robust: pd.Series, cand_robust: pd.Series, n_resamples: int, seed: int,
) -> dict[str, object]:
    result = compare_paired(base_robust.to_numpy(dtype=bool), cand_robust.to_numpy(dtype=bool), n_resamples, seed)
    return {
        **key, "baseline": baseline, "candidate": candidate, "objective_baseline": objective_b,
        "objective_candidate": objective_c, "n": result.n, "baseline_robust_accuracy": result.baseline_accuracy,
        "candidate_robust_accuracy": result.candidate_accuracy, "difference": result.difference,
        "ci_low": result.ci_low, "ci_high": result.ci_high, "only_baseline": result.only_baseline,
        "only_candidate": result.only_candidate, "mcnemar_p": result.mcnemar_p,
    }


#: How rows of sweeps written before the ``capabilities`` column tell a capsule network: by architecture name.
LEGACY_CAPSULE_ARCHITECTURES = frozenset({"capsnet"})


def is_capsule_model(row: pd.Series) -> bool:
    """Whether a results row's model is a capsule network, as its ``capabilities`` record: capsule lengths that
    score the classes, or capsule votes (an EM network scores by activations, but it routes votes all the same).

    Rows without that column, or with it empty (a model with no capabilities reads back from CSV as missing),
    fall back to the architecture name, which gives the same answer for every architecture those sweeps knew.
    """
    recorded = row.get("capabilities")
    if isinstance(recorded, str) and recorded:
        return bool(parse_capabilities(recorded) & CAPSULE_CAPABILITIES)
    return row["architecture"] in LEGACY_CAPSULE_ARCHITECTURES
