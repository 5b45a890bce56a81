"""Digests of everything the data half of the flow derives from a collection: kept rows and why rows were dropped,
the three manifests, the regimes' splits and the audit. Issue 13's pin: reading the COVID-19 Image Data Collection
through the cohort-manifest adapter must give the digests the dedicated loader gave (tests/golden/)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def collection_digests(prepared: Any) -> dict[str, str]:
    """sha256 of each derived component of `prepared` (a benchmark.data.pipeline.PreparedData), by component name."""
    report = prepared.cohort.filter_report
    records = [r.model_dump(mode="json") for r in prepared.cohort.records]
    return {
        "metadata_sha256": prepared.cohort.metadata_sha256,
        "image_list_sha256": prepared.cohort.image_list_sha256,
        "row_counts": _digest({"total": report.total_rows, "kept": report.kept_rows,
                               "dropped": {str(k.value if hasattr(k, "value") else k): v
                                           for k, v in report.counts.items() if v}}),
        "skipped_rows": _digest([[s.line, s.patient_id, s.path, str(s.reason.value), s.detail]
                                 for s in report.skipped]),
        "warnings": _digest(list(report.warnings)),
        "kept_records": _digest(records),
        "manifests": _digest({name: [[p.xray.image_id, p.ct.image_id, p.offset_gap] for p in m.pairs]
                              if m.pairs is not None else [r.image_id for r in m.records]
                              for name, m in prepared.manifests.items()}),
        "splits": _digest([[r.name, r.manifest, r.training_seeds, r.admissible_sets,
                            [[s.split_id, s.seed, list(s.train_patients), list(s.val_patients)] for s in r.splits]]
                           for r in prepared.regimes]),
        "split_errors": _digest(prepared.split_errors),
        "audit": _digest(prepared.audit.model_dump(mode="json")),
    }
