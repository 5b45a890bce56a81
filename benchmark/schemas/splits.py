"""Patient-level splits and the regimes that group them (PROTOCOL.md section 3)."""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from benchmark.schemas.records import ManifestName, SupportCounts


class SplitRole(StrEnum):
    """What a split is for: its role in the evidence (PROTOCOL.md section 3)."""

    REFERENCE = "reference"
    FIXED = "fixed"
    MONTE_CARLO = "monte-carlo"
    EXHAUSTIVE = "exhaustive"
    KFOLD = "kfold"


class RegimeName(StrEnum):
    """The regimes the splits module draws (PROTOCOL.md section 3), by the name profiles and reports use."""

    REFERENCE_ALL_XRAY = "reference-all-xray"
    REFERENCE_ALL_CT = "reference-all-ct"
    PAIRED_FIXED = "paired-fixed"
    PAIRED_MONTE_CARLO = "paired-monte-carlo"
    PAIRED_EXHAUSTIVE = "paired-exhaustive"
    PAIRED_KFOLD = "paired-kfold"


OPTIONAL_REGIMES = frozenset({RegimeName.PAIRED_EXHAUSTIVE, RegimeName.PAIRED_KFOLD})  # built when a profile asks


def validation_set_hash(val_patients: tuple[str, ...] | list[str]) -> str:
    """Stable sha256 of a validation set: independent of order, process and platform."""
    return hashlib.sha256("\n".join(sorted(val_patients)).encode("utf-8")).hexdigest()


class Split(BaseModel):
    """A patient-level train/validation partition of one manifest."""

    model_config = ConfigDict(frozen=True)

    manifest: ManifestName
    role: SplitRole
    index: int = Field(ge=0, description="resample number r (0 for reference and fixed splits; k-fold: "
                                         "repeat * k + fold)")
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
                    "exhaustive: exhaustive_seed + i; k-fold: the seed of the split's repeat)")
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
