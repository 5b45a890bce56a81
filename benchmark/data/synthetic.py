"""Synthetic paired cohorts, for power studies, tests and examples: in the collection's layout (metadata.csv and
PNG images/) or as DICOM and NIfTI files with a cohort manifest (`write_medical_cohort`); a planted or null effect
lets the protocol's power and false-positive rate be measured on the real code path.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from benchmark.data.collection import REQUIRED_COLUMNS

# Each patient has a latent disease state. A positive patient has a lesion (a bright blob at a patient-specific
# place), visible at its time points unless `hidden_fraction` says it was imaged before the lesion showed (finding
# still COVID-19, the diagnosis). Every time point has one X-ray and one CT at the same offset, so the paired
# matching pairs them exactly.
# - X-ray: the lesion, when visible, with the faint contrast `xray_signal` over noise; the X-ray read misses a
#   visible lesion with probability `xray_miss_rate` (finding "No Finding", label 0), as faint X-ray findings are
#   missed in practice.
# - `planted` mode: the CT shows the same lesion with the clear contrast `ct_signal` and its read is correct. A CT
#   teacher therefore knows which X-ray labels missed a lesion, which the X-ray labels cannot say: a real cross-modal
#   transfer effect for the student to pick up.
# - `null` mode: the CT image and its finding are copies of the X-ray's of the same time point, so the CT carries
#   nothing beyond what the X-ray has; any "transfer gain" found here is a false positive.
# The real adapters, readers, splits, engine and study read these files unchanged.

COVID = "Pneumonia/Viral/COVID-19"
NEGATIVE = "No Finding"


class SyntheticSpec(BaseModel):
    """Every knob of a synthetic cohort."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["planted", "null"] = "planted"
    paired_patients: int = Field(default=9, ge=3)
    negative_fraction: float = Field(default=1 / 3, gt=0, lt=1)
    images_per_patient: int = Field(default=2, ge=1, description="time points, each with one X-ray and one CT")
    xray_signal: float = Field(default=0.15, ge=0)
    ct_signal: float = Field(default=0.6, ge=0)
    hidden_fraction: float = Field(default=0.0, ge=0, lt=1,
                                   description="share of a positive patient's time points with no visible lesion")
    xray_miss_rate: float = Field(default=0.0, ge=0, lt=1,
                                  description="share of visible lesions the X-ray read misses (finding: No Finding)")
    noise: float = Field(default=0.08, gt=0)
    lesion_radius: float = Field(default=0.06, gt=0, le=0.5, description="blob sigma, as a fraction of the image")
    ct_only_patients: int = Field(default=2, ge=0)
    xray_only_patients: int = Field(default=4, ge=0)
    size: int = Field(default=160, ge=8)
    seed: int = 0
    ct_volumes: Literal["even", "all"] = Field(
        default="even", exclude_if=lambda which: which == "even",  # left out at its default: dumps stay as before
        description="medical layout: which patients' privileged images are 3-D NIfTI volumes (the others DICOM "
                    "slices): even-numbered patients, or all (a cohort for [cohort.readers] privileged_slices)")

    @property
    def negative_patients(self) -> int:
        """How many of the paired patients are negative (at least one, at most all but one)."""
        return min(self.paired_patients - 1, max(1, round(self.negative_fraction * self.paired_patients)))


def _image(rng: np.random.Generator, spec: SyntheticSpec, lesion: tuple[float, float] | None, signal: float
           ) -> np.ndarray:
    yy, xx = np.mgrid[0:spec.size, 0:spec.size] / spec.size
    body = 0.45 + 0.1 * np.cos(np.pi * (xx - 0.5)) + rng.normal(0, spec.noise, (spec.size, spec.size))
    if lesion is not None:
        cy, cx = lesion
        body += signal * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spec.lesion_radius**2))
    return (np.clip(body, 0, 1) * 255).astype(np.uint8)


class SyntheticRecipe(BaseModel):
    """A synthetic cohort as data (e.g. examples/*.toml): the layout to write it in and its SyntheticSpec."""

    model_config = ConfigDict(extra="forbid")

    layout: Literal["medical", "collection"] = Field(
        default="medical", description="medical: DICOM and NIfTI with a cohort manifest; collection: PNG and "
                                       "metadata.csv in the COVID-19 Image Data Collection's layout")
    spec: SyntheticSpec = Field(default_factory=SyntheticSpec)

    @model_validator(mode="after")
    def _volumes_need_the_medical_layout(self) -> SyntheticRecipe:
        if self.layout == "collection" and self.spec.ct_volumes != "even":
            raise ValueError(f"ct_volumes = {self.spec.ct_volumes!r} needs the medical layout (the collection layout "
                             "writes PNG images only)")
        return self


def load_recipe(path: Path | None) -> SyntheticRecipe:
    """Read and validate a recipe TOML; the default recipe when `path` is None."""
    from pydantic import ValidationError

    from benchmark.config import read_toml, validation_problems
    from benchmark.errors import ConfigError

    if path is None:
        return SyntheticRecipe()
    try:
        return SyntheticRecipe.model_validate(read_toml(path, "synthetic cohort recipe"))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc


def write_recipe(recipe: SyntheticRecipe, out: Path) -> Path:
    """Write the recipe's cohort under `out`: the manifest CSV (medical layout) or the data root (collection)."""
    if recipe.layout == "medical":
        return write_medical_cohort(out, recipe.spec)
    return write_synthetic_cohort(out, recipe.spec)


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image: whose, which modality and time point, what its read says, and its 8-bit pixels."""

    patient: str
    modality: Literal["X-ray", "CT"]
    time_point: int
    finding: str
    pixels: np.ndarray

    @property
    def label(self) -> int:
        """1 for a COVID-19 finding, else 0."""
        return int(self.finding == COVID)


def generate_images(spec: SyntheticSpec) -> list[SyntheticImage]:
    """Every image of the cohort `spec`, in a fixed order drawn from one seeded generator."""
    rng = np.random.default_rng(spec.seed)
    images: list[SyntheticImage] = []

    def add(patient: str, positive: bool, modalities: tuple[str, ...]) -> None:
        place = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.75)))
        for t in range(spec.images_per_patient):
            visible = positive and rng.uniform() >= spec.hidden_fraction
            missed = visible and rng.uniform() < spec.xray_miss_rate
            lesion = place if visible else None
            xray = _image(rng, spec, lesion, spec.xray_signal)
            xray_finding = NEGATIVE if missed or not positive else COVID
            if "X-ray" in modalities:
                images.append(SyntheticImage(patient, "X-ray", t, xray_finding, xray))
            if "CT" in modalities:
                if spec.mode == "null":  # the CT is the X-ray, read the same way
                    images.append(SyntheticImage(patient, "CT", t, xray_finding, xray))
                else:
                    images.append(SyntheticImage(patient, "CT", t, COVID if positive else NEGATIVE,
                                                 _image(rng, spec, lesion, spec.ct_signal)))

    negatives = spec.negative_patients
    for p in range(spec.paired_patients):
        add(f"pair{p:03d}", p >= negatives, ("X-ray", "CT"))
    for p in range(spec.ct_only_patients):
        add(f"ct{p:03d}", p % 2 == 0, ("CT",))
    for p in range(spec.xray_only_patients):
        add(f"xr{p:03d}", p % 2 == 0, ("X-ray",))
    return images


def _spec(spec: SyntheticSpec | None, overrides: dict[str, Any]) -> SyntheticSpec:
    return SyntheticSpec.model_validate({**(spec or SyntheticSpec()).model_dump(), **overrides})


def write_synthetic_cohort(root: Path, spec: SyntheticSpec | None = None, **overrides: Any) -> Path:
    """Write metadata.csv and PNG images of the cohort `spec` (with `overrides`) under `root`, in the COVID-19
    Image Data Collection's layout; returns `root`."""
    spec = _spec(spec, overrides)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for image in generate_images(spec):
        name = f"{image.patient}-{'ct' if image.modality == 'CT' else 'xray'}-{image.time_point}.png"
        Image.fromarray(image.pixels).save(images / name)
        rows.append({"patientid": image.patient, "offset": str(3 * image.time_point), "finding": image.finding,
                     "modality": image.modality, "folder": "images", "filename": name,
                     "view": "Axial" if image.modality == "CT" else "PA"})
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(REQUIRED_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return root


# --- DICOM and NIfTI, with a cohort manifest ----------------------------------------------------------------

MANIFEST_COLUMNS = ("patient_id", "modality", "label", "path", "offset", "view", "finding")
CT_SLICES = 5  # depth of a generated NIfTI volume; the image is its middle axial slice
HU_PER_GREY = 8  # a CT grey level g (0-255) is -1000 + 8 g Hounsfield units
CT_WINDOW = (-1000 + HU_PER_GREY * 127.5, HU_PER_GREY * 256)  # centre and width that give back the grey levels


def write_medical_cohort(root: Path, spec: SyntheticSpec | None = None, **overrides: Any) -> Path:
    """Write the cohort `spec` as DICOM and NIfTI files with a cohort manifest under `root`; returns the manifest.

    The target modality (manifest `xray`) is DICOM, DX for even-numbered patients and CR for odd ones, every
    third file MONOCHROME1; DX files carry a window, CR files none (read by min-max). The privileged modality
    (`ct`) is a 3-D NIfTI volume for even-numbered patients (the image is the middle axial slice, in Hounsfield
    units; its neighbours the same anatomy shifted, lesion included) and a DICOM CT slice for odd ones (stored +
    1024: rescale intercept -1024, with a window); with `ct_volumes = "all"` every one is a volume."""
    spec = _spec(spec, overrides)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    patients: dict[str, int] = {}
    for n, image in enumerate(generate_images(spec)):
        number = patients.setdefault(image.patient, len(patients))
        folder = root / "patients" / image.patient
        folder.mkdir(parents=True, exist_ok=True)
        if image.modality == "X-ray":
            path = folder / f"xray-{image.time_point}.dcm"
            _write_radiograph(path, image, "DX" if number % 2 == 0 else "CR", monochrome1=n % 3 == 0)
        elif spec.ct_volumes == "all" or number % 2 == 0:
            path = folder / f"ct-{image.time_point}.nii.gz"
            _write_ct_volume(path, image.pixels)
        else:
            path = folder / f"ct-{image.time_point}.dcm"
            _write_ct_slice(path, image)
        rows.append({"patient_id": image.patient, "modality": "xray" if image.modality == "X-ray" else "ct",
                     "label": str(image.label), "path": path.relative_to(root).as_posix(),
                     "offset": str(3 * image.time_point), "view": "Axial" if image.modality == "CT" else "PA",
                     "finding": image.finding})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _dicom_dataset(sop_class: str, modality: str, image: SyntheticImage) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = image.patient
    ds.Rows, ds.Columns = image.pixels.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.PixelRepresentation = 16, 0
    return ds


def _write_radiograph(path: Path, image: SyntheticImage, modality: str, *, monochrome1: bool) -> None:
    sop = DigitalXRayImageStorageForPresentation if modality == "DX" else ComputedRadiographyImageStorage
    ds = _dicom_dataset(sop, modality, image)
    ds.BitsStored, ds.HighBit = 12, 11
    values = np.round(image.pixels.astype(np.float64) * 4095 / 255).astype(np.uint16)
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    if monochrome1:  # higher stored value = darker
        values = (4095 - values).astype(np.uint16)
    if modality == "DX":
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = values.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_ct_slice(path: Path, image: SyntheticImage) -> None:
    ds = _dicom_dataset(CTImageStorage, "CT", image)
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = CT_WINDOW
    hounsfield = -1000 + HU_PER_GREY * image.pixels.astype(np.int32)
    ds.PixelData = (hounsfield + 1024).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_ct_volume(path: Path, pixels: np.ndarray) -> None:
    """A RAS volume whose middle axial slice, shown as the reader displays it, is `pixels` (in Hounsfield units)."""
    hounsfield = (-1000 + HU_PER_GREY * pixels.astype(np.int16)).astype(np.int16)
    axial = hounsfield.T[::-1, ::-1]  # the reader shows axial[::-1, ::-1].T: anterior up, patient right on the left
    volume = np.stack([np.roll(axial, shift, axis=1) for shift in range(-(CT_SLICES // 2), CT_SLICES // 2 + 1)],
                      axis=2)  # neighbouring slices: the same anatomy shifted
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
