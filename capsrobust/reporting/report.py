"""Reports: Markdown and a self-contained HTML page built only from the result tables on disk.

``build_report(result_dirs, out)`` reads sweep directories (``capsrobust.evaluation.sweep``), their ``detection/``
subfolder when a detection run wrote one, the PNGs in their ``figures/`` and ``detection/`` folders, and the training
run directories that ``sweep.json`` names (``run.json``, ``metrics.csv``). Nothing comes from memory, so a report can
be rebuilt at any time from the same files, and rebuilding it gives the same bytes (no timestamps).

A report directory holds::

    report.md        the report; figures linked as figures/NAME.png
    report.html      the same report in one file: figures embedded as base64 data URIs, inline CSS, no scripts,
                     nothing fetched from the network
    tables/*.csv     every table of the report with raw numbers (the report shows them rounded)
    figures/*.png    every figure
    report.json      what it was built from: sources, a digest of every input file, git commit, files

Sections, in order: self-check flags (first, so that a flagged evaluation is never read past), headline clean
and robust accuracy with a worst-case ("best attack") row per model, robustness curves with 95% Wilson bands,
Carlini–Wagner L2 perturbation sizes, the reconstruction-error detector (with and without the defense-aware
attack), a paired capsule-vs-CNN comparison, figures, training runs, the full checks table, and provenance.
Every table is printed with the command that produced its data and the command that rebuilds it.

No absolute path of the machine appears in a report. Every path is shown relative to one base directory: the
working directory when the report and its sources lie under it, else the deepest directory that holds them all;
the commands printed are meant to be run from there (the rebuild command's ``--out`` shows where the report sits
relative to it). A path outside the base (a command line recorded elsewhere) is shown by its last two components.

The directory is written atomically: everything is built in a temporary directory beside ``out`` and renamed
into place, so a reader never sees a half-written report.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import capsrobust
from capsrobust.attacks import attack_names, get_attack
from capsrobust.detection.pipeline import DetectionTables
from capsrobust.evaluation.compare import BEST_ATTACK, NORM_ORDER, compare_models, worst_case
from capsrobust.evaluation.seeds import across_seeds, compare_across_seeds, model_groups, multi_seed_groups
from capsrobust.evaluation.stats import wilson_interval
from capsrobust.figures.results import NORM_TITLES, perturbation_sizes, robustness_curves, roc_panels
from capsrobust.models.base import Capability, parse_capabilities
from capsrobust.reporting.document import Alert, Draft, Heading, Paragraph, Table, write_report_dir
from capsrobust.reporting.sources import (
    PathDisplay,
    ReportError,
    Source,
    read_source,
    resolve_result_dir,
    sources_digest,
)

FORMATS = ("md", "html")
MANIFEST = "report.json"
MANIFEST_FORMAT = "capsrobust-report/1"
# Attacks that also push the reconstruction distance down: the registry's attacks that need a decoder.
DEFENSE_AWARE_ATTACKS = frozenset(name for name in attack_names() if get_attack(name).needs_reconstruction)
#: How rows of sweeps written before the ``capabilities`` column tell a capsule network: by architecture name.
LEGACY_CAPSULE_ARCHITECTURES = frozenset({"capsnet"})
MINIMIZATION = "minimization"


# ------------------------------------------------------------------------------------------------- the report


def build_report(
    result_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    title: str | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Path:
    """Write a report of the sweeps in ``result_dirs`` into the directory ``out``; returns ``out``.

    ``formats`` chooses among ``md`` and ``html`` (the tables and figures are always written). ``n_resamples``
    and ``seed`` drive the bootstrap intervals of the paired comparison. Raises ``ReportError`` for no result
    directory, an unknown format, or an ``out`` that exists and is not a report.
    """
    chosen = parse_formats(formats)
    if not result_dirs:
        raise ReportError("no result directory given; pass one or more sweep directories")
    target = Path(out)
    if target.exists() and not (target / MANIFEST).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise ReportError(f"{target} exists and is not a capsrobust report; choose another --out or remove it")
    paths = PathDisplay.for_report(target, [resolve_result_dir(result_dir) for result_dir in result_dirs])
    sources = [read_source(result_dir, paths) for result_dir in result_dirs]
    names = [source.shown for source in sources]
    if len(set(names)) != len(names):
        raise ReportError("the same result directory is given twice; pass each once")
    command = shlex.join(["capsrobust", "report", *names, "--out", paths.show(target), "--format", ",".join(chosen)])
    context = _Context(sources, paths, command, target, n_resamples, seed)
    draft = Draft()
    for section in (_title, _flags, _seeds, _headline, _curves, _perturbations, _detection, _comparison, _figures,
                    _training, _all_checks, _provenance):
        section(context, draft)
    manifest = {
        "format": MANIFEST_FORMAT, "sources": names, "inputs_sha256": sources_digest(sources), "formats": list(chosen),
        "git_commit": context.commit, "capsrobust": capsrobust.__version__, "command": command,
        "tables": sorted(f"tables/{name}.csv" for name in draft.tables),
        "figures": sorted(f"figures/{name}" for name in draft.figures),
    }
    write_report_dir(draft, target, chosen, title or _default_title(sources), manifest, MANIFEST)
    return target


def parse_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """``"md,html"`` or a sequence of names → a tuple of known formats, refusing unknown ones."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    unknown = [item for item in chosen if item not in FORMATS]
    if unknown or not chosen:
        raise ReportError(f"unknown report format {(unknown or [''])[0]!r}; choose from: {', '.join(FORMATS)}")
    return chosen


@dataclass
class _Context:
    sources: list[Source]
    paths: PathDisplay
    command: str  # the command that rebuilds this report
    target: Path  # the report directory
    n_resamples: int
    seed: int
    commit: str = field(init=False)

    def __post_init__(self) -> None:
        self.commit = git_commit()

    @property
    def many(self) -> bool:
        return len(self.sources) > 1

    def sweep_command(self, source: Source) -> str:
        return self.paths.command(str(source.record.get("command", ""))) or "unknown"

    def rebuild(self) -> tuple[str, str]:
        return ("rebuild this table", self.command)


def git_commit() -> str:
    """The commit of the capsrobust checkout (``git rev-parse HEAD``), marked when its code has changes.

    The repository's own ``reports/`` do not count: rebuilding a committed report changes it, not the code.
    """
    repository = Path(capsrobust.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 ":(exclude)reports"], cwd=repository,
                                capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (uncommitted changes)" if status else head or "unknown"


def _suite(source: Source) -> dict[str, Any]:
    """The ``[suite]`` table of the suite a sweep ran (name, description, n), as sweep.json records it."""
    return source.record.get("request", {}).get("suite", {}).get("suite", {})


def _default_title(sources: list[Source]) -> str:
    suites = sorted({str(_suite(s).get("name", "?")) for s in sources})
    data = sorted({str(s.record.get("request", {}).get("dataset", "?")) for s in sources})
    return f"Robustness report: {', '.join(suites)} suite on {', '.join(data)}"


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{100 * float(value):.{digits}f}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{float(value):.{digits}g}"


def _seconds(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.1f}" if float(value) < 10 else f"{float(value):.0f}"


def _tagged(context: _Context, frame: pd.DataFrame, source: Source) -> pd.DataFrame:
    """``frame`` with a leading ``sweep`` column when the report has more than one source."""
    return frame.assign(sweep=source.shown)[["sweep", *frame.columns]] if context.many else frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _title(context: _Context, draft: Draft) -> None:
    lines = []
    for source in context.sources:
        request = source.record.get("request", {})
        models = ", ".join(str(m.get("model")) for m in request.get("models", []))
        suite = _suite(source)
        described = f" ({suite['description']})" if suite.get("description") else ""
        lines.append(f"`{source.shown}`: models {models}; suite **{suite.get('name', '?')}**{described}; data "
                     f"{request.get('dataset')} test split, first {request.get('n')} images; backend "
                     f"{request.get('backend')}; seed {request.get('seed')}.")
    draft.add(Paragraph("Built from the result tables on disk only: " + " ".join(lines)))
    draft.add(Paragraph(
        "Robust accuracy is the share of the n images a model classifies correctly and the attack did not break "
        "(images it misclassifies clean count as broken). The **best attack** row is the per-image worst case "
        "over every attack run at that budget, as AutoAttack reports it, not an average. Intervals are 95%: "
        "Wilson intervals for single accuracies, bootstrap over images for paired differences. Percentages are "
        "rounded; `tables/*.csv` hold the raw numbers."))


def _flags(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Self-checks: flags"))
    items, passed, skipped = [], 0, 0
    for source in context.sources:
        checks = source.tables.checks
        for _, row in checks[checks["status"] == "flag"].iterrows():
            where = f"{source.shown}: " if context.many else ""
            items.append(f"{where}**{row['check']}** ({row['model']}): {row['detail']}")
        passed += int((checks["status"] == "pass").sum())
        skipped += int((checks["status"] == "skip").sum())
    if items:
        draft.add(Alert(f"{len(items)} self-check(s) flagged: read these before trusting any number below",
                        tuple(items), True))
    else:
        draft.add(Alert("No self-check flagged", (f"{passed} passed, {skipped} skipped (see the full table of "
                                                  f"checks near the end; after Carlini et al. 2019)",), False))


def _headline(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Headline: clean and robust accuracy"))
    raw_frames, displays = [], {}
    for source in context.sources:
        results, examples = source.tables.results, source.tables.examples
        cells = results.assign(
            n_robust=(results["robust_accuracy"] * results["n"]).round().astype(int),
        )
        bounds = [wilson_interval(int(k), int(n)) for k, n in zip(cells["n_robust"], cells["n"], strict=True)]
        cells = cells.assign(robust_ci_low=[b[0] for b in bounds], robust_ci_high=[b[1] for b in bounds])
        worst = worst_case(results, examples)
        worst_bounds = [wilson_interval(int(k), int(n)) for k, n in zip(worst["n_robust"], worst["n"], strict=True)]
        best = worst.assign(attack=BEST_ATTACK, label=BEST_ATTACK, backend="all", objective_used="", role="best",
                            cell_id="", seed=np.nan, attack_success_rate=np.nan,
                            robust_ci_low=[b[0] for b in worst_bounds], robust_ci_high=[b[1] for b in worst_bounds])
        columns = ["model", "attack", "label", "backend", "norm", "eps", "role", "objective_used", "n",
                   "clean_accuracy", "robust_accuracy", "n_robust", "robust_ci_low", "robust_ci_high",
                   "attack_success_rate", "seconds", "seed", "cell_id"]
        raw = pd.concat([cells[columns], best[columns]], ignore_index=True)
        raw_frames.append(_tagged(context, raw, source))
        for norm in ("linf", "l2"):
            rows = raw[raw["norm"] == norm]
            if rows.empty:
                continue
            displays.setdefault(norm, []).append((source, _pivot(rows, list(dict.fromkeys(results["model"])))))
    draft.tables["headline"] = _concat(raw_frames)
    for norm, parts in displays.items():
        for source, display in parts:
            suffix = f" — {source.shown}" if context.many else ""
            draft.blocks.append(Table(
                "headline", display,
                (("produced by", context.sweep_command(source)), context.rebuild()),
                f"{NORM_TITLES[norm]}: robust accuracy (%) per attack and eps{suffix}. Clean: clean accuracy (%). "
                f"**best attack** rows: per-image worst case over the model's attacks at that eps or a smaller "
                f"one. 95% Wilson intervals and per-cell wall times in tables/headline.csv."))


def _seeds(context: _Context, draft: Draft) -> None:
    """Per recipe over its training seeds: mean robust accuracy with an interval over seeds and images."""
    frames = [(source, across_seeds(source.tables.results, source.tables.examples, n_resamples=context.n_resamples,
                                    seed=context.seed)) for source in context.sources]
    frames = [(source, frame) for source, frame in frames if not frame.empty]
    if not frames:
        return
    draft.add(Heading("Across training seeds"))
    draft.add(Paragraph(
        "Each recipe was trained with several seeds (runs `RECIPE-sK`). Robust accuracy (%) under the best attack "
        "over the attacks that **every seed** of the recipe faced, averaged over seeds, with a 95% bootstrap "
        "interval that resamples training seeds and test images (two-level; with three seeds the seed level is a "
        "rough spread). *per seed*: each seed's own number. *full suite*: the worst case over every attack for "
        "the seed that faced the most (expensive attacks may run on one seed only), so the gap between the two "
        "columns is what those attacks add."))
    raw = []
    for source, frame in frames:
        raw.append(_tagged(context, frame, source))
        display = frame.assign(
            norm=frame["norm"].map(NORM_TITLES),
            clean=[_pct(v) for v in frame["clean_accuracy"]],
            robust=[f"**{_pct(v)}** [{_pct(lo)}, {_pct(hi)}]" for v, lo, hi in
                    zip(frame["robust_accuracy"], frame["ci_low"], frame["ci_high"], strict=True)],
            per_seed=[" ".join(f"{part.split(':')[0]} {_pct(float(part.split(':')[1]))}" for part in cell.split())
                      for cell in frame["per_seed"]],
            full=[f"{_pct(v)} (s{int(s)})" if not pd.isna(v) else "" for v, s in
                  zip(frame["full_suite_robust_accuracy"], frame["full_suite_seed"], strict=True)],
        )[["group", "norm", "eps", "n", "n_seeds", "clean", "robust", "per_seed", "full"]].rename(columns={
            "group": "recipe", "n_seeds": "seeds", "clean": "clean (mean)", "robust": "robust [95% CI]",
            "per_seed": "per seed", "full": "full suite"})
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table(
            "seeds", display, (("produced by", context.sweep_command(source)), context.rebuild()),
            f"Best-attack robust accuracy across training seeds{suffix}; the attacks shared by every seed are "
            f"listed per row in tables/seeds.csv (common_attacks)."))
    draft.tables["seeds"] = _concat(raw)


def _pivot(rows: pd.DataFrame, model_order: list[str]) -> pd.DataFrame:
    """Rows (model, attack, backend, objective), columns eps, values robust accuracy in %."""
    keyed = rows.assign(
        attack_shown=np.where(rows["label"] == BEST_ATTACK, "**best attack**", rows["label"]),
        objective_shown=rows["objective_used"].fillna(""),
        column=[f"eps {eps:g}" for eps in rows["eps"]],
        value=[_pct(v) for v in rows["robust_accuracy"]],
    )
    index = ["model", "attack_shown", "backend", "objective_shown"]
    order = {key: i for i, key in enumerate(dict.fromkeys(map(tuple, keyed[index].to_numpy().tolist())))}
    table = keyed.pivot_table(index=index, columns="column", values="value", aggfunc="first", sort=False)
    clean = keyed.groupby(index, sort=False)["clean_accuracy"].first().map(_pct)
    eps_columns = [f"eps {eps:g}" for eps in sorted(set(rows["eps"]))]
    table = table.reindex(columns=eps_columns).fillna("")
    table.insert(0, "clean", clean)
    table = table.reset_index()
    table["_model"] = table["model"].map({m: i for i, m in enumerate(model_order)})
    table["_row"] = [order[tuple(key)] for key in table[index].to_numpy().tolist()]
    table["_best"] = table["attack_shown"] == "**best attack**"
    table = table.sort_values(["_model", "_best", "_row"], kind="stable").drop(columns=["_model", "_row", "_best"])
    return table.rename(columns={"attack_shown": "attack", "objective_shown": "objective"}).reset_index(drop=True)


def _curves(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Robustness curves"))
    rows, raw = [], []
    for source in context.sources:
        worst = worst_case(source.tables.results, source.tables.examples)
        for _, row in worst.iterrows():
            low, high = wilson_interval(int(row["n_robust"]), int(row["n"]))
            series = f"{row['model']} ({source.shown})" if context.many else str(row["model"])
            rows.append({"series": series, "norm": row["norm"], "eps": row["eps"],
                         "robust_accuracy": row["robust_accuracy"], "ci_low": low, "ci_high": high,
                         "n": row["n"], "measured": True})
        for (model, norm), group in worst.groupby(["model", "norm"], sort=False):
            if (group["eps"] == 0).any():
                continue
            # At eps 0 no attack can change an image: robust accuracy is the clean accuracy.
            n, clean = int(group["n"].iloc[0]), float(group["clean_accuracy"].iloc[0])
            low, high = wilson_interval(round(clean * n), n)
            series = f"{model} ({source.shown})" if context.many else str(model)
            rows.append({"series": series, "norm": norm, "eps": 0.0, "robust_accuracy": clean, "ci_low": low,
                         "ci_high": high, "n": n, "measured": False})
        raw.append(_tagged(context, worst, source))
    curves = pd.DataFrame(rows).sort_values(["series", "norm", "eps"], kind="stable").reset_index(drop=True)
    draft.tables["curves"] = curves
    draft.figure("robustness_curves.png", robustness_curves(curves),
                 "Robust accuracy under the best attack (per-image worst case over every attack at that eps) "
                 "against eps, one line per model, with 95% Wilson bands; L∞ and L2 threat models in separate "
                 "panels. Where no attack ran at eps 0 the curve starts at the clean accuracy (`tables/curves.csv`, "
                 "column measured = False).")
    best = _concat(raw)
    display = best.assign(
        robust=[_pct(v) for v in best["robust_accuracy"]],
        interval=[f"[{_pct(lo)}, {_pct(hi)}]" for lo, hi in (wilson_interval(int(k), int(n)) for k, n in
                                                             zip(best["n_robust"], best["n"], strict=True))],
        clean=[_pct(v) for v in best["clean_accuracy"]],
        seconds=[_seconds(v) for v in best["seconds"]],
        norm=best["norm"].map(NORM_TITLES),
        carried=best["n_carried"],
    )
    keep = [c for c in ("sweep", "model", "norm", "eps", "n", "clean", "robust", "interval", "attacks", "carried",
                        "seconds") if c in display.columns]
    draft.table("best_attack", best, display[keep],
                [("produced by", context.sweep_command(s)) for s in context.sources] + [context.rebuild()],
                "Best attack per (model, norm, eps): robust accuracy (%) with its 95% Wilson interval, the attacks "
                "(label/backend) run at that eps whose per-image outcomes were combined, and their summed wall time "
                "in seconds. An image broken at a smaller eps of the same norm counts as broken (an adversarial "
                "within 0.2 is one within 0.25 too); carried: how many images only that rule broke.")


def _perturbations(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Carlini–Wagner L2 perturbation sizes"))
    sizes, summary = [], []
    for source in context.sources:
        results, examples = source.tables.results, source.tables.examples
        cw = results[(results["attack"] == "cw-l2") & (results["kind"] == MINIMIZATION)]
        # Every threshold cell of one CW run holds the same adversarials: read the first cell of each run.
        for (model, label, backend, _), run in cw.groupby(["model", "label", "backend", "objective"],
                                                                  sort=False):
            first = run.iloc[0]
            cell = examples[examples["cell_id"] == first["cell_id"]]
            correct = cell["clean_pred"] == cell["label"]
            found = cell[correct & (cell["adv_pred"] != cell["label"])]
            name = f"{model} ({backend})" if cw["backend"].nunique() > 1 else str(model)
            if context.many:
                name = f"{name} — {source.shown}"
            sizes.append(pd.DataFrame({"series": name, "l2": found["l2"].to_numpy()}))
            l2 = found["l2"]
            summary.append({
                **({"sweep": source.shown} if context.many else {}), "model": model, "label": label,
                "backend": backend, "objective_used": first["objective_used"], "n": len(cell),
                "n_clean_correct": int(correct.sum()), "n_found": len(found),
                "found_rate": len(found) / int(correct.sum()) if int(correct.sum()) else np.nan,
                "l2_q25": l2.quantile(0.25) if len(l2) else np.nan, "l2_median": l2.median() if len(l2) else np.nan,
                "l2_q75": l2.quantile(0.75) if len(l2) else np.nan, "l2_mean": l2.mean() if len(l2) else np.nan,
                "params": first["params"], "seconds": float(first["seconds"]), "seed": first["seed"],
                "command": context.sweep_command(source),
            })
    if not summary:
        draft.add(Paragraph("No Carlini–Wagner L2 cells in these sweeps (the quick suite has none); the standard "
                            "and full suites run `cw-l2`."))
        return
    frame = pd.DataFrame(summary)
    draft.figure("cw_l2.png", perturbation_sizes(_concat(sizes)),
                 "L2 size of the Carlini–Wagner adversarials per model, over the clean-correct images the attack "
                 "misclassified (left: histogram, right: cumulative share). Larger means harder to fool; the "
                 "images where CW found nothing are counted in the table (n_found).")
    found = [f"{f} / {c}" for f, c in zip(frame["n_found"], frame["n_clean_correct"], strict=True)]
    display = frame.assign(found=found,
                           **{key: [_num(v) for v in frame[key]] for key in ("l2_q25", "l2_median", "l2_q75",
                                                                              "l2_mean")},
                           seconds=[_seconds(v) for v in frame["seconds"]])
    keep = [c for c in ("sweep", "model", "backend", "objective_used", "found", "l2_q25", "l2_median", "l2_q75",
                        "l2_mean", "seconds") if c in display.columns]
    draft.table("cw_l2", frame.drop(columns=["command"]), display[keep],
                [("produced by", context.sweep_command(s)) for s in context.sources] + [context.rebuild()],
                "CW L2 adversarials found among the clean-correct images, and the quartiles and mean of their L2 "
                "norm; seconds: wall time of the one CW run per model and backend.")


def _detection(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Reconstruction-error detector"))
    with_tables = [s for s in context.sources if s.detection is not None and not s.detection.detection.empty]
    if not with_tables:
        names = " ".join(s.shown for s in context.sources)
        draft.add(Paragraph(f"No detection tables in these sweeps: run `capsrobust detect {names}` (needs a sweep "
                            f"run with `--save-adversarials` and a model with a decoder) and rebuild the report."))
        return
    draft.add(Paragraph(
        "The detector flags an input when its reconstruction from the predicted class lies farther from it than a "
        "threshold, the chosen percentile of clean validation scores (DARCCC, Frosst et al. 2018). **Undetected "
        "success** is the share of attacked images that are misclassified and not flagged: what an attacker "
        "facing model and detector achieves. The defense-aware attack (`pgd-linf-recon`, Qin et al. 2020) "
        "minimises the reconstruction distance while it attacks the class; a detector is only worth what it "
        "keeps against that attack."))
    if not any(s.detection.detection["attack"].isin(DEFENSE_AWARE_ATTACKS).any() for s in with_tables if s.detection):
        draft.add(Paragraph(
            f"**No defense-aware attack in these detection tables**: the detector is measured only against attacks "
            f"that ignore it, which overstates it. Add `pgd-linf-recon` to the suite "
            f"({', '.join(sorted(DEFENSE_AWARE_ATTACKS))} are recognised)."))
    skipped = [f"{row['model']} ({row['reason']})" for source in with_tables if source.detection is not None
               for _, row in source.detection.skipped.iterrows()]
    if skipped:
        draft.add(Paragraph("Not measured: " + "; ".join(skipped) + "."))
    thresholds, cells, aware, scores, fprs = [], [], [], [], {}
    for source in with_tables:
        tables = source.detection
        assert tables is not None
        thresholds.append(_tagged(context, tables.thresholds, source))
        shown = tables.detection
        if "command" in shown:
            shown = shown.assign(command=[context.paths.command(str(c)) for c in shown["command"].fillna("")])
        cells.append(_tagged(context, shown, source))
        aware.append(_tagged(context, _defense_aware(tables), source))
        scores.append(_roc_scores(context, source, tables))
        for _, row in tables.thresholds.iterrows():
            fprs[str(row["model"])] = float(row.get("clean_test_fpr", np.nan))
    detection_command = [("produced by", _detection_command(context, s)) for s in with_tables]
    frame = _concat(thresholds)
    if not frame.empty:
        display = frame.assign(**{k: [_num(v, 4) for v in frame[k]] for k in ("threshold",) if k in frame},
                               **{k: [_pct(v) for v in frame[k]] for k in ("clean_test_fpr",) if k in frame})
        draft.table("detection_thresholds", frame, display, [*detection_command, context.rebuild()],
                    "Thresholds per model: the percentile of clean validation scores, and the false-positive rate "
                    "that threshold gives on the clean test images (%).")
    frame = _concat(aware)
    if not frame.empty:
        display = frame.assign(**{k: [_pct(v) for v in frame[k]] for k in
                                  ("standard_worst", "defense_aware", "all_worst")},
                               **{k: [_num(v) for v in frame[k]] for k in ("auc_standard_min", "auc_defense_aware")},
                               norm=frame["norm"].map(NORM_TITLES)).rename(columns=DEFENSE_AWARE_HEADERS)
        draft.table("detection_defense_aware", frame, display, [*detection_command, context.rebuild()],
                    "Undetected success (%) per model and eps: worst case per image over the standard attacks, the "
                    "defense-aware attack alone, and the worst case over all attacks (an image an attack got past "
                    "model and detector at a smaller eps of the same norm counts at larger ones); lowest AUC among "
                    "the standard attacks at that eps and the AUC against the defense-aware attack.")
    frame = _concat(cells)
    display = frame.assign(
        attack=[f"{label}/{backend}" for label, backend in zip(frame["label"], frame["backend"], strict=True)],
        **{k: [_num(v) for v in frame[k]] for k in ("auc", "auc_all") if k in frame},
        **{k: [_pct(v) for v in frame[k]] for k in ("true_positive_rate", "false_positive_rate",
                                                    "attack_success_rate", "undetected_success_rate") if k in frame},
    )
    keep = [c for c in ("sweep", "model", "attack", "eps", "n", "auc", "auc_all", "false_positive_rate",
                        "true_positive_rate", "attack_success_rate", "undetected_success_rate") if c in display]
    draft.table("detection", frame, display[keep], [*detection_command, context.rebuild()],
                "Per attack cell: ROC AUC of successful adversarials (auc) and of every attacked image (auc_all) "
                "against clean images; rates in %: false positives on clean test images, true positives among "
                "successful adversarials, attack success, undetected success.")
    roc = _concat(scores)
    if not roc.empty:
        draft.figure("detector_roc.png", roc_panels(roc, fprs),
                     "ROC curves of the detector per model, every attack in one panel (defense-aware ones marked) at "
                     "its largest eps: successful adversarials against the same images clean. The dashed line is "
                     "the calibrated threshold's false-positive rate on clean test images.")
    for source in with_tables:
        for path in source.detection_figures:
            name = _figure_name(context, source, path.name)
            draft.figure(name, path, f"{_caption(path)} (written by `capsrobust detect`"
                                     f"{', ' + source.shown if context.many else ''}).")


DEFENSE_AWARE_HEADERS = {
    "standard_worst": "undetected, standard attacks (worst case)", "defense_aware": "undetected, defense-aware",
    "all_worst": "undetected, all attacks (worst case)", "auc_standard_min": "AUC, standard (lowest)",
    "auc_defense_aware": "AUC, defense-aware",
}


def _detection_command(context: _Context, source: Source) -> str:
    assert source.detection is not None
    commands = source.detection.detection.get("command")
    if commands is not None and len(commands.dropna()):
        return context.paths.command(str(commands.dropna().iloc[0]))
    return f"capsrobust detect {source.shown}"


def _defense_aware(tables: DetectionTables) -> pd.DataFrame:
    """Undetected success per (model, norm, eps) with and without the defense-aware attacks, worst case per image.

    As for robust accuracy (``capsrobust.evaluation.compare.worst_case_examples``), an image an attack got past the
    model and the detector at a smaller eps of the same norm counts at every larger eps: the threshold does not
    depend on eps.
    """
    cells, examples = tables.detection, tables.examples
    if cells.empty or examples.empty:
        return pd.DataFrame()
    joined = examples.merge(cells[["cell_id", "attack", "norm", "eps", "auc"]], on="cell_id", how="inner")
    joined = joined.assign(undetected=joined["success"].astype(bool) & ~joined["flagged"].astype(bool),
                           aware=joined["attack"].isin(DEFENSE_AWARE_ATTACKS))
    rows = []
    for (model, norm), budgets in joined.groupby(["model", "norm"], sort=False):
        n = int(budgets["index"].nunique())
        seen: dict[str, set[int]] = {"standard": set(), "aware": set(), "all": set()}
        for eps, group in budgets.groupby("eps", sort=True):
            parts = {"standard": group[~group["aware"]], "aware": group[group["aware"]], "all": group}
            for kind, part in parts.items():
                seen[kind] |= set(part.loc[part["undetected"], "index"])
            cell_rows = cells[(cells["model"] == model) & (cells["norm"] == norm) & (cells["eps"] == eps)]
            aware_cells = cell_rows[cell_rows["attack"].isin(DEFENSE_AWARE_ATTACKS)]
            standard_cells = cell_rows[~cell_rows["attack"].isin(DEFENSE_AWARE_ATTACKS)]
            rows.append({
                "model": model, "norm": norm, "eps": float(eps), "n": n,
                **{column: len(seen[kind]) / n if len(parts[kind]) else np.nan for column, kind in
                   (("standard_worst", "standard"), ("defense_aware", "aware"), ("all_worst", "all"))},
                "auc_standard_min": float(standard_cells["auc"].min()) if len(standard_cells) else np.nan,
                "auc_defense_aware": float(aware_cells["auc"].min()) if len(aware_cells) else np.nan,
            })
    return pd.DataFrame(rows)


def _roc_scores(context: _Context, source: Source, tables: DetectionTables) -> pd.DataFrame:
    """Score rows for the ROC figure: each attack (label/backend) at its largest eps, against the same images clean."""
    cells, examples = tables.detection, tables.examples
    if cells.empty or examples.empty:
        return pd.DataFrame()
    frames = []
    for (_, _, _), group in cells.groupby(["model", "label", "backend"], sort=False):
        cell = group.loc[group["eps"].idxmax()]
        rows = examples[examples["cell_id"] == cell["cell_id"]]
        mark = " (defense-aware)" if cell["attack"] in DEFENSE_AWARE_ATTACKS else ""
        name = f"{cell['label']}/{cell['backend']} eps {cell['eps']:g}{mark}"
        model = f"{cell['model']} ({source.shown})" if context.many else str(cell["model"])
        successful = rows[rows["success"].astype(bool)]
        frames.append(pd.DataFrame({"model": model, "curve": name, "kind": "adversarial",
                                    "score": successful["adv_score"].to_numpy()}))
        frames.append(pd.DataFrame({"model": model, "curve": name, "kind": "clean",
                                    "score": rows["clean_score"].to_numpy()}))
    return _concat(frames)


def is_capsule_model(row: pd.Series) -> bool:
    """Whether a results row's model scores classes by capsule lengths, as its ``capabilities`` record.

    Rows without that column, or with it empty (a model with no capabilities reads back from CSV as missing),
    fall back to the architecture name, which gives the same answer for every architecture those sweeps knew.
    """
    recorded = row.get("capabilities")
    if isinstance(recorded, str) and recorded:
        return Capability.CAPSULE_LENGTHS in parse_capabilities(recorded)
    return row["architecture"] in LEGACY_CAPSULE_ARCHITECTURES


def _capsule_pairs(results: pd.DataFrame, names: dict[str, str]) -> list[tuple[str, str]]:
    """(baseline, candidate) for every CNN and capsule network among ``names`` (name → one of its models)."""
    rows = results.drop_duplicates("model").set_index("model")
    capsules = [name for name, model in names.items() if is_capsule_model(rows.loc[model])]
    others = [name for name, model in names.items() if not is_capsule_model(rows.loc[model])]
    return [(baseline, candidate) for candidate in capsules for baseline in others]


def _comparison(context: _Context, draft: Draft) -> None:
    pairs, group_pairs = [], []
    for source in context.sources:
        results = source.tables.results
        grouped = multi_seed_groups(results)
        # recipes with several seeds are compared as groups; single runs model by model, as before seeds
        singles = {model: model for group, members in model_groups(results).items() if group not in grouped
                   for model, _ in members}
        pairs += [(source, baseline, candidate) for baseline, candidate in _capsule_pairs(results, singles)]
        group_pairs += [(source, baseline, candidate) for baseline, candidate in
                        _capsule_pairs(results, {group: members[0][0] for group, members in grouped.items()})]
    if group_pairs:
        _group_comparison(context, draft, group_pairs)
    if not pairs:
        return
    draft.add(Heading("Capsules against CNNs: paired comparison"))
    draft.add(Paragraph(
        "Candidate (capsule network) minus baseline (CNN) robust accuracy on the same images, in points, with a "
        "bootstrap 95% interval over images and McNemar's exact p-value on the images where exactly one model is "
        "robust (only_b: baseline only, only_c: candidate only). p-values are per row, not corrected for the "
        "number of rows. **best attack** rows compare the per-image worst cases."))
    raw = []
    for source, baseline, candidate in pairs:
        frame = compare_models(source.tables, baseline, candidate, n_resamples=context.n_resamples,
                               seed=context.seed)
        frame = frame.assign(_best=frame["attack"] != BEST_ATTACK, _norm=frame["norm"].map(NORM_ORDER))
        frame = frame.sort_values(["_best", "_norm", "label", "eps"], kind="stable")
        frame = frame.drop(columns=["_best", "_norm"]).reset_index(drop=True)
        raw.append(_tagged(context, frame, source))
        display = frame.assign(
            attack=["**best attack**" if a == BEST_ATTACK else f"{label}/{backend}"
                    for a, label, backend in zip(frame["attack"], frame["label"], frame["backend"], strict=True)],
            norm=frame["norm"].map(NORM_TITLES),
            baseline_pct=[_pct(v) for v in frame["baseline_robust_accuracy"]],
            candidate_pct=[_pct(v) for v in frame["candidate_robust_accuracy"]],
            difference_pts=[f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in
                            zip(frame["difference"], frame["ci_low"], frame["ci_high"], strict=True)],
            p=[_num(v) for v in frame["mcnemar_p"]],
        )
        display = display[["attack", "norm", "eps", "n", "baseline_pct", "candidate_pct", "difference_pts",
                           "only_baseline", "only_candidate", "p"]].rename(columns={
            "baseline_pct": baseline, "candidate_pct": candidate, "difference_pts": "difference (pts) [95% CI]",
            "only_baseline": "only_b", "only_candidate": "only_c", "p": "McNemar p"})
        command = shlex.join(["capsrobust", "compare", source.shown, "--baseline", baseline, "--candidate",
                              candidate])
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table("comparison", display, (("compute this table", command), context.rebuild()),
                                  f"{candidate} (candidate) against {baseline} (baseline){suffix}: robust "
                                  f"accuracy (%) on the same {int(frame['n'].max())} images."))
    draft.tables["comparison"] = _concat(raw)


def _group_comparison(context: _Context, draft: Draft, pairs: list[tuple[Source, str, str]]) -> None:
    draft.add(Heading("Capsules against CNNs across training seeds"))
    draft.add(Paragraph(
        "Candidate (capsule network) minus baseline (CNN) best-attack robust accuracy, in points, averaged over "
        "each recipe's training seeds, over the attacks every seed of both recipes faced. The 95% interval "
        "resamples each recipe's seeds independently and the test images jointly (they are the same images for "
        "both, so the pairing is kept). *per seed*: seed k against seed k, with an interval over images only."))
    raw = []
    for source, baseline, candidate in pairs:
        frame = compare_across_seeds(source.tables.results, source.tables.examples, baseline, candidate,
                                     n_resamples=context.n_resamples, seed=context.seed)
        raw.append(_tagged(context, frame, source))
        display = frame.assign(
            norm=frame["norm"].map(NORM_TITLES),
            base=[_pct(v) for v in frame["baseline_robust_accuracy"]],
            cand=[_pct(v) for v in frame["candidate_robust_accuracy"]],
            difference=[f"**{100 * d:+.1f}** [{100 * lo:+.1f}, {100 * hi:+.1f}]" for d, lo, hi in
                        zip(frame["difference"], frame["ci_low"], frame["ci_high"], strict=True)],
        )[["norm", "eps", "n", "base", "cand", "difference", "per_seed_differences"]].rename(columns={
            "base": baseline, "cand": candidate, "difference": "difference (pts) [95% CI]",
            "per_seed_differences": "per seed (pts) [95% CI, images]"})
        command = shlex.join(["capsrobust", "compare", source.shown, "--baseline", baseline, "--candidate",
                              candidate])
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table("seed_comparison", display, (("compute this table", command), context.rebuild()),
                                  f"{candidate} (candidate) against {baseline} (baseline){suffix}, seeds "
                                  f"{frame['candidate_seeds'].iloc[0] if not frame.empty else ''} against "
                                  f"{frame['baseline_seeds'].iloc[0] if not frame.empty else ''}."))
    draft.tables["seed_comparison"] = _concat(raw)


def _figures(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Reconstructions, capsule tweaks and adversarial gallery"))
    found = [(source, path) for source in context.sources for path in sorted(source.figures, key=_figure_order)]
    if not found:
        names = " ".join(source.shown for source in context.sources)
        draft.add(Paragraph(
            f"No figures in the sweeps' `figures/` folders. `capsrobust benchmark` writes them; by hand: "
            f"`capsrobust reconstruct RUN --out SWEEP/figures/reconstruction-MODEL.png`, `capsrobust tweak RUN "
            f"--out SWEEP/figures/tweak-MODEL.png`, `capsrobust gallery SWEEP --out SWEEP/figures/gallery.png` "
            f"(for {names}), then rebuild the report."))
        return
    draft.add(Paragraph("These PNGs are taken as they are from the result directories' `figures/` folders, where "
                        "`capsrobust benchmark` drew them from the swept checkpoints with `capsrobust.figures`, "
                        "so the report needs neither the models nor the data to be rebuilt."))
    for source, path in found:
        draft.figure(_figure_name(context, source, path.name), path, _caption(path) + (
            f" ({source.shown})" if context.many else ""))


FIGURE_CAPTIONS = {
    "reconstruction": "Test images (top) over their reconstructions from the predicted class (middle) and the "
                      "class scores (bottom)",
    "tweak": "Capsule tweaks: each row moves one dimension of the winning capsule (the class vector for CNN+R) "
             "and decodes",
    "gallery": "Adversarial gallery",
    "detection_histograms": "Detector scores (reconstruction distance) of clean and adversarial images",
    "detection_roc": "ROC curves drawn by the detection run",
}


def _figure_order(path: Path) -> tuple[int, str]:
    """Reconstructions, then tweaks, then the gallery, then anything else, each by name."""
    kinds = list(FIGURE_CAPTIONS)
    kind = next((i for i, key in enumerate(kinds) if path.stem == key or path.stem.startswith(key + "-")), len(kinds))
    return kind, path.name


def _caption(path: Path) -> str:
    """A caption from a figure's file name: ``KIND-MODEL.png`` → the kind's caption and the model."""
    stem = path.stem
    for key, text in FIGURE_CAPTIONS.items():
        if stem == key or stem.startswith(key + "-"):
            model = stem[len(key) + 1:]
            return text + (f": {model}" if model else "")
    return stem.replace("_", " ").replace("-", " ")


def _figure_name(context: _Context, source: Source, name: str) -> str:
    if not context.many:
        return name
    index = context.sources.index(source)
    return f"sweep{index + 1}-{name}"


def _training(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Training runs"))
    frame = _concat([_tagged(context, source.runs, source) for source in context.sources])
    if frame.empty or not frame.get("found", pd.Series(dtype=bool)).any():
        draft.add(Paragraph("The run directories named in sweep.json were not found from here; the sweep tables "
                            "still identify each checkpoint by its SHA-256."))
    if frame.empty:
        return
    display = frame.assign(
        **{k: [_pct(v) for v in frame[k]] for k in ("best_val_accuracy",) if k in frame},
        **{k: ["" if pd.isna(v) else f"{v:.0f}" for v in frame[k]] for k in ("train_seconds", "images_per_second")
           if k in frame},
    )
    keep = [c for c in ("sweep", "model", "run", "recipe", "epochs", "best_val_accuracy", "best_epoch",
                        "train_seconds", "images_per_second", "device", "seed", "weights_sha256") if c in display]
    commands = sorted({str(c) for c in frame.get("command", pd.Series(dtype=str)).dropna() if str(c)})
    draft.table("training", frame, display[keep], [("trained by", c) for c in commands] + [context.rebuild()],
                "Training runs behind the swept checkpoints (best = highest validation accuracy, %); wall time in "
                "seconds; the first 12 hex digits of the weights' SHA-256.")


def _all_checks(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Self-checks: full table"))
    frame = _concat([_tagged(context, source.tables.checks, source) for source in context.sources])
    draft.table("checks", frame, frame, [("produced by", context.sweep_command(s)) for s in context.sources]
                + [context.rebuild()],
                "Every self-check of the sweeps (pass, flag, skip), after Carlini et al. (2019), *On Evaluating "
                "Adversarial Robustness*; see docs/attacks.md for what each one tests.")


def _provenance(context: _Context, draft: Draft) -> None:
    draft.add(Heading("Provenance"))
    rows, cells = [], []
    for source in context.sources:
        request, results = source.record.get("request", {}), source.tables.results
        minimization = results["kind"] == MINIMIZATION
        once = pd.concat([results[~minimization],  # one CW run serves every threshold: count it once
                          results[minimization].drop_duplicates(["model", "label", "backend", "objective"])])
        versions = source.record.get("versions", {})
        rows.append({
            "sweep": source.shown, "command": context.sweep_command(source), "seed": request.get("seed"),
            "suite": _suite(source).get("name"), "suite_sha256": str(request.get("suite_sha256", ""))[:12],
            "data": request.get("dataset"), "n": request.get("n"), "backend": request.get("backend"),
            "objective": request.get("objective") or "each model's default",
            "device": ", ".join(sorted(set(map(str, results["device"])))),
            "batch_size": request.get("batch_size"), "cells": len(results),
            "attack_seconds": float(once["seconds"].sum()),
            "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        })
        per_model = once.groupby("model", sort=False)["seconds"].sum()
        for model, seconds in per_model.items():
            cells.append({**({"sweep": source.shown} if context.many else {}), "model": model,
                          "cells": int((results["model"] == model).sum()), "attack_seconds": float(seconds)})
    frame = pd.DataFrame(rows)
    draft.add(Paragraph(f"Git commit of the capsrobust checkout that built this report: `{context.commit}`. "
                        f"capsrobust {capsrobust.__version__}. Rebuild the whole report with `{context.command}`. "
                        f"Every path in this report is relative to the directory in which this report is "
                        f"`{context.paths.show(context.target)}`; run the commands from there."))
    display = frame.assign(attack_seconds=[_seconds(v) for v in frame["attack_seconds"]])
    if len(display) == 1:  # one sweep: a two-column table reads better than one very wide row
        display = pd.DataFrame({"field": display.columns, "value": display.iloc[0].astype(str).to_numpy()})
    draft.table("provenance", frame, display, [context.rebuild()],
                "What each sweep was asked for and ran with: its command line, seed, suite (and its SHA-256), data, "
                "backend, device, library versions, and the wall time of its attacks in seconds (a CW run counted "
                "once). Per-cell wall times and seeds are in tables/headline.csv.")
    wall = pd.DataFrame(cells)
    draft.table("wall_times", wall, wall.assign(attack_seconds=[_seconds(v) for v in wall["attack_seconds"]]),
                [context.rebuild()], "Attack wall time per model (seconds).")
