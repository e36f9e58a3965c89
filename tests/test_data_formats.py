"""Every way in for a user's data, and the field's sets, from tiny files written by hand in each real format.

Each fixture puts a known byte at a known (c, h, w) worked out from the format's own specification (CIFAR-10: byte
``1 + c·1024 + h·32 + w`` of a record; SVHN: ``X[h, w, c, n]``; Keras: ``x[n, h, w, c]``; Pillow: ``putpixel((w,
h))``), and the test asserts the loaded ``images[n, c, h, w]``, and that nothing else is lit, so a reader and a
writer cannot agree on a shared transposition. Nothing is downloaded: the network function is replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from capsrobust.data import (
    Dataset,
    Split,
    cifar,
    dataset_from_arrays,
    dataset_from_folder,
    dataset_from_torchvision,
    dataset_name,
    download,
    images,
    load_dataset,
    read_cifar10_batch,
)
from capsrobust.errors import DataError

# ---------------------------------------------------------------- CIFAR-10 binary


def _cifar_record(label: int, value: int, c: int, h: int, w: int) -> bytes:
    record = bytearray(3073)
    record[0] = label
    record[1 + c * 1024 + h * 32 + w] = value  # the record layout: label, then R, G, B planes, each row-major 32×32
    return bytes(record)


def _cifar_folder(root: Path, per_batch: int = 4, test: int = 6) -> Path:
    """Batches whose record k (counted over all training batches) has label k % 10 and byte 10 + k at (2, 5, 17);
    test record i has label i % 10 and byte 200 + i at (1, 30, 3)."""
    folder = root / cifar.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    for batch in range(5):
        ks = range(batch * per_batch, (batch + 1) * per_batch)
        (folder / f"data_batch_{batch + 1}.bin").write_bytes(b"".join(_cifar_record(k % 10, 10 + k, 2, 5, 17)
                                                                       for k in ks))
    (folder / "test_batch.bin").write_bytes(b"".join(_cifar_record(i % 10, 200 + i, 1, 30, 3) for i in range(test)))
    (folder / "batches.meta.txt").write_text("\n".join(cifar.CIFAR10_CLASSES) + "\n\n")
    return folder


def _only_lit(image: torch.Tensor) -> tuple[int, ...]:
    """The (c, h, w) of the one non-zero pixel of an image."""
    lit = torch.nonzero(image).tolist()
    assert len(lit) == 1, lit
    return tuple(lit[0])


def test_cifar10_binary_pixels_land_where_the_record_layout_puts_them(tmp_path):
    folder = _cifar_folder(tmp_path)
    images, labels = read_cifar10_batch(folder / "data_batch_2.bin")
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [4, 5, 6, 7]
    assert images[1, 2, 5, 17] == 10 + 5 and int(images.astype(int).sum()) == sum(10 + k for k in range(4, 8))
    dataset = load_dataset("cifar10", tmp_path, val_size=10)
    assert (dataset.name, dataset.input_shape, dataset.num_classes) == ("cifar10", (3, 32, 32), 10)
    assert dataset.classes[0] == "airplane" and dataset.augmentation == "crop-flip"
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (10, 10, 6)
    for i in range(6):  # the test split keeps the file's order
        assert _only_lit(dataset.test.images[i]) == (1, 30, 3)
        assert dataset.test.images[i, 1, 30, 3].item() == pytest.approx((200 + i) / 255)
        assert dataset.test.labels[i].item() == i % 10
    for split in (dataset.train, dataset.val):
        for image, label in zip(split.images, split.labels, strict=True):
            assert _only_lit(image) == (2, 5, 17)
            assert round(image[2, 5, 17].item() * 255) % 10 == label.item()  # byte 10 + k with label k % 10


def test_cifar10_refuses_a_bad_record_size_and_labels_past_nine_in_one_line(tmp_path):
    folder = _cifar_folder(tmp_path)
    (folder / "test_batch.bin").write_bytes(_cifar_record(1, 1, 0, 0, 0) * 2 + b"\x00" * 5)
    with pytest.raises(DataError, match=r"test_batch\.bin: 6,151 bytes is not a whole number of 3,073-byte records"):
        load_dataset("cifar10", tmp_path, val_size=10)
    (folder / "test_batch.bin").write_bytes(_cifar_record(1, 1, 0, 0, 0) + _cifar_record(10, 1, 0, 0, 0))
    with pytest.raises(DataError, match=r"test_batch\.bin: record 1 has label 10, outside 0\.\.9"):
        load_dataset("cifar10", tmp_path, val_size=10)


def test_cifar10_names_missing_files_and_never_fetches_without_download(tmp_path, monkeypatch):
    def no_network(url: str) -> io.BytesIO:
        raise AssertionError(f"fetched {url} without --download")

    monkeypatch.setattr(download, "open_url", no_network)
    with pytest.raises(DataError, match=r"lacks data_batch_1\.bin.*pass --download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="pass --data-dir DIR holding cifar-10-batches-bin/"):
        load_dataset("cifar10")


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes, md5: str | None = None) -> list[str]:
    """Replace the network with ``payload``; the archive's expected MD5 becomes ``md5`` (its own by default)."""
    fetched: list[str] = []

    def open_url(url: str) -> io.BytesIO:
        fetched.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(download, "open_url", open_url)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5 or hashlib.md5(payload).hexdigest())
    return fetched


def _official_members(tmp_path: Path) -> dict[str, bytes]:
    folder = _cifar_folder(tmp_path / "source")
    return {f"{cifar.CIFAR10_FOLDER}/{path.name}": path.read_bytes() for path in folder.iterdir()}


def test_cifar10_download_checks_the_md5_and_keeps_nothing_on_a_mismatch(tmp_path, monkeypatch):
    fetched = _serve(monkeypatch, b"an error page, not the archive", md5=cifar.CIFAR10_MD5)
    target = tmp_path / "data"
    with pytest.raises(DataError, match=r"MD5 is [0-9a-f]{32}, not the published c32a1d4ab5d03f1284b67883e8d87530"):
        load_dataset("cifar10", target, download=True)
    assert fetched == [cifar.CIFAR10_URL] and list(target.iterdir()) == []


def test_cifar10_download_unpacks_the_checked_archive_and_loads_it(tmp_path, monkeypatch):
    _serve(monkeypatch, _tar_gz(_official_members(tmp_path)))
    dataset = load_dataset("cifar10", tmp_path / "data", download=True, val_size=10)
    assert dataset.test.images[2, 1, 30, 3].item() == pytest.approx(202 / 255)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


@pytest.mark.parametrize("without_filter", [False, True])
@pytest.mark.parametrize(
    ("members", "links"),
    [
        ({}, {"cifar-10-batches-bin/evil": "/etc/passwd"}),
        ({"/tmp/absolute.bin": b"x"}, {}),
        ({"cifar-10-batches-bin/../../escape.bin": b"x"}, {}),
    ],
    ids=["symlink", "absolute", "dot-dot"],
)
def test_cifar10_archive_members_that_are_links_or_escape_are_refused(tmp_path, monkeypatch, members, links,
                                                                        without_filter):
    if without_filter:  # a Python without tarfile's filters: the hand check stands alone
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    _serve(monkeypatch, _tar_gz({**_official_members(tmp_path), **members}, links))
    with pytest.raises(DataError, match=r"is a link, a device or a path outside the archive's folder; refused"):
        load_dataset("cifar10", tmp_path / "data", download=True)
    assert not (tmp_path / "data" / cifar.CIFAR10_FOLDER).exists() and not (tmp_path / "escape.bin").exists()


# ---------------------------------------------------------------- SVHN .mat


def _svhn_mat(path: Path, n: int, value0: int) -> None:
    """X[h, w, c, n] (SVHN's own indexing): image n has byte value0 + n at (h, w, c) = (4, 21, 1); y = 1..10."""
    from scipy.io import savemat

    pixels = np.zeros((32, 32, 3, n), dtype=np.uint8)
    pixels[4, 21, 1, :] = value0 + np.arange(n)
    savemat(path, {"X": pixels, "y": (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]})  # MATLAB v5


def test_svhn_mat_is_transposed_to_nchw_and_ten_means_zero(tmp_path):
    _svhn_mat(tmp_path / "train_32x32.mat", 20, 10)
    _svhn_mat(tmp_path / "test_32x32.mat", 12, 100)
    dataset = load_dataset("svhn", tmp_path, val_size=10)
    assert (dataset.input_shape, dataset.augmentation, dataset.provenance) == ((3, 32, 32), "shift", "unverified")
    for i in range(12):
        assert _only_lit(dataset.test.images[i]) == (1, 4, 21)
        assert dataset.test.images[i, 1, 4, 21].item() == pytest.approx((100 + i) / 255)
        assert dataset.test.labels[i].item() == (i % 10 + 1) % 10  # y = 10 is the digit 0
    assert dataset.test.labels[9].item() == 0


def test_svhn_refuses_v73_files_and_labels_outside_one_to_ten(tmp_path, monkeypatch):
    _svhn_mat(tmp_path / "train_32x32.mat", 20, 10)
    header = b"MATLAB 7.3 MAT-file".ljust(512, b" ")  # then the HDF5 superblock, signature first
    (tmp_path / "test_32x32.mat").write_bytes(header + b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataError, match=r"test_32x32\.mat is a MATLAB v7\.3 \(HDF5\) file"):
        load_dataset("svhn", tmp_path, val_size=10)
    _svhn_mat(tmp_path / "test_32x32.mat", 12, 100)

    def v73(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("Please use HDF reader for matlab v7.3 files")

    monkeypatch.setattr("scipy.io.loadmat", v73)
    with pytest.raises(DataError, match=r"MATLAB v7\.3"):
        load_dataset("svhn", tmp_path, val_size=10)
    monkeypatch.undo()
    from scipy.io import savemat

    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]])})
    with pytest.raises(DataError, match=r"test_32x32\.mat: labels lie in \[1, 11\]; SVHN's are 1\.\.10"):
        load_dataset("svhn", tmp_path, val_size=10)
    with pytest.raises(DataError, match=r"lacks train_32x32\.mat, test_32x32\.mat; pass --download"):
        load_dataset("svhn", tmp_path / "empty")


def test_svhn_download_refuses_a_file_whose_md5_is_not_the_published_one(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "open_url", lambda url: io.BytesIO(b"tampered"))
    with pytest.raises(DataError, match=r"train_32x32\.mat: the download's MD5 .* e26dedcc434d2e4c54c9b2d4a06d8373"):
        load_dataset("svhn", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- Keras-style .npz


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def _lit_arrays(shape: tuple[int, ...], spot: tuple[int, ...], dtype: type = np.uint8, scale: float = 1.0,
                n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """n images of ``shape``, image i lit with (i + 1)·scale at ``spot`` (the format's own axes); labels i % 5."""
    images = np.zeros((n, *shape), dtype=dtype)
    images[(slice(None), *spot)] = (np.arange(n) + 1) * scale
    return images, (np.arange(n) % 5)


@pytest.mark.parametrize(
    ("shape", "spot", "dtype", "scale", "expected_shape", "expected_spot"),
    [
        ((7, 5), (3, 4), np.uint8, 10, (1, 7, 5), (0, 3, 4)),  # N×H×W
        ((5, 7, 3), (2, 6, 1), np.uint8, 10, (3, 5, 7), (1, 2, 6)),  # N×H×W×C
        ((6, 9, 1), (5, 8, 0), np.float32, 0.04, (1, 6, 9), (0, 5, 8)),  # N×H×W×1, floats in [0, 1]
        ((2, 6, 5), (1, 4, 2), np.float64, 0.04, (2, 6, 5), (1, 4, 2)),  # N×C×H×W (last axis 5)
        ((3, 32, 3), (2, 30, 0), np.uint8, 10, (3, 3, 32), (0, 2, 30)),  # ambiguous: the rule reads channels last
    ],
    ids=["NHW", "NHWC", "NHW1-float", "NCHW-float", "N3x32x3"],
)
def test_npz_layouts_put_each_pixel_where_the_rule_says(tmp_path, shape, spot, dtype, scale, expected_shape,
                                                        expected_spot):
    x_train, y_train = _lit_arrays(shape, spot, dtype, scale)
    x_test, y_test = _lit_arrays(shape, spot, dtype, scale, n=6)
    name = _npz(tmp_path / "mine.npz", x_train=x_train, y_train=y_train[:, None], x_test=x_test, y_test=y_test)
    dataset = load_dataset(name, val_size=5)
    assert (dataset.name, dataset.input_shape, dataset.num_classes) == ("npz:mine", expected_shape, 5)
    assert dataset.source == f"npz:{(tmp_path / 'mine.npz').resolve()}" and dataset_name(name) == "npz:mine"
    divisor = 255 if dtype == np.uint8 else 1
    for i in range(6):
        assert _only_lit(dataset.test.images[i]) == expected_spot
        assert dataset.test.images[i][expected_spot].item() == pytest.approx((i + 1) * scale / divisor, rel=1e-6)
    assert torch.bincount(dataset.val.labels).tolist() == [1] * 5  # stratified


def test_npz_refuses_pickles_out_of_range_floats_and_shapes_that_disagree(tmp_path):
    x, y = _lit_arrays((4, 4), (0, 0))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x_train=x, y_train=np.array([object()] * 20, dtype=object), x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"pickled\.npz holds a pickled \(object\) array"):
        load_dataset(f"npz:{pickled}")
    cases = {
        "float pixels must lie in \\[0, 1\\], found \\[0.0, 20.0\\]": dict(x_train=x.astype(np.float32)),
        "y_train: 20 images but 19 labels": dict(y_train=y[:19]),
        "training images are 1×4×4 \\(C×H×W\\) but test images 1×5×4": dict(x_test=np.zeros((20, 5, 4), np.uint8)),
        "y_test: labels of dtype float64": dict(y_test=y.astype(np.float64)),
        "lacks y_test": dict(y_test=None),
    }
    for message, change in cases.items():
        arrays = {key: value for key, value in {**dict(x_train=x, y_train=y, x_test=x, y_test=y), **change}.items()
                  if value is not None}
        with pytest.raises(DataError, match=message):
            load_dataset(_npz(tmp_path / "bad.npz", **arrays), val_size=5)
    (tmp_path / "plain.npz").write_bytes(b"\x93NUMPY not a zip")
    with pytest.raises(DataError, match=r"plain\.npz is not an \.npz archive"):
        load_dataset(f"npz:{tmp_path / 'plain.npz'}")
    named = _npz(tmp_path / "named.npz", x_train=x, y_train=y, x_test=x, y_test=y + 3, classes=np.array(list("abcde")))
    with pytest.raises(DataError, match=r"named\.npz: test label 7 is outside 0\.\.4 for its 5 classes"):
        load_dataset(named, val_size=5)


# ---------------------------------------------------------------- image folders


def _png(path: Path, mode: str, size: tuple[int, int], spot: tuple[int, int], value: int | tuple[int, ...]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new(mode, size)  # size is (W, H)
    image.putpixel(spot, value)  # spot is (x, y) = (w, h)
    image.save(path)


def test_image_folder_of_grey_pngs_reads_classes_sorted_and_pixels_in_place(tmp_path):
    for label, name in enumerate(("cat", "ant")):  # sorted: ant = 0, cat = 1
        for k in range(10):
            _png(tmp_path / "pets" / name / f"{k}.png", "L", (7, 5), (6, 2), 10 + 20 * (1 - label) + k)
    dataset = dataset_from_folder(tmp_path / "pets", val_size=4, test_size=4)
    assert (dataset.name, dataset.classes, dataset.input_shape) == ("folder:pets", ("ant", "cat"), (1, 5, 7))
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (12, 4, 4)
    for split in (dataset.train, dataset.val, dataset.test):
        for image, label in zip(split.images, split.labels, strict=True):
            assert _only_lit(image) == (0, 2, 6)  # putpixel((w=6, h=2))
            assert (round(image[0, 2, 6].item() * 255) < 30) == (label.item() == 0)  # ant's bytes are 10..19


def test_image_folder_of_rgb_with_train_and_test_folders_and_a_grey_image_made_rgb(tmp_path, caplog):
    for part, count in (("train", 6), ("test", 2)):
        for name in ("a", "b"):
            for k in range(count):
                _png(tmp_path / part / name / f"{k}.png", "RGB", (4, 6), (1, 5), (0, 0, 77))
    _png(tmp_path / "test" / "b" / "grey.png", "L", (4, 6), (1, 5), 99)
    with caplog.at_level(logging.WARNING, logger="capsrobust.data"):
        dataset = load_dataset(f"folder:{tmp_path}", val_size=4)
    assert "1 grey images among colour ones are read as RGB" in caplog.text
    assert dataset.input_shape == (3, 6, 4) and len(dataset.test) == 5 and dataset.classes == ("a", "b")
    for image in dataset.train.images:
        assert _only_lit(image) == (2, 5, 1) and image[2, 5, 1].item() == pytest.approx(77 / 255)
    grey = [image for image in dataset.test.images if image[0, 5, 1] > 0]
    assert len(grey) == 1 and torch.allclose(grey[0][:, 5, 1], torch.full((3,), 99 / 255))


def test_image_folder_refuses_mixed_sizes_naming_two_files_unless_asked_to_resize(tmp_path):
    for k in range(6):
        _png(tmp_path / "a" / f"{k}.png", "L", (8, 8), (0, 0), 1)
        _png(tmp_path / "b" / f"{k}.png", "L", (8, 8), (0, 0), 1)
    _png(tmp_path / "b" / "wide.png", "L", (9, 8), (0, 0), 1)
    with pytest.raises(DataError, match=r"images differ in size: .*a/0\.png is 8×8 but .*b/wide\.png is 9×8"):
        load_dataset(f"folder:{tmp_path}")
    assert dataset_from_folder(tmp_path, resize=(8, 8), val_size=2, test_size=2).input_shape == (1, 8, 8)


def test_image_folder_refuses_sixteen_bit_modes_and_decompression_bombs(tmp_path, monkeypatch):
    from PIL import Image

    _png(tmp_path / "deep" / "a" / "x.png", "I;16", (4, 4), (0, 0), 1000)
    with pytest.raises(DataError, match=r"x\.png: image mode 'I;16' is not read"):
        dataset_from_folder(tmp_path / "deep")
    _png(tmp_path / "big" / "a" / "x.png", "L", (5, 5), (0, 0), 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow warns past the limit: an error here
    with pytest.raises(DataError, match=r"x\.png: refused as a possible decompression bomb"):
        dataset_from_folder(tmp_path / "big")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone switched Pillow's check off: ours stays on
    monkeypatch.setattr(images, "PILLOW_DEFAULT_MAX_PIXELS", 20)
    with pytest.raises(DataError, match=r"x\.png: 5 × 5 pixels, more than the 20 Pillow allows"):
        dataset_from_folder(tmp_path / "big")


# ---------------------------------------------------------------- the Python API


def test_arrays_of_any_shape_and_class_count(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x_train = torch.rand(30, 2, 6, 9, generator=generator)  # C = 2, H ≠ W; the last axis (9) says channels first
    x_test = torch.rand(9, 2, 6, 9, generator=generator)
    dataset = dataset_from_arrays(x_train, torch.arange(30) % 3, x_test, torch.arange(9) % 3, name="mine",
                                  classes=("red", "green", "blue"), val_size=6, augmentation="crop-flip")
    assert (dataset.input_shape, dataset.num_classes, dataset.augmentation) == ((2, 6, 9), 3, "crop-flip")
    assert torch.equal(dataset.test.images, x_test) and torch.bincount(dataset.val.labels).tolist() == [2, 2, 2]
    ambiguous = np.zeros((20, 3, 32, 3), np.uint8)
    auto = dataset_from_arrays(ambiguous, np.arange(20) % 2, ambiguous, np.arange(20) % 2, val_size=4)
    told = dataset_from_arrays(ambiguous, np.arange(20) % 2, ambiguous, np.arange(20) % 2, val_size=4, layout="nchw")
    assert (auto.input_shape, told.input_shape) == ((3, 3, 32), (3, 32, 3))
    with pytest.raises(DataError, match=r"arrays: training label 3 is outside 0\.\.2 for its 3 classes"):
        dataset_from_arrays(x_train, torch.arange(30) % 4, x_test, torch.arange(9) % 3, classes=("a", "b", "c"))


class _FakeVision:
    """What torchvision's data sets look like to a reader: len(), items (image, label), ``classes``."""

    classes = ("zero", "one")

    def __init__(self, n: int, as_tensor: bool) -> None:
        self.n, self.as_tensor = n, as_tensor

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[object, int]:
        from PIL import Image

        if self.as_tensor:  # ToTensor's output: (C, H, W) floats in [0, 1]
            image = torch.zeros(3, 4, 6)
            image[2, 1, 5] = 0.5
            return image, index % 2
        picture = Image.new("RGB", (6, 4))
        picture.putpixel((5, 1), (0, 0, 128))
        return picture, torch.tensor(index % 2)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_torchvision_style_objects_give_the_same_pixels_as_pil_or_tensors(as_tensor):
    dataset = dataset_from_torchvision(_FakeVision(10, as_tensor), _FakeVision(4, as_tensor), val_size=2)
    assert (dataset.classes, dataset.input_shape, len(dataset.test)) == (("zero", "one"), (3, 4, 6), 4)
    for image in dataset.test.images:
        assert _only_lit(image) == (2, 1, 5)
        assert image[2, 1, 5].item() == pytest.approx(0.5 if as_tensor else 128 / 255)


def test_torchvision_normalised_tensors_are_refused():
    class Normalised(_FakeVision):
        def __getitem__(self, index: int) -> tuple[object, int]:
            return torch.full((1, 2, 2), -0.4), 0

    with pytest.raises(DataError, match=r"train_set: float pixels must lie in \[0, 1\]"):
        dataset_from_torchvision(Normalised(4, True), Normalised(2, True))


def test_dataset_checks_shapes_labels_and_augmentation():
    def split(n: int, shape: tuple[int, ...], top: int) -> Split:
        return Split(torch.zeros(n, *shape), torch.arange(n) % top)

    good = Dataset("x", split(4, (3, 5, 7), 2), split(2, (3, 5, 7), 2), split(2, (3, 5, 7), 2), ("a", "b"))
    assert (good.input_shape, good.num_classes, good.augmentation, good.source) == ((3, 5, 7), 2, "none", "")
    with pytest.raises(DataError, match=r"x: the splits' images differ in shape \(train 3×5×7, val 3×5×7, test 1×5×7"):
        Dataset("x", good.train, good.val, split(2, (1, 5, 7), 2), ("a", "b"))
    with pytest.raises(DataError, match=r"x: val labels lie in \[0, 2\], outside \[0, 2\)"):
        Dataset("x", good.train, split(3, (3, 5, 7), 3), good.test, ("a", "b"))
    with pytest.raises(DataError, match="unknown augmentation 'flip'"):
        Dataset("x", good.train, good.val, good.test, ("a", "b"), augmentation="flip")
    with pytest.raises(DataError, match="unknown data set 'npzz:x'"):
        load_dataset("npzz:x")
    with pytest.raises(DataError, match="--download fetches the named data sets only"):
        load_dataset("npz:x.npz", download=True)
    with pytest.raises(DataError, match="mnist has fixed splits"):
        load_dataset("mnist", val_size=10)
