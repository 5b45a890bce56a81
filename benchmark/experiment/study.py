"""A study: one cohort prepared once, with its settings, run matrix, store, engine and executor.

Every command that trains (run, plan, power, train, bench) and every worker reaches training through here."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchmark.atomic import ensure_writable_folder
from benchmark.config import Settings, load_settings
from benchmark.data.imaging import ImageBank, ImageCache
from benchmark.data.pipeline import PreparedData, cohort_summary, image_cache, prepare_data
from benchmark.data.test_sets import ExternalSpec
from benchmark.errors import ConfigError
from benchmark.experiment.executors import Executor, LocalExecutor, RayExecutor
from benchmark.experiment.matrix import (
    Profile,
    RunSpec,
    expand_profile,
    load_profile,
    optional_regimes,
    with_candidates,
)
from benchmark.experiment.scheduling import Batch, execute_batches
from benchmark.experiment.store import ResultsStore, StoreManifest, code_version, now
from benchmark.experiment.worker import WorkerContext, data_identity, ship_cohort
from benchmark.methods.configurations import Configuration, with_added_configurations
from benchmark.methods.engine import Engine
from benchmark.methods.teachers import TeacherStore
from benchmark.schemas import PairMatch, ReaderPolicy, RegimeName


class Admission(Protocol):
    """A pre-registration plan a run must follow (benchmark.evidence.preregistration.PlanAdmission)."""

    content: bytes

    def admit(self, manifest: StoreManifest, specs: list[RunSpec]) -> StoreManifest:
        """`manifest` stamped with the plan; an error in one line when the runs differ from it."""
        ...


@dataclass(frozen=True)
class RunRequest:
    """Everything `ctxray-bench run` was asked to do."""

    cohort: Path  # a clone of the collection, or a cohort manifest CSV
    profile: str
    out: Path
    workers: int = 1
    device: str = "cpu"
    settings_path: Path | None = None
    configurations_path: Path | None = None
    matrix_path: Path | None = None
    cache_root: Path | None = None
    teacher_root: Path | None = None
    progress: bool = True
    executor: str = "local"
    ray_address: str | None = None
    threads: int | None = None
    externals: tuple[ExternalSpec, ...] = ()  # external test sets (`--external NAME=FILE`)
    plan: Admission | None = None  # `run --plan`: checks the runs against a pre-registration plan and stamps them


@dataclass
class RunOutcome:
    """What a call to `run_profile` did."""

    out: Path
    total: int
    skipped: int
    executed: int
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    set_aside: list[Path] = field(default_factory=list)
    storage_error: str | None = None
    stored_threads: set[int] = field(default_factory=set)
    threads: int = 1
    traces: dict[str, str] = field(default_factory=dict)  # run id -> traceback of its failure (shown under --debug)


def parallelism(workers: int, threads: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): the thread count asked for, else the CPUs divided by `workers`, never derived
    from the work left, so a resumed run computes with the same threads (and so the same bits)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}")
    return workers, threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)


def preflight(out: Path, workers: int, threads: int | None, device: str) -> tuple[int, int]:
    """Check what can fail before any data is read or worker started, each in one line: the worker and thread
    counts, the device, and that `out` can be written. Returns (workers, threads per worker)."""
    from benchmark.methods.training import resolve_device

    workers, threads = parallelism(workers, threads)
    resolve_device(device)
    ensure_writable_folder(out)
    return workers, threads


def check_configurations(specs: list[RunSpec], image_size: int, readers: ReaderPolicy | None = None) -> None:
    """Every distinct configuration of `specs` builds (input channels by the reader policy) and takes one loss before
    any worker starts: an unknown objective or network, or a plugin that does not load, stops the run in one line."""
    from benchmark.methods.preflight import check_configuration

    seen: set[str] = set()
    for spec in specs:
        key = spec.configuration.model_dump_json(exclude={"name", "role", "tier"})
        if key not in seen:
            seen.add(key)
            check_configuration(spec.configuration, image_size, readers)


def make_executor(kind: str, workers: int, threads: int, device: str, ray_address: str | None = None,
                  warm: WorkerContext | None = None) -> Executor:
    """The executor `kind` ('local' or 'ray') for `workers` parallel jobs of `threads` threads each."""
    if kind == "local":
        return LocalExecutor(workers, warm)
    if kind == "ray":
        return RayExecutor(ray_address, threads=threads, device=device, num_cpus=os.cpu_count())
    raise ConfigError(f"unknown executor {kind!r}: use local or ray")


def build_engine(prepared: PreparedData, settings: Settings, cache: ImageCache, teacher_root: Path | str | None,
                 device: str) -> Engine:
    """The engine that trains runs of `prepared`: the one place an engine is assembled (driver and workers)."""
    from benchmark.methods.training import resolve_device

    bank = ImageBank(cache, settings.data.normalise_mean, settings.data.normalise_std)
    return Engine(prepared, bank, TeacherStore(teacher_root), resolve_device(device), path=settings.engine.path)


@dataclass
class OpenedStore:
    """A store opened for writing: the runs it does not hold yet, records it set aside, and the thread counts of
    the runs it holds."""

    store: ResultsStore
    todo: list[RunSpec]
    set_aside: list[Path]
    stored_threads: set[int]


@dataclass
class Study:
    """A cohort prepared once, its settings and cache, and the runs of its matrix (none for a single `train`)."""

    settings: Settings
    cache: ImageCache
    prepared: PreparedData
    profile: Profile | None = None
    specs: list[RunSpec] = field(default_factory=list)
    version: str = field(default_factory=code_version)

    @classmethod
    def of_cohort(cls, cohort: Path, settings: Settings, cache_root: Path | str | None = None, *,
                  optional_regimes: Collection[RegimeName] = (),
                  externals: tuple[ExternalSpec, ...] | list[ExternalSpec] = (),
                  progress: bool = False) -> Study:
        """Prepare `cohort` (a collection clone or a cohort manifest) under `settings`, with no matrix yet."""
        cache = image_cache(settings, cache_root)
        prepared = prepare_data(cohort, settings, cache, optional_regimes=optional_regimes, progress=progress,
                                externals=list(externals))
        return cls(settings, cache, prepared)

    @classmethod
    def plan(cls, request: RunRequest) -> Study:
        """Prepare the data and expand the request's profile (no training): what `run` will do."""
        configurations = with_added_configurations(request.configurations_path)
        profile, configurations = with_candidates(load_profile(request.profile, request.matrix_path),
                                                  configurations)
        settings = profile.apply_settings(load_settings(request.settings_path),
                                          str(request.settings_path or "the packaged default settings"))
        study = cls.of_cohort(request.cohort, settings, request.cache_root, optional_regimes=optional_regimes(profile),
                              externals=request.externals, progress=request.progress)
        return study.with_profile(profile, configurations)

    def with_profile(self, profile: Profile, configurations: dict[str, Configuration], *, check: bool = True
                     ) -> Study:
        """This study with the runs of `profile`, each configuration checked to build and train (`check`)."""
        self.profile = profile
        self.specs = expand_profile(profile, configurations, self.prepared.regimes, self.prepared.split_errors)
        if check:
            check_configurations(self.specs, self.settings.data.image_size, self.settings.cohort.readers)
        return self

    def manifest(self) -> StoreManifest:
        """The manifest of a store that holds this study's runs."""
        assert self.profile is not None, "a study without a profile has no store"
        prepared = self.prepared
        return StoreManifest(profile=self.profile, settings=self.settings, data=data_identity(prepared),
                             code_version=self.version, created_at=now(), cohort=cohort_summary(prepared),
                             regimes=prepared.regimes, run_ids=[s.run_id for s in self.specs],
                             test_sets=list(prepared.test_sets),
                             pairs=[PairMatch.of(p) for p in prepared.manifests["paired"].pairs or []])

    def open_store(self, root: Path, manifest: StoreManifest, plan_file: bytes | None = None) -> OpenedStore:
        """Open (or reopen) the store at `root`; unreadable records are set aside and their runs count as to do."""
        store = ResultsStore(root)
        finished, set_aside = store.open(manifest, plan_file)
        return OpenedStore(store, [s for s in self.specs if s.run_id not in finished], set_aside,
                           {record.threads for record in finished.values()})

    def engine(self, teacher_root: Path | str | None = None, device: str = "cpu") -> Engine:
        """An engine on this study's prepared cohort, in this process (`train`, the bench, the claims)."""
        return build_engine(self.prepared, self.settings, self.cache, teacher_root, device)

    def worker_context(self, manifest: StoreManifest, teacher_root: Path, device: str, threads: int
                       ) -> WorkerContext:
        """What a worker needs to train this study's runs: the prepared cohort is shipped, never prepared again."""
        return WorkerContext(cohort=ship_cohort(self.prepared, self.cache.root), settings=self.settings,
                             cache_root=str(self.cache.root), teacher_root=str(teacher_root), device=device,
                             threads=threads, code_version=manifest.code_version, data=manifest.data)


def run_profile(request: RunRequest) -> RunOutcome:
    """Execute every not-yet-finished run of the request's profile and store it; returns what was done."""
    start = time.perf_counter()
    workers, threads = preflight(request.out, request.workers, request.threads, request.device)
    study = Study.plan(request)
    manifest = study.manifest()
    if request.plan is not None:
        manifest = request.plan.admit(manifest, study.specs)
    opened = study.open_store(request.out, manifest, request.plan.content if request.plan is not None else None)
    todo = opened.todo
    outcome = RunOutcome(out=request.out, total=len(study.specs), skipped=len(study.specs) - len(todo), executed=0,
                         set_aside=opened.set_aside, threads=threads, stored_threads=opened.stored_threads)
    if todo:
        context = study.worker_context(manifest, request.teacher_root or request.out / "teachers", request.device,
                                       threads)
        executor = make_executor(request.executor, min(workers, len(todo)), threads, request.device,
                                 request.ray_address, warm=context)
        try:
            done = execute_batches([Batch(context, opened.store, todo)], executor, label=f"{request.profile} runs",
                                   progress=request.progress)
        finally:
            executor.shutdown()
        outcome.executed, outcome.failures, outcome.storage_error = done.executed, done.failures, done.storage_error
        outcome.traces = done.traces
    outcome.seconds = time.perf_counter() - start
    return outcome
