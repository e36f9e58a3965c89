"""Headline: clean and robust accuracy per attack and eps, with the best-attack (per-image worst case) row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capsrobust.evaluation.compare import BEST_ATTACK, worst_case
from capsrobust.evaluation.stats import wilson_interval
from capsrobust.figures.results import NORM_TITLES
from capsrobust.reporting.context import (
    ReportContext,
    concat,
    mode_note,
    pct,
    tagged,
)
from capsrobust.reporting.document import Draft, Heading, Table


def headline(context: ReportContext, draft: Draft) -> None:
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
        raw_frames.append(tagged(context, raw, source))
        for norm in ("linf", "l2"):
            rows = raw[raw["norm"] == norm]
            if rows.empty:
                continue
            displays.setdefault(norm, []).append((source, _pivot(rows, list(dict.fromkeys(results["model"])))))
    draft.tables["headline"] = concat(raw_frames)
    for norm, parts in displays.items():
        for source, display in parts:
            suffix = f" — {source.shown}" if context.many else ""
            draft.blocks.append(Table(
                "headline", display,
                (("produced by", context.sweep_command(source)), context.rebuild()),
                f"{NORM_TITLES[norm]}: robust accuracy (%) per attack and eps{suffix}. Clean: clean accuracy (%). "
                f"**best attack** rows: per-image worst case over the model's attacks at that eps or a smaller "
                f"one. 95% Wilson intervals and per-cell wall times in tables/headline.csv."
                f"{mode_note(source.tables.results)}"))


def _pivot(rows: pd.DataFrame, model_order: list[str]) -> pd.DataFrame:
    """Rows (model, attack, backend, objective), columns eps, values robust accuracy in %."""
    keyed = rows.assign(
        attack_shown=np.where(rows["label"] == BEST_ATTACK, "**best attack**", rows["label"]),
        objective_shown=rows["objective_used"].fillna(""),
        column=[f"eps {eps:g}" for eps in rows["eps"]],
        value=[pct(v) for v in rows["robust_accuracy"]],
    )
    index = ["model", "attack_shown", "backend", "objective_shown"]
    order = {key: i for i, key in enumerate(dict.fromkeys(map(tuple, keyed[index].to_numpy().tolist())))}
    table = keyed.pivot_table(index=index, columns="column", values="value", aggfunc="first", sort=False)
    clean = keyed.groupby(index, sort=False)["clean_accuracy"].first().map(pct)
    eps_columns = [f"eps {eps:g}" for eps in sorted(set(rows["eps"]))]
    table = table.reindex(columns=eps_columns).fillna("")
    table.insert(0, "clean", clean)
    table = table.reset_index()
    table["_model"] = table["model"].map({m: i for i, m in enumerate(model_order)})
    table["_row"] = [order[tuple(key)] for key in table[index].to_numpy().tolist()]
    table["_best"] = table["attack_shown"] == "**best attack**"
    table = table.sort_values(["_model", "_best", "_row"], kind="stable").drop(columns=["_model", "_row", "_best"])
    return table.rename(columns={"attack_shown": "attack", "objective_shown": "objective"}).reset_index(drop=True)
