"""Many synthetic cohorts, each a study of one profile stored apart, all trained on one executor: what the power study
(section 11) and the gate-chance study share. Each cohort is written and prepared as the scheduler asks for work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import Settings, load_settings
from benchmark.data.synthetic import SyntheticSpec, write_synthetic_cohort
from benchmark.errors import RunError
from benchmark.experiment.matrix import Profile, optional_regimes
from benchmark.experiment.scheduling import Batch, execute_batches
from benchmark.experiment.store import ResultsStore, RunRecord, code_version
from benchmark.experiment.study import Study, make_executor, preflight
from benchmark.methods.configurations import Configuration, merge_overrides


def synthetic_study_settings(overrides: dict[str, Any], splits: dict[str, Any]) -> Settings:
    """The run settings of a synthetic study's cohorts: the defaults, the grid's `overrides`, its `splits`, and no
    held-out test set (these studies measure the rules themselves, on validation sets)."""
    grid = merge_overrides(overrides, {"splits": splits, "test_sets": {"held_out": False}})
    return Settings.model_validate(merge_overrides(load_settings().model_dump(), grid))


@dataclass(frozen=True)
class SyntheticCohort:
    """One synthetic cohort to study: its folder name (under OUT/cohorts and OUT/stores) and its generator spec."""

    name: str
    spec: SyntheticSpec


@dataclass
class FinishedStudy:
    """One cohort's finished store: its cohort and its records in declaration order."""

    cohort: SyntheticCohort
    root: Path
    records: list[RunRecord]


def run_synthetic_studies(cohorts: Sequence[SyntheticCohort], profile: Profile, settings: Settings,
                          configurations: dict[str, Configuration], out: Path, *, label: str, workers: int = 1,
                          threads: int | None = None, executor: str = "local", device: str = "cpu",
                          progress: bool = True) -> dict[str, FinishedStudy]:
    """Write every cohort (in the given order, which is the scheduling order), run `profile` on each into
    OUT/stores/NAME on one executor, and return each finished store by cohort name; a store (partly) finished
    earlier is reused. RunError when any run failed."""
    workers, threads = preflight(out, workers, threads, device)
    version = code_version()
    regimes = optional_regimes(profile)
    planned: dict[str, tuple[SyntheticCohort, Path, dict[str, int]]] = {}  # name -> cohort, store, run id positions
    started: list[Path] = []

    def batches() -> Iterator[Batch]:
        """Write and prepare each cohort as the scheduler asks for more work, and yield its remaining runs."""
        for cohort in cohorts:
            data = out / "cohorts" / cohort.name
            if not (data / "metadata.csv").is_file():
                write_synthetic_cohort(data, cohort.spec)
            study = Study.of_cohort(data, settings, out / "cache", optional_regimes=regimes)
            study.version = version
            study.with_profile(profile, configurations, check=not planned)
            manifest = study.manifest()
            opened = study.open_store(out / "stores" / cohort.name, manifest)
            planned[cohort.name] = (cohort, opened.store.root, {s.run_id: i for i, s in enumerate(study.specs)})
            if opened.todo:
                started.append(opened.store.root)
                context = study.worker_context(manifest, out / "teachers", device, threads)
                yield Batch(context, opened.store, opened.todo)

    pool = make_executor(executor, workers, threads, device)
    computed: dict[Path, list[RunRecord]] = {}
    try:
        failures = execute_batches(batches(), pool, label=label, progress=progress,
                                   on_record=lambda number, record: computed.setdefault(
                                       started[number], []).append(record)).failures
    finally:
        pool.shutdown()
    if failures:
        run_id, why = next(iter(failures.items()))
        raise RunError(f"{len(failures)} {label} run(s) failed, e.g. {run_id}: {why}")
    finished = {}
    for name, (cohort, root, order) in planned.items():
        # the records just computed, as stored (in declaration order); a store (partly) finished earlier is read back
        fresh = computed.get(root, [])
        records = sorted(fresh, key=lambda r: order[r.spec.run_id]) if len(fresh) == len(order) else \
            ResultsStore(root).load_all()
        finished[name] = FinishedStudy(cohort, root, records)
    return finished
