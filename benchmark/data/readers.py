"""Readers by file type: one image file -> a 2-D float32 array in [0, 1] and a record of how it was read.

The file's type picks the reader (Pillow, pydicom or nibabel: `reader_pillow`, `reader_dicom`, `reader_nifti`).
Under the slice layout `middle-three-axial` (the privileged modality's, `ReaderPolicy.privileged_slices`) the array is
(3, rows, columns): a 3-D NIfTI's middle three axial slices, or a 2-D image repeated to three channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from benchmark.data.reader_common import ReadFailure, ReadInfo, pixels_sha256, suffix_of
from benchmark.data.reader_dicom import DICOM_SUFFIXES, read_dicom
from benchmark.data.reader_nifti import NIFTI_SUFFIXES, read_nifti
from benchmark.data.reader_pillow import PILLOW_SUFFIXES, read_pillow
from benchmark.errors import ImageDecodeError
from benchmark.schemas import ReaderPolicy, SliceLayout

# The names other code imports from here (tests, claims, the image cache).
__all__ = ["ReadFailure", "ReadInfo", "ReaderPolicy", "file_kind", "pixels_sha256", "read_image"]


def read_image(path: Path | str, policy: ReaderPolicy | None = None, *, handle: BinaryIO | None = None,
               slices: SliceLayout = "one") -> tuple[np.ndarray, ReadInfo]:
    """Read one image file as a 2-D float32 array in [0, 1] (slices `middle-three-axial`: (3, rows, columns));
    ImageDecodeError (a ReadFailure reason) if impossible.

    With `handle` (the file already opened, and checked, by `benchmark.data.files.open_image_file`) every byte is
    read from it and `path` only names the file and its type; without, the file is opened here, once."""
    path = Path(path)
    policy = policy or ReaderPolicy()
    if handle is not None:
        return _read_opened(path, handle, policy, slices)
    from benchmark.data.files import open_image_file

    with open_image_file(path) as opened:
        return _read_opened(path, opened, policy, slices)


# A file is read from one open handle (`benchmark.data.files`), never reopened by its path. Running out of memory
# below the policy's cap refuses that file as `too_large` rather than ending the command.
# Three channels (`middle-three-axial`): a 3-D NIfTI gives its middle three axial slices (`reader_nifti`); any 2-D
# image (a PNG, a DICOM slice, a multi-frame DICOM reduced by `multiframe`, whose frame order is not known to be
# spatial) is repeated to three channels, recorded as such, and its pixel hash is that of the one image.
def _read_opened(path: Path, handle: BinaryIO, policy: ReaderPolicy,
                 slices: SliceLayout) -> tuple[np.ndarray, ReadInfo]:
    try:  # open_image_file has refused what is not a non-empty regular file
        kind = file_kind(path, handle)
        if kind is None:
            raise ImageDecodeError(path, ReadFailure.UNSUPPORTED_TYPE,
                                   f"no reader for {suffix_of(path) or 'a file without a suffix (and no DICOM marker)'}"
                                   f"; readable: {', '.join(PILLOW_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES)}")
        handle.seek(0)
        if kind == "pillow":
            array, info = read_pillow(path, handle, policy)
        elif kind == "pydicom":
            array, info = read_dicom(path, handle, policy)
        else:
            array, info = read_nifti(path, handle, policy, slices)
        info = info.model_copy(update={"pixels_sha256": pixels_sha256(array)})
        if slices == "middle-three-axial" and array.ndim == 2:
            return np.repeat(array[None], 3, axis=0), info.model_copy(update={
                "channels": "one-image-repeated", "policy": f"{info.policy}, one 2-D image repeated to 3 channels"})
        return array, info
    except OSError as exc:  # read errors of the machine not caught by a reader (permissions, I/O)
        raise ImageDecodeError(path, ReadFailure.UNREADABLE_FILE, f"cannot read the file: {exc}") from exc
    except MemoryError as exc:  # under the cap, yet more than this machine holds: this file is skipped, not the run
        raise ImageDecodeError(path, ReadFailure.TOO_LARGE,
                               "ran out of memory decoding it; lower [cohort.readers] max_pixels or add memory"
                               ) from exc


# File types are told by suffix (case-insensitive). A file without a suffix is read as DICOM when it carries the `DICM`
# marker at byte 128 (exports often have no suffix); anything else is refused as `unsupported_type`.
def file_kind(path: Path, handle: BinaryIO | None = None) -> Literal["pillow", "pydicom", "nibabel"] | None:
    """The reader a file goes to by its suffix (a suffix-less file with a DICOM marker is DICOM); None if none."""
    suffix = suffix_of(path)
    if suffix in PILLOW_SUFFIXES:
        return "pillow"
    if suffix in DICOM_SUFFIXES:
        return "pydicom"
    if suffix in NIFTI_SUFFIXES:
        return "nibabel"
    if suffix == "" and _has_dicom_marker(path, handle):
        return "pydicom"
    return None


def _has_dicom_marker(path: Path, handle: BinaryIO | None = None) -> bool:
    try:
        if handle is not None:
            handle.seek(128)
            marked = handle.read(4) == b"DICM"
            handle.seek(0)
            return marked
        with path.open("rb") as opened:
            opened.seek(128)
            return opened.read(4) == b"DICM"
    except OSError:
        return False
