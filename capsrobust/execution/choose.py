"""The executor a command line asks for, by name; Ray is imported only when it is the one asked for."""

from __future__ import annotations

from capsrobust.execution.base import ExecutionError, Executor, LocalExecutor

EXECUTOR_CHOICES = ("local", "ray")
RAY_MISSING = "--executor ray needs Ray: pip install 'capsrobust[ray]'"


def make_executor(
    name: str = "local", *, address: str | None = None, retries: int = 1, task_cpus: float = 1.0,
    task_gpus: float | None = None, workers: int | None = None,
) -> Executor:
    """The executor called ``name``: ``local``, or ``ray`` (on the cluster at ``address``; None starts one here).

    ``task_cpus`` and ``task_gpus`` are each job's resource request on Ray (``task_gpus`` None: a quarter of a
    GPU when the work runs on CUDA, none otherwise); ``workers`` caps the number of Ray workers.
    """
    if name == "local":
        if address is not None:
            raise ExecutionError("--ray-address needs --executor ray")
        return LocalExecutor(retries)
    if name != "ray":
        raise ExecutionError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTOR_CHOICES)}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ExecutionError(RAY_MISSING) from None
    from capsrobust.execution.ray_executor import RayExecutor, RaySettings

    return RayExecutor(RaySettings(address=address, retries=retries, task_cpus=task_cpus, task_gpus=task_gpus,
                                   workers=workers))
