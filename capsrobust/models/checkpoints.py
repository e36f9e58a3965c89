"""Checkpoints as safetensors weights plus JSON metadata; nothing is ever unpickled.

A checkpoint ``NAME`` is two files: ``NAME.safetensors`` (weights) and ``NAME.json`` (the recipe, the data set,
epoch, metrics, seed, versions, and the SHA-256 of the weights file). The JSON is written last, so its presence
means the weights beside it are complete; the hash catches truncation and swapped files. Loading rebuilds the
model from the recipe stored in the JSON and refuses weights that do not match it key for key, shape for shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from capsrobust.errors import CheckpointError, RecipeError
from capsrobust.models.base import CapsRobustModel
from capsrobust.models.recipes import Recipe, build_model, recipe_from_dict
from capsrobust.runtime import atomic_write, atomic_write_text, file_sha256

FORMAT = "capsrobust-checkpoint/1"
WEIGHTS_SUFFIX = ".safetensors"
METADATA_SUFFIX = ".json"
BEST = "best"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".bin"}


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: CapsRobustModel
    recipe: Recipe
    metadata: dict[str, Any]
    path: Path  # the weights file


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors atomically as safetensors; returns the file's SHA-256."""
    contiguous = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    atomic_write(path, lambda temporary: save_file(contiguous, str(temporary)))
    return file_sha256(path)


def save_checkpoint(stem: Path, model: CapsRobustModel, recipe: Recipe, metadata: dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` then ``stem.json``; returns the weights path."""
    weights = stem.with_name(stem.name + WEIGHTS_SUFFIX)
    digest = save_tensors(weights, model.state_dict())
    record = {"format": FORMAT, "recipe": recipe.to_dict(), "weights_sha256": digest, **metadata}
    atomic_write_text(stem.with_name(stem.name + METADATA_SUFFIX), json.dumps(record, indent=2) + "\n")
    return weights


def checkpoint_stem(path: str | Path) -> Path:
    """Resolve a run directory (→ its best checkpoint), a ``.safetensors`` or ``.json`` file, or a bare stem."""
    path = Path(path)
    if path.is_dir():
        return path / BEST
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: capsrobust loads only safetensors checkpoints (never pickles); "
            f"convert it or retrain with `capsrobust train`"
        )
    if path.suffix in (WEIGHTS_SUFFIX, METADATA_SUFFIX):
        return path.with_suffix("")
    return path


#: Fields of a checkpoint's JSON that code reads, with the type it must have.
METADATA_TYPES = (("recipe", dict, "a table"), ("weights_sha256", str, "a string"), ("epoch", int, "an integer"),
                  ("seed", int, "an integer"), ("dataset", str, "a string"), ("metrics", dict, "a table"))


def read_metadata(stem: Path) -> dict[str, Any]:
    metadata_path = stem.with_name(stem.name + METADATA_SUFFIX)
    if not metadata_path.is_file():
        raise CheckpointError(
            f"no checkpoint at {stem} (expected {metadata_path.name} and {stem.name}{WEIGHTS_SUFFIX}); "
            f"pass a run directory or checkpoint written by `capsrobust train`"
        )
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{metadata_path} is corrupt ({error}); retrain or restore the run") from None
    except RecursionError:  # json nests as deep as the file says
        raise CheckpointError(f"{metadata_path} is corrupt (nested too deeply); retrain or restore the run") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{metadata_path} is not a capsrobust checkpoint ({FORMAT}); retrain the model")
    for key, kind, what in METADATA_TYPES:
        if key in metadata and not (isinstance(metadata[key], kind) and not isinstance(metadata[key], bool)):
            raise CheckpointError(f"{metadata_path} is corrupt (its {key!r} is not {what}); retrain or restore the run")
    return metadata


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model a checkpoint was trained as and load its weights, refusing anything that does not fit."""
    stem = checkpoint_stem(path)
    metadata = read_metadata(stem)
    weights_path = stem.with_name(stem.name + WEIGHTS_SUFFIX)
    fix = "retrain or restore the run"
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing; {fix}")
    if file_sha256(weights_path) != metadata.get("weights_sha256"):
        raise CheckpointError(
            f"{weights_path} is truncated or altered (SHA-256 differs from its JSON); {fix}"
        )
    try:
        recipe = recipe_from_dict(metadata["recipe"], source=f"{stem.name}{METADATA_SUFFIX}")
    except (KeyError, TypeError, ValueError, AttributeError, RecipeError) as error:
        raise CheckpointError(f"{stem}{METADATA_SUFFIX} holds no valid recipe ({error}); {fix}") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights_path} is corrupt ({error}); {fix}") from None
    model = build_model(recipe)
    check_state_matches(model, state, weights_path)
    model.load_state_dict(state)
    model.to(device).eval()
    return LoadedCheckpoint(model=model, recipe=recipe, metadata=metadata, path=weights_path)


def check_state_matches(model: CapsRobustModel, state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights whose names or shapes differ from the model's, or that are not finite."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in state.items()}
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} does not match its recipe ({detail}); retrain with that recipe")
    for name, shape in expected.items():
        if found[name] != shape:
            raise CheckpointError(
                f"{source} does not match its recipe ({name} has shape {found[name]}, recipe wants {shape}); "
                f"retrain with that recipe"
            )
    for name, tensor in state.items():  # a diverged run's weights would turn every result into noise or NaN
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source} holds NaN or infinite weights ({name}); the run diverged: retrain it "
                                  f"(a lower learning rate, or --resume from an earlier checkpoint)")
