"""A sweep directory on disk: its request, one file set per finished cell, and the tables rebuilt from them.

Every file is written atomically and ``cells/CELL.json`` is written last, so a cell is complete exactly when that
file exists; the tables (results, examples) are always rebuilt from the cell files in plan order, so a sweep
killed at any moment and resumed ends with the same tables.

This module is the one owner of the directory's layout: the sweep writes through it (``CellStore``) and every
reader — detection, the gallery, reports, the benchmark — asks it for what the sweep recorded (``read_sweep_record``,
the models and test images it attacked, a cell's saved adversarials, the checks, the figures drawn beside it) rather
than opening the files itself. A cell's row must hold exactly ``RESULT_COLUMNS``, the columns ``load_sweep`` reads.
Folders other stages put inside a sweep directory (``detection/``) belong to them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from capsrobust.attacks.registry import get_attack
from capsrobust.data import Dataset, Split, load_dataset
from capsrobust.errors import CheckpointError
from capsrobust.evaluation.plan import Cell, SweepError
from capsrobust.models.checkpoints import LoadedCheckpoint, load_checkpoint
from capsrobust.models.foreign import IN_MEMORY_PREFIX, ForeignModel, in_memory_checkpoint
from capsrobust.precision import Precision
from capsrobust.runtime import atomic_write, atomic_write_text, command_line, read_table

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"


# What a sweep started before a setting existed ran with.
DEFAULTS = {"precision": Precision.FP32.value, "cascade": False}
#: What a resumed sweep may change, by growing only: its suite (checked cell by cell) and its models.
GROWABLE = frozenset({"suite_source", "suite", "suite_sha256", "models"})


CELLS_DIR = "cells"


ADVERSARIALS_DIR = "adversarials"
TRANSFER_DIR = "transfer"  # crafted transfer adversarials (``capsrobust.evaluation.transfer``)


# Reconstruction, tweak and gallery figures drawn beside the sweep (capsrobust.benchmark.write_figures).
FIGURES_DIR = "figures"


RESULTS_FILE, EXAMPLES_FILE, CHECKS_FILE = "results.csv", "examples.csv", "checks.csv"
# Every cell the sweep means to run, written when it starts or resumes: a report on a sweep that has not finished
# says which budgets are complete and which numbers still miss attacks (``missing_cells``).
PLAN_FILE = "plan.csv"


RESULT_COLUMNS = [
    "cell_id", "role", "check_of", "model", "checkpoint", "checkpoint_sha256", "recipe", "architecture",
    "dataset", "split", "attack", "label", "backend", "norm", "kind", "gradient_free", "eps", "objective",
    "objective_used", "params", "n", "clean_accuracy", "robust_accuracy", "attack_success_rate",
    "n_clean_correct", "n_success", "l2_median", "l2_mean", "linf_median", "linf_mean", "n_out_of_bounds",
    "n_out_of_ball", "steps_or_queries", "seconds", "seed", "batch_size", "device", "versions", "command",
    "train_seed", "precision", "capabilities", "train_linf_eps", "mode", "n_attacked", "n_no_answer",
    "transfer_from", "train_precision",
]


EXAMPLE_COLUMNS = [
    "cell_id", "model", "index", "label", "clean_pred", "adv_pred", "l2", "linf", "in_bounds", "in_ball",
    "success", "robust", "attacked",
]


CHECK_COLUMNS = ["check", "model", "status", "detail"]


PLAN_COLUMNS = ["cell_id", "model", "label", "norm", "eps"]
# What a table must hold to mean anything (older sweeps lack some later columns, which readers fill in).
REQUIRED_COLUMNS = {
    RESULTS_FILE: ["cell_id", "model", "attack", "label", "norm", "eps", "n", "clean_accuracy", "robust_accuracy"],
    EXAMPLES_FILE: ["cell_id", "model", "index", "label", "clean_pred", "robust"],
    CHECKS_FILE: CHECK_COLUMNS,
    PLAN_FILE: PLAN_COLUMNS,
}
REBUILD = "resume the sweep (the same command with --resume), which rewrites it (the cell files are the record)"


@dataclass(frozen=True)
class SweepTables:
    """What a sweep directory holds, read back from its files (reports are built from these, never from memory)."""

    results: pd.DataFrame
    examples: pd.DataFrame
    checks: pd.DataFrame
    plan: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PLAN_COLUMNS))  # empty: not recorded

    def missing_cells(self) -> pd.DataFrame:
        """The planned cells without a result (``PLAN_COLUMNS``): none once the sweep has finished, and none known
        for a sweep written before plans were recorded."""
        return self.plan[~self.plan["cell_id"].isin(self.results["cell_id"])].reset_index(drop=True)


def holds_sweep(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a sweep (started, not necessarily finished)."""
    return (Path(out_dir) / SWEEP_FILE).is_file()


def load_sweep(out_dir: str | Path) -> SweepTables:
    """The results, per-example outcomes and checks tables of a sweep directory."""
    out = _sweep_dir(out_dir)
    results = _read(out / RESULTS_FILE, RESULT_COLUMNS)
    return SweepTables(results, _examples_of(out, results), load_checks(out), _read(out / PLAN_FILE, PLAN_COLUMNS))


def _read(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """One of a sweep's tables, refused in one line when damaged (``runtime.read_table``)."""
    return read_table(path, columns, REQUIRED_COLUMNS[path.name], REBUILD)


def _examples_of(out: Path, results: pd.DataFrame) -> pd.DataFrame:
    """The per-example outcomes of every cell in ``results``, in its order.

    ``examples.csv`` is written when a sweep ends or stops (``CellStore.write_examples``), ``results.csv`` after
    every cell, so a sweep still running, or killed, has cells the first lacks. Those are read from their cell
    files, the record, so that a report on such a sweep never pairs a cell's row with missing outcomes (its
    per-image worst cases would silently leave the cell out).
    """
    examples = _read(out / EXAMPLES_FILE, EXAMPLE_COLUMNS)
    wanted = [str(cell_id) for cell_id in results["cell_id"]]
    have = dict(tuple(examples.groupby("cell_id", sort=False))) if not examples.empty else {}
    if set(wanted) <= set(have):
        return examples
    frames = []
    for cell_id in wanted:
        if cell_id not in have:
            path = out / CELLS_DIR / f"{cell_id}.examples.csv"
            if not path.is_file():
                raise SweepError(f"{out}: cell {cell_id} has a result but no per-example file ({path.name}); "
                                 f"resume the sweep to recompute it, or rerun it into a new --out")
        frames.append(have[cell_id] if cell_id in have else read_table(
            path, EXAMPLE_COLUMNS, REQUIRED_COLUMNS[EXAMPLES_FILE], "delete this cell's files and resume the sweep"))
    return pd.concat(frames, ignore_index=True) if frames else examples


def load_checks(out_dir: str | Path) -> pd.DataFrame:
    """The checks table of a sweep directory (empty until the sweep ends or stops)."""
    return _read(Path(out_dir) / CHECKS_FILE, CHECK_COLUMNS)


def write_plan(out: Path, cells: Sequence[Cell]) -> None:
    """``plan.csv``: every cell of the sweep as planned (a resumed sweep that grew rewrites it)."""
    plan = pd.DataFrame([{"cell_id": cell.cell_id, "model": cell.model, "label": cell.label,
                          "norm": get_attack(cell.attack).norm.value, "eps": cell.eps} for cell in cells],
                        columns=PLAN_COLUMNS)
    atomic_write(out / PLAN_FILE, lambda path: plan.to_csv(path, index=False))


def write_checks(out: Path, checks: pd.DataFrame) -> None:
    """``checks.csv`` and ``checks.json``: the sweep's self-checks, written when it ends or stops."""
    atomic_write(out / CHECKS_FILE, lambda path: checks.to_csv(path, index=False))
    atomic_write_text(out / "checks.json", checks.to_json(orient="records", indent=2) + "\n")


def read_sweep_file(out_dir: str | Path) -> dict[str, Any]:
    """``sweep.json`` as written: the ``request``, the versions and command line, the suites it was extended from."""
    path = _sweep_dir(out_dir) / SWEEP_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SweepError(f"{path} is corrupt ({error}); rerun the sweep into a new --out") from None
    if not isinstance(record, dict) or not isinstance(record.get("request"), dict):
        raise SweepError(f"{path} is corrupt (no request table); rerun the sweep into a new --out")
    return record


def _sweep_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if not holds_sweep(out):
        raise SweepError(f"{out} holds no sweep ({SWEEP_FILE} missing); run `capsrobust sweep` into it first")
    return out


@dataclass(frozen=True)
class SweepRecord:
    """A sweep directory read back for the stages after it: ``sweep.json``'s request and the finished tables."""

    path: Path
    request: dict[str, Any]
    results: pd.DataFrame
    examples: pd.DataFrame
    data_source: str = ""  # what ``load_dataset`` reads the attacked data from again (an npz's full path)

    @property
    def n(self) -> int:
        return int(self.request["n"])

    def adversarials_path(self, cell_id: str) -> Path:
        return adversarials_path(self.path, cell_id)


def read_sweep_record(out_dir: str | Path) -> SweepRecord:
    """The request and the results and examples tables of the sweep in ``out_dir`` (finished cells only)."""
    tables = load_sweep(out_dir)
    file = read_sweep_file(out_dir)
    request = file["request"]
    return SweepRecord(Path(out_dir), request, tables.results, tables.examples,
                       str(file.get("data_source") or request["dataset"]))


def adversarials_path(out_dir: str | Path, cell_id: str) -> Path:
    """Where a cell's adversarials are saved (``save_adversarials``), whether or not they are there."""
    return Path(out_dir) / ADVERSARIALS_DIR / f"{cell_id}.npz"


def has_adversarials(record: SweepRecord) -> bool:
    """Whether the sweep was asked to save its cells' adversarials and has a folder for them."""
    return bool(record.request.get("save_adversarials")) and (record.path / ADVERSARIALS_DIR).is_dir()


def load_adversarials(record: SweepRecord, cell_id: str) -> torch.Tensor:
    """A cell's saved adversarials (n, 1, 28, 28) in the order of the test images."""
    path = record.adversarials_path(cell_id)
    if not path.is_file():
        raise SweepError(f"{path} is missing; resume the sweep with --resume to rewrite cell {cell_id}")
    try:
        with np.load(path) as saved:
            adversarials, indices = saved["adversarials"], saved["indices"]
    except (OSError, ValueError, KeyError) as error:
        raise SweepError(f"{path} is damaged ({error}); delete the cell's files and resume the sweep") from None
    if not np.array_equal(indices, np.arange(record.n)):
        raise SweepError(f"{path} does not hold the sweep's {record.n} images in order; rerun the sweep")
    return torch.from_numpy(np.asarray(adversarials, dtype=np.float32))


def load_sweep_models(
    record: SweepRecord, device: torch.device, in_memory: Sequence[ForeignModel] = ()
) -> dict[str, LoadedCheckpoint]:
    """Every model of the sweep, loaded from the checkpoint it recorded and refused if the weights changed since.

    A model the sweep attacked in memory (``wrap_module``) has no file to load: it comes from ``in_memory``.
    """
    given = {model.name: model for model in in_memory}
    models = {}
    for entry in record.request["models"]:
        try:
            if str(entry["checkpoint"]).startswith(IN_MEMORY_PREFIX):
                if entry["model"] not in given:
                    raise SweepError(f"{entry['model']} was swept in memory (wrap_module) and has no checkpoint; "
                                     f"pass it again: run_detection(..., models=[the wrapped model])")
                loaded = in_memory_checkpoint(given[entry["model"]], device)
            else:
                loaded = load_checkpoint(entry["checkpoint"], device)
        except CheckpointError as error:
            raise SweepError(
                f"cannot load {entry['model']}, recorded by the sweep in {record.path} ({error}); run from the "
                f"directory the sweep ran in (its checkpoint paths are as given then)"
            ) from None
        if entry.get("sha256") and loaded.metadata.get("weights_sha256") != entry["sha256"]:
            raise SweepError(
                f"the weights of {entry['model']} ({entry['checkpoint']}) changed after the sweep in {record.path}; "
                f"restore them or rerun the sweep"
            )
        models[entry["model"]] = loaded
    return models


def load_test_split(
    record: SweepRecord, data_dir: str | Path | None = None, dataset: Dataset | None = None
) -> tuple[Dataset, Split]:
    """The data set and the first ``n`` test images the sweep attacked, checked against the sweep's labels.

    ``dataset`` saves loading it again when the caller holds it already; it must be the one the sweep names.
    """
    if dataset is None:
        dataset = load_dataset(record.data_source or record.request["dataset"], data_dir)
    elif dataset.name != record.request["dataset"]:
        raise SweepError(f"the sweep in {record.path} attacked {record.request['dataset']}, "
                         f"not {dataset.name}; pass that data set")
    split = dataset.test.head(record.n)
    first = record.examples.drop_duplicates("index").sort_values("index")
    if len(split) != record.n or not np.array_equal(first["label"].to_numpy(), split.labels.numpy()[first["index"]]):
        raise SweepError(
            f"the test labels of {dataset.name} differ from those the sweep in {record.path} attacked; "
            f"pass the --data-dir the sweep used"
        )
    return dataset, split


def figures_dir(out_dir: str | Path) -> Path:
    """Where the figures drawn beside a sweep go (reconstructions, tweaks, the gallery)."""
    return Path(out_dir) / FIGURES_DIR


def figure_files(out_dir: str | Path) -> tuple[Path, ...]:
    """The PNG figures drawn beside a sweep, by name."""
    return tuple(sorted(figures_dir(out_dir).glob("*.png")))


LOCK_FILE = ".lock"


@contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for this process: a second sweep writing into the same folder would mix its cells with ours.

    The lock file names host and pid. A lock left by a process that no longer runs on this host is stale and taken
    over; one held by a live process (or by another host, which cannot be checked from here) is refused in one line.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    holder = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _lock_holder(path)
            if other.get("host") == holder["host"] and not _alive(other.get("pid")):
                log.warning("%s: taking over the lock of pid %s, which no longer runs", out, other.get("pid"))
                path.unlink(missing_ok=True)
                continue
            raise SweepError(f"{out} is being written by another capsrobust (pid {other.get('pid')} on "
                             f"{other.get('host')}); wait for it to finish or choose another --out (delete "
                             f"{path} if that process is gone)") from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(holder))
        break
    try:
        yield
    finally:
        if _lock_holder(path) == holder:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # not empty: it holds a sweep now
                out.rmdir()


#: What a sweep writes besides its cell files; removed again when it fails before finishing a cell.
SWEEP_TABLES = ("results.csv", "results.json", "examples.csv", "checks.csv", "checks.json", PLAN_FILE)


@contextmanager
def discarded_unless_started(out: Path) -> Iterator[None]:
    """Run a new sweep in ``out``; should it stop before finishing a cell, remove everything it wrote.

    A sweep that failed at the start (a Ray cluster that is not there, a model refused, Ctrl-C while loading) would
    otherwise leave a ``sweep.json`` behind, and the same command run again would be told to pass ``--resume``.
    A folder that already held a sweep is never touched. Run it inside ``writer_lock``, which also removes the
    folder itself when it made it and it is left empty.
    """
    fresh = not (out / SWEEP_FILE).exists()
    try:
        yield
    except BaseException:
        cells = out / CELLS_DIR
        if fresh and not (cells.is_dir() and any(cells.glob("*.json"))):
            for name in (SWEEP_FILE, *SWEEP_TABLES):
                (out / name).unlink(missing_ok=True)
            for folder in (cells, out / ADVERSARIALS_DIR):
                for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
                    stale.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
            shutil.rmtree(out / TRANSFER_DIR, ignore_errors=True)  # crafted for this sweep's cells only
        raise


def _lock_holder(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _alive(pid: object) -> bool:
    """Whether a process with this pid runs here (a pid we may not signal still runs)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_dir(
    out: Path, request: dict[str, Any], resume: bool, cells: Sequence[Cell], versions: dict[str, str],
    data_source: str = "",
) -> None:
    """Start ``out`` for a new sweep, or check that the sweep there is the one being resumed (or extended).

    ``data_source`` is what ``load_dataset`` reads the data from again (``Dataset.source``), recorded beside the
    request for the stages after the sweep (detection, figures); the request names the data set by its short name.

    A resumed sweep may grow: more attacks, more budgets, more models (a routing variant that trains later joins
    the comparison without redoing the others). Every cell's seed depends only on its own id, so the cells already
    finished are exactly what a fresh run of the grown sweep would compute, and are kept. It may not change or drop
    a cell or a model that already ran (see ``_check_extension`` and ``_check_models_grow``).
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
            if key not in GROWABLE and previous.get(key, DEFAULTS.get(key)) != value:
                raise SweepError(
                    f"cannot resume {out}: it was started with another {key} ({previous.get(key)!r}); "
                    f"resume with the same settings or choose another --out"
                )
        _check_models_grow(out, previous.get("models", []), request["models"])
        grown = [what for what, changed in (("suite", previous.get("suite_sha256") != request["suite_sha256"]),
                                            ("models", previous.get("models") != request["models"])) if changed]
        if not grown:
            return
        _check_extension(out, cells)
        record["extended_from"] = [*record.get("extended_from", []),
                                   {"suite": previous.get("suite"), "suite_sha256": previous.get("suite_sha256"),
                                    "models": [entry.get("model") for entry in previous.get("models", [])]}]
        record["request"] = request
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        log.info("extending %s: its %s changed without touching a finished cell; those are kept", out,
                 " and ".join(grown))
        return
    record = {"request": request, "versions": versions, "command": command_line(),
              **({"data_source": data_source} if data_source else {})}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _check_models_grow(out: Path, before: Sequence[dict[str, Any]], now: Sequence[dict[str, Any]]) -> None:
    """Refuse a resumed sweep that drops a model or attacks one under the same name with other weights."""
    current = {entry["model"]: entry for entry in now}
    for entry in before:
        name = entry.get("model")
        if name not in current:
            raise SweepError(f"cannot resume {out}: it drops the model {name}; a resumed sweep may only add models, "
                             f"attacks and budgets (choose another --out)")
        if current[name] != entry:
            raise SweepError(f"cannot resume {out}: the model {name} is not the one it started with ({entry}, now "
                             f"{current[name]}); restore it or choose another --out")


def _check_extension(out: Path, cells: Sequence[Cell]) -> None:
    """Refuse a grown suite that drops a finished cell or runs one of them with other parameters."""
    planned = {cell.cell_id: cell for cell in cells}
    for finished in sorted((out / CELLS_DIR).glob("*.json")) if (out / CELLS_DIR).is_dir() else ():
        cell_id = finished.stem
        cell = planned.get(cell_id)
        if cell is None:
            raise SweepError(f"cannot resume {out} with this suite: it drops the finished cell {cell_id}; a resumed "
                             f"sweep may only add models, attacks and budgets (choose another --out)")
        try:
            ran_with = json.loads(json.loads(finished.read_text(encoding="utf-8"))["params"])
        except (OSError, ValueError, KeyError) as error:
            raise SweepError(f"cell {cell_id} in {out} is damaged ({error}); delete its files and resume") from None
        if ran_with != dict(cell.params):
            raise SweepError(f"cannot resume {out} with this suite: cell {cell_id} ran with {ran_with}, the suite "
                             f"now says {dict(cell.params)}; a resumed sweep may only add attacks and budgets")


class CellStore:
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
        """Examples first, adversarials next, the row last: the row's file marks the cell as complete.

        The row must hold exactly ``RESULT_COLUMNS`` (a bug otherwise: the tables would drop or blank a column).
        """
        if list(row) != RESULT_COLUMNS:
            missing, extra = sorted(set(RESULT_COLUMNS) - set(row)), sorted(set(row) - set(RESULT_COLUMNS))
            raise ValueError(f"the row of cell {cell.cell_id} is not RESULT_COLUMNS (missing {missing}, extra "
                             f"{extra}, or in another order)")
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

            atomic_write(adversarials_path(self.out, cell.cell_id), write_npz)
        atomic_write_text(self._cells / f"{cell.cell_id}.json", json.dumps(row, indent=1) + "\n")
        self._read(cell.cell_id)  # keep exactly what a resumed sweep would read back
        self.done.add(cell.cell_id)
        self._write_results()

    def robust_flags(self, cell_ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Finished cells' per-example robust flags, in example order (what a cascade continues from): every
        cell's, or those of ``cell_ids`` (one chain's, read before each of its cells: not the whole sweep's)."""
        chosen = self.examples if cell_ids is None else {c: self.examples[c] for c in cell_ids if c in self.examples}
        return {cell_id: frame.sort_values("index")["robust"].to_numpy(dtype=bool) for cell_id, frame in chosen.items()}

    def results(self, cell_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """The finished cells' rows in plan order: every cell's, or those among ``cell_ids``."""
        chosen = None if cell_ids is None else set(cell_ids)
        wanted = self.order if chosen is None else [c for c in self.order if c in chosen]
        return pd.DataFrame([self.rows[c] for c in wanted if c in self.rows], columns=RESULT_COLUMNS)

    def _write_results(self) -> None:
        results = self.results()
        atomic_write(self.out / RESULTS_FILE, lambda path: results.to_csv(path, index=False))
        atomic_write_text(self.out / "results.json", results.to_json(orient="records", indent=1) + "\n")

    def write_examples(self) -> None:
        """examples.csv from the cell files, in plan order.

        Written once when the sweep ends or stops, not after every cell: it holds n rows per cell, so rewriting it
        per cell costs time that grows with the square of the number of cells (15% of a GPU sweep's wall time at
        n = 1,000 before this). The cell files stay the record; a resumed sweep rewrites this table from them.
        """
        frames = [self.examples[c] for c in self.order if c in self.examples]
        examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)
        atomic_write(self.out / EXAMPLES_FILE, lambda path: examples.to_csv(path, index=False))
