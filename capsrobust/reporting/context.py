"""What every report section shares: the sources, how paths are shown, the rebuild command, number formats."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import capsrobust
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.document import Draft, Table
from capsrobust.reporting.sources import PathDisplay, Source


@dataclass
class ReportContext:
    """The sources of one report and how it shows them: what each section reads, nothing it computes."""

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


def suite_of(source: Source) -> dict[str, Any]:
    """The ``[suite]`` table of the suite a sweep ran (name, description, n), as sweep.json records it."""
    return source.record.get("request", {}).get("suite", {}).get("suite", {})


def mode_note(results: pd.DataFrame) -> str:
    """What a table built from ``results`` means when its sweep ran as a cascade (empty for a full sweep)."""
    if "mode" not in results.columns or not (results["mode"] == "cascade").any():
        return ""
    return (" Mode: cascade. Each attack ran only on the images every attack before it (at this eps and every "
            "smaller one, in the suite's order) left robust, so per-attack numbers are cumulative, not standalone; "
            "the best-attack rows are exact.")


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{100 * float(value):.{digits}f}"


def pct_interval(values: Iterable[Any], lows: Iterable[Any], highs: Iterable[Any], *, bold: bool = False) -> list[str]:
    """"v [lo, hi]" in percent per row, the value in bold where it is the table's headline column."""
    mark = "**" if bold else ""
    return [f"{mark}{pct(v)}{mark} [{pct(lo)}, {pct(hi)}]" for v, lo, hi in zip(values, lows, highs, strict=True)]


def points_interval(values: Iterable[Any], lows: Iterable[Any], highs: Iterable[Any], *, bold: bool = False
                    ) -> list[str]:
    """"+d [lo, hi]" in signed percentage points per row: differences and gaps, where the sign is the news."""
    mark = "**" if bold else ""
    return [f"{mark}{100 * v:+.1f}{mark} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            for v, lo, hi in zip(values, lows, highs, strict=True)]


def seed_difference_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``compare_across_seeds`` frame with its numbers as printed: the norm's title, both groups' robust accuracy
    (``base``, ``cand``) and the difference in bold with its interval."""
    return frame.assign(
        norm=frame["norm"].map(NORM_TITLES),
        base=[pct(v) for v in frame["baseline_robust_accuracy"]],
        cand=[pct(v) for v in frame["candidate_robust_accuracy"]],
        difference=points_interval(frame["difference"], frame["ci_low"], frame["ci_high"], bold=True),
    )


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return f"{float(value):.{digits}g}"


def seconds_text(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.1f}" if float(value) < 10 else f"{float(value):.0f}"


def tagged(context: ReportContext, frame: pd.DataFrame, source: Source) -> pd.DataFrame:
    """``frame`` with a leading ``sweep`` column when the report has more than one source."""
    return frame.assign(sweep=source.shown)[["sweep", *frame.columns]] if context.many else frame


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tables_per_source(
    context: ReportContext,
    draft: Draft,
    name: str,
    frames: Iterable[tuple[Source, pd.DataFrame]],
    display: Callable[[pd.DataFrame], pd.DataFrame],
    caption: Callable[[str], str],
) -> None:
    """One printed table per sweep (``display`` of its frame, with the command that produced the sweep and the
    report's rebuild command beside it) and one raw ``tables/NAME.csv`` of them all. ``caption`` gets " (SWEEP)"
    when the report has several sweeps, else ""."""
    raw = []
    for source, frame in frames:
        raw.append(tagged(context, frame, source))
        suffix = f" ({source.shown})" if context.many else ""
        draft.blocks.append(Table(name, display(frame), (("produced by", context.sweep_command(source)),
                                                         context.rebuild()), caption(suffix)))
    draft.tables[name] = concat(raw)


FIGURE_CAPTIONS = {
    "reconstruction": "Test images (top) over their reconstructions from the predicted class (middle) and the "
                      "class scores (bottom)",
    "tweak": "Capsule tweaks: each row moves one dimension of the winning capsule (the class vector for CNN+R) "
             "and decodes",
    "gallery": "Adversarial gallery",
    "detection_histograms": "Detector scores (reconstruction distance) of clean and adversarial images",
}


def figure_order(path: Path) -> tuple[int, str]:
    """Reconstructions, then tweaks, then the gallery, then anything else, each by name."""
    kinds = list(FIGURE_CAPTIONS)
    kind = next((i for i, key in enumerate(kinds) if path.stem == key or path.stem.startswith(key + "-")), len(kinds))
    return kind, path.name


def caption(path: Path) -> str:
    """A caption from a figure's file name: ``KIND-MODEL.png`` → the kind's caption and the model."""
    stem = path.stem
    for key, text in FIGURE_CAPTIONS.items():
        if stem == key or stem.startswith(key + "-"):
            model = stem[len(key) + 1:]
            return text + (f": {model}" if model else "")
    return stem.replace("_", " ").replace("-", " ")


def figure_name(context: ReportContext, source: Source, name: str) -> str:
    if not context.many:
        return name
    index = context.sources.index(source)
    return f"sweep{index + 1}-{name}"
