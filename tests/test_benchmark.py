"""The benchmark on the tiny profile: one stage per call when stopped, skipped when finished, the same report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from capsrobust.attacks.suites import load_suite
from capsrobust.benchmark import Stage, run_benchmark
from capsrobust.cli import main
from capsrobust.models.recipes import load_recipe
from capsrobust.profiles import PROFILES, BenchmarkError, get_profile

STAGES = [stage.value for stage in Stage]
VOLATILE = ["seconds", "train_seconds", "images_per_second", "attack_seconds"]


def files_under(root: Path) -> dict[str, tuple[int, str]]:
    """Modification time and content hash of every file below ``root`` but benchmark.json (rewritten per call)."""
    return {
        str(path.relative_to(root)): (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(root.rglob("*")) if path.is_file() and path.name != "benchmark.json"
    }


def mask_timings(markdown: str) -> str:
    """The Markdown with every cell of a column (or a field/value row) about seconds blanked out."""
    lines, columns = [], None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            columns = None
            lines.append(line)
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            columns = cells
        elif set(line) - set("|-"):
            cells = ["*" if "second" in column or "second" in cells[0] else cell
                     for column, cell in zip(columns, cells, strict=True)]
        lines.append("|".join(cells))
    return "\n".join(lines)


def run_tiny(root: Path, **options) -> object:
    return run_benchmark("tiny", out_dir=root / "bench", report_dir=root / "report", device="cpu", progress=False,
                         **options)  # the data set is loaded only by a stage that runs


def test_each_call_stopped_after_a_stage_runs_only_that_stage(tiny_benchmark):
    root, calls = tiny_benchmark
    for i, call in enumerate(calls):
        assert list(call.stages) == STAGES[: i + 1]
        assert call.stages[STAGES[i]] == "ran", call.stages
        assert set(list(call.stages.values())[:i]) <= {"skipped"}, call.stages
        assert call.finished == (i == len(STAGES) - 1)
    state = json.loads((root / "bench" / "benchmark.json").read_text(encoding="utf-8"))
    assert (state["profile"], state["data"], state["seed"], state["n"]) == ("tiny", "mnist-5k", 0, 20)
    assert set(state["stages"]) == set(STAGES)
    sweep = root / "bench" / "sweep"
    assert (sweep / "detection" / "detection.csv").is_file()
    assert {p.name for p in (sweep / "figures").glob("*.png")} >= {
        "reconstruction-capsnet-tiny.png", "tweak-capsnet-tiny.png", "reconstruction-cnn-recon-tiny.png"}
    assert len(list((sweep / "adversarials").glob("*.npz"))) > 0


def test_a_finished_benchmark_is_skipped_by_the_cli_and_rebuilds_the_identical_report(tiny_benchmark):
    root, _ = tiny_benchmark
    before = files_under(root)
    args = ["benchmark", "--profile", "tiny", "--out", str(root / "bench"), "--report", str(root / "report"),
            "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert all(f"{stage:<8} skipped" in result.output for stage in STAGES), result.output
    assert f"report: {root / 'report' / 'report.html'}" in result.output
    assert files_under(root) == before  # nothing was rewritten
    report = root / "report"
    texts = {name: (report / name).read_bytes() for name in ("report.md", "report.html", "report.json")}
    shutil.rmtree(report)
    rebuilt = run_tiny(root)
    assert rebuilt.stages == {**{stage: "skipped" for stage in STAGES[:-1]}, "report": "ran"}
    assert {name: (report / name).read_bytes() for name in texts} == texts


def test_the_resumed_benchmark_reports_what_an_uninterrupted_one_does(tiny_benchmark, mnist5k, tmp_path):
    """Sweep, detection, figures and report in one go from the same trained runs (training never stopped, and
    copying the finished runs saves retraining them) give the report the stage-by-stage benchmark gave."""
    root, _ = tiny_benchmark
    shutil.copytree(root / "bench" / "runs", tmp_path / "bench" / "runs")
    straight = run_tiny(tmp_path, data=mnist5k)
    assert straight.stages == {"train": "skipped", **{stage: "ran" for stage in STAGES[1:]}}
    resumed, fresh = root / "report", tmp_path / "report"
    assert mask_timings((resumed / "report.md").read_text(encoding="utf-8")) == mask_timings(
        (fresh / "report.md").read_text(encoding="utf-8"))
    names = sorted(p.name for p in (fresh / "tables").glob("*.csv"))
    assert names == sorted(p.name for p in (resumed / "tables").glob("*.csv"))
    for name in names:
        left, right = pd.read_csv(resumed / "tables" / name), pd.read_csv(fresh / "tables" / name)
        volatile = [c for c in left.columns if c in VOLATILE]
        pd.testing.assert_frame_equal(left.drop(columns=volatile), right.drop(columns=volatile), obj=name)


def test_refuses_other_settings_in_the_same_directory_and_unknown_profiles(tiny_benchmark):
    root, _ = tiny_benchmark
    args = ["benchmark", "--profile", "tiny", "--out", str(root / "bench"), "--device", "cpu", "--seed", "1"]
    other = CliRunner().invoke(main, args)
    assert other.exit_code == 2
    assert other.output.strip().splitlines()[-1].startswith("error: ")
    assert "holds a benchmark started with seed 0, not 1" in other.output
    unknown = CliRunner().invoke(main, ["benchmark", "--profile", "huge"])
    assert unknown.exit_code == 2 and "unknown benchmark profile 'huge'" in unknown.output


def test_every_profile_names_recipes_and_a_suite_that_load():
    assert {"tiny", "quick", "standard", "full"} <= set(PROFILES)
    for profile in PROFILES.values():
        assert load_suite(profile.suite).attacks
        for recipe, epochs in profile.recipes:
            assert load_recipe(recipe).name == recipe and epochs >= 1
    quick = get_profile("quick")
    assert [name for name, _ in quick.recipes] == ["capsnet-paper", "cnn-small", "cnn-recon"]
    assert "cnn-baseline" in dict(get_profile("standard").recipes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.n = 1  # type: ignore[misc]
    with pytest.raises(BenchmarkError, match="unknown stage 'deploy'"):
        run_benchmark("tiny", stop_after="deploy")
