"""Attacks by name, run through ART or Foolbox. Importing this package registers every attack."""

from capsrobust.attacks import catalog  # noqa: F401  (registration side effect)
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

__all__ = [
    "AttackCall", "AttackError", "AttackKind", "AttackResult", "AttackRole", "AttackSpec", "Backend", "Norm", "Param",
    "attack_names", "get_attack", "register_attack", "run_attack",
]
