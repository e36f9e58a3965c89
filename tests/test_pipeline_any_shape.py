"""Data of any shape end to end: a user's Keras-style .npz of colour images through the CLI, and grey arrays with
H ≠ W and K ≠ 10 through the Python API, each load → train a tiny recipe → sweep → detect → report.

The synthetic tasks cannot be solved by a pipeline that mixes up axes: the colour task's label is the channel a
bright square lights (so channel order matters), the grey task's the quadrant it sits in (so rows and columns do).
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from capsrobust.attacks.suites import suite_from_dict
from capsrobust.cli import main
from capsrobust.data import dataset_from_arrays
from capsrobust.detection import run_detection
from capsrobust.evaluation import evaluate, load_sweep, run_sweep
from capsrobust.models import load_checkpoint
from capsrobust.reporting import build_report
from capsrobust.training import TrainSettings, train
from tests.conftest import recipe

pytestmark = pytest.mark.slow


def synthetic(channels: int, height: int, width: int, classes: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """uint8 noise images N×H×W×C (N×H×W for one channel, as Keras writes MNIST) with one bright 5 × 5 square."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, (n, height, width, channels)).astype(np.uint8)
    for k, label in enumerate(labels):
        if channels > 1:  # the label is the channel the square lights, anywhere in the image
            top, left, channel = rng.integers(0, height - 5), rng.integers(0, width - 5), label
        else:  # the label is the quadrant the square sits in
            top = rng.integers(0, height // 2 - 5) + height // 2 * (label // 2)
            left = rng.integers(0, width // 2 - 5) + width // 2 * (label % 2)
            channel = 0
        images[k, top : top + 5, left : left + 5, channel] = 230
    return (images if channels > 1 else images[..., 0]), labels


TINY_SUITE = {"suite": {"name": "shapes", "n": 20, "double_steps_check": False},
              "attack": [{"name": "fgsm", "eps": [0.0, 0.1]},
                         {"name": "pgd-linf", "eps": [0.1], "params": {"steps": 3}},
                         {"name": "vote-pgd-linf", "eps": [0.1], "params": {"steps": 3}},
                         {"name": "pgd-linf-recon", "eps": [0.1], "params": {"steps": 3}}]}


def test_a_users_colour_npz_goes_through_every_command(tmp_path, monkeypatch):
    x_train, y_train = synthetic(3, 20, 24, 3, 900, seed=0)
    x_test, y_test = synthetic(3, 20, 24, 3, 200, seed=1)
    np.savez(tmp_path / "colour.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (tmp_path / "shapes.toml").write_text(
        '[suite]\nname = "shapes"\nn = 20\n\n[[attack]]\nname = "fgsm"\neps = [0.0, 0.1]\n\n'
        '[[attack]]\nname = "vote-pgd-linf"\neps = [0.1]\n[attack.params]\nsteps = 3\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    data = ["--data", f"npz:{tmp_path / 'colour.npz'}"]

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    trained = run("train", "capsnet-tiny", *data, "--out", "run", "--batch-size", "20", "--no-progress",
                  "--device", "cpu")
    assert "best validation accuracy" in trained
    record = load_checkpoint(tmp_path / "run")
    assert record.model.input_shape == (3, 20, 24) and record.model.num_classes == 3
    accuracy = float(run("evaluate", "run", *data, "--json").split('"accuracy": ')[1].split(",")[0])
    assert accuracy >= 0.9
    run("sweep", "run", "--suite", "shapes.toml", *data, "--save-adversarials", "--out", "sweep", "--no-progress")
    assert load_sweep(tmp_path / "sweep").results["clean_accuracy"].min() >= 0.85
    run("detect", "sweep")  # reloads the npz the sweep recorded, for the clean validation images
    run("reconstruct", "run", *data, "--out", "reconstructions.png")
    run("gallery", "sweep", "--out", "gallery.png")
    run("report", "sweep", "--out", "report")
    assert (tmp_path / "report" / "report.md").read_text().count("npz:colour") >= 1
    mnist = CliRunner().invoke(main, ["evaluate", "run"])  # a 3×20×24 model on 1×28×28 digits
    assert mnist.exit_code == 2 and "takes 3×20×24 images in 3 classes" in mnist.output


def test_grey_arrays_with_h_not_w_and_four_classes_through_the_python_api(tmp_path):
    x_train, y_train = synthetic(1, 20, 24, 4, 900, seed=2)
    x_test, y_test = synthetic(1, 20, 24, 4, 200, seed=3)
    data = dataset_from_arrays(x_train, y_train, x_test, y_test, name="quadrants", augmentation="none")
    assert data.input_shape == (1, 20, 24) and data.num_classes == 4
    for name in ("capsnet-tiny", "cnn-recon-tiny"):
        train(recipe(name), data, tmp_path / name, TrainSettings(batch_size=20, device="cpu", progress=False))
        assert evaluate(load_checkpoint(tmp_path / name).model, data.test, data.classes).accuracy >= 0.9
    suite = suite_from_dict(TINY_SUITE)
    run_sweep([tmp_path / "capsnet-tiny", tmp_path / "cnn-recon-tiny"], suite, data, out_dir=tmp_path / "sweep",
              device="cpu", progress=False, save_adversarials=True)
    results = load_sweep(tmp_path / "sweep").results
    assert set(results["model"]) == {"capsnet-tiny", "cnn-recon-tiny"} and (results["n_out_of_ball"] == 0).all()
    run_detection(tmp_path / "sweep", dataset=data, device="cpu")
    report = build_report([tmp_path / "sweep"], tmp_path / "report", n_resamples=200)
    assert (report / "report.md").is_file()
