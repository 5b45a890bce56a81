"""Settings as data: pydantic models loaded from a TOML file (benchmark/configs/default.toml by default)."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import ConfigError, describe_os_error
from benchmark.schemas import ReaderPolicy

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.toml"


class DataSettings(BaseModel):
    """How images are decoded."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(default=128, ge=8, le=1024)
    normalise_mean: float = Field(default=0.5, description="cached [0, 1] pixels become (x - mean) / std")
    normalise_std: float = Field(default=0.25, gt=0)


DEFAULT_KFOLD_SEEDS = (3000, 3001, 3002)


class SplitSettings(BaseModel):
    """How patient-level splits are drawn (PROTOCOL.md section 3)."""

    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    reference_seed: int = 42
    fixed_seed: int = 42
    training_seeds: list[int] = Field(default_factory=lambda: [42, 43, 44, 45], min_length=1)
    monte_carlo_resamples: int = Field(default=8, ge=1)
    monte_carlo_val_patients: int = Field(default=5, ge=2)
    validation_negatives: int = Field(default=1, ge=1, description="negative patients held out in every paired "
                                      "validation set (fixed, Monte Carlo, exhaustive); a larger cohort may hold "
                                      "out more")
    monte_carlo_seed_base: int = 1000
    exhaustive_max_sets: int = Field(default=500, ge=1)
    exhaustive_seed: int = 2000
    # the k-fold fields are left out of a store's manifest at their defaults, so stores stay as before
    kfold_folds: int = Field(default=5, ge=2, description="paired k-fold regime: folds per repeat (k)",
                             exclude_if=lambda folds: folds == 5)
    kfold_seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_KFOLD_SEEDS), min_length=1,
                                   exclude_if=lambda seeds: seeds == list(DEFAULT_KFOLD_SEEDS),
                                   description="paired k-fold regime: one repeat per seed, which draws its folds and "
                                               "trains its runs")

    @field_validator("training_seeds", "kfold_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _a_positive_in_every_validation_set(self) -> SplitSettings:
        if self.validation_negatives >= self.monte_carlo_val_patients:
            raise ValueError(f"validation_negatives = {self.validation_negatives} leaves no positive patient in a "
                             f"validation set of k = {self.monte_carlo_val_patients}")
        return self


def modality_key(name: str) -> str:
    """A modality name as compared: case and spacing ignored, and `X-ray`, `x ray`, `CXR` all read as `xray`."""
    key = " ".join(name.strip().lower().split())
    return {"x-ray": "xray", "x ray": "xray", "cxr": "xray"}.get(key, key)


class CohortSettings(BaseModel):
    """Which modality is deployed and which is privileged, and how image files become 2-D images."""

    model_config = ConfigDict(extra="forbid")

    target_modality: str = Field(default="xray", min_length=1, description="the modality the deployed model sees "
                                 "(manifest `modality` value; case and spacing ignored)")
    privileged_modality: str = Field(default="ct", min_length=1,
                                     description="the modality available at training only (the teacher's)")
    include_volumes: bool = Field(default=False, description="collection only: read its 3-D NIfTI volumes (the "
                                  "`volumes/` folder) by the reader policy instead of skipping them")
    readers: ReaderPolicy = Field(default_factory=ReaderPolicy)

    @field_validator("target_modality", "privileged_modality")
    @classmethod
    def _a_modality_has_a_name(cls, value: str) -> str:
        if not modality_key(value):
            raise ValueError(f"a modality name may not be blank (value {value!r})")
        if not value.isprintable():
            raise ValueError(f"a modality name may not hold control characters (value {value!r})")
        return value

    @model_validator(mode="after")
    def _two_different_modalities(self) -> CohortSettings:
        if modality_key(self.target_modality) == modality_key(self.privileged_modality):
            raise ValueError(f"target_modality {self.target_modality!r} and privileged_modality "
                             f"{self.privileged_modality!r} name the same modality")
        return self

    def role_of(self, modality: str) -> str | None:
        """`xray` for the target modality, `ct` for the privileged one, None for any other (case ignored)."""
        return {modality_key(self.target_modality): "xray",
                modality_key(self.privileged_modality): "ct"}.get(modality_key(modality))


class TestSetSettings(BaseModel):
    """Which test sets deployable runs are scored on besides their validation cases (PROTOCOL.md section 13)."""

    __test__ = False  # not a pytest test class

    model_config = ConfigDict(extra="forbid")

    held_out: bool = Field(default=True, description="score on the cohort's target-modality patients outside the "
                           "paired cohort (teachers then train without them)")


class TrainingPath(StrEnum):
    """How a worker trains the runs of one job: each alone, or stacked into one batched module."""

    PER_RUN = "per-run"
    STACKED = "stacked"


class EngineSettings(BaseModel):
    """How networks are trained: each run alone (`per-run`, the reference path), or `stacked`: runs that share the
    protocol's plain cnn network, a schedule and a training-set size train together as one batched module
    (benchmark.methods.stacking; same batches and losses per run, another floating-point order, recorded per run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: TrainingPath = TrainingPath.PER_RUN


class EvidenceSettings(BaseModel):
    """How the companions of section 8's rule read a difference (PROTOCOL.md section 14); never a decision rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rope: float = Field(default=0.05, gt=0, lt=1, description="half-width of the region of practical equivalence "
                        "of the Bayesian correlated t-test, in balanced accuracy")


class GateSettings(BaseModel):
    """The seed authors' decision gate (their follow-up protocol), evaluated beside section 8's rule, never in place
    of it: mean dBA >= `min_mean_difference` and the bootstrap interval's lower bound > 0, on `regime`'s units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regime: Literal["paired-kfold", "paired-monte-carlo", "paired-exhaustive"] = Field(
        default="paired-kfold", description="the regime whose fold-seed (or resample) units the gate reads")
    min_mean_difference: float = Field(default=0.03, ge=-1, le=1, description="the least mean BA difference A - B "
                                       "over the units (the authors': +0.03)")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="level of the two-sided percentile bootstrap "
                              "interval whose lower bound must be > 0")
    bootstrap_replicates: int = Field(default=2000, ge=100)
    bootstrap_seed: int = 0


class Settings(BaseModel):
    """All settings of one benchmark run."""

    model_config = ConfigDict(extra="forbid")

    data: DataSettings = Field(default_factory=DataSettings)
    splits: SplitSettings = Field(default_factory=SplitSettings)
    cohort: CohortSettings = Field(default_factory=CohortSettings)
    test_sets: TestSetSettings = Field(default_factory=TestSetSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings,  # left out at its default: stores stay as before
                                   exclude_if=lambda engine: engine == EngineSettings())
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings,  # left out at its default, as engine is
                                       exclude_if=lambda evidence: evidence == EvidenceSettings())
    gate: GateSettings = Field(default_factory=GateSettings,  # left out at its default, as engine is
                               exclude_if=lambda gate: gate == GateSettings())


def read_toml(source: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; ConfigError naming the file when it is absent, unreadable or not TOML."""
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: {what} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {what} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: {what} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {what}: {describe_os_error(exc)}") from exc


def validation_problems(exc: ValidationError) -> str:
    """Every problem of a pydantic validation error as `dotted.key: message (value: ...)`."""
    def value(error: Any) -> str:  # a whole table as input says nothing the message does not
        given = error.get("input")
        return "" if isinstance(given, dict | list) else f" (value: {given!r})"

    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}{value(e)}" for e in exc.errors())


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate a settings TOML file; the packaged default when `path` is None."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    raw = read_toml(source, "settings file")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_problems(exc)}") from exc
