"""Executors without Ray: the local executor's order, retries and failures, and the one line when Ray is missing."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner

from capsrobust.cli import main
from capsrobust.errors import CapsRobustError
from capsrobust.execution import ExecutionError, Job, LocalExecutor, make_executor


@dataclass
class Flaky:
    """Fails a job's first ``failures[key]`` tries; records every setup and try."""

    failures: dict[str, int]
    uses_gpu: bool = False
    setups: list[str] = field(default_factory=list)
    tries: list[str] = field(default_factory=list)

    def setup(self, group: str) -> str:
        self.setups.append(group)
        return group.upper()

    def run(self, state: str, payload: str) -> str:
        self.tries.append(payload)
        if payload == "bad-input":
            raise CapsRobustError("bad input; fix it")
        if self.tries.count(payload) <= self.failures.get(payload, 0):
            raise RuntimeError(f"{payload} broke\nsecond line")
        return f"{state}:{payload}"


def jobs(*specs: tuple[str, str]) -> list[Job]:
    return [Job(payload, group, payload) for group, payload in specs]


def test_local_executor_runs_in_order_builds_each_group_once_and_retries():
    work, results = Flaky({"b": 1}), []
    failures = LocalExecutor(retries=1).run(work, jobs(("m1", "a"), ("m1", "b"), ("m2", "c")),
                                            lambda job, result: results.append(result))
    assert failures == []
    assert results == ["M1:a", "M1:b", "M2:c"]
    assert work.tries == ["a", "b", "b", "c"]
    assert work.setups == ["m1", "m1", "m2"]  # a failed try rebuilds its group's state


def test_a_job_failing_every_try_is_returned_and_the_others_go_on():
    work, results = Flaky({"a": 5}), []
    failures = LocalExecutor(retries=2).run(work, jobs(("m1", "a"), ("m1", "b")),
                                            lambda job, result: results.append(result))
    assert results == ["M1:b"]
    (failure,) = failures
    assert (failure.job.key, failure.attempts, failure.error) == ("a", 3, "RuntimeError: a broke")


def test_jobs_a_result_hands_back_run_next_lowest_priority_first():
    """What a finished job returns (a cascade's next cell) joins the queue; a free worker takes the lowest priority,
    then a job of the group it holds, then the earliest."""
    work, order = Flaky({}), []
    follow = {"a": [Job("a2", "m1", "a2", priority=1)], "c": [Job("c2", "m2", "c2", priority=0)]}

    def finished(job: Job, result: str) -> list[Job]:
        order.append(job.key)
        return follow.get(job.key, [])

    first = [Job("a", "m1", "a"), Job("b", "m2", "b", priority=2), Job("c", "m2", "c")]
    assert LocalExecutor().run(work, first, finished) == []
    assert order == ["a", "c", "c2", "a2", "b"]


def test_a_free_worker_prefers_the_lowest_priority_then_a_group_it_holds():
    from capsrobust.execution.base import next_job

    pending = [Job("x", "m1", "x", 1), Job("y", "m2", "y", 0), Job("z", "m3", "z", 0)]
    assert next_job(pending, []) == 1  # lowest priority, earliest
    assert next_job(pending, ["m3"]) == 2  # lowest priority, held group
    assert next_job(pending, ["m1"]) == 1  # a held group never beats a lower priority


def test_bad_input_stops_at_once_with_its_own_error():
    work = Flaky({})
    with pytest.raises(CapsRobustError, match="bad input"):
        LocalExecutor(retries=3).run(work, jobs(("m1", "bad-input"), ("m1", "b")), lambda job, result: None)
    assert work.tries == ["bad-input"]


def test_asking_for_ray_without_ray_is_one_line_naming_the_extra(monkeypatch, trained_runs, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ExecutionError, match=r"^--executor ray needs Ray: pip install 'capsrobust\[ray\]'$"):
        make_executor("ray")
    with pytest.raises(ExecutionError, match="--ray-address needs --executor ray"):
        make_executor("local", address="127.0.0.1:6379")
    result = CliRunner().invoke(main, ["sweep", str(trained_runs["cnn-tiny"]), "--suite", "tiny", "--out",
                                       str(tmp_path / "out"), "--device", "cpu", "--executor", "ray"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --executor ray needs Ray: pip install 'capsrobust[ray]'"
    assert not (tmp_path / "out").exists()


def test_cli_train_with_several_seeds_writes_one_run_per_seed(tmp_path):
    out = tmp_path / "cnn"
    result = CliRunner().invoke(main, ["train", "cnn-tiny", "--epochs", "1", "--seeds", "3,4", "--out", str(out),
                                       "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    for seed in (3, 4):
        run = tmp_path / f"cnn-s{seed}"
        assert json.loads((run / "best.json").read_text(encoding="utf-8"))["seed"] == seed
        assert f"run in {run}" in result.output
    assert not out.exists() and not list(tmp_path.glob(".capsrobust-shared-*"))
