"""Attack parameters are typed dataclasses, validated once when a suite (or a call) names them."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from capsrobust.attacks import attack_names, get_attack
from capsrobust.attacks.params import ApgdTargetedParams, AttackParams, AutoAttackParams, PgdParams, ReconPgdParams
from capsrobust.cli import main


def test_every_attack_names_a_frozen_params_dataclass_whose_defaults_parse_back():
    for name in attack_names():
        spec = get_attack(name)
        assert issubclass(spec.params, AttackParams) and dataclasses.is_dataclass(spec.params)
        defaults = spec.parse_params()
        assert isinstance(defaults, spec.params)
        assert spec.params.parse(defaults.to_dict(), name) == defaults  # the stored mapping is the object
        with pytest.raises(dataclasses.FrozenInstanceError):
            defaults.__setattr__("anything", 1)


def test_parsing_coerces_types_and_refuses_bad_keys_values_and_combinations():
    assert PgdParams.parse({"steps": 7, "rel_step": 1}) == PgdParams(steps=7, rel_step=1.0)
    assert isinstance(PgdParams.parse({"rel_step": 1}).rel_step, float)  # an int is accepted for a float
    with pytest.raises(ValueError, match="unknown parameter 'step' for pgd-linf"):
        PgdParams.parse({"step": 7}, "pgd-linf")
    with pytest.raises(ValueError, match="'steps' must be an integer"):
        PgdParams.parse({"steps": 7.5})
    with pytest.raises(ValueError, match="'steps' must be ≥ 1"):
        PgdParams.parse({"steps": 0})
    with pytest.raises(ValueError, match="'random_start' must be true or false"):
        PgdParams.parse({"random_start": 1})
    with pytest.raises(ValueError, match="needs random_start = true"):
        PgdParams.parse({"restarts": 3, "random_start": False})
    with pytest.raises(ValueError, match="'targets' must be ≤ 9"):
        ApgdTargetedParams.parse({"targets": 10})
    with pytest.raises(ValueError, match="'targets' must be ≤ 9"):
        AutoAttackParams.parse({"targets": 12})


def test_derived_budgets_and_settings():
    assert PgdParams(steps=10, restarts=3).budget == 30
    assert ReconPgdParams(steps=5).budget == 5 and isinstance(ReconPgdParams(), PgdParams)
    apgd = AutoAttackParams(apgd_steps=20, restarts=2, rel_step=1.5).apgd()
    assert (apgd.steps, apgd.restarts, apgd.rel_step, apgd.budget) == (20, 2, 1.5, 40)
    assert [item.name for item in get_attack("pgd-linf-recon").schema] == [
        "steps", "rel_step", "random_start", "restarts", "recon_weight", "confidence"]


def test_the_attacks_command_lists_parameters_and_refuses_unknown_attacks():
    result = CliRunner().invoke(main, ["attacks", "pgd-linf"])
    assert result.exit_code == 0, result.output
    assert "steps = 40 (int, ≥ 1): gradient steps per start" in result.output
    assert "random_start = true (bool)" in result.output
    refused = CliRunner().invoke(main, ["attacks", "pgd-lnf"])
    assert refused.exit_code != 0 and "unknown attack 'pgd-lnf'" in refused.output
