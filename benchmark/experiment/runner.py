"""Turn a declared profile into stored runs on an executor (local processes or Ray), resuming where it stopped.

Scheduling: every distinct teacher the remaining runs need is trained first (longest first), each
in one worker, and cached on disk; a run that distils is submitted as soon as its teacher exists,
runs without a teacher from the start. Workers return each finished run's record and the driver
writes it atomically as it arrives, so killing everything loses only the runs in flight; a rerun
skips finished runs. A run that raises is reported with its id and does not stop the others.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from benchmark.atomic import ensure_writable_folder
from benchmark.config import Settings, load_settings
from benchmark.data.pipeline import PreparedData, cohort_summary, image_cache, prepare_data
from benchmark.data.test_sets import ExternalSpec, scoring_identity
from benchmark.errors import ConfigError, OutputError
from benchmark.experiment.executors import Executor, LocalExecutor, RayExecutor
from benchmark.experiment.matrix import Profile, RunSpec, expand_profile, load_profile, uses_exhaustive, with_candidates
from benchmark.experiment.store import ResultsStore, RunRecord, StoreManifest, code_version, now
from benchmark.experiment.worker import WorkerContext, data_identity, failure_line, storage_stop
from benchmark.methods.configurations import with_added_configurations
from benchmark.schemas import PairMatch


class Admission(Protocol):
    """A pre-registration plan a run must follow (benchmark.evidence.preregistration.PlanAdmission)."""

    content: bytes

    def admit(self, manifest: StoreManifest, specs: list[RunSpec]) -> StoreManifest:
        """`manifest` stamped with the plan; an error in one line when the runs differ from it."""
        ...


@dataclass(frozen=True)
class RunRequest:
    """Everything `ctxray-bench run` was asked to do."""

    data_root: Path
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
    """(workers, threads per worker): the thread count is the one asked for, else the CPUs divided by `workers`.

    Never derived from the work left to do, so a resumed run computes with the same threads (and so the
    same bits) as an uninterrupted one."""
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


def _cost(spec: RunSpec) -> float:
    """Rough relative cost for scheduling: epochs x width of the network."""
    return spec.configuration.training.epochs * spec.configuration.network.widths[-1] * (
        20 if spec.configuration.manifest == "all-xray" else 1)


def _label(spec: RunSpec) -> str:
    """How a failure names its run: configuration, split and seed."""
    return f"{spec.name} ({spec.split.split_id}, seed {spec.seed})"


def _teacher_key(spec: RunSpec) -> str:
    assert spec.configuration.teacher is not None
    return spec.configuration.teacher.model_dump_json() + "|" + spec.split.val_hash + f"|{spec.split.seed}"


def store_manifest(profile: Profile, settings: Settings, prepared: PreparedData, specs: list[RunSpec],
                   version: str) -> StoreManifest:
    """The manifest of a store that holds `specs`, the runs of `profile` on `prepared` data."""
    return StoreManifest(profile=profile, settings=settings, data=data_identity(prepared), code_version=version,
                         created_at=now(), cohort=cohort_summary(prepared), regimes=prepared.regimes,
                         run_ids=[s.run_id for s in specs], test_sets=list(prepared.test_sets),
                         pairs=[PairMatch.of(p) for p in prepared.manifests["paired"].pairs or []])


def plan(request: RunRequest) -> tuple[PreparedData, list[RunSpec], StoreManifest, Settings]:
    """Prepare the data and expand the profile (no training): what `run_profile` will do."""
    configurations = with_added_configurations(request.configurations_path)
    profile = with_candidates(load_profile(request.profile, request.matrix_path), configurations)
    settings = profile.apply_settings(load_settings(request.settings_path),
                                      str(request.settings_path or "the packaged default settings"))
    cache = image_cache(settings, request.cache_root)
    prepared = prepare_data(request.data_root, settings, cache, exhaustive=uses_exhaustive(profile),
                            progress=request.progress, externals=request.externals)
    specs = expand_profile(profile, configurations, prepared.regimes, prepared.split_errors)
    check_configurations(specs, settings.data.image_size)
    return prepared, specs, store_manifest(profile, settings, prepared, specs, code_version()), settings


def check_configurations(specs: list[RunSpec], image_size: int) -> None:
    """Every distinct configuration of `specs` builds and takes one loss (engine.check_configuration), before any
    worker starts: an unknown objective or network, or a plugin that does not load, stops the run in one line."""
    from benchmark.methods.preflight import check_configuration

    seen: set[str] = set()
    for spec in specs:
        key = spec.configuration.model_dump_json(exclude={"name", "role", "tier"})
        if key not in seen:
            seen.add(key)
            check_configuration(spec.configuration, image_size)


def make_executor(kind: str, workers: int, threads: int, device: str, ray_address: str | None = None,
                  warm: WorkerContext | None = None) -> Executor:
    """The executor `kind` ('local' or 'ray') for `workers` parallel jobs of `threads` threads each."""
    if kind == "local":
        return LocalExecutor(workers, warm)
    if kind == "ray":
        return RayExecutor(ray_address, threads=threads, device=device, num_cpus=os.cpu_count())
    raise ConfigError(f"unknown executor {kind!r}: use local or ray")


@dataclass
class Batch:
    """One store's remaining work: the context its workers rebuild and the runs still to do."""

    context: WorkerContext
    store: ResultsStore
    todo: list[RunSpec]


@dataclass
class OpenedStore:
    """A store opened for writing: the runs of the profile it does not hold yet, records it set aside, and the
    thread counts of the runs it holds."""

    store: ResultsStore
    todo: list[RunSpec]
    set_aside: list[Path]
    stored_threads: set[int]


def open_store(root: Path, manifest: StoreManifest, specs: list[RunSpec], plan_file: bytes | None = None
               ) -> OpenedStore:
    """Open (or reopen) the store at `root`; unreadable records are set aside and their runs count as to do."""
    store = ResultsStore(root)
    finished, set_aside = store.open(manifest, plan_file)
    return OpenedStore(store, [s for s in specs if s.run_id not in finished], set_aside,
                       {record.threads for record in finished.values()})


@dataclass
class BatchOutcome:
    """What `execute_batches` did: runs stored, failures by run id, and why storing stopped (if it did)."""

    executed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    storage_error: str | None = None
    traces: dict[str, str] = field(default_factory=dict)  # run id -> the worker's traceback of its failure (--debug)


STACKED_JOB_RUNS = 64  # most runs in one stacked job: large enough to batch, small enough to spread over workers


def _stacked_jobs(todo: list[RunSpec]) -> list[tuple[RunSpec, ...]]:
    """The stacked path's jobs of one batch: its runs grouped by network and training schedule (the worker stacks
    those whose training sets also match), in chunks of at most STACKED_JOB_RUNS, costliest group first."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in todo:
        key = spec.configuration.network.model_dump_json() + spec.configuration.training.model_dump_json()
        groups.setdefault(key, []).append(spec)
    ordered = sorted(groups.values(), key=lambda group: _cost(group[0]), reverse=True)
    return [tuple(group[i:i + STACKED_JOB_RUNS]) for group in ordered for i in range(0, len(group), STACKED_JOB_RUNS)]


def execute_batches(batches: Iterable[Batch], executor: Executor, *, label: str, progress: bool,
                    on_record: Callable[[int, RunRecord], None] | None = None, ahead: int = 4) -> BatchOutcome:
    """Train every needed teacher, then every run, of all batches; write records as they arrive.

    Batches are taken from `batches` as the work of earlier ones drains (fewer than `ahead` jobs pending), so a
    generator that prepares each batch's data overlaps that preparation with training. On the per-run path each
    teacher is one job and each run another, submitted once its teacher exists; on the stacked path
    (settings.engine.path) a job is a group of runs whose worker trains their teachers and then the runs
    together. When a record cannot be written (full disk, folder gone or read-only), nothing more is started:
    that run and every run not yet stored are listed as failures and the storage error is returned, while every
    record already written stays valid. `on_record(batch number, record)` sees each record once stored."""
    from tqdm import tqdm

    taken: list[Batch] = []
    source = iter(batches)
    waiting: dict[tuple[int, str], list[RunSpec]] = {}
    bar = tqdm(total=0, desc=label, unit="run", disable=not progress, dynamic_ncols=True)
    outcome = BatchOutcome()
    failures = outcome.failures
    pending: dict[Future, tuple[str, int, str, tuple[RunSpec, ...]]] = {}
    teachers = {"done": 0, "total": 0}

    def submit(kind: str, number: int, key: str, specs: tuple[RunSpec, ...]) -> None:
        pending[executor.submit(taken[number].context, kind, specs)] = (kind, number, key, specs)

    def take_next() -> bool:
        """Submit the next batch's first jobs; False when no batch is left."""
        batch = next(source, None)
        if batch is None:
            return False
        number = len(taken)
        taken.append(batch)
        bar.total += len(batch.todo)
        bar.refresh()
        if batch.context.settings.engine.path == "stacked":
            for group in _stacked_jobs(batch.todo):
                submit("run", number, group[0].run_id, group)
            return True
        costliest_first = sorted(batch.todo, key=_cost, reverse=True)
        fresh: dict[tuple[int, str], list[RunSpec]] = {}
        for spec in costliest_first:
            if spec.configuration.teacher is not None:
                fresh.setdefault((number, _teacher_key(spec)), []).append(spec)
        for key, group in sorted(fresh.items(), key=lambda item: item[1][0].configuration.teacher.modality != "xray"):  # type: ignore[union-attr]
            waiting[key] = group
            submit("teacher", number, key[1], (group[0],))
        teachers["total"] += len(fresh)
        if fresh:
            bar.set_postfix_str(f"teachers {teachers['done']}/{teachers['total']}")
        for spec in costliest_first:
            if spec.configuration.teacher is None:
                submit("run", number, spec.run_id, (spec,))
        return True

    more = True
    try:
        while more or pending:
            while more and len(pending) < ahead and outcome.storage_error is None:
                more = take_next()
            if not pending:
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind, number, key, specs = pending.pop(future)
                error = future.exception()
                results = {r.run_id: r for r in future.result()} if error is None else {}
                stopped = next((r.storage_error for r in results.values() if r.storage_error), None)
                if stopped is not None and outcome.storage_error is None:
                    outcome.storage_error = stopped
                if kind == "teacher":
                    teachers["done"] += 1
                    result = results.get(specs[0].run_id)
                    cause = (failure_line(error) if error is not None else result.error if result is not None
                             else None)
                    for spec in waiting.pop((number, key)):
                        if outcome.storage_error is not None:
                            failures[spec.run_id] = (f"{_label(spec)}: not run: storing stopped "
                                                     f"({outcome.storage_error})")
                            bar.update(1)
                        elif cause is None:
                            submit("run", number, spec.run_id, (spec,))
                        else:
                            failures[spec.run_id] = f"{_label(spec)}: its teacher failed to train: {cause}"
                            bar.update(1)
                    bar.set_postfix_str(f"teachers {teachers['done']}/{teachers['total']}")
                    continue
                for spec in specs:
                    result = results.get(spec.run_id)
                    bar.update(1)
                    if result is not None and result.record_json is not None and outcome.storage_error is None:
                        try:
                            record = RunRecord.model_validate_json(result.record_json)
                            taken[number].store.write(record)
                        except OutputError as exc:
                            outcome.storage_error = storage_stop(exc)
                        else:
                            outcome.executed += 1
                            if on_record is not None:
                                on_record(number, record)
                            continue
                    if outcome.storage_error is not None:
                        failures[spec.run_id] = f"{_label(spec)}: not stored: {outcome.storage_error}"
                    else:
                        why = result.error if result is not None and result.error else failure_line(error or Exception(
                            "no result"))
                        failures[spec.run_id] = f"{_label(spec)}: {why}"
                        if result is not None and result.trace:
                            outcome.traces[spec.run_id] = result.trace
            if outcome.storage_error is not None:
                break
    finally:
        bar.close()
    if outcome.storage_error is not None:
        for future, (kind, number, key, specs) in pending.items():
            future.cancel()
            for spec in waiting.get((number, key), []) if kind == "teacher" else specs:
                failures.setdefault(spec.run_id, f"{_label(spec)}: not run: storing stopped ({outcome.storage_error})")
        for batch in batches[len(taken):] if isinstance(batches, Sequence) else []:  # never started (a generator's
            for spec in batch.todo:                                                  # are not prepared at all)
                failures.setdefault(spec.run_id, f"{_label(spec)}: not run: storing stopped ({outcome.storage_error})")
    return outcome


def run_profile(request: RunRequest) -> RunOutcome:
    """Execute every not-yet-finished run of the profile and store it; returns what was done."""
    start = time.perf_counter()
    workers, threads = preflight(request.out, request.workers, request.threads, request.device)
    prepared, specs, manifest, settings = plan(request)
    if request.plan is not None:
        manifest = request.plan.admit(manifest, specs)
    opened = open_store(request.out, manifest, specs, request.plan.content if request.plan is not None else None)
    todo = opened.todo
    outcome = RunOutcome(out=request.out, total=len(specs), skipped=len(specs) - len(todo), executed=0,
                         set_aside=opened.set_aside, threads=threads, stored_threads=opened.stored_threads)
    if todo:
        context = WorkerContext(
            data_root=str(request.data_root), settings=settings,
            cache_root=str(request.cache_root) if request.cache_root else None,
            teacher_root=str(request.teacher_root or request.out / "teachers"), device=request.device,
            threads=threads, code_version=manifest.code_version, data=manifest.data,
            exhaustive=uses_exhaustive(manifest.profile),
            externals=tuple((spec.name, str(spec.path)) for spec in request.externals),
            test_sets=scoring_identity(manifest.test_sets))
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
