"""Fixtures that write tiny synthetic cohorts (metadata.csv + images/) into temporary folders."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.claims.options import add_options, required_data_root
from benchmark.data.collection import REQUIRED_COLUMNS
from benchmark.data.imaging import ImageCache

COLUMNS = [*REQUIRED_COLUMNS, "clinical_notes"]


def write_image(path: Path, *, mode: str = "L", size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """Write a small random image of the given Pillow mode (format from the suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size[1], size[0]
    if mode == "I;16":
        ramp = np.linspace(0, 4095, w)[None, :] + rng.integers(0, 16, size=(h, w))  # 12 bits used of 16
        image = Image.fromarray(np.clip(ramp, 0, 4095).astype(np.uint16))
    elif mode == "RGBA":
        image = Image.fromarray(rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8))
    elif mode == "RGB":
        image = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    else:
        image = Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8))
    image.save(path)
    return path


def row(patientid: str, modality: str, finding: str, filename: str, *, offset: str = "",
        folder: str = "images", view: str = "PA", write: bool = True, **extra: str) -> dict[str, object]:
    """One metadata row; `write` says whether the fixture should create its image file."""
    return {"patientid": patientid, "offset": offset, "finding": finding, "modality": modality,
            "folder": folder, "filename": filename, "view": view, "_write": write, **extra}


CohortWriter = Callable[..., Path]


@pytest.fixture
def write_cohort(tmp_path: Path) -> CohortWriter:
    """Return a function writing rows (and their images) as a data root; returns the root."""
    counter = {"n": 0}

    def _write(rows: list[dict[str, object]], *, name: str = "data", columns: list[str] | None = None) -> Path:
        root = tmp_path / name
        (root / "images").mkdir(parents=True, exist_ok=True)
        header = columns or COLUMNS
        with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: v for k, v in r.items() if not k.startswith("_")})
                if r.get("_write", True):
                    counter["n"] += 1
                    target = root / str(r["folder"]) / str(r["filename"])
                    if not target.exists():
                        write_image(target, seed=counter["n"])
        return root

    return _write


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    """An empty image cache at 16 x 16 in a temporary folder."""
    return ImageCache(tmp_path / "cache", size=16)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.fixture(scope="session")
def real_data_root(pytestconfig: pytest.Config) -> Path:
    """The shared real data (--data or CTXRAY_DATA): skipped when none is named, failing when it is not there."""
    return required_data_root(pytestconfig)


@pytest.fixture
def paired_rows() -> list[dict[str, object]]:
    """A small paired cohort: 6 positive and 3 negative paired patients and one X-ray-only patient (xr0)."""
    return paired_cohort_rows(extra_ct_patients=0, extra_xray_patients=1)

def paired_cohort_rows(positives: int = 6, negatives: int = 3, extra_ct_patients: int = 2,
                       extra_xray_patients: int = 3) -> list[dict[str, object]]:
    """Paired patients (2 X-rays + 2 CTs each) plus CT-only and X-ray-only patients."""
    rows = []
    for p in range(positives + negatives):
        finding = "Pneumonia/Viral/COVID-19" if p < positives else "No Finding"
        rows += [row(f"p{p}", "X-ray", finding, f"x{p}-a.png", offset="2"),
                 row(f"p{p}", "X-ray", finding, f"x{p}-b.png", offset="9"),
                 row(f"p{p}", "CT", finding, f"c{p}-a.png", offset="1"),
                 row(f"p{p}", "CT", finding, f"c{p}-b.png", offset="8")]
    for p in range(extra_ct_patients):
        rows.append(row(f"ct{p}", "CT", "Pneumonia/Viral/COVID-19" if p % 2 else "No Finding", f"ct{p}.png"))
    for p in range(extra_xray_patients):
        rows.append(row(f"xr{p}", "X-ray", "Pneumonia/Viral/COVID-19" if p % 2 else "No Finding", f"xr{p}.png"))
    return rows


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory: pytest.TempPathFactory):
    """A prepared synthetic cohort at 32 x 32 (MC: 2 resamples of k = 3) for engine tests."""
    from benchmark.config import Settings
    from benchmark.data.pipeline import prepare_data

    root = tmp_path_factory.mktemp("small-cohort")
    (root / "images").mkdir()
    rows = paired_cohort_rows()
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for n, r in enumerate(rows):
            writer.writerow({k: v for k, v in r.items() if not k.startswith("_")})
            write_image(root / "images" / str(r["filename"]), size=(48, 48), seed=n)
    settings = Settings.model_validate({"data": {"image_size": 32},
                                        "splits": {"monte_carlo_resamples": 2, "monte_carlo_val_patients": 3}})
    cache = ImageCache(tmp_path_factory.mktemp("small-cache"), settings.data.image_size)
    return prepare_data(root, settings, cache), cache


@pytest.fixture
def engine_factory(small_prepared, tmp_path: Path):
    """Build an Engine on the small cohort; `teacher_root` None keeps teachers in memory only."""
    from benchmark.config import Settings
    from benchmark.experiment.study import build_engine
    from benchmark.methods.engine import Engine

    prepared, cache = small_prepared

    def _make(teacher_root: Path | None = None) -> Engine:
        return build_engine(prepared, Settings(), cache, teacher_root, "cpu")

    return _make


def fast(configuration, epochs: int = 1):
    """A configuration trained for `epochs` epochs, its teacher too, to keep tests quick."""
    overrides: dict[str, object] = {"training": {"epochs": epochs}}
    if configuration.teacher is not None:
        overrides["teacher"] = {"training": {"epochs": epochs}}
    return configuration.with_overrides(configuration.name, overrides)


def write_smoke_store(root: Path, settings: str = "[data]\nimage_size = 32\n", **cohort: object) -> Path:
    """Run the smoke profile on a synthetic cohort (48 px images, `cohort` overrides) under `root` with these
    settings (TOML text) and publish its summary, evidence and report; returns the store folder."""
    from benchmark.data.synthetic import write_synthetic_cohort
    from benchmark.experiment.study import RunRequest, run_profile
    from benchmark.report.render import write_store_outputs

    data = write_synthetic_cohort(root / "data", size=48, **cohort)
    (root / "settings.toml").write_text(settings)
    out = root / "store"
    outcome = run_profile(RunRequest(cohort=data, profile="smoke", out=out, workers=2,
                                     settings_path=root / "settings.toml", cache_root=root / "cache", progress=False))
    assert not outcome.failures, outcome.failures
    write_store_outputs(out)
    return out


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke-profile store (summary, evidence, report) on a synthetic cohort at 32 x 32."""
    return write_smoke_store(tmp_path_factory.mktemp("synthetic-store"))


@pytest.fixture(scope="session")
def tiny_power(tmp_path_factory: pytest.TempPathFactory):
    """The packaged `tiny` power grid, computed once: (its PowerResult, its output folder)."""
    from benchmark.experiment.power_study import load_grid
    from tests.power_run import run_power

    out = tmp_path_factory.mktemp("power")
    return run_power(load_grid("tiny"), out, workers=2, progress=False), out


def claim_count() -> int:
    """How many claim tests claims/test_claims.py holds: an untouched store passes every one."""
    text = (Path(__file__).resolve().parent.parent / "claims" / "test_claims.py").read_text(encoding="utf-8")
    return len(re.findall(r"^def test_claim", text, flags=re.MULTILINE))
