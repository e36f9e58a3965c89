"""The command line through click's runner: outputs people and scripts rely on, and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from capsrobust.cli import main
from tests.conftest import REPO

REPO_MODELS = REPO / "models"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("recipe", "low", "high", "low_no_decoder", "high_no_decoder"),
    [
        ("models/capsnet-paper.toml", 8.1e6, 8.3e6, 6.7e6, 6.9e6),
        ("models/cnn-baseline.toml", 35.0e6, 35.8e6, None, None),
        ("models/cnn-small.toml", 3.2e6, 3.4e6, None, None),
    ],
)
def test_describe_json_reports_the_published_sizes(recipe, low, high, low_no_decoder, high_no_decoder):
    result = invoke("describe", recipe, "--json")
    assert result.exit_code == 0
    description = json.loads(result.output)
    assert low <= description["parameters"] <= high
    if low_no_decoder is not None:
        assert low_no_decoder <= description["parameters_without_decoder"] <= high_no_decoder


def test_train_then_evaluate_json(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", "cnn-tiny", "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    assert "best validation accuracy" in result.output
    result = invoke("evaluate", str(out), "--data", "mnist-5k", "--json")
    assert result.exit_code == 0
    record = json.loads(result.output)
    assert record["n"] == 1000 and 0.5 < record["accuracy"] <= 1.0
    assert len(record["confusion_matrix"]) == 10 and sum(map(sum, record["confusion_matrix"])) == 1000
    result = invoke("evaluate", str(out))
    assert "per-class accuracy" in result.output and "confusion matrix" in result.output
    again = invoke("train", "cnn-tiny", "--epochs", "1", "--out", str(out), "--no-progress")
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke("train", "cnn-tiny", "--epochs", "1", "--out", str(out), "--resume", "--no-progress")
    assert resumed.exit_code == 0 and "best validation accuracy 0." in resumed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "no-such-recipe"), "recipe no-such-recipe not found"),
        (("train", "cnn-tiny", "--data", "imagenet"), "unknown data set 'imagenet'"),
        (("train", "cnn-tiny", "--data", "cifar10"), "pass --data-dir DIR holding cifar-10-batches-bin/"),
        (("train", "cnn-tiny", "--data", "npz:/nonexistent/x.npz"), "/nonexistent/x.npz does not exist"),
        (("train", "cnn-tiny", "--data", "mnist", "--data-dir", "/nonexistent"), "lacks its IDX files"),
        (("evaluate", "/nonexistent/run"), "no checkpoint at"),
        (("train", "cnn-tiny", "--device", "tpu"), "unknown device 'tpu'"),
        (("train", "cnn-tiny", "--seed", "\u0661\u0662"), "is not a seed"),  # Arabic-Indic 12: int() takes it
        (("train", "cnn-tiny", "--seed", str(2**64)), "is not a seed"),
        (("train", "cnn-tiny", "--seed", "-1"), "is not a seed"),
        (("train", "cnn-tiny", "--seeds", "0,\u00b2"), "--seeds takes distinct non-negative integers"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_reconstruct_and_tweak_write_pngs(trained_runs, tmp_path):
    result = invoke("reconstruct", str(trained_runs["capsnet-tiny"]), "--n", "4", "--out", str(tmp_path / "r.png"))
    assert result.exit_code == 0 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    result = invoke("tweak", str(trained_runs["capsnet-tiny"]), "--index", "3", "--out", str(tmp_path / "t.png"))
    assert result.exit_code == 0 and "8 dimensions × 11 offsets" in result.output
    refused = invoke("tweak", str(trained_runs["cnn-tiny"]), "--out", str(tmp_path / "c.png"))
    assert refused.exit_code == 2 and "no class-conditional decoder" in refused.output
    assert not (tmp_path / "c.png").exists()


SIGTERM_DURING_TRAINING = """
import os, signal, sys
import capsrobust.training.loop as training
calls = {"n": 0}
shift = training.random_shift

def shift_then_terminate(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:  # the third batch of the first epoch: as `kill PID` would, from outside
        os.kill(os.getpid(), signal.SIGTERM)
    return shift(*args, **kwargs)

training.random_shift = shift_then_terminate
from capsrobust.cli import main
main(["train", "cnn-tiny", "--epochs", "1", "--out", sys.argv[1], "--no-progress", "--device", "cpu"])
"""


def test_sigterm_stops_training_like_ctrl_c_and_resume_continues(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "run"
    stopped = subprocess.run([sys.executable, "-c", SIGTERM_DURING_TRAINING, str(out)], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert "Traceback" not in stopped.stderr
    assert (out / "interrupted.safetensors").is_file() and not (out / "best.safetensors").exists()
    resumed = invoke("train", "cnn-tiny", "--epochs", "1", "--out", str(out), "--resume", "--no-progress",
                     "--device", "cpu")
    assert resumed.exit_code == 0 and "best validation accuracy" in resumed.output


def test_a_model_at_chance_is_flagged_in_the_training_output(tmp_path):
    text = (REPO_MODELS / "cnn-tiny.toml").read_text(encoding="utf-8")
    frozen = tmp_path / "cnn-frozen.toml"  # a learning rate so small that one epoch leaves the weights as drawn
    frozen.write_text(text.replace("name = \"cnn-tiny\"", "name = \"cnn-frozen\"").replace(
        "learning_rate = 0.003", "learning_rate = 1e-12"), encoding="utf-8")
    result = CliRunner().invoke(main, ["train", str(frozen), "--epochs", "1", "--out", str(tmp_path / "run"),
                                       "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning: cnn-frozen is at chance" in result.output


def test_the_report_puts_a_model_at_chance_among_the_flags():
    import pandas as pd

    from capsrobust.reporting.sections.checks import _at_chance

    results = pd.DataFrame({"model": ["good", "good", "chance"], "clean_accuracy": [0.98, 0.98, 0.11],
                            "n": [200, 200, 200]})
    examples = pd.DataFrame({"label": list(range(10)) * 3})
    lines = _at_chance(results, examples)
    assert len(lines) == 1 and lines[0].startswith("**at chance** (chance): clean accuracy 11.0% on 200 images of 10")


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for out in (tmp_path / "file" / "run", tmp_path / "loop" / "run"):
        result = invoke("train", "cnn-tiny", "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu")
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: cannot read or write") and len(result.output.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "loop"]


# Every subcommand against the classes of bad value of issue 18, as a user meets them: a fresh process each.
HOSTILE = [
    (["train", "no-such-recipe"], "recipe no-such-recipe not found"),
    (["train", "cnn-tiny", "--out", "file/run", "--device", "cpu"], "cannot read or write"),
    (["train", "cnn-tiny", "--out", "loop/run", "--device", "cpu"], "cannot read or write"),
    (["train", "cnn-tiny", "--seed", str(2**64)], "is not a seed"),
    (["train", "cnn-tiny", "--precision", "fp8"], "'fp8' is not one of"),
    (["train", "cnn-tiny", "--executor", "ray", "--ray-address", "127.0.0.1:x"], "is not HOST:PORT"),
    (["evaluate", "corrupt"], "not a capsrobust checkpoint"),
    (["evaluate", "corrupt", "--split", "nope"], "'nope' is not one of 'train', 'val', 'test'"),
    (["attacks", "no-such-attack"], "unknown attack 'no-such-attack'"),
    (["describe", "badrecipe.toml"], "badrecipe.toml"),
    (["reconstruct", "corrupt", "--out", "out.png"], "not a capsrobust checkpoint"),
    (["tweak", "corrupt", "--out", "out.png"], "not a capsrobust checkpoint"),
    (["sweep", "corrupt", "--suite", "quick", "--out", "sweep"], "not a capsrobust checkpoint"),
    (["sweep", "corrupt", "--suite", "bad.toml", "--out", "sweep"], "not valid TOML"),
    (["sweep", "corrupt", "--suite", "quick", "--max-cells", "0"], "0 is not in the range"),
    (["sweep", "corrupt", "--suite", "quick", "--backend", "both,art"], "is not one of 'art', 'foolbox', 'both'"),
    (["report", "nowhere", "--out", "report"], "holds no sweep"),
    (["compare", "nowhere", "--baseline", "a", "--candidate", "b"], "holds no sweep"),
    (["benchmark", "--profile", "nope", "--out", "bench"], "unknown benchmark profile 'nope'"),
    (["benchmark", "--profile", "tiny", "--stop-after", "lunch"], "'lunch' is not one of 'train', 'sweep'"),
    (["detect", "nowhere"], "holds no sweep"),
    (["gallery", "nowhere", "--out", "gallery.png"], "holds no sweep"),
    (["--plugin", "missing.py", "describe", "cnn-tiny"], "plugin missing.py"),
    (["--no-such-option"], "No such option"),
    (["no-such-command"], "No such command"),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every entry under ``root`` (links not followed) with its bytes or link target: what must not change."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
        else:
            found[str(path.relative_to(root))] = b"<dir>"
    return found


@pytest.mark.slow
def test_every_subcommand_refuses_every_class_of_bad_value_in_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "best.json").write_text('{"recipe": 5}')
    (tmp_path / "corrupt" / "best.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad.toml").write_text("[suite\nname=")
    (tmp_path / "badrecipe.toml").write_text('[model]\nname = "r"\nrouting_iterations = 0\n')
    before = _snapshot(tmp_path)
    # A fresh process each, as a user meets them: forks of one interpreter that had only imported the package.
    driver = subprocess.run([sys.executable, str(REPO / "tests" / "cli_in_forks.py")], cwd=tmp_path, timeout=300,
                            input=json.dumps([args for args, _ in HOSTILE]), capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert driver.returncode == 0, driver.stderr
    finished = [subprocess.CompletedProcess(args, **result) for (args, _), result in
                zip(HOSTILE, json.loads(driver.stdout), strict=True)]
    for (args, message), result in zip(HOSTILE, finished, strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, args
    assert _snapshot(tmp_path) == before


def test_every_choice_list_of_the_cli_is_read_from_the_library():
    """No option keeps its own copy of a list the library defines (precisions, splits, backends, stages...)."""
    import click

    from capsrobust.benchmark import Stage
    from capsrobust.cli import LibraryChoice
    from capsrobust.precision import Precision

    options = [(name, param) for name, command in main.commands.items() for param in command.params
               if isinstance(param.type, click.Choice)]
    assert options and all(isinstance(param.type, LibraryChoice) for _, param in options)
    assert all(param.type.choices for _, param in options)  # each resolves to a non-empty list
    by_name = {(name, param.name): param.type.choices for name, param in options}
    assert by_name[("train", "precision")] == tuple(member.value for member in Precision)
    assert by_name[("benchmark", "stop_after")] == tuple(member.value for member in Stage)
    assert by_name[("sweep", "backend")] == ("art", "foolbox", "both")
