"""The report's sections, one module each, in the order a reader meets them.

A section is a function ``(context, draft) -> None`` that reads the sources in ``context`` (tables on disk only)
and appends headings, paragraphs, tables and figures to ``draft``; it may add nothing when its data is absent.
A new section is a module here and one entry in ``SECTIONS``.
"""

from collections.abc import Callable

from capsrobust.reporting.context import ReportContext
from capsrobust.reporting.document import Draft
from capsrobust.reporting.sections import (
    checks,
    comparison,
    curves,
    detection,
    figures,
    headline,
    perturbations,
    provenance,
    robust_training,
    routing,
    seeds,
    title,
    training,
)

Section = Callable[[ReportContext, Draft], None]

SECTIONS: tuple[Section, ...] = (
    title.title,
    checks.flags,  # first, so that a flagged evaluation is never read past
    seeds.seeds,
    headline.headline,
    curves.curves,
    perturbations.perturbations,
    detection.detection,
    comparison.comparison,
    routing.routing,
    robust_training.robust_training,
    figures.figures,
    training.training,
    checks.all_checks,
    provenance.provenance,
)
