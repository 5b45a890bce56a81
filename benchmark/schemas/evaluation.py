"""Test sets, validation predictions, pair matches and deployment probes: what models are scored on and output."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from benchmark.schemas.records import FilterReport, ImageReader, PairedRecord, SupportCounts, image_cache_key

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
