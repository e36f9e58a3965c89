"""CIFAR-10 from its binary release (``cifar-10-batches-bin``), never the pickled Python one.

The Python release is a set of pickles, and unpickling runs code; the binary release is fixed-size records that
NumPy reads as bytes. Each record is 3,073 bytes: one label byte (0..9), then the 1,024 red, 1,024 green and 1,024
blue bytes of a 32 × 32 image, each channel row-major, so byte ``1 + c·1024 + h·32 + w`` of a record is pixel
(c, h, w). ``data_batch_1.bin`` .. ``data_batch_5.bin`` hold the 50,000 training images, ``test_batch.bin`` the
10,000 test images, ``batches.meta.txt`` the class names, one a line.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from capsrobust.data.base import SPLIT_SEED, Dataset, pixels_to_unit, split_dataset
from capsrobust.data.download import extract_tar, fetch
from capsrobust.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}.bin" for index in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_META_FILE = "batches.meta.txt"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
#: The MD5 the authors publish for cifar-10-binary.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html); they
#: publish none for the files inside, so a folder's provenance is "unverified".
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
#: An official batch is 30,730,000 bytes; a file promising 30 times that is refused before it is read.
MAX_CIFAR10_FILE_BYTES = 1 << 30
#: The validation images held out of the 50,000 training images (stratified, seeded), the field's usual 5,000.
CIFAR10_VALIDATION_SIZE = 5000
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file as (N, 3, 32, 32) uint8 images and (N,) int64 labels in 0..9."""
    size = path.stat().st_size
    if size == 0 or size % CIFAR10_RECORD_BYTES:
        raise DataError(f"{path}: {size:,} bytes is not a whole number of {CIFAR10_RECORD_BYTES:,}-byte records "
                        f"(1 label byte + 3,072 pixel bytes); the file is truncated or not a CIFAR-10 binary batch")
    if size > MAX_CIFAR10_FILE_BYTES:
        raise DataError(f"{path}: {size:,} bytes, more than the {MAX_CIFAR10_FILE_BYTES:,} a CIFAR-10 batch may "
                        f"hold here; it is not one of the official batches")
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)  # (N, 3073)
    labels = records[:, 0]
    if labels.max() > 9:
        index = int(np.argmax(labels > 9))
        raise DataError(f"{path}: record {index} has label {labels[index]}, outside 0..9; the file is corrupt or not "
                        f"CIFAR-10 (CIFAR-100's binary records are 3,074 bytes)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels.astype(np.int64)  # (N, 3, 32, 32): R, G, B planes


def load_cifar10(data_dir: str | Path | None, download: bool = False,
                 val_size: int | float = CIFAR10_VALIDATION_SIZE) -> Dataset:
    """``cifar10`` from ``data_dir/cifar-10-batches-bin`` (or ``data_dir`` itself holding the batch files)."""
    if data_dir is None:
        raise DataError(f"data set 'cifar10' is read from its binary release: pass --data-dir DIR holding "
                        f"{CIFAR10_FOLDER}/ (add --download to fetch {CIFAR10_URL})")
    root = Path(data_dir)
    if download:
        download_cifar10(root)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    candidates = [root / CIFAR10_FOLDER, root]
    folder = next((c for c in candidates if all((c / name).is_file() for name in names)), None)
    if folder is None:
        fullest = max(candidates, key=lambda c: sum((c / name).is_file() for name in names))
        missing = [name for name in names if not (fullest / name).is_file()]
        raise DataError(f"cifar10: folder {fullest} lacks {', '.join(missing)} of the binary release; pass "
                        f"--download to fetch it (the pickled Python release is not read)")
    train = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    test_images, test_labels = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    where = f"cifar10 ({folder})"
    train_pixels, test_pixels = pixels_to_unit(train_images, where), pixels_to_unit(test_images, where)
    return split_dataset("cifar10", (train_pixels, train_labels), (test_pixels, test_labels), where=where,
                         classes=_class_names(folder / CIFAR10_META_FILE), val_size=val_size, seed=SPLIT_SEED,
                         augmentation="crop-flip", provenance="unverified", source="cifar10")


def _class_names(path: Path) -> tuple[str, ...]:
    """The ten names of ``batches.meta.txt`` (blank lines dropped), or the official ones when the file is absent."""
    if not path.is_file():
        return CIFAR10_CLASSES
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                  if line.strip())
    if len(names) != 10:
        raise DataError(f"{path}: {len(names)} class names, CIFAR-10 has 10 (one a line)")
    return names


def download_cifar10(root: Path) -> None:
    """Fetch and unpack the binary release into ``root/cifar-10-batches-bin`` (an explicit ``--download`` only)."""
    target = root / CIFAR10_FOLDER
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
    if all((target / name).is_file() for name in names):
        log.info("%s already holds the CIFAR-10 binary release", target)
        return
    archive = fetch(CIFAR10_URL, root / "cifar-10-binary.tar.gz", CIFAR10_MD5)
    # Unpacked beside the target and moved in file by file, so a failure never leaves a half-written batch.
    with tempfile.TemporaryDirectory(prefix=".cifar10-", dir=root) as staging:
        extract_tar(archive, Path(staging))
        missing = [name for name in names if not (Path(staging) / CIFAR10_FOLDER / name).is_file()]
        if missing:
            raise DataError(f"{archive} lacks {CIFAR10_FOLDER}/{', '.join(missing)}; delete it and download again")
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(Path(staging) / CIFAR10_FOLDER / name, target / name)
