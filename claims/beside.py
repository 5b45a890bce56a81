"""Teacher head-room and the seed authors' gate, written again for claim 6 from the issue's text: like section8.py it
imports nothing from `benchmark.evidence`, so the claim compares evidence.json with rules that did not write them.

- Head-room: every privileged teacher's stored scores on its runs' validation cases (one teacher per configuration
  content and split) form a run named after the teacher's row; the teacher beats student-only iff MC-confirmed
  (section8.compare), and the stored status must be that.
- Gate: per split of the gate's regime, each side's BA is its mean over the split's runs; the mean of the defined
  differences, their signs and count must be the stored ones, and the stored outcome must be "passes" exactly when
  that mean is >= the setting and the stored bootstrap lower bound is > 0 (the bootstrap itself is not redrawn).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from benchmark.claims.section8 import MONTE_CARLO, SUPPORTED, Run, _mean, _sizes, compare, run_from


def _teacher_runs(records: Sequence[Any], labels: dict[str, str]) -> list[Run]:
    """One run per privileged teacher and split, under the head-room row's name of its configuration content."""
    runs: dict[tuple[str, str], Run] = {}
    for record in records:
        teacher, config = record.teacher, record.spec.configuration.teacher
        if teacher is None or config is None or not teacher.validation_predictions:
            continue
        key = json.dumps(config.model_dump(mode="json"), sort_keys=True)
        label = labels.setdefault(key, f"{teacher.modality} teacher of {record.spec.names[0]}")
        runs.setdefault((label, teacher.teacher_id), run_from(
            (label,), record.spec.regime, record.spec.split.val_hash, record.spec.split.index,
            teacher.validation_predictions, _sizes(record)))
    return list(runs.values())


def headroom_problems(records: Sequence[Any], evidence: dict[str, Any], rope: float) -> list[str]:
    """Where evidence.json's teacher head-room differs from the rule recomputed on the teachers' stored scores."""
    labels: dict[str, str] = {}
    teachers = _teacher_runs(records, labels)
    students = [run_from(r.spec.names, r.spec.regime, r.spec.split.val_hash, r.spec.split.index, r.predictions,
                         _sizes(r)) for r in records if "student-only" in r.spec.names]
    expected = {label for label in labels.values() if any(label in t.names and t.regime == MONTE_CARLO
                                                          for t in teachers)}
    stated = {row["teacher"]: row for row in evidence.get("headroom", [])}
    problems = [f"head-room rows {sorted(set(stated) ^ expected)} only on one side"] if set(stated) != expected else []
    for label in sorted(expected & set(stated)):
        comparison = compare([*teachers, *students], label, "student-only", rope)
        status = stated[label]["result"]["status"]
        if comparison is None:
            if status != "not evaluable":
                problems.append(f"head-room {label}: {status!r} without student-only Monte Carlo runs")
            continue
        if (status == SUPPORTED) != comparison.confirmed:
            problems.append(f"head-room {label}: {status!r}, the rule gives MC-confirmed = {comparison.confirmed}")
        mean = stated[label]["result"]["monte_carlo"]["mean_d_balanced_accuracy"]
        if not _close(mean, comparison.mean_ba):
            problems.append(f"head-room {label}: mean dBA {mean}, the teachers' scores give {comparison.mean_ba}")
    return problems


def gate_problems(records: Sequence[Any], evidence: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Where evidence.json's gate verdicts differ from the gate recomputed on the stored runs."""
    regime = settings["regime"]
    runs = [run_from(r.spec.names, r.spec.regime, r.spec.split.val_hash, r.spec.split.index, r.predictions,
                     _sizes(r)) for r in records if r.spec.regime == regime]
    gate = evidence.get("gate")
    if not runs:
        return [] if gate is None else [f"a gate is stated, but no run is on {regime}"]
    if gate is None:
        return [f"runs on {regime}, but evidence.json states no gate"]
    problems = []
    for verdict in gate["verdicts"]:
        where = f"gate {verdict['comparison']}"
        by_a, by_b = _by_split(runs, verdict["a"]), _by_split(runs, verdict["b"])
        if not by_a or not by_b:
            if verdict["outcome"] != "not evaluable":
                problems.append(f"{where}: {verdict['outcome']!r} with no {regime} runs of one side")
            continue
        d = [a - b for split in by_a if split in by_b
             for a, b in [(_mean(by_a[split]), _mean(by_b[split]))] if a is not None and b is not None]
        counts = (len(d), sum(x > 0 for x in d), sum(x < 0 for x in d), sum(x == 0 for x in d))
        if counts != (verdict["units"], verdict["positive"], verdict["negative"], verdict["ties"]):
            problems.append(f"{where}: units and signs {counts[0]} (+{counts[1]}/-{counts[2]}/0 {counts[3]}) stated "
                            f"as {verdict['units']} (+{verdict['positive']}/-{verdict['negative']}/0 "
                            f"{verdict['ties']})")
        mean = _mean(d)
        if not _close(verdict["mean_d_balanced_accuracy"], mean):
            problems.append(f"{where}: mean dBA {verdict['mean_d_balanced_accuracy']}, the runs give {mean}")
        lower = verdict["lower"]
        passes = mean is not None and lower is not None and mean >= settings["min_mean_difference"] and lower > 0
        if (verdict["outcome"] == "passes") != passes:
            problems.append(f"{where}: {verdict['outcome']!r}, the gate gives {'passes' if passes else 'no pass'} "
                            f"(mean {mean}, lower bound {lower})")
    return problems


def _by_split(runs: Sequence[Run], name: str) -> dict[str, list[float | None]]:
    """A configuration's BA on each split of the runs given, one value per run."""
    found: dict[str, list[float | None]] = defaultdict(list)
    for run in runs:
        if name in run.names:
            found[run.split].append(run.ba)
    return found


def _close(stored: float | None, mine: float | None) -> bool:
    return (stored is None) == (mine is None) and (
        stored is None or mine is None or math.isclose(stored, mine, rel_tol=1e-9, abs_tol=1e-12))
