"""Shared fixtures: the embedded data set and tiny models trained once per test session."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from capsrobust import precision
from capsrobust.data import Dataset, load_dataset
from capsrobust.models.recipes import Recipe, load_recipe
from capsrobust.training import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipes are resolved by name from ./models, as a user running from the repository does."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="session", autouse=True)
def _auto_precision_is_fp32() -> Iterator[None]:
    """``auto`` trains in bf16 on CPUs with bf16 hardware; tests train in fp32 on every CPU, so that what they assert
    does not depend on the machine (tests/test_precision.py tests the rule itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: False)
        yield


@pytest.fixture(scope="session")
def mnist5k() -> Dataset:
    return load_dataset("mnist-5k")


@pytest.fixture(scope="session")
def mnist_small(mnist5k: Dataset) -> Dataset:
    """mnist-5k with its first 600 training and 200 validation images and its whole test split: for tests that
    train several models to check what a pipeline writes, not how well they learn (seconds each, not ten)."""
    return dataclasses.replace(mnist5k, train=mnist5k.train.head(600), val=mnist5k.val.head(200))


def recipe(name: str) -> Recipe:
    return load_recipe(REPO / "models" / f"{name}.toml")


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset) -> dict[str, Path]:
    """capsnet-tiny and cnn-tiny trained for their recipe's 3 epochs on mnist-5k (about 10 s together)."""
    runs = {}
    for name in ("capsnet-tiny", "cnn-tiny"):
        out = tmp_path_factory.mktemp(name)
        train(recipe(name), mnist5k, out, TrainSettings(seed=0, device="cpu", progress=False))
        runs[name] = out
    return runs


BENCHMARK_STOPS = ("train", "sweep", "detect", "figures", None)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset) -> tuple[Path, list]:
    """The tiny benchmark profile, stopped after each stage and resumed each time (about 20 s in all).

    Returns the folder holding ``bench/`` (runs, sweep, detection, figures) and ``report/``, and the
    ``BenchmarkResult`` of each call, in the order of ``BENCHMARK_STOPS``.
    """
    from capsrobust.benchmark import run_benchmark

    root = tmp_path_factory.mktemp("tiny-benchmark")
    calls = [
        run_benchmark("tiny", out_dir=root / "bench", report_dir=root / "report", data=mnist5k, device="cpu",
                      stop_after=stop, progress=False)
        for stop in BENCHMARK_STOPS
    ]
    return root, calls


@pytest.fixture(scope="session")
def recon_run(tmp_path_factory: pytest.TempPathFactory, mnist5k: Dataset) -> Path:
    """cnn-recon-tiny, a CNN+R with a class-conditional decoder, trained for its recipe's 3 epochs (a few seconds)."""
    out = tmp_path_factory.mktemp("cnn-recon-tiny")
    train(recipe("cnn-recon-tiny"), mnist5k, out, TrainSettings(seed=0, device="cpu", progress=False))
    return out
