"""What every image reader shares: why a file was refused, the record of how it was read, the size cap checked
before decoding, and the NaN handling and scaling that end every reader's pipeline in a [0, 1] float32 image.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from benchmark.errors import ImageDecodeError
from benchmark.schemas import FilterReason, ReaderPolicy

T = TypeVar("T")


class ReadFailure(StrEnum):
    """Why a file could not be read (the `reason` of the ImageDecodeError raised); each is a FilterReason too."""

    MISSING_FILE = FilterReason.MISSING_FILE.value
    EMPTY_FILE = FilterReason.EMPTY_FILE.value
    CORRUPT_IMAGE = FilterReason.CORRUPT_IMAGE.value  # Pillow could not decode it (as in benchmark.data.imaging)
    UNREADABLE_FILE = "unreadable_file"  # the operating system refused to read it (permissions, a folder)
    UNSUPPORTED_TYPE = "unsupported_type"  # a suffix no reader handles
    NOT_DICOM = "not_dicom"  # no DICOM marker, and nothing image-like when read without it
    CORRUPT_DICOM = "corrupt_dicom"  # DICOM marker present, but pydicom cannot parse the data set
    NO_PIXEL_DATA = "no_pixel_data"  # a DICOM object without (7FE0,0010) Pixel Data
    TRUNCATED = "truncated"  # the file ends before a value it declares (pixel data or voxels cut short)
    # compressed without a decoder (the message names the package), attributes decoding needs missing (named),
    # or inconsistent ones
    UNDECODABLE_PIXEL_DATA = "undecodable_pixel_data"
    NOT_GRAYSCALE = "not_grayscale"  # colour or palette DICOM, RGB or complex NIfTI
    UNEXPECTED_SHAPE = "unexpected_shape"  # pixel or voxel array that is not 2-D after the reader's reductions
    NOT_NIFTI = "not_nifti"  # nibabel cannot tell the file is NIfTI (or its header is cut short)
    VOLUME_4D = "volume_4d"  # NIfTI with a fourth (or higher) axis longer than 1
    CONSTANT_IMAGE = "constant_image"  # every pixel equal: nothing to scale to [0, 1]
    TOO_LARGE = FilterReason.TOO_LARGE.value  # declares more values than [cohort.readers] max_pixels (before decoding)
    NON_FINITE = "non_finite"  # infinite values, or no finite value at all (NaN alone is background)


class ReadInfo(BaseModel):
    """How one file was read: the library, the policy applied in words, and the stored array's shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reader: Literal["pillow", "pydicom", "nibabel"]
    policy: str = Field(description="what was applied, e.g. 'dicom CT: modality LUT (slope 1, intercept -1024), ...'")
    original_shape: tuple[int, ...] = Field(description="the pixel array as stored, before any reduction")
    pixels_sha256: str | None = Field(default=None, description="sha256 of the decoded image (its shape, then its "
                                      "float32 values in [0, 1], before resizing): the same picture however it was "
                                      "stored; test sets are checked against training data by it. None: recorded "
                                      "before it was kept")
    channels: Literal["three-slices", "one-image-repeated"] | None = Field(
        default=None, exclude_if=lambda channels: channels is None,  # records of one image stay as before
        description="under [cohort.readers] privileged_slices = 'middle-three-axial': three axial slices of a 3-D "
                    "volume, or one 2-D image repeated to three channels; None: one image, one channel")


def pixels_sha256(array: np.ndarray) -> str:
    """sha256 of a decoded image (2-D, or channels x rows x columns): its shape, then its float32 values in
    row-major order."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(repr(tuple(values.shape)).encode("ascii"))
    digest.update(values.tobytes())
    return digest.hexdigest()


def suffix_of(path: Path) -> str:
    """The file's type suffix, lower-case; `.nii.gz` counts as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


# Size before memory: every reader first reads only the header, and a file declaring more values than the policy's
# `max_pixels` (rows x columns x bands for Pillow; frames x rows x columns x samples for DICOM, whose pixel data is
# deferred until then; every voxel for NIfTI) is refused as `too_large` before any pixel is decoded.
def check_declared_size(path: Path, declared: tuple[int, ...], what: str, policy: ReaderPolicy) -> None:
    """Refuse, before decoding, a file whose declared dimensions hold more values than the policy's cap."""
    values = math.prod(max(0, int(n)) for n in declared)
    if values > policy.max_pixels:
        raise ImageDecodeError(path, ReadFailure.TOO_LARGE,
                               f"declares {' x '.join(str(int(n)) for n in declared)} {what} = {values:,} values, more "
                               f"than the cap of {policy.max_pixels:,} ([cohort.readers] max_pixels); not decoded")


def call_decoder(path: Path, reason: ReadFailure, what: str, function: Callable[..., T], *args: Any) -> T:
    """Run one decoding step; whatever it raises (bar MemoryError) becomes ImageDecodeError with `reason`."""
    try:
        return function(*args)
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many types on malformed or unsupported data
        message = str(exc).replace("\n", " ")
        raise ImageDecodeError(path, reason, f"cannot decode the {what}: {type(exc).__name__}: {message}") from exc


# NaN is no data (outside the field of view of a resampled volume): it becomes the lowest finite value of the image
# (for a volume, of the whole volume, before slicing or projecting; for DICOM, after the modality LUT and before the
# VOI), i.e. background, and the recorded steps say how many. Infinite values are refused as `non_finite` (not a
# convention for anything, and min-max cannot scale them), as is an image with no finite value.
def fill_nan(path: Path, values: np.ndarray) -> tuple[np.ndarray, str]:
    """NaN becomes the lowest finite value, with the step in words ("" if none); infinite or no finite value refused."""
    if values.dtype.kind != "f":
        return values, ""
    nan = np.isnan(values)
    infinite = int(np.isinf(values).sum())
    if infinite:
        raise ImageDecodeError(path, ReadFailure.NON_FINITE,
                               f"{infinite} value(s) are infinite; only NaN is read (as background)")
    count = int(nan.sum())
    if count == 0:
        return values, ""
    if count == values.size:
        raise ImageDecodeError(path, ReadFailure.NON_FINITE, f"all {count} values are NaN: nothing to show")
    low = float(values[~nan].min())
    return np.where(nan, values.dtype.type(low), values), f"{count} NaN value(s) -> {low:g}, the lowest (background)"


def to_unit(path: Path, values: np.ndarray, bounds: tuple[float, float] | None, stage: str) -> np.ndarray:
    """Scale to float32 [0, 1] by the given output range, else by the image's own minimum and maximum."""
    if not np.isfinite(values).all():  # fill_nan ran before; a window or LUT could still overflow
        raise ImageDecodeError(path, ReadFailure.NON_FINITE,
                               f"{int((~np.isfinite(values)).sum())} pixel(s) are NaN or infinite")
    low, high = float(values.min()), float(values.max())
    if high <= low:  # a constant image: nothing to scale, refused rather than divided by zero
        where = f" {stage}" if stage else ""
        raise ImageDecodeError(path, ReadFailure.CONSTANT_IMAGE, f"every pixel is {low:g}{where}; nothing to scale")
    if bounds is not None:
        low, high = bounds
    scaled = (values - low) / (high - low)
    return np.ascontiguousarray(np.clip(scaled, 0.0, 1.0), dtype=np.float32)
