"""The routing table on hand-made outcomes: robust through the routing, the masking gap, the best attack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capsrobust.evaluation.routing import routing_table

# Robust flags of 10 clean-correct images at L∞ 0.1: PGD through the routing, then the vote attack around it, then
# Square (gradient-free: on neither side, but in the best attack).
OUTCOMES = {
    ("caps", "pgd-linf"): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
    ("caps", "vote-pgd-linf"): [1, 1, 0, 0, 0, 1, 1, 0, 0, 0],
    ("caps", "square"): [1, 0, 1, 1, 1, 1, 1, 1, 1, 1],
    ("cnn", "pgd-linf"): [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # no votes: no row
}


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    results, examples = [], []
    for (model, attack), robust in OUTCOMES.items():
        cell_id = f"{model}__{attack}__art__eps0.1"
        results.append({"cell_id": cell_id, "model": model, "attack": attack, "label": attack, "norm": "linf",
                        "eps": 0.1, "role": "attack"})
        labels = np.arange(10) % 10
        examples.append(pd.DataFrame({"cell_id": cell_id, "model": model, "index": np.arange(10), "label": labels,
                                      "clean_pred": labels, "robust": np.array(robust, dtype=bool)}))
    return pd.DataFrame(results), pd.concat(examples, ignore_index=True)


def test_the_masking_gap_is_what_only_routing_free_attacks_break():
    frame = routing_table(*tables())
    assert list(frame["model"]) == ["caps"]
    row = frame.iloc[0]
    # through the routing: images 0-5 survive PGD (6/10); the vote attack breaks 2, 3, 4 of them (gap 3/10);
    # Square breaks image 1: every attack leaves images 0 and 5 (2/10)
    assert (row["through_routing"], row["masking_gap"], row["best_attack"]) == (0.6, 0.3, 0.2)
    assert row["through_routing_low"] < 0.6 < row["through_routing_high"]
    assert (row["through_attacks"], row["routing_free_attacks"]) == ("pgd-linf", "vote-pgd-linf")
    assert row["clean_accuracy"] == pytest.approx(1.0) and row["n"] == 10
