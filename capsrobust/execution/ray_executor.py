"""Jobs on a Ray cluster: a pool of actors, each keeping the state of the groups it served (loaded models).

Why actors and not plain tasks: a sweep cell takes 0.1–50 s, loading a model can take as long, and the same model
serves dozens of cells. Each actor builds a group's state once (``Workload.setup``) and keeps it for the next jobs
of that group; the driver hands an idle actor a job of a group it already holds when there is one. The workload
(with ``Shared`` handles to the images and models in the object store) travels to each actor once.

Only the driver writes files: actors return results and the caller stores them, so stopping the driver (Ctrl-C
kills every actor) leaves exactly the jobs it had stored. Imported only when ``--executor ray`` is asked for.
"""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

import capsrobust
from capsrobust.errors import CapsRobustError
from capsrobust.execution.base import (
    ExecutionError,
    Executor,
    Failure,
    Job,
    OnResult,
    Shared,
    Workload,
    describe_error,
    next_job,
)
from capsrobust.plugins import PluginSource, install_plugin_source, load_entry_points, loaded_plugin_sources

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_GPU_FRACTION = 0.25  # four cells share a GPU unless --task-gpus says otherwise
GROUPS_PER_WORKER = 2  # states (models) an actor keeps; the driver sends it jobs of these first
UNLIMITED = 1 << 30
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # what an HTTP/2 (so gRPC) client sends first
HTTP2_EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # length 0, type SETTINGS, no flags, stream 0
HTTP2_SETTINGS_FRAME = 4  # the frame type byte (offset 3) of the server's first frame


@dataclass(frozen=True)
class RaySettings:
    """Where and how jobs run on Ray; ``address`` None starts a Ray instance on this machine."""

    address: str | None = None
    retries: int = 1
    task_cpus: float = 1.0
    task_gpus: float | None = None  # None: DEFAULT_GPU_FRACTION for GPU work, else 0
    workers: int | None = None  # None: as many as the cluster's resources fit
    connect_timeout_s: float = 15.0
    start_timeout_s: float = 180.0


@dataclass(frozen=True)
class _ObjectStore(Shared[T]):
    ref: Any  # ray.ObjectRef, nested in the workload so that Ray does not resolve it on the way

    def get(self) -> T:
        return ray.get(self.ref)


class _Worker:
    """One Ray actor: runs one job at a time and keeps the state of its last ``GROUPS_PER_WORKER`` groups."""

    def __init__(self) -> None:
        self.workload: Workload | None = None
        self.states: OrderedDict[str, Any] = OrderedDict()

    def ready(self, boxed_workload: list[Any], plugins: tuple[PluginSource, ...], threads: int) -> str:
        """Load the plugins and the workload; returns the node id (raises what a node lacks)."""
        torch.set_num_threads(threads)
        logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's success rate at INFO
        load_entry_points()
        for plugin in plugins:
            install_plugin_source(plugin)
        self.workload = ray.get(boxed_workload[0])
        return ray.get_runtime_context().get_node_id()

    def run(self, group: str, payload: Any) -> Any:
        if self.workload is None:
            raise RuntimeError("worker is not ready")
        if group in self.states:
            self.states.move_to_end(group)
        else:
            while len(self.states) >= GROUPS_PER_WORKER:
                self.states.popitem(last=False)
            self.states[group] = self.workload.setup(group)
        return self.workload.run(self.states[group], payload)


@dataclass
class _Slot:
    """An actor of the pool, the groups it holds, and while it starts, the reference its ``ready`` call resolves."""

    actor: Any
    groups: list[str]
    busy: bool = False
    starting: Any = None
    dead: bool = False


class RayExecutor(Executor):
    """Jobs as calls on a pool of Ray actors; see the module docstring."""

    def __init__(self, settings: RaySettings = RaySettings()) -> None:
        if settings.retries < 0:
            raise ExecutionError(f"retries must be ≥ 0, got {settings.retries}")
        if settings.task_cpus < 0 or (settings.task_gpus is not None and settings.task_gpus < 0):
            raise ExecutionError("--task-cpus and --task-gpus must be ≥ 0")
        if settings.workers is not None and settings.workers < 1:
            raise ExecutionError(f"workers must be ≥ 1, got {settings.workers}")
        self.settings = settings
        self.retries = settings.retries
        self._started = self._joined = False

    def share(self, value: T) -> Shared[T]:
        self.connect()
        try:
            return _ObjectStore(ray.put(value))
        except (TypeError, AttributeError, ValueError) as error:  # what pickle raises for what it cannot send
            raise ExecutionError(f"cannot send a {type(value).__name__} to Ray workers ({describe_error(error)}); "
                                 f"its classes must be picklable: define them in a module or a --plugin file") from None

    def start(self) -> None:
        self.connect()

    def connect(self) -> None:
        """Join the cluster at ``address`` (probed first, with a timeout) or start one here; idempotent."""
        if self._joined and ray.is_initialized():
            return
        address = self.settings.address
        if address and address != "auto":
            _probe(address, self.settings.connect_timeout_s)
        self._joined = True
        if ray.is_initialized():  # the caller joined a cluster already (tests start one per session)
            return
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = address or "a local instance"
            raise ExecutionError(f"cannot start or join Ray at {where} ({describe_error(error)}); start a cluster "
                                 f"with `ray start --head` or fix --ray-address") from None
        self._started = True

    def close(self) -> None:
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def run(self, workload: Workload, jobs: Sequence[Job], on_result: OnResult) -> list[Failure]:
        if not jobs:
            return []
        self.connect()
        cpus = self.settings.task_cpus
        gpus = self.settings.task_gpus
        if gpus is None:
            gpus = DEFAULT_GPU_FRACTION if workload.uses_gpu else 0.0
        if workload.uses_gpu and gpus == 0:
            raise ExecutionError("the work runs on CUDA but --task-gpus is 0; give each task a GPU share, e.g. 0.25")
        size = min(len(jobs), _capacity(cpus, gpus), self.settings.workers or UNLIMITED)
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0, "max_task_retries": 0}
        actor_class = ray.remote(_Worker).options(**options)
        boxed = [ray.put(workload)]  # in a list: the actor fetches it after loading the plugins it may need
        plugins = loaded_plugin_sources()
        threads = max(1, int(cpus))
        if not workload.uses_gpu and threads != torch.get_num_threads():
            log.warning("Ray tasks compute with %d torch thread(s), this process with %d: CPU results can differ from "
                        "a local run's in the last bits (docs/ray.md, Determinism)", threads, torch.get_num_threads())

        def start() -> tuple[_Slot, Any]:
            actor = actor_class.remote()
            return _Slot(actor, []), actor.ready.remote(boxed, plugins, threads)

        slots: list[_Slot] = []
        try:
            started = [start() for _ in range(size)]
            slots = [slot for slot, _ in started]
            self._await_ready([ready for _, ready in started])
            return self._loop(slots, [(job, 1) for job in jobs], on_result, start)
        finally:
            for slot in slots:  # also on Ctrl-C: running jobs stop, nothing of theirs is written
                ray.kill(slot.actor)

    def _await_ready(self, refs: list[Any]) -> None:
        timeout = self.settings.start_timeout_s
        try:
            ray.get(refs, timeout=timeout)
        except GetTimeoutError:
            raise ExecutionError(f"Ray workers did not start within {timeout:g} s: the cluster has no free "
                                 f"{self.settings.task_cpus:g} CPUs (and GPU share) per task; free some or lower "
                                 f"--task-cpus / --task-gpus") from None
        except RayTaskError as error:
            cause = error.cause if isinstance(error.cause, BaseException) else error
            raise ExecutionError(f"a Ray worker cannot load what the jobs need ({describe_error(cause)}); install "
                                 f"it on every node (plugin files travel, the libraries they import do not)") from None
        except RayError as error:
            raise ExecutionError(f"Ray workers failed to start ({describe_error(error)}); install capsrobust "
                                 f"{capsrobust.__version__} and its dependencies on every node") from None

    def _loop(self, slots: list[_Slot], pending: list[tuple[Job, int]], on_result: OnResult, start: Any) -> list[
            Failure]:
        """Hand jobs to idle actors until every job is stored or has failed every try.

        A dead actor is replaced at once, but the replacement gets no job before its ``ready`` returns: a retried or
        waiting job goes to whichever actor is free first instead of queueing behind seconds of imports, and a run
        whose other actors finish the work does not wait for the replacement at all.
        """
        failures: list[Failure] = []
        running: dict[Any, tuple[int, Job, int]] = {}
        starting: dict[Any, int] = {}
        while pending or running:
            for index, slot in enumerate(slots):
                if slot.busy or slot.dead or slot.starting is not None or not pending:
                    continue
                job, attempt = pending.pop(next_job([job for job, _ in pending], slot.groups))
                slot.busy = True
                slot.groups = [*(g for g in slot.groups if g != job.group), job.group][-GROUPS_PER_WORKER:]
                running[slot.actor.run.remote(job.group, job.payload)] = (index, job, attempt)
                self._submitted(job, slot.actor)
            if not running and not starting:
                raise ExecutionError("every Ray worker died and none could be restarted; check the cluster "
                                     "(`ray status`) and run the same command again to resume")
            (done,), _ = ray.wait([*running, *starting], num_returns=1)
            if done in starting:
                self._started_or_dropped(slots[starting.pop(done)], done)
                continue
            index, job, attempt = running.pop(done)
            slots[index].busy = False
            try:
                result = ray.get(done)
            except RayTaskError as error:
                cause = error.cause if isinstance(error.cause, BaseException) else error
                if isinstance(cause, CapsRobustError):
                    raise cause from None
                message = describe_error(cause)
            except RayActorError as error:
                message = f"its Ray worker died ({describe_error(error)})"
                ray.kill(slots[index].actor)
                slots[index], ready = start()
                slots[index].starting = ready
                starting[ready] = index
            else:
                pending.extend((following, 1) for following in on_result(job, result) or ())
                continue
            log.warning("job %s failed (attempt %d of %d): %s", job.key, attempt, self.retries + 1, message)
            if attempt > self.retries:
                failures.append(Failure(job, message, attempt))
            else:
                pending.insert(0, (job, attempt + 1))
        return failures

    @staticmethod
    def _started_or_dropped(slot: _Slot, ready: Any) -> None:
        """A replacement actor is ready for jobs, or (its node lost, say) leaves the pool with a warning."""
        slot.starting = None
        try:
            ray.get(ready)
        except RayError as error:
            log.warning("a replacement Ray worker failed to start (%s); going on without it", describe_error(error))
            ray.kill(slot.actor)
            slot.dead = True

    def _submitted(self, job: Job, actor: Any) -> None:
        """Called after each job is handed to an actor (tests kill the actor here to play a worker crash)."""


def _capacity(cpus: float, gpus: float) -> int:
    """How many tasks asking for ``cpus`` and ``gpus`` the cluster's live nodes fit at once (refuses zero)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]

    def fits(have: float, need: float) -> int:
        return UNLIMITED if need == 0 else int(have / need + 1e-9)

    total = sum(min(fits(node.get("CPU", 0.0), cpus), fits(node.get("GPU", 0.0), gpus)) for node in nodes)
    if total == 0:
        have = ray.cluster_resources()
        raise ExecutionError(f"no Ray node has {cpus:g} CPUs and {gpus:g} GPUs for one task (the cluster has "
                             f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs over {len(nodes)} nodes); "
                             f"lower --task-cpus / --task-gpus or add a node that has them")
    return total


def _probe(address: str, timeout: float) -> None:
    """Fail fast, in one line, unless a gRPC server answers at ``address`` (ray.init would retry for a minute).

    A Ray head's GCS (``HOST:6379``) and its client server (``ray://HOST:10001``) both speak gRPC over HTTP/2, whose
    servers open every connection with a SETTINGS frame (RFC 9113, 3.4). Something else on the port (a web server,
    a database) answers otherwise or not at all, and is refused here within ``timeout``.
    """
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ExecutionError(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.1:6379) or auto")
    try:
        connection = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as error:
        raise ExecutionError(f"no Ray cluster answers at {address} within {timeout:g} s ({error}); start one there "
                             f"with `ray start --head`, or leave --ray-address out to start one here") from None
    with connection:
        try:
            connection.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            header = _receive(connection, 9)
        except OSError:
            header = b""
    if len(header) < 9 or header[3] != HTTP2_SETTINGS_FRAME:
        raise ExecutionError(f"{address} answers but is not a Ray head (no gRPC server there); give the address "
                             f"`ray start --head` printed (HOST:6379, or ray://HOST:10001)")


def _receive(connection: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes, fewer when the peer closes (the socket's timeout bounds each wait)."""
    received = b""
    while len(received) < size:
        chunk = connection.recv(size - len(received))
        if not chunk:
            break
        received += chunk
    return received
