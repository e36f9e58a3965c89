"""Reading a report's sources back from disk: sweep directories, their detection tables, figures and training runs.

``capsrobust.reporting.report`` decides what a report says; this module only gathers what it may say it from, and how
paths are shown (``PathDisplay``: never with the machine's absolute prefix). ``inputs_digest`` fingerprints every file a
report reads, so that ``capsrobust benchmark`` can tell whether a report is already up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from capsrobust.detection.pipeline import DETECTION_DIR, DETECTION_FILE, DetectionTables, load_detection
from capsrobust.errors import CapsRobustError, TableError
from capsrobust.evaluation.store import (
    CHECKS_FILE,
    EXAMPLES_FILE,
    RESULTS_FILE,
    SWEEP_FILE,
    SweepTables,
    figure_files,
    holds_sweep,
    load_sweep,
    read_sweep_file,
)
from capsrobust.runtime import read_table


class ReportError(CapsRobustError):
    """A report cannot be built: no result directory, an unknown format, an output folder that is not a report."""


# ----------------------------------------------------------------------------------------------- reading the disk


@dataclass(frozen=True)
class Source:
    """One sweep directory read back from disk, with everything that hangs off it."""

    path: Path  # absolute
    shown: str  # as the report prints it
    record: dict[str, Any]  # sweep.json
    tables: SweepTables
    detection: DetectionTables | None
    runs: pd.DataFrame  # one row per model: the training run behind its checkpoint
    figures: tuple[Path, ...]  # PNGs in figures/
    detection_figures: tuple[Path, ...]  # PNGs in detection/
    inputs: tuple[Path, ...] = field(default=(), compare=False)  # every file read, for the digest


def resolve_result_dir(path: str | Path) -> Path:
    """A sweep directory, or a benchmark directory holding one in ``sweep/``."""
    candidate = Path(path)
    if holds_sweep(candidate):
        return candidate
    if holds_sweep(candidate / "sweep"):
        return candidate / "sweep"
    raise ReportError(f"{candidate} holds no sweep ({SWEEP_FILE} missing); pass a directory written by "
                      f"`capsrobust sweep` or `capsrobust benchmark`")


def read_source(path: str | Path, paths: PathDisplay) -> Source:
    """Read one sweep directory and its detection tables, figures and training runs."""
    directory = resolve_result_dir(path).resolve()
    inputs: list[Path] = [directory / SWEEP_FILE]
    record = read_sweep_file(directory)
    tables = load_sweep(directory)
    if tables.results.empty:
        raise ReportError(f"{paths.show(directory)} has no finished cell yet; run or resume the sweep first")
    inputs += [directory / name for name in (RESULTS_FILE, EXAMPLES_FILE, CHECKS_FILE)]
    detection = None
    detection_dir = directory / DETECTION_DIR
    if (detection_dir / DETECTION_FILE).is_file():  # written last by `capsrobust detect`: the tables are complete
        detection = load_detection(detection_dir)
        inputs += [detection_dir / DETECTION_FILE, *sorted(detection_dir.glob("*.csv"))]
    figures = figure_files(directory)
    detection_figures = tuple(sorted(detection_dir.glob("*.png")))
    runs, run_files = _read_runs(record, directory, paths)
    inputs += [*figures, *detection_figures, *run_files]
    return Source(directory, paths.show(directory), record, tables, detection, runs, figures, detection_figures,
                  tuple(path for path in inputs if path.is_file()))


def _read_runs(record: dict[str, Any], sweep_dir: Path, paths: PathDisplay) -> tuple[pd.DataFrame, list[Path]]:
    """The training run of every model, found from the checkpoint that sweep.json names."""
    rows, files = [], []
    for entry in record.get("request", {}).get("models", []):
        checkpoint = Path(entry.get("checkpoint", ""))
        run_dir = _locate(checkpoint.parent, sweep_dir, paths.base)
        row: dict[str, Any] = {"model": entry.get("model"), "run": paths.show(run_dir or checkpoint.parent),
                               "weights_sha256": str(entry.get("sha256") or "")[:12]}
        if run_dir is None or not (run_dir / "run.json").is_file():
            rows.append({**row, "found": False})
            continue
        try:
            run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
            metrics = read_table(run_dir / "metrics.csv", required=["epoch", "val_accuracy", "seconds",
                                                                     "images_per_second"])
        except (OSError, ValueError, TableError):  # a damaged run leaves its training row empty, not the whole report
            rows.append({**row, "found": False})
            continue
        files.append(run_dir / "run.json")
        if not metrics.empty:
            files.append(run_dir / "metrics.csv")
        adversarial = run.get("adversarial")  # adversarial runs pick `best` by robust validation accuracy
        chosen = "robust_val_accuracy" if adversarial and "robust_val_accuracy" in metrics else "val_accuracy"
        best = metrics.loc[metrics[chosen].idxmax()] if not metrics.empty else None
        recipe = run.get("recipe", {})
        rows.append({
            **row, "found": True, "recipe": recipe.get("name"), "architecture": recipe.get("architecture"),
            "dataset": run.get("dataset"), "epochs": len(metrics),
            "best_val_accuracy": None if best is None else float(best["val_accuracy"]),
            "best_epoch": None if best is None else int(best["epoch"]),
            "train_seconds": float(metrics["seconds"].sum()) if not metrics.empty else None,
            "images_per_second": float(metrics["images_per_second"].mean()) if not metrics.empty else None,
            "device": run.get("device_name") or run.get("device"), "seed": run.get("seed"),
            "batch_size": run.get("batch_size"), "versions": json.dumps(run.get("versions", {}), sort_keys=True),
            "command": paths.command(str(run.get("command", ""))),
            "training_attack": json.dumps(adversarial, sort_keys=True) if adversarial else "",
            "best_robust_val_accuracy": None if best is None or chosen == "val_accuracy"
            else float(best["robust_val_accuracy"]),
        })
    return pd.DataFrame(rows), files


def _locate(path: Path, sweep_dir: Path, base: Path) -> Path | None:
    """A run directory recorded as absolute, or relative to wherever the sweep was started from."""
    if path.is_absolute():
        return path if path.is_dir() else None
    for root in (base, sweep_dir.parent, sweep_dir.parent.parent, sweep_dir):
        if (root / path).is_dir():
            return (root / path).resolve()
    return None


def inputs_digest(result_dirs: Sequence[str | Path]) -> str:
    """SHA-256 over every file a report of ``result_dirs`` reads: equal digests mean the same numbers and figures."""
    paths = PathDisplay(Path.cwd())
    return sources_digest([read_source(result_dir, paths) for result_dir in result_dirs])


def sources_digest(sources: Sequence[Source]) -> str:
    """Names (relative to their sweep directory) and contents of every input file, in a fixed order."""
    digest = hashlib.sha256()
    for source in sources:
        for path in source.inputs:
            digest.update(os.path.relpath(path, source.path).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------ paths


class PathDisplay:
    """Prints paths relative to one base directory, never with the machine's absolute prefix."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()

    @classmethod
    def for_report(cls, target: Path, sources: Sequence[Path]) -> PathDisplay:
        """The working directory when it holds the report and its sources, else their deepest common directory."""
        cwd = Path.cwd().resolve()
        places = [Path(os.path.abspath(path)) for path in (target, *sources)]
        if all(place == cwd or cwd in place.parents for place in places):
            return cls(cwd)
        common = Path(os.path.commonpath(places))
        return cls(common if common != Path(common.anchor) else cwd)

    def show(self, path: str | Path) -> str:
        candidate = Path(path)
        absolute = Path(os.path.abspath(candidate if candidate.is_absolute() else self.base / candidate))
        if absolute == self.base or self.base in absolute.parents:
            return absolute.relative_to(self.base).as_posix() or "."
        return "…/" + "/".join(absolute.parts[-2:])

    def command(self, text: str) -> str:
        """A recorded command line with every absolute path in it shown as ``show`` shows paths."""
        if not text:
            return ""
        try:
            tokens = shlex.split(text)
        except ValueError:
            return re.sub(r"(?<![\w.])/[^\s'\"]+", lambda m: self.show(m.group(0)), text)
        shown = []
        for token in tokens:
            option, equals, value = token.partition("=")
            if token.startswith("/"):
                shown.append(self.show(token))
            elif equals and value.startswith("/"):
                shown.append(f"{option}={self.show(value)}")
            else:
                shown.append(token)
        return shlex.join(shown)
