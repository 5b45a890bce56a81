"""The Pillow reader: PNG, JPEG and TIFF files to a 2-D float32 image in [0, 1], read as the collection's images
always have been, bit for bit.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.data.reader_common import ReadInfo
from benchmark.errors import ImageDecodeError
from benchmark.schemas import FilterReason, ReaderPolicy

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_MAX_PIXELS = 20_000 * 20_000  # refuse decompression bombs rather than exhausting memory
# Pillow modes deeper than 8 bits per pixel: rescaled by their own minimum and maximum (see read_pillow).
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def open_image(handle: BinaryIO, *, source: Path | str = "<file>", policy: ReaderPolicy | None = None) -> Image.Image:
    """Open and load an image with Pillow; ImageDecodeError if it declares more than the policy's cap or won't read."""
    cap = min((policy or ReaderPolicy()).max_pixels, _MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            image = Image.open(handle)
            bands = len(image.getbands())
            if image.width * image.height * bands > cap:
                raise ImageDecodeError(source, FilterReason.TOO_LARGE,
                                       f"declares {image.width} x {image.height} pixels x {bands} band(s) = "
                                       f"{image.width * image.height * bands:,} values, more than the cap of "
                                       f"{cap:,} ([cohort.readers] max_pixels); not decoded")
            image.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # beyond Pillow's own limit, whatever our cap says
        raise ImageDecodeError(source, FilterReason.TOO_LARGE, f"not decoded: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(source, FilterReason.CORRUPT_IMAGE, f"cannot decode image: {exc}") from exc
    return image


def to_unit_grayscale(image: Image.Image) -> np.ndarray:
    """Luminance in [0, 1] as float32, following the module's decoding choices."""
    if image.mode in DEEP_MODES:
        values = np.asarray(image, dtype=np.float64)
        if values.ndim != 2:
            raise ImageDecodeError("<image>", FilterReason.CORRUPT_IMAGE, f"unexpected shape {values.shape}")
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return scaled.astype(np.float32)
    if "A" in image.mode or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


# 8-bit L, RGB or palette: luminance / 255, any alpha composited over black; deeper images (16-bit, 32-bit integer or
# float): min-max per image, because their effective bit depth is not recorded, and a constant one is all zeros.
def read_pillow(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
    """Read a PNG, JPEG or TIFF file from its open handle as a 2-D float32 array in [0, 1], and how it was read."""
    image = open_image(handle, source=path, policy=policy)
    try:
        array = to_unit_grayscale(image)
    except ImageDecodeError as exc:  # to_unit_grayscale does not know the file's name
        raise ImageDecodeError(path, exc.reason, str(exc).removeprefix("<image>: ")) from exc
    bands = len(image.getbands())
    shape = (image.height, image.width) + ((bands,) if bands > 1 else ())
    how = ("deeper than 8 bits: min-max per image (constant -> zeros)" if image.mode in DEEP_MODES
           else "8-bit luminance / 255")
    pages = getattr(image, "n_frames", 1)
    frames = f", first of {pages} pages" if pages > 1 else ""
    return array, ReadInfo(reader="pillow", policy=f"{(image.format or 'image').lower()} mode {image.mode}: {how}"
                           f"{frames}", original_shape=shape)
