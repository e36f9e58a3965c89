"""A report as a list of blocks (headings, paragraphs, alerts, tables, images), rendered to Markdown and HTML.

``capsrobust.reporting.report`` decides what a report says; this module only knows how to write it down: one list of
blocks becomes a Markdown file whose figures are linked from ``figures/`` and a single HTML file whose figures are
embedded as base64 data URIs, with inline CSS and no scripts, so that it opens anywhere, offline, as one file.
``write_report_dir`` builds the whole directory in a temporary folder beside the target and renames it into
place, so a reader sees the old report or the new one, never half of one.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capsrobust.figures.capsules import save_figure

FIGURES_DIR = "figures"
TABLES_DIR = "tables"


@dataclass(frozen=True)
class Heading:
    """A section heading (level 2 for sections)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Running text."""

    text: str  # inline markup: `code`, **bold**


@dataclass(frozen=True)
class Alert:
    """A box that must not be missed: flagged self-checks (``flagged``) or the all-clear."""

    title: str
    items: tuple[str, ...]
    flagged: bool


@dataclass(frozen=True)
class Table:
    """A table as printed, with the commands that produced and rebuild it."""

    name: str  # tables/NAME.csv holds the raw numbers
    display: pd.DataFrame  # what the report prints
    commands: tuple[tuple[str, str], ...] = ()  # (what it does, command)
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A figure written to ``figures/``, linked from Markdown and embedded in HTML."""

    file: str  # figures/FILE
    caption: str


Block = Heading | Paragraph | Alert | Table | Image


@dataclass
class Draft:
    """The report being assembled: blocks in order, raw tables and figures to write beside them."""

    blocks: list[Block] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # name → matplotlib Figure or a PNG Path to copy

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def table(self, name: str, raw: pd.DataFrame, display: pd.DataFrame, commands: Iterable[tuple[str, str]],
              caption: str = "") -> None:
        self.tables[name] = raw
        self.blocks.append(Table(name, display, tuple(commands), caption))

    def figure(self, name: str, figure: Any, caption: str) -> None:
        self.figures[name] = figure
        self.blocks.append(Image(name, caption))


def write_report_dir(
    draft: Draft, target: Path, formats: Sequence[str], title: str, manifest: dict[str, Any], manifest_name: str
) -> None:
    """Build the whole report in a temporary directory beside ``target`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        (staging / TABLES_DIR).mkdir()
        (staging / FIGURES_DIR).mkdir()
        for name, frame in draft.tables.items():
            frame.to_csv(staging / TABLES_DIR / f"{name}.csv", index=False)
        for name, figure in draft.figures.items():
            if isinstance(figure, Path):
                shutil.copyfile(figure, staging / FIGURES_DIR / name)
            else:
                save_figure(figure, staging / FIGURES_DIR / name)
        if "md" in formats:
            (staging / "report.md").write_text(render_markdown(title, draft.blocks), encoding="utf-8")
        if "html" in formats:
            (staging / "report.html").write_text(render_html(title, draft.blocks, staging / FIGURES_DIR),
                                                 encoding="utf-8")
        (staging / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, target: Path) -> None:
    """Put ``staging`` where ``target`` is; an old report is moved aside first and removed after."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, retired / "report")
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired / "report", target)
        raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def _markdown_cell(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """The report as GitHub-flavoured Markdown; figures are linked from ``figures/``."""
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Alert):
            marker = "WARNING" if block.flagged else "NOTE"
            lines += [f"> [!{marker}]", f"> **{block.title}**", ">"]
            lines += [f"> - {item}" for item in block.items]
            lines.append("")
        elif isinstance(block, Table):
            if block.caption:
                lines += [block.caption, ""]
            frame = block.display
            lines.append("| " + " | ".join(_markdown_cell(c) for c in frame.columns) + " |")
            lines.append("|" + "---|" * len(frame.columns))
            for row in frame.itertuples(index=False):
                lines.append("| " + " | ".join(_markdown_cell(v) for v in row) + " |")
            lines.append("")
            lines.append(f"Table: `tables/{block.name}.csv`")
            lines += [f"- {what}: `{command}`" for what, command in block.commands]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.caption}](figures/{block.file})", "", f"*{block.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, then turn `code` and **bold** into tags."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", escaped)


STYLE_SHEET = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
code { background: #f5f5f5; padding: 0 .2em; font-size: .9em; word-break: break-all; }
.alert { border-left: 6px solid; padding: .6em 1em; margin: 1em 0; }
.alert.flag { border-color: #c62828; background: #fdecea; } .alert.ok { border-color: #2e7d32; background: #edf7ee; }
.caption { color: #444; font-size: .9em; } .commands { font-size: .8em; color: #555; margin: 0 0 1.2em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""


def render_html(title: str, blocks: Sequence[Block], figures_dir: Path) -> str:
    """The report as one HTML file: figures as base64 data URIs, inline CSS, no scripts or external resources."""
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE_SHEET}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Alert):
            kind = "flag" if block.flagged else "ok"
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
            parts.append(f'<div class="alert {kind}"><strong>{html.escape(block.title)}</strong><ul>{items}</ul></div>')
        elif isinstance(block, Table):
            if block.caption:
                parts.append(f'<p class="caption">{_inline(block.caption)}</p>')
            head = "".join(f"<th>{_inline(str(c))}</th>" for c in block.display.columns)
            body = "".join("<tr>" + "".join(f"<td>{_inline(_markdown_cell(v))}</td>" for v in row) + "</tr>"
                           for row in block.display.itertuples(index=False))
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            commands = "".join(f"<li>{html.escape(what)}: <code>{html.escape(command)}</code></li>"
                               for what, command in block.commands)
            parts.append(f'<ul class="commands"><li>table: <code>tables/{html.escape(block.name)}.csv</code></li>'
                         f"{commands}</ul>")
        elif isinstance(block, Image):
            data = base64.b64encode((figures_dir / block.file).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                         f'<figcaption class="caption">{_inline(block.caption)}</figcaption></figure>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
