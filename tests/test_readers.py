"""Readers by file type: DICOM (pydicom), NIfTI (nibabel) and PNG (Pillow), written here into tmp_path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from benchmark.data.imaging import decode_file
from benchmark.data.readers import ReaderPolicy, ReadFailure, read_image
from benchmark.errors import ImageDecodeError
from tests.conftest import write_image

RAS = np.eye(4)


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", modality: str = "CT",
                pixels: bool = True, **attributes: object) -> Path:
    """A DICOM file (explicit VR little endian) holding `stored` (2-D, or frames x rows x columns) as 16-bit."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    signed = stored.dtype.kind == "i"
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    for name, value in attributes.items():
        setattr(ds, name, value)
    if pixels:
        ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, voxels: np.ndarray, affine: np.ndarray = RAS) -> Path:
    nibabel.save(nibabel.Nifti1Image(voxels, affine), path)
    return path


def minmax(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return ((values - values.min()) / (values.max() - values.min())).astype(np.float32)


def display(axial: np.ndarray) -> np.ndarray:
    """An axial RAS slice (right, anterior) in radiological display: anterior up, patient right on the left."""
    return axial[::-1, ::-1].T


def reason_of(path: Path, policy: ReaderPolicy | None = None) -> str:
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, policy)
    assert str(path) in str(info.value)
    return info.value.reason


# --- DICOM --------------------------------------------------------------------------------------------


def test_ct_rescale_turns_stored_values_into_hounsfield_units_before_the_window(tmp_path: Path) -> None:
    hu = np.array([[-1000, -160, 40, 240, 1000]], dtype=np.int32)
    path = write_dicom(tmp_path / "ct.dcm", (hu + 1024).astype(np.uint16), RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=40, WindowWidth=400)
    array, info = read_image(path, ReaderPolicy())
    # soft-tissue window 40/400 (DICOM LINEAR): -160 HU and below black, above 239 HU white, 40 HU mid-grey
    np.testing.assert_allclose(array[0], [0.0, 0.0, (40 - 39.5) / 399 + 0.5, 1.0, 1.0], atol=1e-6)
    assert info.reader == "pydicom" and "slope 1, intercept -1024" in info.policy


def test_the_window_fixes_the_grey_levels_instead_of_stretching_each_image(tmp_path: Path) -> None:
    inside = write_dicom(tmp_path / "a.dcm", np.array([[1024, 1104]], dtype=np.uint16), RescaleSlope=1,
                         RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)  # 0 and 80 HU
    windowed, info = read_image(inside, ReaderPolicy(window="voi"))
    stretched, _ = read_image(inside, ReaderPolicy(window="minmax"))
    np.testing.assert_allclose(windowed[0], [(0 - 39.5) / 399 + 0.5, (80 - 39.5) / 399 + 0.5], atol=1e-6)
    np.testing.assert_array_equal(stretched[0], [0.0, 1.0])
    assert "VOI window 40/400" in info.policy


def test_an_invalid_window_falls_back_to_min_max_and_says_so(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w.dcm", np.array([[0, 50, 100]], dtype=np.uint16), modality="DX",
                       WindowCenter=50, WindowWidth=0)  # LINEAR needs a width of at least 1
    array, info = read_image(path)
    np.testing.assert_allclose(array[0], [0.0, 0.5, 1.0], atol=1e-6)
    assert "invalid window ignored" in info.policy and "min-max" in info.policy


def test_a_voi_lut_sequence_is_preferred_and_scaled_by_its_own_range(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 8])  # LUT Descriptor: 4 entries, first mapped value 0, 8 bits
    item.add_new(0x00283006, "US", [10, 20, 40, 50])  # LUT Data
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3, 9]], dtype=np.uint16), modality="DX",
                       VOILUTSequence=[item], WindowCenter=100, WindowWidth=10)
    array, info = read_image(path)
    np.testing.assert_allclose(array[0], [0.0, 0.25, 0.75, 1.0, 1.0], atol=1e-6)  # 9 is past the table: last entry
    assert "VOI LUT Sequence" in info.policy


def test_monochrome1_is_inverted_so_a_bright_spot_stays_bright(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bright = rng.integers(0, 3000, size=(16, 16)).astype(np.uint16)
    bright[5, 7] = 4095  # the densest point: brightest on screen
    normal, _ = read_image(write_dicom(tmp_path / "m2.dcm", bright, modality="DX"))
    inverted, info = read_image(write_dicom(tmp_path / "m1.dcm", (4095 - bright).astype(np.uint16),
                                            photometric="MONOCHROME1", modality="DX"))
    np.testing.assert_allclose(inverted, normal, atol=1e-6)
    assert inverted[5, 7] == 1.0 and "MONOCHROME1 inverted" in info.policy


FRAMES = np.stack([np.arange(12, dtype=np.uint16).reshape(3, 4) * (f + 1) + 100 * (f % 2) for f in range(5)])


@pytest.mark.parametrize(("policy", "expected", "said"), [
    ("first", FRAMES[0], "frame 1 of 5 (first)"),
    ("middle", FRAMES[2], "frame 3 of 5 (middle)"),
    ("max", FRAMES.max(axis=0), "maximum over 5 frames"),
])
def test_a_multi_frame_file_becomes_the_frame_its_policy_names(tmp_path: Path, policy: str, expected: np.ndarray,
                                                               said: str) -> None:
    array, info = read_image(write_dicom(tmp_path / "mf.dcm", FRAMES), ReaderPolicy(multiframe=policy))
    np.testing.assert_allclose(array, minmax(expected), atol=1e-6)
    assert said in info.policy and info.original_shape == (5, 3, 4)


def test_a_dicom_without_a_suffix_is_recognised_by_its_marker(tmp_path: Path) -> None:
    stored = np.arange(6, dtype=np.uint16).reshape(2, 3)
    _, info = read_image(write_dicom(tmp_path / "IM0001", stored))
    assert info.reader == "pydicom"


def test_a_text_file_named_dcm_is_refused_as_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("patient 12, follow-up CT in two weeks\n", encoding="utf-8")
    assert reason_of(path) == ReadFailure.NOT_DICOM == "not_dicom"


def test_a_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "report.dcm", np.zeros((2, 2), dtype=np.uint16), pixels=False)
    assert reason_of(path) == "no_pixel_data"


def test_a_dicom_cut_short_in_its_pixel_data_is_refused_as_truncated(tmp_path: Path) -> None:
    full = write_dicom(tmp_path / "full.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8)).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full[:-40])
    assert reason_of(cut) == "truncated"


def test_a_dicom_cut_anywhere_is_refused_with_a_reason_never_a_crash(tmp_path: Path) -> None:
    full = write_dicom(tmp_path / "full.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), RescaleSlope=1,
                       RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400).read_bytes()
    cut = tmp_path / "cut.dcm"
    reasons = set()
    for length in range(len(full)):
        cut.write_bytes(full[:length])
        reasons.add(reason_of(cut))  # raises ImageDecodeError, nothing else
    assert reasons <= set(ReadFailure) and "truncated" in reasons


def test_a_colour_dicom_is_refused_as_not_grayscale(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "rgb.dcm", np.zeros((2, 2), dtype=np.uint16), photometric="RGB")
    assert reason_of(path) == "not_grayscale"


def test_a_constant_dicom_is_refused_not_divided_by_zero(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 700, dtype=np.uint16))
    assert reason_of(path, ReaderPolicy(window="minmax")) == "constant_image"


# --- NIfTI --------------------------------------------------------------------------------------------

VOLUME = np.arange(4 * 5 * 7, dtype=np.int16).reshape(4, 5, 7) % 11 + 10 * np.arange(7, dtype=np.int16)


def test_a_2d_nifti_is_turned_by_its_affine_as_an_axial_slice_is(tmp_path: Path) -> None:
    plane = np.arange(20, dtype=np.float32).reshape(4, 5) ** 2
    array, info = read_image(write_nifti(tmp_path / "xray.nii", plane))  # identity affine: axes R and A
    np.testing.assert_allclose(array, display(minmax(plane)), atol=1e-6)
    assert info.reader == "nibabel" and info.original_shape == (4, 5)
    assert "2-D, canonical orientation (already canonical)" in info.policy and "axial plane" in info.policy


def test_the_middle_axial_slice_of_a_volume_is_read(tmp_path: Path) -> None:
    array, info = read_image(write_nifti(tmp_path / "ct.nii.gz", VOLUME), ReaderPolicy(volume="middle-axial"))
    np.testing.assert_allclose(array, display(minmax(VOLUME[:, :, 3])), atol=1e-6)
    assert "axial slice 4 of 7 (middle)" in info.policy and info.original_shape == (4, 5, 7)


def test_the_maximum_intensity_projection_runs_along_the_axial_axis(tmp_path: Path) -> None:
    array, info = read_image(write_nifti(tmp_path / "ct.nii.gz", VOLUME), ReaderPolicy(volume="mip-axial"))
    np.testing.assert_allclose(array, display(minmax(VOLUME.max(axis=2))), atol=1e-6)
    assert "maximum-intensity projection over 7 axial slices" in info.policy


def test_a_volume_stored_in_another_orientation_reads_as_the_same_picture(tmp_path: Path) -> None:
    ras, _ = read_image(write_nifti(tmp_path / "ras.nii", VOLUME))
    lpi = VOLUME[::-1, ::-1, ::-1]  # the same anatomy stored left, posterior, inferior first
    flipped = np.diag([-1.0, -1.0, -1.0, 1.0])
    flipped[:3, 3] = np.array(VOLUME.shape) - 1  # keep voxel centres where they were
    other, info = read_image(write_nifti(tmp_path / "lpi.nii", lpi, flipped))
    np.testing.assert_array_equal(other, ras)
    assert "LPI -> RAS" in info.policy


def test_an_axial_image_is_shown_anterior_up_and_patient_right_on_the_left(tmp_path: Path) -> None:
    volume = np.zeros((6, 4, 3), dtype=np.int16)
    volume[5, 3, 1] = 100  # RAS: the patient's right-most and anterior-most voxel of the middle slice
    volume[0, 0, 1] = 50  # the patient's left-most and posterior-most voxel
    array, _ = read_image(write_nifti(tmp_path / "marker.nii", volume))
    assert array.shape == (4, 6)
    assert array[0, 0] == 1.0  # top left
    assert array[3, 5] == pytest.approx(0.5)  # bottom right


def test_a_4d_nifti_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "fmri.nii.gz", np.arange(3 * 3 * 3 * 2, dtype=np.float32).reshape(3, 3, 3, 2))
    assert reason_of(path) == "volume_4d"


def test_a_trailing_axis_of_length_one_does_not_make_a_4d_volume(tmp_path: Path) -> None:
    array, _ = read_image(write_nifti(tmp_path / "ct.nii", VOLUME[..., None]))
    np.testing.assert_allclose(array, display(minmax(VOLUME[:, :, 3])), atol=1e-6)


def test_a_nifti_cut_short_is_refused_as_truncated(tmp_path: Path) -> None:
    full = write_nifti(tmp_path / "full.nii", VOLUME).read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full[:-30])
    assert reason_of(cut) == "truncated"


def test_a_compressed_nifti_cut_short_is_refused_as_truncated(tmp_path: Path) -> None:
    volume = np.random.default_rng(0).integers(-1000, 1000, size=(32, 32, 16)).astype(np.int16)
    full = write_nifti(tmp_path / "full.nii.gz", volume).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full[: len(full) // 2])
    assert reason_of(cut) == "truncated"


def test_a_file_named_nii_that_is_not_nifti_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii"
    path.write_bytes(b"\x00" * 400)
    assert reason_of(path) == "not_nifti"


def test_a_constant_volume_slice_is_refused(tmp_path: Path) -> None:
    assert reason_of(write_nifti(tmp_path / "flat.nii", np.ones((3, 3, 3), dtype=np.float32))) == "constant_image"


def test_infinite_voxels_are_refused(tmp_path: Path) -> None:
    plane = np.arange(9, dtype=np.float32).reshape(3, 3)
    plane[1, 1] = np.inf  # unlike NaN (no data: background), an infinity is not a convention; min-max cannot scale it
    assert reason_of(write_nifti(tmp_path / "inf.nii", plane)) == "non_finite"


# --- Pillow, files and policy -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_a_png_is_read_as_the_image_cache_decodes_it(tmp_path: Path, mode: str) -> None:
    path = write_image(tmp_path / f"{mode.replace(';', '')}.png", mode=mode, size=(24, 24))
    array, info = read_image(path)
    np.testing.assert_array_equal(array, decode_file(path, 24)[0])  # same size: no resampling
    assert info.reader == "pillow" and info.original_shape[:2] == (24, 24)


def test_a_png_that_does_not_decode_keeps_the_cache_s_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert reason_of(path) == "corrupt_image"


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("scan.gz", b"\x1f\x8b whatever", "unsupported_type"),
    ("notes.txt", b"hello", "unsupported_type"),
    ("empty.dcm", b"", "empty_file"),
])
def test_files_no_reader_takes_are_refused_with_their_reason(tmp_path: Path, name: str, content: bytes,
                                                             reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert reason_of(path) == reason


def test_a_missing_file_is_refused_as_missing(tmp_path: Path) -> None:
    assert reason_of(tmp_path / "gone.dcm") == "missing_file"


def test_the_policy_refuses_unknown_keys_and_values() -> None:
    assert ReaderPolicy() == ReaderPolicy(multiframe="middle", volume="middle-axial", window="voi")
    with pytest.raises(ValidationError):
        ReaderPolicy(volume="coronal")
    with pytest.raises(ValidationError):
        ReaderPolicy(frames="middle")


# --- property -----------------------------------------------------------------------------------------

POLICIES = st.builds(ReaderPolicy, multiframe=st.sampled_from(["middle", "first", "max"]),
                     volume=st.sampled_from(["middle-axial", "mip-axial"]), window=st.sampled_from(["voi", "minmax"]))
SHAPES = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=6)


@st.composite
def dicom_files(draw: st.DrawFn) -> dict[str, object]:
    stored = draw(hnp.arrays(np.uint16, SHAPES, elements=st.integers(0, 4095)))
    attributes: dict[str, object] = {"photometric": draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"]))}
    if draw(st.booleans()):
        attributes |= {"RescaleSlope": draw(st.sampled_from([1, 0.5, 2])),
                       "RescaleIntercept": draw(st.sampled_from([0, -1024, 100]))}
    if draw(st.booleans()):
        attributes |= {"WindowCenter": draw(st.integers(-1200, 4000)), "WindowWidth": draw(st.integers(-5, 5000)),
                       "VOILUTFunction": draw(st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "BOGUS"]))}
    return {"stored": stored, **attributes}


NIFTI_VOXELS = st.one_of(hnp.arrays(np.int16, SHAPES, elements=st.integers(-3000, 3000)),
                         hnp.arrays(np.float32, SHAPES, elements=st.floats(width=32)))  # NaN and infinities too


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=st.one_of(dicom_files(), NIFTI_VOXELS), policy=POLICIES)
def test_any_readable_output_is_a_finite_2d_image_in_the_unit_range(file: object, policy: ReaderPolicy) -> None:
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(file, dict):
            path = write_dicom(Path(folder) / "x.dcm", **file)  # type: ignore[arg-type]
        else:
            path = write_nifti(Path(folder) / "x.nii", np.asarray(file))
        try:
            array, _ = read_image(path, policy)
        except ImageDecodeError as exc:
            assert exc.reason in set(ReadFailure)
            return
    assert array.ndim == 2 and array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0
