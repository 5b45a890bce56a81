"""The COVID-19 Image Data Collection as a cohort source: its metadata.csv read into the rows of a cohort table.

It is one adapter into the shared pipeline (`benchmark.data.cohort`), mapping the collection's columns and rules.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd

from benchmark.config import CohortSettings
from benchmark.data.cohort import MISSING_MARKERS, CohortTable, SourceRow
from benchmark.errors import MetadataError
from benchmark.schemas import CohortSource, FilterReason

# The adapter maps the collection's columns to the cohort manifest's (patientid -> patient, folder/filename -> path,
# the finding -> label) and adds its own rules, in the protocol's order (PROTOCOL.md section 2):
# - a row with an empty patientid, folder or filename is invalid;
# - a 3-D volume (`.nii`, `.nii.gz`, `.mha`, `.mhd`, `.nrrd`) is skipped as `volume_not_2d`, unless the settings
#   include volumes, when a NIfTI is read by the reader policy (the `volumes/` CT of the upstream collection, not in
#   its git repository);
# - after the image is read: the placeholder finding `todo` (or `.../todo`) is dropped;
# - the label is 1 iff the finding mentions COVID-19; an offset that is not a number is read as unknown, with a warning.

REQUIRED_COLUMNS = ("patientid", "offset", "finding", "modality", "folder", "filename", "view")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
READABLE_VOLUME_SUFFIXES = (".nii", ".nii.gz")


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


def is_todo_finding(finding: str) -> bool:
    """True for the placeholder finding `todo`, also as the last part of a hierarchical finding."""
    return finding.strip().rstrip("/").split("/")[-1].strip().lower() == "todo"


def image_label(finding: str) -> int:
    """Image-level label: 1 if the finding mentions COVID-19 (any case), else 0."""
    return int("covid-19" in finding.lower())


def parse_offset(raw: str) -> float | None:
    """Days since symptom onset; None when the cell is empty or NaN; ValueError for other text."""
    if raw.strip().lower() in MISSING_MARKERS:
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def is_volume(filename: str) -> bool:
    """True for a file name of a 3-D volume format (NIfTI, MetaImage, NRRD)."""
    lower = filename.lower()
    return any(lower.endswith(suffix) for suffix in VOLUME_SUFFIXES)


def _row(line: int, cells: tuple[str, ...], settings: CohortSettings) -> SourceRow:
    patient_id, offset_raw, finding, modality, folder, filename, view = cells
    row = SourceRow(line=line, patient_id=patient_id, path=f"{folder}/{filename}", parts=(folder, filename),
                    modality=modality, label=image_label(finding), finding=finding, offset=None, view=view,
                    modality_detail=modality or "(empty)")
    empty = [name for name, value in (("patientid", patient_id), ("folder", folder), ("filename", filename))
             if not value]
    if empty:
        row.invalid = FilterReason.INVALID_ROW, f"empty required cell(s): {', '.join(empty)}"
    elif is_volume(filename) and not (settings.include_volumes and filename.lower().endswith(READABLE_VOLUME_SUFFIXES)):
        row.volume = True
    if is_todo_finding(finding):
        row.after_decode = FilterReason.TODO_FINDING, finding
    try:
        row.offset = parse_offset(offset_raw)
    except ValueError:
        row.offset_warning = f"line {line}: offset {offset_raw!r} is not a number; read as unknown"
    return row


def read_collection(source: CohortSource, settings: CohortSettings) -> CohortTable:
    """The collection's metadata.csv as a cohort table rooted at its data root."""
    root = Path(source.path).resolve()
    metadata_path = root / "metadata.csv"
    frame = read_metadata(metadata_path)
    rows = [_row(index + 2, tuple(str(c).strip() for c in cells), settings)
            for index, cells in enumerate(frame[list(REQUIRED_COLUMNS)].itertuples(index=False, name=None))]
    return CohortTable(source=source, table_path=metadata_path,
                       table_sha256=hashlib.sha256(metadata_path.read_bytes()).hexdigest(), root=root, rows=rows)
