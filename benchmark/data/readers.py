"""Readers by file type: one image file -> a 2-D float32 array in [0, 1] and a record of how it was read.

File types are told by suffix (case-insensitive): `.png .jpg .jpeg .tif .tiff` -> Pillow (8-bit L, RGB
or palette -> luminance / 255 with any alpha composited over black; deeper images (16-bit, 32-bit integer
or float) min-max per image, because their effective bit depth is not recorded, a constant one -> zeros:
the collection's images have always been read this way); `.dcm .dicom` -> pydicom; `.nii .nii.gz` ->
nibabel. A file without a suffix is read as DICOM when it carries the `DICM` marker at byte 128 (exports
often have no suffix); anything else is refused. A file that cannot be read raises `ImageDecodeError`
with a `ReadFailure` reason.

DICOM decoding needs the file meta's Transfer Syntax UID and the Image Pixel attributes pydicom checks (Rows,
Columns, Bits Allocated, Samples per Pixel, Photometric Interpretation; Bits Stored and Pixel Representation for
integer pixel data): a file missing any is refused as `undecodable_pixel_data` naming each by tag and name (not as
`not_grayscale` when the Photometric Interpretation is among them). Compressed pixel data: Pillow decodes JPEG
Baseline, 8-bit JPEG Extended and JPEG 2000, and is tried first for them, so installing more decoders never changes
a file that already read (libjpeg and Pillow's libjpeg-turbo differ by a grey level here and there); JPEG-LS, 12-bit
JPEG Extended and JPEG Lossless (common for CR/DX) need pylibjpeg with pylibjpeg-libjpeg, High-Throughput JPEG 2000
pylibjpeg-openjpeg (the `dicom` extra: `pip install "ctxray-bench[dicom]"`); RLE and Deflate are pydicom's own.
Without its decoder a file is refused as `undecodable_pixel_data`, the message naming the transfer syntax (name and
UID), the packages and that command (`DECODER_PACKAGES`); a syntax pydicom has no decoder for (JPEG XL, video) is
named as such.

DICOM, in the order of the standard's display pipeline (PS3.3 C.11; PS3.4 N.2):
1. stored values -> modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence), pydicom's
   `apply_modality_lut`; CT values become Hounsfield units. NaN (float pixel data) then becomes background, below.
2. policy `window="voi"`: the VOI LUT Sequence when present, else Window Center/Width (first pair;
   VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID), the two branches of pydicom's `apply_voi_lut`.
   The result is scaled from the VOI's own output range (the window's saturation values, or the
   LUT's lowest and highest entries) to [0, 1], so a window means the same grey levels in every
   image. No VOI in the file, an invalid one, or `window="minmax"`: min-max of the image instead.
3. MONOCHROME1 (higher value = darker) is inverted so that, as in MONOCHROME2, higher is brighter.
4. a multi-frame file becomes one frame by policy `multiframe`: the middle frame (index n // 2),
   the first, or the per-pixel maximum over frames (after inversion: the brightest value).
Not handled: per-frame functional groups of enhanced multi-frame objects (only the top-level
rescale and window are read), Pixel Padding Value (padding counts in min-max), Presentation LUT
Shape, colour images (refused as `not_grayscale`).

NIfTI (`scl_slope`/`scl_inter` applied by nibabel; the affine is nibabel's: sform, else qform, else its
Analyze-style fallback with x flipped): a 3-D volume is reoriented with `nibabel.as_closest_canonical` (RAS+: axis 0
runs towards the patient's Right, axis 1 Anterior, axis 2 Superior), so axis 2 is axial; policy `volume` takes the
middle axial slice (index n // 2) or the maximum-intensity projection along axis 2. The axial image is put in
radiological display orientation, as axial DICOM is stored: anterior at the top, the patient's right on the image's
left. A 2-D image (trailing length-1 axes dropped) is turned by its affine the same way: each array axis to the
closest RAS axis, running towards R, A or S; its two axes name its plane, shown as DICOM shows that plane: axial
anterior up and the patient's right on the left (exactly the 3-D rule), coronal superior up and the patient's right
on the left, sagittal superior up and anterior on the left. A NIfTI's first axis is i, the DICOM's column index, so a
2-D NIfTI written from a DICOM by ITK (MONAI, SimpleITK) or dcm2niix (which also flips the rows) holds the DICOM's
transpose and reads back as that DICOM's pixels, a radiograph without Image Orientation included (ITK's identity
direction says LPS, an axial plane, shown as stored). An affine giving no in-plane direction is read as identity.
4-D and higher (a fourth axis longer than 1) is refused. NIfTI has no window: min-max scaling.

NaN is no data (outside the field of view of a resampled volume): it becomes the lowest finite value of the image
(for a volume, of the whole volume, before slicing or projecting; for DICOM, after the modality LUT and before the
VOI), i.e. background, and the policy says how many. Infinite values are refused as `non_finite` (not a convention
for anything, and min-max cannot scale them), as is an image with no finite value; a constant image (nothing to
scale) is refused as `constant_image` rather than divided by zero.

Size before memory: every reader first reads only the header, and a file declaring more values than the policy's
`max_pixels` (rows x columns x bands for Pillow; frames x rows x columns x samples for DICOM, whose pixel data
is deferred until then; every voxel for NIfTI) is refused as `too_large` before any pixel is decoded. Running
out of memory below the cap refuses that file the same way rather than ending the command. A file is read from
one open handle (`benchmark.data.files`), never reopened by its path.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import nibabel
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import UID

from benchmark.errors import ImageDecodeError
from benchmark.schemas import FilterReason, ReaderPolicy

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DEFER_SIZE = "1 MB"  # DICOM values larger than this (the pixel data) are read only once the size cap has passed
DICOM_EXTRA = 'pip install "ctxray-bench[dicom]"'
# Compressed transfer syntaxes Pillow (a dependency) decodes: JPEG Baseline, JPEG Extended (8-bit only), JPEG 2000.
# Pillow decodes them first, so installing more decoders never changes a file that already read (libjpeg and
# Pillow's libjpeg-turbo differ by a grey level here and there).
PILLOW_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.90",
                   "1.2.840.10008.1.2.4.91")
_LIBJPEG = ("pylibjpeg and pylibjpeg-libjpeg", "python-gdcm")
_OPENJPEG = ("pylibjpeg and pylibjpeg-openjpeg", "python-gdcm")
# For each compressed transfer syntax: what the `dicom` extra installs to decode it, and what else does
# (pydicom.pixels.decoders); RLE Lossless and Deflate are decoded by pydicom itself.
DECODER_PACKAGES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline (Pillow too)
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended, 12-bit: Pillow decodes 8-bit only
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless, first-order prediction (SV1), common for CR/DX
    "1.2.840.10008.1.2.4.80": ("pylibjpeg and pylibjpeg-libjpeg", "python-gdcm or pyjpegls"),  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": ("pylibjpeg and pylibjpeg-libjpeg", "python-gdcm or pyjpegls"),  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 lossless (Pillow too)
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000 (Pillow too)
    "1.2.840.10008.1.2.4.201": ("pylibjpeg and pylibjpeg-openjpeg", ""),  # High-Throughput JPEG 2000, lossless
    "1.2.840.10008.1.2.4.202": ("pylibjpeg and pylibjpeg-openjpeg", ""),  # HTJ2K lossless, RPCL
    "1.2.840.10008.1.2.4.203": ("pylibjpeg and pylibjpeg-openjpeg", ""),  # HTJ2K
}

T = TypeVar("T")
NiftiImage = nibabel.Nifti1Image | nibabel.Nifti2Image


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


def pixels_sha256(array: np.ndarray) -> str:
    """sha256 of a decoded 2-D image: its shape, then its float32 values in row-major order."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(repr(tuple(values.shape)).encode("ascii"))
    digest.update(values.tobytes())
    return digest.hexdigest()


def read_image(path: Path | str, policy: ReaderPolicy | None = None, *,
               handle: BinaryIO | None = None) -> tuple[np.ndarray, ReadInfo]:
    """Read one image file as a 2-D float32 array in [0, 1]; ImageDecodeError (a ReadFailure reason) if impossible.

    With `handle` (the file already opened, and checked, by `benchmark.data.files.open_image_file`) every byte is
    read from it and `path` only names the file and its type; without, the file is opened here, once."""
    path = Path(path)
    policy = policy or ReaderPolicy()
    if handle is not None:
        return _read_opened(path, handle, policy)
    from benchmark.data.files import open_image_file

    with open_image_file(path) as opened:
        return _read_opened(path, opened, policy)


def _read_opened(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
    try:  # open_image_file has refused what is not a non-empty regular file
        kind = file_kind(path, handle)
        if kind is None:
            raise ImageDecodeError(path, ReadFailure.UNSUPPORTED_TYPE,
                                   f"no reader for {_suffix(path) or 'a file without a suffix (and no DICOM marker)'}"
                                   f"; readable: {', '.join(PILLOW_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES)}")
        handle.seek(0)
        if kind == "pillow":
            array, info = _read_pillow(path, handle, policy)
        elif kind == "pydicom":
            array, info = _read_dicom(path, handle, policy)
        else:
            array, info = _read_nifti(path, handle, policy)
        return array, info.model_copy(update={"pixels_sha256": pixels_sha256(array)})
    except OSError as exc:  # read errors of the machine not caught by a reader (permissions, I/O)
        raise ImageDecodeError(path, ReadFailure.UNREADABLE_FILE, f"cannot read the file: {exc}") from exc
    except MemoryError as exc:  # under the cap, yet more than this machine holds: this file is skipped, not the run
        raise ImageDecodeError(path, ReadFailure.TOO_LARGE,
                               "ran out of memory decoding it; lower [cohort.readers] max_pixels or add memory"
                               ) from exc


def check_declared_size(path: Path, declared: tuple[int, ...], what: str, policy: ReaderPolicy) -> None:
    """Refuse, before decoding, a file whose declared dimensions hold more values than the policy's cap."""
    values = math.prod(max(0, int(n)) for n in declared)
    if values > policy.max_pixels:
        raise ImageDecodeError(path, ReadFailure.TOO_LARGE,
                               f"declares {' x '.join(str(int(n)) for n in declared)} {what} = {values:,} values, more "
                               f"than the cap of {policy.max_pixels:,} ([cohort.readers] max_pixels); not decoded")


def file_kind(path: Path, handle: BinaryIO | None = None) -> Literal["pillow", "pydicom", "nibabel"] | None:
    """The reader a file goes to by its suffix (a suffix-less file with a DICOM marker is DICOM); None if none."""
    suffix = _suffix(path)
    if suffix in PILLOW_SUFFIXES:
        return "pillow"
    if suffix in DICOM_SUFFIXES:
        return "pydicom"
    if suffix in NIFTI_SUFFIXES:
        return "nibabel"
    if suffix == "" and _has_dicom_marker(path, handle):
        return "pydicom"
    return None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


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


# --- Pillow -------------------------------------------------------------------------------------------

_MAX_PIXELS = 20_000 * 20_000  # refuse decompression bombs rather than exhausting memory
# Pillow modes deeper than 8 bits per pixel: rescaled by their own minimum and maximum (see above).
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def open_image(handle: BinaryIO, *, source: Path | str = "<file>", policy: ReaderPolicy | None = None) -> Image.Image:
    """Open and load an image from an open binary file with Pillow; ImageDecodeError when larger than the policy's
    cap (checked on the declared size, before decoding) or undecodable."""
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




def _read_pillow(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
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


# --- DICOM --------------------------------------------------------------------------------------------


def _read_dicom(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
    ds = _parse_dicom(path, handle)
    _check_dicom_size(path, ds, policy)
    pixels, shape = _dicom_pixels(path, ds)
    steps: list[str] = []
    values = _call(path, ReadFailure.UNDECODABLE_PIXEL_DATA, "modality LUT", apply_modality_lut, pixels, ds)
    values = np.asarray(values, dtype=np.float64)
    if ds.get("ModalityLUTSequence"):
        steps.append("Modality LUT Sequence")
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        steps.append(f"modality LUT (slope {float(ds.RescaleSlope):g}, intercept {float(ds.RescaleIntercept):g})")
    else:
        steps.append("no rescale")
    values, filled = fill_nan(path, values)
    steps += [filled] if filled else []

    bounds: tuple[float, float] | None = None
    if policy.window == "voi":
        values, bounds, voi = _apply_voi(ds, values)
        steps.append(voi)
    else:
        steps.append("VOI ignored (policy minmax)")

    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "MONOCHROME1":
        values = -values
        bounds = (-bounds[1], -bounds[0]) if bounds else None
        steps.append("MONOCHROME1 inverted")
    else:
        steps.append(photometric)

    if values.ndim == 3:
        values, frames = _reduce_frames(values, policy)
        steps.append(frames)
    modality = str(ds.get("Modality", "")).strip()
    array = _to_unit(path, values, bounds, "after the VOI" if bounds else "")
    steps.append("VOI output range -> [0, 1]" if bounds else "min-max -> [0, 1]")
    return array, ReadInfo(reader="pydicom", policy=f"dicom{' ' + modality if modality else ''}: {', '.join(steps)}",
                           original_shape=shape)


def _parse_dicom(path: Path, handle: BinaryIO) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about non-conformant values it still reads
            handle.seek(0)
            ds = pydicom.dcmread(handle, defer_size=DEFER_SIZE)
    except InvalidDicomError:
        ds = _parse_without_marker(path, handle)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types on malformed input
        raise ImageDecodeError(path, ReadFailure.CORRUPT_DICOM,
                               f"pydicom cannot parse the DICOM data set: {type(exc).__name__}: {exc}") from exc
    ds.filename, ds.buffer = None, handle  # deferred values are read from this handle, never by reopening a path
    last = max(ds.keys(), default=None)
    if last is not None:
        raw = ds.get_item(last)
        declared = getattr(raw, "length", None)
        held = raw.value if isinstance(raw.value, bytes) else None
        if declared not in (None, 0xFFFFFFFF) and held is not None and len(held) < declared:
            raise ImageDecodeError(path, ReadFailure.TRUNCATED,
                                   f"file ends inside element {last} ({len(held)} of {declared} bytes)")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageDecodeError(path, ReadFailure.NO_PIXEL_DATA,
                               f"DICOM {_sop_name(ds)}without pixel data (not an image object, "
                               "or the file is cut short before it)")
    return ds


def _parse_without_marker(path: Path, handle: BinaryIO) -> Dataset:
    """Old or bare DICOM lacks the preamble: accept it only if, read without it, it holds an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle.seek(0)
            ds = pydicom.dcmread(handle, force=True, defer_size=DEFER_SIZE)
            image_like = "PixelData" in ds and "Rows" in ds and "Columns" in ds
    except MemoryError:
        raise
    except Exception:
        image_like = False
    if not image_like:
        raise ImageDecodeError(path, ReadFailure.NOT_DICOM,
                               "not a DICOM file (no 'DICM' marker at byte 128, and no image when read without it)")
    return ds


def _check_dicom_size(path: Path, ds: Dataset, policy: ReaderPolicy) -> None:
    """The cap on rows x columns x frames x samples, from the header, before the pixel data is read or decoded."""
    try:
        declared = (int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("Rows", 0) or 0),
                    int(ds.get("Columns", 0) or 0), int(ds.get("SamplesPerPixel", 1) or 1))
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(path, ReadFailure.UNDECODABLE_PIXEL_DATA,
                               f"unreadable Rows, Columns, Number of Frames or Samples per Pixel: {exc}") from exc
    check_declared_size(path, declared, "(frames x rows x columns x samples)", policy)


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return f"'{name}' " if name else ""


def _dicom_pixels(path: Path, ds: Dataset) -> tuple[np.ndarray, tuple[int, ...]]:
    missing = missing_for_decoding(ds)
    if missing:
        bare = " (a data set without File Meta Information)" if not len(getattr(ds, "file_meta", ())) else ""
        raise ImageDecodeError(path, ReadFailure.UNDECODABLE_PIXEL_DATA,
                               f"missing {', '.join(missing)}{bare}: the pixel data cannot be decoded without them")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(path, ReadFailure.NOT_GRAYSCALE,
                               f"photometric interpretation {photometric or '(missing)'} with {samples} sample(s) "
                               "per pixel; only MONOCHROME1/MONOCHROME2 are read")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = _decode_pixels(path, ds)
    pixels = np.asarray(pixels)
    if pixels.ndim not in (2, 3) or 0 in pixels.shape:
        raise ImageDecodeError(path, ReadFailure.UNEXPECTED_SHAPE, f"pixel array of shape {pixels.shape}")
    return pixels, tuple(int(n) for n in pixels.shape)


# What pixel decoding needs besides the file meta's transfer syntax (Image Pixel module, PS3.3 C.7.6.3), as pydicom
# checks it; Bits Stored and Pixel Representation only for integer Pixel Data.
_NEEDED = (("Rows", "(0028,0010) Rows"), ("Columns", "(0028,0011) Columns"),
           ("BitsAllocated", "(0028,0100) Bits Allocated"), ("SamplesPerPixel", "(0028,0002) Samples per Pixel"),
           ("PhotometricInterpretation", "(0028,0004) Photometric Interpretation"))
_NEEDED_FOR_INTEGERS = (("BitsStored", "(0028,0101) Bits Stored"),
                        ("PixelRepresentation", "(0028,0103) Pixel Representation"))


def missing_for_decoding(ds: Dataset) -> list[str]:
    """The attributes pixel decoding needs that a DICOM data set lacks or leaves empty, each as tag and name."""
    meta = getattr(ds, "file_meta", None)
    missing = [] if meta is not None and meta.get("TransferSyntaxUID") else ["(0002,0010) Transfer Syntax UID"]
    needed = _NEEDED + (_NEEDED_FOR_INTEGERS if "PixelData" in ds else ())
    return missing + [name for keyword, name in needed if ds.get(keyword) in (None, "")]


def _decode_pixels(path: Path, ds: Dataset) -> np.ndarray:
    """The stored pixel values: by Pillow first where it decodes the syntax, else by any installed decoder."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax in PILLOW_SYNTAXES:
        try:
            ds.pixel_array_options(decoding_plugin="pillow")
            return ds.pixel_array
        except MemoryError:
            raise
        except Exception:  # 12-bit JPEG, or a stream Pillow refuses: the other decoders may read it
            pass
        finally:
            ds.pixel_array_options()
    try:
        return ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many types on malformed or unsupported data
        raise ImageDecodeError(path, ReadFailure.UNDECODABLE_PIXEL_DATA, _undecodable(syntax, exc)) from exc


def _undecodable(syntax: UID, exc: Exception) -> str:
    """Why the pixel data did not decode, and for a compressed transfer syntax what would decode it."""
    said = f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)
    error = f"{type(exc).__name__}: {str(exc).replace(chr(10), ' ')}"
    try:
        plugins = get_decoder(syntax).available_plugins
    except NotImplementedError:  # JPEG XL, video, private syntaxes
        return (f"pixel data compressed as {said}, which pydicom has no decoder for: convert the file to an "
                "uncompressed transfer syntax first (e.g. gdcmconv --raw)")
    if syntax not in DECODER_PACKAGES:  # native, deflated or RLE: pydicom's own decoders, so the data is at fault
        return f"cannot decode the pixel data: {error}"
    extra, others = DECODER_PACKAGES[syntax]
    if "pylibjpeg" not in plugins:
        return (f"pixel data compressed as {said} needs {extra}: {DICOM_EXTRA}"
                f"{f' ({others} also decodes it)' if others else ''}")
    return (f"cannot decode the {said} pixel data with {', '.join(plugins)}: {error}"
            f"{f'; {others} may decode it' if others else ''}")


def _apply_voi(ds: Dataset, values: np.ndarray) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """The VOI LUT (preferred, as apply_voi_lut does) or window, its output range and description; else min-max."""
    item = (ds.get("VOILUTSequence") or [None])[0]
    if item is not None and item.get("LUTDescriptor") is not None and item.get("LUTData") is not None:
        try:
            entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
            indices = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
            table = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64)
            mapped = np.asarray(apply_voi(indices, ds), dtype=np.float64)
        except MemoryError:
            raise
        except Exception as exc:  # malformed LUT: fall back to min-max, and say so
            return values, None, f"invalid VOI LUT Sequence ignored ({type(exc).__name__}: {exc})"
        if table.max() > table.min():
            return mapped, (float(table.min()), float(table.max())), f"VOI LUT Sequence ({entries} entries)"
        return values, None, "constant VOI LUT Sequence ignored"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)  # the window's saturation values
                windowed = np.asarray(apply_windowing(values, ds), dtype=np.float64)
        except MemoryError:
            raise
        except Exception as exc:  # width < 1, unknown VOI LUT Function, unparsable values: min-max, and say so
            return values, None, f"invalid window ignored ({type(exc).__name__}: {exc})"
        if not high > low:
            return values, None, f"window {center:g}/{width:g} ignored (empty output range)"
        name = "" if function == "LINEAR" else f" {function}"
        count = len(ds.WindowCenter) if isinstance(ds.WindowCenter, MultiValue) else 1
        which = f" (first of {count})" if count > 1 else ""
        return windowed, (float(low), float(high)), f"VOI window{name} {center:g}/{width:g}{which}"
    return values, None, "no VOI LUT or window in the file"


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _reduce_frames(values: np.ndarray, policy: ReaderPolicy) -> tuple[np.ndarray, str]:
    count = values.shape[0]
    if policy.multiframe == "max":
        return values.max(axis=0), f"maximum over {count} frames"
    index = 0 if policy.multiframe == "first" else count // 2
    return values[index], f"frame {index + 1} of {count} ({policy.multiframe})"


# --- NIfTI --------------------------------------------------------------------------------------------


def _read_nifti(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
    try:
        image = _open_nifti(path, handle)
    except MemoryError:
        raise
    except ImageDecodeError:
        raise
    except ImageFileError as exc:
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI, f"nibabel cannot read it as NIfTI: {exc}") from exc
    except Exception as exc:
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI,
                               f"unreadable NIfTI header: {type(exc).__name__}: {exc}") from exc
    if not isinstance(image, NiftiImage):
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI, f"{type(image).__name__} is not a NIfTI image")
    shape = tuple(int(n) for n in image.shape)
    check_declared_size(path, shape, "voxels", policy)
    dtype = image.get_data_dtype()
    if dtype.fields is not None or np.issubdtype(dtype, np.complexfloating):
        raise ImageDecodeError(path, ReadFailure.NOT_GRAYSCALE, f"voxel type {dtype} is not a real grey value")
    core = len(shape)
    while core > 2 and shape[core - 1] == 1:
        core -= 1
    if core >= 4:
        raise ImageDecodeError(path, ReadFailure.VOLUME_4D,
                               f"{len(shape)}-D image of shape {shape}; only 2-D images and 3-D volumes are read")
    if core < 2:
        raise ImageDecodeError(path, ReadFailure.UNEXPECTED_SHAPE, f"shape {shape} is not an image")
    scaling = _nifti_scaling(image)
    if core == 2:
        values, steps = _nifti_plane(path, image, (shape[0], shape[1]), scaling)
    else:
        values, steps = _nifti_axial(path, image, shape[:3], policy, scaling)
    array = _to_unit(path, values, None, "")
    steps.append("min-max -> [0, 1]")
    return array, ReadInfo(reader="nibabel", policy="nifti: " + ", ".join(steps), original_shape=shape)


def _open_nifti(path: Path, handle: BinaryIO) -> NiftiImage:
    """The NIfTI-1 or NIfTI-2 image in an open file (gzip when named .nii.gz), header read, voxels not yet."""
    handle.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=handle, mode="rb") if _suffix(path) == ".nii.gz" else handle
    head = stream.read(4)
    stream.seek(0)
    if len(head) < 4:
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI, "file too short for a NIfTI header")
    sizes = {int.from_bytes(head, "little"), int.from_bytes(head, "big")}
    kind = nibabel.Nifti1Image if 348 in sizes else nibabel.Nifti2Image if 540 in sizes else None
    if kind is None:
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI, "header size is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")
    return kind.from_stream(stream)


def _nifti_axial(path: Path, image: NiftiImage, shape: tuple[int, int, int], policy: ReaderPolicy,
                 scaling: str) -> tuple[np.ndarray, list[str]]:
    if len(image.shape) > 3:  # trailing length-1 axes: drop them before reorienting
        image = _load(path, lambda: nibabel.Nifti1Image(np.asarray(image.dataobj).reshape(shape), image.affine))
    codes = "".join(str(c) for c in nibabel.aff2axcodes(image.affine))
    canonical = _load(path, lambda: nibabel.as_closest_canonical(image))
    # every voxel is read, even for one slice, so that a file cut short is refused rather than half-read
    volume = _load(path, lambda: np.asarray(canonical.dataobj))
    volume, filled = fill_nan(path, volume)  # before slicing or projecting: a NaN would win every maximum
    depth = int(volume.shape[2])
    if policy.volume == "mip-axial":
        plane = volume.max(axis=2).astype(np.float64)
        picked = f"maximum-intensity projection over {depth} axial slices"
    else:
        index = depth // 2
        plane = volume[:, :, index].astype(np.float64)
        picked = f"axial slice {index + 1} of {depth} (middle)"
    reoriented = "already RAS" if codes == "RAS" else f"{codes} -> RAS"
    display = plane[::-1, ::-1].T  # rows anterior -> posterior, columns patient right -> left
    return display, [f"3-D, canonical orientation ({reoriented}){scaling}, axial = axis 2",
                     *([filled] if filled else []), picked,
                     "radiological display (anterior up, patient right on the left)"]


# The display DICOM uses for each plane, given its two canonical (RAS+) axes in order: rows run down the second axis
# from its far end, columns along the first from its far end (so anterior or superior is up, and the patient's right,
# or anterior, is on the image's left).
_PLANES = {(0, 1): "axial plane as DICOM shows it (anterior up, patient right on the left)",
           (0, 2): "coronal plane as DICOM shows it (superior up, patient right on the left)",
           (1, 2): "sagittal plane as DICOM shows it (superior up, anterior on the left)"}


def _nifti_plane(path: Path, image: NiftiImage, shape: tuple[int, int],
                 scaling: str) -> tuple[np.ndarray, list[str]]:
    """A 2-D image turned by its affine as a one-slice volume is, then shown as DICOM shows that plane."""
    orientation = nibabel.io_orientation(image.affine)[:2]  # per array axis: the RAS axis it runs along, and its sense
    if np.isnan(orientation).any() or orientation[0, 0] == orientation[1, 0]:
        orientation, said = np.array([[0.0, 1.0], [1.0, 1.0]]), "affine without an in-plane orientation: read as RA"
    else:
        codes = "".join(nibabel.orientations.ornt2axcodes(orientation))
        canonical = "".join(sorted(codes.translate(str.maketrans("LPI", "RAS")), key="RAS".index))
        said = "already canonical" if codes == canonical else f"{codes} -> {canonical}"
    plane = _load(path, lambda: np.asarray(image.dataobj, dtype=np.float64).reshape(shape))
    plane, filled = fill_nan(path, plane)
    for axis in (0, 1):
        if orientation[axis, 1] < 0:
            plane = np.flip(plane, axis)
    if orientation[0, 0] > orientation[1, 0]:
        plane = plane.T
    which = _PLANES[(int(min(orientation[:, 0])), int(max(orientation[:, 0])))]
    display = plane[::-1, ::-1].T
    return display, [f"2-D, canonical orientation ({said}){scaling}", *([filled] if filled else []), which]


def _nifti_scaling(image: NiftiImage) -> str:
    slope, inter = image.header.get_slope_inter()
    if slope is None or (slope == 1 and (inter or 0) == 0):
        return ""
    return f", scl_slope {slope:g} / scl_inter {inter or 0:g} applied"


def _load(path: Path, action: Callable[[], T]) -> T:
    """Run a nibabel step that reads voxels; a file cut short or unreadable becomes ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return action()
    except MemoryError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        text = str(exc).replace("\n", " ")
        if isinstance(exc, EOFError) or "Expected" in text or "mmap length" in text or "end-of-stream" in text:
            raise ImageDecodeError(path, ReadFailure.TRUNCATED, f"voxel data cut short: {text}") from exc
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI, f"cannot read the voxel data: {text}") from exc
    except Exception as exc:
        raise ImageDecodeError(path, ReadFailure.NOT_NIFTI,
                               f"cannot read the voxel data: {type(exc).__name__}: {exc}") from exc


# --- shared -------------------------------------------------------------------------------------------


def _call(path: Path, reason: ReadFailure, what: str, function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise many types on malformed or unsupported data
        message = str(exc).replace("\n", " ")
        raise ImageDecodeError(path, reason, f"cannot decode the {what}: {type(exc).__name__}: {message}") from exc


def fill_nan(path: Path, values: np.ndarray) -> tuple[np.ndarray, str]:
    """NaN (no data: outside a resampled image's field of view) becomes the lowest finite value, with the step in
    words ("" when there was none); infinite values, or no finite value at all, are refused as non_finite."""
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


def _to_unit(path: Path, values: np.ndarray, bounds: tuple[float, float] | None, stage: str) -> np.ndarray:
    """Scale to float32 [0, 1] by the given output range, else by the image's own minimum and maximum."""
    if not np.isfinite(values).all():  # fill_nan ran before; a window or LUT could still overflow
        raise ImageDecodeError(path, ReadFailure.NON_FINITE,
                               f"{int((~np.isfinite(values)).sum())} pixel(s) are NaN or infinite")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        where = f" {stage}" if stage else ""
        raise ImageDecodeError(path, ReadFailure.CONSTANT_IMAGE, f"every pixel is {low:g}{where}; nothing to scale")
    if bounds is not None:
        low, high = bounds
    scaled = (values - low) / (high - low)
    return np.ascontiguousarray(np.clip(scaled, 0.0, 1.0), dtype=np.float32)
