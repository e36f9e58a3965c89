"""Reports from the tiny benchmark's tables: every section, embedded figures, no machine paths, atomic rebuilds."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from capsrobust.cli import main
from capsrobust.evaluation.compare import worst_case
from capsrobust.evaluation.store import load_sweep
from capsrobust.reporting.context import pct_interval, points_interval
from capsrobust.reporting.report import PathDisplay, ReportError, build_report

SECTIONS = [
    "## Self-checks: flags",
    "## Headline: clean and robust accuracy",
    "## Robustness curves",
    "## Carlini–Wagner L2 perturbation sizes",
    "## Reconstruction-error detector",
    "## Capsules against CNNs: paired comparison",
    "## Reconstructions, capsule tweaks and adversarial gallery",
    "## Training runs",
    "## Self-checks: full table",
    "## Provenance",
]
TABLES = ["headline", "best_attack", "curves", "cw_l2", "detection", "detection_thresholds", "comparison", "checks",
          "training", "provenance"]


def text_files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*"))
            if p.suffix in {".md", ".html", ".csv", ".json"}}


def test_report_has_every_section_in_order_and_every_table(tiny_benchmark):
    root, _ = tiny_benchmark
    markdown = (root / "report" / "report.md").read_text(encoding="utf-8")
    positions = [markdown.find(heading + "\n") for heading in SECTIONS]
    assert all(p >= 0 for p in positions), [h for h, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    for name in TABLES:
        assert (root / "report" / "tables" / f"{name}.csv").is_file(), name
        assert f"`tables/{name}.csv`" in markdown, name
    # every table is printed with the command that rebuilds it
    assert markdown.count("Table: `tables/") == markdown.count("- rebuild this table: `capsrobust report ")
    assert "- compute this table: `capsrobust compare bench/sweep --baseline cnn-tiny --candidate capsnet-tiny`" \
        in markdown
    assert "capsrobust report bench/sweep --out report --format md,html" in markdown


def test_html_embeds_every_figure_and_loads_nothing(tiny_benchmark):
    root, _ = tiny_benchmark
    report = root / "report"
    pngs = sorted((report / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"robustness_curves.png", "cw_l2.png", "detector_roc.png", "reconstruction-capsnet-tiny.png",
            "tweak-capsnet-tiny.png", "gallery.png"} <= names
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    page = (report / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(pngs)
    for forbidden in ("<script", "<link", "http://", "https://", "@import", 'src="figures/'):
        assert forbidden not in page, forbidden
    markdown = (report / "report.md").read_text(encoding="utf-8")
    assert sorted(re.findall(r"\]\(figures/([^)]+)\)", markdown)) == sorted(names)


def test_detector_section_compares_with_and_without_the_defense_aware_attack(tiny_benchmark):
    root, _ = tiny_benchmark
    aware = pd.read_csv(root / "report" / "tables" / "detection_defense_aware.csv")
    assert set(aware["model"]) == {"capsnet-tiny", "cnn-recon-tiny"}
    at = aware[aware["eps"] == 0.3]
    assert at["defense_aware"].notna().all() and at["standard_worst"].notna().all()
    assert (at["all_worst"] >= at[["standard_worst", "defense_aware"]].max(axis=1)).all()
    for _, budgets in aware.groupby(["model", "norm"]):  # what got past at a smaller eps gets past at a larger one
        ordered = budgets.sort_values("eps")
        assert ordered["all_worst"].is_monotonic_increasing and ordered["eps"].is_unique
    curves = pd.read_csv(root / "report" / "tables" / "best_attack.csv")
    for _, budgets in curves.groupby(["model", "norm"]):
        assert budgets.sort_values("eps")["robust_accuracy"].is_monotonic_decreasing
    markdown = (root / "report" / "report.md").read_text(encoding="utf-8")
    assert "Not measured: cnn-tiny" in markdown and "No defense-aware attack" not in markdown


def test_no_absolute_path_of_the_machine_appears(tiny_benchmark):
    root, _ = tiny_benchmark
    for name, text in text_files(root / "report").items():
        for forbidden in (str(root), str(Path.cwd()), "/work/", "/tmp/", str(Path.home()) + "/"):
            assert forbidden not in text, (name, forbidden)


def test_flags_come_first_and_best_attack_rows_are_the_per_image_worst_case(tiny_benchmark, tmp_path):
    root, _ = tiny_benchmark
    sweep = tmp_path / "sweep"
    shutil.copytree(root / "bench" / "sweep", sweep)
    checks = pd.read_csv(sweep / "checks.csv")
    checks.loc[0, ["check", "status", "detail"]] = ["in-ball", "flag", "7 adversarials outside their eps ball"]
    checks.to_csv(sweep / "checks.csv", index=False)
    out = build_report([sweep], tmp_path / "report", formats=["md"], n_resamples=200)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    flag = markdown.find("**in-ball**")
    assert 0 < flag < markdown.find("## Headline") and "> [!WARNING]" in markdown[:flag]
    assert not (out / "report.html").exists()
    tables = load_sweep(sweep)
    expected = worst_case(tables.results, tables.examples)
    best = pd.read_csv(out / "tables" / "best_attack.csv")
    pd.testing.assert_frame_equal(best[["model", "norm", "eps", "robust_accuracy"]],
                                  expected[["model", "norm", "eps", "robust_accuracy"]])


def test_a_sweep_stopped_before_its_checks_is_flagged_as_unfinished(tiny_benchmark, tmp_path):
    root, _ = tiny_benchmark
    sweep = tmp_path / "sweep"
    shutil.copytree(root / "bench" / "sweep", sweep)
    (sweep / "checks.csv").unlink()  # as a sweep stopped by Ctrl-C or SIGTERM leaves it
    out = build_report([sweep], tmp_path / "report", formats=["md"], n_resamples=200)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    flag = markdown.find("**unfinished sweep**")
    assert 0 < flag < markdown.find("## Headline") and "No self-check flagged" not in markdown
    planned = pd.read_csv(sweep / "plan.csv")
    assert "unfinished" not in [p.stem for p in (out / "tables").iterdir()]  # every planned cell ran
    assert f"{len(planned)} of {len(planned)} planned cells done" in markdown

    # Killed during its last cell: that budget is open, the report names it and lists the cell.
    results = pd.read_csv(sweep / "results.csv")
    last = results.iloc[-1]
    results.iloc[:-1].to_csv(sweep / "results.csv", index=False)
    out = build_report([sweep], tmp_path / "killed", formats=["md"], n_resamples=200)
    markdown = (out / "report.md").read_text(encoding="utf-8")
    title = {"linf": "L∞", "l2": "L2"}[last["norm"]]
    assert f"{len(planned) - 1} of {len(planned)} planned cells done" in markdown
    assert f"Still to run: {title} {last['eps']:g} (1 cells: {last['model']})" in markdown
    assert list(pd.read_csv(out / "tables" / "unfinished.csv")["cell_id"]) == [last["cell_id"]]

    (sweep / "plan.csv").unlink()  # a sweep from before plans were recorded: how much is left is unknown
    out = build_report([sweep], tmp_path / "old", formats=["md"], n_resamples=200)
    assert "no self-check has been computed for it" in (out / "report.md").read_text(encoding="utf-8")


def test_a_run_with_a_damaged_metrics_table_leaves_only_its_training_row_empty(tiny_benchmark, tmp_path):
    root, _ = tiny_benchmark
    bench = tmp_path / "bench"
    shutil.copytree(root / "bench", bench)
    record = bench / "sweep" / "sweep.json"
    record.write_text(record.read_text(encoding="utf-8").replace(str(root / "bench"), str(bench)), encoding="utf-8")
    damaged = sorted((bench / "runs").glob("*/metrics.csv"))[0]
    damaged.write_text("a,b\n1,2\n", encoding="utf-8")  # not our table: no epoch, no val_accuracy
    out = build_report([bench / "sweep"], tmp_path / "report", formats=["md"], n_resamples=200)
    training = pd.read_csv(out / "tables" / "training.csv").set_index("run")
    found = {Path(run).name: bool(value) for run, value in training["found"].items()}
    assert found.pop(damaged.parent.name) is False and all(found.values()) and found


def test_cli_rebuilds_atomically_and_refuses_what_is_not_a_report(tiny_benchmark, tmp_path):
    root, _ = tiny_benchmark
    out = tmp_path / "reports" / "tiny"
    args = ["report", str(root / "bench"), "--out", str(out), "--n-resamples", "200"]
    first = CliRunner().invoke(main, [*args, "--format", "md"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.json", "report.md", "tables"]
    second = CliRunner().invoke(main, [*args, "--format", "html"])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "report.json", "tables"]
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left behind
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine", encoding="utf-8")
    for bad, message in [
        (["report", str(root / "bench"), "--out", str(busy)], "is not a capsrobust report"),
        (["report", str(tmp_path), "--out", str(tmp_path / "r")], "holds no sweep"),
        ([*args, "--format", "pdf"], "unknown report format 'pdf'"),
    ]:
        result = CliRunner().invoke(main, bad)
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.strip().count("\n") == 0
    assert (busy / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_paths_are_shown_relative_to_one_base_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    inside = PathDisplay.for_report(tmp_path / "reports" / "r", [tmp_path / "sweeps" / "s"])
    assert inside.base == tmp_path.resolve()
    assert inside.show(tmp_path / "sweeps" / "s") == "sweeps/s" and inside.show("runs/a") == "runs/a"
    assert inside.show("/opt/data/mnist") == "…/data/mnist"
    command = inside.command(f"capsrobust sweep {tmp_path}/runs/a --out={tmp_path}/sweeps/s --n 20")
    assert command == "capsrobust sweep runs/a --out=sweeps/s --n 20"
    monkeypatch.chdir(tmp_path / "work")  # the report and its sources lie elsewhere: their common folder
    elsewhere = PathDisplay.for_report(tmp_path / "x" / "report", [tmp_path / "x" / "bench" / "sweep"])
    assert elsewhere.show(tmp_path / "x" / "bench" / "sweep") == "bench/sweep"
    with pytest.raises(ReportError, match="no result directory"):
        build_report([], tmp_path / "r")


def test_pct_interval_formats_percent_with_its_interval_and_blanks_missing_values() -> None:
    assert pct_interval([0.5, 0.125], [0.25, 0.1], [0.75, float("nan")]) == ["50.0 [25.0, 75.0]", "12.5 [10.0, ]"]
    assert pct_interval([0.981], [0.97], [0.99], bold=True) == ["**98.1** [97.0, 99.0]"]
    with pytest.raises(ValueError):
        pct_interval([0.5], [0.25, 0.3], [0.75])


def test_points_interval_signs_differences_in_points():
    assert points_interval([0.028, -0.105], [-0.003, -0.132], [0.059, -0.079]) == [
        "+2.8 [-0.3, +5.9]", "-10.5 [-13.2, -7.9]"]
    assert points_interval([0.0], [0.0], [0.0], bold=True) == ["**+0.0** [+0.0, +0.0]"]
