"""The sweep directory's one owner: its writer lock, the row schema cells write, and what later stages read back."""

from __future__ import annotations

import dataclasses
import json
import os
import socket

import pandas as pd
import pytest
import torch

from capsrobust.attacks.objectives import AttackObjective
from capsrobust.attacks.registry import Backend
from capsrobust.attacks.suites import suite_from_dict
from capsrobust.evaluation.plan import Cell, SweepError
from capsrobust.evaluation.store import (
    LOCK_FILE,
    RESULT_COLUMNS,
    SWEEP_FILE,
    CellStore,
    adversarials_path,
    has_adversarials,
    load_adversarials,
    load_sweep_models,
    load_test_split,
    read_sweep_file,
    read_sweep_record,
    writer_lock,
)
from capsrobust.evaluation.sweep import run_sweep

TINY_SUITE = {"suite": {"name": "tiny", "n": 6}, "attack": [{"name": "fgsm", "eps": [0.1]}]}


@pytest.fixture(scope="module")
def tiny_sweep(trained_runs, mnist5k, tmp_path_factory):
    out = tmp_path_factory.mktemp("store-sweep")
    run_sweep([trained_runs["cnn-tiny"]], suite_from_dict(TINY_SUITE, source="tiny.toml"), mnist5k, out_dir=out,
              backend="art", device="cpu", save_adversarials=True, progress=False)
    return out


def _lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid}))


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    _lock(tmp_path, os.getppid())  # a live process that is not us: pytest's parent
    with pytest.raises(SweepError, match=rf"being written by another capsrobust \(pid {os.getppid()} on "), \
            writer_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).is_file()  # never ours to remove


def test_a_lock_on_another_host_is_respected(tmp_path):
    _lock(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(SweepError, match=r"on elsewhere\.example"), writer_lock(tmp_path):
        pass


def test_a_stale_lock_is_taken_over_and_ours_is_removed_when_done(tmp_path):
    _lock(tmp_path, 2**22 + 12345)  # above Linux's pid_max default: no such process
    with writer_lock(tmp_path):
        held = json.loads((tmp_path / LOCK_FILE).read_text())
        assert held == {"host": socket.gethostname(), "pid": os.getpid()}
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_cell_writes_exactly_the_columns_the_store_reads(tiny_sweep):
    rows = [json.loads(path.read_text()) for path in sorted((tiny_sweep / "cells").glob("*.json"))]
    assert rows and all(list(row) == RESULT_COLUMNS for row in rows)


def test_a_row_outside_the_schema_is_refused_before_anything_is_written(tmp_path):
    cell = Cell("c", "m", "attack", "fgsm", "fgsm", Backend.ART, 0.1, (), AttackObjective.MARGIN, 0)
    store = CellStore(tmp_path, [cell])
    examples = pd.DataFrame({"label": [1]})
    with pytest.raises(ValueError, match=rf"missing \['{RESULT_COLUMNS[-1]}'\]"):
        store.save(cell, {column: 0 for column in RESULT_COLUMNS[:-1]}, examples, None)
    with pytest.raises(ValueError, match=r"extra \['colour'\]"):
        store.save(cell, {**dict.fromkeys(RESULT_COLUMNS, 0), "colour": 1}, examples, None)
    assert not (tmp_path / "cells").exists()


def test_a_new_sweep_stopped_before_its_first_cell_leaves_nothing_behind(tmp_path):
    """Ctrl-C while the first transfer cell crafts: its adversarials and lock go too, so the same command starts
    afresh; a folder that holds finished cells keeps everything."""
    from capsrobust.evaluation.store import TRANSFER_DIR, discarded_unless_started, writer_lock

    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt), writer_lock(out), discarded_unless_started(out):
        (out / "sweep.json").write_text("{}")
        (out / TRANSFER_DIR).mkdir()
        (out / TRANSFER_DIR / "pgd-from-cnn__eps0.1__0123.safetensors").write_bytes(b"crafted")
        (out / TRANSFER_DIR / "pgd-from-cnn__eps0.1__0123.safetensors.lock").write_text("")
        raise KeyboardInterrupt
    assert not out.exists()
    kept = tmp_path / "kept"
    with pytest.raises(KeyboardInterrupt), writer_lock(kept), discarded_unless_started(kept):
        (kept / "cells").mkdir()
        (kept / "cells" / "c.json").write_text("{}")
        (kept / TRANSFER_DIR).mkdir()
        (kept / TRANSFER_DIR / "x.safetensors").write_bytes(b"crafted")
        raise KeyboardInterrupt
    assert (kept / TRANSFER_DIR / "x.safetensors").exists()


def test_a_sweep_still_running_is_read_with_every_finished_cells_outcomes(tiny_sweep, tmp_path):
    """examples.csv is written when a sweep ends; while it runs (or after a kill) results.csv is ahead of it. The
    store fills the gap from the cell files, so reports see each finished cell's outcomes, not stale ones."""
    import shutil

    from capsrobust.evaluation.plan import SweepError
    from capsrobust.evaluation.store import load_sweep

    complete = load_sweep(tiny_sweep)
    running = tmp_path / "running"
    shutil.copytree(tiny_sweep, running)
    last = complete.results["cell_id"].iloc[-1]
    complete.examples[complete.examples["cell_id"] != last].to_csv(running / "examples.csv", index=False)
    pd.testing.assert_frame_equal(load_sweep(running).examples, complete.examples)
    (running / "examples.csv").unlink()  # killed before its first stop: no examples.csv at all
    pd.testing.assert_frame_equal(load_sweep(running).examples, complete.examples)
    (running / "cells" / f"{last}.examples.csv").unlink()
    with pytest.raises(SweepError, match=f"cell {last} has a result but no per-example file"):
        load_sweep(running)


def test_a_sweep_records_its_plan_and_the_store_names_the_cells_still_missing(tiny_sweep, tmp_path):
    import shutil

    from capsrobust.evaluation.store import PLAN_FILE, load_sweep

    tables = load_sweep(tiny_sweep)
    assert list(tables.plan["cell_id"]) == list(tables.results["cell_id"])  # the one cell: FGSM at L∞ 0.1
    assert tables.missing_cells().empty
    running = tmp_path / "running"
    shutil.copytree(tiny_sweep, running)
    tables.results.iloc[:0].to_csv(running / "results.csv", index=False)  # killed during its first cell
    missing = load_sweep(running).missing_cells()
    first = tables.results.iloc[0]
    assert missing.to_dict("records") == [{"cell_id": first["cell_id"], "model": first["model"], "label": "fgsm",
                                           "norm": "linf", "eps": 0.1}]
    (running / PLAN_FILE).unlink()  # written before plans were recorded: nothing known to be missing
    assert load_sweep(running).missing_cells().empty


def test_later_stages_read_the_sweep_through_the_store(tiny_sweep, mnist5k):
    record = read_sweep_record(tiny_sweep)
    assert record.n == 6 and record.request == read_sweep_file(tiny_sweep)["request"] and has_adversarials(record)
    cell_id = record.results["cell_id"].iloc[0]
    assert record.adversarials_path(cell_id) == adversarials_path(tiny_sweep, cell_id)
    adversarials = load_adversarials(record, cell_id)
    assert adversarials.shape == (6, 1, 28, 28) and adversarials.dtype == torch.float32
    _, split = load_test_split(record, dataset=mnist5k)
    assert torch.equal(split.labels, mnist5k.test.labels[:6])
    assert list(load_sweep_models(record, torch.device("cpu"))) == list(record.results["model"].unique())


def test_a_missing_or_damaged_sweep_is_refused_in_one_line(tiny_sweep, mnist5k, tmp_path):
    with pytest.raises(SweepError, match="holds no sweep"):
        read_sweep_record(tmp_path)
    (tmp_path / SWEEP_FILE).write_text("{not json")
    with pytest.raises(SweepError, match="is corrupt"):
        read_sweep_file(tmp_path)
    (tmp_path / SWEEP_FILE).write_text("[]")
    with pytest.raises(SweepError, match="no request table"):
        read_sweep_file(tmp_path)
    record = read_sweep_record(tiny_sweep)
    with pytest.raises(SweepError, match="is missing; resume the sweep"):
        load_adversarials(record, "no-such-cell")
    with pytest.raises(SweepError, match="attacked mnist-5k, not mnist"):
        load_test_split(record, dataset=dataclasses.replace(mnist5k, name="mnist"))


@pytest.mark.parametrize("name", ["results.csv", "examples.csv", "plan.csv", "checks.csv"])
@pytest.mark.parametrize(("damage", "reason"), [
    ('"an unterminated quote\n', "not a CSV table"),
    ("a,b\n1,2\n", "no column"),  # another program's table
])
def test_a_damaged_table_is_refused_in_one_line_that_says_how_to_rebuild_it(tiny_sweep, tmp_path, name, damage,
                                                                                reason):
    import shutil

    from capsrobust.errors import TableError
    from capsrobust.evaluation.store import load_sweep

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_sweep, damaged)
    (damaged / name).write_text(damage, encoding="utf-8")
    with pytest.raises(TableError) as raised:
        load_sweep(damaged)
    message = str(raised.value)
    assert message.startswith(f"{damaged / name} is damaged ({reason}") and "--resume" in message
    assert "\n" not in message


def test_a_suite_changed_only_in_what_reports_read_resumes_without_recomputing_a_cell(trained_runs, mnist5k,
                                                                                       tiny_sweep, tmp_path):
    """Adding ``routing_baselines`` (or another report-only key) to a running sweep's suite changes its digest: the
    resumed sweep records the new suite and keeps every finished cell as it was."""
    import shutil

    resumed = tmp_path / "resumed"
    shutil.copytree(tiny_sweep, resumed)
    cells = {path.name: path.read_bytes() for path in (resumed / "cells").iterdir()}
    suite = {"suite": {**TINY_SUITE["suite"], "routing_baselines": ["cnn-tiny"]}, "attack": TINY_SUITE["attack"]}
    run_sweep([trained_runs["cnn-tiny"]], suite_from_dict(suite, source="tiny.toml"), mnist5k, out_dir=resumed,
              backend="art", device="cpu", save_adversarials=True, progress=False, resume=True)
    assert {path.name: path.read_bytes() for path in (resumed / "cells").iterdir()} == cells
    record = read_sweep_file(resumed)
    assert record["request"]["suite"]["suite"]["routing_baselines"] == ["cnn-tiny"]
    assert "routing_baselines" not in record["extended_from"][0]["suite"]["suite"]
