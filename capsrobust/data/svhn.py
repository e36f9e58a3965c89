"""SVHN's cropped digits from the official ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5 files).

Each file holds ``X``, uint8 of shape (32, 32, 3, N) indexed (row, column, channel, image), and ``y``, (N, 1) with
values 1..10 where 10 stands for the digit 0. ``scipy.io.loadmat`` reads v5 files only (v7.3 files are HDF5, with
the signature ``\\x89HDF`` at byte 512), and reads numbers and strings, never code. The "extra" set is not read.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from capsrobust.data.base import DIGIT_CLASSES, SPLIT_SEED, Dataset, labels_to_int64, pixels_to_unit, split_dataset
from capsrobust.data.download import fetch, file_md5
from capsrobust.errors import DataError

log = logging.getLogger(__name__)

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
#: File name and published MD5 of each split (the list torchvision's SVHN class carries).
SVHN_FILES = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}
#: The validation images held out of the 73,257 training images (stratified, seeded).
SVHN_VALIDATION_SIZE = 5000
HDF5_SIGNATURE = b"\x89HDF"
HDF5_OFFSET = 512  # a v7.3 file is a 512-byte MATLAB header followed by an HDF5 superblock


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One cropped-digit file as (N, 3, 32, 32) uint8 images and (N,) int64 labels 0..9."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    v73 = (f"{path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; use the official v5 file "
           f"(pass --download), or save it again in MATLAB with save(..., '-v7')")
    with path.open("rb") as stream:
        stream.seek(HDF5_OFFSET)
        if stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise DataError(v73)
    try:
        contents = loadmat(path, variable_names=("X", "y"))
    except NotImplementedError as error:  # loadmat's own word for v7.3
        raise DataError(v73) from error
    except (MatReadError, ValueError, TypeError, IndexError, KeyError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path} ({error}); it is truncated or not SVHN's cropped-digit file") from error
    missing = [name for name in ("X", "y") if name not in contents]
    if missing:
        raise DataError(f"{path} lacks the variable {' and '.join(missing)}; expected SVHN's X (32, 32, 3, N) and y")
    pixels, labels = np.asarray(contents["X"]), np.asarray(contents["y"])
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: X is {pixels.dtype} of shape {pixels.shape}; SVHN's is uint8 (32, 32, 3, N)")
    labels = labels_to_int64(labels, pixels.shape[3], str(path))
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: labels lie in [{labels.min()}, {labels.max()}]; SVHN's are 1..10 (10 is the digit 0)")
    return pixels.transpose(3, 2, 0, 1), labels % 10  # (32, 32, 3, N) → (N, 3, 32, 32); 10 → 0


def load_svhn(data_dir: str | Path | None, download: bool = False,
              val_size: int | float = SVHN_VALIDATION_SIZE) -> Dataset:
    """``svhn`` from ``train_32x32.mat`` and ``test_32x32.mat`` in ``data_dir``; validation held out of train."""
    names = " and ".join(name for name, _ in SVHN_FILES.values())
    if data_dir is None:
        raise DataError(f"data set 'svhn' is read from {names}: pass --data-dir DIR holding them "
                        f"(add --download to fetch them from {SVHN_URL})")
    root = Path(data_dir)
    if download:
        for name, md5 in SVHN_FILES.values():
            fetch(SVHN_URL + name, root / name, md5)
    missing = [name for name, _ in SVHN_FILES.values() if not (root / name).is_file()]
    if missing:
        raise DataError(f"svhn: folder {root} lacks {', '.join(missing)}; pass --download to fetch them")
    (train_images, train_labels), (test_images, test_labels) = (read_svhn_mat(root / name)
                                                                for name, _ in SVHN_FILES.values())
    where = f"svhn ({root})"
    train_pixels, test_pixels = pixels_to_unit(train_images, where), pixels_to_unit(test_images, where)
    return split_dataset("svhn", (train_pixels, train_labels), (test_pixels, test_labels), where=where,
                         classes=DIGIT_CLASSES, val_size=val_size, seed=SPLIT_SEED, augmentation="shift",
                         provenance=_provenance(root), source="svhn")


def _provenance(root: Path) -> str:
    """"svhn" when both files have their published MD5s, else "unverified" (with a warning)."""
    if all(file_md5(root / name) == md5 for name, md5 in SVHN_FILES.values()):
        return "svhn"
    log.warning("svhn: the files in %s are not the published ones (their MD5s differ); they are read as SVHN, but "
                "results will not compare with published figures", root)
    return "unverified"
