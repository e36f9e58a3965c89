"""``load_dataset``: the one entry point for every way ``--data`` names a data set.

A name is either a named set (``DatasetName``: read from its official files in ``data_dir``, fetched only with
``download``) or a file form ``npz:PATH`` / ``folder:DIR`` (a user's own data, never fetched). Both are registries:
adding a named set or a form is one entry here and its reader module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from capsrobust.data.base import Dataset, DatasetName
from capsrobust.data.cifar import load_cifar10
from capsrobust.data.folder import dataset_from_folder
from capsrobust.data.mnist import load_idx_dataset, load_mnist_5k
from capsrobust.data.npz import dataset_from_npz
from capsrobust.data.svhn import load_svhn
from capsrobust.errors import DataError

ValSize = int | float | None
#: Named sets whose splits are fixed by their documented sizes, so ``val_size`` does not apply.
FIXED_SPLITS = frozenset({DatasetName.MNIST_5K, DatasetName.MNIST, DatasetName.FASHION_MNIST})


def _sized(val_size: ValSize) -> dict[str, Any]:
    """``val_size`` as a keyword when given, so each reader's own default applies otherwise."""
    return {} if val_size is None else {"val_size": val_size}


NAMED_LOADERS: dict[DatasetName, Callable[[str | Path | None, bool, ValSize], Dataset]] = {
    DatasetName.MNIST_5K: lambda data_dir, download, val_size: load_mnist_5k(),
    DatasetName.MNIST: lambda data_dir, download, val_size: load_idx_dataset(DatasetName.MNIST, data_dir, download),
    DatasetName.FASHION_MNIST: lambda data_dir, download, val_size: load_idx_dataset(
        DatasetName.FASHION_MNIST, data_dir, download),
    DatasetName.SVHN: lambda data_dir, download, val_size: load_svhn(data_dir, download, **_sized(val_size)),
    DatasetName.CIFAR10: lambda data_dir, download, val_size: load_cifar10(data_dir, download, **_sized(val_size)),
}
FILE_FORMS: dict[str, Callable[[Path, ValSize], Dataset]] = {
    "npz": lambda path, val_size: dataset_from_npz(path, **_sized(val_size)),
    "folder": lambda path, val_size: dataset_from_folder(path, **_sized(val_size)),
}
FORMS_HELP = ", ".join([*(name.value for name in DatasetName), "npz:PATH", "folder:DIR"])


def load_dataset(
    name: str | DatasetName, data_dir: str | Path | None = None, download: bool = False, *,
    val_size: int | float | None = None,
) -> Dataset:
    """The data set ``name`` names (a ``DatasetName``, ``npz:PATH`` or ``folder:DIR``; docs/data.md has them all).

    ``data_dir`` holds a named set's files (mnist-5k needs none); ``download`` fetches them there first, and only
    then is anything fetched. ``val_size`` (a count, or a fraction when a float below 1) replaces the validation
    size of svhn (5,000), cifar10 (5,000) and the file forms (0.1); the MNIST family's splits are fixed.
    """
    form, path = _file_form(name)
    if form is not None and path is not None:
        if download:
            raise DataError(f"--download fetches the named data sets only; {name} is read from its own files")
        return FILE_FORMS[form](path, val_size)
    dataset = _parse(name)
    if val_size is not None and dataset in FIXED_SPLITS:
        raise DataError(f"{dataset.value} has fixed splits (docs/data.md); val_size applies to svhn, cifar10 and "
                        f"the file forms only")
    return NAMED_LOADERS[dataset](data_dir, download, val_size)


def dataset_name(name: str | DatasetName) -> str:
    """The ``Dataset.name`` that ``load_dataset(name)`` gives, without reading anything; unknown names refused.

    A named set keeps its name; ``npz:PATH`` becomes ``npz:STEM`` and ``folder:DIR`` becomes ``folder:NAME`` (the
    folder's own name), short enough for run and sweep folders, and what runs record and compare.
    """
    form, path = _file_form(name)
    if form == "npz" and path is not None:
        return f"npz:{path.stem}"
    if form == "folder" and path is not None:
        return f"folder:{path.resolve().name}"
    return _parse(name).value


def _file_form(name: str | DatasetName) -> tuple[str | None, Path | None]:
    """(form, path) for ``npz:PATH`` or ``folder:DIR``, else (None, None)."""
    if isinstance(name, DatasetName):
        return None, None
    form, colon, rest = str(name).partition(":")
    if not colon or form not in FILE_FORMS:
        return None, None
    if not rest:
        raise DataError(f"{name!r} names no file; write {form}:PATH, e.g. {form}:data/mine"
                        f"{'.npz' if form == 'npz' else ''}")
    return form, Path(rest).expanduser()


def _parse(name: str | DatasetName) -> DatasetName:
    try:
        return DatasetName(name)
    except ValueError:
        raise DataError(f"unknown data set {name!r}; choose one of: {FORMS_HELP}") from None
