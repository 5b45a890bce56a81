"""The cohort manifest: a CSV that declares a paired cohort, one row per image file (README, "Your own cohort").

It lets any site's own images enter the pipeline without the collection's layout; bad rows are skipped and listed.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import pandas as pd

from benchmark.config import CohortSettings
from benchmark.data.cohort import MISSING_MARKERS, CohortTable, SourceRow
from benchmark.errors import MetadataError, describe_os_error
from benchmark.schemas import CohortSource, FilterReason

# Columns (a header row names them; order free, names case-sensitive):
# - required: `patient_id`, `modality`, `label`, `path`;
# - optional: `offset` (days, numeric; pairs each target image with its patient's closest privileged image),
#   `image_id` (unique; default: the path), `view`, `finding` (free text, shown in the audit).
# Other columns are ignored, with a warning naming them.
# `path` is relative to the manifest's own folder and may not leave it (no absolute paths, no `..` out); any file
# type `benchmark.data.readers` reads (PNG/JPEG/TIFF, DICOM, NIfTI 2-D or 3-D). `modality` names the target or the
# privileged modality declared in the settings (`[cohort]`, default `xray` and `ct`); a row of any other modality is
# skipped. `label` is 0 or 1 (`0.0`/`1.0` accepted).
# A manifest that cannot be read, or lacks a required column, is an error naming the file (and the row for a header
# problem). A bad row is skipped, counted by reason and listed with its line, the column and the value: an empty
# required cell or an offset that is not a number (`invalid_row`), a label other than 0/1 (`invalid_label`), a path
# that is absolute or leaves the folder (`outside_data_root`), then whatever the file itself has (missing, empty,
# unreadable, duplicate, ...), as for the collection.

REQUIRED = ("patient_id", "modality", "label", "path")
OPTIONAL = ("offset", "image_id", "view", "finding")


def read_manifest_csv(path: Path) -> pd.DataFrame:
    """The manifest's cells as text; MetadataError naming the file when it is absent, unreadable or lacks a column."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise MetadataError(path, "cohort manifest not found") from exc
    except IsADirectoryError as exc:
        raise MetadataError(path, "is a folder; --cohort names the manifest CSV file") from exc
    except OSError as exc:
        raise MetadataError(path, f"cannot read the cohort manifest: {describe_os_error(exc)}") from exc
    if not raw.strip():
        raise MetadataError(path, "cohort manifest is empty (no header row)")
    try:  # header=None: pandas would rename a repeated name (`label.1`), hiding it from the check below
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig", header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetadataError(path, f"cannot parse as UTF-8 CSV: {str(exc).splitlines()[0][:200]}") from exc
    columns = [str(c).strip() for c in frame.iloc[0]]
    frame = frame.iloc[1:].reset_index(drop=True)
    frame.columns = columns
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise MetadataError(path, f"required column(s) missing: {', '.join(missing)}; found: "
                                  f"{', '.join(columns)[:300]}; a cohort manifest has {', '.join(REQUIRED)} "
                                  f"(and optionally {', '.join(OPTIONAL)})", row=1)
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise MetadataError(path, f"column(s) named twice: {', '.join(repeated)}", row=1)
    return frame


def parse_label(raw: str) -> int | None:
    """0 or 1 from `0`, `1`, `0.0`, `1.0`; None for anything else."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def _row(line: int, cells: dict[str, str], settings: CohortSettings) -> SourceRow:
    path = cells["path"]
    row = SourceRow(line=line, patient_id=cells["patient_id"], path=path, parts=(path,), modality=cells["modality"],
                    label=parse_label(cells["label"]), finding=cells.get("finding", ""), offset=None,
                    view=cells.get("view", ""), image_id=cells.get("image_id") or None,
                    modality_detail=f"column modality: value {cells['modality']!r} is neither the target modality "
                                    f"{settings.target_modality!r} nor the privileged {settings.privileged_modality!r}"
                                    " (settings [cohort])")
    empty = [c for c in REQUIRED if not cells[c]]
    offset_raw = cells.get("offset", "")
    if empty:
        row.invalid = FilterReason.INVALID_ROW, f"empty required cell(s): {', '.join(empty)}"
    elif row.label is None:
        row.invalid = FilterReason.INVALID_LABEL, f"column label: value {cells['label']!r} is not 0 or 1"
    elif offset_raw.lower() not in MISSING_MARKERS:
        try:
            row.offset = float(offset_raw)
        except ValueError:
            row.offset = math.nan
        if not math.isfinite(row.offset):
            row.offset = None
            row.invalid = FilterReason.INVALID_ROW, f"column offset: value {offset_raw!r} is not a number of days"
    return row


def read_cohort_manifest(source: CohortSource, settings: CohortSettings) -> CohortTable:
    """A cohort manifest CSV as a cohort table rooted at the CSV's folder."""
    path = Path(source.path).resolve()
    frame = read_manifest_csv(path)
    known = [c for c in (*REQUIRED, *OPTIONAL) if c in frame.columns]
    rows = [_row(index + 2, dict(zip(known, (str(c).strip() for c in cells), strict=True)), settings)
            for index, cells in enumerate(frame[known].itertuples(index=False, name=None))]
    ignored = [c for c in frame.columns if c not in known]
    warnings = [f"column(s) {', '.join(ignored)[:200]} are not part of the cohort manifest format; ignored"
                ] if ignored else []
    return CohortTable(source=source, table_path=path, table_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                       root=path.parent, rows=rows, warnings=warnings)
