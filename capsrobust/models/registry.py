"""Architectures by name: each is a config dataclass plus the model class built from it.

Adding an architecture is one decorated class; recipes (``models/*.toml``) name it in their ``architecture`` key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from capsrobust.errors import RecipeError
from capsrobust.models.base import CapsRobustModel

ModelClass = TypeVar("ModelClass", bound=type[CapsRobustModel])


@dataclass(frozen=True)
class Architecture:
    name: str
    config_type: type
    build: Callable[[Any], CapsRobustModel]


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, config_type: type) -> Callable[[ModelClass], ModelClass]:
    """Class decorator: make a model class buildable from recipes that say ``architecture = name``."""

    def decorate(model_class: ModelClass) -> ModelClass:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = Architecture(name, config_type, model_class)
        return model_class

    return decorate


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES))
        raise RecipeError(f"unknown architecture {name!r}; choose one of: {known}") from None


def architecture_names() -> list[str]:
    return sorted(_ARCHITECTURES)
