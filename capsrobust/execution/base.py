"""The executor interface and the one that runs jobs in this process, in order.

Why an interface of our own over Ray's: a sweep must give the same tables whoever runs its cells, so the sweep
code talks to one small contract (share data once, run jobs, hand back each result to the caller, report
failures) and the engine behind it is a choice of the command line, not of the code.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from capsrobust.errors import CapsRobustError

log = logging.getLogger(__name__)

T = TypeVar("T")


class ExecutionError(CapsRobustError):
    """Jobs cannot run where asked: Ray missing or unreachable, a resource request no node can meet, bad workers."""


@dataclass(frozen=True)
class Job:
    """One unit of work. Jobs of one ``group`` share what ``Workload.setup`` builds (a model, a data set).

    A free worker takes the pending job of lowest ``priority`` first (a cascade's smaller budgets before larger
    ones, so that a stopped sweep has whole budgets done); among equals one of a group it holds, else the earliest
    submitted (``next_job``).
    """

    key: str
    group: str
    payload: Any
    priority: int = 0


@dataclass(frozen=True)
class Failure:
    """A job that raised on every attempt; the caller reports it and goes on with the rest."""

    job: Job
    error: str
    attempts: int


class Workload(Protocol):
    """What workers do: build a group's state once (``setup``), then ``run`` each of the group's jobs with it.

    A workload is pickled and shipped to every worker once, so it holds ``Shared`` handles, not large data.
    ``uses_gpu`` asks the executor for a GPU share per job.
    """

    uses_gpu: bool

    def setup(self, group: str) -> Any: ...

    def run(self, state: Any, payload: Any) -> Any: ...


class Shared(ABC, Generic[T]):
    """A handle to data put where every worker can read it once (the object store on Ray, memory here)."""

    @abstractmethod
    def get(self) -> T: ...


@dataclass(frozen=True)
class _InMemory(Shared[T]):
    value: T

    def get(self) -> T:
        return self.value


OnResult = Callable[[Job, Any], "Sequence[Job] | None"]


class Executor(ABC):
    """Runs jobs and calls ``on_result`` in the caller's process as each finishes (in any order); the jobs
    ``on_result`` returns (work that waited for this one, such as the next cell of a cascade's chain) join the
    pending ones, so dependent work starts as soon as what it needs is there, without a barrier between stages.

    A job that raises a ``CapsRobustError`` (bad input: the same on every try) stops the run with that error;
    any other exception, or a worker that dies, is retried ``retries`` times and then returned as a ``Failure``
    while the other jobs go on.
    """

    retries: int = 1

    def share(self, value: T) -> Shared[T]:
        return _InMemory(value)

    @abstractmethod
    def run(self, workload: Workload, jobs: Sequence[Job], on_result: OnResult) -> list[Failure]: ...

    def start(self) -> None:  # noqa: B027 (most executors have nothing to start)
        """Reach the workers (join or start a Ray cluster); called before anything is written, so that a cluster
        that is not there fails the command with nothing half-made. ``run`` starts it too; idempotent."""

    def close(self) -> None:  # noqa: B027 (most executors start nothing)
        """Release what the executor started (a local Ray instance); idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Jobs in this process, in the given order, keeping only the current group's state (one model at a time)."""

    def __init__(self, retries: int = 1) -> None:
        if retries < 0:
            raise ExecutionError(f"retries must be ≥ 0, got {retries}")
        self.retries = retries

    def run(self, workload: Workload, jobs: Sequence[Job], on_result: OnResult) -> list[Failure]:
        failures: list[Failure] = []
        group, state = None, None
        pending = list(jobs)
        while pending:
            job = pending.pop(next_job(pending, [group] if group is not None else []))
            for attempt in range(1, self.retries + 2):
                try:
                    if job.group != group:
                        group, state = None, None  # free the previous model before loading the next
                        state, group = workload.setup(job.group), job.group
                    result = workload.run(state, job.payload)
                except CapsRobustError:
                    raise
                except Exception as error:
                    group, state = None, None  # build the state afresh: the failure may have damaged it
                    log.warning("job %s failed (attempt %d of %d): %s", job.key, attempt, self.retries + 1,
                                describe_error(error))
                    if attempt > self.retries:
                        failures.append(Failure(job, describe_error(error), attempt))
                    continue
                pending.extend(on_result(job, result) or ())
                break
        return failures


def next_job(pending: Sequence[Job], groups: Sequence[str]) -> int:
    """Where in ``pending`` the job a free worker holding ``groups`` takes next is: the lowest priority, and among
    those the first of a group the worker holds (its state is built already), else the first."""
    lowest = min(job.priority for job in pending)
    candidates = [index for index, job in enumerate(pending) if job.priority == lowest]
    return next((index for index in candidates if pending[index].group in groups), candidates[0])


def describe_error(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
