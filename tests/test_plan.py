"""Planning: cell ids that tell every budget apart, at the precision it was written with."""

from __future__ import annotations

from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.registry import Backend
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.evaluation.plan import PlannedModel, eps_text, plan_cells


def test_eps_in_cell_ids_is_short_where_exact_and_whole_where_not():
    assert [eps_text(e) for e in (0.0, 0.1, 0.3, 2.0, 8 / 255)] == ["0", "0.1", "0.3", "2", repr(8 / 255)]
    assert eps_text(0.1000001) == "0.1000001" and eps_text(0.10000001) == "0.10000001"


def test_a_budget_nudged_in_its_seventh_digit_is_another_cell():
    def ids(eps: list[float]) -> list[str]:
        suite = suite_from_dict({"suite": {"name": "s", "double_steps_check": False},
                                 "attack": [{"name": "fgsm", "eps": eps}]}, source="s.toml")
        cells, _ = plan_cells(suite, [PlannedModel("m", AttackObjective.MARGIN)], (Backend.ART,), seed=0)
        return [cell.cell_id for cell in cells]

    assert ids([0.1]) != ids([0.1000001])
    assert ids([0.1]) == ["m__fgsm__art__margin__eps0.1"]  # ids of ordinary budgets are as they always were


def test_a_suite_expanding_past_the_cell_limit_is_refused_unless_asked_for():
    import pytest

    from capsrobust.evaluation.plan import SweepError

    suite = suite_from_dict({"suite": {"name": "s", "double_steps_check": False},
                             "attack": [{"name": "fgsm", "eps": [i / 1000 for i in range(300)]}]}, source="s.toml")
    models = [PlannedModel(f"m{i}", AttackObjective.MARGIN) for i in range(4)]
    with pytest.raises(SweepError, match=r"expands to 1,200 cells for 4 model\(s\), more than the limit of 1,000"):
        plan_cells(suite, models, (Backend.ART,), seed=0, max_cells=1000)
    assert len(plan_cells(suite, models, (Backend.ART,), seed=0, max_cells=1200)[0]) == 1200


def test_a_transfer_entry_crafts_on_each_named_model_and_judges_on_every_other():
    from capsrobust.models.base import Capability

    suite = suite_from_dict({"suite": {"name": "t"}, "attack": [
        {"name": "pgd-linf", "eps": [0.1], "transfer_from": ["caps-r1", "cnn"], "params": {"steps": 3}}]})
    caps = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES})
    models = [PlannedModel("caps-r3", AttackObjective.MARGIN, caps), PlannedModel("caps-r1", AttackObjective.MARGIN,
              caps), PlannedModel("cnn", AttackObjective.CE_LOG_LENGTHS)]
    cells, _ = plan_cells(suite, models, (Backend.ART,), seed=0)
    found = {(cell.model, cell.source, cell.label, cell.objective) for cell in cells}
    assert found == {
        ("caps-r3", "caps-r1", "pgd-linf-from-caps-r1", AttackObjective.MARGIN),  # the source's own objective
        ("caps-r3", "cnn", "pgd-linf-from-cnn", AttackObjective.CE_LOG_LENGTHS),
        ("caps-r1", "cnn", "pgd-linf-from-cnn", AttackObjective.CE_LOG_LENGTHS),
        ("cnn", "caps-r1", "pgd-linf-from-caps-r1", AttackObjective.MARGIN),
    }  # never a model onto itself


def test_every_target_of_a_transfer_source_gets_the_same_seed_so_it_judges_the_same_adversarials():
    from capsrobust.models.base import Capability

    suite = suite_from_dict({"suite": {"name": "t"}, "attack": [
        {"name": "pgd-linf", "eps": [0.1, 0.2], "transfer_from": ["caps-r1", "cnn"], "params": {"steps": 3}}]})
    caps = frozenset({Capability.CAPSULE_LENGTHS, Capability.VOTES})
    models = [PlannedModel("caps-r3", AttackObjective.MARGIN, caps), PlannedModel("caps-r1", AttackObjective.MARGIN,
              caps), PlannedModel("cnn", AttackObjective.CE_LOG_LENGTHS)]
    cells, _ = plan_cells(suite, models, (Backend.ART,), seed=0)
    seeds: dict[tuple[str, float], set[int]] = {}
    for cell in cells:
        seeds.setdefault((cell.source, cell.eps), set()).add(cell.seed)
    assert all(len(found) == 1 for found in seeds.values())  # caps-r3 and caps-r1 share the cnn's, and so on
    assert len({seed for found in seeds.values() for seed in found}) == 4  # but each source and budget its own
    again, _ = plan_cells(suite, models, (Backend.ART,), seed=1)
    assert {cell.seed for cell in again}.isdisjoint({cell.seed for cell in cells})  # and the sweep's seed counts


def test_only_bounded_attacks_transfer():
    import pytest

    from capsrobust.attacks.suites import SuiteError

    with pytest.raises(SuiteError, match="only a bounded attack transfers"):
        suite_from_dict({"attack": [{"name": "cw-l2", "eps": [1.0], "transfer_from": ["cnn"]}]})
