"""The training loop: tiny models learn, runs are deterministic, resume continues exactly, runs are protected."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from capsrobust.errors import RunError
from capsrobust.evaluation.accuracy import evaluate
from capsrobust.models.checkpoints import load_checkpoint
from capsrobust.precision import PrecisionError, cpu_supports_bf16
from capsrobust.training.loop import TrainSettings, random_shift, train
from tests.conftest import recipe


@pytest.mark.parametrize("name", ["capsnet-tiny", "cnn-tiny"])
def test_tiny_models_learn_mnist5k_well_past_chance(trained_runs, mnist5k, name):
    loaded = load_checkpoint(trained_runs[name])
    result = evaluate(loaded.model, mnist5k.test, mnist5k.classes)
    assert result.n == 1000
    assert result.accuracy > 0.85  # chance is 0.10
    metrics = pd.read_csv(trained_runs[name] / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


def test_run_directory_records_what_made_it(trained_runs):
    run = json.loads((trained_runs["capsnet-tiny"] / "run.json").read_text())
    assert run["recipe"]["name"] == "capsnet-tiny" and run["dataset"] == "mnist-5k" and run["seed"] == 0
    assert {"torch", "capsrobust", "python"} <= set(run["versions"])
    assert run["precision"] == "fp32"  # what "auto" means on the CPU
    best = json.loads((trained_runs["capsnet-tiny"] / "best.json").read_text())
    assert best["precision"] == "fp32"
    metrics = pd.read_csv(trained_runs["capsnet-tiny"] / "metrics.csv")
    assert best["metrics"]["val_accuracy"] == metrics["val_accuracy"].max()


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last.safetensors"))


def test_same_seed_gives_identical_weights_and_other_seed_does_not(tmp_path, mnist_small):
    shifting = dataclasses.replace(
        recipe("cnn-tiny"), train=dataclasses.replace(recipe("cnn-tiny").train, max_shift=2)
    )
    settings = TrainSettings(epochs=1, seed=3, device="cpu", progress=False)
    train(shifting, mnist_small, tmp_path / "a", settings)
    train(shifting, mnist_small, tmp_path / "b", settings)
    train(shifting, mnist_small, tmp_path / "c", dataclasses.replace(settings, seed=4))
    a, b, c = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, mnist_small):
    capsnet = recipe("capsnet-tiny")
    train(capsnet, mnist_small, tmp_path / "straight", TrainSettings(epochs=2, device="cpu", progress=False))
    train(capsnet, mnist_small, tmp_path / "resumed", TrainSettings(epochs=1, device="cpu", progress=False))
    metrics = train(
        capsnet,
        mnist_small,
        tmp_path / "resumed",
        TrainSettings(epochs=2, device="cpu", resume=True, progress=False),
    )
    assert list(metrics["epoch"]) == [1, 2]
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.allclose(straight[key], resumed[key], atol=1e-6) for key in straight)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no oneDNN bf16 kernels (needs AVX-512 or AMX)")
def test_bf16_training_has_finite_loss_is_recorded_and_may_resume_in_another_precision(tmp_path, mnist_small):
    tiny = dataclasses.replace(mnist_small, train=mnist_small.train.head(300), val=mnist_small.val.head(100))
    settings = TrainSettings(epochs=1, device="cpu", progress=False, precision="bf16")
    metrics = train(recipe("capsnet-tiny"), tiny, tmp_path, settings)
    assert metrics["train_loss"].map(math.isfinite).all() and (metrics["train_loss"] > 0).all()
    assert json.loads((tmp_path / "run.json").read_text())["precision"] == "bf16"
    assert load_checkpoint(tmp_path / "last.json").metadata["precision"] == "bf16"
    resumed = train(recipe("capsnet-tiny"), tiny, tmp_path,
                    dataclasses.replace(settings, epochs=2, resume=True, precision="fp32"))
    assert list(resumed["epoch"]) == [1, 2]
    assert load_checkpoint(tmp_path / "last.json").metadata["precision"] == "fp32"


def test_auto_resumes_a_run_in_the_precision_it_was_trained_in(tmp_path, mnist_small, monkeypatch):
    import capsrobust.precision as precision_module

    tiny = dataclasses.replace(mnist_small, train=mnist_small.train.head(200), val=mnist_small.val.head(100))
    train(recipe("cnn-tiny"), tiny, tmp_path, TrainSettings(epochs=1, device="cpu", progress=False))  # auto: fp32
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda cpuinfo=None: True)  # auto now means bf16
    train(recipe("cnn-tiny"), tiny, tmp_path, TrainSettings(epochs=2, device="cpu", progress=False, resume=True))
    assert json.loads((tmp_path / "run.json").read_text())["precision"] == "fp32"
    assert load_checkpoint(tmp_path / "last.json").metadata["precision"] == "fp32"
    record = json.loads((tmp_path / "run.json").read_text())
    del record["precision"]  # as a run from before the precision setting recorded it
    (tmp_path / "run.json").write_text(json.dumps(record))
    train(recipe("cnn-tiny"), tiny, tmp_path, TrainSettings(epochs=3, device="cpu", progress=False, resume=True))
    assert json.loads((tmp_path / "run.json").read_text())["precision"] == "fp32"


def test_auto_trains_in_bf16_only_architectures_measured_to_hold_their_accuracy_there(tmp_path, mnist_small,
                                                                                       monkeypatch):
    import capsrobust.precision as precision_module
    from capsrobust.models.registry import get_architecture

    # EM routing in bf16: at initialisation its gradient has a cosine of 0.01 with fp32's (docs/precision.md)
    assert {name: get_architecture(name).build.trains_in_bf16 for name in
            ("capsnet", "cnn", "cnn-recon", "efficient-capsnet", "em-capsnet")} == {
        "capsnet": True, "cnn": True, "cnn-recon": True, "efficient-capsnet": True, "em-capsnet": False}
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    tiny = dataclasses.replace(mnist_small, train=mnist_small.train.head(100), val=mnist_small.val.head(50))
    train(recipe("cnn-tiny"), tiny, tmp_path / "cnn", TrainSettings(epochs=1, device="cpu", progress=False))
    train(recipe("em-capsnet-tiny"), tiny, tmp_path / "em", TrainSettings(epochs=1, device="cpu", progress=False))
    assert json.loads((tmp_path / "cnn" / "run.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "em" / "run.json").read_text())["precision"] == "fp32"


def test_a_precision_the_device_cannot_run_stops_training_before_anything_is_written(tmp_path, mnist_small):
    with pytest.raises(PrecisionError, match="use --precision fp32 or bf16"):
        train(recipe("cnn-tiny"), mnist_small, tmp_path / "run", TrainSettings(device="cpu", precision="tf32"))
    assert not (tmp_path / "run").exists()


def test_a_loss_that_turns_nan_stops_training_before_any_checkpoint_is_written(tmp_path, mnist_small):
    images = mnist_small.train.images.clone()
    images[250:] = float("nan")  # the third batch of 100 meets them
    poisoned = dataclasses.replace(mnist_small, train=dataclasses.replace(mnist_small.train, images=images))
    with pytest.raises(RunError, match=r"training loss became nan at epoch 1, batch \d+; stopped before saving"):
        train(recipe("cnn-tiny"), poisoned, tmp_path / "run", TrainSettings(device="cpu", progress=False))
    assert not list((tmp_path / "run").glob("best.*")) and not list((tmp_path / "run").glob("last.*"))


def test_existing_run_is_not_overwritten_without_resume(tmp_path, mnist_small):
    settings = TrainSettings(epochs=1, device="cpu", progress=False)
    train(recipe("cnn-tiny"), mnist_small, tmp_path, settings)
    with pytest.raises(RunError, match="--resume"):
        train(recipe("cnn-tiny"), mnist_small, tmp_path, settings)
    with pytest.raises(RunError, match="another recipe"):
        train(recipe("capsnet-tiny"), mnist_small, tmp_path, dataclasses.replace(settings, resume=True))


def test_random_shift_translates_with_zero_fill_within_the_limit():
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 10:18, 10:18] = torch.rand(64, 8, 8) + 0.1
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    offsets = set()
    for original, moved in zip(images, shifted, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(torch.roll(original, shifts=(dy, dx), dims=(1, 2)), moved)
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # many of the 25 offsets are drawn
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_ctrl_c_saves_the_current_weights_before_stopping(tmp_path, mnist_small, monkeypatch):
    from capsrobust.models.cnn import CNN

    calls = {"n": 0}
    forward = CNN.forward

    def interrupted_forward(self, images, labels=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(self, images, labels)

    monkeypatch.setattr(CNN, "forward", interrupted_forward)
    with pytest.raises(KeyboardInterrupt):
        train(recipe("cnn-tiny"), mnist_small, tmp_path, TrainSettings(epochs=1, device="cpu", progress=False))
    saved = load_checkpoint(tmp_path / "interrupted.json")
    assert saved.metadata["interrupted"] is True and saved.metadata["batches_done"] == 2
    assert not (tmp_path / "last.json").exists()  # no epoch finished, so nothing claims to have


def test_throttled_checkpoints_resume_from_the_last_written_epoch_to_the_same_weights(tmp_path, mnist_small):
    cnn = recipe("cnn-tiny")
    settings = TrainSettings(epochs=3, device="cpu", progress=False)
    train(cnn, mnist_small, tmp_path / "straight", settings)
    # a run killed after epoch 2 whose `last` was written only at epoch 1 (the throttle): keep that state
    train(cnn, mnist_small, tmp_path / "killed", dataclasses.replace(settings, epochs=1))
    saved = {name: (tmp_path / "killed" / name).read_bytes() for name in
             ("last.safetensors", "last.json", "last.optim.safetensors", "last.optim.json")}
    throttled = dataclasses.replace(settings, epochs=2, resume=True, checkpoint_seconds=1e9)
    train(cnn, mnist_small, tmp_path / "killed", throttled)
    assert load_checkpoint(tmp_path / "killed" / "last.json").metadata["epoch"] == 2  # the final epoch is written
    for name, data in saved.items():
        (tmp_path / "killed" / name).write_bytes(data)
    metrics = train(cnn, mnist_small, tmp_path / "killed", dataclasses.replace(settings, resume=True))
    assert list(metrics["epoch"]) == [1, 2, 3]  # epoch 2 trained again, from the epoch-1 state
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert all(torch.allclose(straight[key], resumed[key], atol=1e-6) for key in straight)


def test_last_is_written_after_the_final_epoch_only_when_epochs_are_quick(tmp_path, mnist_small, monkeypatch):
    import capsrobust.training.loop as training

    written: list[tuple[str, int]] = []
    original = training.save_checkpoint

    def spy(stem, model, recipe_, metadata):
        written.append((stem.name, metadata["epoch"]))
        return original(stem, model, recipe_, metadata)

    monkeypatch.setattr(training, "save_checkpoint", spy)
    settings = TrainSettings(epochs=3, device="cpu", progress=False, checkpoint_seconds=1e9)
    train(recipe("cnn-tiny"), mnist_small, tmp_path / "quick", settings)
    assert [epoch for name, epoch in written if name == "last"] == [3]
    written.clear()
    train(recipe("cnn-tiny"), mnist_small, tmp_path / "every", dataclasses.replace(settings, checkpoint_seconds=0.0))
    assert [epoch for name, epoch in written if name == "last"] == [1, 2, 3]


def test_shifts_move_every_channel_alike_and_flips_only_natural_images():
    from capsrobust.training.loop import augment, random_shift

    images = torch.zeros(1, 3, 5, 5)
    images[0, :, 2, 2] = torch.tensor([0.2, 0.5, 0.9])  # one coloured pixel in the middle
    for seed in range(5):
        shifted = random_shift(images, 2, torch.Generator().manual_seed(seed))
        position = shifted[0, 0].nonzero().tolist()
        assert len(position) == 1  # moved, not smeared; every channel to the same place, values kept
        (row, col), = position
        assert shifted[0, :, row, col].tolist() == pytest.approx([0.2, 0.5, 0.9])
    digits = torch.rand(64, 1, 6, 6)
    assert torch.equal(augment(digits, "shift", 0, torch.Generator().manual_seed(0)), digits)  # never mirrored
    flipped = augment(digits, "crop-flip", 0, torch.Generator().manual_seed(0))
    mirrored = [bool(torch.equal(flipped[k], digits[k].flip(-1))) for k in range(64)]
    assert 10 < sum(mirrored) < 54 and all(m or torch.equal(flipped[k], digits[k]) for k, m in enumerate(mirrored))


def test_a_run_checkpointed_by_version_0_2_resumes(tmp_path, mnist_small):
    """Its last.json describes the recipe as 0.2 did (image_size, one input_mean); resuming must not call it
    another recipe."""
    out = tmp_path / "run"
    train(recipe("cnn-tiny"), mnist_small, out, TrainSettings(epochs=1, device="cpu", progress=False))
    path = out / "last.json"
    record = json.loads(path.read_text())
    model = record["recipe"]["model"]
    for key in ("input_channels", "input_height", "input_width"):
        del model[key]
    model.update(image_size=28, input_mean=model["input_mean"][0], input_std=model["input_std"][0])
    path.write_text(json.dumps(record))
    resumed = train(recipe("cnn-tiny"), mnist_small, out, TrainSettings(epochs=2, resume=True, device="cpu",
                                                                 progress=False))
    assert list(resumed["epoch"]) == [1, 2]
