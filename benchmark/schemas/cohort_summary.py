"""What `ctxray-bench cohorts` reports of a cohort: its source and reader policy, label audit, and summary."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from benchmark.schemas.evaluation import TestSetSummary
from benchmark.schemas.records import SLICE_CHANNELS, FilterReport, SliceLayout, SourceKind, SupportCounts
from benchmark.schemas.splits import RegimeSummary, SplitSupport


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
    """How files with more than one possible 2-D image, or with a display window, become one image (or, for the
    privileged modality under `privileged_slices`, three slices as channels)."""

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
    privileged_slices: SliceLayout = Field(
        default="one", exclude_if=lambda layout: layout == "one",  # left out at its default: stores stay as before
        description="privileged modality only: `one` image (a 3-D volume by `volume`), or `middle-three-axial`: "
                    "axial slices n // 2 - 1, n // 2, n // 2 + 1 of a 3-D NIfTI as three channels, in place of "
                    "`volume` (a 2-D image repeated to three; a volume of 2 slices refused as unexpected_shape)")

    @property
    def tag(self) -> str:
        """A short name of the policy, e.g. `middle-middle-axial-voi`, used to key the image cache."""
        cap = "" if self.max_pixels == DEFAULT_MAX_PIXELS else f"-max{self.max_pixels}"
        slices = "" if self.privileged_slices == "one" else f"-ct-{self.privileged_slices}"
        return f"{self.multiframe}-{self.volume}-{self.window}{cap}{slices}"

    def slices_for(self, role: str | None) -> SliceLayout:
        """How images of a modality role are laid out: the privileged role (`ct`) by `privileged_slices`, others one."""
        return self.privileged_slices if role == "ct" else "one"

    def channels_for(self, role: str | None) -> int:
        """The input channels of a network reading the modality `role` under this policy (3 or 1)."""
        return SLICE_CHANNELS[self.slices_for(role)]


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


class CohortSummary(BaseModel):
    """What `ctxray-bench cohorts` prints and writes: filtering, manifests, default splits, audit."""

    image_root: str = Field(validation_alias=AliasChoices("image_root", "data_root"),  # data_root: stores before 0.2
                            description="the folder the cohort's image paths are relative to")
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
