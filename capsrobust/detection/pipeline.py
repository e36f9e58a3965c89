"""The reconstruction-error detector measured on a sweep's saved adversarial examples.

``run_detection`` reads a sweep directory run with ``save_adversarials`` (through ``capsrobust.evaluation.store``,
its owner: the request, tables, models, test images and adversarials), and for every model of the sweep that can
reconstruct class-conditionally (CapsNet, CNN+R):

1. calibrates the threshold on the model's clean **validation** images of the sweep's data set (a percentile of
   their scores, ``capsrobust.detection.detector.calibrate``), so that the false-positive rate is set on images the
   evaluation never sees;
2. scores the clean test images the sweep attacked and every cell's saved adversarials;
3. writes one tidy row per cell with the detector's metrics (``capsrobust.detection.detector.detection_outcome``).

Models without a decoder are listed as skipped, with the reason, never silently dropped.

Which inputs count: as in the sweep's ``attack_success_rate``, the *attacked inputs* of a cell are the test images
the model classifies correctly when clean (an image it already gets wrong cannot be broken) and, in a cascade, that
the cell attacked (not those an earlier attack had already broken); ``n`` counts them. A
success is the sweep's own (``examples.csv``: misclassified, and for a minimisation attack within the threshold),
so ``attack_success_rate`` here equals the sweep's. The clean scores of a row are those of the same attacked images.

Output, ``<sweep_dir>/detection/`` by default, every file written atomically (these names and columns are a
contract: reports are built from them)::

    detection.csv            one row per cell: DETECTION_COLUMNS
    detection_examples.csv   one row per attacked input of each cell: DETECTION_EXAMPLE_COLUMNS
    thresholds.csv           one row per detecting model: THRESHOLD_COLUMNS (clean_test_fpr over all n test images)
    detection.json           written last: the request, inputs digest, versions, command line, skipped models
                             (model, reason), thresholds and rows

Running again with the same settings on an unchanged sweep reads the tables back instead of recomputing them (the
inputs digest in ``detection.json`` covers the settings, the sweep's tables, its adversarials and the checkpoint
hashes it recorded).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from capsrobust.data import Dataset
from capsrobust.detection.detector import (
    DetectionError,
    Distance,
    Threshold,
    calibrate,
    detection_outcome,
    reconstruction_distances,
)
from capsrobust.errors import parse_choice
from capsrobust.evaluation.store import (
    EXAMPLES_FILE,
    RESULTS_FILE,
    SweepRecord,
    has_adversarials,
    load_adversarials,
    load_sweep_models,
    load_test_split,
    read_sweep_record,
)
from capsrobust.models.base import CapsRobustModel
from capsrobust.models.checkpoints import LoadedCheckpoint
from capsrobust.models.foreign import ForeignModel
from capsrobust.runtime import (
    atomic_write,
    atomic_write_text,
    command_line,
    file_sha256,
    read_table,
    resolve_device,
    versions,
)

log = logging.getLogger(__name__)

DETECTION_DIR = "detection"
DETECTION_FILE = "detection.json"
DETECTION_COLUMNS = [
    "cell_id", "model", "attack", "label", "backend", "norm", "eps", "objective_used", "n", "auc", "auc_all",
    "threshold", "percentile", "distance", "false_positive_rate", "true_positive_rate", "attack_success_rate",
    "undetected_success_rate", "seed", "versions", "command",
]
DETECTION_EXAMPLE_COLUMNS = ["cell_id", "model", "index", "label", "clean_score", "adv_score", "success", "flagged"]
THRESHOLD_COLUMNS = ["model", "percentile", "distance", "threshold", "n_calibration", "clean_test_fpr"]
SKIPPED_COLUMNS = ["model", "reason"]
TABLE_FILES = {"detection": "detection.csv", "examples": "detection_examples.csv", "thresholds": "thresholds.csv"}


@dataclass(frozen=True)
class DetectionTables:
    """What a detection directory holds, read back from its files (reports are built from these)."""

    detection: pd.DataFrame
    examples: pd.DataFrame
    thresholds: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))


def read_sweep(sweep_dir: str | Path) -> SweepRecord:
    """The sweep in ``sweep_dir``; refuses a sweep without saved adversarials or without finished cells."""
    record = read_sweep_record(sweep_dir)  # SweepError when there is no sweep at all
    if not has_adversarials(record):
        raise DetectionError(
            f"{record.path} has no saved adversarial examples; rerun the sweep with --save-adversarials into a new "
            f"--out"
        )
    if record.results.empty:
        raise DetectionError(f"{record.path} has no finished cells; run or resume the sweep first")
    return record


def run_detection(
    sweep_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    percentile: float = 95.0,
    distance: str | Distance = "l2",
    device: str | torch.device = "auto",
    data_dir: str | Path | None = None,
    batch_size: int = 500,
    force: bool = False,
    dataset: Dataset | None = None,
    models: Sequence[ForeignModel] = (),
) -> pd.DataFrame:
    """Score the detector on every cell of the sweep in ``sweep_dir``; returns the detection table.

    ``percentile`` of the clean validation scores is the threshold (95: 5 % of clean validation images flagged);
    ``distance`` is ``l2`` (DARCCC's) or ``l1``. Tables go to ``out_dir`` (default ``<sweep_dir>/detection``);
    read them with ``load_detection``. When that directory already holds the tables for the same settings and
    inputs they are read back, not recomputed, unless ``force``. ``dataset``: the sweep's data set when the caller
    has it loaded already (default: loaded by the name in ``sweep.json``, from ``data_dir`` where it needs files).
    ``models``: the wrapped modules (``capsrobust.models.wrap_module``) the sweep attacked in memory.
    Raises ``DetectionError`` when the sweep saved no adversarials or has no model that can reconstruct.
    """
    chosen = parse_choice(Distance, distance, DetectionError, "distance")
    if not 0.0 < percentile < 100.0:
        raise DetectionError(f"percentile must lie in (0, 100), got {percentile}")
    if batch_size < 1:
        raise DetectionError(f"batch size must be ≥ 1, got {batch_size}")
    record = read_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else record.path / DETECTION_DIR
    request = {"sweep": str(record.path), "percentile": float(percentile), "distance": chosen.value,
               "dataset": record.request["dataset"], "n": record.n}
    digest = _inputs_digest(record, request)
    if not force and _up_to_date(out, digest):
        log.info("detection tables in %s are up to date; nothing recomputed", out)
        return load_detection(out).detection

    torch_device = resolve_device(device) if isinstance(device, str) else device
    models = load_sweep_models(record, torch_device, models)
    skipped = _without_decoder(record, models)
    dataset, test = load_test_split(record, data_dir, dataset)
    context = {"versions": json.dumps(_library_versions(), sort_keys=True), "command": command_line()}
    scoring = _Scoring(record, dataset.val.images, test.images, chosen, percentile, torch_device, batch_size, context)

    rows: list[dict[str, Any]] = []
    example_frames: list[pd.DataFrame] = []
    thresholds: list[dict[str, Any]] = []
    for label, loaded in models.items():
        if loaded.model.can_reconstruct:
            threshold_row, model_rows, model_examples = scoring.score_model(label, loaded.model)
            thresholds.append(threshold_row)
            rows += model_rows
            example_frames += model_examples

    tables = DetectionTables(
        detection=pd.DataFrame(rows, columns=DETECTION_COLUMNS),
        examples=(pd.concat(example_frames, ignore_index=True) if example_frames
                  else pd.DataFrame(columns=DETECTION_EXAMPLE_COLUMNS)),
        thresholds=pd.DataFrame(thresholds, columns=THRESHOLD_COLUMNS),
        skipped=pd.DataFrame(skipped, columns=SKIPPED_COLUMNS),
    )
    _write(out, tables, {"request": request, "inputs_sha256": digest, **context,
                         "versions": json.loads(context["versions"])})
    return tables.detection


def _without_decoder(record: SweepRecord, models: dict[str, LoadedCheckpoint]) -> list[dict[str, str]]:
    """The skipped-models rows: every model that cannot reconstruct; refuses a sweep where none can."""
    skipped = [
        {"model": label, "reason": f"{loaded.recipe.architecture} has no class-conditional decoder "
                                   f"(train a capsnet or cnn-recon recipe to measure the detector)"}
        for label, loaded in models.items() if not loaded.model.can_reconstruct
    ]
    if len(skipped) == len(models):
        names = ", ".join(f"{entry['model']} ({models[entry['model']].recipe.architecture})" for entry in skipped)
        raise DetectionError(
            f"no model of the sweep in {record.path} can reconstruct ({names}); add a capsnet or cnn-recon run "
            f"to the sweep"
        )
    return skipped


@dataclass(frozen=True)
class _Scoring:
    """What scoring one model needs: the sweep, the calibration and test images, and the detector's settings."""

    record: SweepRecord
    calibration: torch.Tensor  # clean validation images: the threshold's percentile is taken over them
    test: torch.Tensor  # the sweep's n clean test images
    distance: Distance
    percentile: float
    device: torch.device
    batch_size: int
    context: dict[str, Any]

    def distances(self, model: CapsRobustModel, images: torch.Tensor) -> np.ndarray:
        return reconstruction_distances(model, images, self.distance, self.device, self.batch_size)

    def score_model(
        self, label: str, model: CapsRobustModel
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[pd.DataFrame]]:
        """The model's threshold row, then one detection row and one per-example frame per attack cell."""
        threshold = calibrate(self.distances(model, self.calibration), self.percentile, self.distance)
        clean_scores = self.distances(model, self.test)  # (n,)
        threshold_row = {
            "model": label, "percentile": float(self.percentile), "distance": self.distance.value,
            "threshold": threshold.value, "n_calibration": threshold.n_calibration,
            "clean_test_fpr": float(threshold.flag(clean_scores).mean()),
        }
        rows, frames = [], []
        for _, cell in self.record.results[self.record.results["model"] == label].iterrows():
            adv_scores = self.distances(model, load_adversarials(self.record, cell["cell_id"]))
            row, examples = _score_cell(cell, self.record, clean_scores, adv_scores, threshold, self.context)
            rows.append(row)
            frames.append(examples)
        return threshold_row, rows, frames


def load_detection(out_dir: str | Path) -> DetectionTables:
    """The detection, per-example and thresholds tables (and the skipped models) of a detection directory."""
    out = Path(out_dir)
    if not (out / DETECTION_FILE).is_file():
        raise DetectionError(f"{out} holds no detection tables ({DETECTION_FILE} missing); run `capsrobust detect`")
    try:
        record = json.loads((out / DETECTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DetectionError(f"{out / DETECTION_FILE} is corrupt ({error}); run `capsrobust detect` again") from None
    fix = "run `capsrobust detect` again"
    return DetectionTables(
        detection=read_table(out / TABLE_FILES["detection"], DETECTION_COLUMNS,
                             ["cell_id", "model", "norm", "eps", "auc", "undetected_success_rate"], fix),
        examples=read_table(out / TABLE_FILES["examples"], DETECTION_EXAMPLE_COLUMNS, DETECTION_EXAMPLE_COLUMNS, fix),
        thresholds=read_table(out / TABLE_FILES["thresholds"], THRESHOLD_COLUMNS, THRESHOLD_COLUMNS, fix),
        skipped=pd.DataFrame(record.get("skipped", []), columns=SKIPPED_COLUMNS),
    )


def _score_cell(
    cell: pd.Series, record: SweepRecord, clean_scores: np.ndarray, adv_scores: np.ndarray, threshold: Threshold,
    context: dict[str, str],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The detection row and per-example rows of one cell, over its attacked (clean-correct) inputs."""
    outcomes = record.examples[record.examples["cell_id"] == cell["cell_id"]].sort_values("index")
    if len(outcomes) != record.n:
        raise DetectionError(f"examples.csv of {record.path} lacks rows of cell {cell['cell_id']}; resume the sweep")
    index = outcomes["index"].to_numpy()
    attacked = (outcomes["clean_pred"] == outcomes["label"]).to_numpy()  # (n,) the inputs the attack could break
    if "attacked" in outcomes:  # a cascade attacked only what earlier attacks left; the rest kept their clean image
        attacked = attacked & outcomes["attacked"].astype(bool).to_numpy()
    success = outcomes["success"].astype(bool).to_numpy()
    outcome = detection_outcome(clean_scores[index][attacked], adv_scores[index][attacked], success[attacked],
                                threshold)
    row = {
        "cell_id": cell["cell_id"], "model": cell["model"], "attack": cell["attack"], "label": cell["label"],
        "backend": cell["backend"], "norm": cell["norm"], "eps": float(cell["eps"]),
        "objective_used": cell["objective_used"], "n": outcome.n, "auc": outcome.auc, "auc_all": outcome.auc_all,
        "threshold": outcome.threshold, "percentile": threshold.percentile, "distance": threshold.distance.value,
        "false_positive_rate": outcome.false_positive_rate, "true_positive_rate": outcome.true_positive_rate,
        "attack_success_rate": outcome.attack_success_rate,
        "undetected_success_rate": outcome.undetected_success_rate, "seed": int(cell["seed"]),
        "versions": context["versions"], "command": context["command"],
    }
    examples = pd.DataFrame({
        "cell_id": cell["cell_id"], "model": cell["model"], "index": index[attacked],
        "label": outcomes["label"].to_numpy()[attacked], "clean_score": clean_scores[index][attacked],
        "adv_score": adv_scores[index][attacked], "success": success[attacked],
        "flagged": threshold.flag(adv_scores[index][attacked]),
    }, columns=DETECTION_EXAMPLE_COLUMNS)
    return row, examples


def _library_versions() -> dict[str, str]:
    import sklearn

    return {**versions(), "scikit-learn": sklearn.__version__}


def _inputs_digest(record: SweepRecord, request: dict[str, Any]) -> str:
    """SHA-256 of the settings, the sweep's request and tables, every saved adversarial file and the checkpoints."""
    digest = hashlib.sha256(json.dumps([request, record.request], sort_keys=True).encode())
    for name in (RESULTS_FILE, EXAMPLES_FILE):
        digest.update(file_sha256(record.path / name).encode())
    for cell_id in record.results["cell_id"]:
        path = record.adversarials_path(cell_id)
        digest.update(f"{cell_id}:{file_sha256(path) if path.is_file() else 'missing'}".encode())
    return digest.hexdigest()


def _up_to_date(out: Path, digest: str) -> bool:
    if not all((out / name).is_file() for name in [DETECTION_FILE, *TABLE_FILES.values()]):
        return False
    try:
        return json.loads((out / DETECTION_FILE).read_text(encoding="utf-8")).get("inputs_sha256") == digest
    except (OSError, ValueError):
        return False


def _write(out: Path, tables: DetectionTables, provenance: dict[str, Any]) -> None:
    """The three tables first, ``detection.json`` last: its digest marks the tables as complete."""
    (out / DETECTION_FILE).unlink(missing_ok=True)
    for key, name in TABLE_FILES.items():
        frame: pd.DataFrame = getattr(tables, key)
        atomic_write(out / name, lambda path, frame=frame: frame.to_csv(path, index=False))
    record = {
        **provenance,
        "skipped": tables.skipped.to_dict(orient="records"),
        "thresholds": tables.thresholds.to_dict(orient="records"),
        "rows": json.loads(tables.detection.to_json(orient="records")),
    }
    atomic_write_text(out / DETECTION_FILE, json.dumps(record, indent=1) + "\n")
