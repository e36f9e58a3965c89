"""Exceptions for people: each names what went wrong and how to fix it, in one line.

The library raises these and never calls ``sys.exit``; the CLI turns any ``CapsRobustError`` into a one-line
message on stderr and a non-zero exit code.
"""

from enum import Enum
from typing import TypeVar

ChoiceT = TypeVar("ChoiceT", bound=Enum)


class CapsRobustError(Exception):
    """Base class of every error capsrobust raises on purpose (bad input, not a bug)."""


class DataError(CapsRobustError):
    """A data set is unknown, missing, truncated or corrupt."""


class RecipeError(CapsRobustError):
    """A model recipe (``models/*.toml``) is missing, malformed or names unknown keys."""


class CheckpointError(CapsRobustError):
    """A checkpoint is missing, truncated, not ours, or does not match its recipe."""


class RunError(CapsRobustError):
    """A training run directory is in a state that does not allow the requested action."""


class TableError(CapsRobustError):
    """A table capsrobust wrote (CSV) cannot be read back: not CSV, or without the columns that give it meaning."""


class DeviceError(CapsRobustError):
    """The requested device is not available on this machine."""


class ModelOutputError(CapsRobustError):
    """A model gave no usable answer: non-finite scores on clean images, or an attack changed its weights.

    Raised rather than flagged because either would turn into a plausible-looking accuracy.
    """


def parse_choice(enum_type: type[ChoiceT], value: str | ChoiceT, error: type[CapsRobustError], noun: str) -> ChoiceT:
    """``value`` as a member of a string ``Enum``, or ``error`` with one line that lists the valid choices."""
    try:
        return enum_type(value)
    except ValueError:
        known = ", ".join(str(member.value) for member in enum_type)
        raise error(f"unknown {noun} {value!r}; choose one of: {known}") from None
