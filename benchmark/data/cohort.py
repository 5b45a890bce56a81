"""From a cohort's table to kept image records, the three manifests and the data audit (PROTOCOL.md section 2).

Every source's adapter feeds this one filter, so each cohort is kept, counted and audited by the same rules.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.config import CohortSettings
from benchmark.data.imaging import CachedImage, ImageCache
from benchmark.schemas import (
    CohortSource,
    CohortSourceInfo,
    DataAudit,
    FilterReason,
    FilterReport,
    ImageRecord,
    LabelDefinitionSupport,
    Manifest,
    ManifestName,
    PairedRecord,
    PatientLabelDisagreement,
    ReaderUse,
    SkippedRow,
    SliceLayout,
)

# A cohort's table is read by its adapter into `SourceRow`s: a cohort manifest CSV (`benchmark.data.cohort_manifest`)
# or the COVID-19 Image Data Collection's metadata.csv (`benchmark.data.collection`). Filtering then runs in the
# protocol's order and counts every dropped row with its reason:
# 1. the row must be valid (the adapter's checks: required cells, label, offset) and its image a file under the
#    table's root that exists and is read by its reader (outside the root, volume not read, missing, empty,
#    duplicate, or the reader's reason: corrupt, not DICOM, no pixel data, 4-D, ...);
# 2. the adapter's rule after reading, if any (collection: the finding must not be the placeholder `todo`);
# 3. the modality must be the declared target (role `xray`) or privileged modality (role `ct`).
# Nothing in a bad row stops the build: it is skipped, counted and listed with its line number.

MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none"})  # cells read as "no value" (case ignored)
MAX_READER_GROUPS = 12  # distinct (reader, policy) wordings listed; the rest are summed into one line


@dataclass
class SourceRow:
    """One row of a cohort's table as its adapter read it: the cells the filter needs and the adapter's verdicts."""

    line: int
    patient_id: str
    path: str  # as written in the row, for the skipped-rows table
    parts: tuple[str, ...]  # the path's pieces, joined under the table's root
    modality: str  # as written; mapped to a role by the settings
    label: int | None
    finding: str
    offset: float | None
    view: str
    image_id: str | None = None  # the row's own image id; default: the path relative to the root
    modality_detail: str = ""  # how a row of another modality is described when skipped
    invalid: tuple[FilterReason, str] | None = None  # the adapter's verdict before any file is touched
    volume: bool = False  # a 3-D volume the adapter does not read (skipped as volume_not_2d)
    after_decode: tuple[FilterReason, str] | None = None  # the adapter's verdict once the image is read
    offset_warning: str | None = None  # said when the row is kept
    resolved: Path | None = None


@dataclass(frozen=True)
class CohortTable:
    """A cohort's table as read by its adapter: the rows, the folder their paths are relative to, the table's hash."""

    source: CohortSource
    table_path: Path
    table_sha256: str
    root: Path
    rows: list[SourceRow]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cohort:
    """Every kept image of one cohort, with the report of what was dropped and why and how files were read."""

    image_root: Path  # the folder image paths are relative to (collection: its clone; manifest: its folder)
    metadata_sha256: str  # of the cohort's table: the manifest CSV, or the collection's metadata.csv
    records: list[ImageRecord]
    filter_report: FilterReport
    source: CohortSourceInfo
    readers: dict[str, str] = field(default_factory=dict)  # image id -> the reader that read it
    pixels: dict[str, str] = field(default_factory=dict)  # image id -> sha256 of its decoded pixels (ReadInfo)
    paths: dict[str, str] = field(default_factory=dict)  # image id -> its file, relative to image_root (posix)

    @property
    def image_list_sha256(self) -> str:
        """sha256 over the kept images' ids and content hashes (and, for DICOM and NIfTI, the reader policy):
        changes whenever any kept pixel does."""
        policy = self.source.reader_policy.tag
        lines = sorted(f"{r.image_id}\t{r.content_sha256}"
                       + ("" if self.readers.get(r.image_id, "pillow") == "pillow" else f"\t{policy}")
                       + ("" if r.slices == "one" else f"\t{r.slices}")
                       for r in self.records)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _path_problem(row: SourceRow, root: Path) -> tuple[FilterReason, str] | None:
    """The first step-1 reason that applies before reading, or None (and set row.resolved)."""
    if row.invalid is not None:
        return row.invalid
    try:
        return _file_problem(row, root)
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long, a folder it may not enter
        return FilterReason.INVALID_ROW, f"path {row.path[:200]!r} cannot be used as a file name: {exc}"


def _file_problem(row: SourceRow, root: Path) -> tuple[FilterReason, str] | None:
    if any(os.path.isabs(part) for part in row.parts):
        return FilterReason.OUTSIDE_DATA_ROOT, "absolute path"
    resolved = root.joinpath(*row.parts).resolve()
    if not resolved.is_relative_to(root):
        return FilterReason.OUTSIDE_DATA_ROOT, f"resolves to {resolved}, outside {root}"
    if row.volume:
        return FilterReason.VOLUME_NOT_2D, "3-D volume; only 2-D images are used"
    if not resolved.is_file():
        return FilterReason.MISSING_FILE, "no such file"
    if resolved.stat().st_size == 0:
        return FilterReason.EMPTY_FILE, "file is empty"
    row.resolved = resolved
    return None


def build_cohort(table: CohortTable, cache: ImageCache, settings: CohortSettings, *, workers: int = 4,
                 progress: bool = False) -> Cohort:
    """Filter a cohort table row by row (counting every reason) and return the kept image records."""
    root, rows = table.root, table.rows
    verdicts: dict[int, tuple[FilterReason, str]] = {}
    seen: dict[Path, int] = {}
    seen_ids: dict[str, int] = {}
    to_decode: list[Path] = []
    layouts: list[SliceLayout] = []  # each file's array layout, by its row's modality role
    for row in rows:
        problem = _path_problem(row, root)
        if problem is None and row.resolved in seen:
            problem = FilterReason.DUPLICATE_IMAGE, f"same file as line {seen[row.resolved]}"
        if problem is None and row.image_id is not None and row.image_id in seen_ids:
            problem = FilterReason.DUPLICATE_IMAGE, f"image_id {row.image_id!r} also on line {seen_ids[row.image_id]}"
        if problem is not None:
            verdicts[row.line] = problem
            continue
        assert row.resolved is not None
        seen[row.resolved] = row.line
        if row.image_id is not None:
            seen_ids[row.image_id] = row.line
        to_decode.append(row.resolved)
        layouts.append(cache.policy.slices_for(settings.role_of(row.modality)))

    decoded = dict(zip(to_decode, _decode_all(to_decode, layouts, root, cache, workers, progress), strict=True))

    counts = {reason: 0 for reason in FilterReason}
    skipped: list[SkippedRow] = []
    warnings: list[str] = list(table.warnings)
    records: list[ImageRecord] = []
    readers: Counter[tuple[str, str]] = Counter()
    reader_of: dict[str, str] = {}
    pixels_of: dict[str, str] = {}
    path_of: dict[str, str] = {}
    for row in rows:
        verdict = verdicts.get(row.line)
        outcome = decoded.get(row.resolved) if verdict is None and row.resolved is not None else None
        if verdict is None and outcome is not None and not outcome.ok:
            verdict = (outcome.failure or FilterReason.CORRUPT_IMAGE), outcome.message
        if verdict is None and row.after_decode is not None:
            verdict = row.after_decode
        role = settings.role_of(row.modality)
        if verdict is None and role is None:
            verdict = FilterReason.OTHER_MODALITY, row.modality_detail
        if verdict is None and row.image_id is None and row.resolved is not None:
            derived = row.resolved.relative_to(root).as_posix()
            if derived in seen_ids:  # another row declared this path as its image_id
                verdict = FilterReason.DUPLICATE_IMAGE, f"image id {derived!r} also on line {seen_ids[derived]}"
        if verdict is not None:
            counts[verdict[0]] += 1
            skipped.append(SkippedRow(line=row.line, patient_id=row.patient_id, path=row.path, reason=verdict[0],
                                      detail=verdict[1]))
            continue
        assert outcome is not None and role is not None and row.resolved is not None and row.label is not None
        if row.offset_warning:
            warnings.append(row.offset_warning)
        reader, policy = _reader_of(outcome, row.resolved)
        readers[(reader, policy)] += 1
        relative = row.resolved.relative_to(root).as_posix()
        image_id = row.image_id or relative
        reader_of[image_id] = reader
        pixels_of[image_id] = pixel_identity(outcome)
        path_of[image_id] = relative
        records.append(ImageRecord(
            image_id=image_id, patient_id=row.patient_id, modality=role, finding=row.finding, label=row.label,
            offset=row.offset, view=row.view, content_sha256=outcome.content_sha256, reader=outcome.reader,
            line=row.line, slices=cache.policy.slices_for(role)))

    report = FilterReport(metadata_path=str(table.table_path), total_rows=len(rows), kept_rows=len(records),
                          counts=counts, skipped=skipped, warnings=warnings)
    info = CohortSourceInfo(kind=table.source.kind, path=table.source.path, table_sha256=table.table_sha256,
                            target_modality=settings.target_modality,
                            privileged_modality=settings.privileged_modality,
                            include_volumes=settings.include_volumes, reader_policy=cache.policy,
                            readers=_reader_uses(readers))
    return Cohort(root, table.table_sha256, records, report, info, reader_of, pixels_of, path_of)


def pixel_identity(outcome: CachedImage) -> str:
    """The sha256 of an image's decoded pixels; for a file whose read record is lost (it no longer reads as when it
    was cached), its file's sha256 marked `file:`, which can only equal another copy of the same bytes."""
    if outcome.read is not None and outcome.read.pixels_sha256 is not None:
        return outcome.read.pixels_sha256
    return f"file:{outcome.content_sha256}"


def _reader_of(outcome: CachedImage, path: Path) -> tuple[str, str]:
    if outcome.read is not None:
        return outcome.read.reader, outcome.read.policy
    return outcome.reader, "not recorded (the file no longer reads as it did when cached)"


def _reader_uses(readers: Counter[tuple[str, str]]) -> list[ReaderUse]:
    ranked = readers.most_common()
    uses = [ReaderUse(reader=reader, policy=policy, images=n) for (reader, policy), n in ranked[:MAX_READER_GROUPS]]
    rest = ranked[MAX_READER_GROUPS:]
    if rest:
        uses.append(ReaderUse(reader="(others)", policy=f"{len(rest)} more wordings",
                              images=sum(n for _, n in rest)))
    return uses


def _decode_all(paths: list[Path], layouts: list[SliceLayout], root: Path, cache: ImageCache, workers: int,
                progress: bool) -> Iterable[CachedImage]:
    """Put every file through the cache in its layout, in order, each opened under the root; threads overlap reads
    and decoding."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda path, slices: cache.ensure(path, root, slices), paths, layouts)
        return list(tqdm(results, total=len(paths), desc="reading images", unit="img",
                         disable=not progress, leave=False))


def match_ct(xray: ImageRecord, cts: list[ImageRecord]) -> PairedRecord:
    """The patient's CT closest in offset; unknown offsets lose to known ones; ties by filename order."""
    if not cts:
        raise ValueError(f"{xray.image_id}: patient {xray.patient_id} has no CT image to match")

    def gap(ct: ImageRecord) -> float | None:
        return None if xray.offset is None or ct.offset is None else abs(xray.offset - ct.offset)

    def order(ct: ImageRecord) -> tuple[bool, float, str, str]:
        g = gap(ct)
        return g is None, g if g is not None else 0.0, Path(ct.image_id).name, ct.image_id

    best = min(cts, key=order)
    return PairedRecord(xray=xray, ct=best, offset_gap=gap(best))


def build_manifests(records: list[ImageRecord]) -> dict[ManifestName, Manifest]:
    """all-xray, all-ct and the paired X-ray target (each X-ray matched to its patient's closest CT)."""
    xrays = [r for r in records if r.modality == "xray"]
    cts = [r for r in records if r.modality == "ct"]
    cts_by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
    for ct in cts:
        cts_by_patient[ct.patient_id].append(ct)
    pairs = [match_ct(x, cts_by_patient[x.patient_id]) for x in xrays if x.patient_id in cts_by_patient]
    return {
        "all-xray": Manifest(name="all-xray", modality="xray", records=xrays),
        "all-ct": Manifest(name="all-ct", modality="ct", records=cts),
        "paired": Manifest(name="paired", modality="xray", records=[p.xray for p in pairs], pairs=pairs),
    }


def _monte_carlo_feasibility(positives: int, negatives: int, k: int, held_negatives: int = 1) -> tuple[bool, str]:
    """Monte Carlo holds out `held_negatives` negatives and k - held_negatives positives, and needs one more of each
    to train on."""
    held = "one held out" if held_negatives == 1 else f"{held_negatives} held out"
    if negatives < held_negatives + 1:
        return False, (f"{negatives} negative patient(s): at least {held_negatives + 1} are needed "
                       f"({held}, one to train on)")
    if positives < k - held_negatives + 1:
        needed = f"k = {k}" if held_negatives == 1 else str(k - held_negatives + 1)
        return False, (f"{positives} positive patient(s): at least {needed} are needed (k-{held_negatives} held out, "
                       "one to train on)")
    return True, (f"{negatives} negative and {positives} positive patients allow validation sets of k = {k}"
                  + ("" if held_negatives == 1 else f" with {held_negatives} negatives"))


_DEFINITIONS = {  # label definitions compared by the audit, worded for each kind of cohort source
    "collection": ("image-level (protocol): X-ray finding contains COVID-19; patient positive if any paired X-ray is",
                   "patient-level: positive if any image of the patient, in any modality, is COVID-19"),
    "manifest": ("image-level (protocol): the target image's label; patient positive if any paired target image is",
                 "patient-level: positive if any image of the patient, in either modality, is labelled 1"),
}


def audit_labels(records: list[ImageRecord], paired: Manifest, k: int, held_negatives: int = 1,
                 source: str = "collection") -> DataAudit:
    """Patients whose X-ray and CT labels disagree, and the paired cohort under two label definitions."""
    findings: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"xray": [], "ct": []})
    labels: dict[str, dict[str, int]] = defaultdict(lambda: {"xray": 0, "ct": 0})
    for record in records:
        findings[record.patient_id][record.modality].append(record.finding)
        labels[record.patient_id][record.modality] = max(labels[record.patient_id][record.modality], record.label)

    paired_labels = paired.patient_labels()
    disagreeing = [
        PatientLabelDisagreement(
            patient_id=pid, xray_findings=sorted(set(findings[pid]["xray"])),
            ct_findings=sorted(set(findings[pid]["ct"])), xray_label=labels[pid]["xray"],
            ct_label=labels[pid]["ct"], in_paired_cohort=pid in paired_labels)
        for pid in sorted(findings)
        if findings[pid]["xray"] and findings[pid]["ct"] and labels[pid]["xray"] != labels[pid]["ct"]
    ]
    negatives = sorted(pid for pid, label in paired_labels.items() if label == 0)
    negatives_with_covid_ct = [pid for pid in negatives if labels[pid]["ct"] == 1]
    mismatched_pairs = sum(p.xray.label != p.ct.label for p in paired.pairs or [])

    any_modality = {pid: max(labels[pid]["xray"], labels[pid]["ct"]) for pid in paired_labels}
    definitions = []
    for definition, per_patient in (
        (_DEFINITIONS[source][0], paired_labels),
        (_DEFINITIONS[source][1], any_modality),
    ):
        positive = sum(per_patient.values())
        feasible, why = _monte_carlo_feasibility(positive, len(per_patient) - positive, k, held_negatives)
        definitions.append(LabelDefinitionSupport(
            definition=definition, patients=len(per_patient), positive_patients=positive,
            negative_patients=len(per_patient) - positive, monte_carlo_feasible=feasible, why=why))
    return DataAudit(disagreeing_patients=disagreeing, paired_negative_patients=negatives,
                     paired_negatives_with_covid_ct=negatives_with_covid_ct,
                     paired_label_mismatched_pairs=mismatched_pairs, label_definitions=definitions)
