"""Pydantic schemas of the data layer: cohort sources, image records, manifests, pairs, splits, regimes, reports.

Everything that flows from a cohort's table (a cohort manifest CSV, or the collection's metadata.csv)
to the splits is one of these models, so it can be written to JSON, read back, and checked by the claim
tests without the code that produced it.

Modalities are stored by their role: `xray` is the target modality (deployed, default X-ray) and `ct` the
privileged one (training only, default CT), whatever a cohort calls them; `CohortSourceInfo` records the
names the cohort declared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

Modality = Literal["xray", "ct"]  # roles: xray = the target modality, ct = the privileged modality
ManifestName = Literal["all-xray", "all-ct", "paired"]
SourceKind = Literal["collection", "manifest"]


ImageReader = Literal["pillow", "pydicom", "nibabel"]


def image_cache_key(content_sha256: str, reader: str) -> str:
    """The image cache's key of a file: its content hash, plus the reader unless Pillow (whose keys predate this)."""
    return content_sha256 if reader == "pillow" else f"{content_sha256}.{reader}"


class CohortSource(BaseModel):
    """Where a cohort's rows come from: a cohort manifest CSV, or a clone of the COVID-19 Image Data Collection."""

    model_config = ConfigDict(frozen=True)

    kind: SourceKind
    path: str = Field(description="manifest: the CSV file; collection: the data root folder (metadata.csv inside)")

    @property
    def table(self) -> str:
        """The file whose rows are the cohort: the manifest CSV itself, or the collection's metadata.csv."""
        return self.path if self.kind == "manifest" else f"{self.path.rstrip('/')}/metadata.csv"


class FilterReason(StrEnum):
    """Why a metadata row was not kept, in the order the checks run (PROTOCOL.md section 2)."""

    INVALID_ROW = "invalid_row"  # a required cell is empty, or an optional one (offset) holds no valid value
    INVALID_LABEL = "invalid_label"  # cohort manifest: a label that is not 0 or 1
    OUTSIDE_DATA_ROOT = "outside_data_root"  # absolute path, ../ traversal or a link whose opened file leaves the root
    VOLUME_NOT_2D = "volume_not_2d"  # collection: a 3-D volume, not read unless volumes are included
    MISSING_FILE = "missing_file"
    EMPTY_FILE = "empty_file"
    TOO_LARGE = "too_large"  # declares more pixels (all frames, voxels) than the readers' cap `max_pixels`
    CORRUPT_IMAGE = "corrupt_image"  # exists but does not decode (truncated, not an image, ...)
    # why a reader refused a file (benchmark.data.readers.ReadFailure has the same values)
    UNREADABLE_FILE = "unreadable_file"  # the operating system refused to read it (permissions, a folder)
    UNSUPPORTED_TYPE = "unsupported_type"  # a suffix no reader handles
    NOT_DICOM = "not_dicom"  # a .dcm without the DICOM marker and not readable as DICOM
    CORRUPT_DICOM = "corrupt_dicom"  # DICOM marker present, but the data set does not parse
    NO_PIXEL_DATA = "no_pixel_data"  # a DICOM object without Pixel Data
    TRUNCATED = "truncated"  # pixel or voxel data cut short
    UNDECODABLE_PIXEL_DATA = "undecodable_pixel_data"  # compressed without a decoder, or inconsistent attributes
    NOT_GRAYSCALE = "not_grayscale"  # colour DICOM, RGB or complex NIfTI
    UNEXPECTED_SHAPE = "unexpected_shape"  # not 2-D after the reader's reductions
    NOT_NIFTI = "not_nifti"  # nibabel cannot read it as NIfTI
    VOLUME_4D = "volume_4d"  # NIfTI with a fourth axis longer than 1
    CONSTANT_IMAGE = "constant_image"  # every pixel equal: nothing to scale to [0, 1]
    NON_FINITE = "non_finite"  # NaN or infinite values
    DUPLICATE_IMAGE = "duplicate_image"  # the same file referenced by an earlier row
    TODO_FINDING = "todo_finding"  # placeholder finding `todo` (or hierarchical `.../todo`)
    OTHER_MODALITY = "other_modality"  # neither X-ray nor CT


class SkippedRow(BaseModel):
    """One metadata row that was dropped, with where it is and why."""

    model_config = ConfigDict(frozen=True)

    line: int = Field(description="line number in the cohort's table (the header is line 1)")
    patient_id: str
    path: str = Field(description="the image path exactly as written in the row (collection: folder/filename)")
    reason: FilterReason
    detail: str = ""


class FilterReport(BaseModel):
    """A count per filtering reason; every row of the cohort's table is either kept or counted once here."""

    metadata_path: str
    total_rows: int
    kept_rows: int
    counts: dict[FilterReason, int]
    skipped: list[SkippedRow] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="rows kept with a value read as unknown")

    @model_validator(mode="after")
    def _every_row_accounted_for(self) -> FilterReport:
        dropped = sum(self.counts.values())
        if self.kept_rows + dropped != self.total_rows:
            raise ValueError(f"kept {self.kept_rows} + dropped {dropped} != total {self.total_rows}")
        if len(self.skipped) != dropped:
            raise ValueError(f"{len(self.skipped)} skipped rows listed but {dropped} counted")
        return self


class ImageRecord(BaseModel):
    """One kept image: who it belongs to, what it shows, and the content hash that keys the cache."""

    model_config = ConfigDict(frozen=True)

    image_id: str = Field(description="folder/filename, unique within a cohort")
    patient_id: str
    modality: Modality
    finding: str
    label: Literal[0, 1] = Field(description="image-level label: the manifest's label column (collection: 1 iff the "
                                             "finding contains COVID-19)")
    offset: float | None = Field(description="days since symptom onset; None when unknown")
    view: str = ""
    content_sha256: str = Field(description="sha256 of the file's bytes")
    reader: ImageReader = Field(default="pillow", exclude_if=lambda reader: reader == "pillow",  # dumps as before
                                description="the reader that decoded it (by the file's type)")
    line: int = Field(description="line number in the cohort's table (manifest CSV or metadata.csv)")

    @property
    def cache_key(self) -> str:
        """The key of its cached array: content and reader, so identical bytes read as another type never share it."""
        return image_cache_key(self.content_sha256, self.reader)


class PairedRecord(BaseModel):
    """An X-ray image of the paired cohort, its matched CT image of the same patient, and their offset gap."""

    model_config = ConfigDict(frozen=True)

    xray: ImageRecord
    ct: ImageRecord
    offset_gap: float | None = Field(description="|xray.offset - ct.offset| in days; None when either is unknown")

    @model_validator(mode="after")
    def _same_patient_and_modalities(self) -> PairedRecord:
        if self.xray.patient_id != self.ct.patient_id:
            raise ValueError(f"{self.xray.image_id} (patient {self.xray.patient_id}) matched to "
                             f"{self.ct.image_id} of another patient ({self.ct.patient_id})")
        if self.xray.modality != "xray" or self.ct.modality != "ct":
            raise ValueError(f"pair {self.xray.image_id} / {self.ct.image_id} has modalities "
                             f"{self.xray.modality} / {self.ct.modality}, expected xray / ct")
        return self


class Labelled(Protocol):
    """Anything counted as support: an image of a patient with a label (an ImageRecord, a TestCase)."""

    @property
    def patient_id(self) -> str: ...  # noqa: D102

    @property
    def label(self) -> int: ...  # noqa: D102


class SupportCounts(BaseModel):
    """How much evidence a set of images carries: images and patients, split by label."""

    images: int
    patients: int
    positive_images: int
    negative_images: int
    positive_patients: int
    negative_patients: int

    @classmethod
    def of(cls, records: Sequence[Labelled]) -> SupportCounts:
        """Count images and patients (patient label: any positive image) of `records`."""
        labels = patient_labels(records)
        positives = sum(r.label for r in records)
        positive_patients = sum(labels.values())
        return cls(images=len(records), patients=len(labels),
                   positive_images=positives, negative_images=len(records) - positives,
                   positive_patients=positive_patients, negative_patients=len(labels) - positive_patients)


def patient_labels(records: Sequence[Labelled]) -> dict[str, int]:
    """Patient label used for stratification: 1 if any of the patient's images in `records` is positive."""
    labels: dict[str, int] = {}
    for record in records:
        labels[record.patient_id] = max(labels.get(record.patient_id, 0), record.label)
    return labels


class Manifest(BaseModel):
    """The images a regime trains and evaluates on (all-xray, all-ct, or the paired X-ray target)."""

    name: ManifestName
    modality: Modality
    records: list[ImageRecord]
    pairs: list[PairedRecord] | None = Field(
        default=None, description="paired manifest only: the CT match of each record, in the same order")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for record in self.records:
            if record.modality != self.modality:
                raise ValueError(f"{record.image_id} is {record.modality} in the {self.name} manifest")
        if self.pairs is not None and [p.xray.image_id for p in self.pairs] != [r.image_id for r in self.records]:
            raise ValueError(f"{self.name}: pairs do not follow the records one to one")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def support(self) -> SupportCounts:
        """Support counts of the whole manifest."""
        return SupportCounts.of(self.records)

    def patient_labels(self) -> dict[str, int]:
        """Patient id -> patient label within this manifest."""
        return patient_labels(self.records)

    def records_of(self, patients: set[str] | frozenset[str] | tuple[str, ...]) -> list[ImageRecord]:
        """The records of the given patients, in manifest order."""
        wanted = set(patients)
        return [r for r in self.records if r.patient_id in wanted]


class SplitRole(StrEnum):
    """What a split is for: its role in the evidence (PROTOCOL.md section 3)."""

    REFERENCE = "reference"
    FIXED = "fixed"
    MONTE_CARLO = "monte-carlo"
    EXHAUSTIVE = "exhaustive"


class RegimeName(StrEnum):
    """The regimes the splits module draws (PROTOCOL.md section 3), by the name profiles and reports use."""

    REFERENCE_ALL_XRAY = "reference-all-xray"
    REFERENCE_ALL_CT = "reference-all-ct"
    PAIRED_FIXED = "paired-fixed"
    PAIRED_MONTE_CARLO = "paired-monte-carlo"
    PAIRED_EXHAUSTIVE = "paired-exhaustive"


def validation_set_hash(val_patients: tuple[str, ...] | list[str]) -> str:
    """Stable sha256 of a validation set: independent of order, process and platform."""
    return hashlib.sha256("\n".join(sorted(val_patients)).encode("utf-8")).hexdigest()


class Split(BaseModel):
    """A patient-level train/validation partition of one manifest."""

    model_config = ConfigDict(frozen=True)

    manifest: ManifestName
    role: SplitRole
    index: int = Field(ge=0, description="resample number r (0 for reference and fixed splits)")
    seed: int
    train_patients: tuple[str, ...]
    val_patients: tuple[str, ...]

    @model_validator(mode="after")
    def _disjoint_and_sorted(self) -> Split:
        overlap = set(self.train_patients) & set(self.val_patients)
        if overlap:
            raise ValueError(f"patients in both train and val: {sorted(overlap)}")
        if not self.val_patients or not self.train_patients:
            raise ValueError("a split needs at least one training and one validation patient")
        for name, ids in (("train", self.train_patients), ("val", self.val_patients)):
            if list(ids) != sorted(set(ids)):
                raise ValueError(f"{name}_patients must be sorted and unique")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def val_hash(self) -> str:
        """sha256 of the sorted validation patient ids."""
        return validation_set_hash(self.val_patients)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def split_id(self) -> str:
        """Readable, unique id: manifest/role/index-hash prefix."""
        return f"{self.manifest}/{self.role.value}/{self.index}-{self.val_hash[:10]}"


class Regime(BaseModel):
    """A family of splits with one role in the evidence, and the training seeds each split is run with."""

    name: RegimeName
    role: str = Field(description="what this regime's evidence is for, in words")
    manifest: ManifestName
    splits: list[Split]
    training_seeds: list[int] | None = Field(
        default=None,
        description="seeds every split is trained with; None: each split's own seed (Monte Carlo: base + r; "
                    "exhaustive: exhaustive_seed + i)")
    admissible_sets: int | None = Field(
        default=None, description="number of admissible validation sets (Monte Carlo and exhaustive regimes)")
    sampled: bool = Field(
        default=False, description="exhaustive regime: True when its splits are a seeded sample of the admissible "
                                   "sets (more of them than settings.splits.exhaustive_max_sets), False when all")
    sample_seed: int | None = Field(
        default=None, description="exhaustive regime: the seed the sample was drawn with; None when not sampled")

    def seeds_for(self, split: Split) -> list[int]:
        """The training seeds that `split` is run with in this regime."""
        return list(self.training_seeds) if self.training_seeds is not None else [split.seed]


class RegimeSummary(BaseModel):
    """A regime without its splits: what it is for and how many splits it holds."""

    name: str
    role: str
    manifest: ManifestName
    splits: int
    admissible_sets: int | None
    training_seeds: list[int] | None
    sampled: bool = False
    sample_seed: int | None = None

    @classmethod
    def of(cls, regime: Regime) -> RegimeSummary:
        """Summarise `regime`."""
        return cls(name=regime.name, role=regime.role, manifest=regime.manifest, splits=len(regime.splits),
                   admissible_sets=regime.admissible_sets, training_seeds=regime.training_seeds,
                   sampled=regime.sampled, sample_seed=regime.sample_seed)


class SplitSupport(BaseModel):
    """Train and validation support of one split, for the cohort table and the report."""

    split_id: str
    regime: str
    train: SupportCounts
    val: SupportCounts


class PatientLabelDisagreement(BaseModel):
    """A patient whose X-ray and CT images carry different labels."""

    patient_id: str
    xray_findings: list[str]
    ct_findings: list[str]
    xray_label: int
    ct_label: int
    in_paired_cohort: bool


class LabelDefinitionSupport(BaseModel):
    """The paired cohort's patient counts under one label definition, and whether Monte Carlo is possible."""

    definition: str
    patients: int
    positive_patients: int
    negative_patients: int
    monte_carlo_feasible: bool
    why: str


class DataAudit(BaseModel):
    """Label conflicts between modalities, shown next to every paired-cohort result."""

    disagreeing_patients: list[PatientLabelDisagreement]
    paired_negative_patients: list[str]
    paired_negatives_with_covid_ct: list[str] = Field(
        description="paired-cohort negative patients (by X-ray) whose CT is labelled COVID-19")
    paired_label_mismatched_pairs: int = Field(description="matched pairs whose X-ray and CT labels differ")
    label_definitions: list[LabelDefinitionSupport]


DEFAULT_MAX_PIXELS = 2**27  # 512 x 512 x 512 voxels, 11585 x 11585 pixels: 4-8x a chest radiograph (about 1 GB decoded)


class ReaderPolicy(BaseModel):
    """How files with more than one possible 2-D image, or with a display window, become one image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    multiframe: Literal["middle", "first", "max"] = Field(
        default="middle", description="multi-frame DICOM: middle frame (n // 2), first frame, or maximum over frames")
    volume: Literal["middle-axial", "mip-axial"] = Field(
        default="middle-axial",
        description="3-D NIfTI: middle axial slice (n // 2) or maximum-intensity projection along the axial axis")
    window: Literal["voi", "minmax"] = Field(
        default="voi", description="DICOM: the file's VOI LUT or window when present (else min-max), or always min-max")
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, ge=1,
        description="the most values a file may declare (rows x columns x frames x samples, or voxels) to be "
                    "decoded; a file declaring more is skipped as too_large before any pixel is read")

    @property
    def tag(self) -> str:
        """A short name of the policy, e.g. `middle-middle-axial-voi`, used to key the image cache."""
        cap = "" if self.max_pixels == DEFAULT_MAX_PIXELS else f"-max{self.max_pixels}"
        return f"{self.multiframe}-{self.volume}-{self.window}{cap}"


class ReaderUse(BaseModel):
    """How many kept images one reader read, and what it applied to them (grouped by identical wording)."""

    reader: str
    policy: str
    images: int


class CohortSourceInfo(BaseModel):
    """Which cohort a summary is of: its table and that table's hash, the modality names and how files were read."""

    kind: SourceKind
    path: str = Field(description="the manifest CSV, or the collection's data root")
    table_sha256: str = Field(description="sha256 of the manifest CSV (collection: of metadata.csv)")
    target_modality: str = Field(description="the modality deployed at test time (role `xray`)")
    privileged_modality: str = Field(description="the modality available at training only (role `ct`)")
    include_volumes: bool = Field(default=False, description="collection: were 3-D volumes read (else skipped)?")
    reader_policy: ReaderPolicy
    readers: list[ReaderUse] = Field(default_factory=list, description="the kept images by reader and what it did")


TestSetKind = Literal["held-out", "external"]
HELD_OUT = "held-out"  # the name and kind of the cohort's own held-out test set (PROTOCOL.md section 13)


class TestCase(BaseModel):
    """One image of a test set: whose, its label, its file and the sha256 of its decoded pixels."""

    __test__ = False  # not a pytest test class

    model_config = ConfigDict(frozen=True)

    patient_id: str
    image_id: str
    label: Literal[0, 1]
    path: str = Field(description="the image file, relative to the test set's root folder (posix)")
    pixels_sha256: str = Field(description="sha256 of the decoded image (benchmark.data.readers.pixels_sha256)")
    content_sha256: str = Field(description="sha256 of the file's bytes")
    reader: ImageReader = Field(default="pillow", exclude_if=lambda reader: reader == "pillow",  # dumps as before
                                description="the reader that decoded it (by the file's type)")
    line: int = Field(description="line of the row in the test set's table (the cohort's table for held-out)")

    @property
    def cache_key(self) -> str:
        """The key of its cached array (content and reader, as for ImageRecord)."""
        return image_cache_key(self.content_sha256, self.reader)


class TestExclusion(BaseModel):
    """A held-out image left out of the test set, and why (it shows the same picture as an image models train on)."""

    __test__ = False  # not a pytest test class

    model_config = ConfigDict(frozen=True)

    patient_id: str
    image_id: str
    line: int
    reason: str


class TestSet(BaseModel):
    """Target-modality images that no model or teacher of the study trains, validates or tunes on (section 13)."""

    __test__ = False  # not a pytest test class

    model_config = ConfigDict(frozen=True)

    name: str
    kind: TestSetKind
    description: str = Field(description="what the test set is, in words")
    table: str = Field(description="the table its rows come from: the cohort's (held-out) or the external manifest")
    table_sha256: str
    root: str = Field(description="the folder case paths are relative to")
    cases: list[TestCase]
    excluded: list[TestExclusion] = Field(default_factory=list, description="held-out images left out")
    filter_report: FilterReport | None = Field(default=None, description="external: how its manifest's rows were "
                                               "filtered (the cohort's filter, target modality only)")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def support(self) -> SupportCounts:
        """Images and patients of the test set, by label."""
        return SupportCounts.of(self.cases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cases_sha256(self) -> str:
        """sha256 over the sorted cases (patient, image, label, pixels): what a store's runs were scored on."""
        lines = sorted(f"{c.patient_id}\t{c.image_id}\t{c.label}\t{c.pixels_sha256}" for c in self.cases)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


class TestSetSummary(BaseModel):
    """A test set without its cases: what it is, where from, its support and what was left out."""

    __test__ = False  # not a pytest test class

    name: str
    kind: TestSetKind
    description: str
    table: str
    table_sha256: str
    cases_sha256: str
    support: SupportCounts
    excluded: list[TestExclusion] = Field(default_factory=list)
    skipped_rows: int = Field(default=0, description="external: rows of its manifest that were not kept")

    @classmethod
    def of(cls, test_set: TestSet) -> TestSetSummary:
        """Summarise `test_set`."""
        return cls(name=test_set.name, kind=test_set.kind, description=test_set.description, table=test_set.table,
                   table_sha256=test_set.table_sha256, cases_sha256=test_set.cases_sha256, support=test_set.support,
                   excluded=test_set.excluded,
                   skipped_rows=len(test_set.filter_report.skipped) if test_set.filter_report else 0)


class CohortSummary(BaseModel):
    """What `ctxray-bench cohorts` prints and writes: filtering, manifests, default splits, audit."""

    data_root: str
    metadata_sha256: str
    image_list_sha256: str
    image_size: int
    filter_report: FilterReport
    manifests: dict[str, SupportCounts]
    regimes: list[RegimeSummary]
    splits: list[SplitSupport]
    split_errors: dict[str, str] = Field(default_factory=dict, description="regime -> why it could not be drawn")
    audit: DataAudit
    source: CohortSourceInfo | None = Field(default=None, description="None in stores written before cohort "
                                            "manifests (they are all of the collection, read with Pillow)")
    test_sets: list[TestSetSummary] = Field(default_factory=list, description="held-out and external test sets")
    test_set_notes: list[str] = Field(default_factory=list, exclude_if=lambda notes: not notes,
                                      description="why a test set is absent (held-out switched off, none to hold out)")


class CasePrediction(BaseModel):
    """One validation case's prediction: who, which image, the true label and P(COVID-19)."""

    model_config = ConfigDict(frozen=True)

    patient_id: str
    image_id: str
    label: Literal[0, 1]
    score: float = Field(ge=0.0, le=1.0)
    matched_ct: str | None = Field(default=None, exclude_if=lambda v: v is None,
                                   description="paired X-ray: the CT image it is matched to (PROTOCOL.md section 2)")
    offset_gap: float | None = Field(default=None, exclude_if=lambda v: v is None,
                                     description="paired X-ray: |offset difference| to its matched CT in days; None "
                                                 "when either offset is unknown (or the case is not paired)")


class PairMatch(BaseModel):
    """One paired X-ray image and the CT image it is matched to (closest offset), as the store keeps the match."""

    model_config = ConfigDict(frozen=True)

    patient_id: str
    xray_image_id: str
    ct_image_id: str
    xray_offset: float | None
    ct_offset: float | None
    offset_gap: float | None = Field(description="|xray_offset - ct_offset| in days; None when either is unknown")

    @classmethod
    def of(cls, pair: PairedRecord) -> PairMatch:
        """The match of one paired record."""
        return cls(patient_id=pair.xray.patient_id, xray_image_id=pair.xray.image_id, ct_image_id=pair.ct.image_id,
                   xray_offset=pair.xray.offset, ct_offset=pair.ct.offset, offset_gap=pair.offset_gap)


class DeploymentProbe(BaseModel):
    """Evidence of CT use at inference: the largest score change with CT removed or replaced by noise."""

    model_config = ConfigDict(frozen=True)

    reads_ct_declared: bool
    ct_removed_max_abs_diff: float | None = Field(description="None: the model cannot run without CT")
    ct_noise_max_abs_diff: float
