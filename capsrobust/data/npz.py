"""A Keras-style ``.npz``: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (and optionally ``classes``).

Read with ``np.load(..., allow_pickle=False)``: an object array inside would need unpickling, which runs code, so it
is refused with one line naming the file. Images follow the layout rule of ``base.to_nchw`` (N×H×W; N×H×W×C when
the last axis is 1, 3 or 4; else N×C×H×W) and must be uint8 in [0, 255] or floats in [0, 1]; labels are integers of
shape (N,) or (N, 1). ``classes``, when present, is an array of strings naming the labels 0..K-1.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from capsrobust.data.arrays import arrays_to_dataset
from capsrobust.data.base import SPLIT_SEED, Dataset
from capsrobust.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file with members, an empty one


def dataset_from_npz(path: str | Path, *, val_size: int | float = 0.1, seed: int = SPLIT_SEED,
                     augmentation: str = "none") -> Dataset:
    """A ``Dataset`` named ``npz:STEM`` from a Keras-style ``.npz``; validation held out of the training set."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist; npz:PATH names a .npz holding {', '.join(NPZ_KEYS)}")
    with path.open("rb") as stream:
        if stream.read(4) not in ZIP_SIGNATURES:
            raise DataError(f"{path} is not an .npz archive (np.savez writes one holding {', '.join(NPZ_KEYS)})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}; a Keras-style .npz holds {', '.join(NPZ_KEYS)}")
            arrays = {key: archive[key] for key in NPZ_KEYS}
            classes = archive["classes"] if "classes" in archive.files else None
    except ValueError as error:
        if "pickle" in str(error) or "Object arrays" in str(error):
            raise DataError(f"{path} holds a pickled (object) array, refused because loading it would run code; "
                            f"save plain arrays (uint8 or float images, integer labels)") from error
        raise DataError(f"cannot read {path} ({error})") from error
    except (OSError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise DataError(f"cannot read {path} ({error}); it is truncated or not an .npz archive") from error
    if classes is not None and (classes.ndim != 1 or classes.dtype.kind not in "US"):
        raise DataError(f"{path}: classes is {classes.dtype} of shape {classes.shape}; expected a 1-D array of names")
    names = None if classes is None else tuple(str(name) for name in classes)
    given = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    return arrays_to_dataset(given, name=f"npz:{path.stem}", where=str(path), classes=names, val_size=val_size,
                             seed=seed, augmentation=augmentation, layout="auto", provenance="unverified",
                             source=f"npz:{path.resolve()}")
