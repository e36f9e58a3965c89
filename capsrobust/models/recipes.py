"""Model recipes: ``models/*.toml`` → frozen dataclasses, validated once at load.

A recipe names an architecture, its hyper-parameters (``[model]``) and its training defaults (``[train]``)::

    name = "capsnet-paper"
    architecture = "capsnet"
    [model]
    routing_iterations = 3
    [train]
    epochs = 15
    [adversarial]            # optional: adversarial training (capsrobust.training.adversarial)
    attack = "pgd-linf"
    eps = 0.3

Unknown keys, wrong types and missing files are refused with one line naming the file and the key. A recipe
round-trips through ``to_dict`` / ``recipe_from_dict`` so checkpoints carry the exact recipe they were trained with.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsrobust.errors import RecipeError
from capsrobust.models.base import MNIST_CLASSES, MNIST_SHAPE, CapsRobustModel, shape_text
from capsrobust.models.registry import get_architecture
from capsrobust.tomlfile import read_toml, refuse_unknown_keys, resolve_named_toml

RECIPE_DIR = Path("models")
# The recipes shipped with the repository, found also when the working directory is elsewhere.
REPOSITORY_RECIPE_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class TrainConfig:
    """Training defaults of a recipe; the CLI may override epochs and batch size."""

    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_decay: float = 0.96  # multiplies the learning rate after every epoch (exponential decay)
    max_shift: int = 2  # random translations of up to this many pixels, the paper's only augmentation

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "learning_rate"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be ≥ 0, got {self.max_shift}")


#: Training attacks: PGD's inner maximisation of the training loss (Madry et al. 2018) or of TRADES' KL term
#: (Zhang et al. 2019), in the L∞ or L2 ball. capsrobust.training.adversarial implements them.
TRAINING_ATTACKS = ("pgd-linf", "pgd-l2", "trades-linf", "trades-l2")
#: What a Madry training attack maximises: "auto" (the model's default attack objective), an attack objective of
#: capsrobust.attacks.objectives, or "vote-" and one of those (the vote surrogate of capsule models).
TRAINING_OBJECTIVES = ("auto", "ce-lengths", "ce-log-lengths", "margin", "margin-log-lengths",
                       "vote-ce-log-lengths", "vote-margin", "vote-margin-log-lengths")
#: An L2 ball larger than the all-ones image's norm (√784 = 28) holds every image in [0, 1]: a meaningless budget.
MAX_L2_EPS = 28.0


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial training of a recipe: which attack makes the training batch, its budget and schedule.

    ``eps`` is the full budget, reached after ``warmup_epochs`` (a linear ramp per batch from 0, as MNIST
    adversarial training usually does: a network attacked at eps 0.3 from its first step may never start
    learning). ``step_size`` is PGD's step at the full budget and shrinks with eps during the ramp.
    ``trades_beta`` weighs TRADES' KL term (ignored by pgd-*). ``val_steps`` PGD steps at ``eps`` on the
    validation split give each epoch's robust accuracy, which picks ``best``.
    """

    attack: str = "pgd-linf"
    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True
    warmup_epochs: int = 0
    trades_beta: float = 6.0
    objective: str = "auto"
    val_steps: int = 10

    def __post_init__(self) -> None:
        if self.attack not in TRAINING_ATTACKS:
            raise ValueError(f"unknown training attack {self.attack!r}; choose one of: {', '.join(TRAINING_ATTACKS)}")
        if self.norm == "linf" and not 0 <= self.eps <= 1:
            raise ValueError(f"an L∞ training eps must lie in [0, 1] (pixels are in [0, 1]), got {self.eps}")
        if self.norm == "l2" and not 0 <= self.eps <= MAX_L2_EPS:
            raise ValueError(f"an L2 training eps must lie in [0, {MAX_L2_EPS:g}], got {self.eps}")
        if self.steps < 1 or self.val_steps < 1:
            raise ValueError(f"training attack steps must be ≥ 1, got {min(self.steps, self.val_steps)}")
        if self.step_size <= 0:
            raise ValueError(f"step_size must be positive, got {self.step_size}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be ≥ 0, got {self.warmup_epochs}")
        if self.trades_beta < 0:
            raise ValueError(f"TRADES beta must be ≥ 0, got {self.trades_beta}")
        if self.objective not in TRAINING_OBJECTIVES:
            raise ValueError(f"unknown training objective {self.objective!r}; choose one of: "
                             f"{', '.join(TRAINING_OBJECTIVES)}")

    @property
    def norm(self) -> str:
        """``linf`` or ``l2``."""
        return self.attack.rsplit("-", 1)[1]

    @property
    def trades(self) -> bool:
        return self.attack.startswith("trades-")

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``pgd-linf eps 0.3, 40 steps of 0.01``."""
        extra = f", beta {self.trades_beta:g}" if self.trades else ""
        warmup = f", warm-up {self.warmup_epochs} epochs" if self.warmup_epochs else ""
        return f"{self.attack} eps {self.eps:g}, {self.steps} steps of {self.step_size:g}{extra}{warmup}"


@dataclass(frozen=True)
class Recipe:
    """An architecture, its hyper-parameters and its training defaults, under one name."""

    name: str
    architecture: str
    model: Any  # the architecture's config dataclass
    train: TrainConfig
    description: str = ""
    adversarial: AdversarialConfig | None = None  # None: natural training

    def for_data(self, input_shape: tuple[int, int, int], num_classes: int) -> Recipe:
        """This recipe built for images of ``input_shape`` (C, H, W) in ``num_classes`` classes: the data decides.

        Training calls it, so every checkpoint records the shape it was trained for. An architecture whose config
        has no input fields (a plugin's written before they existed) takes only MNIST-shaped data.
        """
        fields = {field.name for field in dataclasses.fields(self.model)}
        if not {"input_channels", "input_height", "input_width", "num_classes"} <= fields:
            if (tuple(input_shape), num_classes) == (MNIST_SHAPE, MNIST_CLASSES):
                return self
            raise RecipeError(f"architecture {self.architecture} has no input_channels/input_height/input_width/"
                              f"num_classes in its config, so it takes only {shape_text(MNIST_SHAPE)} images in "
                              f"{MNIST_CLASSES} classes, not {shape_text(input_shape)} in {num_classes}; add them")
        channels, height, width = input_shape
        try:
            model = dataclasses.replace(self.model, input_channels=channels, input_height=height, input_width=width,
                                        num_classes=num_classes)
        except ValueError as error:
            raise RecipeError(f"recipe {self.name} does not fit {shape_text(input_shape)} images in {num_classes} "
                              f"classes: {error}") from None
        return dataclasses.replace(self, model=model)

    def to_dict(self) -> dict[str, Any]:
        table = {
            "name": self.name,
            "architecture": self.architecture,
            "description": self.description,
            "model": _jsonable(dataclasses.asdict(self.model)),
            "train": dataclasses.asdict(self.train),
        }
        if self.adversarial is not None:  # absent, not null, for natural runs: older checkpoints still match
            table["adversarial"] = dataclasses.asdict(self.adversarial)
        return table


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A path to a TOML file, or a bare recipe name looked up in ``models/`` (the working directory's, then the
    repository's, as for suites)."""
    return resolve_named_toml(recipe, (RECIPE_DIR, REPOSITORY_RECIPE_DIR), "recipe", RecipeError)


def load_recipe(recipe: str | Path) -> Recipe:
    """Read and validate a recipe file (or bare name)."""
    path = resolve_recipe_path(recipe)
    return recipe_from_dict(read_toml(path, RecipeError), source=str(path), default_name=path.stem)


def recipe_from_dict(table: Mapping[str, Any], source: str = "<recipe>", default_name: str = "") -> Recipe:
    """Validate a parsed recipe table; ``source`` names it in errors."""
    allowed = {"name", "architecture", "description", "model", "train", "adversarial"}
    _refuse_unknown(table, allowed, source, "")
    if "architecture" not in table:
        raise RecipeError(f"{source}: missing key 'architecture'")
    try:
        architecture = get_architecture(str(table["architecture"]))
    except RecipeError as error:
        raise RecipeError(f"{source}: key 'architecture': {error}") from None
    return Recipe(
        name=str(table.get("name", default_name)),
        architecture=architecture.name,
        model=dataclass_from_table(architecture.config_type, _migrated_model(table.get("model", {})), source,
                                   "model"),
        train=dataclass_from_table(TrainConfig, table.get("train", {}), source, "train"),
        description=str(table.get("description", "")),
        adversarial=(dataclass_from_table(AdversarialConfig, table["adversarial"], source, "adversarial")
                     if "adversarial" in table else None),
    )


def _migrated_model(table: Any) -> Any:
    """A [model] table of capsrobust ≤ 0.2 (every checkpoint written before inputs had a shape) in today's keys.

    ``image_size = S`` was the side of a square one-channel image: ``input_height = input_width = S``.
    """
    if not isinstance(table, Mapping) or "image_size" not in table:
        return table
    migrated = {key: value for key, value in table.items() if key != "image_size"}
    migrated.setdefault("input_height", table["image_size"])
    migrated.setdefault("input_width", table["image_size"])
    return migrated


def with_adversarial(recipe: Recipe, **overrides: Any) -> Recipe:
    """``recipe`` with its adversarial training changed by ``overrides`` (``None`` values are ignored).

    A natural recipe becomes adversarial when ``attack`` is given; bad values are refused with one line.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    if not given:
        return recipe
    if recipe.adversarial is None and "attack" not in given:
        raise RecipeError(f"recipe {recipe.name} trains naturally; name a training attack (--adversarial) to set "
                          f"{', '.join(sorted(given))}")
    try:
        adversarial = dataclasses.replace(recipe.adversarial or AdversarialConfig(**given), **given)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"adversarial training of {recipe.name}: {error}") from None
    return dataclasses.replace(recipe, adversarial=adversarial)


def dataclass_from_table(cls: type, table: Any, source: str, section: str) -> Any:
    """Build ``cls`` from a TOML table, checking every key's presence and type; errors name file and key."""
    if not isinstance(table, Mapping):
        raise RecipeError(f"{source}: [{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _refuse_unknown(table, set(fields), source, section)
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(value, hints[key], source, f"{section}.{key}") for key, value in table.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{source}: [{section}] {error}") from None


def _refuse_unknown(table: Mapping[str, Any], allowed: set[str], source: str, section: str) -> None:
    refuse_unknown_keys(table, allowed, RecipeError, f"{source}: [{section}] " if section else f"{source}: ")


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check a TOML value against a field's type hint (int, float, bool, str, tuple[int, ...])."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        raise RecipeError(f"{source}: key {key!r} has a type recipes cannot hold")  # pragma: no cover
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if item_type is float and isinstance(value, int | float) and not isinstance(value, bool):
            return (float(value),)  # one number for every channel (how ≤ 0.2 recipes wrote input_mean / input_std)
        if not isinstance(value, list):
            raise RecipeError(f"{source}: key {key!r} must be a list, got {value!r}")
        return tuple(_coerce(item, item_type, source, key) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{source}: key {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{source}: key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{source}: key {key!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{source}: key {key!r} must be a string, got {value!r}")
        return value
    raise RecipeError(f"{source}: key {key!r} has unsupported type {hint}")  # pragma: no cover


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def build_model(recipe: Recipe) -> CapsRobustModel:
    """A freshly initialised model for ``recipe`` (seed torch first for reproducible weights)."""
    return get_architecture(recipe.architecture).build(recipe.model)
