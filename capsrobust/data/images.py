"""Image files and PIL images as pixel arrays, for image folders and torchvision-style data sets.

Modes are converted explicitly: grey modes ("1", "L", "LA") become one channel, colour modes ("RGB", "RGBA", "P",
"PA", "CMYK", "YCbCr", ...) three RGB channels; an alpha channel is dropped, not composited. Modes of more than 8
bits ("I;16", "I", "F") are refused: their range is not [0, 255], and Pillow's conversion would clip them. When a
set mixes grey and colour images, the grey ones are repeated to three channels (what Pillow's L → RGB does), so the
whole set is RGB. Pillow's decompression-bomb limit stays on: its warning is an error here, and an image of more
pixels than ``Image.MAX_IMAGE_PIXELS`` (Pillow's default when someone has switched it off) is refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capsrobust.errors import DataError

log = logging.getLogger(__name__)

GREY_MODES = frozenset({"1", "L", "LA", "La"})
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
#: Pillow's own default for ``Image.MAX_IMAGE_PIXELS`` (about 89 megapixels), used when it has been set to None.
PILLOW_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


def pil_pixels(image: Any, where: str, resize: tuple[int, int] | None = None) -> np.ndarray:
    """A PIL image as (H, W, C) uint8, C = 1 for grey modes and 3 for colour ones; ``resize`` is (H, W)."""
    from PIL import Image

    if image.mode in GREY_MODES:
        image = image.convert("L")
    elif image.mode in COLOUR_MODES:
        image = image.convert("RGB")
    else:
        raise DataError(f"{where}: image mode {image.mode!r} is not read (8-bit grey or colour only); "
                        f"convert it to L or RGB")
    if resize is not None and image.size != (resize[1], resize[0]):
        image = image.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def read_image(path: Path, resize: tuple[int, int] | None = None) -> np.ndarray:
    """One image file as (H, W, C) uint8 (``pil_pixels``), with the decompression-bomb limit on."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS or PILLOW_DEFAULT_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > limit:
                    raise DataError(f"{path}: {image.width} × {image.height} pixels, more than the {limit:,} Pillow "
                                    f"allows (a decompression bomb, or an image far too large to train on)")
                image.load()
                return pil_pixels(image, str(path), resize)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{path}: refused as a possible decompression bomb ({error})") from error
    except (OSError, SyntaxError, ValueError) as error:  # UnidentifiedImageError and truncation are OSErrors
        raise DataError(f"cannot read image {path} ({error}); it is truncated or not an image") from error


def stack_pixels(pixels: Sequence[np.ndarray], names: Sequence[str], where: str) -> np.ndarray:
    """(H, W, C) arrays as one (N, H, W, C) array; mixed sizes are refused, mixed grey and colour made RGB."""
    if not pixels:
        raise DataError(f"{where}: no images")
    first = pixels[0].shape[:2]
    odd = next((index for index, array in enumerate(pixels) if array.shape[:2] != first), None)
    if odd is not None:
        raise DataError(f"{where}: images differ in size: {names[0]} is {first[1]}×{first[0]} but {names[odd]} is "
                        f"{pixels[odd].shape[1]}×{pixels[odd].shape[0]} (width×height); resize them to one size "
                        f"(dataset_from_folder(..., resize=(H, W)) does it)")
    channels = {array.shape[2] for array in pixels}
    if channels == {1, 3}:
        grey = sum(array.shape[2] == 1 for array in pixels)
        log.warning("%s: %d grey images among colour ones are read as RGB (grey repeated in each channel)", where, grey)
        pixels = [np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array for array in pixels]
    return np.stack(pixels)  # (N, H, W, C)
