"""Cascade mode: a chain's order and schedule, and a cascaded sweep against a full one on deterministic attacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.registry import Backend
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.evaluation import cascade
from capsrobust.evaluation.checks import Status
from capsrobust.evaluation.plan import PlannedModel, SweepError, plan_cells
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep

N = 40
# Deterministic attacks only (no random start): an image's adversarial does not depend on which other images share
# its batch, so a cascade must reproduce the full sweep's per-image outcomes exactly where it attacks.
DETERMINISTIC = {
    "suite": {"name": "deterministic", "n": N},
    "attack": [
        {"name": "fgsm", "eps": [0.0, 0.05, 0.1, 0.2]},
        {"name": "pgd-linf", "eps": [0.05, 0.1, 0.2], "params": {"steps": 4, "rel_step": 0.25, "random_start": False}},
        {"name": "pgd-l2", "eps": [1.0], "params": {"steps": 3, "rel_step": 0.25, "random_start": False}},
    ],
}


def _suite(cascaded: bool):
    table = {**DETERMINISTIC, "suite": {**DETERMINISTIC["suite"], "cascade": cascaded}}
    return suite_from_dict(table, source="deterministic.toml")


def test_a_chain_runs_budgets_upwards_with_each_check_right_after_its_attack():
    cells, _ = plan_cells(_suite(True), [PlannedModel("m", AttackObjective.MARGIN)], (Backend.ART,), seed=0)
    chains = cascade.chains(cells)
    assert set(chains) == {"m|linf", "m|l2"}
    order = [(cell.label, cell.eps) for cell in chains["m|linf"]]
    assert order == [("fgsm", 0.0), ("fgsm", 0.05), ("pgd-linf", 0.05), ("fgsm", 0.1), ("pgd-linf", 0.1),
                     ("pgd-linf-2x-steps", 0.1), ("fgsm", 0.2), ("pgd-linf", 0.2)]


def test_the_schedule_hands_out_each_chains_next_cell_as_soon_as_its_last_one_is_stored():
    planned = [PlannedModel("a", AttackObjective.MARGIN), PlannedModel("b", AttackObjective.MARGIN)]
    cells, _ = plan_cells(_suite(True), planned, (Backend.ART,), seed=0)
    chains = cascade.chains(cells)
    schedule = cascade.Schedule(cells, done={chains["a|linf"][0].cell_id})
    assert [c.cell_id for c in schedule.ready()] == [chains["a|linf"][1].cell_id, chains["a|l2"][0].cell_id,
                                                      chains["b|linf"][0].cell_id, chains["b|l2"][0].cell_id]
    # a's L∞ chain runs on to its end while b's chains have not moved: no chain waits for another
    handed = [schedule.after(cell) for cell in chains["a|linf"][1:]]
    assert [c.cell_id for c in handed[:-1]] == [c.cell_id for c in chains["a|linf"][2:]] and handed[-1] is None
    assert schedule.after(chains["b|linf"][0]) == chains["b|linf"][1]
    with pytest.raises(ValueError, match="waiting for another cell"):  # out of order: a bug, never silent
        schedule.after(chains["b|linf"][3])


def test_free_workers_take_the_smallest_budget_of_each_chain_first():
    cells, _ = plan_cells(_suite(True), [PlannedModel("m", AttackObjective.MARGIN)], (Backend.ART,), seed=0)
    ranks = cascade.budget_ranks(cells)
    by_chain = {key: [(cell.eps, ranks[cell.cell_id]) for cell in chain]
                for key, chain in cascade.chains(cells).items()}
    assert by_chain["m|linf"] == [(0.0, 0), (0.05, 1), (0.05, 1), (0.1, 2), (0.1, 2), (0.1, 2), (0.2, 3), (0.2, 3)]
    assert by_chain["m|l2"] == [(1.0, 0)]  # its own smallest budget: L2 1.0 is not "larger" than L∞ 0.2


def test_still_robust_ands_every_finished_cell_at_a_budget_no_larger():
    cells, _ = plan_cells(_suite(True), [PlannedModel("m", AttackObjective.MARGIN)], (Backend.ART,), seed=0)
    chain = cascade.chains(cells)["m|linf"]
    robust = {chain[0].cell_id: np.array([1, 1, 1, 0], bool),   # fgsm 0
              chain[1].cell_id: np.array([1, 1, 0, 0], bool),   # fgsm 0.05
              chain[3].cell_id: np.array([0, 1, 1, 1], bool)}   # fgsm 0.1: larger than pgd 0.05's budget
    masks = cascade.still_robust(cells, [chain[2]], robust)
    assert masks[chain[2].cell_id].tolist() == [True, True, False, False]


@pytest.fixture(scope="module")
def both_modes(trained_runs, mnist5k, tmp_path_factory):
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]
    tables = {}
    for cascaded in (False, True):
        out = tmp_path_factory.mktemp("cascade" if cascaded else "full")
        run_sweep(runs, _suite(cascaded), mnist5k, out_dir=out, device="cpu", progress=False,
                  save_adversarials=cascaded)
        tables[cascaded] = (out, load_sweep(out))
    return tables


def _robust(examples: pd.DataFrame, cell_id: str) -> np.ndarray:
    return examples[examples["cell_id"] == cell_id].sort_values("index")["robust"].to_numpy(bool)


def test_cascade_reproduces_the_full_sweeps_best_attack_per_image(both_modes):
    (_, full), (_, cascaded) = both_modes[False], both_modes[True]
    results = cascaded.results
    assert set(results["mode"]) == {"cascade"} and set(full.results["mode"]) == {"full"}
    for (model, norm), rows in results.groupby(["model", "norm"]):
        full_rows = full.results[(full.results["model"] == model) & (full.results["norm"] == norm)]
        for eps in sorted(rows["eps"].unique()):
            # Full sweep: robust at eps = robust to every attack at every budget ≤ eps (an adversarial in a smaller
            # ball is one in the larger ball too).
            expected = np.logical_and.reduce([_robust(full.examples, c)
                                              for c in full_rows.loc[full_rows["eps"] <= eps, "cell_id"]])
            last_id = [cell_id for cell_id, at in _chain(results, model, norm) if at == eps][-1]
            last = rows[rows["cell_id"] == last_id].iloc[0]
            got = _robust(cascaded.examples, last["cell_id"])
            assert got.tolist() == expected.tolist(), (model, norm, eps)
            assert last["robust_accuracy"] == pytest.approx(expected.mean())


def _chain(results: pd.DataFrame, model: str, norm: str) -> list[tuple[str, float]]:
    """The chain's cells in cascade order, as (cell id, eps): by eps, then in plan order (the table's order)."""
    rows = results[(results["model"] == model) & (results["norm"] == norm)]
    order = sorted(range(len(rows)), key=lambda i: (rows["eps"].iloc[i], i))
    return [(rows["cell_id"].iloc[i], rows["eps"].iloc[i]) for i in order]


def test_each_cascaded_cell_attacks_exactly_what_was_left(both_modes):
    _, cascaded = both_modes[True]
    results, examples = cascaded.results, cascaded.examples
    for (model, norm), _ in results.groupby(["model", "norm"]):
        chain = _chain(results, model, norm)
        left = None
        for cell_id, _eps in chain:
            row = results[results["cell_id"] == cell_id].iloc[0]
            outcome = examples[examples["cell_id"] == cell_id].sort_values("index")
            attacked = outcome["attacked"].to_numpy(bool)
            correct = (outcome["clean_pred"] == outcome["label"]).to_numpy()
            assert attacked.tolist() == (correct if left is None else left).tolist()
            assert row["n_attacked"] == attacked.sum()
            assert row["n_success"] == outcome["success"].sum()
            assert not outcome.loc[~attacked, "success"].any()
            robust = outcome["robust"].to_numpy(bool)
            assert robust.tolist() == (attacked & ~outcome["success"].to_numpy(bool)).tolist()
            left = robust


def test_cascaded_robust_accuracy_never_rises_along_a_chain(both_modes):
    _, cascaded = both_modes[True]
    results = cascaded.results.set_index("cell_id")
    for (model, norm), _ in cascaded.results.groupby(["model", "norm"]):
        accuracies = [results.loc[cell_id, "robust_accuracy"] for cell_id, _ in _chain(cascaded.results, model, norm)]
        assert accuracies == sorted(accuracies, reverse=True)


def test_checks_that_compare_attacks_read_what_a_later_attack_added(both_modes):
    _, cascaded = both_modes[True]
    checks = cascaded.checks
    assert set(checks.loc[checks["check"] == "pgd-vs-fgsm", "status"]) == {Status.SKIP.value}
    doubled = checks[checks["check"] == "double-steps"]
    assert doubled["detail"].str.contains("cascade").all()
    assert set(checks.loc[checks["check"] == "eps-zero", "status"]) == {Status.PASS.value}


def test_a_stopped_cascade_resumes_to_the_same_tables(both_modes, trained_runs, mnist5k, tmp_path):
    out, cascaded = both_modes[True]
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    chain = _chain(cascaded.results, cascaded.results["model"].iloc[0], "linf")
    for cell_id, _ in chain[3:]:  # as if stopped after the third cell of the first chain
        (copy / "cells" / f"{cell_id}.json").unlink()
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]
    resumed = run_sweep(runs, _suite(True), mnist5k, out_dir=copy, device="cpu", progress=False, resume=True,
                        save_adversarials=True)
    columns = ["cell_id", "robust_accuracy", "n_attacked", "n_success"]
    pd.testing.assert_frame_equal(resumed[columns], cascaded.results[columns])


def test_a_sweep_resumes_only_in_the_mode_it_started_in(both_modes, trained_runs, mnist5k):
    out, _ = both_modes[True]
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]
    with pytest.raises(SweepError, match="started with another cascade"):
        run_sweep(runs, _suite(True), mnist5k, out_dir=out, device="cpu", progress=False, resume=True, cascade=False,
                  save_adversarials=True)


def test_an_attack_limited_to_its_first_n_images_leaves_the_rest_as_they_were(trained_runs, mnist5k, tmp_path):
    table = {"suite": {"name": "limited", "n": N, "cascade": True, "double_steps_check": False},
             "attack": [{"name": "fgsm", "eps": [0.05]},
                        {"name": "pgd-linf", "eps": [0.05], "n": 15,
                         "params": {"steps": 4, "rel_step": 0.25, "random_start": False}}]}
    results = run_sweep([trained_runs["cnn-tiny"]], suite_from_dict(table, source="limited.toml"), mnist5k,
                        out_dir=tmp_path, device="cpu", progress=False)
    examples = load_sweep(tmp_path).examples
    fgsm, pgd = (examples[examples["cell_id"] == c].sort_values("index") for c in results["cell_id"])
    left = fgsm["robust"].to_numpy(bool)
    attacked = pgd["attacked"].to_numpy(bool)
    assert attacked.tolist() == (left & (np.arange(N) < 15)).tolist()
    assert pgd["robust"].to_numpy(bool)[15:].tolist() == left[15:].tolist()
    assert results["n_attacked"].iloc[1] == attacked.sum()


def test_an_attack_of_its_own_n_needs_the_cascade(trained_runs, mnist5k, tmp_path):
    from capsrobust.attacks.suites import SuiteError

    table = {"suite": {"name": "limited", "n": N}, "attack": [{"name": "fgsm", "eps": [0.1], "n": 5}]}
    with pytest.raises(SuiteError, match="key 'n' needs the cascade"):
        suite_from_dict(table, source="limited.toml")
    cascaded = suite_from_dict({**table, "suite": {**table["suite"], "cascade": True}}, source="limited.toml")
    with pytest.raises(SweepError, match="needs the cascade"):
        run_sweep([trained_runs["cnn-tiny"]], cascaded, mnist5k, out_dir=tmp_path, device="cpu", progress=False,
                  cascade=False)
    assert not (tmp_path / "sweep.json").exists()  # refused before anything was written


def test_the_detector_scores_only_what_a_cascaded_cell_attacked(both_modes, mnist5k, tmp_path):
    from capsrobust.detection.pipeline import run_detection

    out, cascaded = both_modes[True]
    table = run_detection(out, out_dir=tmp_path / "detection", device="cpu", dataset=mnist5k)
    assert len(table)
    for _, row in table.iterrows():
        attacked = cascaded.examples[(cascaded.examples["cell_id"] == row["cell_id"])
                                     & cascaded.examples["attacked"].astype(bool)
                                     & (cascaded.examples["clean_pred"] == cascaded.examples["label"])]
        assert row["n"] == len(attacked)


def test_a_cell_left_nothing_to_attack_names_its_entrys_objective():
    results = pd.DataFrame({"model": ["m", "m"], "label": ["pgd", "pgd"], "backend": ["art", "art"],
                            "objective_used": ["margin(lengths)", "none (nothing left to attack)"],
                            "n_attacked": [12, 0]})
    assert cascade.objectives_used(results) == {cascade.entry_key("m", "pgd", "art"): "margin(lengths)"}
