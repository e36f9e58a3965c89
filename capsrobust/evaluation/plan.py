"""Planning a sweep: every (model, suite entry, backend, eps) cell in a fixed order, each with its own seed.

A cell's seed derives from its id alone (``derive_seed``; a transfer cell's from its source, entry and budget, so
that every target judges the same adversarials), never from the order cells run in, so a resumed, extended or
distributed sweep computes exactly what an uninterrupted one does. Attacks a model cannot take are
left out here and named in a coverage note.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.registry import (
    AttackKind,
    AttackRole,
    AttackSpec,
    Backend,
    Norm,
    ParamValue,
)
from capsrobust.attacks.suites import AttackEntry, Suite, model_group
from capsrobust.errors import CapsRobustError
from capsrobust.evaluation.checks import Check, Status
from capsrobust.models.base import Capability

BACKEND_CHOICES = ("art", "foolbox", "both")
#: More cells than this is almost always a typo in a suite (an eps list of thousands): refused unless asked for.
MAX_CELLS = 10_000


class SweepError(CapsRobustError):
    """A sweep cannot start or resume: bad arguments, an output directory holding another sweep, clashing models."""


@dataclass(frozen=True)
class Cell:
    """One (model, suite entry, backend, eps) to attack; ``role`` is ``check`` for cells the checks added."""

    cell_id: str
    model: str
    role: str
    label: str
    attack: str
    backend: Backend
    eps: float
    params: tuple[tuple[str, ParamValue], ...]
    objective: AttackObjective
    seed: int
    check_of: str = ""
    run_key: str = field(default="", compare=False)  # cells sharing a run_key share one attack run (minimisation)
    limit: int | None = None  # a cascade attacks only among the first ``limit`` images (the suite entry's n)
    source: str = ""  # a transfer cell: the model the adversarials are crafted on ("": the attacked model itself)


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def eps_text(eps: float) -> str:
    """A budget as cell ids write it: ``%g`` where that is exact (``0.1``), every digit where it is not.

    ``%g`` keeps six significant digits, so 0.1000001 would share 0.1's cell id, and a resumed sweep would pass the
    cell computed at one budget off as the other.
    """
    short = f"{eps:g}"
    return short if float(short) == eps else repr(float(eps))


def derive_seed(seed: int, key: str) -> int:
    """A per-cell seed from the sweep's seed and the cell's key; stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") % 2**31


def parse_backends(choice: str) -> tuple[Backend, ...]:
    if choice not in BACKEND_CHOICES:
        raise SweepError(f"unknown backend {choice!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
    return (Backend.ART, Backend.FOOLBOX) if choice == "both" else (Backend(choice),)


@dataclass(frozen=True)
class PlannedModel:
    """What planning needs of a model: its label, default objective, declared capabilities and training seed."""

    label: str
    objective: AttackObjective
    capabilities: frozenset[Capability] = frozenset()
    train_seed: int | None = None

    @classmethod
    def of(cls, model: PlannedModel | tuple[Any, ...]) -> PlannedModel:
        """A ``PlannedModel``, or the short form (label, objective, capsules[, decoder[, training seed]])."""
        if isinstance(model, PlannedModel):
            return model
        label, objective, capsules, *optional = model
        decoder = optional[0] if optional else capsules
        capabilities = ({Capability.CAPSULE_LENGTHS, Capability.VOTES} if capsules else set()) | \
            ({Capability.CLASS_DECODER} if decoder else set())
        return cls(label, objective, frozenset(capabilities), optional[1] if len(optional) > 1 else None)


def plan_cells(
    suite: Suite, models: Sequence[PlannedModel | tuple[Any, ...]], backends: Sequence[Backend], seed: int,
    max_cells: int = MAX_CELLS,
) -> tuple[list[Cell], list[Check]]:
    """Every cell of the sweep in a fixed order, and a coverage note per model.

    ``models`` are ``PlannedModel``s (or their short form, ``PlannedModel.of``). Attacks a model cannot
    take (the vote attack on a CNN, the reconstructive attack on a model without a decoder: what the attack
    requires and the model does not declare), that the suite limits
    to other models (``models = [...]``) or training seeds (``seeds = [...]``) or that no chosen backend
    implements are left out and named in the coverage check, never silently dropped.
    With ``suite.double_steps_check`` every PGD L∞ entry gets one more cell, at its middle non-zero eps, with
    twice the steps (role ``check``), for the double-steps check.
    """
    cells: list[Cell] = []
    notes: list[Check] = []
    everyone = [PlannedModel.of(model) for model in models]
    for planned in map(PlannedModel.of, models):
        label, objective, train_seed = planned.label, planned.objective, planned.train_seed
        missing: list[str] = []
        for entry in suite.attacks:
            spec = entry.spec
            if not entry.applies_to(label, train_seed):
                limits = ([", ".join(entry.models)] if entry.models else []) + \
                    ([f"training seeds {', '.join(map(str, entry.seeds))}"] if entry.seeds else [])
                missing.append(f"{entry.label} (the suite runs it on {' and '.join(limits)} only)")
                continue
            if spec.missing(planned.capabilities):
                missing.append(f"{entry.label} ({spec.missing(planned.capabilities)})")
                continue
            chosen = [b for b in entry.backends if b in backends]
            if not chosen:
                asked = "/".join(b.value for b in backends)
                missing.append(f"{entry.label} (not in {asked}; runs in {', '.join(b.value for b in entry.backends)})")
                continue
            if entry.transfer_from:
                cells += _transfer_cells(entry, planned, everyone, chosen, seed)
                continue
            differentiates = entry.objective or objective  # an entry's own objective overrides the sweep's
            for backend in chosen:
                for eps in entry.eps:
                    cells.append(_cell(label, "attack", entry.label, entry.attack, backend, eps, entry.params,
                                       differentiates, seed, spec.kind, limit=entry.n))
                if suite.double_steps_check and _converges_by_steps(spec):
                    budgets = sorted(e for e in entry.eps if e > 0)
                    if budgets:
                        params = tuple((k, v * 2 if k == "steps" else v) for k, v in entry.params)
                        cells.append(_cell(label, "check", f"{entry.label}-2x-steps", entry.attack, backend,
                                           budgets[(len(budgets) - 1) // 2], params, differentiates, seed, spec.kind,
                                           check_of=entry.label, limit=entry.n))
        if missing:
            notes.append(Check("coverage", label, Status.SKIP, "not run: " + "; ".join(missing)))
        else:
            notes.append(Check("coverage", label, Status.PASS, f"all {len(suite.attacks)} suite entries ran"))
    if len(cells) > max_cells:
        raise SweepError(f"the suite expands to {len(cells):,} cells for {len(models)} model(s), more than the limit "
                         f"of {max_cells:,}; check its eps lists, or raise the limit (--max-cells) if you mean it")
    ids = [cell.cell_id for cell in cells]
    if len(set(ids)) != len(ids):
        raise SweepError("two cells share an id; give suite entries distinct labels and models distinct names")
    return cells, notes


def _transfer_cells(
    entry: AttackEntry, target: PlannedModel, everyone: Sequence[PlannedModel], backends: Sequence[Backend], seed: int,
) -> list[Cell]:
    """One cell per source model of a transfer entry (every other model of the sweep it names): the attack runs on
    the source, with the source's objective, and its adversarials are judged on ``target``. The seed leaves the
    target out, so that every target is judged on the same adversarials, crafted once (``evaluation.transfer``)."""
    cells = []
    for source in everyone:
        named = source.label in entry.transfer_from or \
            model_group(source.label, source.train_seed) in entry.transfer_from
        if not named or source.label == target.label or entry.spec.missing(source.capabilities):
            continue
        for backend in backends:
            for eps in entry.eps:
                cell = _cell(target.label, "attack", f"{entry.label}-from-{slug(source.label)}", entry.attack,
                             backend, eps, entry.params, entry.objective or source.objective, seed,
                             entry.spec.kind, limit=entry.n)
                crafting = f"{slug(source.label)}__{slug(cell.label)}__{backend.value}__{cell.objective.value}__" \
                    f"eps{eps_text(eps)}"
                cells.append(replace(cell, source=source.label, seed=derive_seed(seed, crafting)))
    return cells


def _converges_by_steps(spec: AttackSpec) -> bool:
    """The attacks the double-steps check doubles: PGD L∞ on the model (its role, norm and surface, not its name)."""
    return spec.role is AttackRole.ITERATIVE and spec.norm is Norm.LINF and spec.surface == "model"


def _cell(
    model: str, role: str, label: str, attack: str, backend: Backend, eps: float,
    params: tuple[tuple[str, ParamValue], ...], objective: AttackObjective, seed: int, kind: AttackKind,
    check_of: str = "", limit: int | None = None,
) -> Cell:
    run_key = f"{slug(model)}__{slug(label)}__{backend.value}__{objective.value}"
    cell_id = f"{run_key}__eps{eps_text(eps)}"
    # A minimisation attack runs once for all its thresholds, so its seed must not depend on eps.
    key = run_key if kind is AttackKind.MINIMIZATION else cell_id
    return Cell(cell_id=cell_id, model=model, role=role, label=label, attack=attack, backend=backend, eps=eps,
                params=params, objective=objective, seed=derive_seed(seed, key), check_of=check_of,
                run_key=run_key if kind is AttackKind.MINIMIZATION else cell_id, limit=limit)
