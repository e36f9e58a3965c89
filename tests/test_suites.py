"""Attack suites: the shipped ones load, and every kind of mistake is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsrobust.attacks import Backend
from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.suites import SuiteError, load_suite, suite_from_dict
from capsrobust.evaluation.checks import Status
from capsrobust.evaluation.plan import plan_cells

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(path.stem for path in (REPO / "attacks").glob("*.toml")))
def test_shipped_suites_load_under_their_file_name_and_attack_with_pgd(name):
    suite = load_suite(name)
    assert suite.name == name
    assert "pgd-linf" in {entry.label for entry in suite.attacks}  # every verdict has a gradient attack in it


def test_standard_suite_covers_the_issue():
    suite = load_suite("standard")
    entries = {entry.label: entry for entry in suite.attacks}
    assert entries["pgd-linf"].eps == (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    assert entries["pgd-linf"].params_dict["steps"] >= 40
    assert {"pgd-l2", "cw-l2", "square", "vote-pgd-linf"} <= set(entries)
    full = {entry.attack for entry in load_suite("full").attacks}
    assert "autoattack" in full
    assert any(entry.params_dict.get("restarts", 1) > 1 for entry in load_suite("full").attacks)


def test_cpu_standard_keeps_every_model_on_pgd_and_spends_the_costly_attacks_elsewhere():
    entries = {entry.label: entry for entry in load_suite("cpu-standard").attacks}
    assert entries["pgd-linf"].applies_to("cnn-baseline") and entries["fgsm"].applies_to("cnn-baseline")
    assert not entries["cw-l2"].applies_to("cnn-baseline") and entries["cw-l2"].applies_to("capsnet-paper")
    assert entries["cw-l2"].backends == (Backend.FOOLBOX,)


def test_models_key_limits_an_entry_and_the_plan_names_what_it_left_out():
    suite = suite_from_dict({"attack": [{"name": "fgsm", "eps": [0.1]},
                                        {"name": "pgd-linf", "eps": [0.1], "models": ["caps"]}]})
    assert suite.attacks[0].models == () and suite.attacks[1].models == ("caps",)
    assert "models" not in suite.to_dict()["attack"][0]  # absent when unset: older suites keep their digest
    models = [("caps", AttackObjective.MARGIN, True), ("cnn", AttackObjective.CE_LOG_LENGTHS, False)]
    cells, notes = plan_cells(suite, models, [Backend.ART], seed=0)
    assert [(c.model, c.label) for c in cells if c.role == "attack"] == [
        ("caps", "fgsm"), ("caps", "pgd-linf"), ("cnn", "fgsm")]
    (cnn_note,) = [note for note in notes if note.model == "cnn"]
    assert cnn_note.status is Status.SKIP and "pgd-linf (the suite runs it on caps only)" in cnn_note.detail


def test_an_entry_objective_overrides_the_sweeps_in_the_plan():
    ce = {"name": "pgd-linf", "label": "pgd-ce", "eps": [0.1], "objective": "ce-lengths"}
    suite = suite_from_dict({"attack": [{"name": "pgd-linf", "eps": [0.1]}, ce]})
    assert "objective" not in suite.to_dict()["attack"][0]
    assert suite.to_dict()["attack"][1]["objective"] == "ce-lengths"
    cells, _ = plan_cells(suite, [("caps", AttackObjective.MARGIN, True)], [Backend.ART], seed=0)
    by_label = {cell.label: cell for cell in cells}
    assert by_label["pgd-linf"].objective is AttackObjective.MARGIN
    assert by_label["pgd-ce"].objective is AttackObjective.CE_LENGTHS
    assert by_label["pgd-ce-2x-steps"].objective is AttackObjective.CE_LENGTHS
    assert len({cell.cell_id for cell in cells}) == len(cells) == 4


def test_defaults_are_filled_in_and_backends_default_to_every_library():
    suite = suite_from_dict({"attack": [{"name": "pgd-linf", "eps": [0.1], "params": {"steps": 7}}]})
    (entry,) = suite.attacks
    assert entry.params_dict == {"steps": 7, "rel_step": 0.1, "random_start": True, "restarts": 1}
    assert entry.backends == (Backend.ART, Backend.FOOLBOX)
    assert suite.n == 1000 and suite.double_steps_check


def test_l2_budgets_may_exceed_one():
    suite = suite_from_dict({"attack": [{"name": "pgd-l2", "eps": [0.5, 2, 3.0]}]})
    assert suite.attacks[0].eps == (0.5, 2.0, 3.0)


BAD = [
    ("unknown attack", '[[attack]]\nname = "deepfool"\neps = [0.1]', "key 'name': unknown attack 'deepfool'"),
    ("unknown entry key", '[[attack]]\nname = "fgsm"\neps = [0.1]\nsteps = 3', "unknown key 'steps'"),
    ("unknown top key", 'attacks = 1\n[[attack]]\nname = "fgsm"\neps = [0.1]', "unknown key 'attacks'"),
    ("unknown suite key", '[suite]\nsize = 3\n[[attack]]\nname = "fgsm"\neps = [0.1]', "unknown key 'size'"),
    ("unknown parameter", '[[attack]]\nname = "fgsm"\neps = [0.1]\nparams = {steps = 3}', "unknown parameter 'steps'"),
    ("parameter type", '[[attack]]\nname = "pgd-linf"\neps = [0.1]\nparams = {steps = 2.5}',
     "parameter 'steps' must be an integer"),
    ("negative eps", '[[attack]]\nname = "fgsm"\neps = [-0.1]', "key 'eps': eps must be ≥ 0"),
    ("non-numeric eps", '[[attack]]\nname = "fgsm"\neps = ["0.1"]', "key 'eps': eps must be a finite number"),
    ("boolean eps", '[[attack]]\nname = "fgsm"\neps = [true]', "key 'eps': eps must be a finite number"),
    ("eps above 1 for linf", '[[attack]]\nname = "pgd-linf"\neps = [8]', "key 'eps': L∞ eps 8 exceeds 1"),
    ("eps not a list", '[[attack]]\nname = "fgsm"\neps = 0.1', "key 'eps' must be a non-empty list"),
    ("missing eps", '[[attack]]\nname = "fgsm"', "missing key 'eps'"),
    ("duplicate eps", '[[attack]]\nname = "fgsm"\neps = [0.1, 0.1]', "lists a budget twice"),
    ("unknown backend", '[[attack]]\nname = "fgsm"\neps = [0.1]\nbackends = ["cleverhans"]',
     "key 'backends': unknown backend 'cleverhans'"),
    ("backend without the attack", '[[attack]]\nname = "square"\neps = [0.1]\nbackends = ["foolbox"]',
     "key 'backends': square has no foolbox implementation"),
    ("zero eps for autoattack", '[[attack]]\nname = "autoattack"\neps = [0.0, 0.1]', "needs eps > 0"),
    ("duplicate labels", '[[attack]]\nname = "fgsm"\neps = [0.1]\n[[attack]]\nname = "fgsm"\neps = [0.2]',
     "share the label 'fgsm'"),
    ("models not a list", '[[attack]]\nname = "fgsm"\neps = [0.1]\nmodels = "caps"',
     "key 'models' must be a list of distinct model names"),
    ("unknown objective", '[[attack]]\nname = "fgsm"\neps = [0.1]\nobjective = "hinge"',
     "key 'objective': unknown"),
    ("no attacks", '[suite]\nname = "empty"', "no attacks"),
    ("bad n", '[suite]\nn = 0\n[[attack]]\nname = "fgsm"\neps = [0.1]', "key 'suite.n' must be ≥ 1"),
    ("not TOML", "[[attack]\nname = ", "not valid TOML"),
    ("accuracy floor of 1 or more", '[suite]\nmin_clean_accuracy = 97.5\n[[attack]]\nname = "fgsm"\neps = [0.1]',
     "key 'suite.min_clean_accuracy' must be a fraction in [0, 1)"),
    ("accuracy floor not a number", '[suite]\nmin_clean_accuracy = true\n[[attack]]\nname = "fgsm"\neps = [0.1]',
     "key 'suite.min_clean_accuracy' must be a fraction"),
    ("routing baselines not names", '[suite]\nrouting_baselines = "a"\n[[attack]]\nname = "fgsm"\neps = [0.1]',
     "key 'suite.routing_baselines' must be a list of distinct recipe groups"),
    ("routing baseline twice", '[suite]\nrouting_baselines = ["a", "a"]\n[[attack]]\nname = "fgsm"\neps = [0.1]',
     "key 'suite.routing_baselines' must be a list of distinct recipe groups"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD, ids=[case for case, _, _ in BAD])
def test_bad_suites_are_refused_in_one_line_naming_file_and_key(tmp_path, case, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(SuiteError, match=r"known suites: .*quick"):
        load_suite("nonexistent")


def test_an_accuracy_floor_is_kept_and_only_suites_that_set_it_change_their_digest():
    plain = {"attack": [{"name": "fgsm", "eps": [0.1]}]}
    floored = {"suite": {"min_clean_accuracy": 0.975}, **plain}
    assert suite_from_dict(plain).min_clean_accuracy == 0.0
    assert "min_clean_accuracy" not in suite_from_dict(plain).to_dict()["suite"]  # resumable sweeps keep their key
    assert suite_from_dict(floored).min_clean_accuracy == 0.975
    assert suite_from_dict(suite_from_dict(floored).to_dict()) == suite_from_dict(floored)
    assert load_suite("routing").min_clean_accuracy == 0.975  # issue 20: accuracy first


def test_routing_baselines_are_kept_and_only_suites_that_name_some_change_their_digest():
    plain = {"attack": [{"name": "fgsm", "eps": [0.1]}]}
    named = {"suite": {"routing_baselines": ["capsnet-routing-1"]}, **plain}
    assert "routing_baselines" not in suite_from_dict(plain).to_dict()["suite"]
    assert suite_from_dict(named).routing_baselines == ("capsnet-routing-1",)
    assert suite_from_dict(suite_from_dict(named).to_dict()) == suite_from_dict(named)
    assert suite_from_dict(named).digest() != suite_from_dict(plain).digest()
    assert load_suite("routing").routing_baselines == ("capsnet-routing-1", "efficient-capsnet-uniform")


def test_the_seed_study_runs_the_routing_suites_own_attacks_at_its_budget():
    """routing-seeds adds seeds to one comparison of the routing suite: its attacks must be that suite's, unchanged."""
    routing = {entry.label: entry for entry in load_suite("routing").attacks}
    seeds = load_suite("routing-seeds")
    assert seeds.cascade and seeds.routing_baselines == ("efficient-capsnet-uniform",)
    assert seeds.min_clean_accuracy == load_suite("routing").min_clean_accuracy
    for entry in seeds.attacks:
        assert entry.params == routing[entry.label].params, entry.label
        assert set(entry.eps) <= set(routing[entry.label].eps), entry.label
