"""What runs inside a worker process (local or Ray): the engine built once from the driver's prepared cohort.

A worker returns each finished run's record to the driver, the store's one writer, so it needs no output folder."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.atomic import write_atomically
from benchmark.config import Settings
from benchmark.data.pipeline import PreparedData, image_cache
from benchmark.errors import OutputError, StoreError, describe_os_error
from benchmark.experiment.matrix import RunSpec
from benchmark.experiment.metrics import compute_metrics
from benchmark.experiment.store import DataIdentity, FitSummary, RunRecord, TeacherProvenance, TestScores, now


@dataclass(frozen=True)
class CohortShipment:
    """The driver's prepared cohort for its workers, content-addressed: a file beside the image cache, or its bytes
    (`payload`) where workers may run on other machines (Ray)."""

    digest: str
    path: str
    payload: bytes | None = field(default=None, repr=False, compare=False)

    def with_payload(self) -> CohortShipment:
        """The same shipment carrying its bytes, for workers that may not see this machine's cache."""
        return CohortShipment(self.digest, self.path, _read_shipment(Path(self.path)))

    def load(self) -> PreparedData:
        """The prepared cohort, checked to be the driver's (same sha256)."""
        data = self.payload if self.payload is not None else _read_shipment(Path(self.path))
        if hashlib.sha256(data).hexdigest() != self.digest:
            raise StoreError(f"{self.path}: not the prepared cohort the driver shipped (sha256 differs)")
        return pickle.loads(data)  # noqa: S301 - our own file, its sha256 checked against the driver's


def _read_shipment(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: the driver's prepared cohort cannot be read: {describe_os_error(exc)}") from exc


def _save_sorted_set(pickler: pickle._Pickler, obj: set | frozenset) -> None:  # type: ignore[name-defined]
    try:
        members = sorted(obj)
    except TypeError:  # members that do not sort: as they come
        members = list(obj)
    pickler.save_reduce(type(obj), (members,), obj=obj)


class _SortedSets(pickle._Pickler):  # type: ignore[name-defined,misc]
    """A pickler that writes sets sorted. Pydantic keeps each model's set fields as a set of names, iterated in an
    order that follows the process's string hashing; sorted, the same cohort gives the same bytes in every run, and
    so one cache entry. (The C pickler writes sets without asking; its pure-Python twin dispatches on type.)"""

    dispatch = {**pickle._Pickler.dispatch, set: _save_sorted_set, frozenset: _save_sorted_set}  # type: ignore[attr-defined]


def ship_cohort(prepared: PreparedData, cache_root: Path) -> CohortShipment:
    """Write the prepared cohort once, named by its sha256, under `cache_root`/prepared, for the workers to load."""
    buffer = io.BytesIO()
    _SortedSets(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(prepared)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = cache_root / "prepared" / f"{digest}.pickle"
    if not path.is_file():
        write_atomically(path, data)
    return CohortShipment(digest, str(path))


@dataclass(frozen=True)
class WorkerContext:
    """What a worker needs to build the driver's engine: the shipped cohort, settings, caches and device."""

    cohort: CohortShipment
    settings: Settings
    cache_root: str | None
    teacher_root: str
    device: str
    threads: int
    code_version: str
    data: DataIdentity

    @property
    def key(self) -> str:
        """A string identifying everything in this context (pydantic fields are not hashable)."""
        return "|".join([self.cohort.digest, self.settings.model_dump_json(), str(self.cache_root), self.teacher_root,
                         self.device, str(self.threads), self.code_version, self.data.model_dump_json()])


@dataclass(frozen=True)
class JobResult:
    """The outcome of one job: a teacher trained, or a run's record (JSON); else its cause in one line (`error`,
    with the traceback in `trace`), or, when a file could not be written, why storing must stop."""

    kind: str
    run_id: str
    record_json: str | None = None
    error: str | None = None
    trace: str | None = None
    storage_error: str | None = None


def failure_line(exc: BaseException) -> str:
    """An exception as one line: its type and message, whitespace collapsed (the traceback goes to --debug)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def storage_stop(exc: OutputError) -> str:
    """Why storing stops, in words: 'no space left on FOLDER' for a full disk, else the write error itself."""
    return f"no space left on {exc.path.parent}" if exc.no_space else str(exc)


_ENGINES: OrderedDict[str, object] = OrderedDict()  # this process's engines, most recently used last
_MAX_ENGINES = 16  # a power study interleaves many small cohorts; keep their engines warm


def data_identity(prepared: PreparedData) -> DataIdentity:
    """The data hashes of a prepared cohort."""
    cohort = prepared.cohort
    return DataIdentity(location=cohort.source.path, metadata_sha256=cohort.metadata_sha256,
                        image_list_sha256=cohort.image_list_sha256, source=cohort.source.kind)


def ensure_worker(context: WorkerContext) -> object:
    """This process's engine for `context`, built on first use and kept (workers are reused across jobs)."""
    if context.key in _ENGINES:
        _ENGINES.move_to_end(context.key)
        return _ENGINES[context.key]
    import torch

    from benchmark.experiment.study import build_engine

    torch.set_num_threads(context.threads)
    if context.device != "cpu":  # deterministic cuDNN/cuBLAS kernels: same run, same predictions on one GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    engine = build_engine(context.cohort.load(), context.settings, image_cache(context.settings, context.cache_root),
                          context.teacher_root, context.device)
    _ENGINES[context.key] = engine
    while len(_ENGINES) > _MAX_ENGINES:
        _ENGINES.popitem(last=False)
    return engine


PARENT_POLL_SECONDS = 0.5  # how often a worker checks that the driver that started it is still alive


def start_worker(parent: int, warm: WorkerContext | None = None) -> None:
    """A worker process's start: exit as soon as the driver `parent` is gone (killed with -9, no clean shutdown),
    so no orphan keeps its memory and CPUs; then warm the engine of `warm`, if given. A warm-up that fails is left
    to the first job, which meets the same error and returns it as itself (an initializer that raises would break
    the pool: every job would fail with a bare BrokenProcessPool)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="ctxray-parent-watch", daemon=True).start()
    if warm is not None:
        try:
            ensure_worker(warm)
        except Exception:  # noqa: BLE001, S110 - raised again, with its cause, by the first job's ensure_worker
            pass


def run_job(context: WorkerContext, kind: str, specs: tuple[RunSpec, ...]) -> list[JobResult]:
    """Train the teachers `specs` need (kind 'teacher') or execute `specs` (kind 'run'; together where the engine's
    path stacks them). A failure is returned per run with its id, never raised."""
    engine = ensure_worker(context)
    try:
        if kind == "teacher":
            engine.teachers.get_many([engine.teacher_request(s.configuration, s.split)  # type: ignore[attr-defined]
                                      for s in specs], engine.bank, engine.device,  # type: ignore[attr-defined]
                                     engine.path)  # type: ignore[attr-defined]
            return [JobResult(kind, spec.run_id) for spec in specs]
        outputs = engine.run_many([(s.configuration, s.split, s.seed) for s in specs])  # type: ignore[attr-defined]
        return [JobResult(kind, spec.run_id, record_json=run_record(spec, output, engine, context).model_dump_json())
                for spec, output in zip(specs, outputs, strict=True)]
    except OutputError as exc:  # a teacher or record could not be written: storing stops, for every job
        return [JobResult(kind, spec.run_id, storage_error=storage_stop(exc)) for spec in specs]
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the others; reported with its id
        if kind == "run" and len(specs) > 1:  # a group failed: run each alone so that one bad run names itself
            return [result for spec in specs for result in run_job(context, kind, (spec,))]
        return [JobResult(kind, spec.run_id, error=failure_line(exc), trace=traceback.format_exc(limit=8))
                for spec in specs]


def run_record(spec: RunSpec, output: object, engine: object, context: WorkerContext) -> RunRecord:
    """The record of one executed run (no I/O)."""
    import torch

    fitted = output.fitted  # type: ignore[attr-defined]
    teacher = None
    if fitted.teacher is not None:
        t = fitted.teacher
        teacher = TeacherProvenance(teacher_id=t.teacher_id, modality=t.modality, seed=t.seed,
                                    training_patients=list(t.training_patients), training_images=t.training_images,
                                    steps=t.steps, train_seconds=t.train_seconds, path=t.path,
                                    validation_predictions=None if t.validation_predictions is None else
                                    list(t.validation_predictions))
    train_images = len(engine.prepared.manifests[spec.configuration.manifest]  # type: ignore[attr-defined]
                       .records_of(spec.split.train_patients))
    return RunRecord(
        spec=spec, val_hash=spec.split.val_hash, train_patients=list(fitted.train_patients), data=context.data,
        code_version=context.code_version, torch_version=torch.__version__,
        device=str(engine.device), threads=torch.get_num_threads(), teacher=teacher,  # type: ignore[attr-defined]
        training_path=fitted.path,
        fit=FitSummary(steps=fitted.fit_log.steps, epochs=fitted.fit_log.epochs, train_images=train_images,
                       seconds=fitted.fit_log.seconds, epoch_terms=fitted.fit_log.epoch_terms),
        timings=output.seconds, predictions=output.predictions,  # type: ignore[attr-defined]
        metrics=compute_metrics(output.predictions), deployment_probe=output.probe,  # type: ignore[attr-defined]
        tests={name: TestScores(predictions=scored.predictions, metrics=compute_metrics(scored.predictions),
                                probe=scored.probe)
               for name, scored in output.tests.items()},  # type: ignore[attr-defined]
        finished_at=now())
