"""Sweeps end to end: tidy tables, per-example outcomes, npz, refusals, resume after SIGKILL, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from capsrobust.attacks.suites import suite_from_dict
from capsrobust.cli import main
from capsrobust.evaluation.plan import SweepError
from capsrobust.evaluation.store import EXAMPLE_COLUMNS, RESULT_COLUMNS, load_sweep
from capsrobust.evaluation.sweep import run_sweep
from tests.conftest import REPO

SMALL_SUITE = {
    "suite": {"name": "small", "n": 12},
    "attack": [
        {"name": "fgsm", "eps": [0.0, 0.1, 0.3]},
        {"name": "pgd-linf", "eps": [0.1, 0.3], "params": {"steps": 3, "rel_step": 0.5}},
        {"name": "vote-pgd-linf", "eps": [0.1], "params": {"steps": 2}},
    ],
}


@pytest.fixture(scope="module")
def swept(trained_runs, mnist5k, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    suite = suite_from_dict(SMALL_SUITE, source="small.toml")
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]
    results = run_sweep(runs, suite, mnist5k, out_dir=out, backend="both", device="cpu", save_adversarials=True,
                        progress=False)
    return out, results


def test_one_tidy_row_per_cell_with_every_setting(swept, trained_runs):
    _, results = swept
    assert list(results.columns) == RESULT_COLUMNS
    assert results["cell_id"].is_unique
    capsnet, cnn = trained_runs["capsnet-tiny"].name, trained_runs["cnn-tiny"].name
    # fgsm 3 + pgd 2 + 2x-steps check 1 (+ vote 1 for the capsnet), in two backends
    assert (results["model"] == capsnet).sum() == 2 * 7
    assert (results["model"] == cnn).sum() == 2 * 6
    assert set(results["role"]) == {"attack", "check"}
    assert set(results.loc[results["model"] == capsnet, "objective_used"]) >= {"margin(lengths)"}
    assert set(results.loc[results["model"] == cnn, "objective_used"]) == {"ce(logits)"}
    assert (results["n"] == 12).all() and results["versions"].str.contains('"foolbox"').all()
    assert results["seed"].nunique() == len(results)  # a seed per cell
    pgd = results[(results["label"] == "pgd-linf") & (results["eps"] == 0.1)]
    assert json.loads(pgd["params"].iloc[0])["steps"] == 3
    assert (results["robust_accuracy"] <= results["clean_accuracy"]).all()


def test_per_example_outcomes_and_npz(swept):
    out, results = swept
    tables = load_sweep(out)
    pd.testing.assert_frame_equal(tables.results, pd.read_csv(out / "results.csv"))
    examples = tables.examples
    assert list(examples.columns) == EXAMPLE_COLUMNS
    assert len(examples) == 12 * len(results)
    first = results.iloc[1]
    cell = examples[examples["cell_id"] == first["cell_id"]]
    assert cell["robust"].mean() == pytest.approx(first["robust_accuracy"])
    assert cell["success"].sum() == first["n_success"]
    saved = np.load(out / "adversarials" / f"{first['cell_id']}.npz")
    assert saved["adversarials"].shape == (12, 1, 28, 28)
    assert list(saved["indices"]) == list(range(12))
    assert list(saved["labels"]) == list(cell["label"])
    assert list(saved["adv_pred"]) == list(cell["adv_pred"])


def test_checks_table_sits_beside_the_results(swept, trained_runs):
    out, _ = swept
    checks = load_sweep(out).checks
    cnn = trained_runs["cnn-tiny"].name
    names = set(checks["check"])
    assert {"in-bounds", "in-ball", "eps-zero", "monotone-eps", "large-eps", "pgd-vs-fgsm", "double-steps",
            "gradient-free", "backends-agree", "gradients", "deterministic", "coverage"} <= names
    coverage = checks[(checks["check"] == "coverage") & (checks["model"] == cnn)].iloc[0]
    assert coverage["status"] == "skip" and "vote-pgd-linf" in coverage["detail"]
    for check in ("in-bounds", "in-ball", "eps-zero", "gradients", "deterministic"):
        assert set(checks.loc[checks["check"] == check, "status"]) == {"pass"}, check


def test_refuses_to_overwrite_or_to_resume_with_other_settings(swept, trained_runs, mnist5k):
    out, _ = swept
    suite = suite_from_dict(SMALL_SUITE, source="small.toml")
    runs = [trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]]
    with pytest.raises(SweepError, match="already holds a sweep; pass --resume"):
        run_sweep(runs, suite, mnist5k, out_dir=out, backend="both", device="cpu", progress=False)
    with pytest.raises(SweepError, match="started with another seed"):
        run_sweep(runs, suite, mnist5k, out_dir=out, backend="both", device="cpu", seed=1, resume=True,
                  save_adversarials=True, progress=False)


def test_minimisation_attack_counts_only_adversarials_within_the_threshold(trained_runs, mnist5k, tmp_path):
    suite = suite_from_dict({"attack": [{
        "name": "cw-l2", "eps": [0.01, 10.0], "backends": ["foolbox"],
        "params": {"binary_search_steps": 2, "max_iter": 20},
    }]})
    results = run_sweep([trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=tmp_path, n=10, backend="foolbox",
                        device="cpu", progress=False)
    tight, loose = results.iloc[0], results.iloc[1]
    assert tight["n_success"] == 0 and loose["n_success"] > 0
    assert tight["seconds"] == loose["seconds"]  # one CW run serves both thresholds
    assert loose["l2_median"] <= 10.0


# One interpreter imports everything once, then forks a child per plan before any computation (no thread pool yet,
# so the fork is safe); each child SIGKILLs itself at its chosen file write. Prints the children's exit codes.
KILLED_SWEEPS = textwrap.dedent("""
    import json, os, signal, sys
    import art, foolbox  # noqa: F401  (what the children would each import again)
    from capsrobust.data import load_dataset
    from capsrobust.evaluation import store, sweep
    from capsrobust.attacks.suites import suite_from_dict

    def killed_sweep(kill_at, target, run, out):
        writes = {"n": 0}
        original_text, original = store.atomic_write_text, store.atomic_write  # the cell files are written there

        def counting(path):
            if path.name.startswith(target):
                writes["n"] += 1
                if writes["n"] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        def text(path, content):
            counting(path)
            original_text(path, content)

        def binary(path, write):
            counting(path)
            original(path, write)

        store.atomic_write_text, store.atomic_write = text, binary
        sweep.run_sweep([run], suite_from_dict({suite!r}), load_dataset("mnist-5k"), out_dir=out, n=16,
                        backend="foolbox", device="cpu", progress=False)

    codes = []
    for kill_at, target, run, out in json.loads(sys.argv[1]):
        pid = os.fork()
        if pid == 0:
            try:
                killed_sweep(kill_at, target, run, out)
            finally:
                os._exit(0)  # not killed: the parent reports exit code 0
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    print(json.dumps(codes))
""")
RESUME_SUITE = {
    "attack": [
        {"name": "fgsm", "eps": [0.0, 0.2]},
        {"name": "pgd-linf", "eps": [0.1, 0.3], "params": {"steps": 2}},
        {"name": "cw-l2", "eps": [1.0, 3.0], "params": {"binary_search_steps": 1, "max_iter": 5}},
    ]
}
VOLATILE = ["seconds", "command"]


@pytest.fixture(scope="module")
def uninterrupted(trained_runs, mnist5k, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_sweep([trained_runs["cnn-tiny"]], suite_from_dict(RESUME_SUITE), mnist5k, out_dir=out, n=16,
              backend="foolbox", device="cpu", progress=False)
    return load_sweep(out)


KILLS = {  # where each sweep is killed: at the Nth write of a file whose name starts with the target
    "before-the-second-cell-row": (4, "cnn-tiny"),  # each cell writes its examples, then its row
    "between-two-cw-cells": (14, "cnn-tiny"),
    "while-rebuilding-the-tables": (4, "results.csv"),
}


@pytest.fixture(scope="module")
def killed_sweeps(trained_runs, tmp_path_factory) -> dict[str, tuple[int, Path]]:
    """Each plan of ``KILLS`` as a sweep SIGKILLed in a process of its own: its exit code and its folder."""
    root, run = tmp_path_factory.mktemp("killed"), trained_runs["cnn-tiny"]
    plans = [(kill_at, run.name if target == "cnn-tiny" else target, str(run), str(root / name))  # cell files are
             for name, (kill_at, target) in KILLS.items()]                                       # named after the run
    driver = subprocess.run([sys.executable, "-c", KILLED_SWEEPS.replace("{suite!r}", repr(RESUME_SUITE)),
                             json.dumps(plans)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert driver.returncode == 0, driver.stderr[-2000:]
    return {name: (code, root / name) for name, code in zip(KILLS, json.loads(driver.stdout), strict=True)}


@pytest.mark.parametrize("kill", list(KILLS))
def test_resume_after_sigkill_ends_with_the_identical_table(kill, trained_runs, killed_sweeps, uninterrupted):
    """SIGKILL the sweep at a chosen file write, then resume: the tables of the uninterrupted sweep."""
    code, out = killed_sweeps[kill]
    assert code == -9
    finished = len(list((out / "cells").glob("*.json")))
    assert 0 < finished < 7
    run_sweep([trained_runs["cnn-tiny"]], suite_from_dict(RESUME_SUITE), "mnist-5k", out_dir=out, n=16,
              backend="foolbox", device="cpu", resume=True, progress=False)
    resumed = load_sweep(out)
    pd.testing.assert_frame_equal(resumed.results.drop(columns=VOLATILE),
                                  uninterrupted.results.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(resumed.examples, uninterrupted.examples)
    pd.testing.assert_frame_equal(resumed.checks, uninterrupted.checks)


def test_resuming_with_a_grown_suite_extends_the_sweep_to_what_a_fresh_run_gives(
    trained_runs, mnist5k, tmp_path, uninterrupted
):
    out, run = tmp_path / "sweep", trained_runs["cnn-tiny"]
    fewer = {"attack": [RESUME_SUITE["attack"][0], {**RESUME_SUITE["attack"][1], "eps": [0.1]}]}
    run_sweep([run], suite_from_dict(fewer), mnist5k, out_dir=out, n=16, backend="foolbox", device="cpu",
              progress=False)
    first = {path.name: path.stat().st_mtime_ns for path in (out / "cells").glob("*.json")}
    run_sweep([run], suite_from_dict(RESUME_SUITE), mnist5k, out_dir=out, n=16, backend="foolbox", device="cpu",
              resume=True, progress=False)
    grown = load_sweep(out)
    pd.testing.assert_frame_equal(grown.results.drop(columns=VOLATILE), uninterrupted.results.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(grown.examples, uninterrupted.examples)
    pd.testing.assert_frame_equal(grown.checks, uninterrupted.checks)
    assert {path.name: path.stat().st_mtime_ns for path in (out / "cells").glob("*.json") if path.name in first} \
        == first  # the finished cells were kept, not recomputed
    record = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert record["request"]["suite"]["attack"] == suite_from_dict(RESUME_SUITE).to_dict()["attack"]
    assert len(record["extended_from"]) == 1

    changed = {"attack": [RESUME_SUITE["attack"][0], {**RESUME_SUITE["attack"][1], "params": {"steps": 3}},
                          RESUME_SUITE["attack"][2]]}
    with pytest.raises(SweepError, match=r"ran with .*'steps': 4.*the suite now says .*'steps': 6"):
        run_sweep([run], suite_from_dict(changed), mnist5k, out_dir=out, n=16, backend="foolbox", device="cpu",
                  resume=True, progress=False)
    with pytest.raises(SweepError, match=r"drops the finished cell .*cw-l2"):
        run_sweep([run], suite_from_dict({"attack": RESUME_SUITE["attack"][:2]}), mnist5k, out_dir=out, n=16,
                  backend="foolbox", device="cpu", resume=True, progress=False)


def test_resuming_with_another_model_extends_the_sweep_to_what_a_fresh_run_gives(trained_runs, mnist5k, tmp_path):
    """A routing variant that trains later joins a running comparison without redoing the models already swept."""
    suite = suite_from_dict({"attack": [RESUME_SUITE["attack"][0], RESUME_SUITE["attack"][1]]})
    cnn, capsnet = trained_runs["cnn-tiny"], trained_runs["capsnet-tiny"]

    def sweep(runs, out, resume=False):
        return run_sweep(runs, suite, mnist5k, out_dir=out, n=8, backend="foolbox", device="cpu", resume=resume,
                         progress=False)

    grown_out = tmp_path / "grown"
    sweep([cnn], grown_out)
    first = {path.name: path.stat().st_mtime_ns for path in (grown_out / "cells").glob("*.json")}
    sweep([cnn, capsnet], grown_out, resume=True)
    sweep([cnn, capsnet], tmp_path / "fresh")
    grown, fresh = load_sweep(grown_out), load_sweep(tmp_path / "fresh")
    pd.testing.assert_frame_equal(grown.results.drop(columns=VOLATILE), fresh.results.drop(columns=VOLATILE))
    pd.testing.assert_frame_equal(grown.examples, fresh.examples)
    assert set(grown.results["model"]) == {cnn.name, capsnet.name}
    assert {path.name: path.stat().st_mtime_ns for path in (grown_out / "cells").glob("*.json") if path.name in first} \
        == first  # the first model's cells were kept, not recomputed
    record = json.loads((grown_out / "sweep.json").read_text(encoding="utf-8"))
    assert record["extended_from"][0]["models"] == [cnn.name]
    with pytest.raises(SweepError, match=rf"drops the model {cnn.name}; a resumed sweep may only add models"):
        sweep([capsnet], grown_out, resume=True)


def test_cli_sweep_prints_results_and_checks(trained_runs, tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text('[suite]\nname = "tiny"\nn = 8\n[[attack]]\nname = "fgsm"\neps = [0.0, 0.3]\n',
                     encoding="utf-8")
    out = tmp_path / "out"
    args = ["sweep", str(trained_runs["cnn-tiny"]), "--suite", str(suite), "--out", str(out), "--device", "cpu",
            "--no-progress", "--objective", "margin"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "results (2 cells, tiny suite, mnist-5k)" in result.output
    assert "margin(logits)" in result.output
    assert "checks (" in result.output and "eps-zero" in result.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    assert again.output.strip().count("\n") == 0 and "already holds a sweep" in again.output
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    unknown = CliRunner().invoke(main, ["sweep", str(trained_runs["cnn-tiny"]), "--suite", "nope"])
    assert unknown.exit_code == 2 and "suite nope not found" in unknown.output
    bad_objective = CliRunner().invoke(main, [*args[:-2], "--objective", "hinge"])
    assert bad_objective.exit_code == 2 and "unknown attack objective" in bad_objective.output


def test_attack_precision_is_recorded_and_judged_in_fp32(trained_runs, mnist5k, tmp_path):
    from capsrobust.precision import PrecisionError, cpu_supports_bf16

    suite = suite_from_dict({"attack": [{"name": "pgd-linf", "eps": [0.2], "params": {"steps": 3}}]})
    run = trained_runs["cnn-tiny"]
    fp32 = run_sweep([run], suite, mnist5k, out_dir=tmp_path / "fp32", n=8, device="cpu", progress=False)
    assert set(fp32["precision"]) == {"fp32"} and set(fp32["batch_size"]) == {100}  # the CPU's batch
    assert json.loads((tmp_path / "fp32" / "sweep.json").read_text())["request"]["precision"] == "fp32"
    with pytest.raises(PrecisionError, match="tf32"):
        run_sweep([run], suite, mnist5k, out_dir=tmp_path / "tf32", n=8, device="cpu", precision="tf32")
    assert not (tmp_path / "tf32").exists()  # refused before anything is written
    if cpu_supports_bf16():
        bf16 = run_sweep([run], suite, mnist5k, out_dir=tmp_path / "bf16", n=8, device="cpu", precision="bf16",
                         progress=False)
        assert set(bf16["precision"]) == {"bf16"}
        # the clean predictions that decide robustness are fp32 in both sweeps
        assert bf16["clean_accuracy"].tolist() == fp32["clean_accuracy"].tolist()


def test_a_transfer_cell_crafts_on_the_source_and_judges_on_the_target(trained_runs, mnist5k, tmp_path):
    """PGD on cnn-tiny, judged on capsnet-tiny: the cell's adversarials are exactly those of the same attack run on
    cnn-tiny with the cell's seed, and its outcomes are capsnet-tiny's predictions on them."""
    import torch

    from capsrobust.attacks.objectives import AttackObjective
    from capsrobust.attacks.registry import Backend, run_attack
    from capsrobust.evaluation.plan import plan_cells
    from capsrobust.evaluation.sweep import model_label
    from capsrobust.models.checkpoints import load_checkpoint
    from capsrobust.models.inference import predict

    caps, cnn = trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]
    caps_name, cnn_name = model_label(caps), model_label(cnn)
    suite = suite_from_dict({"suite": {"name": "transfer", "n": 12, "double_steps_check": False}, "attack": [
        {"name": "pgd-linf", "eps": [0.2], "transfer_from": [cnn_name], "params": {"steps": 3}}]})
    results = run_sweep([caps, cnn], suite, mnist5k, out_dir=tmp_path, device="cpu", progress=False,
                        save_adversarials=True)
    assert list(results["label"]) == [f"pgd-linf-from-{cnn_name}"] and list(results["model"]) == [caps_name]
    row = results.iloc[0]
    assert row["transfer_from"] == cnn_name and row["objective_used"] == "ce(logits)"  # the CNN's objective
    with np.load(tmp_path / "adversarials" / f"{row['cell_id']}.npz") as saved:
        adversarials = torch.from_numpy(saved["adversarials"])
    images, labels = mnist5k.test.images[:12], mnist5k.test.labels[:12]
    source = load_checkpoint(cnn).model
    planned = [(caps_name, AttackObjective.MARGIN, True), (cnn_name, AttackObjective.CE_LOG_LENGTHS, False)]
    (cell,) = plan_cells(suite, planned, (Backend.ART,), 0)[0]
    again = run_attack("pgd-linf", source, images, labels, eps=0.2, params={"steps": 3}, objective=cell.objective,
                       backend="art", seed=cell.seed)
    assert torch.equal(again.adversarials, adversarials)
    target = load_checkpoint(caps).model
    examples = load_sweep(tmp_path).examples
    assert examples["adv_pred"].tolist() == predict(target, adversarials).tolist()


def test_transfer_adversarials_are_crafted_once_and_judged_on_every_target(trained_runs, mnist5k, tmp_path):
    """Two targets (capsnet-tiny and a copy under another name) of one source, in a cascade after FGSM: one file per
    budget in transfer/, one cell of each budget paid for it, and every attacked image judged on the same
    adversarial, the source's own for that image."""
    import shutil

    from safetensors.torch import load_file

    from capsrobust.evaluation.sweep import model_label

    caps, cnn = trained_runs["capsnet-tiny"], trained_runs["cnn-tiny"]
    twin = tmp_path / "twin"
    shutil.copytree(caps, twin)
    cnn_name = model_label(cnn)
    suite = suite_from_dict({"suite": {"name": "transfer", "n": 16, "double_steps_check": False, "cascade": True},
                             "attack": [{"name": "fgsm", "eps": [0.05]},
                                        {"name": "pgd-linf", "eps": [0.05, 0.2], "transfer_from": [cnn_name],
                                         "params": {"steps": 3}}]})
    out = tmp_path / "sweep"
    results = run_sweep([caps, twin, cnn], suite, mnist5k, out_dir=out, device="cpu", progress=False,
                        save_adversarials=True)
    transferred = results[results["transfer_from"] == cnn_name]
    assert sorted(transferred["model"]) == sorted([model_label(caps), "twin"] * 2)
    crafted = sorted((out / "transfer").glob("*.safetensors"))
    assert len(crafted) == 2  # one per budget, not one per target and budget
    for eps, cells in transferred.groupby("eps"):
        assert (cells["n_attacked"] > 0).all()
        assert sorted(cells["seconds"])[0] == 0.0 < sorted(cells["seconds"])[1]  # the second target read the file
        (path,) = [p for p in crafted if f"__eps{eps:g}__" in p.name]
        source_adversarials = load_file(path)["adversarials"]  # (16, 1, 28, 28): every image the entry may attack
        assert source_adversarials.shape[0] == 16
        for cell_id in cells["cell_id"]:
            with np.load(out / "adversarials" / f"{cell_id}.npz") as saved:
                adversarials = saved["adversarials"]
            examples = load_sweep(out).examples
            attacked = examples[examples["cell_id"] == cell_id]["attacked"].to_numpy()
            assert np.array_equal(adversarials[attacked], source_adversarials.numpy()[attacked])
    resumed = run_sweep([caps, twin, cnn], suite, mnist5k, out_dir=out, device="cpu", progress=False,
                        save_adversarials=True, resume=True)
    assert resumed["robust_accuracy"].tolist() == results["robust_accuracy"].tolist()


def test_a_damaged_or_foreign_transfer_file_is_crafted_again(tmp_path):
    import torch

    from capsrobust.attacks.objectives import AttackObjective
    from capsrobust.attacks.registry import AttackResult, Backend
    from capsrobust.evaluation.plan import Cell
    from capsrobust.evaluation.transfer import TransferCache, TransferKey

    cell = Cell(cell_id="t__x__art__margin__eps0.1", model="t", role="attack", label="pgd-linf-from-s",
                attack="pgd-linf", backend=Backend.ART, eps=0.1, params=(("steps", 3),),
                objective=AttackObjective.MARGIN, seed=7, source="s")
    images = torch.zeros(4, 1, 28, 28)
    key = TransferKey.of(cell, "abc", "fp32", images)
    calls = []

    def craft() -> AttackResult:
        calls.append(1)
        return AttackResult(images + len(calls), 3, "margin(lengths)")

    cache = TransferCache(tmp_path / "transfer")
    first, seconds = cache.adversarials(key, craft)
    again, no_time = cache.adversarials(key, craft)
    assert len(calls) == 1 and no_time == 0.0 and seconds >= 0.0
    assert torch.equal(again.adversarials, first.adversarials) and again.objective_used == "margin(lengths)"
    assert again.steps_or_queries == 3
    (path,) = (tmp_path / "transfer").glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    repaired, _ = cache.adversarials(key, craft)
    assert len(calls) == 2 and torch.equal(repaired.adversarials, images + 2)
    other = TransferKey.of(cell, "abc", "fp32", images + 0.5)  # other images: another file
    cache.adversarials(other, craft)
    assert len(calls) == 3 and len(list((tmp_path / "transfer").glob("*.safetensors"))) == 2


def test_without_progress_bars_each_cell_is_one_log_line(trained_runs, mnist5k, tmp_path, caplog):
    """A background run (--no-progress, nohup) logs what each cell did and cost, in the order they finish."""
    import logging

    suite = suite_from_dict({"suite": {"name": "s", "double_steps_check": False},
                             "attack": [{"name": "fgsm", "eps": [0.0, 0.3]}]})
    with caplog.at_level(logging.INFO, logger="capsrobust.evaluation.sweep"):
        results = run_sweep([trained_runs["cnn-tiny"]], suite, mnist5k, out_dir=tmp_path, n=10, device="cpu",
                            progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "capsrobust.evaluation.sweep"]
    assert len(lines) == 2 and lines[0].startswith("1 of 2 cells: ") and lines[1].startswith("2 of 2 cells: ")
    last = results.iloc[1]
    assert f"{last['cell_id']}, {last['n_attacked']} attacked, {last['n_success']} broken, " \
           f"robust {100 * last['robust_accuracy']:.1f}%" in lines[1]
