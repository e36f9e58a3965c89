"""Sweeps: every (model, attack, backend, eps) cell of a suite, persisted cell by cell, resumable, tidy.

``run_sweep`` attacks the first ``n`` test images of a data set (the same images for every model) with every
attack of a suite, in ART, Foolbox or both, and returns one tidy row per cell with every setting that produced
it. It also writes per-example outcomes, so that reports can take the per-example worst case over attacks and
compare models pairwise, and a checks table (``capsrobust.evaluation.checks``) with the self-checks of Carlini et al.
(2019), *On Evaluating Adversarial Robustness*.

Definitions used in every row:

* robust accuracy — the fraction of the n images that the model classifies correctly *and* the attack did not
  break. An image the model already gets wrong counts as not robust.
* attack success rate — among the clean-correct images, the fraction the attack broke.
* a *bounded* attack (FGSM, PGD, AutoAttack, Square, vote) breaks an image when the model misclassifies the
  adversarial the library returned. Adversarials are recorded exactly as returned, never clipped into the eps
  ball or into [0, 1]; the ``in-ball`` and ``in-bounds`` checks count violations instead of hiding them.
* a *minimisation* attack (Carlini–Wagner L2) runs once per model and backend, unbounded; at each eps of the
  suite (an L2 threshold) it breaks an image only if the adversarial is misclassified and its L2 norm ≤ eps.
* perturbation norms (``l2_*``, ``linf_*``) are the median and mean over the *successful* adversarials only
  (empty when there are none).
* capabilities — what the model declared it offers (``capsrobust.models.base.Capability``), sorted and
  comma-joined, empty for none; reports read "capsule model" from it rather than from the architecture name.

An output directory holds::

    sweep.json                     what was asked: suite, models, data, n, backend, seed, objective, versions
    cells/CELL.examples.csv        per-example outcomes of one cell, written first
    cells/CELL.json                the cell's row, written last: its presence means the cell is complete
    adversarials/CELL.npz          with save_adversarials: adversarial images, indices, labels, predictions
    transfer/KEY.safetensors       a transfer entry's adversarials, crafted once per source and budget for every
                                   target (``capsrobust.evaluation.transfer``)
    results.csv, results.json      every finished cell, in plan order (rewritten after every cell)
    examples.csv                   every finished cell's per-example outcomes, in plan order (written when the
                                   sweep ends, or is stopped with Ctrl-C)
    checks.csv, checks.json        the self-checks, flags first

Every file is written atomically and the tables are rebuilt from the cell files, so a sweep killed at any moment
and resumed with ``resume=True`` skips the finished cells and ends with the same tables (only the wall-clock
``seconds`` and the ``command`` of recomputed cells can differ). Planning lives in ``evaluation.plan``, the
directory and its tables in ``evaluation.store``; this module resolves the arguments and attacks the cells.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from capsrobust.attacks.objectives import AttackObjective, attack_target, resolve_objective
from capsrobust.attacks.registry import (
    AttackKind,
    AttackResult,
    Backend,
    Norm,
    get_attack,
    run_attack,
)
from capsrobust.attacks.suites import Suite, load_suite
from capsrobust.data import Dataset, load_dataset
from capsrobust.evaluation import cascade
from capsrobust.evaluation.checks import Check, Status, check_model, check_results, checks_frame
from capsrobust.evaluation.integrity import unchanged_model
from capsrobust.evaluation.plan import (
    MAX_CELLS,
    Cell,
    PlannedModel,
    SweepError,
    parse_backends,
    plan_cells,
    slug,
)
from capsrobust.evaluation.store import (
    EXAMPLE_COLUMNS,
    TRANSFER_DIR,
    CellStore,
    discarded_unless_started,
    prepare_dir,
    write_checks,
    write_plan,
    writer_lock,
)
from capsrobust.evaluation.transfer import TransferCache, TransferKey
from capsrobust.execution import Executor, Failure, Job, LocalExecutor, Shared
from capsrobust.models.base import capabilities_of, capabilities_text, refuse_other_data
from capsrobust.models.checkpoints import LoadedCheckpoint, checkpoint_stem, load_checkpoint
from capsrobust.models.foreign import ForeignModel, in_memory_checkpoint
from capsrobust.models.inference import NO_PREDICTION, predict, require_answers
from capsrobust.models.recipes import Recipe
from capsrobust.precision import Precision, precision_scope, resolve_precision
from capsrobust.runtime import command_line, resolve_device, versions

log = logging.getLogger(__name__)


TOLERANCE = 1e-6
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 100, 1000


@dataclass
class _Model:
    label: str
    loaded: LoadedCheckpoint
    objective: AttackObjective

    @property
    def train_seed(self) -> int | None:
        """The seed the checkpoint was trained with (its metadata), or None for a checkpoint that does not say."""
        seed = self.loaded.metadata.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    @property
    def train_precision(self) -> str:
        """The precision the checkpoint was trained in (fp32, tf32, bf16), or "" where its metadata does not say."""
        precision = self.loaded.metadata.get("precision")
        return precision if isinstance(precision, str) else ""


def default_batch_size(device: torch.device) -> int:
    """Images per attack batch: 1,000 on a GPU (one batch holds the whole standard n), 100 on a CPU."""
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def model_label(path: str | Path) -> str:
    """A run directory's name, or ``RUN-STEM`` for a checkpoint file other than the run's best."""
    stem = checkpoint_stem(path)
    return stem.parent.name if stem.name == "best" and stem.parent.name else f"{stem.parent.name}-{stem.name}"


def run_sweep(
    runs: Sequence[str | Path | ForeignModel],
    suite: Suite | str | Path,
    data: str | Dataset = "mnist-5k",
    *,
    out_dir: str | Path,
    n: int | None = None,
    backend: str = "art",
    resume: bool = False,
    save_adversarials: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    objective: str | AttackObjective | None = None,
    batch_size: int | None = None,
    data_dir: str | Path | None = None,
    precision: str | Precision = Precision.FP32,
    progress: bool = True,
    executor: Executor | None = None,
    cascade: bool | None = None,
    max_cells: int = MAX_CELLS,
) -> pd.DataFrame:
    """Attack every model in ``runs`` with ``suite``; returns the results table.

    ``runs`` are run directories or checkpoints, or trained modules capsrobust did not build, wrapped with
    ``capsrobust.models.wrap_module`` (the sweep records their weights' digest; resuming needs the same weights).

    ``n`` test images (default: the suite's ``n``; the first ones of the split, the same for every model);
    ``batch_size`` images per attack batch (default: ``default_batch_size(device)``, 1,000 on a GPU);
    ``precision`` is what the attacks compute their gradients in (fp32 unless asked; ``capsrobust.precision``):
    whatever it is, every prediction that decides robustness (clean and adversarial) is made in fp32;
    ``backend`` is ``art``, ``foolbox`` or ``both``; ``objective`` (default: each model's, see
    ``capsrobust.attacks.objectives``) is what gradient attacks differentiate. The per-example outcomes and the checks
    table are in ``out_dir`` (``load_sweep``). Raises ``SweepError`` when ``out_dir`` holds another sweep, or
    holds one and ``resume`` is false. Resuming with a suite that only adds attacks or budgets extends the sweep.
    ``executor`` runs the cells (default: ``LocalExecutor()``, here, in plan order; ``capsrobust.execution``): every
    executor gives the same tables, and a sweep started under one resumes under another. A cell that fails on every
    try is a ``failed`` row of the checks table and the sweep goes on; resuming retries it.
    ``cascade`` (default: the suite's ``cascade``) attacks at each budget only the images every earlier attack left
    robust, which keeps the best-attack numbers exact and makes the per-attack ones cumulative
    (``capsrobust.evaluation.cascade``); a sweep resumes only in the mode it started in. A suite expanding to more
    than ``max_cells`` cells is refused before anything is written (``plan.MAX_CELLS``, 10,000).
    """
    out = Path(out_dir)
    setup = _Setup.of(runs, suite, data, n=n, backend=backend, device=device, objective=objective,
                      batch_size=batch_size, data_dir=data_dir, precision=precision)
    cascaded = setup.suite.cascade if cascade is None else cascade
    cells, notes = plan_cells(setup.suite, setup.planned_models(), setup.backends, seed, max_cells)
    limited = sorted({cell.label for cell in cells if cell.limit is not None})
    if limited and not cascaded:
        raise SweepError(f"the suite limits {', '.join(limited)} to its first n images, which needs the cascade; "
                         f"run the suite in cascade mode (drop --no-cascade)")
    request = {**setup.request(backend, seed, objective, save_adversarials), "cascade": cascaded}
    runner = executor if executor is not None else LocalExecutor()
    runner.start()  # a cluster that is not there fails here, before anything is written
    with writer_lock(out), discarded_unless_started(out):
        prepare_dir(out, request, resume, cells, _library_versions(), setup.dataset.source)
        write_plan(out, cells)
        store = CellStore(out, cells)
        model_checks, failures = _attack_cells(setup, cells, store, runner, save_adversarials, progress, cascaded)
        checks = checks_frame([*notes, *model_checks, *(_failed(failure) for failure in failures),
                               *check_results(store.results())])
        write_checks(out, checks)
        return store.results()


@dataclass(frozen=True)
class _Setup:
    """What a sweep's arguments resolve to, checked before anything is written: suite, device, data, models."""

    suite: Suite
    backends: tuple[Backend, ...]
    device: torch.device
    batch_size: int
    precision: Precision
    dataset: Dataset
    images: torch.Tensor  # (n, C, H, W): the first n test images, the same for every model
    labels: torch.Tensor  # (n,)
    models: list[_Model]

    @classmethod
    def of(
        cls, runs: Sequence[str | Path | ForeignModel], suite: Suite | str | Path, data: str | Dataset, *,
        n: int | None, backend: str, device: str | torch.device, objective: str | AttackObjective | None,
        batch_size: int | None, data_dir: str | Path | None, precision: str | Precision,
    ) -> _Setup:
        chosen_suite = suite if isinstance(suite, Suite) else load_suite(suite)
        backends = parse_backends(backend)
        if not runs:
            raise SweepError("no models to attack; pass one or more run directories or checkpoints")
        torch_device = resolve_device(device) if isinstance(device, str) else device
        batch_size = default_batch_size(torch_device) if batch_size is None else batch_size
        if batch_size < 1:
            raise SweepError(f"batch size must be ≥ 1, got {batch_size}")
        attack_precision = resolve_precision(precision, torch_device, training=False)
        dataset = data if isinstance(data, Dataset) else load_dataset(data, data_dir)
        count = chosen_suite.n if n is None else n
        if count < 1:
            raise SweepError(f"n must be ≥ 1, got {count}")
        split = dataset.test.head(count)
        models = _load_models(runs, torch_device, objective)
        for model in models:
            refuse_other_data(model.loaded.model, tuple(split.images.shape[1:]), len(dataset.classes), model.label)
        for model in models:  # allowed (transfer between data sets is a question too), but never silently
            trained_on = model.loaded.metadata.get("dataset")
            if trained_on is not None and trained_on != dataset.name:
                log.warning("%s was trained on %s and is attacked on %s", model.label, trained_on, dataset.name)
        return cls(chosen_suite, backends, torch_device, batch_size, attack_precision, dataset, split.images,
                   split.labels, models)

    def planned_models(self) -> list[PlannedModel]:
        return [PlannedModel(m.label, m.objective, capabilities_of(m.loaded.model), m.train_seed)
                for m in self.models]

    def request(
        self, backend: str, seed: int, objective: str | AttackObjective | None, save_adversarials: bool
    ) -> dict[str, Any]:
        """What sweep.json records as asked for; a resumed sweep must ask for the same."""
        return {
            "suite": self.suite.to_dict(), "suite_source": self.suite.source, "suite_sha256": self.suite.digest(),
            "models": [{"model": m.label, "checkpoint": str(m.loaded.path),
                        "sha256": m.loaded.metadata.get("weights_sha256"), "objective": m.objective.value}
                       for m in self.models],
            "dataset": self.dataset.name, "split": "test", "n": len(self.labels), "backend": backend,
            "seed": seed, "objective": None if objective is None else AttackObjective.parse(objective).value,
            "batch_size": self.batch_size, "save_adversarials": save_adversarials, "precision": self.precision.value,
        }

    def context(self) -> dict[str, Any]:
        """What every row records beside its own numbers."""
        return {
            "dataset": self.dataset.name, "n": len(self.labels), "batch_size": self.batch_size,
            "device": str(self.device), "precision": self.precision,
            "versions": json.dumps(_library_versions(), sort_keys=True), "command": command_line(),
        }


def _attack_cells(
    setup: _Setup, cells: list[Cell], store: CellStore, runner: Executor, save_adversarials: bool, progress: bool,
    cascaded: bool,
) -> tuple[list[Check], list[Failure]]:
    """Run the model self-checks, then every unfinished cell through ``runner``, storing each as it finishes.

    A cascade hands out a chain's next cell as soon as the one before it is stored (``cascade.Schedule``), with
    the images still robust in its chain read back from the stored cells, so a resumed cascade continues from
    exactly what its files say; smaller budgets go first (``Job.priority``).
    """
    bar = tqdm(total=len(cells), initial=len(store.done), desc="sweep", unit="cell", disable=not progress)
    priorities = cascade.budget_ranks(cells)
    work = _CellWork({m.label: runner.share(m) for m in setup.models}, runner.share(setup.images),
                     runner.share(setup.labels), setup.device, setup.batch_size, setup.context(), save_adversarials,
                     cascaded, transfers=TransferCache(store.out / TRANSFER_DIR))

    schedule = cascade.Schedule(cells, store.done) if cascaded else None
    chain_of = {cell.cell_id: [c.cell_id for c in chain] for chain in cascade.chains(cells).values() for cell in chain}
    of_model: dict[str, list[str]] = {}
    for cell in cells:
        of_model.setdefault(cell.model, []).append(cell.cell_id)

    def chained(chosen: Sequence[Cell]) -> list[Job]:
        """Jobs for cascade cells whose chains are ready: what each starts from is read from the stored cells of its
        chain (robust flags) and model (objectives used), not the whole sweep's."""
        return _jobs(chosen, store.done, lambda cell: _Task(
            (cell,), cascade.still_robust(cells, [cell], store.robust_flags(chain_of.get(cell.cell_id, []))),
            cascade.objectives_used(store.results(of_model[cell.model]))), priorities)

    def finished(job: Job, outcomes: list[tuple[dict[str, Any], pd.DataFrame, torch.Tensor | None]]) -> list[Job]:
        for cell, (row, examples, adversarials) in zip(job.payload.cells, outcomes, strict=True):
            store.save(cell, row, examples, adversarials)
            bar.update(1)
            if not progress:  # a background run's log: what each cell did and what it cost
                log.info("%d of %d cells: %s, %d attacked, %d broken, robust %.1f%%, %.0f s", len(store.done),
                         len(cells), cell.cell_id, row["n_attacked"], row["n_success"],
                         100 * row["robust_accuracy"], row["seconds"])
        bar.set_postfix_str(f"{job.group} {job.payload.cells[-1].label}")
        if schedule is None:
            return []
        return chained([following for cell in job.payload.cells if (following := schedule.after(cell))])

    try:
        model_checks = [check for entry in setup.models for check in
                        check_model(entry.label, attack_target(entry.loaded.model, entry.objective), setup.images,
                                    setup.labels, setup.device)]
        first = _jobs(cells, store.done) if schedule is None else chained(schedule.ready())
        failures = runner.run(work, first, finished)
    finally:
        bar.close()
        store.write_examples()  # also when stopped: the per-example table of every finished cell
    return model_checks, failures


def _load_models(
    runs: Sequence[str | Path | ForeignModel], device: torch.device, objective: str | AttackObjective | None
) -> list[_Model]:
    models = []
    for run in runs:
        if isinstance(run, ForeignModel):
            label, loaded = run.name, in_memory_checkpoint(run, device)
        else:
            label, loaded = model_label(run), load_checkpoint(run, device)
        models.append(_Model(label, loaded, resolve_objective(loaded.model, objective)))
    labels = [slug(m.label) for m in models]
    clashes = sorted({label for label in labels if labels.count(label) > 1})
    if clashes:
        raise SweepError(f"two models are both named {clashes[0]!r}; put their runs in directories with distinct names")
    return models


def _library_versions() -> dict[str, str]:
    """``versions()`` with both attack libraries imported first, so that every row names them."""
    import art  # noqa: F401
    import foolbox  # noqa: F401

    return versions()


@dataclass(frozen=True)
class _Task:
    """A job's cells and, in a cascade, what they start from: per cell the images its chain left robust
    (``cascade.still_robust``; a cell absent attacks every clean-correct image) and what each entry's earlier cells
    differentiated (``cascade.objectives_used``)."""

    cells: tuple[Cell, ...]
    still_robust: Mapping[str, torch.Tensor] = field(default_factory=dict)
    objectives: Mapping[str, str] = field(default_factory=dict)


def _jobs(
    cells: Sequence[Cell], done: set[str], task: Callable[[Cell], _Task] | None = None,
    priorities: Mapping[str, int] | None = None,
) -> list[Job]:
    """The unfinished cells as jobs in plan order: cells sharing a run (a minimisation attack's thresholds) are one.
    ``task`` builds a cascade cell's task, ``priorities`` (cell id to priority) orders the jobs for the executor."""
    runs: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.cell_id not in done:
            runs.setdefault(cell.run_key, []).append(cell)
    jobs = []
    for run_key, chosen in runs.items():
        payload = task(chosen[0]) if task is not None and len(chosen) == 1 else _Task(tuple(chosen))
        jobs.append(Job(run_key, chosen[0].model, payload, (priorities or {}).get(chosen[0].cell_id, 0)))
    return jobs


def _failed(failure: Failure) -> Check:
    cells = ", ".join(cell.cell_id for cell in failure.job.payload.cells)
    return Check("cell", failure.job.group, Status.FAILED,
                 f"{cells} failed {failure.attempts} time(s), last with {failure.error}; resume the sweep to retry")


@dataclass(frozen=True)
class _CellWork:
    """What a worker needs to attack cells (``capsrobust.execution.Workload``): shared models and images.

    ``setup`` fetches a model and its clean predictions once per worker; ``run`` attacks one job's cells and
    returns their rows, per-example outcomes and (when kept) adversarials, which the driver stores.
    """

    models: dict[str, Shared[_Model]]
    images: Shared[torch.Tensor]
    labels: Shared[torch.Tensor]
    device: torch.device
    batch_size: int
    context: dict[str, Any]
    keep_adversarials: bool
    cascaded: bool = False
    transfers: TransferCache | None = None  # transfer adversarials, crafted once per source and budget

    @property
    def uses_gpu(self) -> bool:
        return self.device.type == "cuda"

    def setup(self, group: str) -> tuple[_Model, torch.Tensor, torch.Tensor, torch.Tensor]:
        entry, images, labels = self.models[group].get(), self.images.get(), self.labels.get()
        clean = predict(entry.loaded.model, images, self.device, self.batch_size)  # (n,)
        return entry, images, labels, require_answers(clean, group, "clean test images")

    def run(
        self, state: tuple[_Model, torch.Tensor, torch.Tensor, torch.Tensor], task: _Task
    ) -> list[tuple[dict[str, Any], pd.DataFrame, torch.Tensor | None]]:
        entry, images, labels, clean = state
        shared: dict[str, tuple[AttackResult, float]] = {}
        outcomes = []
        for cell in task.cells:
            alive = self._still_robust(cell, clean == labels, task)
            # a 2×-steps check differentiates what the PGD it checks does
            used = task.objectives.get(cascade.entry_key(cell.model, cell.check_of or cell.label, cell.backend.value))
            crafted_on = self.models[cell.source].get() if cell.source else None  # a transfer cell's source
            row, examples, adversarials = _attack_cell(cell, entry, images, labels, clean, self.device,
                                                       self.batch_size, shared, self.context, alive, used, crafted_on,
                                                       self.transfers)
            outcomes.append((row, examples, adversarials if self.keep_adversarials else None))
        return outcomes

    def _still_robust(self, cell: Cell, correct: torch.Tensor, task: _Task) -> torch.Tensor | None:
        """The images a cascaded cell finds robust (clean-correct, no earlier attack broke them), or None: a full
        sweep's cell, which attacks every image."""
        if not self.cascaded or cascade.chain_of(cell) is None:
            return None
        left = task.still_robust.get(cell.cell_id)
        return correct if left is None else correct & left


def _nominal_budget(cell: Cell) -> int:
    """The steps or queries a cell would have spent per image, for a cascaded cell left nothing to attack."""
    params = dict(cell.params)
    for key in ("steps", "queries", "apgd_steps", "max_iter"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 1


def _train_linf_eps(recipe: Recipe) -> float | None:
    """The L∞ budget the model was adversarially trained at (None: naturally trained, or trained in L2)."""
    adversarial = recipe.adversarial
    return adversarial.eps if adversarial is not None and adversarial.norm == "linf" else None


def _run_attack_on(
    attacker: _Model, cell: Cell, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int,
    context: dict[str, Any],
) -> AttackResult:
    """Run the attack of ``cell`` on ``attacker`` (the attacked model, or a transfer cell's source), refusing any
    change it makes to the model's weights or mode."""
    with (precision_scope(context["precision"], device, autotune=False),  # attacks shrink their batches
          unchanged_model(attacker.loaded.model, f"{cell.label} at eps {cell.eps:g} on {attacker.label}")):
        return run_attack(cell.attack, attacker.loaded.model, images, labels, eps=cell.eps, params=dict(cell.params),
                          objective=cell.objective, backend=cell.backend, device=device, seed=cell.seed,
                          batch_size=batch_size)


def _attack_cell(
    cell: Cell, entry: _Model, images: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor,
    device: torch.device, batch_size: int, shared: dict[str, tuple[AttackResult, float]], context: dict[str, Any],
    alive: torch.Tensor | None = None, objective_used: str | None = None, crafted_on: _Model | None = None,
    transfers: TransferCache | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, torch.Tensor]:
    """Run (or, for a minimisation attack, reuse) the attack of ``cell`` and score it.

    ``alive`` (a cascade, ``capsrobust.evaluation.cascade``) are the images still robust; the cell attacks those of
    them among its first ``cell.limit``, and the others keep their clean image: not robust when an earlier attack
    broke them (or the model never got them right), still robust when only the limit kept them from this attack.
    ``objective_used`` names what the entry differentiated at its other budgets, for a cell left nothing to attack.
    ``crafted_on`` (a transfer cell) is the model the attack runs on; its adversarials are judged on ``entry``.
    ``transfers`` keeps them, crafted once for every target (``capsrobust.evaluation.transfer``); a cell that reads
    adversarials another cell crafted records 0 seconds of attack time.
    """
    spec = get_attack(cell.attack)
    correct = clean == labels  # (n,)
    if alive is None:
        attacked = torch.ones_like(correct)
    else:
        attacked = alive & (torch.arange(len(labels)) < (cell.limit or len(labels)))
    chosen = attacked.nonzero().flatten()
    if cell.run_key in shared:
        result, seconds = shared[cell.run_key]
    elif len(chosen) == 0:  # a cascade with nothing left to attack at this budget
        used = objective_used or "none (nothing left to attack)"
        result, seconds = AttackResult(images[:0].clone(), _nominal_budget(cell), used), 0.0
    elif crafted_on is not None and transfers is not None:  # crafted once per source and budget, for every target
        covered = cell.limit or len(labels)  # a cascade attacks a subset of these; a full sweep all of them
        key = TransferKey.of(cell, crafted_on.loaded.metadata.get("weights_sha256", ""), context["precision"].value,
                             images[:covered])
        crafted, seconds = transfers.adversarials(key, lambda: _run_attack_on(
            crafted_on, cell, images[:covered], labels[:covered], device, batch_size, context))
        result = AttackResult(crafted.adversarials[chosen], crafted.steps_or_queries, crafted.objective_used)
    else:
        started = time.perf_counter()
        result = _run_attack_on(crafted_on or entry, cell, images[chosen], labels[chosen], device, batch_size,
                                context)
        seconds = time.perf_counter() - started
        if spec.kind is AttackKind.MINIMIZATION:
            shared[cell.run_key] = (result, seconds)
    adversarials = images.clone()  # (n, C, H, W)
    adversarials[chosen] = result.adversarials  # exactly as the library returned them
    adv_pred = clean.clone()
    if len(chosen):
        adv_pred[chosen] = predict(entry.loaded.model, adversarials[chosen], device, batch_size)
    delta = (adversarials.double() - images.double()).flatten(1)  # (n, C·H·W)
    l2, linf = delta.norm(dim=1), delta.abs().amax(dim=1)
    flat = adversarials.flatten(1)
    in_bounds = (flat.amin(dim=1) >= -TOLERANCE) & (flat.amax(dim=1) <= 1 + TOLERANCE)
    in_ball = (linf if spec.norm is Norm.LINF else l2) <= cell.eps + TOLERANCE
    broken = correct & attacked & (adv_pred != labels)
    if spec.kind is AttackKind.MINIMIZATION:
        broken &= in_ball
    robust = (correct if alive is None else alive) & ~broken  # a cascade's: robust to this and every earlier attack
    n_correct, n_broken = int(correct.sum()), int(broken.sum())
    # Among the images attacked: all clean-correct ones in a full sweep, what was left in a cascade.
    n_attackable = int((correct & attacked).sum())

    def stat(values: torch.Tensor, how: str) -> float | None:
        chosen = values[broken]
        if chosen.numel() == 0:
            return None
        return float(chosen.median() if how == "median" else chosen.mean())

    recipe = entry.loaded.recipe
    row = {
        "cell_id": cell.cell_id, "role": cell.role, "check_of": cell.check_of, "model": cell.model,
        "checkpoint": str(entry.loaded.path), "checkpoint_sha256": entry.loaded.metadata.get("weights_sha256", ""),
        "recipe": recipe.name, "architecture": recipe.architecture, "dataset": context["dataset"], "split": "test",
        "attack": cell.attack, "label": cell.label, "backend": cell.backend.value, "norm": spec.norm.value,
        "kind": spec.kind.value, "gradient_free": spec.gradient_free, "eps": cell.eps,
        "objective": cell.objective.value, "objective_used": result.objective_used,
        "params": json.dumps(dict(cell.params), sort_keys=True), "n": context["n"],
        "clean_accuracy": n_correct / context["n"], "robust_accuracy": int(robust.sum()) / context["n"],
        "attack_success_rate": n_broken / n_attackable if n_attackable else None,
        "n_clean_correct": n_correct, "n_success": n_broken,
        "l2_median": stat(l2, "median"), "l2_mean": stat(l2, "mean"),
        "linf_median": stat(linf, "median"), "linf_mean": stat(linf, "mean"),
        "n_out_of_bounds": int((~in_bounds).sum()), "n_out_of_ball": int((~in_ball).sum()),
        "steps_or_queries": result.steps_or_queries, "seconds": round(seconds, 3), "seed": cell.seed,
        "batch_size": context["batch_size"], "device": context["device"], "versions": context["versions"],
        "command": context["command"], "train_seed": entry.train_seed, "precision": context["precision"].value,
        "capabilities": capabilities_text(capabilities_of(entry.loaded.model)),
        "train_linf_eps": _train_linf_eps(recipe),
        "mode": cascade.FULL if alive is None else cascade.CASCADE, "n_attacked": len(chosen),
        "n_no_answer": int((adv_pred[chosen] == NO_PREDICTION).sum()),
        "transfer_from": cell.source,
        "train_precision": entry.train_precision,
    }
    examples = pd.DataFrame({
        "cell_id": cell.cell_id, "model": cell.model, "index": np.arange(len(labels)),
        "label": labels.numpy(), "clean_pred": clean.numpy(), "adv_pred": adv_pred.numpy(),
        "l2": l2.numpy(), "linf": linf.numpy(), "in_bounds": in_bounds.numpy(), "in_ball": in_ball.numpy(),
        "success": broken.numpy(), "robust": robust.numpy(), "attacked": attacked.numpy(),
    }, columns=EXAMPLE_COLUMNS)
    return row, examples, adversarials


