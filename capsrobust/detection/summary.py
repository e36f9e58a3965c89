"""Undetected success: what an attacker facing both the model and the detector achieves, per (model, norm, eps).

Kept apart from the pipeline that writes the detection tables: this reads those tables back and summarises them,
with and without the defense-aware attacks, the way robust accuracy takes the per-image worst case over attacks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capsrobust.attacks import attack_names, get_attack
from capsrobust.detection.pipeline import DetectionTables

# Attacks that also push the reconstruction distance down: the registry's attacks that need a decoder.
DEFENSE_AWARE_ATTACKS = frozenset(name for name in attack_names() if get_attack(name).needs_reconstruction)


def undetected_success(tables: DetectionTables) -> pd.DataFrame:
    """Undetected success per (model, norm, eps) with and without the defense-aware attacks, worst case per image.

    As for robust accuracy (``capsrobust.evaluation.compare.worst_case_examples``), an image an attack got past the
    model and the detector at a smaller eps of the same norm counts at every larger eps: the threshold does not
    depend on eps.
    """
    cells, examples = tables.detection, tables.examples
    if cells.empty or examples.empty:
        return pd.DataFrame()
    joined = examples.merge(cells[["cell_id", "attack", "norm", "eps", "auc"]], on="cell_id", how="inner")
    joined = joined.assign(undetected=joined["success"].astype(bool) & ~joined["flagged"].astype(bool),
                           aware=joined["attack"].isin(DEFENSE_AWARE_ATTACKS))
    rows = []
    for (model, norm), budgets in joined.groupby(["model", "norm"], sort=False):
        n = int(budgets["index"].nunique())
        seen: dict[str, set[int]] = {"standard": set(), "aware": set(), "all": set()}
        for eps, group in budgets.groupby("eps", sort=True):
            parts = {"standard": group[~group["aware"]], "aware": group[group["aware"]], "all": group}
            for kind, part in parts.items():
                seen[kind] |= set(part.loc[part["undetected"], "index"])
            cell_rows = cells[(cells["model"] == model) & (cells["norm"] == norm) & (cells["eps"] == eps)]
            aware_cells = cell_rows[cell_rows["attack"].isin(DEFENSE_AWARE_ATTACKS)]
            standard_cells = cell_rows[~cell_rows["attack"].isin(DEFENSE_AWARE_ATTACKS)]
            rows.append({
                "model": model, "norm": norm, "eps": float(eps), "n": n,
                **{column: len(seen[kind]) / n if len(parts[kind]) else np.nan for column, kind in
                   (("standard_worst", "standard"), ("defense_aware", "aware"), ("all_worst", "all"))},
                "auc_standard_min": float(standard_cells["auc"].min()) if len(standard_cells) else np.nan,
                "auc_defense_aware": float(aware_cells["auc"].min()) if len(aware_cells) else np.nan,
            })
    return pd.DataFrame(rows)
