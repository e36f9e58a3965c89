"""Attack parameters: one frozen dataclass per attack family, validated once when a suite (or a call) names them.

Each field carries its help text and inclusive minimum (``param``), so the same class gives the defaults, the
checks, the listing in ``capsrobust attacks`` and the typed object an attack reads (``call.params.steps``, never
``int(p["steps"])``). Checks across fields live in ``__post_init__``. Suites and result tables store parameters as
plain mappings (``to_dict``), which keeps cell ids and resumed sweeps unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

ParamValue = int | float | bool
ParamsT = TypeVar("ParamsT", bound="AttackParams")


@dataclass(frozen=True)
class Param:
    """A typed attack parameter with its default; ``minimum`` is inclusive."""

    name: str
    type: type
    default: ParamValue
    help: str = ""
    minimum: float | None = None

    def coerce(self, value: Any) -> ParamValue:
        """Check ``value`` against the type (ints are accepted for floats); raises ``ValueError`` naming the key."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"parameter {self.name!r} must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"parameter {self.name!r} must be a number, got {value!r}")
        if self.type is int:
            if not isinstance(value, int):
                raise ValueError(f"parameter {self.name!r} must be an integer, got {value!r}")
        elif not math.isfinite(value):
            raise ValueError(f"parameter {self.name!r} must be finite, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"parameter {self.name!r} must be ≥ {self.minimum:g}, got {value!r}")
        return self.type(value)


def param(default: ParamValue, help: str, minimum: float | None = None) -> Any:
    """A dataclass field with its default, help text and inclusive minimum."""
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum})


_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class AttackParams:
    """Base of every attack's parameters; an attack without parameters uses it as it is."""

    _schema: ClassVar[dict[type, tuple[Param, ...]]] = {}

    @classmethod
    def schema(cls) -> tuple[Param, ...]:
        """The fields as ``Param``s (name, type, default, help, minimum), in declaration order."""
        if cls not in AttackParams._schema:
            AttackParams._schema[cls] = tuple(
                Param(field.name, _TYPES[str(field.type)], field.default, field.metadata.get("help", ""),
                      field.metadata.get("minimum")) for field in dataclasses.fields(cls))
        return AttackParams._schema[cls]

    @classmethod
    def parse(cls: type[ParamsT], given: Mapping[str, Any] | None = None, attack: str = "this attack") -> ParamsT:
        """Defaults overridden by ``given``; unknown keys and bad values raise ``ValueError`` naming the key."""
        given = dict(given or {})
        by_name = {item.name: item for item in cls.schema()}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            allowed = ", ".join(sorted(by_name)) or "none"
            raise ValueError(f"unknown parameter {unknown[0]!r} for {attack} (allowed: {allowed})")
        return cls(**{name: by_name[name].coerce(value) for name, value in given.items()})

    def to_dict(self) -> dict[str, ParamValue]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PgdParams(AttackParams):
    """PGD (Madry et al. 2018) and the vote attack: fixed steps of ``rel_step · eps``."""

    steps: int = param(40, "gradient steps per start", minimum=1)
    rel_step: float = param(0.1, "step size as a fraction of eps", minimum=0.0)
    random_start: bool = param(True, "start from a uniform random point in the eps ball")
    restarts: int = param(1, "independent random starts; an example counts as broken if any start breaks it",
                          minimum=1)

    def __post_init__(self) -> None:
        if self.restarts > 1 and not self.random_start:
            raise ValueError("parameter 'restarts' > 1 needs random_start = true (every start would be the same)")

    @property
    def budget(self) -> int:
        return self.steps * self.restarts


#: Default λ (log-odds per unit of L2 reconstruction distance) and κ (log-odds); chosen in docs/detection.md.
RECON_WEIGHT = 0.1
RECON_CONFIDENCE = 2.0


@dataclass(frozen=True)
class ReconPgdParams(PgdParams):
    """The reconstructive attack (Qin et al. 2020): PGD on min(margin, κ) − λ · reconstruction distance."""

    recon_weight: float = param(RECON_WEIGHT, "λ: weight of the L2 reconstruction distance, in log-odds per unit",
                                minimum=0.0)
    confidence: float = param(RECON_CONFIDENCE, "κ: log-odds margin beyond which only the distance is pushed down",
                              minimum=0.0)


@dataclass(frozen=True)
class CwParams(AttackParams):
    """Carlini–Wagner L2 (2017)."""

    binary_search_steps: int = param(5, "binary-search steps over the trade-off constant c", minimum=1)
    max_iter: int = param(100, "optimiser iterations per binary-search step", minimum=1)
    confidence: float = param(0.0, "margin κ the adversarial class must win by", minimum=0.0)
    learning_rate: float = param(0.1, "optimiser step size (0.1 suits ~100 iterations)", minimum=0.0)
    initial_const: float = param(1.0, "first value of c", minimum=0.0)

    @property
    def budget(self) -> int:
        return self.binary_search_steps * self.max_iter


@dataclass(frozen=True)
class ApgdParams(AttackParams):
    """APGD (Croce & Hein 2020): ``steps`` per restart, a first step of ``rel_step · eps`` that APGD then adapts."""

    steps: int = param(100, "iterations per restart (100 in AutoAttack)", minimum=1)
    restarts: int = param(1, "random starts; each attacks only the images earlier ones left robust", minimum=1)
    rel_step: float = param(2.0, "first step as a fraction of eps (2 in Croce & Hein); APGD then adapts it",
                            minimum=0.0)

    @property
    def budget(self) -> int:
        return self.steps * self.restarts


#: AutoAttack's standard version aims at the 9 runner-up classes (all of them on 10-class data); a model with fewer
#: classes gets K − 1 (``art_backend.apgd_t_members``).
MAX_TARGETS = 9


def _check_targets(targets: int) -> None:
    if targets > MAX_TARGETS:
        raise ValueError(f"parameter 'targets' must be ≤ {MAX_TARGETS} (the classes other than the true one), "
                         f"got {targets}")


TARGETS_HELP = "runner-up classes aimed at in turn, by the model's clean scores"


@dataclass(frozen=True)
class ApgdTargetedParams(ApgdParams):
    """APGD-T: APGD on targeted DLR towards each of ``targets`` runner-up classes in turn."""

    targets: int = param(MAX_TARGETS, TARGETS_HELP, minimum=1)

    def __post_init__(self) -> None:
        _check_targets(self.targets)


@dataclass(frozen=True)
class SquareParams(AttackParams):
    """Square Attack (Andriushchenko et al. 2020), L∞."""

    queries: int = param(1000, "iterations (one model query each) per restart", minimum=1)
    p_init: float = param(0.8, "initial fraction of pixels in a square", minimum=0.0)
    restarts: int = param(1, "independent restarts", minimum=1)

    @property
    def budget(self) -> int:
        return self.queries * self.restarts


@dataclass(frozen=True)
class AutoAttackParams(AttackParams):
    """AutoAttack's standard version: APGD-CE, APGD-T over ``targets`` classes, then Square."""

    apgd_steps: int = param(100, "iterations of APGD-CE and of each APGD-T target", minimum=1)
    restarts: int = param(1, "random starts of APGD-CE and of each APGD-T target (1 in the standard version)",
                          minimum=1)
    targets: int = param(MAX_TARGETS, TARGETS_HELP, minimum=1)
    square_queries: int = param(5000, "queries of Square (one restart)", minimum=1)
    rel_step: float = param(2.0, "APGD's first step as a fraction of eps (2 as in Croce & Hein)", minimum=0.0)
    p_init: float = param(0.8, "Square's initial fraction of pixels in a square", minimum=0.0)

    def __post_init__(self) -> None:
        _check_targets(self.targets)

    def apgd(self) -> ApgdParams:
        """The settings every APGD member of the ensemble runs with."""
        return ApgdParams(steps=self.apgd_steps, restarts=self.restarts, rel_step=self.rel_step)
