"""What the attack-table scripts (objectives.py, recon_weight.py) share: their command line, and printing the table.

Each script measures one question on one model and prints a Markdown table with its command and versions; the
options that say which model, which images and how to attack are the same for both, so they live here once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def attack_parser(description: str, *, run_help: str, n_help: str, eps: list[float], steps: int, rel_step: float,
                  seed: int) -> argparse.ArgumentParser:
    """The shared options; a script adds its own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run", required=True, help=run_help)
    parser.add_argument("--data", default="mnist-5k", help="data set name (default: mnist-5k)")
    parser.add_argument("--data-dir", help="folder with the data files of a named data set")
    parser.add_argument("--n", type=int, default=500, help=n_help)
    parser.add_argument("--eps", type=float, nargs="+", default=eps,
                        help=f"L∞ budgets (default: {' '.join(f'{e:g}' for e in eps)})")
    parser.add_argument("--steps", type=int, default=steps, help=f"PGD steps (default: {steps})")
    parser.add_argument("--rel-step", type=float, default=rel_step,
                        help=f"step size / eps (default: 2.5 / {steps})")
    parser.add_argument("--backend", default="art", choices=["art", "foolbox"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    return parser


def print_table(measure: Callable[[argparse.Namespace], str], arguments: argparse.Namespace) -> int:
    """Measure, print the Markdown table, and write it to ``--out`` when given."""
    table = measure(arguments)
    sys.stdout.write(table)
    if arguments.out is not None:
        arguments.out.write_text(table, encoding="utf-8")
    return 0
