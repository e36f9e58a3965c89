"""The whole evaluation in one call: train, sweep, detect, draw, report — resumable at every stage.

``run_benchmark(profile)`` trains (or reuses) the profile's models, attacks them with its suite (saving the
adversarials), runs the reconstruction-error detector, draws reconstruction, tweak and gallery figures from the
checkpoints, and builds the report from the tables on disk. A benchmark directory holds::

    benchmark.json           the profile, data, seed and n it was started with, and what each stage did
    runs/RECIPE/             one training run per recipe (capsrobust.training)
    sweep/                   the sweep (capsrobust.evaluation.sweep), with detection/ and figures/ inside it

and the report goes to ``reports/REPORT``, the profile's report name (``report_dir`` to choose). Every stage is
skipped when its outputs are complete: a run with its epochs finished, a sweep, detection or figure stage recorded
as done in benchmark.json for the same checkpoints, a report whose manifest names the same input digest. A stage
stopped half-way resumes with its own machinery (training after the last finished epoch, the sweep after its last
finished cell), so the benchmark can be stopped at any moment — or on purpose with ``stop_after`` — and run again
with the same command.

Profiles are data: frozen dataclasses in a registry, looked up by name (``get_profile``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

from capsrobust.attacks.suites import load_suite
from capsrobust.data import Dataset, DatasetName, dataset_name, load_dataset
from capsrobust.detection.pipeline import DETECTION_DIR, DETECTION_FILE, run_detection
from capsrobust.errors import RecipeError, parse_choice
from capsrobust.evaluation.checks import Status
from capsrobust.evaluation.store import RESULTS_FILE, figures_dir, holds_sweep, load_checks
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.execution import Executor, LocalExecutor
from capsrobust.figures.capsules import (
    capsule_tweaks,
    choose_examples,
    reconstruction_figure,
    save_figure,
    tweak_deltas,
    tweak_figure,
)
from capsrobust.figures.detection import write_detection_figures
from capsrobust.figures.gallery import write_gallery
from capsrobust.models.checkpoints import load_checkpoint, read_metadata
from capsrobust.models.recipes import Recipe, load_recipe
from capsrobust.precision import resolve_precision
from capsrobust.profiles import BenchmarkError, BenchmarkProfile, get_profile
from capsrobust.reporting.report import MANIFEST, build_report
from capsrobust.reporting.sources import inputs_digest
from capsrobust.runtime import atomic_write_text, command_line, resolve_device
from capsrobust.training import TrainJob, TrainSettings, train_runs
from capsrobust.training.runs import check_seeds
from capsrobust.training.runs import parse_seeds as parse_seeds  # public here since 0.2; it moved to training

log = logging.getLogger(__name__)

STATE_FILE = "benchmark.json"
STATE_FORMAT = "capsrobust-benchmark/1"
REPOSITORY = Path(__file__).resolve().parents[1]
FIGURE_IMAGES = 10  # test images in each reconstruction figure
TWEAK_INDEX = 0  # the test image whose winning capsule the tweak figure moves


class Stage(str, Enum):
    """The stages in the order they run; ``stop_after`` names one."""

    TRAIN = "train"
    SWEEP = "sweep"
    DETECT = "detect"
    FIGURES = "figures"
    REPORT = "report"

    @classmethod
    def parse(cls, name: str | Stage) -> Stage:
        return parse_choice(cls, name, BenchmarkError, "stage")


@dataclass(frozen=True)
class BenchmarkResult:
    """Where everything went and what each stage did (``ran``, ``skipped``, ``reused`` ...)."""

    out_dir: Path
    runs: dict[str, Path]
    sweep_dir: Path
    report_dir: Path
    stages: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    finished: bool = False  # false when stopped by stop_after before the report


def default_out_dir(profile: BenchmarkProfile, data: str) -> Path:
    return Path("runs") / "benchmark" / f"{profile.name}-{data.replace(':', '-').replace('/', '-')}"


def default_report_dir(profile: BenchmarkProfile, data: str) -> Path:
    safe = data.replace(":", "-").replace("/", "-")
    return Path("reports") / (profile.report if data == profile.data else f"{profile.report}-{safe}")


def run_benchmark(
    profile: str | BenchmarkProfile,
    *,
    out_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    data: str | Dataset | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    reuse: bool = False,
    reuse_dir: str | Path = "runs",
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    n: int | None = None,
    recipes: Sequence[tuple[str, int]] | None = None,
    suite: str | Path | None = None,
    stop_after: str | Stage | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    precision: str | None = None,
) -> BenchmarkResult:
    """Run ``profile`` end to end into ``out_dir``, skipping every stage whose outputs are complete.

    ``data`` overrides the profile's data set (a name, with ``data_dir`` for IDX files, or a loaded ``Dataset``),
    ``n`` its number of images. The data set is loaded only when a stage that needs it runs.
    ``reuse`` takes a finished run in ``reuse_dir/RECIPE`` (as the README's reference runs are laid out) as it
    is, whatever its epochs, instead of training one; runs on another data set are not reused (logged).
    ``seeds`` are the training seeds (default: the profile's, else ``seed``); ``seed`` also seeds the attacks and
    the figures. ``recipes`` ((name, epochs), ...) and ``suite`` (a name or TOML file) replace the profile's,
    e.g. tiny models and fewer steps to try a GPU profile on a CPU. ``stop_after`` ends after that stage.
    ``executor`` (``capsrobust.execution``; default: here, one job after another) trains the runs and attacks the
    sweep's cells; a training run or cell that fails on every try stops the benchmark after its stage. ``precision``
    replaces the profile's attack precision; both it and the training precision follow ``resolve_precision``'s rule,
    as ``--precision`` does everywhere (a GPU profile's tf32 is refused on a CPU: pass fp32 to try it there). Raises
    ``BenchmarkError`` when ``out_dir`` holds a benchmark started with another profile, data set, seed, seeds or n.
    """
    chosen = get_profile(profile)
    if recipes is not None:
        chosen = replace(chosen, recipes=tuple((str(name), int(epochs)) for name, epochs in recipes))
        if not chosen.recipes or any(epochs < 1 for _, epochs in chosen.recipes):
            raise BenchmarkError(f"recipes must be (name, epochs ≥ 1) pairs, at least one; got {list(recipes)!r}")
    if suite is not None:
        chosen = replace(chosen, suite=str(suite))
    if precision is not None:
        chosen = replace(chosen, attack_precision=precision)
    train_seeds = check_seeds(seeds if seeds is not None else chosen.seeds or (seed,))
    source = data.name if isinstance(data, Dataset) else str(data or chosen.data)  # what load_dataset reads
    data_name = data.name if isinstance(data, Dataset) else dataset_name(source)  # npz:PATH → npz:STEM
    count = chosen.n if n is None else n
    if count < 1:
        raise BenchmarkError(f"n must be ≥ 1, got {count}")
    last = Stage.parse(stop_after) if stop_after is not None else Stage.REPORT
    out = Path(out_dir) if out_dir is not None else default_out_dir(chosen, data_name)
    report = Path(report_dir) if report_dir is not None else default_report_dir(chosen, data_name)
    torch_device = resolve_device(device)  # refuse a device (or precision) it cannot run before anything is written
    resolve_precision(chosen.train_precision, torch_device, training=True)
    resolve_precision(chosen.attack_precision, torch_device, training=False)
    dataset = _Lazy(data if isinstance(data, Dataset) else None, data_name, data_dir, source)
    if data_dir is None and data_name != DatasetName.MNIST_5K.value:
        dataset.get()  # IDX data sets need --data-dir: say so before anything is written
    state = _State.open(out, {"profile": chosen.name, "data": data_name, "seed": seed, "seeds": list(train_seeds),
                              "n": count}, asdict(chosen))
    context = _Context(chosen, dataset, state, out, report, device, seed, train_seeds, count, data_dir, progress,
                       reuse, Path(reuse_dir), executor if executor is not None else LocalExecutor())
    result = BenchmarkResult(out, context.runs, context.sweep_dir, report)
    for which, run_stage in STAGES:
        started = time.perf_counter()
        status = run_stage(context)
        result.stages[which.value] = status
        result.seconds[which.value] = round(time.perf_counter() - started, 3)
        state.timed(which, status, result.seconds[which.value])
        log.info("benchmark %s: %s %s (%.1f s)", chosen.name, which.value, status, result.seconds[which.value])
        if which is last:
            break
    return replace(result, finished=last is Stage.REPORT)


@dataclass
class _Context:
    """What the stages of one benchmark share; ``runs`` is filled by the training stage."""

    profile: BenchmarkProfile
    dataset: _Lazy
    state: _State
    out: Path
    report: Path
    device: str
    seed: int
    train_seeds: tuple[int, ...]
    n: int
    data_dir: str | Path | None
    progress: bool
    reuse: bool
    reuse_dir: Path
    executor: Executor
    runs: dict[str, Path] = field(default_factory=dict)

    @property
    def sweep_dir(self) -> Path:
        return self.out / "sweep"

    @property
    def attack_precision(self) -> str:
        return self.profile.attack_precision

    @cached_property
    def key(self) -> str:
        """What the stages after training depend on: a stage recorded as done with another key runs again.

        Read after training (the runs' weights are part of it), once.
        """
        return _key(load_suite(self.profile.suite).digest(), self.n, self.profile.backend, self.seed,
                    self.dataset.name,
                    [(name, read_metadata(path / "best").get("weights_sha256")) for name, path in self.runs.items()],
                    *([self.attack_precision] if self.attack_precision != "fp32" else []))  # fp32 keys unchanged

    @cached_property
    def reconstructing(self) -> dict[str, Path]:
        """The runs whose models have a class-conditional decoder (the detector's and the figures' models)."""
        return {name: path for name, path in self.runs.items() if load_checkpoint(path).model.can_reconstruct}

    @property
    def first_seed_runs(self) -> list[str]:
        """The first training seed's runs: figures show those only (the other seeds' look alike)."""
        return [run_name(recipe, self.train_seeds[0], self.train_seeds) for recipe, _ in self.profile.recipes]


def _train(context: _Context) -> str:
    runs, statuses = _train_stage(context.profile, context.dataset, context.out, context.state, context.device,
                                  context.train_seeds, context.reuse, context.reuse_dir, context.progress,
                                  context.executor)
    context.runs.update(runs)
    done = set(statuses.values())
    return "ran" if "trained" in done else "reused" if "reused" in done else "skipped"


def _sweep(context: _Context) -> str:
    key = context.key
    if context.state.done(Stage.SWEEP, key) and (context.sweep_dir / RESULTS_FILE).is_file():
        return "skipped"
    run_sweep(list(context.runs.values()), context.profile.suite, context.dataset.get(), out_dir=context.sweep_dir,
              n=context.n, backend=context.profile.backend, resume=holds_sweep(context.sweep_dir),
              save_adversarials=True, device=context.device, seed=context.seed, data_dir=context.data_dir,
              precision=context.attack_precision, progress=context.progress, executor=context.executor)
    checks = load_checks(context.sweep_dir)
    failed = checks[checks["status"] == Status.FAILED.value]
    if len(failed):
        raise BenchmarkError(f"{len(failed)} sweep job(s) failed on every try (checks.csv in {context.sweep_dir}: "
                             f"{failed.iloc[0]['detail']}); run the benchmark again to retry them")
    context.state.mark(Stage.SWEEP, key)
    return "ran"


def _detect(context: _Context) -> str:
    key = context.key
    if not context.reconstructing:
        return "skipped (no model with a decoder)"
    if context.state.done(Stage.DETECT, key) and (context.sweep_dir / DETECTION_DIR / DETECTION_FILE).is_file():
        return "skipped"
    run_detection(context.sweep_dir, device=context.device, data_dir=context.data_dir)
    write_detection_figures(context.sweep_dir / DETECTION_DIR)  # score histograms and ROC curves, as `detect`
    context.state.mark(Stage.DETECT, key)
    return "ran"


def _figures(context: _Context) -> str:
    key = context.key
    if context.state.done(Stage.FIGURES, key) and figures_dir(context.sweep_dir).is_dir():
        return "skipped"
    first = context.first_seed_runs
    write_figures(context.sweep_dir, {name: path for name, path in context.reconstructing.items() if name in first},
                  context.dataset.get(), device=context.device, seed=context.seed, data_dir=context.data_dir,
                  gallery_labels=context.profile.gallery_labels, gallery_per_row=context.profile.gallery_per_row,
                  gallery_models=first if len(context.train_seeds) > 1 else None)
    context.state.mark(Stage.FIGURES, key)
    return "ran"


def _report(context: _Context) -> str:
    digest = inputs_digest([context.sweep_dir])
    manifest = context.report / MANIFEST
    previous = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    status = "skipped"
    if previous.get("inputs_sha256") != digest:
        build_report([context.sweep_dir], context.report, seed=context.seed)
        status = "ran"
    context.state.mark(Stage.REPORT, digest)
    return status


# The stages in the order they run: each skips itself when its outputs are complete and returns what it did.
STAGES: tuple[tuple[Stage, Callable[[_Context], str]], ...] = (
    (Stage.TRAIN, _train), (Stage.SWEEP, _sweep), (Stage.DETECT, _detect), (Stage.FIGURES, _figures),
    (Stage.REPORT, _report),
)


def write_figures(
    sweep_dir: Path, runs: dict[str, Path], dataset: Dataset, *, device: str = "auto", seed: int = 0,
    data_dir: str | Path | None = None, gallery_labels: Sequence[str] = (), gallery_per_row: int = 3,
    gallery_models: Sequence[str] | None = None,
) -> list[Path]:
    """Reconstruction and capsule-tweak figures of every model in ``runs``, and the sweep's adversarial gallery.

    They go to ``SWEEP/figures/`` (``reconstruction-MODEL.png``, ``tweak-MODEL.png``, ``gallery.png``), where the
    report picks them up; the same ``seed`` chooses the same images every time. ``gallery_labels`` limits the
    gallery to those attacks (default: every attack of the sweep, one row per model and attack), with
    ``gallery_per_row`` examples each; ``gallery_models`` limits its rows to those models.
    """
    torch_device = resolve_device(device)
    folder = figures_dir(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    test = dataset.test
    indices = choose_examples(len(test), FIGURE_IMAGES, seed)
    for name, run in runs.items():
        model = load_checkpoint(run, torch_device).model
        figure = reconstruction_figure(model, test, indices, dataset.classes, str(torch_device))
        written.append(save_figure(figure, folder / f"reconstruction-{name}.png"))
        deltas = tweak_deltas()
        predicted, _, images = capsule_tweaks(model, test.images[TWEAK_INDEX], deltas, str(torch_device))
        written.append(save_figure(tweak_figure(predicted, images, deltas, dataset.classes),
                                   folder / f"tweak-{name}.png"))
    # the gallery of `capsrobust gallery`, drawn from the sweep's saved adversarials
    written.append(Path(write_gallery(sweep_dir, folder / "gallery.png", n_per_row=gallery_per_row, seed=seed,
                                      labels=list(gallery_labels) or None, device=device, data_dir=data_dir,
                                      models=gallery_models)))
    return written


def _recipe(name: str) -> Recipe:
    """A recipe by name from ./models, else from the repository's models/ (running from another directory)."""
    try:
        return load_recipe(name)
    except RecipeError:
        path = REPOSITORY / "models" / f"{name}.toml"
        if path.is_file():
            return load_recipe(path)
        raise


def run_name(recipe: str, seed: int, seeds: Sequence[int]) -> str:
    """``RECIPE`` for a one-seed benchmark (as before seeds existed), ``RECIPE-sK`` when there are several."""
    return recipe if len(seeds) == 1 else f"{recipe}-s{seed}"


def _train_stage(
    profile: BenchmarkProfile, dataset: _Lazy, out: Path, state: _State, device: str, seeds: Sequence[int],
    reuse: bool, reuse_dir: Path, progress: bool, executor: Executor,
) -> tuple[dict[str, Path], dict[str, str]]:
    data_name = dataset.name
    runs, statuses = {}, {}
    jobs: list[TrainJob] = []
    # Seed by seed, every recipe each time: the sweep attacks models in this order, so a multi-seed benchmark
    # stopped early has whole seeds (every recipe) finished, not some recipes with every seed.
    for seed in seeds:
        for recipe_name, epochs in profile.recipes:
            recipe = _recipe(recipe_name)
            name = run_name(recipe_name, seed, seeds)
            candidate = reuse_dir / name
            if reuse and (candidate / "best.json").is_file():
                best = read_metadata(candidate / "best")
                trained_on = best.get("dataset")
                if trained_on == data_name:
                    runs[name], statuses[name] = candidate, "reused"
                    log.info("reusing %s as it is (best epoch %s)", candidate, best.get("epoch"))
                    continue
                log.warning("not reusing %s: it was trained on %s, not %s", candidate, trained_on, data_name)
            run = out / "runs" / name
            if _finished(run, recipe, data_name, seed, epochs):
                runs[name], statuses[name] = run, "finished"
                continue
            jobs.append(TrainJob(recipe, run, TrainSettings(epochs=epochs, seed=seed, device=device, resume=True,
                                                            progress=progress and isinstance(executor, LocalExecutor),
                                                            precision=profile.train_precision)))
            runs[name], statuses[name] = run, "trained"
    failures = train_runs(jobs, dataset.get(), executor) if jobs else []
    if failures:
        raise BenchmarkError(f"{len(failures)} training run(s) failed on every try ({failures[0].job.key}: "
                             f"{failures[0].error}); run the benchmark again to retry them")
    state.note(Stage.TRAIN, {name: {"run": str(path), "status": statuses[name]} for name, path in runs.items()})
    return runs, statuses


def _finished(run: Path, recipe: Recipe, data_name: str, seed: int, epochs: int) -> bool:
    """True when ``run`` holds this recipe, data set and seed trained for at least ``epochs`` epochs."""
    if not (run / "last.json").is_file() or not (run / "best.json").is_file():
        return False
    metadata = read_metadata(run / "last")
    return (metadata.get("recipe") == recipe.to_dict() and metadata.get("dataset") == data_name
            and metadata.get("seed") == seed and int(metadata.get("epoch", 0)) >= epochs)


def _key(*parts: Any) -> str:
    """A digest of what a stage's outputs depend on; a stage recorded with another key runs again."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Lazy:
    """The benchmark's data set, loaded the first time a stage needs it (a finished benchmark never loads it)."""

    def __init__(self, dataset: Dataset | None, name: str, data_dir: str | Path | None, source: str) -> None:
        self.dataset, self.name, self.data_dir, self.source = dataset, name, data_dir, source

    def get(self) -> Dataset:
        if self.dataset is None:
            self.dataset = load_dataset(self.source, self.data_dir)
        return self.dataset


class _State:
    """benchmark.json: what the benchmark was started with and which stages finished, written atomically."""

    def __init__(self, path: Path, record: dict[str, Any]) -> None:
        self.path = path
        self.record = record

    @classmethod
    def open(cls, out: Path, identity: dict[str, Any], profile: dict[str, Any]) -> _State:
        path = out / STATE_FILE
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise BenchmarkError(f"{path} is corrupt ({error}); remove it to start the stages' checks again") \
                    from None
            record.setdefault("seeds", [record.get("seed")])  # started before training seeds were a setting
            started = {key: record.get(key) for key in identity}
            if started != identity:
                different = next(key for key in identity if started[key] != identity[key])
                raise BenchmarkError(f"{out} holds a benchmark started with {different} {started[different]!r}, "
                                     f"not {identity[different]!r}; use the same settings or choose another --out")
            record["profile_definition"] = profile
            record["command"] = command_line()
        else:
            record = {"format": STATE_FORMAT, **identity, "profile_definition": profile, "command": command_line(),
                      "stages": {}}
        state = cls(path, record)
        state._save()
        return state

    def done(self, stage: Stage, key: str) -> bool:
        entry = self.record["stages"].get(stage.value, {})
        return bool(entry.get("done")) and entry.get("key") == key

    def mark(self, stage: Stage, key: str) -> None:
        self.record["stages"][stage.value] = {"done": True, "key": key}
        self._save()

    def note(self, stage: Stage, detail: dict[str, Any]) -> None:
        """Record a stage that keeps no key (training: each run knows whether it is finished)."""
        self.record["stages"][stage.value] = {"done": True, "detail": detail}
        self._save()

    def timed(self, stage: Stage, status: str, seconds: float) -> None:
        """Record what the stage did this time and its wall time (the stage times a profile's estimate rests on)."""
        entry = self.record["stages"].setdefault(stage.value, {})
        entry["last_run"] = {"status": status, "seconds": seconds}
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.record, indent=2) + "\n")

