"""A user's own data from Python: tensors or NumPy arrays, or any torchvision-style data set object.

Both ways in take the training and test sets and hold the validation split out of the training set, stratified by
class and seeded. Images are read by the layout rule of ``base.to_nchw`` (N×H×W; N×H×W×C when the last axis is 1, 3
or 4; else N×C×H×W) and must be uint8 in [0, 255] or floats in [0, 1]; labels are integers 0..K-1 of shape (N,) or
(N, 1). Nothing is normalised: models do that inside their forward pass.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from capsrobust.data.base import (
    SPLIT_SEED,
    Dataset,
    labels_to_int64,
    pixels_to_unit,
    split_dataset,
    to_nchw,
)
from capsrobust.data.images import pil_pixels, stack_pixels
from capsrobust.errors import DataError


def dataset_from_arrays(
    x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, name: str = "arrays",
    classes: Sequence[str] | None = None, val_size: int | float = 0.1, seed: int = SPLIT_SEED,
    augmentation: str = "none", layout: str = "auto",
) -> Dataset:
    """A ``Dataset`` from tensors or NumPy arrays, ``val_size`` of the training set held out for validation.

    ``layout`` is "auto" (the rule: N×H×W, N×H×W×C when the last axis is 1, 3 or 4, else N×C×H×W), or "nchw" /
    "nhwc" to say it when the rule would misread an array (an N×C×H×W array whose width is 1, 3 or 4). ``classes``
    defaults to "0", "1", ... up to the largest label; ``val_size`` is a count, or a fraction when a float below 1.
    ``augmentation`` (one of ``base.AUGMENTATIONS``) tells the training loop what suits the data.
    """
    return arrays_to_dataset((x_train, y_train, x_test, y_test), name=name, where=name, classes=classes,
                             val_size=val_size, seed=seed, augmentation=augmentation, layout=layout,
                             provenance="arrays")


def arrays_to_dataset(
    arrays: tuple[Any, Any, Any, Any], *, name: str, where: str, classes: Sequence[str] | None,
    val_size: int | float, seed: int, augmentation: str, layout: str, provenance: str, source: str = "",
) -> Dataset:
    """``dataset_from_arrays``'s work, with ``where`` (the file, for an .npz) naming the source in errors."""
    x_train, y_train, x_test, y_test = arrays
    parts = {}
    for part, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        pixels = pixels_to_unit(to_nchw(_numpy(images), f"{where}: x_{part}", layout), f"{where}: x_{part}")
        parts[part] = pixels, labels_to_int64(_numpy(labels), pixels.shape[0], f"{where}: y_{part}")
    return split_dataset(name, parts["train"], parts["test"], where=where, classes=classes, val_size=val_size,
                         seed=seed, augmentation=augmentation, provenance=provenance, source=source)


def dataset_from_torchvision(
    train_set: Any, test_set: Any, *, name: str = "torchvision", classes: Sequence[str] | None = None,
    val_size: int | float = 0.1, seed: int = SPLIT_SEED, augmentation: str = "none",
) -> Dataset:
    """A ``Dataset`` from two torchvision-style data sets: indexable, ``len()``, items ``(image, label)``.

    An image is a PIL image (converted as ``images.pil_pixels`` says) or a (C, H, W) tensor, uint8 or float in
    [0, 1] (``ToTensor``'s output; a ``Normalize`` transform must go, models normalise inside). ``classes`` defaults
    to ``train_set.classes`` when it names every label. Every item is read once, into memory.
    """
    parts = {}
    for part, source in (("train", train_set), ("test", test_set)):
        where = f"{name}: {part}_set"
        pixels, labels = _materialise(source, where)
        parts[part] = pixels_to_unit(to_nchw(pixels, where, "nhwc"), where), labels
    if classes is None:
        named = getattr(train_set, "classes", None)
        top = max((int(labels.max()) for _, labels in parts.values() if labels.size), default=-1)
        if isinstance(named, Sequence) and all(isinstance(c, str) for c in named) and len(named) > top:
            classes = tuple(named)
    return split_dataset(name, parts["train"], parts["test"], where=name, classes=classes, val_size=val_size,
                         seed=seed, augmentation=augmentation, provenance="torchvision")


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _materialise(source: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every item of a torchvision-style data set as (N, H, W, C) pixels and (N,) int64 labels."""
    pixels, labels = [], []
    for index in range(len(source)):
        image, label = source[index]
        pixels.append(_item_pixels(image, f"{where}[{index}]"))
        try:
            labels.append(operator.index(label))
        except TypeError as error:
            raise DataError(f"{where}[{index}]: label {label!r} is not an integer class index") from error
    stacked = stack_pixels(pixels, [f"{where}[{index}]" for index in range(len(pixels))], where)
    return stacked, labels_to_int64(np.array(labels, dtype=np.int64), len(labels), where)


def _item_pixels(image: Any, where: str) -> np.ndarray:
    """One item's image as (H, W, C), in its own dtype (``pixels_to_unit`` checks the range of them all)."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        array = array[None] if array.ndim == 2 else array
        if array.ndim != 3:
            raise DataError(f"{where}: a tensor of shape {tuple(image.shape)}; expected (C, H, W)")
        return array.transpose(1, 2, 0)  # (C, H, W) → (H, W, C)
    if hasattr(image, "mode") and hasattr(image, "convert"):
        return pil_pixels(image, where)
    raise DataError(f"{where}: an image of type {type(image).__name__}; expected a PIL image or a (C, H, W) tensor")
