"""The results store: one JSON file per finished run, written atomically, plus the store's manifest.

An interrupted study loses at most the runs in flight, and a rerun resumes by skipping every finished run.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, ValidationError

from benchmark import __version__
from benchmark.atomic import write_atomically
from benchmark.config import Settings, TrainingPath
from benchmark.errors import StoreError, describe_os_error
from benchmark.experiment.matrix import Profile, RunSpec
from benchmark.experiment.metrics import Metrics
from benchmark.schemas import (
    CasePrediction,
    CohortSummary,
    DeploymentProbe,
    PairMatch,
    Regime,
    SourceKind,
    TestSet,
)

# Layout of an output folder:
#     store.json            what the store holds: profile, settings, data identity, cohort summary,
#                           regimes (every split), the expanded run ids, code version
#     runs/<run_id>.json    one finished run: its specification, split hash, data hash, code version,
#                           seed, teacher provenance, timings, per-case predictions and metrics
#     teachers/             the teacher cache used by the runs
# A run file exists only once the run has finished (temp file + rename), so an interrupted run loses at most the
# runs in flight, and a rerun skips every run whose file exists.

STORE_SCHEMA_VERSION = 1


class DataIdentity(BaseModel):
    """Which data a store was computed on: the cohort's table and its kept images."""

    location: str = Field(validation_alias=AliasChoices("location", "data_root"),  # data_root: stores before 0.2
                          description="the cohort manifest CSV, or the collection's folder")
    metadata_sha256: str = Field(description="sha256 of the cohort manifest CSV (collection: of metadata.csv)")
    image_list_sha256: str
    source: SourceKind = "collection"

    @property
    def table_name(self) -> str:
        """How the cohort's table is called in messages."""
        return "cohort manifest" if self.source == "manifest" else "metadata.csv"

    def same_data(self, other: DataIdentity) -> bool:
        """True when both hashes agree (the folder may have moved)."""
        return (self.metadata_sha256, self.image_list_sha256) == (other.metadata_sha256, other.image_list_sha256)

    def difference(self, now: DataIdentity) -> str:
        """Which hash differs between this (stored) identity and `now`, both values shown."""
        parts = [f"{label} sha256 {mine[:12]}... stored, {theirs[:12]}... now"
                 for label, mine, theirs in ((self.table_name, self.metadata_sha256, now.metadata_sha256),
                                             ("kept-image list", self.image_list_sha256, now.image_list_sha256))
                 if mine != theirs]
        return "; ".join(parts) or "same hashes"


class PlanStamp(BaseModel):
    """The pre-registration plan a store and its runs were made under (PROTOCOL.md section 14)."""

    sha256: str
    created_at: str


class TeacherProvenance(BaseModel):
    """The teacher a run distilled from and exactly which patients and images trained it."""

    teacher_id: str
    modality: str
    seed: int
    training_patients: list[str]
    training_images: int
    steps: int
    train_seconds: float
    path: TrainingPath = Field(default=TrainingPath.PER_RUN, description="how the teacher was trained")
    validation_predictions: list[CasePrediction] | None = Field(
        default=None, exclude_if=lambda p: p is None,
        description="a privileged-modality teacher's predictions on the run's validation cases, each from the case's "
                    "matched privileged image (its head-room over the target-modality model)")


class FitSummary(BaseModel):
    """What training did: optimiser steps, epochs, images, and each epoch's mean loss terms."""

    steps: int
    epochs: int
    train_images: int
    seconds: float
    epoch_terms: list[dict[str, float]]


class TestScores(BaseModel):
    """A deployable run scored on one test set: per-case predictions, their metrics and the deployment probe."""

    __test__ = False  # not a pytest test class

    predictions: list[CasePrediction]
    metrics: Metrics
    probe: DeploymentProbe = Field(description="the first cases re-predicted with a blank CT given and with noise: "
                                               "a deployable run's scores must not move")


class RunRecord(BaseModel):
    """Everything about one finished run, enough to recompute every number reported from it."""

    schema_version: int = STORE_SCHEMA_VERSION
    spec: RunSpec
    val_hash: str
    train_patients: list[str]
    data: DataIdentity
    code_version: str
    torch_version: str
    device: str
    threads: int
    training_path: TrainingPath = Field(
        default=TrainingPath.PER_RUN, description="per-run: trained alone (the reference); stacked: trained in one "
                                                  "batched module with other runs of its stack key (another "
                                                  "floating-point order)")
    teacher: TeacherProvenance | None
    fit: FitSummary
    timings: dict[str, float]
    predictions: list[CasePrediction]
    metrics: Metrics
    deployment_probe: DeploymentProbe | None = Field(
        default=None, description="paired configurations only: does the model's output depend on CT?")
    tests: dict[str, TestScores] = Field(default_factory=dict, exclude_if=lambda tests: not tests,
                                         description="test set name -> the run's scores on it (deployable runs of "
                                                     "the paired regimes; PROTOCOL.md section 13)")
    finished_at: str
    plan: PlanStamp | None = Field(default=None, exclude_if=lambda plan: plan is None,
                                   description="the plan this run was made under (`run --plan`)")


class StoreManifest(BaseModel):
    """The store's own description: what was asked for, on which data, with which code."""

    schema_version: int = STORE_SCHEMA_VERSION
    profile: Profile
    settings: Settings
    data: DataIdentity
    code_version: str
    created_at: str
    cohort: CohortSummary
    regimes: list[Regime]
    run_ids: list[str] = Field(description="every run the profile expands to, in declaration order")
    pairs: list[PairMatch] = Field(default_factory=list, description="every paired X-ray image, its matched CT image "
                                   "and their offset gap (PROTOCOL.md section 2)")
    test_sets: list[TestSet] = Field(default_factory=list, description="the test sets every deployable run of the "
                                     "paired regimes is scored on, with their cases (PROTOCOL.md section 13)")
    plan: PlanStamp | None = Field(default=None, exclude_if=lambda plan: plan is None,
                                   description="the pre-registration plan the store was made under (plan.json)")

    def test_set(self, name: str) -> TestSet:
        """The test set called `name`; KeyError when the store has none of that name."""
        for test_set in self.test_sets:
            if test_set.name == name:
                return test_set
        raise KeyError(name)


def _scored_on(manifest: StoreManifest) -> str:
    """The test sets of a store in words with a prefix of their case hashes, e.g. `held-out (617 images, 3f2a...)`."""
    return ", ".join(f"{t.name} ({t.support.images} images, cases {t.cases_sha256[:12]})" for t in manifest.test_sets)


def code_version() -> str:
    """Package version, plus the git commit (and `-dirty`) when run from a git checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def other_code_versions(versions: Iterable[str], current: str) -> str | None:
    """One line naming how many run records another code version wrote, and which, or None when all are `current`."""
    counts = Counter(versions)
    others = {v: n for v, n in counts.items() if v != current}
    if not others:
        return None
    listed = ", ".join(f"{n} by {v}" for v, n in sorted(others.items(), key=lambda kv: -kv[1]))
    return (f"{sum(others.values())} of {sum(counts.values())} run records were written by another code version "
            f"({listed}; this code is {current}): what this code recomputes from them may differ from what that code "
            "wrote (rerun `ctxray-bench run` into a new --out to refresh the store)")


def now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultsStore:
    """Reads and writes one output folder's store.json and runs/*.json."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.manifest_path = self.root / "store.json"
        self.stamp: PlanStamp | None = None  # set by `open` under a plan: every record written carries it

    def open(self, manifest: StoreManifest, plan_file: bytes | None = None) -> tuple[dict[str, RunRecord], list[Path]]:
        """Create the store, or check that an existing one was computed on the same data and code schema.

        With `plan_file` (the plan `manifest.plan` names) the plan is stored as plan.json and every record written
        is stamped with it; a store that already holds runs made without it, or under another plan, is refused.
        Without one, a store's earlier plan stays named (runs made now are deviations from it).
        Returns the finished runs' records by id and the records it set aside as unreadable (`load_finished`)."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for partial in self.runs_dir.glob(".*.tmp"):
            partial.unlink(missing_ok=True)  # a write interrupted by a kill
        if self.manifest_path.exists():
            existing = self.manifest()
            if not existing.data.same_data(manifest.data):
                raise StoreError(f"{self.manifest_path}: this store was computed on other data "
                                 f"({existing.data.difference(manifest.data)}); use another --out")
            stored, asked = _scored_on(existing), _scored_on(manifest)
            if stored != asked:
                raise StoreError(f"{self.manifest_path}: this store's runs were scored on test sets "
                                 f"{stored or 'none'}, this run asks for {asked or 'none'} (held-out setting or "
                                 "--external differ, or their "
                                 "cases changed); use another --out")
            if existing.schema_version != manifest.schema_version:
                raise StoreError(f"{self.manifest_path}: store schema {existing.schema_version}, "
                                 f"this code writes {manifest.schema_version}; use another --out")
            manifest = manifest.model_copy(update={"created_at": existing.created_at})
            manifest = self._keep_plan(existing, manifest)
        if plan_file is not None:
            write_atomically(self.root / "plan.json", plan_file)
            self.stamp = manifest.plan
        write_atomically(self.manifest_path, manifest.model_dump_json(indent=1).encode("utf-8"))
        return self.load_finished()

    def _keep_plan(self, existing: StoreManifest, manifest: StoreManifest) -> StoreManifest:
        """The manifest to write over `existing` as far as plans go; StoreError when a plan would come after runs."""
        if manifest.plan is None:
            return manifest.model_copy(update={"plan": existing.plan})
        if existing.plan is not None and existing.plan.sha256 != manifest.plan.sha256:
            raise StoreError(f"{self.manifest_path}: this store was made under plan {existing.plan.sha256[:12]}..., "
                             f"this run names plan {manifest.plan.sha256[:12]}...; use another --out")
        earlier = len(self.finished_ids()) if existing.plan is None else 0
        if earlier:
            raise StoreError(f"{self.manifest_path}: this store already holds {earlier} run(s) made without a plan, "
                             "and a plan must come before its runs; use another --out")
        return manifest

    def load_finished(self) -> tuple[dict[str, RunRecord], list[Path]]:
        """Every run record on disk that loads, by id; one that does not (truncated, edited, another schema) is
        renamed `<id>.json.corrupt` and returned, so its run counts as not finished and is computed again while
        its bytes are kept for inspection."""
        loaded, moved = {}, []
        for run_id in sorted(self.finished_ids()):
            try:
                loaded[run_id] = self.load(run_id)
            except StoreError:
                path = self.run_path(run_id)
                target = path.with_name(path.name + ".corrupt")
                path.replace(target)
                moved.append(target)
        return loaded, moved

    def manifest(self) -> StoreManifest:
        """The store's manifest; StoreError when absent or invalid."""
        try:
            return StoreManifest.model_validate_json(self.manifest_path.read_bytes())
        except FileNotFoundError as exc:
            raise StoreError(f"{self.manifest_path}: no results store here (run `ctxray-bench run` first)") from exc
        except ValidationError as exc:
            raise StoreError(f"{self.manifest_path}: not a valid store manifest: {exc.errors()[0]['msg']}") from exc

    def run_path(self, run_id: str) -> Path:
        """Where the record of `run_id` lives."""
        return self.runs_dir / f"{run_id}.json"

    def finished_ids(self) -> set[str]:
        """Ids of every run whose record is on disk."""
        return {p.stem for p in self.runs_dir.glob("*.json")} if self.runs_dir.exists() else set()

    def write(self, record: RunRecord) -> Path:
        """Write one run's record atomically; returns its path."""
        path = self.run_path(record.spec.run_id)
        if self.stamp is not None:
            record = record.model_copy(update={"plan": self.stamp})
        write_atomically(path, record.model_dump_json().encode("utf-8"))
        return path

    def load(self, run_id: str) -> RunRecord:
        """One run's record; StoreError naming the file when unreadable."""
        path = self.run_path(run_id)
        try:
            return RunRecord.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise StoreError(f"{path}: unreadable run record: {describe_os_error(exc)}") from exc
        except (ValidationError, json.JSONDecodeError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else {"msg": str(exc), "loc": ()}
            where = ".".join(str(p) for p in first["loc"])
            raise StoreError(f"{path}: not a valid run record ({where + ': ' if where else ''}{first['msg']}); "
                             f"`ctxray-bench run` with the same --out sets it aside and computes the run again"
                             ) from exc

    def load_all(self) -> list[RunRecord]:
        """Every finished run of the manifest's run list, in declaration order."""
        finished = self.finished_ids()
        return [self.load(rid) for rid in self.manifest().run_ids if rid in finished]
