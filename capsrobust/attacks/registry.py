"""Attacks by name: one ``AttackSpec`` per attack, registered once, looked up by suites, sweeps and tests.

An attack is a name, a threat model (its norm, and whether ``eps`` bounds the perturbation or is a threshold on
the perturbation a minimisation attack found), the libraries that implement it, its typed parameters with
defaults, and one run function ``AttackCall → AttackResult``. Adding an attack is one ``@register_attack``
entry (see ``catalog.py``) plus one test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from capsrobust.attacks.objectives import AttackObjective, frozen_parameters
from capsrobust.attacks.params import AttackParams, Param, ParamsT, ParamValue
from capsrobust.errors import CapsRobustError, parse_choice
from capsrobust.models import Capability, CapsRobustModel
from capsrobust.models.base import CAPSULE_CAPABILITIES, capabilities_of
from capsrobust.runtime import seed_everything


class AttackError(CapsRobustError):
    """An attack is unknown, misconfigured, or cannot run on the given model or backend."""


class Norm(str, Enum):
    LINF = "linf"
    L2 = "l2"


class Backend(str, Enum):
    """The attack libraries capsrobust drives."""

    ART = "art"
    FOOLBOX = "foolbox"

    @classmethod
    def parse(cls, name: str | Backend) -> Backend:
        return parse_choice(cls, name, AttackError, "backend")


class AttackRole(str, Enum):
    """What an attack is, as the self-checks read it: they find the attacks they compare by role, never by name.

    ``single-step`` (FGSM), ``iterative`` (PGD), ``adaptive`` (APGD: step size and restarts of its own),
    ``ensemble`` (several attacks per image, gradient-free ones included: AutoAttack), ``gradient-free``
    (Square), ``minimization`` (Carlini–Wagner), ``defense-aware`` (a loss that also fights the detector), and
    ``other`` (what no check compares).
    """

    SINGLE_STEP = "single-step"
    ITERATIVE = "iterative"
    ADAPTIVE = "adaptive"
    ENSEMBLE = "ensemble"
    GRADIENT_FREE = "gradient-free"
    MINIMIZATION = "minimization"
    DEFENSE_AWARE = "defense-aware"
    OTHER = "other"


class AttackKind(str, Enum):
    """``bounded``: ``eps`` is the budget the attack must stay within (FGSM, PGD, APGD, AutoAttack, Square).

    ``minimization``: the attack looks for the smallest perturbation it can (Carlini–Wagner) and ``eps`` is a
    threshold applied afterwards: an adversarial counts as a success at ``eps`` only if its norm is ≤ ``eps``.
    """

    BOUNDED = "bounded"
    MINIMIZATION = "minimization"




@dataclass(frozen=True)
class AttackCall:
    """Everything one attack run needs; ``images`` (N, 1, 28, 28) in [0, 1] and ``labels`` (N,) live on the CPU."""

    model: CapsRobustModel
    images: torch.Tensor
    labels: torch.Tensor
    eps: float
    params: AttackParams  # the attack's own dataclass (capsrobust.attacks.params)
    objective: AttackObjective | None
    backend: Backend
    device: torch.device
    seed: int
    batch_size: int

    def params_as(self, kind: type[ParamsT]) -> ParamsT:
        """The parameters as the dataclass an attack function expects; a mismatch is a registration bug."""
        if not isinstance(self.params, kind):
            raise TypeError(f"the attack expects {kind.__name__}, its call holds {type(self.params).__name__}")
        return self.params


@dataclass(frozen=True)
class AttackResult:
    """The adversarials exactly as the library returned them (CPU, float32), never clipped into the eps ball.

    ``steps_or_queries`` is the attack's budget per example (gradient steps or model queries); ``objective_used``
    says what was differentiated or queried, e.g. ``margin(lengths)`` or ``ce(logits)``.
    """

    adversarials: torch.Tensor  # (N, 1, 28, 28)
    steps_or_queries: int
    objective_used: str


RunFunction = Callable[[AttackCall], AttackResult]


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its threat model, its backends, its parameters and how to run it."""

    name: str
    norm: Norm
    backends: tuple[Backend, ...]
    run: RunFunction
    params: type[AttackParams] = AttackParams  # the attack's parameter dataclass (none: the base)
    kind: AttackKind = AttackKind.BOUNDED
    description: str = ""
    role: AttackRole = AttackRole.OTHER
    # What a model must declare (``CapsRobustModel.capabilities``) to be attacked: capsule votes for the vote
    # attacks, capsule lengths for APGD on raw lengths, a class-conditional decoder for the reconstructive attack.
    requires: frozenset[Capability] = frozenset()
    needs_positive_eps: bool = False  # the library refuses eps = 0

    @property
    def gradient_free(self) -> bool:
        """Queries scores only (Square): the gradient-masking check compares it with the gradient attacks."""
        return self.role is AttackRole.GRADIENT_FREE

    @property
    def ensemble(self) -> bool:
        """Several attacks per image, gradient-free ones included (AutoAttack): left out of both sides of the
        gradient-free check."""
        return self.role is AttackRole.ENSEMBLE

    @property
    def surface(self) -> str:
        """What the gradients are taken of: ``votes`` (the vote attacks' surrogate) or the ``model`` itself."""
        return "votes" if Capability.VOTES in self.requires else "model"

    @property
    def needs_capsules(self) -> bool:
        """Whether only capsule models (votes or lengths) can take this attack."""
        return bool(self.requires & CAPSULE_CAPABILITIES)

    @property
    def needs_reconstruction(self) -> bool:
        """Whether only models with a class-conditional decoder can take this attack."""
        return Capability.CLASS_DECODER in self.requires

    def missing(self, capabilities: frozenset[Capability]) -> str:
        """Why a model declaring ``capabilities`` cannot take this attack, as a coverage note ("" when it can)."""
        lacking = self.requires - capabilities
        if Capability.CLASS_DECODER in lacking:
            return "needs a model with a class-conditional decoder"
        if Capability.VOTES in lacking:
            return "needs a capsule model (capsule votes)"
        if lacking:
            return "needs a capsule model (capsule lengths)"
        return ""

    @property
    def schema(self) -> tuple[Param, ...]:
        """Every parameter with its type, default, help and minimum."""
        return self.params.schema()

    def parse_params(self, given: Mapping[str, Any] | None = None) -> AttackParams:
        """The typed parameters: defaults overridden by ``given``; bad keys or values raise ``ValueError``."""
        return self.params.parse(given, self.name)

    def resolve_params(self, given: Mapping[str, Any] | None = None) -> dict[str, ParamValue]:
        """``parse_params`` as a plain mapping, the form suites and result tables store."""
        return self.parse_params(given).to_dict()

    def check_eps(self, eps: Any) -> float:
        """A valid budget for this attack; raises ``ValueError`` otherwise."""
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
            raise ValueError(f"eps must be a finite number, got {eps!r}")
        if eps < 0:
            raise ValueError(f"eps must be ≥ 0, got {eps!r}")
        if self.norm is Norm.LINF and eps > 1:
            raise ValueError(f"L∞ eps {eps!r} exceeds 1, the whole [0, 1] pixel range")
        if self.needs_positive_eps and eps == 0:
            raise ValueError(f"{self.name} needs eps > 0 (the library refuses a zero budget)")
        return float(eps)


_REGISTRY: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    *,
    norm: Norm,
    backends: tuple[Backend, ...],
    params: type[AttackParams] = AttackParams,
    kind: AttackKind = AttackKind.BOUNDED,
    description: str = "",
    role: AttackRole = AttackRole.OTHER,
    requires: frozenset[Capability] = frozenset(),
    needs_positive_eps: bool = False,
) -> Callable[[RunFunction], RunFunction]:
    """Register the decorated run function as attack ``name``."""

    def decorate(run: RunFunction) -> RunFunction:
        if name in _REGISTRY:
            raise ValueError(f"attack {name!r} is registered twice")
        _REGISTRY[name] = AttackSpec(
            name=name, norm=norm, backends=backends, run=run, params=params, kind=kind,
            description=description or (run.__doc__ or "").strip().splitlines()[0], role=role,
            requires=frozenset(requires), needs_positive_eps=needs_positive_eps,
        )
        return run

    return decorate


def unregister_attack(name: str) -> None:
    """Remove an attack (tests register throw-away attacks and remove them again)."""
    _REGISTRY.pop(name, None)


def attack_names() -> list[str]:
    return sorted(_REGISTRY)


def get_attack(name: str) -> AttackSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AttackError(f"unknown attack {name!r}; choose one of: {', '.join(attack_names())}") from None


def run_attack(
    name: str,
    model: CapsRobustModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    params: Mapping[str, Any] | None = None,
    objective: str | AttackObjective | None = None,
    backend: str | Backend = Backend.ART,
    device: torch.device | str = "cpu",
    seed: int = 0,
    batch_size: int = 100,
) -> AttackResult:
    """Run attack ``name`` on ``images`` with true ``labels`` and return the adversarials as the library made them.

    Every random generator is seeded with ``seed`` first, the model is put in eval mode and its weights are
    frozen for the duration (their ``requires_grad`` flags are restored afterwards).
    """
    spec = get_attack(name)
    chosen_backend = Backend.parse(backend)
    if chosen_backend not in spec.backends:
        supported = ", ".join(b.value for b in spec.backends)
        raise AttackError(f"{name} is not available in {chosen_backend.value} (it runs in: {supported})")
    lacking = spec.requires - capabilities_of(model)
    if lacking and not spec.needs_reconstruction:
        raise AttackError(f"{name} attacks capsules (votes or lengths); {type(model).__name__} has none (it does "
                          f"not declare {', '.join(sorted(c.value for c in lacking))}) — drop {name} for this model")
    if lacking:
        raise AttackError(
            f"{name} attacks the reconstruction detector; {type(model).__name__} has no class-conditional decoder "
            f"— use a capsnet or cnn-recon model, or drop {name} for this one"
        )
    try:
        resolved = spec.parse_params(params)
        budget = spec.check_eps(eps)
    except ValueError as error:
        raise AttackError(f"{name}: {error}") from None
    expected = tuple(getattr(model, "input_shape", images.shape[1:]))
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or tuple(images.shape[1:]) != expected:
        raise AttackError(f"{name}: expected images (N, {', '.join(map(str, expected))}) and N labels for this model, "
                          f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    call = AttackCall(
        model=model, images=images.detach().cpu().float(), labels=labels.detach().cpu().long(), eps=budget,
        params=resolved, objective=None if objective is None else AttackObjective.parse(objective),
        backend=chosen_backend, device=torch.device(device), seed=seed, batch_size=batch_size,
    )
    seed_everything(seed)
    model.eval()
    with frozen_parameters(model):
        result = spec.run(call)
    if result.adversarials.shape != call.images.shape:
        raise AttackError(f"{name} returned shape {tuple(result.adversarials.shape)} for {tuple(images.shape)}")
    return result
