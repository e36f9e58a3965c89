"""Sweeps and training on a local Ray instance (2 CPUs, tiny models): the same tables as the local executor.

A worker killed mid-sweep is replaced and its cell retried; a cell failing every try is a ``failed`` check and the
sweep, resumed under the local executor, ends with the identical table; Ctrl-C leaves only finished cells. Ray
starts once for this module (a few seconds); every sweep here is small.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from capsrobust.attacks.suites import suite_from_dict
from capsrobust.evaluation.store import load_sweep
from capsrobust.evaluation.sweep import run_sweep
from capsrobust.execution import ExecutionError, Job, LocalExecutor
from capsrobust.models.checkpoints import read_metadata
from capsrobust.training import TrainJob, TrainSettings, train_runs
from tests.conftest import REPO, recipe

ray = pytest.importorskip("ray")
from capsrobust.execution.ray_executor import RayExecutor, RaySettings  # noqa: E402

pytestmark = pytest.mark.ray

SUITE = {
    "suite": {"name": "ray", "n": 10},
    "attack": [
        {"name": "fgsm", "eps": [0.0, 0.2]},
        {"name": "pgd-linf", "eps": [0.1, 0.3], "params": {"steps": 2}},
        {"name": "cw-l2", "eps": [1.0, 3.0], "params": {"binary_search_steps": 1, "max_iter": 3},
         "backends": ["foolbox"]},
    ],
}
VOLATILE = ["seconds", "command"]
# The executor's own tests (killed worker, failing cell, Ctrl-C) sweep with Foolbox only: each fresh actor then
# imports Foolbox (about 1 s) and not ART (about 3 s). ART cells on Ray are the cascade test's.


@pytest.fixture(scope="module", autouse=True)
def ray_instance(tmp_path_factory):
    """One local Ray instance with 2 CPUs, its files in a temporary folder, shut down after the module."""
    temp = tmp_path_factory.mktemp("ray")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # Workers import the code under test: they inherit PYTHONPATH from this process. (A runtime_env with the same
    # variable costs seconds an actor: Ray then starts a fresh worker for it instead of taking a prestarted one.)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", path)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
        yield
        ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def one_thread(trained_runs):
    """Every Ray task here computes with 1 torch thread (``task_cpus=1``); so do the local runs they are compared
    with: CPU float sums, hence the last bits of some results, depend on the thread count (docs/ray.md). Asks for
    the session's tiny runs first, so that they are trained as in every other test file."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(trained_runs):
    return [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]


@pytest.fixture(scope="module")
def local_tables(runs, mnist5k, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=out, backend="foolbox", device="cpu", progress=False,
              save_adversarials=True)
    return out, load_sweep(out)


class Sabotaging(RayExecutor):
    """Kills the actor that was just handed job number ``kill_at`` (or presses Ctrl-C then), once."""

    def __init__(self, settings: RaySettings, kill_at: int, interrupt: bool = False) -> None:
        super().__init__(settings)
        self.kill_at, self.interrupt, self.submitted, self.killed = kill_at, interrupt, 0, []
        self.handed: list[tuple[str, str]] = []  # (job key, actor id) in the order jobs were handed out

    def _submitted(self, job: Job, actor: object) -> None:
        self.submitted += 1
        self.handed.append((job.key, actor._actor_id.hex()))
        if self.submitted == self.kill_at:
            if self.interrupt:
                raise KeyboardInterrupt
            ray.kill(actor)
            self.killed.append(job.key)


def assert_same_tables(out: Path, expected: Path) -> None:
    got, want = load_sweep(out), load_sweep(expected)
    pd.testing.assert_frame_equal(got.results.drop(columns=VOLATILE), want.results.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(got.examples, want.examples)
    pd.testing.assert_frame_equal(got.checks, want.checks)
    for path in sorted((expected / "cells").iterdir()):
        if path.suffix == ".csv":  # per-example outcomes, bit for bit
            assert (out / "cells" / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_ray_sweep_with_a_worker_killed_midway_ends_with_the_local_table(runs, mnist5k, tmp_path, local_tables):
    """The killed cell is retried by the other actor while a replacement starts, and the tables are the local ones."""
    expected, _ = local_tables
    executor = Sabotaging(RaySettings(retries=1), kill_at=2)
    run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=tmp_path, backend="foolbox", device="cpu",
              progress=False, save_adversarials=True, executor=executor)
    (killed,) = executor.killed
    tries = [actor for key, actor in executor.handed if key == killed]
    survivor = next(actor for key, actor in executor.handed if actor != tries[0])
    # the retry goes to the actor still alive, not to the queue of the replacement, which is busy importing torch
    assert len(tries) == 2 and tries[1] == survivor
    assert_same_tables(tmp_path, expected)
    for path in sorted((expected / "adversarials").iterdir()):
        assert (tmp_path / "adversarials" / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_cascade_with_transfer_on_ray_equals_the_local_one(runs, mnist5k, tmp_path):
    """Chains handed out cell by cell to two workers, and transfer adversarials crafted by whichever worker gets
    there first (the other reads them): the same tables, cell files and transfer files as one process in order."""
    from safetensors.torch import load_file

    from capsrobust.evaluation.sweep import model_label

    suite = suite_from_dict({"suite": {"name": "cascade-ray", "n": 16, "cascade": True}, "attack": [
        {"name": "fgsm", "eps": [0.0, 0.05, 0.1]},
        {"name": "pgd-linf", "eps": [0.05, 0.1], "params": {"steps": 3}},
        {"name": "pgd-linf", "label": "transfer", "eps": [0.05, 0.1], "transfer_from": [model_label(runs[1])],
         "params": {"steps": 3}}]})
    local, distributed = tmp_path / "local", tmp_path / "ray"
    run_sweep(runs, suite, mnist5k, out_dir=local, device="cpu", progress=False)
    run_sweep(runs, suite, mnist5k, out_dir=distributed, device="cpu", progress=False,
              executor=RayExecutor(RaySettings()))
    assert_same_tables(distributed, local)
    crafted = sorted(path.name for path in (local / "transfer").glob("*.safetensors"))
    assert len(crafted) == 2 and crafted == sorted(p.name for p in (distributed / "transfer").glob("*.safetensors"))
    for name in crafted:  # the same adversarials, bit for bit (the files differ in the seconds they record)
        assert torch.equal(load_file(distributed / "transfer" / name)["adversarials"],
                           load_file(local / "transfer" / name)["adversarials"])


def test_a_cell_failing_every_try_is_a_failed_check_and_the_sweep_resumes_on_local(
    runs, mnist5k, tmp_path, local_tables
):
    expected, tables = local_tables
    executor = Sabotaging(RaySettings(retries=0), kill_at=3)
    run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=tmp_path, backend="foolbox", device="cpu",
              progress=False, save_adversarials=True, executor=executor)
    (killed,) = executor.killed
    checks = load_sweep(tmp_path).checks
    failed = checks[checks["status"] == "failed"]
    assert len(failed) == 1 and checks.iloc[0]["status"] == "failed"  # failures first
    assert killed in failed.iloc[0]["detail"] and "worker died" in failed.iloc[0]["detail"]
    assert len(load_sweep(tmp_path).results) == len(tables.results) - 1  # the other cells went on
    run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=tmp_path, backend="foolbox", device="cpu",
              progress=False, save_adversarials=True, resume=True, executor=LocalExecutor())
    assert_same_tables(tmp_path, expected)


def test_ctrl_c_leaves_only_finished_cells_and_resumes_on_local(runs, mnist5k, tmp_path, local_tables):
    expected, tables = local_tables
    with pytest.raises(KeyboardInterrupt):
        run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=tmp_path, backend="foolbox", device="cpu",
                  progress=False, save_adversarials=True, executor=Sabotaging(RaySettings(), kill_at=4,
                                                                              interrupt=True))
    finished = {path.name.split(".")[0] for path in (tmp_path / "cells").glob("*.json")}
    assert len(finished) < len(tables.results)
    assert {path.name.split(".")[0] for path in (tmp_path / "cells").glob("*.examples.csv")} == finished
    assert not list(tmp_path.rglob(".*.tmp"))
    run_sweep(runs, suite_from_dict(SUITE), mnist5k, out_dir=tmp_path, backend="foolbox", device="cpu",
              progress=False, save_adversarials=True, resume=True)
    assert_same_tables(tmp_path, expected)


def test_training_seeds_as_ray_tasks_gives_the_weights_of_local_training(mnist_small, tmp_path):
    def jobs(folder: str) -> list[TrainJob]:
        # fp32 by name: a Ray worker is another process, where ``auto`` follows the CPU, not conftest's patch
        return [TrainJob(recipe("cnn-tiny"), tmp_path / folder / f"cnn-tiny-s{seed}",
                         TrainSettings(epochs=1, seed=seed, device="cpu", progress=False, precision="fp32"))
                for seed in (0, 1)]

    assert train_runs(jobs("ray"), mnist_small, RayExecutor(RaySettings(task_cpus=1))) == []
    assert train_runs(jobs("local"), mnist_small) == []
    for seed in (0, 1):
        weights = [read_metadata(tmp_path / folder / f"cnn-tiny-s{seed}" / "best")["weights_sha256"]
                   for folder in ("ray", "local")]
        assert weights[0] == weights[1]
    assert not list(tmp_path.rglob(".capsrobust-shared-*"))


@dataclass(frozen=True)
class Echo:
    uses_gpu: bool = False

    def setup(self, group: str) -> str:
        return group

    def run(self, state: str, payload: str) -> str:
        return payload


def test_bad_ray_settings_are_one_line_errors_not_hangs(tmp_path, monkeypatch):
    work, one = Echo(), [Job("a", "g", "a")]
    with pytest.raises(ExecutionError, match=r"no Ray node has 0 CPUs and 1 GPUs .*lower --task-cpus / --task-gpus"):
        RayExecutor(RaySettings(task_cpus=0, task_gpus=1)).run(work, one, lambda job, result: None)
    with pytest.raises(ExecutionError, match=r"no Ray node has 64 CPUs"):
        RayExecutor(RaySettings(task_cpus=64)).run(work, one, lambda job, result: None)
    with pytest.raises(ExecutionError, match=r"^no Ray cluster answers at 127.0.0.1:1 within 2 s .*ray start --head"):
        RayExecutor(RaySettings(address="127.0.0.1:1", connect_timeout_s=2)).connect()
    # a plugin whose imports a node lacks: here, one that fails inside any Ray worker
    plugin = tmp_path / "needs_lib.py"
    plugin.write_text("import ray\nif ray.get_runtime_context().get_actor_id():\n    import lib_only_on_the_driver\n",
                      encoding="utf-8")
    module = type(sys)("capsrobust_plugin_needs_lib_0")
    module.__file__ = str(plugin)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(ExecutionError, match=r"a Ray worker cannot load what the jobs need .*lib_only_on_the_driver"):
        RayExecutor(RaySettings()).run(work, one, lambda job, result: None)


class KillingAndBreaking(RayExecutor):
    """Kills the actor handed the first job, after making every later actor fail to start (a node lost its library)."""

    def __init__(self, settings: RaySettings, broken: Path) -> None:
        super().__init__(settings)
        self.broken = broken

    def _submitted(self, job: Job, actor: object) -> None:
        if not self.broken.exists():
            self.broken.touch()
            ray.kill(actor)


def test_when_no_worker_can_be_restarted_the_run_stops_in_one_line(tmp_path, monkeypatch):
    """The replacement of a killed actor fails to start: it leaves the pool, and with no actor left the run stops
    with one line instead of waiting forever."""
    broken = tmp_path / "broken"
    plugin = tmp_path / "breaks_later.py"
    plugin.write_text(f"import pathlib, ray\nif ray.get_runtime_context().get_actor_id() and "
                      f"pathlib.Path({str(broken)!r}).exists():\n    import lib_lost_on_this_node\n", encoding="utf-8")
    module = type(sys)("capsrobust_plugin_breaks_later_0")
    module.__file__ = str(plugin)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    jobs = [Job("a", "g", "a"), Job("b", "g", "b")]
    with pytest.raises(ExecutionError, match=r"^every Ray worker died and none could be restarted"):
        KillingAndBreaking(RaySettings(workers=1), broken).run(Echo(), jobs, lambda job, result: None)


@pytest.mark.parametrize("address", ["127.0.0.1:abc", "127.0.0.1:\u00b2", "127.0.0.1:99999", "127.0.0.1:0", ":6379"])
def test_a_ray_address_without_a_valid_port_is_one_line(address):
    with pytest.raises(ExecutionError, match=r"is not HOST:PORT"):
        RayExecutor(RaySettings(address=address, connect_timeout_s=2)).connect()


def test_an_address_where_something_else_listens_is_refused_within_seconds():
    """A web server (or anything not gRPC) on the port: refused by the probe, not after ray.init's minute of retries."""
    gcs = ray.get_runtime_context().gcs_address
    RayExecutor(RaySettings(address=gcs, connect_timeout_s=2)).connect()  # the real head passes
    for answer in (b"HTTP/1.1 400 Bad Request\r\n\r\n", None):  # a web server, then one that never answers
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            if answer is not None:
                threading.Thread(target=_answer_once, args=(server, answer), daemon=True).start()
            started = time.monotonic()
            with pytest.raises(ExecutionError, match=r"answers but is not a Ray head"):
                RayExecutor(RaySettings(address=f"127.0.0.1:{server.getsockname()[1]}", connect_timeout_s=2)).connect()
            assert time.monotonic() - started < 10


def _answer_once(server: socket.socket, answer: bytes) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(64)
        connection.sendall(answer)


def test_a_sweep_whose_ray_start_fails_leaves_no_folder_and_can_run_again(runs, mnist5k, tmp_path):
    out = tmp_path / "sweep"
    suite = suite_from_dict({"suite": {"name": "one", "n": 4}, "attack": [{"name": "fgsm", "eps": [0.1]}]},
                            source="one.toml")
    with pytest.raises(ExecutionError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"):
        run_sweep([runs[1]], suite, mnist5k, out_dir=out, backend="art", device="cpu", progress=False,
                  executor=RayExecutor(RaySettings(address="127.0.0.1:1", connect_timeout_s=1)))
    assert not out.exists()
    run_sweep([runs[1]], suite, mnist5k, out_dir=out, backend="art", device="cpu", progress=False)
    assert len(load_sweep(out).results) == 1
