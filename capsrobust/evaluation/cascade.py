"""Cascade mode: each attack runs only on the images every earlier attack left robust, as AutoAttack does inside.

A robustness verdict is the best attack per image: an image is robust at a budget only if *no* attack broke it
there. Attacking an image that an earlier attack already broke cannot change that verdict, so a cascade skips it,
which makes a verdict at n = 1,000 affordable on a CPU: at L∞ 0.3 almost every image falls to the first attack and
the expensive ones see only the few that are left.

The chain of one model and one norm runs its cells in order of (eps, plan order): every budget from the smallest
up, and at each budget the suite's attacks in the suite's order, a 2×-steps check right after the attack it checks.
An adversarial found within a smaller ball lies inside every larger one of the same norm, so an image broken at a
smaller budget is not robust at any larger one and is not attacked there either.

What a cascaded row means (``mode = "cascade"``):

* ``robust_accuracy`` is cumulative: the images robust to this attack *and every earlier one in the chain*. The
  last cell of a budget therefore holds the exact best-attack number, and the per-example minimum over cells, which
  reports compute, equals it.
* ``n_attacked`` is how many images this attack was run on; ``n_success`` how many of those it broke, the images
  every earlier attack had missed; ``attack_success_rate`` is ``n_success / n_attacked``.
* per-attack robust accuracies are not standalone numbers: reports mark cascaded tables as such, and the
  self-checks that compare two attacks read ``n_success`` (what the later one broke that the earlier ones missed)
  instead of comparing two cumulative numbers.

Minimisation attacks (Carlini–Wagner: one unbounded run scored at several thresholds) and defense-aware attacks
(whose adversarials the detector's undetected-success table needs for every image) stay out of the chain and run on
every image as in a full sweep (``mode = "full"``).

The cells of a chain run in rounds, the k-th unfinished cell of every chain in round k, so that each cell is stored
as it finishes (a stopped cascade resumes cell by cell) and an executor can still run chains of different models
side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from capsrobust.attacks.registry import AttackKind, AttackRole, get_attack
from capsrobust.evaluation.plan import Cell

CASCADE, FULL = "cascade", "full"
EPS_TOLERANCE = 1e-9


def chain_of(cell: Cell) -> str | None:
    """The chain (model and norm) a cell belongs to in a cascade, or None for a cell that runs on every image."""
    spec = get_attack(cell.attack)
    if spec.kind is AttackKind.MINIMIZATION or spec.role is AttackRole.DEFENSE_AWARE:
        return None
    return f"{cell.model}|{spec.norm.value}"


def chains(cells: Sequence[Cell]) -> dict[str, list[Cell]]:
    """Every chain's cells in cascade order: by eps, then in plan order (which puts a check after its attack)."""
    grouped: dict[str, list[tuple[float, int, Cell]]] = {}
    for index, cell in enumerate(cells):
        key = chain_of(cell)
        if key is not None:
            grouped.setdefault(key, []).append((cell.eps, index, cell))
    return {key: [cell for _, _, cell in sorted(members, key=lambda m: (m[0], m[1]))]
            for key, members in grouped.items()}


def rounds(cells: Sequence[Cell], done: Iterable[str]) -> list[list[Cell]]:
    """The unfinished cells in rounds: round k holds the k-th unfinished cell of every chain, and round 0 also every
    cell outside the chains. Cells of one round do not depend on each other; each depends only on earlier rounds.
    """
    finished = set(done)
    waiting = [[cell for cell in chain if cell.cell_id not in finished] for chain in chains(cells).values()]
    outside = [cell for cell in cells if chain_of(cell) is None and cell.cell_id not in finished]
    depth = max((len(chain) for chain in waiting), default=0)
    ordered = [[chain[k] for chain in waiting if k < len(chain)] for k in range(depth)]
    if outside:
        ordered = [outside + (ordered[0] if ordered else []), *ordered[1:]]
    return [chosen for chosen in ordered if chosen]


def still_robust(
    cells: Sequence[Cell], round_cells: Sequence[Cell], robust: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """For each chain cell of ``round_cells``, the images every finished cell of its chain at a budget ≤ its own left
    robust (``robust`` maps finished cell ids to their per-example robust flags); a cell with no finished
    predecessor is absent: it attacks every clean-correct image.
    """
    masks: dict[str, torch.Tensor] = {}
    for chain in chains(cells).values():
        members = {cell.cell_id for cell in chain}
        for cell in round_cells:
            if cell.cell_id not in members:
                continue
            earlier = [robust[c.cell_id] for c in chain
                       if c.cell_id in robust and c.eps <= cell.eps + EPS_TOLERANCE]
            if earlier:
                masks[cell.cell_id] = torch.from_numpy(np.logical_and.reduce(earlier).astype(bool))
    return masks


def entry_key(model: str, label: str, backend: str) -> str:
    """One suite entry on one model in one library: its cells at every budget differentiate the same objective."""
    return f"{model}|{label}|{backend}"


def objectives_used(results: pd.DataFrame) -> dict[str, str]:
    """What each entry's cells that attacked something differentiated, so that a cell of the same entry left nothing
    to attack (at a budget where every image was already broken) names the same objective in the tables."""
    if results.empty:
        return {}
    ran = results[results["n_attacked"] > 0]
    return {entry_key(str(model), str(label), str(backend)): str(used)
            for model, label, backend, used in zip(ran["model"], ran["label"], ran["backend"], ran["objective_used"],
                                                   strict=True)}
