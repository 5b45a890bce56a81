"""Cohort sources, filtering, image records, pairs and manifests: what a cohort's table becomes.

Written to JSON and read back by the claim tests without the code that produced them.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

# Modalities are stored by their role, whatever a cohort calls them: `xray` is the target modality (deployed, default
# X-ray) and `ct` the privileged one (training only, default CT); `CohortSourceInfo` records the names it declared.
Modality = Literal["xray", "ct"]  # roles: xray = the target modality, ct = the privileged modality
ManifestName = Literal["all-xray", "all-ct", "paired"]
SourceKind = Literal["collection", "manifest"]


ImageReader = Literal["pillow", "pydicom", "nibabel"]


# How one image file becomes the array a network reads: one 2-D image (one channel), or the middle three axial
# slices of a 3-D volume as three channels (the privileged modality only: `ReaderPolicy.privileged_slices`).
SliceLayout = Literal["one", "middle-three-axial"]
SLICE_CHANNELS: dict[str, int] = {"one": 1, "middle-three-axial": 3}


def image_cache_key(content_sha256: str, reader: str, slices: SliceLayout = "one") -> str:
    """The image cache's key of a file: its content hash, plus the reader unless Pillow (whose keys predate this),
    plus the slice layout unless one image (so one- and three-channel arrays of the same bytes never mix)."""
    key = content_sha256 if reader == "pillow" else f"{content_sha256}.{reader}"
    return key if slices == "one" else f"{key}.{slices}"


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
    slices: SliceLayout = Field(default="one", exclude_if=lambda slices: slices == "one",  # dumps as before
                                description="how its file became the array read: one image, or the middle three "
                                            "axial slices as channels ([cohort.readers] privileged_slices)")

    @property
    def cache_key(self) -> str:
        """The key of its cached array: content, reader and slice layout, so identical bytes read as another type,
        or as another number of channels, never share it."""
        return image_cache_key(self.content_sha256, self.reader, self.slices)

    @property
    def channels(self) -> int:
        """The channels of its cached array (1, or 3 for the middle three axial slices)."""
        return SLICE_CHANNELS[self.slices]


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
