"""Synthetic paired cohorts in the real collection's layout (metadata.csv + images/), for power studies and tests.

Each patient has a latent disease state. A positive patient has a lesion (a bright blob at a
patient-specific place), visible at its time points unless `hidden_fraction` says it was imaged
before the lesion showed (finding still COVID-19, the diagnosis). Every time point has one X-ray and
one CT at the same offset, so the paired matching pairs them exactly.

- X-ray: the lesion, when visible, with the faint contrast `xray_signal` over noise; the X-ray read
  misses a visible lesion with probability `xray_miss_rate` (finding "No Finding", label 0), as
  faint X-ray findings are missed in practice.
- `planted` mode: the CT shows the same lesion with the clear contrast `ct_signal` and its read is
  correct. A CT teacher therefore knows which X-ray labels missed a lesion, which the X-ray labels
  cannot say: a real cross-modal transfer effect for the student to pick up.
- `null` mode: the CT image and its finding are copies of the X-ray's of the same time point, so
  the CT carries nothing beyond what the X-ray has; any "transfer gain" found here is a false
  positive.
The real loader, splits, engine and runner read these files unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from benchmark.cohort import REQUIRED_COLUMNS

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


def write_synthetic_cohort(root: Path, spec: SyntheticSpec | None = None, **overrides: Any) -> Path:
    """Write metadata.csv and PNG images of the cohort `spec` (with `overrides`) under `root`; returns `root`."""
    spec = SyntheticSpec.model_validate({**(spec or SyntheticSpec()).model_dump(), **overrides})
    rng = np.random.default_rng(spec.seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []

    def save(array: np.ndarray, patient: str, modality: str, time_point: int, finding: str) -> None:
        name = f"{patient}-{'ct' if modality == 'CT' else 'xray'}-{time_point}.png"
        Image.fromarray(array).save(images / name)
        rows.append({"patientid": patient, "offset": str(3 * time_point), "finding": finding,
                     "modality": modality, "folder": "images", "filename": name,
                     "view": "Axial" if modality == "CT" else "PA"})

    def add(patient: str, positive: bool, modalities: tuple[str, ...]) -> None:
        place = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.75)))
        for t in range(spec.images_per_patient):
            visible = positive and rng.uniform() >= spec.hidden_fraction
            missed = visible and rng.uniform() < spec.xray_miss_rate
            lesion = place if visible else None
            xray = _image(rng, spec, lesion, spec.xray_signal)
            xray_finding = NEGATIVE if missed or not positive else COVID
            if "X-ray" in modalities:
                save(xray, patient, "X-ray", t, xray_finding)
            if "CT" in modalities:
                if spec.mode == "null":  # the CT is the X-ray, read the same way
                    save(xray, patient, "CT", t, xray_finding)
                else:
                    save(_image(rng, spec, lesion, spec.ct_signal), patient, "CT", t, COVID if positive else NEGATIVE)

    negatives = spec.negative_patients
    for p in range(spec.paired_patients):
        add(f"pair{p:03d}", p >= negatives, ("X-ray", "CT"))
    for p in range(spec.ct_only_patients):
        add(f"ct{p:03d}", p % 2 == 0, ("CT",))
    for p in range(spec.xray_only_patients):
        add(f"xr{p:03d}", p % 2 == 0, ("X-ray",))
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(REQUIRED_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return root
