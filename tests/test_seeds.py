"""Results across training seeds: the two-level bootstrap, common attacks per group, group comparison, suite seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capsrobust.attacks.suites import SuiteError, model_group, suite_from_dict
from capsrobust.evaluation.compare import CompareError
from capsrobust.evaluation.seeds import across_seeds, compare_across_seeds, multi_seed_groups, seed_models
from capsrobust.evaluation.stats import bootstrap_interval, two_level_interval


def test_two_level_interval_of_a_constant_is_that_constant():
    ones = np.ones((3, 50), dtype=bool)
    assert two_level_interval(ones, n_resamples=500) == (1.0, 1.0)
    assert two_level_interval(ones, ones, n_resamples=500) == (0.0, 0.0)


def test_two_level_interval_with_identical_seeds_matches_the_image_bootstrap():
    rng = np.random.default_rng(3)
    row = rng.random(400) < 0.6
    identical = np.tile(row, (3, 1))
    low, high = two_level_interval(identical, n_resamples=4000, seed=1)
    image_low, image_high = bootstrap_interval(np.zeros(400), row.astype(float), n_resamples=4000, seed=1)
    assert low == pytest.approx(image_low, abs=0.01) and high == pytest.approx(image_high, abs=0.01)


def test_seed_spread_widens_the_interval():
    # Every image behaves alike within a seed, seeds disagree (0%, 50%, 100%): images alone would say ±0;
    # over seeds the mean 50% is uncertain, and resampling three seeds reaches the extremes' neighbourhood.
    spread = np.vstack([np.zeros(100), np.tile([0, 1], 50), np.ones(100)]).astype(bool)
    low, high = two_level_interval(spread, n_resamples=4000, seed=0)
    assert low <= 0.2 and high >= 0.8
    assert two_level_interval(spread[1:2], n_resamples=4000, seed=0)[1] - 0.5 < 0.15


def test_two_level_difference_keeps_images_paired():
    # Two models with the same outcomes on every image: with images resampled jointly the difference is 0 in every
    # resample; resampled independently it would spread by about ±10 points at n = 200.
    rng = np.random.default_rng(0)
    outcomes = np.tile(rng.random(200) < 0.5, (2, 1))
    assert two_level_interval(outcomes, outcomes.copy(), n_resamples=2000) == (0.0, 0.0)


def test_paired_seeds_cancel_what_a_seed_does_to_both_twins():
    # Seed 0 leaves 90% of the images robust, seed 1 only 40%, for both models alike; the candidate loses the same
    # 10 images (5 points) on each seed. Drawn independently, the seeds' 50-point spread swamps the difference;
    # drawn as pairs it cancels, and only the images' spread of the 5-point loss is left.
    baseline = np.zeros((2, 200), dtype=bool)
    baseline[0, :180], baseline[1, :80] = True, True
    candidate = baseline.copy()
    candidate[:, :10] = False
    low, high = two_level_interval(candidate, baseline, n_resamples=4000, seed=0, paired_seeds=True)
    assert -0.09 < low < -0.05 < high < -0.02
    wide_low, wide_high = two_level_interval(candidate, baseline, n_resamples=4000, seed=0)
    assert wide_low < -0.3 and wide_high > 0.2
    assert two_level_interval(baseline, baseline, n_resamples=500, paired_seeds=True) == (0.0, 0.0)
    with pytest.raises(ValueError, match="as many seeds"):
        two_level_interval(candidate, baseline[:1], paired_seeds=True)


def test_two_level_interval_refuses_different_images():
    with pytest.raises(ValueError, match="same non-empty set of images"):
        two_level_interval(np.ones((2, 5)), np.ones((2, 6)))


# Per-image outcomes (8 images) of two recipes with two seeds each; "cw" ran on seed 0 only.
OUTCOMES = {
    ("caps-s0", 0, "pgd"): [1, 1, 0, 1, 1, 1, 0, 1],
    ("caps-s0", 0, "cw"): [1, 0, 0, 1, 1, 1, 0, 1],
    ("caps-s1", 1, "pgd"): [1, 1, 1, 1, 0, 1, 0, 0],
    ("cnn-s0", 0, "pgd"): [1, 0, 1, 0, 0, 1, 1, 0],
    ("cnn-s0", 0, "cw"): [0, 0, 1, 0, 0, 1, 1, 0],
    ("cnn-s1", 1, "pgd"): [1, 1, 1, 0, 0, 0, 1, 0],
}


def tables(outcomes: dict[tuple[str, int, str], list[int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    results, examples = [], []
    for (model, seed, attack), robust in outcomes.items():
        cell_id = f"{model}__{attack}__art__eps0.1"
        n = len(robust)
        results.append({
            "cell_id": cell_id, "role": "attack", "model": model, "train_seed": seed,
            "architecture": "capsnet" if model.startswith("caps") else "cnn", "attack": attack, "label": attack,
            "backend": "art", "norm": "linf", "kind": "bounded", "eps": 0.1, "n": n, "clean_accuracy": 1.0,
            "robust_accuracy": sum(robust) / n, "seconds": 1.0,
        })
        labels = np.arange(n) % 10
        examples.append(pd.DataFrame({
            "cell_id": cell_id, "model": model, "index": np.arange(n), "label": labels, "clean_pred": labels,
            "adv_pred": np.where(np.array(robust, dtype=bool), labels, (labels + 1) % 10),
            "success": ~np.array(robust, dtype=bool), "robust": np.array(robust, dtype=bool),
        }))
    return pd.DataFrame(results), pd.concat(examples, ignore_index=True)


def test_groups_come_from_the_seed_suffix():
    results, _ = tables(OUTCOMES)
    assert seed_models(results)["group"].tolist() == ["caps", "caps", "cnn", "cnn"]
    assert multi_seed_groups(results) == {"caps": [("caps-s0", 0), ("caps-s1", 1)],
                                          "cnn": [("cnn-s0", 0), ("cnn-s1", 1)]}
    assert model_group("cnn-small", 0) == "cnn-small" and model_group("cnn-small-s2", 2.0) == "cnn-small"


def test_across_seeds_uses_the_attacks_every_seed_faced():
    results, examples = tables(OUTCOMES)
    frame = across_seeds(results, examples, n_resamples=500).set_index("group")
    caps = frame.loc["caps"]
    # PGD only (CW ran on seed 0 alone): seed 0 keeps 6 of 8, seed 1 keeps 5 of 8.
    assert caps["robust_accuracy"] == pytest.approx(11 / 16)
    assert caps["per_seed"] == "s0:0.750 s1:0.625"
    assert caps["common_attacks"] == "pgd/art"
    # with CW as well, seed 0 keeps 5 of 8
    assert caps["full_suite_seed"] == 0 and caps["full_suite_robust_accuracy"] == pytest.approx(5 / 8)
    assert caps["ci_low"] <= caps["robust_accuracy"] <= caps["ci_high"]


def test_compare_across_seeds_pools_and_pairs_seeds():
    results, examples = tables(OUTCOMES)
    row = compare_across_seeds(results, examples, "cnn", "caps", n_resamples=500).iloc[0]
    # PGD: caps 6/8 and 5/8, cnn 4/8 and 4/8 → +3/16 pooled; seed by seed +2/8 and +1/8.
    assert row["difference"] == pytest.approx(3 / 16)
    assert row["per_seed_differences"].startswith("s0:+25.0 [") and "; s1:+12.5 [" in row["per_seed_differences"]
    assert (row["baseline_seeds"], row["candidate_seeds"]) == ("0 1", "0 1")
    with pytest.raises(CompareError, match="not a model group"):
        compare_across_seeds(results, examples, "cnn", "nope")
    assert not row["seeds_paired"]
    paired = compare_across_seeds(results, examples, "cnn", "caps", n_resamples=500, paired_seeds=True).iloc[0]
    assert paired["seeds_paired"] and paired["difference"] == row["difference"]
    one_seed_fewer = {key: value for key, value in OUTCOMES.items() if key[0] != "cnn-s1"} | {
        ("cnn-s2", 2, "pgd"): OUTCOMES[("cnn-s1", 1, "pgd")], ("cnn-s3", 3, "pgd"): OUTCOMES[("cnn-s1", 1, "pgd")]}
    with pytest.raises(CompareError, match="same training seeds in both groups: cnn has 0 2 3, caps 0 1"):
        compare_across_seeds(*tables(one_seed_fewer), "cnn", "caps", paired_seeds=True)


def test_suite_entries_can_name_training_seeds_and_recipe_groups():
    suite = suite_from_dict({"attack": [
        {"name": "fgsm", "eps": [0.1], "seeds": [0]},
        {"name": "fgsm", "label": "fgsm-small", "eps": [0.1], "models": ["cnn-small"]},
    ]})
    seeded, named = suite.attacks
    assert seeded.applies_to("cnn-small-s0", 0) and not seeded.applies_to("cnn-small-s1", 1)
    assert not seeded.applies_to("cnn-small", None)
    assert named.applies_to("cnn-small-s1", 1) and named.applies_to("cnn-small", 0)
    assert not named.applies_to("cnn-small-s1", None)
    assert seeded.to_dict()["seeds"] == [0] and "seeds" not in named.to_dict()
    for bad in (["0"], [0, 0], 1, [True]):
        with pytest.raises(SuiteError, match="key 'seeds' must be a list of distinct integer training seeds"):
            suite_from_dict({"attack": [{"name": "fgsm", "eps": [0.1], "seeds": bad}]})
