"""The detector over a sweep: tables and their contract, thresholds, skipped models, figures, gallery and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from capsrobust.cli import main
from capsrobust.detection.detector import Distance, reconstruction_distances
from capsrobust.detection.pipeline import (
    DETECTION_COLUMNS,
    DETECTION_EXAMPLE_COLUMNS,
    THRESHOLD_COLUMNS,
    DetectionError,
    load_detection,
    run_detection,
)
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.figures.capsules import save_figure
from capsrobust.figures.detection import write_detection_figures
from capsrobust.figures.gallery import GalleryExample, GalleryRow, gallery_figure, gallery_rows, write_gallery
from capsrobust.models.checkpoints import load_checkpoint

SUITE = '[suite]\nname = "detect"\nn = 40\n[[attack]]\nname = "fgsm"\neps = [0.3]\n'


@pytest.fixture(scope="module")
def detected(trained_runs, recon_run, mnist5k, tmp_path_factory):
    """An fgsm sweep of capsnet-tiny, cnn-tiny and cnn-recon-tiny with saved adversarials, and its detection."""
    root = tmp_path_factory.mktemp("detection")
    suite = root / "detect.toml"
    suite.write_text(SUITE, encoding="utf-8")
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"], recon_run]
    run_sweep(runs, suite, mnist5k, out_dir=root / "sweep", backend="art", device="cpu", save_adversarials=True,
              progress=False)
    table = run_detection(root / "sweep", device="cpu", dataset=mnist5k)
    return root / "sweep", table


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def test_tables_follow_the_documented_contract(detected, trained_runs, recon_run):
    sweep, table = detected
    out = sweep / "detection"
    for name in ("detection.csv", "detection.json", "detection_examples.csv", "thresholds.csv"):
        assert (out / name).is_file(), name
    tables = load_detection(out)
    assert list(tables.detection.columns) == DETECTION_COLUMNS
    assert list(tables.examples.columns) == DETECTION_EXAMPLE_COLUMNS
    assert list(tables.thresholds.columns) == THRESHOLD_COLUMNS
    pd.testing.assert_frame_equal(tables.detection, pd.read_csv(out / "detection.csv"))
    assert list(table.columns) == DETECTION_COLUMNS and len(table) == 2  # one fgsm cell per detecting model
    capsnet, cnn, recon = trained_runs["capsnet-tiny"].name, trained_runs["cnn-tiny"].name, recon_run.name
    assert set(tables.detection["model"]) == {capsnet, recon}
    assert tables.skipped.to_dict(orient="records") == [
        {"model": cnn, "reason": "cnn has no class-conditional decoder (train a capsnet or cnn-recon recipe to "
                                 "measure the detector)"}]
    record = json.loads((out / "detection.json").read_text(encoding="utf-8"))
    assert record["skipped"][0]["model"] == cnn and len(record["rows"]) == 2
    assert (tables.detection["percentile"] == 95).all() and (tables.detection["distance"] == "l2").all()
    assert tables.detection["versions"].str.contains("scikit-learn").all()


def test_threshold_is_the_percentile_of_clean_validation_scores(detected, trained_runs, mnist5k):
    sweep, _ = detected
    tables = load_detection(sweep / "detection")
    capsnet = trained_runs["capsnet-tiny"]
    validation = reconstruction_distances(load_checkpoint(capsnet).model, mnist5k.val.images)
    row = tables.thresholds.set_index("model").loc[capsnet.name]
    assert row["threshold"] == pytest.approx(np.percentile(validation, 95))
    assert row["n_calibration"] == len(mnist5k.val) == 500
    assert (validation > row["threshold"]).mean() == pytest.approx(0.05, abs=0.002)


def test_rows_agree_with_their_examples_and_with_the_sweep(detected):
    sweep, _ = detected
    tables, swept = load_detection(sweep / "detection"), load_sweep(sweep)
    for _, row in tables.detection.iterrows():
        examples = tables.examples[tables.examples["cell_id"] == row["cell_id"]]
        assert len(examples) == row["n"] > 0
        assert row["undetected_success_rate"] <= row["attack_success_rate"]
        assert row["undetected_success_rate"] == pytest.approx((examples["success"] & ~examples["flagged"]).mean())
        assert row["false_positive_rate"] == pytest.approx((examples["clean_score"] > row["threshold"]).mean())
        assert (examples["flagged"] == (examples["adv_score"] > row["threshold"])).all()
        result = swept.results.set_index("cell_id").loc[row["cell_id"]]
        assert row["attack_success_rate"] == pytest.approx(result["attack_success_rate"])
        assert row["n"] == result["n_clean_correct"] and row["seed"] == result["seed"]
        assert 0.0 <= row["auc"] <= 1.0


def test_other_percentile_and_distance_and_no_recomputation(detected, mnist5k, tmp_path):
    sweep, _ = detected
    table = run_detection(sweep, out_dir=tmp_path / "l1", percentile=80, distance="l1", device="cpu",
                          dataset=mnist5k)
    tables = load_detection(tmp_path / "l1")
    assert (table["percentile"] == 80).all() and (tables.thresholds["distance"] == Distance.L1.value).all()
    assert (tables.thresholds["clean_test_fpr"] > 0.1).all()  # 20 % of clean validation images flagged
    stamp = (tmp_path / "l1" / "detection.json").stat().st_mtime_ns
    again = run_detection(sweep, out_dir=tmp_path / "l1", percentile=80, distance="l1", device="cpu",
                          dataset=mnist5k)
    assert (tmp_path / "l1" / "detection.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again, tables.detection)
    with pytest.raises(DetectionError, match="unknown distance 'cosine'"):
        run_detection(sweep, distance="cosine")


def test_histograms_and_roc_are_written_non_blank_and_identical(detected, tmp_path):
    sweep, _ = detected
    copies = []
    for name in ("a", "b"):
        shutil.copytree(sweep / "detection", tmp_path / name)
        copies.append(write_detection_figures(tmp_path / name))
    assert [path.name for path in copies[0]] == ["detection_histograms.png", "detection_roc.png"]
    for first, second in zip(*copies, strict=True):
        assert first.read_bytes() == second.read_bytes()
        assert _pixels(first).std() > 10


def test_gallery_is_non_blank_identical_for_a_seed_and_uses_the_cnn_recon_for_cnn_rows(
    detected, trained_runs, recon_run, mnist5k, tmp_path
):
    sweep, _ = detected
    paths = [write_gallery(sweep, tmp_path / f"{name}.png", n_per_row=2, seed=5, device="cpu", dataset=mnist5k)
             for name in "ab"]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert _pixels(paths[0]).std() > 10
    rows = {row.model: row for row in gallery_rows(sweep, n_per_row=2, seed=5, device="cpu", dataset=mnist5k)}
    other = gallery_rows(sweep, n_per_row=2, seed=6, device="cpu", dataset=mnist5k)
    assert [e.index for r in other for e in r.examples] != [e.index for r in rows.values() for e in r.examples]
    assert rows[trained_runs["cnn-tiny"].name].reconstruction_source == recon_run.name
    assert rows[trained_runs["capsnet-tiny"].name].score_name == "capsule lengths"
    for row in rows.values():
        assert len(row.examples) == 2
        assert all(example.flagged is not None and example.reconstruction is not None for example in row.examples)


def test_gallery_row_without_any_decoder_is_drawn_with_a_note(tmp_path):
    image = np.zeros((1, 28, 28), dtype=np.float32)
    image[0, 10:18, 10:18] = 1.0
    example = GalleryExample(index=0, label=3, clean=image, adversarial=np.clip(image + 0.2, 0, 1), clean_pred=3,
                             adv_pred=5, clean_scores=np.full(10, 0.1), adv_scores=np.full(10, 0.1),
                             reconstruction=None, distance=None, flagged=None)
    row = GalleryRow(model="cnn", label="fgsm", backend="art", eps=0.2, score_name="softmax",
                     reconstruction_source=None, examples=(example,))
    path = save_figure(gallery_figure([row], tuple(str(i) for i in range(10))), tmp_path / "g.png")
    assert _pixels(path).std() > 10


def test_cli_detect_prints_tables_and_writes_figures(detected, tmp_path):
    sweep, _ = detected
    out = sweep / "detection"  # up to date: the CLI reads the fixture's tables back and draws the figures
    result = CliRunner().invoke(main, ["detect", str(sweep), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "95th percentile" in result.output and "undetected_success_rate" in result.output
    assert "skipped" in result.output and "no class-conditional decoder" in result.output
    assert (out / "detection_histograms.png").is_file() and (out / "detection_roc.png").is_file()
    shown = CliRunner().invoke(main, ["gallery", str(sweep), "--out", str(tmp_path / "g.png"), "--attack", "fgsm",
                                      "--n-per-row", "1", "--device", "cpu"])
    assert shown.exit_code == 0, shown.output and (tmp_path / "g.png").is_file()


@pytest.fixture(scope="module")
def cnn_only(trained_runs, mnist5k, tmp_path_factory):
    """Two small sweeps of cnn-tiny alone: one without saved adversarials, one with."""
    root = tmp_path_factory.mktemp("cnn-only")
    suite = root / "tiny.toml"
    suite.write_text('[suite]\nn = 8\n[[attack]]\nname = "fgsm"\neps = [0.3]\n', encoding="utf-8")
    for name, save in (("plain", False), ("saved", True)):
        run_sweep([trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=root / name, device="cpu",
                  save_adversarials=save, progress=False)
    return root


@pytest.mark.parametrize(("sweep", "message"), [
    ("plain", "has no saved adversarial examples; rerun the sweep with --save-adversarials"),
    ("saved", "can reconstruct (cnn-tiny0 (cnn)); add a capsnet or cnn-recon run to the sweep"),
])
def test_cli_refuses_a_sweep_it_cannot_score_in_one_line(cnn_only, sweep, message):
    result = CliRunner().invoke(main, ["detect", str(cnn_only / sweep), "--device", "cpu"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and message in result.output
    assert not (cnn_only / sweep / "detection").exists()


def test_a_damaged_detection_table_is_refused_in_one_line(detected, tmp_path):
    from capsrobust.errors import TableError

    sweep, _ = detected
    copy = tmp_path / "detection"
    shutil.copytree(sweep / "detection", copy)
    (copy / "thresholds.csv").write_text("model,distance\ncapsnet-tiny,l2\n", encoding="utf-8")
    with pytest.raises(TableError, match=r"thresholds.csv is damaged \(no column 'percentile'\); run `capsrobust "
                                         r"detect` again$"):
        load_detection(copy)
