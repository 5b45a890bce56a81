"""From metadata.csv to kept image records, the three manifests and the data audit (PROTOCOL.md section 2).

Row filtering runs in the protocol's order and counts every dropped row with its reason:
1. the image must be a 2-D file under the data root that exists and decodes
   (invalid row, outside the data root, 3-D volume, missing, empty, corrupt, duplicate);
2. the finding must not be the placeholder `todo` (nor end in `/todo`);
3. the modality must normalise to `xray` or `ct`.
Nothing in a bad row stops the build: it is skipped, counted and listed with its line number.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.errors import MetadataError
from benchmark.imaging import CachedImage, ImageCache
from benchmark.schemas import (
    DataAudit,
    FilterReason,
    FilterReport,
    ImageRecord,
    LabelDefinitionSupport,
    Manifest,
    ManifestName,
    Modality,
    PairedRecord,
    PatientLabelDisagreement,
    SkippedRow,
)

REQUIRED_COLUMNS = ("patientid", "offset", "finding", "modality", "folder", "filename", "view")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
_MODALITY_ALIASES: dict[str, Modality] = {"x-ray": "xray", "xray": "xray", "x ray": "xray", "cxr": "xray", "ct": "ct"}


def read_metadata(path: Path) -> pd.DataFrame:
    """Read metadata.csv as text cells; MetadataError if it is absent, empty, unparsable or lacks a column."""
    if not path.is_file():
        raise MetadataError(path, "metadata file not found")
    if path.stat().st_size == 0:
        raise MetadataError(path, "metadata file is empty (no header row)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise MetadataError(path, "metadata file has no header row") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MetadataError(path, f"cannot parse as UTF-8 CSV: {exc}") from exc
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise MetadataError(path, f"required column(s) missing: {', '.join(missing)}; "
                                  f"found: {', '.join(map(str, frame.columns))}", row=1)
    return frame


def normalise_modality(raw: str) -> Modality | None:
    """`X-ray` -> xray, `CT` -> ct (case and spacing ignored); None for any other modality."""
    return _MODALITY_ALIASES.get(" ".join(raw.strip().lower().split()))


def is_todo_finding(finding: str) -> bool:
    """True for the placeholder finding `todo`, also as the last part of a hierarchical finding."""
    return finding.strip().rstrip("/").split("/")[-1].strip().lower() == "todo"


def image_label(finding: str) -> int:
    """Image-level label: 1 if the finding mentions COVID-19 (any case), else 0."""
    return int("covid-19" in finding.lower())


_MISSING_MARKERS = {"", "nan", "na", "n/a", "null", "none"}


def parse_offset(raw: str) -> float | None:
    """Days since symptom onset; None when the cell is empty or NaN; ValueError for other text."""
    if raw.strip().lower() in _MISSING_MARKERS:
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def _is_volume(filename: str) -> bool:
    lower = filename.lower()
    return any(lower.endswith(suffix) for suffix in VOLUME_SUFFIXES)


@dataclass(frozen=True)
class Cohort:
    """Every kept image of one data root, with the report of what was dropped and why."""

    data_root: Path
    metadata_sha256: str
    records: list[ImageRecord]
    filter_report: FilterReport

    @property
    def image_list_sha256(self) -> str:
        """sha256 over the kept images' ids and content hashes: changes whenever any kept pixel does."""
        lines = sorted(f"{r.image_id}\t{r.content_sha256}" for r in self.records)
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


@dataclass
class _Row:
    line: int
    patient_id: str
    folder: str
    filename: str
    finding: str
    modality_raw: str
    offset_raw: str
    view: str
    resolved: Path | None = None


def _rows(frame: pd.DataFrame) -> Iterator[_Row]:
    for index, cells in enumerate(frame[list(REQUIRED_COLUMNS)].itertuples(index=False, name=None)):
        patient_id, offset, finding, modality, folder, filename, view = (str(c).strip() for c in cells)
        yield _Row(index + 2, patient_id, folder, filename, finding, modality, offset, view)


def _path_problem(row: _Row, root: Path) -> tuple[FilterReason, str] | None:
    """The first step-1 reason that applies before decoding, or None (and set row.resolved)."""
    if not (row.patient_id and row.folder and row.filename):
        empty = [name for name, value in (("patientid", row.patient_id), ("folder", row.folder),
                                          ("filename", row.filename)) if not value]
        return FilterReason.INVALID_ROW, f"empty required cell(s): {', '.join(empty)}"
    if os.path.isabs(row.folder) or os.path.isabs(row.filename):
        return FilterReason.OUTSIDE_DATA_ROOT, "absolute path"
    resolved = (root / row.folder / row.filename).resolve()
    if not resolved.is_relative_to(root):
        return FilterReason.OUTSIDE_DATA_ROOT, f"resolves to {resolved}, outside {root}"
    if _is_volume(row.filename):
        return FilterReason.VOLUME_NOT_2D, "3-D volume; only 2-D images are used"
    if not resolved.is_file():
        return FilterReason.MISSING_FILE, "no such file"
    if resolved.stat().st_size == 0:
        return FilterReason.EMPTY_FILE, "file is empty"
    row.resolved = resolved
    return None


def build_cohort(data_root: Path | str, cache: ImageCache, *, workers: int = 4,
                 progress: bool = False) -> Cohort:
    """Filter metadata.csv row by row (counting every reason) and return the kept image records."""
    root = Path(data_root).resolve()
    metadata_path = root / "metadata.csv"
    frame = read_metadata(metadata_path)
    metadata_sha256 = hashlib.sha256(metadata_path.read_bytes()).hexdigest()
    rows = list(_rows(frame))

    verdicts: dict[int, tuple[FilterReason, str]] = {}
    seen: dict[Path, int] = {}
    to_decode: list[Path] = []
    for row in rows:
        problem = _path_problem(row, root)
        if problem is None and row.resolved in seen:
            problem = FilterReason.DUPLICATE_IMAGE, f"same file as line {seen[row.resolved]}"
        if problem is not None:
            verdicts[row.line] = problem
            continue
        assert row.resolved is not None
        seen[row.resolved] = row.line
        to_decode.append(row.resolved)

    decoded = dict(zip(to_decode, _decode_all(to_decode, cache, workers, progress), strict=True))

    counts = {reason: 0 for reason in FilterReason}
    skipped: list[SkippedRow] = []
    warnings: list[str] = []
    records: list[ImageRecord] = []
    for row in rows:
        verdict = verdicts.get(row.line)
        outcome = decoded.get(row.resolved) if verdict is None and row.resolved is not None else None
        if verdict is None and outcome is not None and not outcome.ok:
            verdict = (outcome.failure or FilterReason.CORRUPT_IMAGE), outcome.message
        if verdict is None and is_todo_finding(row.finding):
            verdict = FilterReason.TODO_FINDING, row.finding
        modality = normalise_modality(row.modality_raw)
        if verdict is None and modality is None:
            verdict = FilterReason.OTHER_MODALITY, row.modality_raw or "(empty)"
        if verdict is not None:
            counts[verdict[0]] += 1
            skipped.append(SkippedRow(line=row.line, patient_id=row.patient_id,
                                      path=f"{row.folder}/{row.filename}", reason=verdict[0], detail=verdict[1]))
            continue
        assert outcome is not None and modality is not None and row.resolved is not None
        try:
            offset = parse_offset(row.offset_raw)
        except ValueError:
            offset = None
            warnings.append(f"line {row.line}: offset {row.offset_raw!r} is not a number; read as unknown")
        records.append(ImageRecord(
            image_id=row.resolved.relative_to(root).as_posix(), patient_id=row.patient_id, modality=modality,
            finding=row.finding, label=image_label(row.finding), offset=offset, view=row.view,
            content_sha256=outcome.content_sha256, line=row.line))

    report = FilterReport(metadata_path=str(metadata_path), total_rows=len(rows), kept_rows=len(records),
                          counts=counts, skipped=skipped, warnings=warnings)
    return Cohort(root, metadata_sha256, records, report)


def _decode_all(paths: list[Path], cache: ImageCache, workers: int, progress: bool) -> Iterable[CachedImage]:
    """Put every file through the cache, in order; threads overlap file reads and Pillow's decoding."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(cache.ensure, paths)
        return list(tqdm(results, total=len(paths), desc="decoding images", unit="img",
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


def audit_labels(records: list[ImageRecord], paired: Manifest, k: int, held_negatives: int = 1) -> DataAudit:
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
        ("image-level (protocol): X-ray finding contains COVID-19; patient positive if any paired X-ray is",
         paired_labels),
        ("patient-level: positive if any image of the patient, in any modality, is COVID-19", any_modality),
    ):
        positive = sum(per_patient.values())
        feasible, why = _monte_carlo_feasibility(positive, len(per_patient) - positive, k, held_negatives)
        definitions.append(LabelDefinitionSupport(
            definition=definition, patients=len(per_patient), positive_patients=positive,
            negative_patients=len(per_patient) - positive, monte_carlo_feasible=feasible, why=why))
    return DataAudit(disagreeing_patients=disagreeing, paired_negative_patients=negatives,
                     paired_negatives_with_covid_ct=negatives_with_covid_ct,
                     paired_label_mismatched_pairs=mismatched_pairs, label_definitions=definitions)
