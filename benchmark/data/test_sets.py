"""Held-out and external test sets (PROTOCOL.md section 13): target-modality images no model of the study sees.

They show whether a result generalises beyond validation; nothing here chooses anything, test sets are only scored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import Settings
from benchmark.data.cohort import Cohort, build_cohort
from benchmark.data.cohort_manifest import read_cohort_manifest
from benchmark.data.imaging import ImageCache
from benchmark.errors import CtxrayError, TestSetError
from benchmark.schemas import (
    HELD_OUT,
    CohortSource,
    FilterReason,
    FilterReport,
    Manifest,
    ManifestName,
    SkippedRow,
    TestCase,
    TestExclusion,
    TestSet,
)

# - held-out: the cohort's target-modality patients outside the paired cohort (the collection: the X-ray patients
#   without a kept CT image; a cohort manifest: its unpaired target-modality patients). An image of theirs that shows
#   the same decoded picture (`pixels_sha256`) as any other image of the cohort, which some model or teacher trains
#   on, is left out and listed with the image it repeats.
# - external: a cohort manifest named with `--external NAME=FILE`, read by the same adapter, readers and filter as
#   the cohort; only its target-modality rows are kept (a row of the privileged modality is skipped as
#   `other_modality`). It is refused, in one line naming the file, the row and the value, when it keeps no row, or
#   when it shares a patient id or an image's decoded pixels with the cohort or another test set. Patient ids are
#   compared across sources too: two sites that number patients alike must prefix theirs (e.g. `SITE2-P001`),
#   because a shared id cannot be told from a shared patient.
# Nothing here chooses anything: test sets are only scored (at the protocol's threshold 0.5).

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ExternalSpec:
    """An external test set as named on the command line: NAME=FILE."""

    name: str
    path: Path


def parse_external(text: str) -> ExternalSpec:
    """`NAME=FILE` -> ExternalSpec; TestSetError saying what is wrong with the argument otherwise."""
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise TestSetError(f"--external {text!r}: expected NAME=FILE (a name and a cohort manifest CSV)")
    if not NAME_PATTERN.fullmatch(name):
        raise TestSetError(f"--external {text!r}: the name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    if name == HELD_OUT:
        raise TestSetError(f"--external {text!r}: {HELD_OUT!r} names the cohort's own held-out set; choose another "
                           "name")
    return ExternalSpec(name, Path(path).expanduser())


def check_external_names(externals: Sequence[ExternalSpec]) -> None:
    """TestSetError when two external test sets share a name."""
    seen: set[str] = set()
    for spec in externals:
        if spec.name in seen:
            raise TestSetError(f"--external {spec.name}: named twice; every test set needs its own name")
        seen.add(spec.name)


def held_out_set(cohort: Cohort, manifests: dict[ManifestName, Manifest]) -> TestSet | None:
    """The cohort's target-modality patients outside the paired cohort, or None when every one of them is paired."""
    paired = set(manifests["paired"].patient_labels())
    held = [r for r in cohort.records if r.modality == "xray" and r.patient_id not in paired]
    if not held:
        return None
    held_ids = {r.image_id for r in held}
    trained_on = {}  # pixels -> the first other image showing them (every other image trains some model)
    for record in cohort.records:
        if record.image_id not in held_ids:
            trained_on.setdefault(cohort.pixels[record.image_id], record)
    cases, excluded = [], []
    for record in held:
        twin = trained_on.get(cohort.pixels[record.image_id])
        if twin is not None:
            excluded.append(TestExclusion(
                patient_id=record.patient_id, image_id=record.image_id, line=record.line,
                reason=f"same decoded pixels as {twin.image_id} (patient {twin.patient_id}, line {twin.line}), which "
                       "models of this study train on"))
            continue
        cases.append(TestCase(patient_id=record.patient_id, image_id=record.image_id, label=record.label,
                              path=cohort.paths[record.image_id], pixels_sha256=cohort.pixels[record.image_id],
                              content_sha256=record.content_sha256, reader=record.reader, line=record.line))
    if not cases:
        return None
    return TestSet(
        name=HELD_OUT, kind="held-out",
        description="the cohort's target-modality patients outside the paired cohort (no kept privileged image)",
        table=cohort.filter_report.metadata_path, table_sha256=cohort.metadata_sha256, root=str(cohort.image_root),
        cases=cases, excluded=excluded)


def _target_only(cohort: Cohort) -> tuple[list[TestCase], FilterReport]:
    """The cohort's target-modality images as test cases; its privileged-modality rows counted as skipped."""
    report = cohort.filter_report
    counts = dict(report.counts)
    skipped = list(report.skipped)
    cases = []
    for record in cohort.records:
        if record.modality != "xray":
            counts[FilterReason.OTHER_MODALITY] += 1
            skipped.append(SkippedRow(line=record.line, patient_id=record.patient_id,
                                      path=cohort.paths[record.image_id],
                                      reason=FilterReason.OTHER_MODALITY,
                                      detail="the privileged modality: a test set holds target-modality images only"))
            continue
        cases.append(TestCase(patient_id=record.patient_id, image_id=record.image_id, label=record.label,
                              path=cohort.paths[record.image_id], pixels_sha256=cohort.pixels[record.image_id],
                              content_sha256=record.content_sha256, reader=record.reader, line=record.line))
    skipped.sort(key=lambda s: s.line)
    return cases, report.model_copy(update={"kept_rows": len(cases), "counts": counts, "skipped": skipped})


def external_set(spec: ExternalSpec, settings: Settings, cache: ImageCache) -> TestSet:
    """The external test set `spec` names, read as a cohort manifest by the cohort's readers and filter."""
    if not spec.path.is_file():
        raise TestSetError(f"--external {spec.name}={spec.path}: "
                           + ("is a folder; name a cohort manifest CSV" if spec.path.is_dir() else "no such file"))
    source = CohortSource(kind="manifest", path=str(spec.path.resolve()))
    try:
        cohort = build_cohort(read_cohort_manifest(source, settings.cohort), cache, settings.cohort)
    except TestSetError:
        raise
    except CtxrayError as exc:  # an unreadable manifest: the same one line, said to be the external set's
        raise TestSetError(f"external test set {spec.name}: {exc}") from exc
    cases, report = _target_only(cohort)
    if not cases:
        reasons = ", ".join(f"{n} {reason.value}" for reason, n in report.counts.items() if n)
        raise TestSetError(f"{spec.path}: external test set {spec.name} keeps no image of the target modality "
                           f"{settings.cohort.target_modality!r} ({reasons or 'no data rows'})")
    return TestSet(name=spec.name, kind="external",
                   description=f"external cohort manifest of the target modality ({settings.cohort.target_modality})",
                   table=source.path, table_sha256=cohort.metadata_sha256, root=str(cohort.image_root), cases=cases,
                   filter_report=report)


@dataclass(frozen=True)
class _Owner:
    """Where a patient or a picture already is: which set, which row, which image."""

    where: str
    line: int
    image_id: str


def _cohort_owners(cohort: Cohort) -> tuple[dict[str, _Owner], dict[str, _Owner]]:
    patients: dict[str, _Owner] = {}
    pixels: dict[str, _Owner] = {}
    where = f"the cohort ({cohort.filter_report.metadata_path})"
    for record in cohort.records:
        owner = _Owner(where, record.line, record.image_id)
        patients.setdefault(record.patient_id, owner)
        pixels.setdefault(cohort.pixels[record.image_id], owner)
    return patients, pixels


def check_disjoint(cohort: Cohort, externals: Iterable[TestSet]) -> None:
    """TestSetError (one line) at the first external case that shares a patient id, or an image's decoded pixels,
    with the cohort (every modality, the held-out patients included) or an earlier external test set."""
    patients, pixels = _cohort_owners(cohort)
    for test_set in externals:
        mine_patients: dict[str, _Owner] = {}
        mine_pixels: dict[str, _Owner] = {}
        for case in test_set.cases:
            at = f"{test_set.table}, line {case.line}"
            owner = patients.get(case.patient_id)
            if owner is not None:
                raise TestSetError(
                    f"{at}: external test set {test_set.name} shares patient {case.patient_id!r} with {owner.where} "
                    f"(line {owner.line}, {owner.image_id}); a test patient may not be in the cohort or another test "
                    "set (if these are different patients of another site, prefix that site's ids)")
            owner = pixels.get(case.pixels_sha256)
            if owner is not None:
                raise TestSetError(
                    f"{at}: external test set {test_set.name} image {case.image_id!r} has the same decoded pixels as "
                    f"{owner.image_id} of {owner.where} (line {owner.line}); a test image may not be in the cohort or "
                    "another test set")
            mine = _Owner(f"external test set {test_set.name}", case.line, case.image_id)
            mine_patients.setdefault(case.patient_id, mine)
            mine_pixels.setdefault(case.pixels_sha256, mine)
        patients.update(mine_patients)
        pixels.update(mine_pixels)


def build_test_sets(cohort: Cohort, manifests: dict[ManifestName, Manifest], settings: Settings, cache: ImageCache,
                    externals: Sequence[ExternalSpec] = ()) -> tuple[list[TestSet], list[str]]:
    """The study's test sets (held-out first, then the externals in the order named), and why one is absent."""
    check_external_names(externals)
    notes: list[str] = []
    test_sets: list[TestSet] = []
    if settings.test_sets.held_out:
        held = held_out_set(cohort, manifests)
        if held is None:
            notes.append("no held-out test set: every target-modality patient of the cohort is in the paired cohort")
        else:
            test_sets.append(held)
    else:
        notes.append("no held-out test set: switched off in the settings ([test_sets] held_out = false)")
    external = [external_set(spec, settings, cache) for spec in externals]
    check_disjoint(cohort, external)
    return test_sets + external, notes


def scoring_identity(test_sets: Sequence[TestSet]) -> str:
    """One hash over the test sets' names, kinds and cases: a store's runs were scored on exactly these ("" for
    none)."""
    if not test_sets:
        return ""
    return hashlib.sha256("\n".join(f"{t.name}\t{t.kind}\t{t.cases_sha256}" for t in test_sets).encode()).hexdigest()
