"""Attacks: by name, run through ART or Foolbox on a model's chosen objective, grouped into suites.

Importing this package registers every attack; ``objectives`` wraps a model as an ART classifier or a Foolbox
model (``to_art``, ``to_foolbox``).
"""

from capsrobust.attacks import catalog  # noqa: F401  (registration side effect)
from capsrobust.attacks.objectives import AttackObjective, to_art, to_foolbox
from capsrobust.attacks.registry import (
    AttackCall,
    AttackError,
    AttackKind,
    AttackResult,
    AttackRole,
    AttackSpec,
    Backend,
    Norm,
    Param,
    attack_names,
    get_attack,
    register_attack,
    run_attack,
)
from capsrobust.attacks.suites import Suite, load_suite

__all__ = [
    "AttackCall",
    "AttackError",
    "AttackKind",
    "AttackObjective",
    "AttackResult",
    "AttackRole",
    "AttackSpec",
    "Backend",
    "Norm",
    "Param",
    "Suite",
    "attack_names",
    "get_attack",
    "load_suite",
    "register_attack",
    "run_attack",
    "to_art",
    "to_foolbox",
]
