"""Synthetic cohorts in the real collection's layout (metadata.csv + images/), for benchmarks and tests.

Each positive patient carries a bright blob (a "lesion") at a patient-specific position; its CT
images show it with contrast `ct_signal`, its X-rays with the fainter `xray_signal`, both over
Gaussian noise. Negative patients show no blob. The real loader, splits and engine read these
files unchanged.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.cohort import REQUIRED_COLUMNS

COVID = "Pneumonia/Viral/COVID-19"
NEGATIVE = "No Finding"


def _image(rng: np.random.Generator, size: int, lesion: tuple[float, float] | None, signal: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = 0.45 + 0.1 * np.cos(np.pi * (xx - 0.5)) + rng.normal(0, 0.08, (size, size))
    if lesion is not None:
        cy, cx = lesion
        body += signal * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.06**2))
    return (np.clip(body, 0, 1) * 255).astype(np.uint8)


def write_synthetic_cohort(root: Path, *, paired_positives: int = 6, paired_negatives: int = 3,
                           ct_only: int = 2, xray_only: int = 4, images_per_patient: int = 2, size: int = 160,
                           xray_signal: float = 0.15, ct_signal: float = 0.6, seed: int = 0) -> Path:
    """Write metadata.csv and PNG images under `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []

    def add(patient: str, positive: bool, modalities: tuple[str, ...]) -> None:
        lesion = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.25, 0.75))) if positive else None
        for modality in modalities:
            signal = ct_signal if modality == "CT" else xray_signal
            for i in range(images_per_patient):
                name = f"{patient}-{modality.lower().replace('-', '')}-{i}.png"
                Image.fromarray(_image(rng, size, lesion, signal)).save(images / name)
                rows.append({"patientid": patient, "offset": str(2 * i + (modality == "CT")),
                             "finding": COVID if positive else NEGATIVE, "modality": modality,
                             "folder": "images", "filename": name, "view": "PA" if modality == "X-ray" else "Axial"})

    for p in range(paired_positives + paired_negatives):
        add(f"pair{p:03d}", p < paired_positives, ("X-ray", "CT"))
    for p in range(ct_only):
        add(f"ct{p:03d}", p % 2 == 0, ("CT",))
    for p in range(xray_only):
        add(f"xr{p:03d}", p % 2 == 0, ("X-ray",))
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(REQUIRED_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return root
