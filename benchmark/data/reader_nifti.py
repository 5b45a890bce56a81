"""The NIfTI reader (nibabel): a 2-D image or one axial image of a 3-D volume, in DICOM's display orientation, as a
2-D float32 image in [0, 1].
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import nibabel
import numpy as np
from nibabel.filebasedimages import ImageFileError

from benchmark.data.reader_common import ReadFailure, ReadInfo, check_declared_size, fill_nan, suffix_of, to_unit
from benchmark.errors import ImageDecodeError
from benchmark.schemas import ReaderPolicy, SliceLayout

NIFTI_SUFFIXES = (".nii", ".nii.gz")
T = TypeVar("T")
NiftiImage = nibabel.Nifti1Image | nibabel.Nifti2Image


# `scl_slope`/`scl_inter` are applied by nibabel; the affine is nibabel's: sform, else qform, else its Analyze-style
# fallback with x flipped. A 3-D volume is reoriented with `nibabel.as_closest_canonical` (RAS+: axis 0 runs towards
# the patient's Right, axis 1 Anterior, axis 2 Superior), so axis 2 is axial; policy `volume` takes the middle axial
# slice (index n // 2) or the maximum-intensity projection along axis 2, put in radiological display orientation as
# axial DICOM is stored: anterior at the top, the patient's right on the image's left. A 2-D image (trailing length-1
# axes dropped) is turned by its affine the same way (`_nifti_plane`). 4-D and higher (a fourth axis longer than 1) is
# refused. NIfTI has no window: min-max scaling.
# Slice layout `middle-three-axial` (the privileged modality under [cohort.readers] privileged_slices): axial slices
# n // 2 - 1, n // 2 and n // 2 + 1 (the middle one being the `middle-axial` slice), each in the same display
# orientation, as three channels scaled by one min-max over the three, so they share one intensity scale (not the
# whole volume's: a far slice's extremes, metal in the pelvis, would not set the chest's grey levels). A volume of
# fewer than 3 axial slices is refused as `unexpected_shape`; a one-slice volume is a 2-D image (repeated by
# `readers`).
def read_nifti(path: Path, handle: BinaryIO, policy: ReaderPolicy,
               slices: SliceLayout = "one") -> tuple[np.ndarray, ReadInfo]:
    """Read a NIfTI-1 or NIfTI-2 file (.nii or .nii.gz) from its open handle as a 2-D float32 array in [0, 1]
    (a 3-D volume under slices `middle-three-axial`: its middle three axial slices, (3, rows, columns))."""
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
        values, steps = _nifti_axial(path, image, shape[:3], policy, scaling, slices)
    array = to_unit(path, values, None, "")
    steps.append("min-max over the 3 slices -> [0, 1]" if values.ndim == 3 else "min-max -> [0, 1]")
    return array, ReadInfo(reader="nibabel", policy="nifti: " + ", ".join(steps), original_shape=shape,
                           channels="three-slices" if values.ndim == 3 else None)


def _open_nifti(path: Path, handle: BinaryIO) -> NiftiImage:
    """The NIfTI-1 or NIfTI-2 image in an open file (gzip when named .nii.gz), header read, voxels not yet."""
    handle.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=handle, mode="rb") if suffix_of(path) == ".nii.gz" else handle
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
                 scaling: str, slices: SliceLayout) -> tuple[np.ndarray, list[str]]:
    if len(image.shape) > 3:  # trailing length-1 axes: drop them before reorienting
        image = _load(path, lambda: nibabel.Nifti1Image(np.asarray(image.dataobj).reshape(shape), image.affine))
    codes = "".join(str(c) for c in nibabel.aff2axcodes(image.affine))
    canonical = _load(path, lambda: nibabel.as_closest_canonical(image))
    # every voxel is read, even for one slice, so that a file cut short is refused rather than half-read
    volume = _load(path, lambda: np.asarray(canonical.dataobj))
    volume, filled = fill_nan(path, volume)  # before slicing or projecting: a NaN would win every maximum
    depth = int(volume.shape[2])
    reoriented = "already RAS" if codes == "RAS" else f"{codes} -> RAS"
    index = depth // 2
    if slices == "middle-three-axial":
        if depth < 3:
            raise ImageDecodeError(path, ReadFailure.UNEXPECTED_SHAPE,
                                   f"3-D volume of shape {shape} has {depth} axial slices; [cohort.readers] "
                                   "privileged_slices = 'middle-three-axial' needs at least 3")
        planes = [volume[:, :, i] for i in (index - 1, index, index + 1)]
        picked = f"axial slices {index}-{index + 2} of {depth} (middle three) as 3 channels"
    elif policy.volume == "mip-axial":
        planes = [volume.max(axis=2)]
        picked = f"maximum-intensity projection over {depth} axial slices"
    else:
        planes = [volume[:, :, index]]
        picked = f"axial slice {index + 1} of {depth} (middle)"
    # rows anterior -> posterior, columns patient right -> left; one plane is a 2-D image, three are its channels
    display = [plane.astype(np.float64)[::-1, ::-1].T for plane in planes]
    return (display[0] if len(display) == 1 else np.stack(display)), [
        f"3-D, canonical orientation ({reoriented}){scaling}, axial = axis 2", *([filled] if filled else []), picked,
        "radiological display (anterior up, patient right on the left)"]


# The display DICOM uses for each plane, given its two canonical (RAS+) axes in order: rows run down the second axis
# from its far end, columns along the first from its far end (so anterior or superior is up, and the patient's right,
# or anterior, is on the image's left).
_PLANES = {(0, 1): "axial plane as DICOM shows it (anterior up, patient right on the left)",
           (0, 2): "coronal plane as DICOM shows it (superior up, patient right on the left)",
           (1, 2): "sagittal plane as DICOM shows it (superior up, anterior on the left)"}


# A NIfTI's first axis is i, the DICOM's column index, so a 2-D NIfTI written from a DICOM by ITK (MONAI, SimpleITK) or
# dcm2niix (which also flips the rows) holds the DICOM's transpose and reads back as that DICOM's pixels, a radiograph
# without Image Orientation included (ITK's identity direction says LPS, an axial plane, shown as stored). An affine
# giving no in-plane direction is read as identity.
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
