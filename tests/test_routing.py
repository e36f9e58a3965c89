"""The routing table on hand-made outcomes: robust through the routing, the masking gap, the best attack."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from capsrobust.attacks.suites import suite_from_dict
from capsrobust.cli import main
from capsrobust.detection.pipeline import run_detection
from capsrobust.evaluation.routing import (
    against_no_routing,
    below_accuracy_floor,
    routing_across_seeds,
    routing_table,
)
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.reporting.report import build_report
from capsrobust.training import TrainSettings, train
from tests.conftest import recipe

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
    assert row["masking_gap_max"] == row["masking_gap"]  # a full sweep attacks every image: no bracket
    assert row["through_routing_low"] < 0.6 < row["through_routing_high"]
    assert (row["through_attacks"], row["routing_free_attacks"]) == ("pgd-linf", "vote-pgd-linf")
    assert row["clean_accuracy"] == pytest.approx(1.0) and row["n"] == 10


# A cascade over 7 images (image 6 misclassified clean) at L∞ 0.05 then 0.1, in suite order: (robust, attacked).
CASCADE = [
    ("pgd-linf", 0.05, [0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 0]),  # breaks image 0
    ("vote-pgd-linf", 0.05, [0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 0]),  # breaks 1
    ("pgd-linf", 0.1, [0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 0]),  # breaks 2; never saw 1
    ("vote-pgd-linf", 0.1, [0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0]),  # breaks 3
    ("apgd-ce", 0.1, [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1, 0]),  # through the routing after the vote attack: 4
]


def test_a_cascade_brackets_the_masking_gap_where_routing_free_breaks_went_unchecked():
    results, examples = [], []
    for attack, eps, robust, attacked in CASCADE:
        cell_id = f"caps__{attack}__art__eps{eps}"
        results.append({"cell_id": cell_id, "model": "caps", "attack": attack, "label": attack, "norm": "linf",
                        "eps": eps, "role": "attack"})
        labels = np.arange(7)
        examples.append(pd.DataFrame({
            "cell_id": cell_id, "model": "caps", "index": np.arange(7), "label": labels,
            "clean_pred": np.where(labels == 6, 0, labels), "robust": np.array(robust, dtype=bool),
            "attacked": np.array(attacked, dtype=bool)}))
    frame = routing_table(pd.DataFrame(results), pd.concat(examples, ignore_index=True)).set_index("eps")
    # 0.05, the smallest budget, attacks through the routing first: exact. Through 1-5 (5/7), every gradient
    # attack leaves 2-5 (4/7): the vote attack's image 1 is the gap, 1/7 both ways.
    assert frame.loc[0.05, "through_routing"] == pytest.approx(5 / 7)
    assert frame.loc[0.05, "masking_gap"] == frame.loc[0.05, "masking_gap_max"] == pytest.approx(1 / 7)
    # 0.1: only image 5 survives everything. Images 1 and 3 fell to the vote attack and never met PGD or APGD at
    # 0.1: counted broken through the routing the gap is 0, counted robust it is 2/7 (images 1 and 3).
    assert frame.loc[0.1, "best_attack"] == pytest.approx(1 / 7)
    assert frame.loc[0.1, "masking_gap"] == 0
    assert frame.loc[0.1, "masking_gap_max"] == pytest.approx(2 / 7)


def seed_tables(outcomes: dict[tuple[str, int, str], list[int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results and examples of runs ``RECIPE-sK`` (training seed K) at L∞ 0.1 from their robust flags."""
    results, examples = [], []
    for (group, train_seed, attack), robust in outcomes.items():
        model = f"{group}-s{train_seed}"
        cell_id = f"{model}__{attack}__art__eps0.1"
        results.append({"cell_id": cell_id, "model": model, "attack": attack, "label": attack, "backend": "art",
                        "norm": "linf", "eps": 0.1, "role": "attack", "train_seed": train_seed})
        labels = np.arange(len(robust)) % 10
        examples.append(pd.DataFrame({"cell_id": cell_id, "model": model, "index": np.arange(len(robust)),
                                      "label": labels, "clean_pred": labels, "robust": np.array(robust, dtype=bool)}))
    return pd.DataFrame(results), pd.concat(examples, ignore_index=True)


def test_a_variant_averages_its_seeds_with_intervals_over_seeds_and_images():
    results, examples = seed_tables({
        ("caps", 0, "pgd-linf"): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # through 6/10
        ("caps", 0, "vote-pgd-linf"): [1, 1, 0, 0, 0, 1, 1, 0, 0, 0],  # gap 3/10, best 3/10 (images 0, 1, 5)
        ("caps", 1, "pgd-linf"): [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # through 4/10
        ("caps", 1, "vote-pgd-linf"): [1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # gap 2/10, best 2/10 (images 0, 3)
        ("caps", 1, "square"): [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # seed 1 only: not common, so left out
        ("cnn", 0, "pgd-linf"): [1] * 10,  # no votes: not a routing variant
        ("cnn", 1, "pgd-linf"): [1] * 10,
    })
    frame = routing_across_seeds(results, examples, n_resamples=2000)
    assert list(frame["group"]) == ["caps"]
    row = frame.iloc[0]
    assert (row["n"], row["n_seeds"], row["seeds"]) == (10, 2, "0 1")
    # means over both seeds and all images: (6 + 4) / 20, (3 + 2) / 20, (3 + 2) / 20
    assert (row["through_routing"], row["masking_gap"], row["best_attack"]) == (0.5, 0.25, 0.25)
    assert row["masking_gap_max"] == row["masking_gap"]
    assert row["per_seed_best_attack"] == "s0:0.300 s1:0.200"
    assert row["common_attacks"] == "pgd-linf vote-pgd-linf"
    for name in ("through_routing", "masking_gap", "best_attack"):
        assert 0 <= row[f"{name}_low"] < row[name] < row[f"{name}_high"] <= 1


def test_a_variant_whose_seed_never_met_a_routing_free_attack_has_no_row():
    results, examples = seed_tables({
        ("caps", 0, "pgd-linf"): [1, 0], ("caps", 0, "vote-pgd-linf"): [0, 0],
        ("caps", 1, "pgd-linf"): [1, 1],
    })
    assert routing_across_seeds(results, examples, n_resamples=100).empty


def test_variants_with_too_few_seeds_are_skipped():
    results, examples = seed_tables({("caps", 0, "pgd-linf"): [1, 0], ("caps", 0, "vote-pgd-linf"): [0, 0]})
    assert list(routing_across_seeds(results, examples, n_resamples=100)["n_seeds"]) == [1]
    assert routing_across_seeds(results, examples, min_seeds=2, n_resamples=100).empty


def test_routing_against_no_routing_pairs_each_variant_of_the_architecture_with_the_ablation():
    results, examples = seed_tables({
        ("caps-1", 0, "pgd-linf"): [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # no routing: 4/10
        ("caps-1", 1, "pgd-linf"): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # 6/10
        ("caps-3", 0, "pgd-linf"): [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # routing: 6/10, +2 against seed 0
        ("caps-3", 1, "pgd-linf"): [1, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # 9/10, +3 against seed 1
        ("other", 0, "pgd-linf"): [0] * 10,  # another architecture: never paired
        ("other", 1, "pgd-linf"): [0] * 10,
    })
    results = results.assign(architecture=results["model"].map(lambda m: "cnn" if m.startswith("other") else "caps"))
    frame = against_no_routing(results, examples, "caps-1", n_resamples=2000)
    assert list(frame["candidate"]) == ["caps-3"] and list(frame["baseline"]) == ["caps-1"]
    row = frame.iloc[0]
    # means over both seeds and all images: (6 + 9) / 20 - (4 + 6) / 20 = 0.25
    assert (row["baseline_robust_accuracy"], row["candidate_robust_accuracy"]) == (0.5, 0.75)
    assert row["difference"] == pytest.approx(0.25)
    assert row["ci_low"] <= 0.25 <= row["ci_high"]
    assert row["per_seed_differences"].startswith("s0:+20.0") and "s1:+30.0" in row["per_seed_differences"]
    assert row["seeds_paired"]  # both hold seeds 0 and 1: seed k of the variant is drawn with seed k of the twin
    assert against_no_routing(results, examples, "absent", n_resamples=10).empty
    lone = (results["model"] != "caps-3-s1").to_numpy()  # the variant lost a seed: its seeds are drawn on their own
    unpaired = against_no_routing(results[lone], examples[examples["model"] != "caps-3-s1"], "caps-1", n_resamples=200)
    assert not unpaired["seeds_paired"].iloc[0] and unpaired["difference"].iloc[0] == pytest.approx(0.6 - 0.5)


@pytest.mark.parametrize("twins", [("capsnet-routing-1", "capsnet-paper", "capsnet-routing-5"),
                                   ("efficient-capsnet-uniform", "efficient-capsnet")])
def test_one_training_seed_starts_a_routing_variant_and_its_no_routing_twin_alike(twins):
    """Why the routing comparison pairs seeds: the twins have the same parameters, so a seed gives them the same
    initial weights (and the training loop the same batches: its shuffling and shifts depend on seed and epoch)."""
    from capsrobust.models.recipes import build_model
    from capsrobust.runtime import seed_everything

    states = []
    for name in twins:
        seed_everything(7)
        states.append(build_model(recipe(name)).state_dict())
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[key], states[0][key]) for key in state)


def test_the_report_gives_each_routing_variant_over_its_seeds_with_the_detector(mnist5k, tmp_path):
    """Two seeds of capsnet-tiny through the sweep, the detector and the report: the per-variant table is there."""
    tiny = recipe("capsnet-tiny")
    no_routing = dataclasses.replace(tiny, name="capsnet-tiny-1",
                                     model=dataclasses.replace(tiny.model, routing_iterations=1))
    runs = []
    for variant in (tiny, no_routing):
        for train_seed in (0, 1):
            run = tmp_path / f"{variant.name}-s{train_seed}"
            train(variant, mnist5k, run, TrainSettings(seed=train_seed, epochs=1, device="cpu", progress=False))
            runs.append(run)
    suite = suite_from_dict({"suite": {"name": "routing-tiny", "n": 12, "routing_baselines": ["capsnet-tiny-1"]},
                             "attack": [
        {"name": "pgd-linf", "eps": [0.1], "params": {"steps": 2, "rel_step": 0.5}},
        {"name": "vote-pgd-linf", "eps": [0.1], "params": {"steps": 2, "rel_step": 0.5}},
    ]}, source="routing-tiny.toml")
    sweep_dir = tmp_path / "sweep"
    run_sweep(runs, suite, mnist5k, out_dir=sweep_dir, device="cpu", save_adversarials=True, progress=False)
    run_detection(sweep_dir, device="cpu", dataset=mnist5k)
    report = build_report([sweep_dir], tmp_path / "report", formats=("md",), n_resamples=200)

    variants = pd.read_csv(report / "tables" / "routing_variants.csv").set_index("group")
    assert sorted(variants.index) == ["capsnet-tiny", "capsnet-tiny-1"] and set(variants["n_seeds"]) == {2}
    per_model = pd.read_csv(report / "tables" / "routing.csv")  # the per-seed rows it averages
    row = variants.loc["capsnet-tiny"]
    for name in ("through_routing", "masking_gap", "best_attack"):
        assert row[name] == pytest.approx(per_model[per_model["model"].str.fullmatch(r"capsnet-tiny-s\d")][name].mean())
        assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]
    assert 0 <= row["auc_standard_min"] <= 1  # the detector's AUC, averaged over the two seeds
    text = (report / "report.md").read_text(encoding="utf-8")
    assert "Per routing variant (and per CNN, as the baseline), over its training seeds" in text
    assert (report / "figures" / "routing_variants.png").stat().st_size > 0 and "routing_variants.png" in text
    # Routing against no routing: the variants' best attacks, paired; both faced the same two attacks
    against = pd.read_csv(report / "tables" / "routing_against_none.csv")
    assert list(against["candidate"]) == ["capsnet-tiny"] and list(against["baseline"]) == ["capsnet-tiny-1"]
    expected = variants.loc["capsnet-tiny", "best_attack"] - variants.loc["capsnet-tiny-1", "best_attack"]
    assert against["difference"].iloc[0] == pytest.approx(expected)
    assert "**Routing against no routing.**" in text
    assert "capsrobust compare sweep --baseline capsnet-tiny-1 --candidate capsnet-tiny --paired-seeds" in text
    assert against["seeds_paired"].iloc[0]
    # the printed command gives the report's interval
    cli = CliRunner().invoke(main, ["compare", str(sweep_dir), "--baseline", "capsnet-tiny-1", "--candidate",
                                    "capsnet-tiny", "--paired-seeds", "--n-resamples", "200",
                                    "--out", str(tmp_path / "compare.csv")])
    assert cli.exit_code == 0, cli.output
    computed = pd.read_csv(tmp_path / "compare.csv")
    assert (computed[["ci_low", "ci_high"]].to_numpy() == against[["ci_low", "ci_high"]].to_numpy()).all()

    # Accuracy first: with the suite's floor at the better seed's clean accuracy, the other seed (if below) is left
    # out of both tables and named in the report.
    record = json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    clean = pd.read_csv(sweep_dir / "results.csv").groupby("model")["clean_accuracy"].min()
    record["request"]["suite"]["suite"]["min_clean_accuracy"] = float(clean.max())
    (sweep_dir / "sweep.json").write_text(json.dumps(record), encoding="utf-8")
    floored = build_report([sweep_dir], tmp_path / "floored", formats=("md",), n_resamples=200)
    weak = sorted(clean[clean < clean.max()].index)
    kept = pd.read_csv(floored / "tables" / "routing.csv")["model"]
    assert sorted(set(kept)) == sorted(set(clean.index) - set(weak))
    text = (floored / "report.md").read_text(encoding="utf-8")
    assert "**Accuracy first**" in text and all(f"{model} (" in text for model in weak)


def test_the_accuracy_floor_names_the_models_below_it():
    results = pd.DataFrame({"model": ["a", "a", "b", "c"], "clean_accuracy": [0.98, 0.98, 0.97, 0.975]})
    assert below_accuracy_floor(results, 0.975) == {"b": 0.97}
    assert below_accuracy_floor(results, 0.0) == {}


def test_the_report_prints_an_open_bracket_as_up_to_and_a_closed_one_as_one_number():
    from capsrobust.reporting.sections.routing import _three_numbers

    frame = pd.DataFrame({"norm": ["linf", "linf"], "clean_accuracy": [0.99, 0.99], "through_routing": [0.2, 0.3],
                          "through_routing_low": [0.1, 0.2], "through_routing_high": [0.3, 0.4],
                          "masking_gap": [0.0, 0.05], "masking_gap_max": [0.059, 0.05], "best_attack": [0.2, 0.25],
                          "best_attack_low": [0.1, 0.2], "best_attack_high": [0.3, 0.3]})
    assert list(_three_numbers(frame)["gap"]) == ["+0.0 (up to +5.9)", "+5.0"]
