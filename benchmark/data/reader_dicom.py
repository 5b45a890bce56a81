"""The DICOM reader (pydicom): the stored pixels through the standard's display pipeline to a 2-D float32 image in
[0, 1], with the decoders compressed pixel data needs named when missing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import UID

from benchmark.data.reader_common import ReadFailure, ReadInfo, call_decoder, check_declared_size, fill_nan, to_unit
from benchmark.errors import ImageDecodeError
from benchmark.schemas import ReaderPolicy

DICOM_SUFFIXES = (".dcm", ".dicom")
DEFER_SIZE = "1 MB"  # DICOM values larger than this (the pixel data) are read only once the size cap has passed
DICOM_EXTRA = 'pip install "ctxray-bench[dicom]"'
# Decoding needs the file meta's Transfer Syntax UID and the Image Pixel attributes pydicom checks (`_NEEDED` below):
# a file missing any is refused as `undecodable_pixel_data` naming each by tag and name. RLE and Deflate are pydicom's
# own; the other compressed syntaxes need a decoder, and without it the file is refused as `undecodable_pixel_data`,
# the message naming the transfer syntax, the packages and the `dicom` extra's command; a syntax pydicom has no decoder
# for (JPEG XL, video) is named as such.
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


# In the order of the standard's display pipeline (PS3.3 C.11; PS3.4 N.2):
# 1. stored values -> modality LUT (Rescale Slope/Intercept, or a Modality LUT Sequence), pydicom's
#    `apply_modality_lut`; CT values become Hounsfield units. NaN (float pixel data) then becomes background.
# 2. policy `window="voi"`: the VOI LUT Sequence when present, else Window Center/Width (first pair; VOI LUT Function
#    LINEAR, LINEAR_EXACT or SIGMOID), the two branches of pydicom's `apply_voi_lut`. The result is scaled from the
#    VOI's own output range (the window's saturation values, or the LUT's lowest and highest entries) to [0, 1], so a
#    window means the same grey levels in every image. No VOI in the file, an invalid one, or `window="minmax"`:
#    min-max of the image instead.
# 3. MONOCHROME1 (higher value = darker) is inverted so that, as in MONOCHROME2, higher is brighter.
# 4. a multi-frame file becomes one frame by policy `multiframe`: the middle frame (index n // 2), the first, or the
#    per-pixel maximum over frames (after inversion: the brightest value).
# Not handled: per-frame functional groups of enhanced multi-frame objects (only the top-level rescale and window are
# read), Pixel Padding Value (padding counts in min-max), Presentation LUT Shape, colour images (`not_grayscale`).
def read_dicom(path: Path, handle: BinaryIO, policy: ReaderPolicy) -> tuple[np.ndarray, ReadInfo]:
    """Read a DICOM file from its open handle as a 2-D float32 array in [0, 1], and how it was read."""
    ds = _parse_dicom(path, handle)
    _check_dicom_size(path, ds, policy)
    pixels, shape = _dicom_pixels(path, ds)
    steps: list[str] = []
    values = call_decoder(path, ReadFailure.UNDECODABLE_PIXEL_DATA, "modality LUT", apply_modality_lut, pixels, ds)
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
    array = to_unit(path, values, bounds, "after the VOI" if bounds else "")
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
