"""Where jobs run: local worker processes, or Ray tasks on a local or remote Ray cluster.

Both hand back futures of each job's results, so scheduling is one; workers only return records, so a retry is safe."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from typing import Protocol

from benchmark.errors import ConfigError
from benchmark.experiment.matrix import RunSpec
from benchmark.experiment.worker import JobResult, WorkerContext, run_job, start_worker


class Executor(Protocol):
    """Runs jobs somewhere and hands back futures."""

    def submit(self, context: WorkerContext, kind: str, specs: tuple[RunSpec, ...]) -> Future[list[JobResult]]:
        """Start one job on `context`'s data: 'teacher' (train the teachers `specs` need) or 'run' (execute them)."""
        ...

    def shutdown(self) -> None:
        """Release the workers."""
        ...


class LocalExecutor:
    """A pool of spawned worker processes on this machine, each with its own engine."""

    def __init__(self, workers: int, warm: WorkerContext | None = None) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=start_worker, initargs=(os.getpid(), warm))

    def submit(self, context: WorkerContext, kind: str, specs: tuple[RunSpec, ...]) -> Future[list[JobResult]]:
        """Queue a job on the pool."""
        return self._pool.submit(run_job, context, kind, specs)

    def shutdown(self) -> None:
        """Wait for the workers to exit."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks (CPUs per task = the worker thread count, one GPU each with --device cuda), retried on death."""

    def __init__(self, address: str | None, *, threads: int, device: str, num_cpus: int | None = None,
                 max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--executor ray needs Ray: pip install 'ctxray-bench[ray]'") from exc
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        gpus = 1 if device == "cuda" else 0
        self._contexts: dict[str, object] = {}
        self._task = ray.remote(run_job).options(num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                                                 retry_exceptions=False)

    def submit(self, context: WorkerContext, kind: str, specs: tuple[RunSpec, ...]) -> Future[list[JobResult]]:
        """Submit a Ray task; its ObjectRef as a future (each context is put in the object store once)."""
        if context.key not in self._contexts:  # its cohort travels with it: a node may not see this machine's cache
            self._contexts[context.key] = self._ray.put(replace(context, cohort=context.cohort.with_payload()))
        return self._task.remote(self._contexts[context.key], kind, specs).future()

    def shutdown(self) -> None:
        """Disconnect from (or stop) the Ray cluster this executor started."""
        if self._started_here:
            self._ray.shutdown()
