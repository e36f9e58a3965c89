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
    results.csv, results.json      every finished cell, in plan order (rewritten after every cell)
    examples.csv                   every finished cell's per-example outcomes, in plan order (written when the
                                   sweep ends, or is stopped with Ctrl-C)
    checks.csv, checks.json        the self-checks, flags first

Every file is written atomically and the tables are rebuilt from the cell files, so a sweep killed at any moment
and resumed with ``resume=True`` skips the finished cells and ends with the same tables (only the wall-clock
``seconds`` and the ``command`` of recomputed cells can differ).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
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
    AttackRole,
    AttackSpec,
    Backend,
    Norm,
    ParamValue,
    get_attack,
    run_attack,
)
from capsrobust.attacks.suites import Suite, load_suite
from capsrobust.data import Dataset, load_dataset
from capsrobust.errors import CapsRobustError
from capsrobust.evaluation.checks import Check, Status, check_model, check_results, checks_frame
from capsrobust.execution import Executor, Failure, Job, LocalExecutor, Shared
from capsrobust.models.base import Capability, capabilities_of, capabilities_text
from capsrobust.models.checkpoints import LoadedCheckpoint, checkpoint_stem, load_checkpoint
from capsrobust.models.foreign import ForeignModel, in_memory_checkpoint
from capsrobust.models.inference import predict
from capsrobust.precision import Precision, precision_scope, resolve_precision
from capsrobust.runtime import atomic_write, atomic_write_text, command_line, read_table, resolve_device, versions

log = logging.getLogger(__name__)

TOLERANCE = 1e-6
BACKEND_CHOICES = ("art", "foolbox", "both")
SWEEP_FILE = "sweep.json"
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 100, 1000
DEFAULTS = {"precision": Precision.FP32.value}  # what a sweep started before a setting existed ran with
CELLS_DIR = "cells"
ADVERSARIALS_DIR = "adversarials"
RESULT_COLUMNS = [
    "cell_id", "role", "check_of", "model", "checkpoint", "checkpoint_sha256", "recipe", "architecture",
    "dataset", "split", "attack", "label", "backend", "norm", "kind", "gradient_free", "eps", "objective",
    "objective_used", "params", "n", "clean_accuracy", "robust_accuracy", "attack_success_rate",
    "n_clean_correct", "n_success", "l2_median", "l2_mean", "linf_median", "linf_mean", "n_out_of_bounds",
    "n_out_of_ball", "steps_or_queries", "seconds", "seed", "batch_size", "device", "versions", "command",
    "train_seed", "precision", "capabilities",
]
EXAMPLE_COLUMNS = [
    "cell_id", "model", "index", "label", "clean_pred", "adv_pred", "l2", "linf", "in_bounds", "in_ball",
    "success", "robust",
]


class SweepError(CapsRobustError):
    """A sweep cannot start or resume: bad arguments, an output directory holding another sweep, clashing models."""


@dataclass(frozen=True)
class SweepTables:
    """What a sweep directory holds, read back from its files (reports are built from these, never from memory)."""

    results: pd.DataFrame
    examples: pd.DataFrame
    checks: pd.DataFrame


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


def default_batch_size(device: torch.device) -> int:
    """Images per attack batch: 1,000 on a GPU (one batch holds the whole standard n), 100 on a CPU."""
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def slug(text: str) -> str:
    """A file-name-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def derive_seed(seed: int, key: str) -> int:
    """A per-cell seed from the sweep's seed and the cell's key; stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") % 2**31


def parse_backends(choice: str) -> tuple[Backend, ...]:
    if choice not in BACKEND_CHOICES:
        raise SweepError(f"unknown backend {choice!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
    return (Backend.ART, Backend.FOOLBOX) if choice == "both" else (Backend(choice),)


def model_label(path: str | Path) -> str:
    """A run directory's name, or ``RUN-STEM`` for a checkpoint file other than the run's best."""
    stem = checkpoint_stem(path)
    return stem.parent.name if stem.name == "best" and stem.parent.name else f"{stem.parent.name}-{stem.name}"


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
            differentiates = entry.objective or objective  # an entry's own objective overrides the sweep's
            for backend in chosen:
                for eps in entry.eps:
                    cells.append(_cell(label, "attack", entry.label, entry.attack, backend, eps, entry.params,
                                       differentiates, seed, spec.kind))
                if suite.double_steps_check and _converges_by_steps(spec):
                    budgets = sorted(e for e in entry.eps if e > 0)
                    if budgets:
                        params = tuple((k, v * 2 if k == "steps" else v) for k, v in entry.params)
                        cells.append(_cell(label, "check", f"{entry.label}-2x-steps", entry.attack, backend,
                                           budgets[(len(budgets) - 1) // 2], params, differentiates, seed, spec.kind,
                                           check_of=entry.label))
        if missing:
            notes.append(Check("coverage", label, Status.SKIP, "not run: " + "; ".join(missing)))
        else:
            notes.append(Check("coverage", label, Status.PASS, f"all {len(suite.attacks)} suite entries ran"))
    ids = [cell.cell_id for cell in cells]
    if len(set(ids)) != len(ids):
        raise SweepError("two cells share an id; give suite entries distinct labels and models distinct names")
    return cells, notes


def _converges_by_steps(spec: AttackSpec) -> bool:
    """The attacks the double-steps check doubles: PGD L∞ on the model (its role, norm and surface, not its name)."""
    return spec.role is AttackRole.ITERATIVE and spec.norm is Norm.LINF and spec.surface == "model"


def _cell(
    model: str, role: str, label: str, attack: str, backend: Backend, eps: float,
    params: tuple[tuple[str, ParamValue], ...], objective: AttackObjective, seed: int, kind: AttackKind,
    check_of: str = "",
) -> Cell:
    run_key = f"{slug(model)}__{slug(label)}__{backend.value}__{objective.value}"
    cell_id = f"{run_key}__eps{eps:g}"
    # A minimisation attack runs once for all its thresholds, so its seed must not depend on eps.
    key = run_key if kind is AttackKind.MINIMIZATION else cell_id
    return Cell(cell_id=cell_id, model=model, role=role, label=label, attack=attack, backend=backend, eps=eps,
                params=params, objective=objective, seed=derive_seed(seed, key), check_of=check_of,
                run_key=run_key if kind is AttackKind.MINIMIZATION else cell_id)


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
    """
    out = Path(out_dir)
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
    images, labels = split.images, split.labels

    models = _load_models(runs, torch_device, objective)
    cells, notes = plan_cells(
        chosen_suite,
        [PlannedModel(m.label, m.objective, capabilities_of(m.loaded.model), m.train_seed) for m in models],
        backends, seed,
    )
    request = {
        "suite": chosen_suite.to_dict(), "suite_source": chosen_suite.source, "suite_sha256": chosen_suite.digest(),
        "models": [{"model": m.label, "checkpoint": str(m.loaded.path),
                    "sha256": m.loaded.metadata.get("weights_sha256"), "objective": m.objective.value}
                   for m in models],
        "dataset": dataset.name.value, "split": "test", "n": len(split), "backend": backend, "seed": seed,
        "objective": None if objective is None else AttackObjective.parse(objective).value,
        "batch_size": batch_size, "save_adversarials": save_adversarials, "precision": attack_precision.value,
    }
    _prepare(out, request, resume, cells)

    store = _Store(out, cells)
    context = {
        "dataset": dataset.name.value, "n": len(split), "batch_size": batch_size, "device": str(torch_device),
        "precision": attack_precision,
        "versions": json.dumps(_library_versions(), sort_keys=True), "command": command_line(),
    }
    bar = tqdm(total=len(cells), initial=len(store.done), desc="sweep", unit="cell", disable=not progress)
    runner = executor if executor is not None else LocalExecutor()
    work = _CellWork({m.label: runner.share(m) for m in models}, runner.share(images), runner.share(labels),
                     torch_device, batch_size, context, save_adversarials)

    def finished(job: Job, outcomes: list[tuple[dict[str, Any], pd.DataFrame, torch.Tensor | None]]) -> None:
        for cell, (row, examples, adversarials) in zip(job.payload, outcomes, strict=True):
            store.save(cell, row, examples, adversarials)
            bar.update(1)
        bar.set_postfix_str(f"{job.group} {job.payload[-1].label}")

    try:
        model_checks = [check for entry in models for check in
                        check_model(entry.label, attack_target(entry.loaded.model, entry.objective), images, labels,
                                    torch_device)]
        failures = runner.run(work, _jobs(cells, store.done), finished)
    finally:
        bar.close()
        store.write_examples()  # also when stopped: the per-example table of every finished cell
    model_checks += [_failed(failure) for failure in failures]
    checks = checks_frame([*notes, *model_checks, *check_results(store.results())])
    atomic_write(out / "checks.csv", lambda path: checks.to_csv(path, index=False))
    atomic_write_text(out / "checks.json", checks.to_json(orient="records", indent=2) + "\n")
    return store.results()


def load_sweep(out_dir: str | Path) -> SweepTables:
    """The results, per-example outcomes and checks tables of a sweep directory."""
    out = Path(out_dir)
    if not (out / SWEEP_FILE).is_file():
        raise SweepError(f"{out} holds no sweep ({SWEEP_FILE} missing); run `capsrobust sweep` into it first")
    return SweepTables(read_table(out / "results.csv", RESULT_COLUMNS),
                       read_table(out / "examples.csv", EXAMPLE_COLUMNS),
                       read_table(out / "checks.csv", ["check", "model", "status", "detail"]))


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


def _prepare(out: Path, request: dict[str, Any], resume: bool, cells: Sequence[Cell]) -> None:
    """Start ``out`` for a new sweep, or check that the sweep there is the one being resumed (or extended).

    A resumed sweep may grow its suite (more attacks, more budgets): every cell's seed depends only on its own
    id, so the cells already finished are exactly what a fresh run of the grown suite would compute, and are
    kept. It may not change or drop a cell that already ran (see ``_check_extension``).
    """
    path = out / SWEEP_FILE
    if path.is_file():
        if not resume:
            raise SweepError(f"{out} already holds a sweep; pass --resume to continue it or choose another --out")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            previous = record["request"]
        except (OSError, ValueError, KeyError) as error:
            raise SweepError(f"{path} is corrupt ({error}); remove {out} and start again") from None
        for key, value in request.items():
            if key not in {"suite_source", "suite", "suite_sha256"} and previous.get(key, DEFAULTS.get(key)) != value:
                raise SweepError(
                    f"cannot resume {out}: it was started with another {key} ({previous.get(key)!r}); "
                    f"resume with the same settings or choose another --out"
                )
        if previous.get("suite_sha256") == request["suite_sha256"]:
            return
        _check_extension(out, cells)
        record["extended_from"] = [*record.get("extended_from", []),
                                   {"suite": previous.get("suite"), "suite_sha256": previous.get("suite_sha256")}]
        record["request"] = request
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        log.info("extending %s: its suite grew; the finished cells are kept", out)
        return
    record = {"request": request, "versions": _library_versions(), "command": command_line()}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _check_extension(out: Path, cells: Sequence[Cell]) -> None:
    """Refuse a grown suite that drops a finished cell or runs one of them with other parameters."""
    planned = {cell.cell_id: cell for cell in cells}
    for finished in sorted((out / CELLS_DIR).glob("*.json")) if (out / CELLS_DIR).is_dir() else ():
        cell_id = finished.stem
        cell = planned.get(cell_id)
        if cell is None:
            raise SweepError(f"cannot resume {out} with this suite: it drops the finished cell {cell_id}; a resumed "
                             f"sweep may only add attacks and budgets (choose another --out)")
        try:
            ran_with = json.loads(json.loads(finished.read_text(encoding="utf-8"))["params"])
        except (OSError, ValueError, KeyError) as error:
            raise SweepError(f"cell {cell_id} in {out} is damaged ({error}); delete its files and resume") from None
        if ran_with != dict(cell.params):
            raise SweepError(f"cannot resume {out} with this suite: cell {cell_id} ran with {ran_with}, the suite "
                             f"now says {dict(cell.params)}; a resumed sweep may only add attacks and budgets")


def _jobs(cells: Sequence[Cell], done: set[str]) -> list[Job]:
    """The unfinished cells as jobs in plan order: cells sharing a run (a minimisation attack's thresholds) are one."""
    runs: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.cell_id not in done:
            runs.setdefault(cell.run_key, []).append(cell)
    return [Job(run_key, chosen[0].model, tuple(chosen)) for run_key, chosen in runs.items()]


def _failed(failure: Failure) -> Check:
    cells = ", ".join(cell.cell_id for cell in failure.job.payload)
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

    @property
    def uses_gpu(self) -> bool:
        return self.device.type == "cuda"

    def setup(self, group: str) -> tuple[_Model, torch.Tensor, torch.Tensor, torch.Tensor]:
        entry, images, labels = self.models[group].get(), self.images.get(), self.labels.get()
        return entry, images, labels, predict(entry.loaded.model, images, self.device, self.batch_size)  # (n,)

    def run(
        self, state: tuple[_Model, torch.Tensor, torch.Tensor, torch.Tensor], cells: tuple[Cell, ...]
    ) -> list[tuple[dict[str, Any], pd.DataFrame, torch.Tensor | None]]:
        entry, images, labels, clean = state
        shared: dict[str, tuple[AttackResult, float]] = {}
        outcomes = []
        for cell in cells:
            row, examples, adversarials = _attack_cell(cell, entry, images, labels, clean, self.device,
                                                       self.batch_size, shared, self.context)
            outcomes.append((row, examples, adversarials if self.keep_adversarials else None))
        return outcomes


def _attack_cell(
    cell: Cell, entry: _Model, images: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor,
    device: torch.device, batch_size: int, shared: dict[str, tuple[AttackResult, float]], context: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, torch.Tensor]:
    """Run (or, for a minimisation attack, reuse) the attack of ``cell`` and score it."""
    spec = get_attack(cell.attack)
    if cell.run_key in shared:
        result, seconds = shared[cell.run_key]
    else:
        started = time.perf_counter()
        with precision_scope(context["precision"], device, autotune=False):  # attacks shrink their batches
            result = run_attack(
                cell.attack, entry.loaded.model, images, labels, eps=cell.eps, params=dict(cell.params),
                objective=cell.objective, backend=cell.backend, device=device, seed=cell.seed, batch_size=batch_size,
            )
        seconds = time.perf_counter() - started
        if spec.kind is AttackKind.MINIMIZATION:
            shared[cell.run_key] = (result, seconds)
    adversarials = result.adversarials  # (n, 1, 28, 28), exactly as the library returned them
    adv_pred = predict(entry.loaded.model, adversarials, device, batch_size)
    delta = (adversarials.double() - images.double()).flatten(1)  # (n, 784)
    l2, linf = delta.norm(dim=1), delta.abs().amax(dim=1)
    flat = adversarials.flatten(1)
    in_bounds = (flat.amin(dim=1) >= -TOLERANCE) & (flat.amax(dim=1) <= 1 + TOLERANCE)
    in_ball = (linf if spec.norm is Norm.LINF else l2) <= cell.eps + TOLERANCE
    correct = clean == labels
    broken = correct & (adv_pred != labels)
    if spec.kind is AttackKind.MINIMIZATION:
        broken &= in_ball
    robust = correct & ~broken
    n_correct, n_broken = int(correct.sum()), int(broken.sum())

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
        "attack_success_rate": n_broken / n_correct if n_correct else None,
        "n_clean_correct": n_correct, "n_success": n_broken,
        "l2_median": stat(l2, "median"), "l2_mean": stat(l2, "mean"),
        "linf_median": stat(linf, "median"), "linf_mean": stat(linf, "mean"),
        "n_out_of_bounds": int((~in_bounds).sum()), "n_out_of_ball": int((~in_ball).sum()),
        "steps_or_queries": result.steps_or_queries, "seconds": round(seconds, 3), "seed": cell.seed,
        "batch_size": context["batch_size"], "device": context["device"], "versions": context["versions"],
        "command": context["command"], "train_seed": entry.train_seed, "precision": context["precision"].value,
        "capabilities": capabilities_text(capabilities_of(entry.loaded.model)),
    }
    examples = pd.DataFrame({
        "cell_id": cell.cell_id, "model": cell.model, "index": np.arange(len(labels)),
        "label": labels.numpy(), "clean_pred": clean.numpy(), "adv_pred": adv_pred.numpy(),
        "l2": l2.numpy(), "linf": linf.numpy(), "in_bounds": in_bounds.numpy(), "in_ball": in_ball.numpy(),
        "success": broken.numpy(), "robust": robust.numpy(),
    }, columns=EXAMPLE_COLUMNS)
    return row, examples, adversarials


class _Store:
    """The cell files of one sweep directory and the tables rebuilt from them, in plan order."""

    def __init__(self, out: Path, cells: list[Cell]) -> None:
        self.out = out
        self.order = [cell.cell_id for cell in cells]
        self.rows: dict[str, dict[str, Any]] = {}
        self.examples: dict[str, pd.DataFrame] = {}
        for cell_id in self.order:
            if (self._cells / f"{cell_id}.json").is_file():
                self._read(cell_id)
        self.done = set(self.rows)
        for stale in self._cells.glob(".*.tmp") if self._cells.is_dir() else ():
            stale.unlink(missing_ok=True)  # a write cut short by a kill; its cell is redone
        if self.done:
            log.info("resuming %s: %d of %d cells already done", out, len(self.done), len(self.order))
            self._write_results()

    @property
    def _cells(self) -> Path:
        return self.out / CELLS_DIR

    def _read(self, cell_id: str) -> None:
        try:
            self.rows[cell_id] = json.loads((self._cells / f"{cell_id}.json").read_text(encoding="utf-8"))
            self.examples[cell_id] = pd.read_csv(self._cells / f"{cell_id}.examples.csv")
        except (OSError, ValueError) as error:
            raise SweepError(f"cell {cell_id} in {self.out} is damaged ({error}); delete its files and resume") \
                from None

    def save(self, cell: Cell, row: dict[str, Any], examples: pd.DataFrame, adversarials: torch.Tensor | None) -> None:
        """Examples first, adversarials next, the row last: the row's file marks the cell as complete."""
        atomic_write(self._cells / f"{cell.cell_id}.examples.csv", lambda path: examples.to_csv(path, index=False))
        if adversarials is not None:
            arrays = {
                "adversarials": adversarials.numpy().astype(np.float32),
                "indices": np.arange(len(examples), dtype=np.int64), "labels": examples["label"].to_numpy(),
                "clean_pred": examples["clean_pred"].to_numpy(), "adv_pred": examples["adv_pred"].to_numpy(),
            }

            def write_npz(path: Path) -> None:
                with path.open("wb") as handle:
                    np.savez_compressed(handle, **arrays)

            atomic_write(self.out / ADVERSARIALS_DIR / f"{cell.cell_id}.npz", write_npz)
        atomic_write_text(self._cells / f"{cell.cell_id}.json", json.dumps(row, indent=1) + "\n")
        self._read(cell.cell_id)  # keep exactly what a resumed sweep would read back
        self.done.add(cell.cell_id)
        self._write_results()

    def results(self) -> pd.DataFrame:
        return pd.DataFrame([self.rows[c] for c in self.order if c in self.rows], columns=RESULT_COLUMNS)

    def _write_results(self) -> None:
        results = self.results()
        atomic_write(self.out / "results.csv", lambda path: results.to_csv(path, index=False))
        atomic_write_text(self.out / "results.json", results.to_json(orient="records", indent=1) + "\n")

    def write_examples(self) -> None:
        """examples.csv from the cell files, in plan order.

        Written once when the sweep ends or stops, not after every cell: it holds n rows per cell, so rewriting it
        per cell costs time that grows with the square of the number of cells (15% of a GPU sweep's wall time at
        n = 1,000 before this). The cell files stay the record; a resumed sweep rewrites this table from them.
        """
        frames = [self.examples[c] for c in self.order if c in self.examples]
        examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)
        atomic_write(self.out / "examples.csv", lambda path: examples.to_csv(path, index=False))
