"""An image folder in torchvision's ImageFolder layout: ``DIR/CLASS/*.png``, class names sorted.

When ``DIR`` has both a ``train/`` and a ``test/`` sub-folder, each holds one sub-folder per class (the test split
may lack classes, not add any); otherwise every sub-folder of ``DIR`` is a class and the test split is held out of
it, stratified and seeded, like the validation split always is. Images are read with Pillow (``images.read_image``:
modes converted explicitly, decompression-bomb limit on) and must all have one size, unless ``resize`` asks for one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capsrobust.data.base import SPLIT_SEED, Dataset, hold_out, pixels_to_unit, split_dataset, to_nchw
from capsrobust.data.images import read_image, stack_pixels
from capsrobust.errors import DataError

#: What counts as an image (torchvision's list plus .gif); other files, and hidden ones, are skipped.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def dataset_from_folder(
    path: str | Path, *, resize: tuple[int, int] | None = None, val_size: int | float = 0.1,
    test_size: int | float = 0.2, seed: int = SPLIT_SEED, augmentation: str = "none",
) -> Dataset:
    """A ``Dataset`` named ``folder:NAME`` from an image folder (the module's docstring has the layout).

    ``resize`` (H, W) resizes every image bilinearly; without it, images of two sizes are refused in one line that
    names one of each. ``val_size`` and ``test_size`` are counts, or fractions when floats below 1; ``test_size``
    applies only without a ``test/`` folder. A given test folder is shuffled with ``seed`` (sweeps attack the first
    n test images, which must mix the classes).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; folder:DIR needs one sub-folder of images per class")
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    classes = _class_folders(root / "train" if split_layout else root)
    files = _image_files(root / "train" if split_layout else root, classes)
    test_files = _image_files(root / "test", classes, every_class=False) if split_layout else []
    everything = [file for file, _ in files + test_files]
    pixels = stack_pixels([read_image(file, resize) for file in everything], [str(f) for f in everything], str(root))
    images = pixels_to_unit(to_nchw(pixels, str(root), "nhwc"), str(root))  # (N, C, H, W)
    labels = np.array([label for _, label in files + test_files], dtype=np.int64)
    if split_layout:
        train, test = np.arange(len(files)), np.arange(len(files), len(everything))
    else:
        train, test = hold_out(np.arange(len(files)), labels, test_size, seed, f"{root} (test split)")
        train = np.sort(train)
    return split_dataset(f"folder:{root.resolve().name}", (images[train], labels[train]),
                         (images[test], labels[test]), where=str(root), classes=classes, val_size=val_size,
                         seed=seed, augmentation=augmentation, provenance="unverified", shuffle_test=split_layout,
                         source=f"folder:{root.resolve()}")


def _class_folders(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DataError(f"{root} has no sub-folders; an image folder holds one sub-folder of images per class")
    return classes


def _image_files(root: Path, classes: tuple[str, ...], every_class: bool = True) -> list[tuple[Path, int]]:
    """(file, label) for every image under ``root/CLASS`` (searched recursively), class by class, sorted."""
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folders the training folder lacks: {', '.join(unknown)}")
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        images = sorted(p for p in folder.rglob("*") if _is_image(p, folder)) if folder.is_dir() else []
        if not images and every_class:
            raise DataError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(image, label) for image in images]
    if not files:
        raise DataError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _is_image(path: Path, folder: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()
