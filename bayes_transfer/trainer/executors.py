"""Where jobs run: in this process, in a local process pool, or on a Ray cluster.

All three share one small interface (``submit``, ``wait``, ``share``, ``close``) so that the
grid runner's scheduling loop is written once. Jobs are pure functions of their arguments
(:func:`bayes_transfer.trainer.training.run_job`), and results (rows and checkpoint bytes) come
back to the driver, which alone writes files: no shared filesystem is needed on Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from pathlib import Path
from typing import Any, Protocol

import torch

from bayes_transfer.trainer.training import Job, JobResult, run_job

EXECUTORS = ("local", "serial", "ray")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(executor: str) -> int:
    """One worker per core on CPU (tiny models scale better across processes than across
    threads); one worker per GPU when there is one."""
    if executor == "serial":
        return 1
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return available_cores()


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker, so that workers x threads <= cores."""
    return max(1, available_cores() // max(1, workers))


class Executor(Protocol):
    def submit(self, job: Job, init: Any = None, trained: Any = None) -> Any: ...

    def wait(self, handles: list[Any]) -> tuple[list[tuple[Any, JobResult]], list[Any]]: ...

    def share(self, checkpoint: Path) -> Any: ...

    def close(self) -> None: ...


class _Pending:
    """A handle (hashable by identity) to a job that runs when it is waited for."""

    def __init__(self, job: Job, init: Any, trained: Any) -> None:
        self.job, self.init, self.trained = job, init, trained


class SerialExecutor:
    """Run jobs in this process, one per ``wait``: simplest, for debugging.

    A job runs when it is waited for, not when it is submitted, so that the driver saves
    each run (checkpoint and rows) as it ends: a kill loses only the job it interrupts.
    """

    def submit(self, job: Job, init: Any = None, trained: Any = None) -> Any:
        return _Pending(job, init, trained)

    def wait(self, handles: list[Any]) -> tuple[list[tuple[Any, JobResult]], list[Any]]:
        first = handles[0]
        return [(first, run_job(first.job, first.init, first.trained))], list(handles[1:])

    def share(self, checkpoint: Path) -> Any:
        return str(checkpoint)

    def close(self) -> None:
        pass


class LocalExecutor:
    """A pool of ``workers`` processes (spawn: safe with torch and threads)."""

    def __init__(self, workers: int) -> None:
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, job: Job, init: Any = None, trained: Any = None) -> Any:
        return self.pool.submit(run_job, job, init, trained)

    def wait(self, handles: list[Any]) -> tuple[list[tuple[Any, JobResult]], list[Any]]:
        done, pending = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [(h, h.result()) for h in done], list(pending)

    def share(self, checkpoint: Path) -> Any:
        # Workers see the driver's filesystem: pass the path, not the bytes.
        return str(checkpoint)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks, on a cluster at ``address`` or on a local Ray instance.

    Checkpoints travel through Ray's object store (``ray.put`` once per checkpoint), so the
    workers need no access to the driver's disk.
    """

    def __init__(self, workers: int | None, threads: int, address: str | None = None) -> None:
        import ray  # only here: Ray is an optional dependency

        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = workers * threads if workers else None
            ray.init(address=address, **kwargs)
        gpus = 1 if torch.cuda.is_available() else 0
        self.remote_run = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=1)(run_job)

    def submit(self, job: Job, init: Any = None, trained: Any = None) -> Any:
        return self.remote_run.remote(job, init, trained)

    def wait(self, handles: list[Any]) -> tuple[list[tuple[Any, JobResult]], list[Any]]:
        done, pending = self.ray.wait(handles, num_returns=1)
        return [(h, self.ray.get(h)) for h in done], pending

    def share(self, checkpoint: Path) -> Any:
        return self.ray.put(checkpoint.read_bytes())

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(
    name: str, workers: int, threads: int, address: str | None = None
) -> Executor:
    """The executor called ``name`` (one of :data:`EXECUTORS`)."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "serial":
        return SerialExecutor()
    if name == "ray":
        return RayExecutor(workers, threads, address)
    raise ValueError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
