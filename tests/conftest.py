"""Shared fixtures: the embedded data set and tiny models trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsrobust.data import Dataset, load_dataset
from capsrobust.recipes import Recipe, load_recipe
from capsrobust.train import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipes are resolved by name from ./models, as a user running from the repository does."""
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="session")
def mnist5k() -> Dataset:
    return load_dataset("mnist-5k")


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
