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

A chain's next cell is handed out as soon as the one before it is stored (``Schedule``), so each cell is stored as
it finishes (a stopped cascade resumes cell by cell) and chains of different models run side by side without
waiting for each other: a capsule network's APGD never keeps a worker idle at a barrier while the CNNs' chains catch
up. Free workers take the smallest budget first (``budget_ranks``), so a sweep stopped part-way has its smaller
budgets complete for every model.
"""

from __future__ import annotations

from collections import deque
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


class Schedule:
    """Which cells of a cascade may run: at the start every chain's first unfinished cell and every cell outside the
    chains; then, as each chain cell is stored, the next cell of its chain. A cell becomes ready only after every
    earlier cell of its chain, so what it starts from (``still_robust``) is complete; a chain whose cell failed
    stops there, and the resumed sweep retries the cell and goes on.
    """

    def __init__(self, cells: Sequence[Cell], done: Iterable[str]) -> None:
        finished = set(done)
        self._waiting = {key: deque(cell for cell in chain if cell.cell_id not in finished)
                         for key, chain in chains(cells).items()}
        self._outside = [cell for cell in cells if chain_of(cell) is None and cell.cell_id not in finished]

    def ready(self) -> list[Cell]:
        """The cells that may run at the start: those outside the chains, then each chain's first unfinished one."""
        return [*self._outside, *(waiting[0] for waiting in self._waiting.values() if waiting)]

    def after(self, cell: Cell) -> Cell | None:
        """The cell that may run now that ``cell`` is stored: the next of its chain (None at a chain's end or for a
        cell outside the chains)."""
        key = chain_of(cell)
        if key is None:
            return None
        waiting = self._waiting[key]
        if not waiting or waiting[0].cell_id != cell.cell_id:
            raise ValueError(f"{cell.cell_id} finished, but its chain was waiting for another cell")
        waiting.popleft()
        return waiting[0] if waiting else None


def budget_ranks(cells: Sequence[Cell]) -> dict[str, int]:
    """Each chain cell's budget as a rank among its chain's budgets (0 the smallest), the order free workers take
    cells in; L2 and L∞ budgets are not comparable, their ranks are. Cells outside the chains rank 0."""
    ranks: dict[str, int] = {}
    for chain in chains(cells).values():
        budgets = sorted({cell.eps for cell in chain})
        ranks.update({cell.cell_id: budgets.index(cell.eps) for cell in chain})
    return ranks


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
