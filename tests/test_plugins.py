"""Bring your own architecture: a capsule network defined in tests/plugins/ goes through train → sweep (vote and
defense-aware attacks included) → detect → report with no edit under capsrobust/."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from capsrobust.cli import main
from capsrobust.plugins import PluginError, load_plugins
from tests.conftest import REPO

PLUGIN = str(REPO / "tests" / "plugins" / "toy_capsules.py")
RECIPE = """\
name = "toy-caps"
architecture = "toy-caps"
description = "a capsule network from a plugin"

[model]
channels = 8
decoder_hidden = [32]

[train]
epochs = 1
batch_size = 100
learning_rate = 0.003
lr_decay = 0.9
max_shift = 0
"""
SUITE = """\
[suite]
name = "plugin"
n = 8
double_steps_check = false

[[attack]]
name = "pgd-linf"
eps = [0.1]
[attack.params]
steps = 3

[[attack]]
name = "vote-pgd-linf"
eps = [0.1]
[attack.params]
steps = 3

[[attack]]
name = "pgd-linf-recon"
eps = [0.1]
[attack.params]
steps = 3
"""


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, ["--plugin", PLUGIN, *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_a_plugin_capsule_network_runs_the_whole_pipeline(tmp_path, trained_runs):
    (tmp_path / "toy.toml").write_text(RECIPE, encoding="utf-8")
    (tmp_path / "suite.toml").write_text(SUITE, encoding="utf-8")
    run, sweep = tmp_path / "toy", tmp_path / "sweep"
    invoke("train", str(tmp_path / "toy.toml"), "--out", str(run), "--device", "cpu", "--no-progress")
    invoke("sweep", str(run), str(trained_runs["cnn-tiny"]), "--suite", str(tmp_path / "suite.toml"), "--out",
           str(sweep), "--device", "cpu", "--save-adversarials", "--no-progress")
    results = pd.read_csv(sweep / "results.csv")
    toy = results[results["model"] == "toy"]
    assert set(toy["label"]) == {"pgd-linf", "vote-pgd-linf", "pgd-linf-recon"}
    assert toy["capabilities"].iloc[0] == "capsule-lengths,class-decoder,votes"
    cnn = trained_runs["cnn-tiny"].name  # the sweep labels a run by its directory
    assert set(results[results["model"] == cnn]["label"]) == {"pgd-linf"}  # no votes, no decoder
    invoke("detect", str(sweep), "--device", "cpu")
    assert "toy" in set(pd.read_csv(sweep / "detection" / "detection.csv")["model"])
    invoke("report", str(sweep), "--out", str(tmp_path / "report"))
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert f"toy (candidate) against {cnn} (baseline)" in report


def test_without_the_plugin_the_architecture_is_unknown_and_bad_plugins_are_one_line(tmp_path):
    (tmp_path / "toy.toml").write_text(RECIPE, encoding="utf-8")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    refused = CliRunner().invoke(main, ["--plugin", str(tmp_path / "missing.py"), "describe", "capsnet-tiny"])
    assert refused.exit_code == 2 and "is not a Python file" in refused.output
    broken = CliRunner().invoke(main, ["--plugin", str(tmp_path / "broken.py"), "describe", "capsnet-tiny"])
    assert broken.exit_code == 2 and "failed to import: RuntimeError: boom" in broken.output
    with pytest.raises(PluginError, match="not a Python file"):
        load_plugins([tmp_path / "toy.toml"])
    assert load_plugins([PLUGIN]) == load_plugins([PLUGIN])  # loaded once per process, registered once


def test_a_plugin_that_calls_sys_exit_fails_the_command(tmp_path):
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--plugin", str(tmp_path / "exits.py"), "describe", "capsnet-tiny"])
    assert result.exit_code == 2 and "called sys.exit(0) while loading" in result.output
    assert len(result.output.strip().splitlines()) == 1
