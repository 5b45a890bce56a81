"""Turn a declared profile into stored runs, in parallel local processes, resuming where it stopped.

Scheduling: every distinct teacher the remaining runs need is trained first (longest first), each
in one worker, and cached on disk; a run that distils is submitted as soon as its teacher exists,
runs without a teacher from the start. Workers write each finished run's record themselves
(atomically), so killing everything loses only the runs in flight; a rerun skips finished runs.
A run that raises is reported with its id and does not stop the others.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.configurations import load_configurations
from benchmark.config import Settings, load_settings
from benchmark.errors import StoreError
from benchmark.imaging import ImageBank, ImageCache
from benchmark.matrix import RunSpec, expand_profile, load_profile
from benchmark.metrics import compute_metrics
from benchmark.pipeline import PreparedData, cohort_summary, prepare_data
from benchmark.store import (
    DataIdentity,
    FitSummary,
    ResultsStore,
    RunRecord,
    StoreManifest,
    TeacherProvenance,
    code_version,
    now,
)


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


@dataclass
class RunOutcome:
    """What a call to `run_profile` did."""

    out: Path
    total: int
    skipped: int
    executed: int
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class WorkerContext:
    """What a worker process needs to rebuild the same cohort, engine and store."""

    data_root: str
    settings: Settings
    cache_root: str | None
    teacher_root: str
    store_root: str
    device: str
    threads: int
    code_version: str
    data: DataIdentity


_WORKER: dict[str, object] = {}  # per worker process: its engine, store and context (set by _init_worker)


def data_identity(prepared: PreparedData) -> DataIdentity:
    """The data hashes of a prepared cohort."""
    cohort = prepared.cohort
    return DataIdentity(data_root=str(cohort.data_root), metadata_sha256=cohort.metadata_sha256,
                        image_list_sha256=cohort.image_list_sha256)


def _init_worker(context: WorkerContext) -> None:
    import torch

    from benchmark.engine import Engine
    from benchmark.teachers import TeacherStore
    from benchmark.training import resolve_device

    torch.set_num_threads(context.threads)
    cache = ImageCache(context.cache_root, context.settings.data.image_size)
    prepared = prepare_data(Path(context.data_root), context.settings, cache)
    if not data_identity(prepared).same_data(context.data):
        raise StoreError(f"{context.data_root}: the data changed while the run was starting")
    bank = ImageBank(cache, context.settings.data.normalise_mean, context.settings.data.normalise_std)
    _WORKER.update(engine=Engine(prepared, bank, TeacherStore(context.teacher_root), resolve_device(context.device)),
                   store=ResultsStore(context.store_root), context=context)


def _train_teacher(spec: RunSpec) -> str:
    engine = _WORKER["engine"]
    return engine.teacher_for(spec.configuration, spec.split).teacher_id  # type: ignore[attr-defined]


def _execute(spec: RunSpec) -> tuple[str, str | None]:
    """Run one specification and store it; (run id, error text or None)."""
    try:
        record = execute_run(spec, _WORKER["engine"], _WORKER["context"])  # type: ignore[arg-type]
        _WORKER["store"].write(record)  # type: ignore[attr-defined]
        return spec.run_id, None
    except Exception:  # noqa: BLE001 - one failed run must not stop the others; reported with its id
        return spec.run_id, traceback.format_exc(limit=6)


def execute_run(spec: RunSpec, engine: object, context: WorkerContext) -> RunRecord:
    """Train and evaluate one specification and build its record (no I/O)."""
    import torch

    output = engine.run(spec.configuration, spec.split, spec.seed)  # type: ignore[attr-defined]
    fitted = output.fitted
    teacher = None
    if fitted.teacher is not None:
        t = fitted.teacher
        teacher = TeacherProvenance(teacher_id=t.teacher_id, modality=t.modality, seed=t.seed,
                                    training_patients=list(t.training_patients),
                                    training_images=t.training_images, steps=t.steps,
                                    train_seconds=t.train_seconds)
    train_images = len(engine.prepared.manifests[spec.configuration.manifest]  # type: ignore[attr-defined]
                       .records_of(spec.split.train_patients))
    return RunRecord(
        spec=spec, val_hash=spec.split.val_hash, train_patients=list(fitted.train_patients), data=context.data,
        code_version=context.code_version, torch_version=torch.__version__, device=str(engine.device),  # type: ignore[attr-defined]
        threads=torch.get_num_threads(), teacher=teacher,
        fit=FitSummary(steps=fitted.fit_log.steps, epochs=fitted.fit_log.epochs, train_images=train_images,
                       seconds=fitted.fit_log.seconds, epoch_terms=fitted.fit_log.epoch_terms),
        timings=output.seconds, predictions=output.predictions, metrics=compute_metrics(output.predictions),
        deployment_probe=output.probe,
        finished_at=now())


def _cost(spec: RunSpec) -> float:
    """Rough relative cost for scheduling: epochs x width of the network."""
    return spec.configuration.training.epochs * spec.configuration.network.widths[-1] * (
        20 if spec.configuration.manifest == "all-xray" else 1)


def _teacher_key(spec: RunSpec) -> str:
    assert spec.configuration.teacher is not None
    return spec.configuration.teacher.model_dump_json() + "|" + spec.split.val_hash + f"|{spec.split.seed}"


def plan(request: RunRequest) -> tuple[PreparedData, list[RunSpec], StoreManifest, Settings]:
    """Prepare the data and expand the profile (no training): what `run_profile` will do."""
    profile = load_profile(request.profile, request.matrix_path)
    settings = profile.apply_settings(load_settings(request.settings_path))
    cache = ImageCache(request.cache_root, settings.data.image_size)
    prepared = prepare_data(request.data_root, settings, cache, progress=request.progress)
    specs = expand_profile(profile, load_configurations(request.configurations_path), prepared.regimes)
    manifest = StoreManifest(profile=profile, settings=settings, data=data_identity(prepared),
                             code_version=code_version(), created_at=now(), cohort=cohort_summary(prepared),
                             regimes=prepared.regimes, run_ids=[s.run_id for s in specs])
    return prepared, specs, manifest, settings


def run_profile(request: RunRequest) -> RunOutcome:
    """Execute every not-yet-finished run of the profile and store it; returns what was done."""
    from tqdm import tqdm

    start = time.perf_counter()
    prepared, specs, manifest, settings = plan(request)
    store = ResultsStore(request.out)
    store.open(manifest)
    finished = store.finished_ids()
    todo = sorted((s for s in specs if s.run_id not in finished), key=_cost, reverse=True)
    outcome = RunOutcome(out=request.out, total=len(specs), skipped=len(specs) - len(todo), executed=0)
    if not todo:
        outcome.seconds = time.perf_counter() - start
        return outcome

    workers = max(1, min(request.workers, len(todo)))
    context = WorkerContext(
        data_root=str(request.data_root), settings=settings,
        cache_root=str(request.cache_root) if request.cache_root else None,
        teacher_root=str(request.teacher_root or request.out / "teachers"), store_root=str(request.out),
        device=request.device, threads=max(1, (os.cpu_count() or 1) // workers),
        code_version=manifest.code_version, data=manifest.data)

    waiting: dict[str, list[RunSpec]] = {}
    for spec in todo:
        if spec.configuration.teacher is not None:
            waiting.setdefault(_teacher_key(spec), []).append(spec)
    teacher_jobs = sorted(waiting.items(), key=lambda item: item[1][0].configuration.teacher.modality != "xray")  # type: ignore[union-attr]

    bar = tqdm(total=len(todo), desc=f"{request.profile} runs", unit="run", disable=not request.progress,
               initial=0, dynamic_ncols=True)
    bar.set_postfix_str(f"{outcome.skipped} already stored, {len(teacher_jobs)} teachers to train")
    context_mp = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context_mp, initializer=_init_worker,
                             initargs=(context,)) as pool:
        pending: dict[Future, tuple[str, object]] = {}
        for key, group in teacher_jobs:
            pending[pool.submit(_train_teacher, group[0])] = ("teacher", key)
        for spec in todo:
            if spec.configuration.teacher is None:
                pending[pool.submit(_execute, spec)] = ("run", spec)
        teachers_done = 0
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind, payload = pending.pop(future)
                if kind == "teacher":
                    teachers_done += 1
                    group = waiting[payload]  # type: ignore[index]
                    error = future.exception()
                    if error is not None:
                        for spec in group:
                            outcome.failures[spec.run_id] = f"{spec.name}: teacher training failed: {error!r}"
                        bar.update(len(group))
                        continue
                    for spec in group:
                        pending[pool.submit(_execute, spec)] = ("run", spec)
                    bar.set_postfix_str(f"teachers {teachers_done}/{len(teacher_jobs)}")
                else:
                    run_id, error = future.result()
                    if error is None:
                        outcome.executed += 1
                    else:
                        outcome.failures[run_id] = f"{payload.name} ({payload.split.split_id}, seed "  # type: ignore[union-attr]
                        outcome.failures[run_id] += f"{payload.seed}): {error}"  # type: ignore[union-attr]
                    bar.update(1)
    bar.close()
    outcome.seconds = time.perf_counter() - start
    return outcome
