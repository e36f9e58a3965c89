"""Paired model comparison on hand-made tables: hand-computed McNemar p-values, worst case, intervals, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capsrobust.evaluation.compare import BEST_ATTACK, CompareError, compare_models, worst_case, worst_case_examples
from capsrobust.evaluation.comparison import ComparisonKind, compare
from capsrobust.evaluation.store import SweepTables

# Per-image robust outcomes of 8 images under two L∞ attacks at eps 0.1 (every image is clean-correct).
OUTCOMES = {
    ("cnn", "fgsm"): [1, 1, 1, 0, 0, 1, 1, 0],
    ("cnn", "pgd-linf"): [1, 0, 1, 0, 0, 1, 1, 0],
    ("caps", "fgsm"): [1, 1, 1, 1, 1, 1, 0, 1],
    ("caps", "pgd-linf"): [1, 1, 0, 1, 1, 1, 0, 1],
    ("twin", "fgsm"): [1, 1, 1, 0, 0, 1, 1, 0],
    ("twin", "pgd-linf"): [1, 0, 1, 0, 0, 1, 1, 0],
}


def tables(outcomes: dict[tuple[str, str], list[int]]) -> SweepTables:
    """Results and examples tables with the columns a sweep writes that comparisons read."""
    results, examples = [], []
    for (model, attack), robust in outcomes.items():
        cell_id = f"{model}__{attack}__art__eps0.1"
        n = len(robust)
        results.append({
            "cell_id": cell_id, "role": "attack", "model": model,
            "architecture": "capsnet" if model == "caps" else "cnn",
            "attack": attack, "label": attack, "backend": "art", "norm": "linf", "kind": "bounded", "eps": 0.1,
            "objective_used": "margin(lengths)" if model == "caps" else "ce(logits)", "n": n,
            "clean_accuracy": 1.0, "robust_accuracy": sum(robust) / n, "seconds": 2.0,
        })
        labels = np.arange(n) % 10
        examples.append(pd.DataFrame({
            "cell_id": cell_id, "model": model, "index": np.arange(n), "label": labels, "clean_pred": labels,
            "adv_pred": np.where(np.array(robust, dtype=bool), labels, (labels + 1) % 10),
            "success": ~np.array(robust, dtype=bool), "robust": np.array(robust, dtype=bool),
        }))
    return SweepTables(pd.DataFrame(results), pd.concat(examples, ignore_index=True), pd.DataFrame())


def test_per_cell_and_worst_case_rows_match_hand_computed_numbers():
    frame = compare_models(tables(OUTCOMES), "cnn", "caps", n_resamples=2000).set_index("label")
    fgsm, pgd, best = frame.loc["fgsm"], frame.loc["pgd-linf"], frame.loc[BEST_ATTACK]
    # fgsm: 5/8 vs 7/8; only the CNN robust on image 6, only the capsnet on 3, 4, 7:
    # p = 2 · P(X ≤ 1), X ~ Binomial(4, ½) = 2 · (1 + 4) / 16.
    assert (fgsm["baseline_robust_accuracy"], fgsm["candidate_robust_accuracy"]) == (5 / 8, 7 / 8)
    assert (fgsm["only_baseline"], fgsm["only_candidate"]) == (1, 3)
    assert fgsm["mcnemar_p"] == pytest.approx(10 / 16)
    assert fgsm["difference"] == pytest.approx(0.25)
    assert (fgsm["objective_baseline"], fgsm["objective_candidate"]) == ("ce(logits)", "margin(lengths)")
    # pgd: 4/8 vs 6/8; discordant 2 and 4: p = 2 · P(X ≤ 2), X ~ Binomial(6, ½) = 2 · (1 + 6 + 15) / 64.
    assert (pgd["only_baseline"], pgd["only_candidate"]) == (2, 4)
    assert pgd["mcnemar_p"] == pytest.approx(44 / 64)
    # Worst case per image over both attacks: the CNN keeps images 0, 2, 5, 6; the capsnet 0, 1, 3, 4, 5, 7.
    assert (best["baseline_robust_accuracy"], best["candidate_robust_accuracy"]) == (4 / 8, 6 / 8)
    assert (best["only_baseline"], best["only_candidate"]) == (2, 4)
    assert best["backend"] == "all" and best["n"] == 8
    for row in (fgsm, pgd, best):
        assert row["ci_low"] <= row["difference"] <= row["ci_high"]


def test_worst_case_is_per_image_not_an_average():
    table = tables(OUTCOMES)
    per_image = worst_case_examples(table.results, table.examples)
    caps = per_image[per_image["model"] == "caps"].sort_values("index")
    assert caps["robust"].astype(int).tolist() == [1, 1, 0, 1, 1, 1, 0, 1]
    summary = worst_case(table.results, table.examples).set_index("model")
    assert summary.loc["cnn", "robust_accuracy"] == 0.5  # the mean of the two attacks would say 0.5625
    assert summary.loc["caps", "attacks"] == "fgsm/art, pgd-linf/art"
    assert summary.loc["caps", "n_cells"] == 2 and summary.loc["caps", "seconds"] == 4.0


def test_an_image_broken_at_a_smaller_eps_stays_broken_at_larger_ones():
    table = tables({("cnn", "pgd-linf"): [1, 0, 1, 0]})
    larger = table.results.assign(cell_id="cnn__fgsm__art__eps0.2", attack="fgsm", label="fgsm", eps=0.2)
    fgsm = table.examples.assign(cell_id="cnn__fgsm__art__eps0.2", robust=[1, 1, 0, 0]).astype({"robust": bool})
    results = pd.concat([table.results, larger], ignore_index=True)
    examples = pd.concat([table.examples, fgsm], ignore_index=True)
    per_image = worst_case_examples(results, examples).set_index(["eps", "index"])
    # at 0.2 FGSM alone breaks images 2 and 3; PGD broke 1 and 3 at 0.1, so image 1 is carried up
    assert per_image.loc[0.2, "robust"].tolist() == [True, False, False, False]
    assert per_image.loc[0.2, "carried"].tolist() == [False, True, False, False]
    summary = worst_case(results, examples).set_index("eps")
    assert summary.loc[0.2, "robust_accuracy"] == 0.25 and summary.loc[0.2, "n_carried"] == 1
    assert summary.loc[0.2, "attacks"] == "fgsm/art" and summary.loc[0.1, "n_carried"] == 0


def test_identical_outcomes_give_zero_difference_and_p_one():
    frame = compare_models(tables(OUTCOMES), "cnn", "twin", n_resamples=500)
    assert (frame["difference"] == 0).all() and (frame["mcnemar_p"] == 1.0).all()
    assert (frame["ci_low"] == 0).all() and (frame["ci_high"] == 0).all()


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(20):
        baseline = (rng.random(300) < 0.5).astype(int).tolist()
        candidate = (rng.random(300) < 0.6).astype(int).tolist()  # true difference +0.10
        outcomes = {("cnn", "pgd-linf"): baseline, ("caps", "pgd-linf"): candidate}
        row = compare_models(tables(outcomes), "cnn", "caps", n_resamples=1000, seed=trial).iloc[0]
        covered += row["ci_low"] <= 0.10 <= row["ci_high"]
    assert covered >= 16  # nominal 95% → expect ~19 of 20


def test_refuses_unknown_models_and_different_images():
    table = tables(OUTCOMES)
    with pytest.raises(CompareError, match="model 'mlp' is not in this sweep; choose from: cnn, caps, twin"):
        compare_models(table, "mlp", "caps")
    with pytest.raises(CompareError, match="both 'cnn'"):
        compare_models(table, "cnn", "cnn")
    shifted = table.examples.copy()
    caps_fgsm = shifted["cell_id"] == "caps__fgsm__art__eps0.1"
    shifted.loc[caps_fgsm, "label"] = (shifted.loc[caps_fgsm, "label"] + 1) % 10
    with pytest.raises(CompareError, match="hold different images"):
        compare_models(SweepTables(table.results, shifted, table.checks), "cnn", "caps")


def test_two_models_are_compared_image_by_image_and_printed_with_their_interval():
    comparison = compare(tables(OUTCOMES), "cnn", "caps", n_resamples=500)
    assert comparison.kind is ComparisonKind.MODELS
    shown = comparison.display().set_index("cell")
    assert list(shown.index) == ["fgsm/art", "pgd-linf/art", f"{BEST_ATTACK}/all"]
    fgsm = shown.loc["fgsm/art"]
    assert (fgsm["baseline_robust"], fgsm["candidate_robust"], fgsm["p"]) == ("62.5", "87.5", "0.625")
    assert fgsm["difference_pts"].startswith("+25.0 [")
    assert comparison.heading.startswith("caps (candidate) minus cnn (baseline)") and "McNemar" in comparison.footnote
    with pytest.raises(CompareError, match="not both such recipes here: drop --paired-seeds"):
        compare(tables(OUTCOMES), "cnn", "caps", paired_seeds=True)  # two models have no seeds to pair
