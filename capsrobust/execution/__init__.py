"""Execution: where a batch of independent jobs (sweep cells, training runs) runs, in this process or on Ray.

A caller describes its work as ``Job``s and a ``Workload`` (what a worker builds once per group of jobs, such as
a loaded model, and what it does per job) and hands them to an ``Executor``; results come back to the caller's
process one job at a time, so that only the caller writes files. ``LocalExecutor`` runs the jobs here, in order;
``RayExecutor`` (``capsrobust[ray]``, imported only when asked for) runs them on a Ray cluster. Nothing here knows
about attacks or training: sweeps and training import this package, never the reverse.
"""

from capsrobust.execution.base import ExecutionError, Executor, Failure, Job, LocalExecutor, Shared, Workload
from capsrobust.execution.choose import EXECUTOR_CHOICES, make_executor

__all__ = [
    "EXECUTOR_CHOICES", "ExecutionError", "Executor", "Failure", "Job", "LocalExecutor", "Shared", "Workload",
    "make_executor",
]
