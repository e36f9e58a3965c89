"""Evaluation: clean accuracy, attack sweeps with their self-checks, and the statistics that compare models.

Everything here returns pandas DataFrames (``SweepTables``) or small frozen dataclasses; nothing draws or writes
a report (that is ``capsrobust.figures`` and ``capsrobust.reporting``).
"""

from capsrobust.evaluation.accuracy import Evaluation, evaluate
from capsrobust.evaluation.compare import compare_models, worst_case
from capsrobust.evaluation.comparison import Comparison, compare
from capsrobust.evaluation.plan import SweepError
from capsrobust.evaluation.seeds import across_seeds, compare_across_seeds
from capsrobust.evaluation.stats import compare_paired, wilson_interval
from capsrobust.evaluation.store import SweepTables, load_sweep
from capsrobust.evaluation.sweep import run_sweep

__all__ = [
    "Comparison", "Evaluation", "SweepError", "SweepTables", "across_seeds", "compare", "compare_across_seeds",
    "compare_models",
    "compare_paired", "evaluate", "load_sweep", "run_sweep", "wilson_interval", "worst_case",
]
