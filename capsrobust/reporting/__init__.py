"""Reporting: turn finished sweep and detection tables into one Markdown/HTML report with its CSV tables.

``sources`` gathers the inputs, ``report`` decides what the report says, ``document`` writes it down.
"""

from capsrobust.reporting.report import ReportError, build_report

__all__ = ["ReportError", "build_report"]
