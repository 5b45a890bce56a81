"""Scheduling: planners turn a batch's runs into jobs and their dependencies; a sink stores what comes back.

Teachers train first, each once; a record is written as it arrives, so a killed study loses only the jobs in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from enum import StrEnum

from benchmark.config import TrainingPath
from benchmark.errors import OutputError
from benchmark.experiment.executors import Executor
from benchmark.experiment.matrix import RunSpec
from benchmark.experiment.store import ResultsStore, RunRecord
from benchmark.experiment.worker import JobResult, WorkerContext, failure_line, storage_stop


class JobKind(StrEnum):
    """What a worker does with a job's runs: train the teachers they need, or execute them."""

    TEACHER = "teacher"
    RUN = "run"


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: its runs, and the teacher job (by key) it must wait for, if any."""

    kind: JobKind
    key: str
    specs: tuple[RunSpec, ...]
    after: str | None = None


@dataclass
class Batch:
    """One store's remaining work: the context its workers use and the runs still to do."""

    context: WorkerContext
    store: ResultsStore
    todo: list[RunSpec]


def cost(spec: RunSpec) -> float:
    """Rough relative cost for scheduling: epochs x width of the network."""
    return spec.configuration.training.epochs * spec.configuration.network.widths[-1] * (
        20 if spec.configuration.manifest == "all-xray" else 1)


def label(spec: RunSpec) -> str:
    """How a failure names its run: configuration, split and seed."""
    return f"{spec.name} ({spec.split.split_id}, seed {spec.seed})"


def teacher_key(spec: RunSpec) -> str:
    """The teacher a distilling run needs: its teacher configuration, validation set and split seed."""
    assert spec.configuration.teacher is not None
    return spec.configuration.teacher.model_dump_json() + "|" + spec.split.val_hash + f"|{spec.split.seed}"


def plan_per_run(todo: Sequence[RunSpec]) -> list[Job]:
    """Each distinct teacher one job (X-ray teachers first), each run one job, costliest first; a distilling run
    waits for its teacher's job."""
    costliest_first = sorted(todo, key=cost, reverse=True)
    groups: dict[str, list[RunSpec]] = {}
    for spec in costliest_first:
        if spec.configuration.teacher is not None:
            groups.setdefault(teacher_key(spec), []).append(spec)
    ordered = sorted(groups.items(), key=lambda item: item[1][0].configuration.teacher.modality != "xray")  # type: ignore[union-attr]
    jobs = [Job(JobKind.TEACHER, key, (group[0],)) for key, group in ordered]
    jobs += [Job(JobKind.RUN, spec.run_id, (spec,), after=key) for key, group in ordered for spec in group]
    return jobs + [Job(JobKind.RUN, s.run_id, (s,)) for s in costliest_first if s.configuration.teacher is None]


STACKED_JOB_RUNS = 64  # most runs in one stacked job: large enough to batch, small enough to spread over workers


def plan_stacked(todo: Sequence[RunSpec]) -> list[Job]:
    """Runs grouped by network and training schedule (the worker trains their teachers, then stacks the runs whose
    training sets also match), in chunks of at most STACKED_JOB_RUNS, costliest group first."""
    groups: dict[str, list[RunSpec]] = {}
    for spec in todo:
        key = spec.configuration.network.model_dump_json() + spec.configuration.training.model_dump_json()
        groups.setdefault(key, []).append(spec)
    ordered = sorted(groups.values(), key=lambda group: cost(group[0]), reverse=True)
    chunks = [tuple(group[i:i + STACKED_JOB_RUNS]) for group in ordered for i in range(0, len(group), STACKED_JOB_RUNS)]
    return [Job(JobKind.RUN, chunk[0].run_id, chunk) for chunk in chunks]


PLANNERS: dict[TrainingPath, Callable[[Sequence[RunSpec]], list[Job]]] = {
    TrainingPath.PER_RUN: plan_per_run, TrainingPath.STACKED: plan_stacked}


@dataclass
class BatchOutcome:
    """What `execute_batches` did: runs stored, failures by run id, and why storing stopped (if it did)."""

    executed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    storage_error: str | None = None
    traces: dict[str, str] = field(default_factory=dict)  # run id -> the worker's traceback of its failure (--debug)


class RecordSink:
    """Writes each finished run's record to its store, once; after a write fails it stores nothing more, and every
    run not yet stored is a failure that says why."""

    def __init__(self, on_record: Callable[[int, RunRecord], None] | None) -> None:
        self.outcome = BatchOutcome()
        self._on_record = on_record

    @property
    def stopped(self) -> str | None:
        """Why storing stopped, or None."""
        return self.outcome.storage_error

    def stop(self, why: str) -> None:
        """Stop storing (the first cause is kept)."""
        if self.outcome.storage_error is None:
            self.outcome.storage_error = why

    def fail(self, spec: RunSpec, why: str) -> None:
        """Record a run's failure (the first cause is kept)."""
        self.outcome.failures.setdefault(spec.run_id, f"{label(spec)}: {why}")

    def take(self, number: int, store: ResultsStore, spec: RunSpec, result: JobResult | None,
             error: BaseException | None) -> None:
        """Store a run's record, or record why it has none."""
        if result is not None and result.record_json is not None and self.stopped is None:
            try:
                record = RunRecord.model_validate_json(result.record_json)
                store.write(record)
            except OutputError as exc:
                self.stop(storage_stop(exc))
            else:
                self.outcome.executed += 1
                if self._on_record is not None:
                    self._on_record(number, record)
                return
        if self.stopped is not None:
            self.fail(spec, f"not stored: {self.stopped}")
            return
        self.fail(spec, result.error if result is not None and result.error else
                  failure_line(error or Exception("no result")))
        if result is not None and result.trace:
            self.outcome.traces[spec.run_id] = result.trace


def execute_batches(batches: Iterable[Batch], executor: Executor, *, label: str, progress: bool,
                    on_record: Callable[[int, RunRecord], None] | None = None, ahead: int = 4) -> BatchOutcome:
    """Run every job the planners make of all batches, each once its teacher exists, and store records as they
    arrive. Batches are taken as earlier work drains (fewer than `ahead` jobs pending), so a generator that prepares
    each batch overlaps that with training; `on_record(batch number, record)` sees each stored record."""
    from tqdm import tqdm

    sink = RecordSink(on_record)
    taken: list[Batch] = []
    source = iter(batches)
    waiting: dict[tuple[int, str], list[Job]] = {}
    pending: dict[Future, tuple[int, Job]] = {}
    teachers = {"done": 0, "total": 0}
    bar = tqdm(total=0, desc=label, unit="run", disable=not progress, dynamic_ncols=True)

    def submit(number: int, job: Job) -> None:
        """Hand a job of batch `number` to the executor."""
        pending[executor.submit(taken[number].context, job.kind, job.specs)] = (number, job)

    def fail(spec: RunSpec, why: str) -> None:
        """A run that will not run: the sink says why, the bar counts it."""
        sink.fail(spec, why)
        bar.update(1)

    def take_next() -> bool:
        """Plan the next batch: submit its free jobs, hold the others for their teacher; False when none is left."""
        batch = next(source, None)
        if batch is None:
            return False
        taken.append(batch)
        bar.total += len(batch.todo)
        bar.refresh()
        for job in PLANNERS[batch.context.settings.engine.path](batch.todo):
            if job.after is not None:
                waiting.setdefault((len(taken) - 1, job.after), []).append(job)
            else:
                teachers["total"] += job.kind == JobKind.TEACHER
                submit(len(taken) - 1, job)
        if teachers["total"]:
            bar.set_postfix_str(f"teachers {teachers['done']}/{teachers['total']}")
        return True

    def finished(number: int, job: Job, results: dict[str, JobResult], error: BaseException | None) -> None:
        """A teacher job releases (or fails) the runs waiting for it; a run job's records go to the sink."""
        if job.kind == JobKind.TEACHER:
            teachers["done"] += 1
            result = results.get(job.specs[0].run_id)
            cause = failure_line(error) if error is not None else result.error if result is not None else None
            for dependent in waiting.pop((number, job.key)):
                if sink.stopped is not None:
                    fail(dependent.specs[0], f"not run: storing stopped ({sink.stopped})")
                elif cause is None:
                    submit(number, dependent)
                else:
                    fail(dependent.specs[0], f"its teacher failed to train: {cause}")
            bar.set_postfix_str(f"teachers {teachers['done']}/{teachers['total']}")
            return
        for spec in job.specs:
            bar.update(1)
            sink.take(number, taken[number].store, spec, results.get(spec.run_id), error)

    more = True
    try:
        while (more or pending) and sink.stopped is None:
            while more and len(pending) < ahead:
                more = take_next()
            if not pending:
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                number, job = pending.pop(future)
                error = future.exception()
                results = {r.run_id: r for r in future.result()} if error is None else {}
                stopped = next((r.storage_error for r in results.values() if r.storage_error), None)
                if stopped is not None:
                    sink.stop(stopped)
                finished(number, job, results, error)
    finally:
        bar.close()
    if sink.stopped is not None:
        _fail_the_rest(sink, pending, waiting, batches, len(taken))
    return sink.outcome


def _fail_the_rest(sink: RecordSink, pending: dict[Future, tuple[int, Job]],
                   waiting: dict[tuple[int, str], list[Job]], batches: Iterable[Batch], started: int) -> None:
    """After storing stopped: cancel what is pending, and list every run not stored as not run (a generator's
    batches not yet taken are not prepared at all, so they are not listed)."""
    why = f"not run: storing stopped ({sink.stopped})"
    for future, (number, job) in pending.items():
        future.cancel()
        for spec in [s for d in waiting.get((number, job.key), []) for s in d.specs] \
                if job.kind == JobKind.TEACHER else job.specs:
            sink.fail(spec, why)
    for batch in batches[started:] if isinstance(batches, Sequence) else []:
        for spec in batch.todo:
            sink.fail(spec, why)
