"""The data half of the flow in one call: a cohort's table -> kept records -> manifests -> regimes, plus its summary.

Each cohort kind has its own adapter; everything after the adapter is shared, so both kinds are treated alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import CohortSettings, Settings
from benchmark.data.cohort import Cohort, CohortTable, audit_labels, build_cohort, build_manifests
from benchmark.data.cohort_manifest import read_cohort_manifest
from benchmark.data.collection import read_collection
from benchmark.data.imaging import ImageCache
from benchmark.data.splits import default_regimes
from benchmark.data.test_sets import ExternalSpec, build_test_sets
from benchmark.errors import ConfigError, MetadataError
from benchmark.schemas import (
    CohortSource,
    CohortSummary,
    DataAudit,
    Manifest,
    ManifestName,
    Regime,
    RegimeName,
    RegimeSummary,
    SplitSupport,
    SupportCounts,
    TestSet,
    TestSetSummary,
)

# A cohort comes from a cohort manifest CSV (a file: `--cohort`) or a clone of the COVID-19 Image Data Collection
# (a folder: `--data`); each kind has its adapter, and everything after the adapter is shared.

ADAPTERS: dict[str, Callable[[CohortSource, CohortSettings], CohortTable]] = {
    "collection": read_collection, "manifest": read_cohort_manifest}
DATA_ENV = "CTXRAY_DATA"
CONTAINER_ENV = "CTXRAY_CONTAINER"  # set by the Dockerfile: errors then say how to mount data into the container


def resolve_data_root(explicit: str | Path | None) -> Path:
    """The data root from --data, else $CTXRAY_DATA, else the `data fetch` default; a clear error otherwise."""
    from benchmark.data.fetch import default_data_dir

    fetched = default_data_dir()
    candidate = explicit or os.environ.get(DATA_ENV) or (fetched if (fetched / "metadata.csv").is_file() else None)
    if not candidate and os.environ.get(CONTAINER_ENV):
        raise ConfigError(f"no data in this container: mount your clone of the COVID-19 Image Data Collection "
                          f"(a folder with metadata.csv and images/) read-only and name it, e.g. "
                          f"`docker run -v /path/to/covid-chestxray-dataset:/data:ro -e {DATA_ENV}=/data ...`, "
                          f"or build the image with its default FETCH_DATA=1")
    if not candidate:
        raise ConfigError(f"no data: pass --data PATH, set {DATA_ENV} to a clone of the COVID-19 Image Data "
                          f"Collection (a folder with metadata.csv and images/), or run `ctxray-bench data fetch` "
                          f"(it clones into {fetched})")
    root = Path(candidate).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{root}: data root is not a folder")
    return root


def resolve_cohort_file(path: str | Path) -> Path:
    """The cohort manifest named by --cohort; ConfigError when it is not a file."""
    manifest = Path(path).expanduser()
    if manifest.is_dir():
        raise ConfigError(f"{manifest}: --cohort names a cohort manifest CSV file, not a folder "
                          f"(a clone of the COVID-19 Image Data Collection goes to --data)")
    if not manifest.is_file():
        raise ConfigError(f"{manifest}: cohort manifest not found")
    return manifest


def cohort_source(path: str | Path | CohortSource) -> CohortSource:
    """What a path names: a file is a cohort manifest, a folder a clone of the collection."""
    if isinstance(path, CohortSource):
        return path
    resolved = Path(path).expanduser().resolve()
    return CohortSource(kind="manifest" if resolved.is_file() else "collection", path=str(resolved))


def load_cohort(data: Path | str | CohortSource, cache: ImageCache, settings: CohortSettings | None = None, *,
                progress: bool = False) -> Cohort:
    """Read a cohort manifest or a collection through its adapter and filter it into kept image records."""
    settings = settings or CohortSettings()
    source = cohort_source(data)
    return build_cohort(ADAPTERS[source.kind](source, settings), cache, settings, progress=progress)


def image_cache(settings: Settings, root: Path | str | None = None) -> ImageCache:
    """The image cache these settings read through: their image size and reader policy."""
    return ImageCache(root, settings.data.image_size, settings.cohort.readers)


@dataclass(frozen=True)
class PreparedData:
    """Everything a study needs before training: cohort, manifests, regimes and the audit."""

    cohort: Cohort
    manifests: dict[ManifestName, Manifest]
    regimes: list[Regime]
    split_errors: dict[str, str]
    audit: DataAudit
    image_size: int
    test_sets: tuple[TestSet, ...] = ()  # held-out first, then the external ones (PROTOCOL.md section 13)
    test_set_notes: tuple[str, ...] = ()  # why a test set is absent


def prepare_data(data: Path | str | CohortSource, settings: Settings, cache: ImageCache, *,
                 optional_regimes: Collection[RegimeName] = (), progress: bool = False,
                 externals: Sequence[ExternalSpec] = ()) -> PreparedData:
    """Build the cohort, its manifests, the default regimes, the label audit and the test sets (held-out, and the
    `externals` named) from a manifest or a collection."""
    if (cache.size, cache.policy) != (settings.data.image_size, settings.cohort.readers):
        raise ConfigError(f"image cache at {cache.size} px with reader policy {cache.policy.tag} does not match the "
                          f"settings ({settings.data.image_size} px, {settings.cohort.readers.tag}); build it with "
                          f"pipeline.image_cache(settings)")
    cohort = load_cohort(data, cache, settings.cohort, progress=progress)
    report = cohort.filter_report
    if report.kept_rows == 0:
        reasons = ", ".join(f"{count} {reason.value}" for reason, count in report.counts.items() if count)
        example = f"; e.g. line {report.skipped[0].line}: {report.skipped[0].detail}" if report.skipped else ""
        raise MetadataError(report.metadata_path, "no row was kept, so there is nothing to train or evaluate: "
                            + (f"all {report.total_rows} rows were dropped ({reasons}){example}"[:400]
                               if report.total_rows else "the file has a header but no data rows"))
    manifests = build_manifests(cohort.records)
    regimes, errors = default_regimes(manifests, settings.splits, optional=optional_regimes)
    audit = audit_labels(cohort.records, manifests["paired"], settings.splits.monte_carlo_val_patients,
                         settings.splits.validation_negatives, cohort.source.kind)
    test_sets, notes = build_test_sets(cohort, manifests, settings, cache, externals)
    return PreparedData(cohort, manifests, regimes, errors, audit, settings.data.image_size, tuple(test_sets),
                        tuple(notes))


def cohort_summary(prepared: PreparedData) -> CohortSummary:
    """The filtering counts, manifest and split support and the audit, as one serialisable summary."""
    split_support = []
    for regime in prepared.regimes:
        manifest = prepared.manifests[regime.manifest]
        for split in regime.splits:
            split_support.append(SplitSupport(
                split_id=split.split_id, regime=regime.name,
                train=SupportCounts.of(manifest.records_of(split.train_patients)),
                val=SupportCounts.of(manifest.records_of(split.val_patients))))
    cohort = prepared.cohort
    return CohortSummary(
        image_root=str(cohort.image_root), metadata_sha256=cohort.metadata_sha256,
        image_list_sha256=cohort.image_list_sha256, image_size=prepared.image_size,
        filter_report=cohort.filter_report,
        manifests={name: m.support for name, m in prepared.manifests.items()},
        regimes=[RegimeSummary.of(r) for r in prepared.regimes], splits=split_support,
        split_errors=prepared.split_errors, audit=prepared.audit, source=cohort.source,
        test_sets=[TestSetSummary.of(t) for t in prepared.test_sets], test_set_notes=list(prepared.test_set_notes))
