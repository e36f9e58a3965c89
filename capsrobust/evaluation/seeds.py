"""Results across training seeds: one number per recipe with an interval that covers seeds and images.

A benchmark that trains each recipe with several seeds attacks runs labelled ``RECIPE-sK`` (``capsnet-paper-s1``);
the sweep records each model's training seed (``train_seed``). A *group* is the runs of one recipe that differ
only in their seed. Two things make a fair number for a group:

* **The same attacks on every seed.** A multi-seed profile may spend its expensive attacks (AutoAttack, CW,
  Square) on one seed only. The group's worst case is therefore taken over the attack cells (label, backend, eps)
  that ran on *every* seed of the group; what the other attacks add is shown separately, for the seeds they ran
  on, so a reader sees both the pooled number and how much stronger the full suite is.
* **Uncertainty from both sources.** A single run's interval resamples test images only; a new training seed
  moves robust accuracy too. ``capsrobust.evaluation.stats.two_level_interval`` resamples seeds and images.

``across_seeds`` gives one row per (group, norm, eps); ``compare_across_seeds`` the paired difference of two
groups, with per-seed differences beside the pooled one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from capsrobust.attacks.suites import model_group
from capsrobust.evaluation.compare import NORM_ORDER, CompareError, worst_case_examples
from capsrobust.evaluation.stats import compare_paired, two_level_interval

SEED_COLUMNS = [
    "group", "norm", "eps", "n", "n_seeds", "seeds", "clean_accuracy", "robust_accuracy", "ci_low", "ci_high",
    "per_seed", "full_suite_seed", "full_suite_robust_accuracy", "common_attacks",
]
SEED_COMPARE_COLUMNS = [
    "norm", "eps", "baseline", "candidate", "n", "baseline_seeds", "candidate_seeds", "baseline_robust_accuracy",
    "candidate_robust_accuracy", "difference", "ci_low", "ci_high", "per_seed_differences", "seeds_paired",
]


def seed_models(results: pd.DataFrame) -> pd.DataFrame:
    """One row per model in sweep order: model, group, train_seed (-1 where the sweep did not record it)."""
    seeds = results["train_seed"] if "train_seed" in results else pd.Series(np.nan, index=results.index)
    frame = pd.DataFrame({"model": results["model"], "train_seed": seeds}).drop_duplicates("model")
    groups = [model_group(m, s) for m, s in zip(frame["model"], frame["train_seed"], strict=True)]
    return frame.assign(group=groups, train_seed=frame["train_seed"].fillna(-1).astype(int))[
        ["model", "group", "train_seed"]].reset_index(drop=True)


def model_groups(results: pd.DataFrame) -> dict[str, list[tuple[str, int]]]:
    """Every group of the sweep in order: group → [(model, training seed), ...] sorted by seed."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for row in seed_models(results).itertuples(index=False):
        groups.setdefault(row.group, []).append((row.model, row.train_seed))
    return {group: sorted(members, key=lambda m: m[1]) for group, members in groups.items()}


def multi_seed_groups(results: pd.DataFrame) -> dict[str, list[tuple[str, int]]]:
    """The groups with two or more training seeds."""
    return {group: members for group, members in model_groups(results).items() if len(members) > 1}


def common_cells(results: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """The result rows of ``models`` whose (label, backend, eps, role) every one of them has."""
    key = ["label", "backend", "eps", "role"]
    rows = results[results["model"].isin(models)]
    counts = rows.groupby(key)["model"].nunique()
    shared = counts[counts == len(models)].reset_index()[key]
    return rows.merge(shared, on=key, how="inner")


def outcome_matrix(per_example: pd.DataFrame, models: list[str], norm: str, eps: float) -> np.ndarray:
    """(seeds, n) robust outcomes of ``models`` at (norm, eps), images in index order; refuses unequal images."""
    rows = []
    reference = None
    for model in models:
        at = per_example[(per_example["model"] == model) & (per_example["norm"] == norm)
                         & (per_example["eps"] == eps)].sort_values("index")
        if reference is None:
            reference = at["index"].to_numpy()
        elif not np.array_equal(reference, at["index"].to_numpy()):
            raise CompareError(f"{models[0]} and {model} were attacked on different images; compare runs of one sweep")
        rows.append(at["robust"].to_numpy(dtype=bool))
    return np.vstack(rows)


def across_seeds(
    results: pd.DataFrame, examples: pd.DataFrame, *, n_resamples: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """One row per (group with ≥ 2 seeds, norm, eps): the mean worst-case robust accuracy over seeds and images.

    The worst case is over the attack cells every seed of the group faced (``common_attacks``); ``per_seed`` lists
    each seed's robust accuracy under them; ``full_suite_*`` is the worst case over *all* attacks for the seed
    that faced the most (it can only be lower); ``ci_low``/``ci_high`` are the two-level bootstrap 95% interval.
    """
    rows = []
    for group, members in multi_seed_groups(results).items():
        models = [model for model, _ in members]
        common = common_cells(results, models)
        per_example = worst_case_examples(common, examples)
        full = worst_case_examples(results[results["model"].isin(models)], examples)
        most = max(models, key=lambda m: int((results["model"] == m).sum()))
        for (norm, eps), at in per_example.groupby(["norm", "eps"], sort=False):
            matrix = outcome_matrix(per_example, models, norm, eps)
            low, high = two_level_interval(matrix, n_resamples=n_resamples, seed=seed)
            clean = at.groupby("model")["clean"].mean()
            cells = common[(common["norm"] == norm) & (common["eps"] == eps) & (common["model"] == models[0])]
            full_at = full[(full["model"] == most) & (full["norm"] == norm) & (full["eps"] == eps)]
            rows.append({
                "group": group, "norm": norm, "eps": float(eps), "n": matrix.shape[1], "n_seeds": len(models),
                "seeds": " ".join(str(s) for _, s in members), "clean_accuracy": float(clean.mean()),
                "robust_accuracy": float(matrix.mean()), "ci_low": low, "ci_high": high,
                "per_seed": " ".join(f"s{s}:{v:.3f}" for (_, s), v in zip(members, matrix.mean(axis=1), strict=True)),
                "full_suite_seed": dict(members)[most],
                "full_suite_robust_accuracy": float(full_at["robust"].mean()) if not full_at.empty else np.nan,
                "common_attacks": ", ".join(sorted({f"{label}/{backend}" for label, backend in
                                                    zip(cells["label"], cells["backend"], strict=True)})),
            })
    frame = pd.DataFrame(rows, columns=SEED_COLUMNS)
    return _sorted(frame, "group")


def compare_across_seeds(
    results: pd.DataFrame, examples: pd.DataFrame, baseline: str, candidate: str, *, n_resamples: int = 10_000,
    seed: int = 0, paired_seeds: bool = False,
) -> pd.DataFrame:
    """Candidate − baseline group robust accuracy per (norm, eps), with a two-level interval and per-seed rows.

    Both groups are reduced to the attack cells that every seed of *both* faced, so the difference compares equal
    attacks. ``per_seed_differences`` pairs seed k with seed k where both have it (images paired, interval over
    images only), which shows whether one seed drives the pooled difference. ``paired_seeds`` resamples seed k of
    both together (``stats.two_level_interval``): for twins whose seed fixes the same initial weights and batches,
    and only when both groups hold the same seeds. Raises ``CompareError`` for a group that is not in the sweep, or
    for paired seeds that the two groups do not share.
    """
    groups = model_groups(results)
    for name in (baseline, candidate):
        if name not in groups:
            raise CompareError(f"{name!r} is not a model group of this sweep; choose from: {', '.join(groups)}")
    if baseline == candidate:
        raise CompareError(f"baseline and candidate are both {baseline!r}; compare two different groups")
    base_models = [m for m, _ in groups[baseline]]
    cand_models = [m for m, _ in groups[candidate]]
    base_seeds = [s for _, s in groups[baseline]]  # sorted by seed (model_groups), so row k pairs with row k
    cand_seeds = [s for _, s in groups[candidate]]
    if paired_seeds and base_seeds != cand_seeds:
        raise CompareError(f"paired seeds need the same training seeds in both groups: {baseline} has "
                           f"{' '.join(map(str, base_seeds))}, {candidate} {' '.join(map(str, cand_seeds))}; "
                           f"compare without pairing them")
    common = common_cells(results, base_models + cand_models)
    per_example = worst_case_examples(common, examples)
    rows = []
    for (norm, eps), _ in per_example.groupby(["norm", "eps"], sort=False):
        base = outcome_matrix(per_example, base_models, norm, eps)
        cand = outcome_matrix(per_example, cand_models, norm, eps)
        if base.shape[1] != cand.shape[1]:
            raise CompareError(f"{baseline} and {candidate} were attacked on different images; use one sweep")
        low, high = two_level_interval(cand, base, n_resamples=n_resamples, seed=seed, paired_seeds=paired_seeds)
        paired = []
        for b_seed, b_row in zip(base_seeds, base, strict=True):
            for c_seed, c_row in zip(cand_seeds, cand, strict=True):
                if b_seed == c_seed:
                    result = compare_paired(b_row, c_row, n_resamples=min(n_resamples, 2000), seed=seed)
                    paired.append(f"s{b_seed}:{100 * result.difference:+.1f} "
                                  f"[{100 * result.ci_low:+.1f}, {100 * result.ci_high:+.1f}]")
        rows.append({
            "norm": norm, "eps": float(eps), "baseline": baseline, "candidate": candidate, "n": base.shape[1],
            "baseline_seeds": " ".join(map(str, base_seeds)), "candidate_seeds": " ".join(map(str, cand_seeds)),
            "baseline_robust_accuracy": float(base.mean()), "candidate_robust_accuracy": float(cand.mean()),
            "difference": float(cand.mean() - base.mean()), "ci_low": low, "ci_high": high,
            "per_seed_differences": "; ".join(paired), "seeds_paired": paired_seeds,
        })
    return _sorted(pd.DataFrame(rows, columns=SEED_COMPARE_COLUMNS), None)


def _sorted(frame: pd.DataFrame, first: str | None) -> pd.DataFrame:
    """L∞ before L2, budgets ascending (after ``first`` when given, kept in order of appearance)."""
    if frame.empty:
        return frame
    keys = ["_first"] if first else []
    order = {name: i for i, name in enumerate(dict.fromkeys(frame[first]))} if first else {}
    frame = frame.assign(_first=frame[first].map(order) if first else 0,
                         _norm=frame["norm"].map(NORM_ORDER).fillna(len(NORM_ORDER)))
    frame = frame.sort_values([*keys, "_norm", "eps"], kind="stable")
    return frame.drop(columns=["_first", "_norm"]).reset_index(drop=True)
