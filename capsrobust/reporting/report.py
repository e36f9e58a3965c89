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
from collections.abc import Sequence
from pathlib import Path

import capsrobust
from capsrobust.reporting.context import ReportContext, suite_of
from capsrobust.reporting.document import Draft, write_report_dir
from capsrobust.reporting.sections import SECTIONS
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
    context = ReportContext(sources, paths, command, target, n_resamples, seed)
    draft = Draft()
    for section in SECTIONS:
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


def _default_title(sources: list[Source]) -> str:
    suites = sorted({str(suite_of(s).get("name", "?")) for s in sources})
    data = sorted({str(s.record.get("request", {}).get("dataset", "?")) for s in sources})
    return f"Robustness report: {', '.join(suites)} suite on {', '.join(data)}"
