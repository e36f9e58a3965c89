"""Data sets as float tensors in pixel space: images (N, C, H, W) in [0, 1], int64 labels in [0, K).

There is no normalisation here on purpose: models normalise inside their forward pass, so an attack's epsilon means
the same thing in pixel space for every model. Ways in (docs/data.md has each format, its checks and the layout
rule): the named sets (``load_dataset("mnist-5k")``, the offline default; ``mnist``, ``fashion-mnist``, ``svhn``,
``cifar10`` from their official files, fetched only with ``download``), a Keras-style ``.npz`` (``npz:PATH``), an
image folder (``folder:DIR``), and from Python ``dataset_from_arrays`` and ``dataset_from_torchvision``. Nothing is
ever unpickled.

Modules: ``base`` (Split, Dataset, the shared rules), ``mnist`` (mnist-5k, IDX files), ``svhn``, ``cifar``,
``npz``, ``folder`` and ``images`` (Pillow), ``arrays`` (the Python API), ``download`` (fetch, MD5, safe unpacking),
``load`` (``load_dataset``: the names and forms).
"""

from capsrobust.data.arrays import dataset_from_arrays, dataset_from_torchvision
from capsrobust.data.base import (
    AUGMENTATIONS,
    DIGIT_CLASSES,
    SPLIT_SEED,
    SPLITS,
    Dataset,
    DatasetName,
    Split,
    to_nchw,
)
from capsrobust.data.cifar import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, read_cifar10_batch
from capsrobust.data.folder import dataset_from_folder
from capsrobust.data.load import FORMS_HELP, dataset_name, load_dataset
from capsrobust.data.mnist import (
    FASHION_CLASSES,
    FULL_VALIDATION_SIZE,
    IDX_FILES,
    KNOWN_PAYLOADS,
    MAX_IDX_BYTES,
    MNIST_5K_SIZES,
    MNIST_5K_SPLIT_SEED,
    TORCHVISION_SUBDIRS,
    identify_payloads,
)
from capsrobust.data.npz import dataset_from_npz
from capsrobust.data.svhn import SVHN_FILES, SVHN_URL, read_svhn_mat

__all__ = [
    "AUGMENTATIONS",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "FORMS_HELP",
    "FULL_VALIDATION_SIZE",
    "IDX_FILES",
    "KNOWN_PAYLOADS",
    "MAX_IDX_BYTES",
    "MNIST_5K_SIZES",
    "MNIST_5K_SPLIT_SEED",
    "SPLITS",
    "SPLIT_SEED",
    "SVHN_FILES",
    "SVHN_URL",
    "TORCHVISION_SUBDIRS",
    "Dataset",
    "DatasetName",
    "Split",
    "dataset_from_arrays",
    "dataset_from_folder",
    "dataset_from_npz",
    "dataset_from_torchvision",
    "dataset_name",
    "identify_payloads",
    "load_dataset",
    "read_cifar10_batch",
    "read_svhn_mat",
    "to_nchw",
]
