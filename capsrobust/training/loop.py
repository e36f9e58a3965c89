"""The one training loop, shared by every architecture.

Adam with exponential learning-rate decay per epoch, random shifts of up to ``max_shift`` pixels (the paper's only
augmentation), validation after every epoch, per-epoch metrics in ``metrics.csv``, ``last`` and ``best``
checkpoints. Every epoch draws its shuffling, augmentation and dropout from generators seeded by (seed, epoch),
so a run resumed after epoch k continues exactly as the uninterrupted run would have, and two runs with the same
seed on the CPU give the same weights.

Training forward passes and losses run in the run's precision (``capsrobust.precision``: ``auto`` is tf32 on a
GPU, bf16 on a CPU with bf16 hardware, else fp32), backward passes outside autocast as autocast requires.
Validation, which picks the ``best`` checkpoint, runs in fp32 like every other evaluation. The precision is
recorded in ``run.json`` and in each checkpoint; it is not part of what ``--resume`` checks, so a run may continue
in another precision asked for by name (``auto`` continues in the run's own).

A recipe with an ``[adversarial]`` table trains adversarially (``capsrobust.training.adversarial``): each batch is
replaced by the training attack's images (Madry) or joined by them (TRADES), the attack's random start drawn from the
epoch's generator so resume stays exact. Such a run also measures robust validation accuracy (PGD at the training
eps) after each epoch, logs it as ``robust_val_accuracy`` beside the clean one, and keeps as ``best`` the epoch with the
highest robust accuracy. The training attack is part of the recipe, so run.json and every checkpoint record it and
``--resume`` refuses a run made with another.

A run directory holds::

    run.json                      what was asked for: recipe, data set, settings, precision, versions, command line
    metrics.csv                   one row per finished epoch
    best.safetensors / best.json  the epoch with the highest validation accuracy (robust accuracy when adversarial)
    last.safetensors / last.json  the latest finished epoch (plus last.optim.safetensors for --resume)
    interrupted.*                 written when training is stopped with Ctrl-C
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from capsrobust.data import Dataset, Split
from capsrobust.errors import CheckpointError, RecipeError, RunError
from capsrobust.execution import Executor, Failure, Job, LocalExecutor, Shared
from capsrobust.models import CapsRobustModel
from capsrobust.models.checkpoints import (
    check_state_matches,
    read_metadata,
    save_checkpoint,
    save_tensors,
)
from capsrobust.models.recipes import Recipe, build_model, recipe_from_dict
from capsrobust.models.registry import get_architecture
from capsrobust.precision import Precision, PrecisionError, precision_scope, resolve_precision
from capsrobust.runtime import (
    atomic_write,
    atomic_write_text,
    command_line,
    device_description,
    resolve_device,
    seed_everything,
    versions,
)
from capsrobust.training.adversarial import (
    adversarial_loss,
    attack_passes,
    batch_eps,
    check_applies,
    ramp_progress,
    robust_accuracy,
)

log = logging.getLogger(__name__)

LAST, BEST, INTERRUPTED = "last", "best", "interrupted"
OPTIMIZER_FILE = "last.optim.safetensors"
METRICS_FILE = "metrics.csv"
EVAL_BATCH_SIZE = 500


@dataclass(frozen=True)
class TrainSettings:
    """What a single run asks for beyond its recipe; ``None`` takes the recipe's default."""

    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    precision: str = "auto"  # auto, fp32, tf32 or bf16; see capsrobust.precision
    # ``last`` (weights and optimizer state, what --resume needs) is rewritten after an epoch only once this many
    # seconds have passed since it was last written, and always after the final epoch. On a GPU an epoch of
    # mnist-5k takes a fraction of a second and rewriting ~100 MB after each was most of a run's wall time; a
    # resume from an earlier epoch gives the same weights, since every epoch is seeded by (seed, epoch).
    checkpoint_seconds: float = 30.0


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], filling with zeros.

    The same as padding by ``max_shift`` and taking a random crop of the original size (CIFAR-10's crops).
    """
    if max_shift == 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)  # (B, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    # advanced indices around a slice put their (B, H, W) first: (B, H, W, C) → (B, C, H, W)
    return padded[index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left–right with probability ½ (natural images only: a mirrored digit is another glyph)."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(images: torch.Tensor, kind: str, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """The data set's augmentation (``Dataset.augmentation``): ``shift`` (digits: random shifts of up to
    ``max_shift`` pixels), ``crop-flip`` (natural images: the same shifts, i.e. padded random crops, and
    left–right flips) or ``none``."""
    if kind == "none":
        return images
    shifted = random_shift(images, max_shift, generator)
    return random_flip(shifted, generator) if kind == "crop-flip" else shifted


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@torch.no_grad()
def validate(
    model: CapsRobustModel, split: Split, device: torch.device, precision: Precision = Precision.FP32
) -> tuple[float, float]:
    """Mean loss and accuracy on ``split`` in eval mode and ``precision`` (fp32 unless asked: it picks ``best``)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        images = split.images[start : start + EVAL_BATCH_SIZE].to(device)
        labels = split.labels[start : start + EVAL_BATCH_SIZE].to(device)
        with precision_scope(precision, device):
            output = model(images, labels)
            loss = model.loss(output, images, labels).total
        total_loss += float(loss) * labels.shape[0]
        correct += int((output.predictions == labels).sum())
    return total_loss / len(split), correct / len(split)


def train(
    recipe: Recipe, dataset: Dataset, out_dir: str | Path, settings: TrainSettings = TrainSettings()
) -> pd.DataFrame:
    """Train ``recipe`` on ``dataset``'s train split into ``out_dir``; returns the metrics, one row per epoch.

    Raises ``RunError`` when ``out_dir`` already holds a run and ``settings.resume`` is false, or when the run
    to resume was made with another recipe or data set. On Ctrl-C the current weights are saved as
    ``interrupted`` and ``KeyboardInterrupt`` propagates.
    """
    run = _Run.start(recipe, dataset, Path(out_dir), settings)
    images, labels = dataset.train.images.to(run.device), dataset.train.labels.to(run.device)
    for epoch in range(run.start_epoch, run.epochs):
        started = time.perf_counter()
        seen, correct, loss_sum = _train_epoch(run, epoch, images, labels)
        seconds = time.perf_counter() - started
        val_loss, val_accuracy = validate(run.model, dataset.val, run.device)
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
            "val_loss": val_loss, "val_accuracy": val_accuracy,
            "learning_rate": run.optimizer.param_groups[0]["lr"], "seconds": seconds,
            "images_per_second": seen / seconds,
        }
        adversarial = recipe.adversarial
        if adversarial is not None:
            row["train_eps"] = batch_eps(adversarial, epoch, 1.0)
            started = time.perf_counter()
            row["robust_val_accuracy"] = robust_accuracy(run.model, dataset.val, adversarial, run.device,
                                                         seed=settings.seed)
            row["robust_val_seconds"] = time.perf_counter() - started  # not in `seconds`, which times training
            # what one image costs: steps + 1 forward/backward passes (steps + 2 for TRADES)
            row["passes_per_batch"] = attack_passes(adversarial)
        _end_epoch(run, row)
    return pd.DataFrame(run.history)


def selection_metric(recipe: Recipe) -> str:
    """The metrics column that picks ``best``: robust validation accuracy for adversarial runs, clean otherwise."""
    return "val_accuracy" if recipe.adversarial is None else "robust_val_accuracy"


@dataclass
class _Run:
    """One training run in progress: what it was asked for, its model and optimizer, and its history so far."""

    recipe: Recipe  # built for the data's shape and classes (``Recipe.for_data``)
    out: Path
    settings: TrainSettings
    device: torch.device
    precision: Precision
    augmentation: str  # the data set's (``Dataset.augmentation``)
    epochs: int
    batch_size: int
    record: dict[str, Any]  # what identifies the run (a resume must match it)
    model: CapsRobustModel
    optimizer: torch.optim.Optimizer
    history: list[dict[str, Any]]
    start_epoch: int
    best_accuracy: float
    last_saved: float  # when ``last`` was written (time.perf_counter)

    @classmethod
    def start(cls, recipe: Recipe, dataset: Dataset, out: Path, settings: TrainSettings) -> _Run:
        """A new run in ``out``, or the run there resumed (``settings.resume``); writes run.json."""
        recipe = recipe.for_data(dataset.input_shape, dataset.num_classes)
        device = resolve_device(settings.device)
        precision = _run_precision(out, settings, device, _architecture_trains_in_bf16(recipe))
        epochs = settings.epochs or recipe.train.epochs
        batch_size = settings.batch_size or recipe.train.batch_size
        if epochs <= 0 or batch_size <= 0:
            raise RunError(f"epochs and batch size must be positive, got {epochs} and {batch_size}")
        record = {"recipe": recipe.to_dict(), "dataset": dataset.name, "seed": settings.seed,
                  "batch_size": batch_size, "device": str(device)}
        if dataset.provenance:  # which files, by checksum (resumes do not compare it: older runs lack it)
            record["data_provenance"] = dataset.provenance
        if recipe.adversarial is not None:  # also inside the recipe; named on its own for readers of run.json
            record["adversarial"] = recipe.to_dict()["adversarial"]
        seed_everything(settings.seed)
        model = build_model(recipe).to(device)
        if recipe.adversarial is not None:
            check_applies(model, recipe.adversarial)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.learning_rate)
        start_epoch, history = 0, []
        if (out / f"{LAST}.json").is_file():
            if not settings.resume:
                raise RunError(f"{out} already holds a training run; pass --resume to continue it or choose another "
                               f"--out")
            start_epoch, history = _restore(out, model, optimizer, record, device)
            log.info("%s already has %d finished epochs; nothing to train" if start_epoch >= epochs else
                     "resuming %s after epoch %d", out, start_epoch)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "run.json", json.dumps({
            **record, "epochs": epochs, "versions": versions(), "command": command_line(),
            "device_name": device_description(device), "precision": precision.value,
        }, indent=2) + "\n")
        best = max((row[selection_metric(recipe)] for row in history), default=-1.0)
        return cls(recipe, out, settings, device, precision, dataset.augmentation, epochs, batch_size, record, model,
                   optimizer, history, start_epoch, best, time.perf_counter())

    def metadata(self, **extra: Any) -> dict[str, Any]:
        return {**self.record, **extra, "precision": self.precision.value, "versions": versions()}


def _architecture_trains_in_bf16(recipe: Recipe) -> bool:
    """Whether the recipe's architecture declares that bf16 training holds its accuracy (``trains_in_bf16``)."""
    return bool(getattr(get_architecture(recipe.architecture).build, "trains_in_bf16", False))


def _run_precision(out: Path, settings: TrainSettings, device: torch.device, cpu_bf16: bool) -> Precision:
    """What the run trains in: the precision asked for, except that ``auto`` continues a resumed run in the precision
    it was trained in so far (run.json), where this device can run it.

    ``auto`` may mean another precision today than when the run started (a newer capsrobust, another machine); a
    run that changed arithmetic half-way would be neither the one nor the other. Asked for by name, a precision is
    what the run continues in, and its checkpoints say so.
    """
    if settings.resume and str(settings.precision) == Precision.AUTO.value:
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, PrecisionError):
            # a run from before the precision setting (no "precision" in run.json) trained in fp32
            recorded = json.loads((out / "run.json").read_text(encoding="utf-8")).get("precision", "fp32")
            return resolve_precision(recorded, device, training=True)
    return resolve_precision(settings.precision, device, training=True, cpu_bf16=cpu_bf16)


def _train_epoch(run: _Run, epoch: int, images_all: torch.Tensor, labels_all: torch.Tensor) -> tuple[int, int, float]:
    """One pass over the training split, seeded by (seed, epoch); returns images seen, correct, summed loss."""
    recipe, settings = run.recipe, run.settings
    for group in run.optimizer.param_groups:
        group["lr"] = recipe.train.learning_rate * recipe.train.lr_decay**epoch
    generator = torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
    torch.manual_seed(epoch_seed(settings.seed, epoch))  # dropout
    order = torch.randperm(len(labels_all), generator=generator).to(run.device)
    run.model.train()
    seen, correct, loss_sum = 0, 0, 0.0
    starts = range(0, len(labels_all), run.batch_size)
    bar = tqdm(starts, desc=f"epoch {epoch + 1}/{run.epochs}", unit="batch", leave=False,
               disable=not settings.progress)
    try:
        for batch, start in enumerate(bar):
            index = order[start : start + run.batch_size]
            images = augment(images_all[index], run.augmentation, recipe.train.max_shift, generator)
            labels = labels_all[index]
            if recipe.adversarial is not None:
                eps = batch_eps(recipe.adversarial, epoch, ramp_progress(batch, len(starts)))
                output, loss = adversarial_loss(run.model, images, labels, recipe.adversarial, eps, generator,
                                                run.precision)
            else:
                with precision_scope(run.precision, run.device):
                    output = run.model(images, labels)
                    loss = run.model.loss(output, images, labels).total
            if not bool(torch.isfinite(loss.detach())):  # one step further would write NaN weights
                raise RunError(f"the training loss became {float(loss.detach())} at epoch {epoch + 1}, batch "
                               f"{batch + 1}; stopped before saving anything of this epoch: lower the learning rate "
                               f"or check the data for NaN pixels")
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            seen += labels.shape[0]
            correct += int((output.predictions == labels).sum())
            loss_sum += float(loss.detach()) * labels.shape[0]
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    except KeyboardInterrupt:
        bar.close()
        save_checkpoint(run.out / INTERRUPTED, run.model, recipe,
                        run.metadata(epoch=epoch, batches_done=seen // run.batch_size, interrupted=True))
        log.warning("interrupted during epoch %d; weights saved to %s", epoch + 1, run.out / INTERRUPTED)
        raise
    bar.close()
    return seen, correct, loss_sum


def _end_epoch(run: _Run, row: dict[str, Any]) -> None:
    """Record a finished epoch: metrics.csv, ``best`` when validation improved, ``last`` when it is due."""
    run.history.append(row)
    metadata = run.metadata(epoch=row["epoch"], metrics=row)
    if row["epoch"] == run.epochs or time.perf_counter() - run.last_saved >= run.settings.checkpoint_seconds:
        save_checkpoint(run.out / LAST, run.model, run.recipe, metadata)
        _save_optimizer(run.out, run.optimizer)
        run.last_saved = time.perf_counter()
    if row[selection_metric(run.recipe)] > run.best_accuracy:
        run.best_accuracy = row[selection_metric(run.recipe)]
        save_checkpoint(run.out / BEST, run.model, run.recipe, metadata)
    metrics = pd.DataFrame(run.history)
    atomic_write(run.out / METRICS_FILE, lambda path: metrics.to_csv(path, index=False))
    robust = f"  robust val acc {row['robust_val_accuracy']:.4f}" if "robust_val_accuracy" in row else ""
    log.info("epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f%s  %.0f img/s", row["epoch"], run.epochs,
             row["train_loss"], row["train_accuracy"], row["val_accuracy"], robust, row["images_per_second"])


def _save_optimizer(out: Path, optimizer: torch.optim.Optimizer) -> None:
    """Adam's moments as safetensors, its hyper-parameters as JSON (no pickles, as for the weights)."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value if torch.is_tensor(value) else torch.tensor(value)
        for index, entries in state["state"].items()
        for key, value in entries.items()
    }
    save_tensors(out / OPTIMIZER_FILE, tensors)
    atomic_write_text(out / "last.optim.json", json.dumps(state["param_groups"]) + "\n")


def _restore(
    out: Path,
    model: CapsRobustModel,
    optimizer: torch.optim.Optimizer,
    run_record: dict[str, Any],
    device: torch.device,
) -> tuple[int, list[dict[str, Any]]]:
    """Load ``last`` weights, optimizer state and metrics history of the run in ``out``."""
    metadata = read_metadata(out / LAST)
    if isinstance(metadata.get("recipe"), dict):  # as today's code writes it (older checkpoints say image_size)
        with contextlib.suppress(RecipeError):
            metadata["recipe"] = recipe_from_dict(metadata["recipe"], source=f"{out / LAST}.json").to_dict()
    for key in ("recipe", "dataset", "seed", "batch_size"):
        if metadata.get(key) != run_record[key]:
            raise RunError(
                f"{out} was trained with another {key} ({metadata.get(key)!r}); resume it with the same "
                f"settings or choose another --out"
            )
    try:
        state = load_file(str(out / f"{LAST}.safetensors"))
        check_state_matches(model, state, out / f"{LAST}.safetensors")
        model.load_state_dict(state)
        moments = load_file(str(out / OPTIMIZER_FILE))
        groups = json.loads((out / "last.optim.json").read_text(encoding="utf-8"))
    except (OSError, SafetensorError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot resume {out}: its last checkpoint is damaged ({error})") from None
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in moments.items():
        index, key = name.split(".", 1)
        optimizer_state.setdefault(int(index), {})[key] = tensor.to(device) if key != "step" else tensor
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    history = pd.read_csv(out / METRICS_FILE).to_dict("records") if (out / METRICS_FILE).is_file() else []
    history = [row for row in history if row["epoch"] <= metadata["epoch"]]
    return int(metadata["epoch"]), history



@dataclass(frozen=True)
class TrainJob:
    """One run of ``train_runs``: a recipe, its run directory and its settings (a seed, usually)."""

    recipe: Recipe
    out_dir: Path
    settings: TrainSettings


def train_runs(jobs: Sequence[TrainJob], dataset: Dataset, executor: Executor | None = None) -> list[Failure]:
    """Train every job (each writes its own run directory, atomically and resumably) through ``executor``.

    With a ``capsrobust.execution`` executor other than the default ``LocalExecutor`` (one job after another,
    here), the runs train side by side, each a job with its own resource request; the data set travels once.
    On a cluster the run directories must be on a filesystem every node shares with this process: a worker that
    cannot see a marker file written here refuses in one line rather than training into its own disk.
    Returns the jobs that failed on every try (the others are trained).
    """
    if not jobs:
        return []
    runner = executor if executor is not None else LocalExecutor()
    runner.start()  # a cluster that is not there fails here, before any folder is made
    folders = {job.out_dir.resolve().parent for job in jobs}
    made = sorted({path for folder in folders for path in (folder, *folder.parents) if not path.exists()},
                  key=lambda path: len(path.parts))
    markers = [folder / f".capsrobust-shared-{uuid.uuid4().hex}" for folder in sorted(folders)]
    try:
        for marker in markers:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        gpu = any(resolve_device(job.settings.device).type == "cuda" for job in jobs)
        work = _TrainWork(runner.share(dataset), tuple(markers), gpu)
        return runner.run(work, [Job(str(job.out_dir), "train", job) for job in jobs], lambda job, result: None)
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
        for folder in reversed(made):  # made here and left empty: no run started in it
            with contextlib.suppress(OSError):
                folder.rmdir()


@dataclass(frozen=True)
class _TrainWork:
    """``train`` as a ``capsrobust.execution.Workload``: fetch the data set once per worker, train one run per job."""

    dataset: Shared[Dataset]
    markers: tuple[Path, ...]
    uses_gpu: bool

    def setup(self, group: str) -> Dataset:
        for marker in self.markers:
            if not marker.is_file():
                raise RunError(f"this worker cannot see {marker.parent}, where the runs go; put the runs on a "
                               f"filesystem every node shares (--out) or train with --executor local")
        return self.dataset.get()

    def run(self, dataset: Dataset, job: TrainJob) -> int:
        return len(train(job.recipe, dataset, job.out_dir, job.settings))
