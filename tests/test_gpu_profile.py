"""The gpu profile end to end on the CPU with tiny recipes and two training seeds (its GPU sizing is in docs/gpu.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from capsrobust.attacks.suites import load_suite
from capsrobust.benchmark import parse_seeds, run_benchmark
from capsrobust.cli import main
from capsrobust.evaluation.store import load_sweep
from capsrobust.precision import PrecisionError
from capsrobust.profiles import BenchmarkError, get_profile

TINY = [("capsnet-tiny", 1), ("cnn-tiny", 1), ("cnn-recon-tiny", 1)]


# The gpu suite's entries, seeds and backends with budgets a CPU runs in seconds, at their smallest epsilon (FGSM
# keeps its clean cell at 0 too).
SHORTER = {"steps": 3, "apgd_steps": 3, "targets": 2, "square_queries": 10, "queries": 10, "binary_search_steps": 1,
           "max_iter": 5}


def shortened_gpu_suite(folder: Path) -> Path:
    suite = load_suite("gpu").to_dict()
    for entry in suite["attack"]:
        entry["params"] = {key: SHORTER.get(key, value) for key, value in entry["params"].items()}
        entry["eps"] = entry["eps"][: 2 if entry["eps"][0] == 0 else 1]
    path = folder / "gpu-short.toml"
    path.write_text(dump_toml(suite), encoding="utf-8")
    return path


def dump_toml(suite: dict) -> str:
    """The few TOML shapes a suite needs: a [suite] table and [[attack]] tables with an [attack.params] table."""
    def value(item: object) -> str:
        return json.dumps(item) if not isinstance(item, bool) else str(item).lower()

    lines = ["[suite]", *(f"{key} = {value(item)}" for key, item in suite["suite"].items())]
    for entry in suite["attack"]:
        lines += ["", "[[attack]]", *(f"{key} = {value(item)}" for key, item in entry.items() if key != "params")]
        lines += ["[attack.params]", *(f"{key} = {value(item)}" for key, item in entry["params"].items())]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def gpu_on_cpu(tmp_path_factory: pytest.TempPathFactory, mnist_small) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("gpu-profile")
    result = run_benchmark("gpu", out_dir=root / "bench", report_dir=root / "report", data=mnist_small, device="cpu",
                           seeds=(0, 1), n=6, recipes=TINY, suite=shortened_gpu_suite(root), progress=False,
                           precision="fp32")  # the profile's tf32 is a GPU mode
    return root, result


def test_the_profile_names_three_seeds_the_paper_models_and_its_suite():
    profile = get_profile("gpu")
    assert profile.seeds == (0, 1, 2) and profile.n == 1000 and profile.report == "gpu-mnist-5k"
    assert [name for name, _ in profile.recipes] == ["capsnet-paper", "cnn-small", "cnn-recon", "cnn-baseline"]
    suite = load_suite(profile.suite)
    everywhere = {entry.label for entry in suite.attacks if not entry.seeds}
    assert {"fgsm", "pgd-linf", "vote-pgd-linf"} <= everywhere
    assert {"autoattack", "apgd-ce", "cw-l2", "square", "pgd-linf-foolbox"} <= {
        entry.label for entry in suite.attacks if entry.seeds == (0,)}


@pytest.mark.slow
def test_every_seed_is_trained_attacked_and_reported(gpu_on_cpu):
    root, result = gpu_on_cpu
    assert result.finished and set(result.runs) == {f"{name}-s{seed}" for name, _ in TINY for seed in (0, 1)}
    tables = load_sweep(root / "bench" / "sweep")
    seeds = tables.results.drop_duplicates("model").set_index("model")["train_seed"]
    assert seeds["capsnet-tiny-s1"] == 1 and seeds["cnn-tiny-s0"] == 0
    # the expensive attacks ran on seed 0 only, the cheap ones on both
    ran = tables.results.groupby("label")["train_seed"].agg(lambda s: sorted(set(s)))
    assert ran["autoattack"] == [0] and ran["cw-l2"] == [0] and ran["pgd-linf"] == [0, 1]
    assert "square" not in ran  # the suite runs it on capsnet-paper and cnn-small only
    coverage = tables.checks[(tables.checks["check"] == "coverage") & (tables.checks["model"] == "cnn-tiny-s1")]
    assert "training seeds 0" in coverage["detail"].iloc[0]
    # seed 0's Foolbox PGD entry pairs with the ART entry every seed runs (same attack and parameters)
    agree = tables.checks[tables.checks["check"] == "backends-agree"].set_index("model")["status"]
    assert agree["cnn-tiny-s0"] != "skip" and agree["cnn-tiny-s1"] == "skip"
    seeds_table = pd.read_csv(root / "report" / "tables" / "seeds.csv")
    assert set(seeds_table["group"]) == {"capsnet-tiny", "cnn-tiny", "cnn-recon-tiny"}
    assert (seeds_table["n_seeds"] == 2).all() and (seeds_table["ci_low"] <= seeds_table["robust_accuracy"]).all()
    # seed 0 faced every attack: its full-suite worst case can only be lower than its number over the shared ones
    seed0 = seeds_table["per_seed"].str.extract(r"s0:([0-9.]+)")[0].astype(float)
    assert (seeds_table["full_suite_seed"] == 0).all()
    assert (seeds_table["full_suite_robust_accuracy"] <= seed0 + 1e-3).all()  # per_seed shows 3 decimals
    report = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Across training seeds" in report and "## Capsules against CNNs across training seeds" in report
    assert (root / "report" / "tables" / "seed_comparison.csv").is_file()
    figures = {path.name for path in (root / "bench" / "sweep" / "figures").glob("*.png")}
    assert "reconstruction-capsnet-tiny-s0.png" in figures and "reconstruction-capsnet-tiny-s1.png" not in figures
    state = json.loads((root / "bench" / "benchmark.json").read_text(encoding="utf-8"))
    assert state["seeds"] == [0, 1] and state["stages"]["sweep"]["last_run"]["seconds"] > 0


@pytest.mark.slow
def test_compare_takes_multi_seed_recipes(gpu_on_cpu):
    root, _ = gpu_on_cpu
    result = CliRunner().invoke(main, ["compare", str(root / "bench" / "sweep"), "--baseline", "cnn-tiny",
                                       "--candidate", "capsnet-tiny", "--n-resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "averaged over training seeds" in result.output and "s0:" in result.output and "s1:" in result.output


@pytest.mark.slow
def test_a_finished_multi_seed_benchmark_is_skipped_and_other_seeds_are_refused(gpu_on_cpu, mnist_small):
    root, _ = gpu_on_cpu
    again = run_benchmark("gpu", out_dir=root / "bench", report_dir=root / "report", data=mnist_small, device="cpu",
                          seeds=(0, 1), n=6, recipes=TINY, suite=root / "gpu-short.toml", progress=False,
                          precision="fp32")
    assert set(again.stages.values()) == {"skipped"}
    with pytest.raises(BenchmarkError, match="started with seeds"):
        run_benchmark("gpu", out_dir=root / "bench", data=mnist_small, device="cpu", seeds=(0, 2), n=6, recipes=TINY,
                      precision="fp32")


def test_a_gpu_profile_on_the_cpu_follows_the_precision_rule_of_every_command(mnist5k, tmp_path):
    """tf32 on a CPU is refused in one line before anything is written, as ``--precision tf32`` is elsewhere."""
    with pytest.raises(PrecisionError, match="tf32 is a CUDA tensor-core mode and cannot run on cpu"):
        run_benchmark("gpu", out_dir=tmp_path / "bench", data=mnist5k, device="cpu", n=6, recipes=TINY)
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("text", ["0,x", "1,1", "", "0;1", "-1"])
def test_bad_seed_lists_are_refused_with_one_line(text):
    with pytest.raises(BenchmarkError, match="seeds"):
        parse_seeds(text)
    assert parse_seeds(" 2, 0 ,1") == (2, 0, 1)


def test_the_gpu_routing_profile_is_the_routing_profile_on_full_mnist_with_three_seeds():
    """Issue 20's GPU version: the same variants, CNNs and suite as the committed CPU routing report, on full MNIST
    with 3 seeds and 1,000 images; every model the suite transfers from is one of its recipes."""
    cpu, gpu = get_profile("routing"), get_profile("gpu-routing")
    assert [name for name, _ in gpu.recipes] == [name for name, _ in cpu.recipes]
    assert (gpu.data, gpu.seeds, gpu.n, gpu.suite) == ("mnist", (0, 1, 2), 1000, cpu.suite)
    entries = load_suite(gpu.suite).to_dict()["attack"]
    sources = {source for entry in entries for source in entry.get("transfer_from", [])}
    assert sources and sources <= {name for name, _ in gpu.recipes}


def test_each_no_routing_baseline_is_trained_beside_a_variant_of_its_architecture():
    """The routing suite's ``routing_baselines`` (capsnet-routing-1, efficient-capsnet-uniform) are recipes of the
    profile, each sharing its architecture with a routing variant it is paired with in the report."""
    from capsrobust.models.recipes import load_recipe

    profile = get_profile("routing")
    names = {name for name, _ in profile.recipes}
    baselines = load_suite(profile.suite).routing_baselines
    assert set(baselines) <= names
    for baseline in baselines:
        architecture = load_recipe(baseline).architecture
        assert any(load_recipe(name).architecture == architecture for name in names - {baseline}), baseline
