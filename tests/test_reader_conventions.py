"""Readers against the conventions of files from the field: 2-D NIfTI written by ITK and dcm2niix, NaN outside a
resampled volume's field of view, compressed DICOM and its decoders, files missing what decoding needs, and every
DICOM and NIfTI file pydicom and nibabel ship."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from benchmark.data.readers import ReaderPolicy, ReadFailure, read_image
from benchmark.errors import ImageDecodeError
from tests.test_readers import display, minmax, write_dicom, write_nifti


def refusal(path: Path, policy: ReaderPolicy | None = None) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, policy)
    assert str(path) in str(info.value)
    return info.value


def shipped(name: str) -> Path:
    """A file pydicom ships with its wheel (no download)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom no longer ships {name}"
    return Path(path)


# --- 2-D NIfTI written from DICOM ---------------------------------------------------------------------

STORED = np.random.default_rng(1).integers(0, 4000, size=(5, 7)).astype(np.uint16)  # 5 rows x 7 columns
STORED[0, 0], STORED[4, 6] = 4095, 0
AXIAL = {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "ImagePositionPatient": [10, 20, 30]}
CORONAL = {"ImageOrientationPatient": [1, 0, 0, 0, 0, -1], "ImagePositionPatient": [10, 20, 30]}
SAGITTAL = {"ImageOrientationPatient": [0, 1, 0, 0, 0, -1], "ImagePositionPatient": [10, 20, 30]}

# What SimpleITK 2.5.7 (ITK, as MONAI's ITK reader and writer) and dcm2niix v1.0.20260724 wrote for a 5 x 7 DICOM with
# Pixel Spacing 0.5 \ 0.25 and these orientations: voxels of shape (7, 5, 1), the first axis running along the DICOM's
# columns (ITK: the transpose; dcm2niix: the transpose of the rows flipped), and these affines (rows x, y, z of RAS+).
WRITTEN = {
    "itk-radiograph": ({}, False, [[-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0]]),
    "dcm2niix-radiograph": ({}, True, [[-0.25, 0, 0, 0.75], [0, 0.5, 0, -1], [0, 0, 1, 0]]),
    "itk-axial": (AXIAL, False, [[-0.25, 0, 0, -10], [0, -0.5, 0, -20], [0, 0, 1, 30]]),
    "dcm2niix-axial": (AXIAL, True, [[-0.25, 0, 0, -10], [0, 0.5, 0, -22], [0, 0, 1, 30]]),
    "itk-coronal": (CORONAL, False, [[-0.25, 0, 0, -10], [0, 0, -1, -20], [0, -0.5, 0, 30]]),
    "dcm2niix-coronal": (CORONAL, True, [[-0.25, 0, 0, -10], [0, 0, -1, -20], [0, 0.5, 0, 28]]),
    "itk-sagittal": (SAGITTAL, False, [[0, 0, 1, -10], [-0.25, 0, 0, -20], [0, -0.5, 0, 30]]),
    "dcm2niix-sagittal": (SAGITTAL, True, [[0, 0, 1, -10], [-0.25, 0, 0, -20], [0, 0.5, 0, 28]]),
}


@pytest.mark.parametrize("writer", list(WRITTEN))
def test_a_2d_nifti_written_from_a_dicom_reads_as_that_dicom(tmp_path: Path, writer: str) -> None:
    orientation, rows_flipped, affine = WRITTEN[writer]
    dicom = write_dicom(tmp_path / "source.dcm", STORED, modality="DX" if not orientation else "CT",
                        PixelSpacing=[0.5, 0.25], **orientation)
    voxels = (STORED[::-1] if rows_flipped else STORED).T[:, :, None]
    nifti = write_nifti(tmp_path / "written.nii.gz", voxels, np.vstack([affine, [0, 0, 0, 1]]).astype(float))
    from_dicom, _ = read_image(dicom)
    from_nifti, info = read_image(nifti)
    np.testing.assert_array_equal(from_nifti, from_dicom)
    assert info.original_shape == (7, 5, 1) and "2-D" in info.policy


def test_a_2d_nifti_is_shown_as_the_same_plane_of_a_volume_would_be(tmp_path: Path) -> None:
    plane = np.arange(20, dtype=np.float32).reshape(4, 5) ** 2
    volume = np.stack([np.zeros_like(plane), plane, np.ones_like(plane)], axis=2)  # the middle axial slice is `plane`
    from_plane, info = read_image(write_nifti(tmp_path / "plane.nii", plane))
    from_volume, _ = read_image(write_nifti(tmp_path / "volume.nii", volume))
    np.testing.assert_array_equal(from_plane, from_volume)
    np.testing.assert_allclose(from_plane, display(minmax(plane)), atol=1e-6)
    assert "anterior up, patient right on the left" in info.policy


def test_a_coronal_2d_nifti_is_shown_superior_up_and_patient_right_on_the_left(tmp_path: Path) -> None:
    plane = np.zeros((6, 4), dtype=np.int16)  # axis 0 runs to the patient's right, axis 1 to superior
    plane[5, 3] = 100  # right-most, superior-most
    plane[0, 0] = 50  # left-most, inferior-most
    affine = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # axis 1 -> S, axis 2 -> A
    array, info = read_image(write_nifti(tmp_path / "coronal.nii", plane, affine))
    assert array.shape == (4, 6) and array[0, 0] == 1.0 and array[3, 5] == pytest.approx(0.5)
    assert "superior up, patient right on the left" in info.policy


# --- NaN outside the field of view --------------------------------------------------------------------


def resampled(shape: tuple[int, int, int] = (6, 5, 3)) -> np.ndarray:
    """A float volume whose first two rows of voxels lie outside the field of view it was resampled from (NaN)."""
    volume = np.random.default_rng(2).uniform(-1000.0, 400.0, size=shape).astype(np.float32)
    volume[:2] = np.nan
    return volume


def test_nan_voxels_outside_the_field_of_view_read_as_background(tmp_path: Path) -> None:
    volume = resampled()
    array, info = read_image(write_nifti(tmp_path / "resampled.nii.gz", volume))
    filled = np.where(np.isnan(volume), np.nanmin(volume), volume)
    np.testing.assert_allclose(array, display(minmax(filled[:, :, 1])), atol=1e-6)
    assert array[:, -2:].max() == 0.0  # the patient's left two columns, outside the field of view, are black
    assert "NaN" in info.policy


def test_a_maximum_intensity_projection_sees_past_nan_voxels(tmp_path: Path) -> None:
    volume = resampled()
    volume[3, 2, 0] = np.nan  # one slice has no value here; the others still do
    array, _ = read_image(write_nifti(tmp_path / "resampled.nii", volume), ReaderPolicy(volume="mip-axial"))
    projected = np.nanmax(np.where(np.isnan(volume), np.nanmin(volume), volume), axis=2)
    np.testing.assert_allclose(array, display(minmax(projected)), atol=1e-6)


def write_float_dicom(path: Path, values: np.ndarray) -> Path:
    """A Parametric Map style DICOM holding 32-bit float pixel values (Float Pixel Data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ParametricMapStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 1, "MONOCHROME2"
    ds.FloatPixelData = values.astype("<f4").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_nan_pixels_of_a_float_dicom_read_as_background(tmp_path: Path) -> None:
    values = np.array([[np.nan, 1.5, 2.0], [np.nan, 3.0, 4.5]], dtype=np.float32)
    array, info = read_image(write_float_dicom(tmp_path / "map.dcm", values))
    np.testing.assert_allclose(array, [[0.0, 0.0, 1 / 6], [0.0, 0.5, 1.0]], atol=1e-6)
    assert "2 NaN" in info.policy


def test_an_image_without_a_finite_value_is_refused_as_non_finite(tmp_path: Path) -> None:
    error = refusal(write_nifti(tmp_path / "empty.nii", np.full((3, 4), np.nan, dtype=np.float32)))
    assert error.reason == ReadFailure.NON_FINITE and "NaN" in error.message


# --- compressed DICOM and the `dicom` extra -----------------------------------------------------------


@pytest.mark.parametrize("twin", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_a_losslessly_compressed_dicom_reads_as_its_uncompressed_twin(twin: str) -> None:
    compressed, info = read_image(shipped(twin))
    uncompressed, _ = read_image(shipped("MR_small.dcm"))
    np.testing.assert_array_equal(compressed, uncompressed)
    assert "VOI window 600/1600" in info.policy


def test_a_12_bit_jpeg_extended_dicom_decodes_with_the_dicom_extra() -> None:
    path = shipped("JPGExtended.dcm")
    array, _ = read_image(path)
    stored = pydicom.dcmread(path).pixel_array
    assert (stored[420, 140], stored[230, 120]) == (244, 95)  # pydicom's reference values for this file
    np.testing.assert_allclose(array, minmax(stored), atol=1e-6)


def test_a_jpeg_ls_near_lossless_dicom_decodes_with_the_dicom_extra() -> None:
    array, _ = read_image(shipped("JPEGLSNearLossless_16.dcm"))
    assert array.shape == (50, 10) and array.min() == 0.0 and array.max() == 1.0


def test_a_jpeg_2000_dicom_decodes_with_the_dicom_extra_where_pillow_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k != "pillow"})
    compressed, _ = read_image(shipped("MR_small_jp2klossless.dcm"))  # by pylibjpeg-openjpeg
    np.testing.assert_array_equal(compressed, read_image(shipped("MR_small.dcm"))[0])


def write_jpeg_dicom(path: Path) -> Path:
    """An 8-bit grayscale JPEG Baseline DICOM (a Pillow-encoded JPEG, encapsulated)."""
    y, x = np.mgrid[0:64, 0:80]
    noise = np.random.default_rng(0).normal(0, 10, size=(64, 80))
    picture = np.clip(127 + 60 * np.sin(x / 5) + 50 * np.cos(y / 7) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=70)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = picture.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_jpeg_baseline_dicom_stays_decoded_by_pillow_when_the_extra_is_installed(tmp_path: Path) -> None:
    path = write_jpeg_dicom(tmp_path / "baseline.dcm")
    array, _ = read_image(path)
    by_pillow = pydicom.pixels.pixel_array(path, decoding_plugin="pillow")  # libjpeg differs by a grey level
    np.testing.assert_array_equal(array, minmax(by_pillow))


@pytest.mark.parametrize(("name", "syntax", "kept"), [
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless, ()),
    ("JPGExtended.dcm", JPEGExtended12Bit, ("pillow",)),  # Pillow is installed, but decodes 8-bit JPEG only
])
def test_without_its_decoder_a_compressed_dicom_names_the_package_to_install(
        monkeypatch: pytest.MonkeyPatch, name: str, syntax: str, kept: tuple[str, ...]) -> None:
    decoder = get_decoder(syntax)
    monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k in kept})
    error = refusal(shipped(name))
    assert error.reason == ReadFailure.UNDECODABLE_PIXEL_DATA
    assert syntax.name in error.message and str(syntax) in error.message
    assert "pylibjpeg-libjpeg" in error.message and 'pip install "ctxray-bench[dicom]"' in error.message


def test_a_compression_pydicom_has_no_decoder_for_is_named(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "video.dcm", np.zeros((4, 4), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(28)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    error = refusal(path)
    assert error.reason == ReadFailure.UNDECODABLE_PIXEL_DATA
    assert MPEG2MPML.name in error.message and "no decoder" in error.message


# --- files missing what decoding needs ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "named"), [
    ("meta_missing_tsyntax.dcm", "(0002,0010) Transfer Syntax UID"),  # and every Image Pixel attribute
    ("nested_priv_SQ.dcm", "(0028,0100) Bits Allocated"),
])
def test_a_shipped_dicom_missing_what_decoding_needs_is_refused_naming_it(name: str, named: str) -> None:
    error = refusal(shipped(name))
    assert error.reason == ReadFailure.UNDECODABLE_PIXEL_DATA and named in error.message


@pytest.mark.parametrize(("missing", "named"), [
    ("TransferSyntaxUID", "(0002,0010) Transfer Syntax UID"),
    ("BitsAllocated", "(0028,0100) Bits Allocated"),
])
def test_a_dicom_missing_its_transfer_syntax_or_bits_allocated_is_refused_naming_it(
        tmp_path: Path, missing: str, named: str) -> None:
    ds = pydicom.dcmread(write_dicom(tmp_path / "full.dcm", np.arange(12, dtype=np.uint16).reshape(3, 4)))
    del ds.PhotometricInterpretation  # missing too: was then refused as not_grayscale, naming neither
    if missing == "TransferSyntaxUID":
        del ds.file_meta.TransferSyntaxUID
    else:
        delattr(ds, missing)
    path = tmp_path / "missing.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    error = refusal(path)
    assert error.reason == ReadFailure.UNDECODABLE_PIXEL_DATA
    assert named in error.message and "(0028,0004) Photometric Interpretation" in error.message


# --- every file the libraries ship --------------------------------------------------------------------

COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


def shipped_files() -> list[Path]:
    """Every file pydicom ships (DICOM, DICOMDIR, dumps), and every NIfTI and DICOM file nibabel ships."""
    nibabel_root = Path(nibabel.__file__).parent
    files = [Path(f) for f in get_testdata_files()]
    files += [f for f in nibabel_root.rglob("*") if f.name.endswith((".nii", ".nii.gz", ".dcm"))]
    return sorted(f for f in files if f.is_file())


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on badVR.dcm
def test_every_dicom_and_nifti_file_pydicom_and_nibabel_ship_reads_or_is_refused_with_a_reason() -> None:
    files = shipped_files()
    assert len(files) > 150
    read: dict[str, np.ndarray] = {}
    refused: dict[str, ImageDecodeError] = {}
    for path in files:
        try:
            read[path.name], _ = read_image(path)
        except ImageDecodeError as exc:  # anything else fails the test
            assert exc.reason in set(ReadFailure), path
            refused[path.name] = exc
    for name, array in read.items():
        assert array.ndim == 2 and array.dtype == np.float32, name
        assert np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0, name
    for name, error in refused.items():
        if error.reason == ReadFailure.NOT_GRAYSCALE:  # only colour is refused as not grayscale
            assert any(f"interpretation {colour} " in error.message for colour in COLOUR), (name, error.message)
    assert {"resampled_anat_moved.nii", "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_08.dcm",
            "JPGExtended.dcm", "anatomical.nii", "CT_small.dcm"} <= set(read)
    assert len(read) > 60
