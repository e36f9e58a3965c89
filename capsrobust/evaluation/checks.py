"""The self-checks every sweep runs on its own results: the classic signs of a broken evaluation.

Carlini et al. (2019), *On Evaluating Adversarial Robustness* (arXiv:1902.06705), list the ways a robustness
number goes wrong — perturbations outside the threat model, gradient masking, attacks that have not converged,
randomness in the forward pass — and the sanity checks that expose them. A sweep computes those it can from its
own tables and writes them as a checks table beside the results: one row per (check, model) with status
``pass``, ``flag`` (look before trusting the numbers), ``skip`` (the sweep has no cells to test it with) or
``failed`` (a cell raised on every try), and a one-line detail.

=================== =================================================================================
check               what it tests
=================== =================================================================================
in-bounds           every adversarial lies in [0, 1] (tolerance 1e-6); violations are counted
in-ball             every adversarial of a bounded attack lies in its eps ball (tolerance 1e-6), counted
answers             the model's scores are finite on every adversarial (a non-finite one counts as broken)
eps-zero            at eps = 0 robust accuracy equals clean accuracy (the attack pipeline is faithful)
monotone-eps        robust accuracy does not rise with eps (by more than one point)
large-eps           the largest L∞ eps (≥ 0.3) drives robust accuracy near 0, else gradient masking
pgd-vs-fgsm         PGD L∞ is at least as strong as FGSM at the same eps (within one point)
pgd-vs-apgd         APGD / AutoAttack is not markedly stronger than PGD (≤ 2 points): else PGD under-attacks
double-steps        twice the PGD steps is not markedly stronger (≤ 2 points): PGD has converged
gradient-free       Square Attack (no gradients) is not stronger than the strongest gradient attack at its eps
backends-agree      ART and Foolbox give the same robust accuracy within 2 points on the same cell
gradients           the objective's input gradients are finite and nonzero on every checked example
deterministic       two forward passes of the same batch give the same scores
coverage            attacks the sweep could not run for a model (no backend, not a capsule model)
=================== =================================================================================

In a cascade (``capsrobust.evaluation.cascade``) a later attack sees only what the earlier ones left robust, so two
attacks' robust accuracies are not compared; the checks that compare attacks ask instead how many images the later
one broke that every earlier one missed (its ``n_success``): more than the same tolerance, of all n images, is the
same flag (APGD or Square finding what PGD missed, twice the steps finding what PGD-40 missed). PGD against FGSM and
ART against Foolbox cannot be read off a cascade and are skipped there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import Enum

import pandas as pd
import torch

from capsrobust.attacks.objectives import AttackTarget, loss_module
from capsrobust.attacks.registry import AttackError, AttackKind, AttackRole, AttackSpec, Norm, get_attack

TOLERANCE = 1e-6
MONOTONE_TOLERANCE = 0.01  # robust accuracy may rise by one point with eps before it is flagged
FGSM_TOLERANCE = 0.01
DOUBLE_STEPS_TOLERANCE = 0.02
APGD_TOLERANCE = 0.02  # APGD / AutoAttack may beat PGD by two points before PGD counts as under-attacking
GRADIENT_FREE_TOLERANCE = 0.01
BACKEND_TOLERANCE = 0.02
# Accuracies are fractions k / n: 0.66 − 0.64 is 0.020000000000000018 in floating point, so every "more than x
# points" comparison adds this slack to say what it means.
ROUNDING = 1e-9
LARGE_LINF_EPS = 0.3  # on MNIST an undefended model is fully broken at this budget
NEAR_ZERO = 0.1
#: How far above its training eps an adversarially trained model is tested for near-zero robust accuracy.
BEYOND_TRAINING = 0.2
GRADIENT_EXAMPLES = 32


class Status(str, Enum):
    PASS = "pass"
    FLAG = "flag"
    SKIP = "skip"
    FAILED = "failed"  # a sweep cell that raised on every try: no result, resume the sweep to retry it


@dataclass(frozen=True)
class Check:
    """One row of the checks table."""

    check: str
    model: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


CHECK_COLUMNS = ["check", "model", "status", "detail"]


def checks_frame(checks: Iterable[Check]) -> pd.DataFrame:
    """The checks table, flags first, then by check and model."""
    frame = pd.DataFrame([check.to_dict() for check in checks], columns=CHECK_COLUMNS)
    order = {Status.FAILED.value: -1, Status.FLAG.value: 0, Status.PASS.value: 1, Status.SKIP.value: 2}
    frame["_order"] = frame["status"].map(order)
    return frame.sort_values(["_order", "check", "model"], kind="stable").drop(columns="_order").reset_index(
        drop=True
    )


def _cell(row: pd.Series) -> str:
    return f"{row['label']}/{row['backend']}@{row['eps']:g}"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def check_results(results: pd.DataFrame) -> list[Check]:
    """Every check that reads only the results table, for every model in it."""
    checks: list[Check] = []
    for model, rows in results.groupby("model", sort=False):
        for function in (check_in_bounds, check_in_ball, check_answers):
            checks.append(function(str(model), rows))
        # transfer cells attack another model: the checks that compare attacks on this one leave them out
        own = rows[rows["transfer_from"].astype(object).fillna("") == ""] if "transfer_from" in rows else rows
        for function in (check_eps_zero, check_monotone, check_large_eps, check_pgd_vs_fgsm, check_pgd_vs_apgd,
                         check_double_steps, check_gradient_free, check_backends_agree):
            checks.append(function(str(model), own))
    return checks


def check_in_bounds(model: str, rows: pd.DataFrame) -> Check:
    bad = rows[rows["n_out_of_bounds"] > 0]
    if bad.empty:
        return Check("in-bounds", model, Status.PASS, f"all adversarials of {len(rows)} cells lie in [0, 1]")
    cells = ", ".join(f"{_cell(r)}: {int(r['n_out_of_bounds'])}" for _, r in bad.iterrows())
    total = int(bad["n_out_of_bounds"].sum())
    return Check("in-bounds", model, Status.FLAG, f"{total} adversarials outside [0, 1] ({cells})")


def check_in_ball(model: str, rows: pd.DataFrame) -> Check:
    bounded = rows[rows["kind"] == "bounded"]
    if bounded.empty:
        return Check("in-ball", model, Status.SKIP, "no bounded attacks in this sweep")
    bad = bounded[bounded["n_out_of_ball"] > 0]
    if bad.empty:
        return Check("in-ball", model, Status.PASS, f"all adversarials of {len(bounded)} cells lie in their eps ball")
    cells = ", ".join(f"{_cell(r)}: {int(r['n_out_of_ball'])}" for _, r in bad.iterrows())
    total = int(bad["n_out_of_ball"].sum())
    return Check("in-ball", model, Status.FLAG, f"{total} adversarials outside their eps ball ({cells})")


def check_answers(model: str, rows: pd.DataFrame) -> Check:
    """Adversarials on which the model's scores were NaN or infinite: counted as broken, and said here, because a
    model that computes nothing on an input has not classified it (``capsrobust.models.inference``)."""
    if "n_no_answer" not in rows:  # a sweep from before the column existed
        return Check("answers", model, Status.SKIP, "this sweep predates the count of non-finite scores")
    bad = rows[rows["n_no_answer"].fillna(0) > 0]
    if bad.empty:
        return Check("answers", model, Status.PASS, f"finite scores on every adversarial of {len(rows)} cells")
    cells = ", ".join(f"{_cell(r)}: {int(r['n_no_answer'])}" for _, r in bad.iterrows())
    total = int(bad["n_no_answer"].sum())
    return Check("answers", model, Status.FLAG,
                 f"{total} adversarials got NaN or infinite scores, counted as broken ({cells})")


def check_eps_zero(model: str, rows: pd.DataFrame) -> Check:
    zero = rows[(rows["eps"] == 0) & (rows["kind"] == "bounded")]
    if zero.empty:
        return Check("eps-zero", model, Status.SKIP, "no bounded attack at eps = 0; add eps 0 to a suite entry")
    bad = zero[zero["robust_accuracy"] != zero["clean_accuracy"]]
    if bad.empty:
        return Check("eps-zero", model, Status.PASS, f"robust = clean accuracy at eps 0 in {len(zero)} cells")
    cells = ", ".join(f"{_cell(r)}: {_pct(r['robust_accuracy'])} vs clean {_pct(r['clean_accuracy'])}"
                      for _, r in bad.iterrows())
    return Check("eps-zero", model, Status.FLAG, f"attack pipeline changes clean results ({cells})")


def check_monotone(model: str, rows: pd.DataFrame) -> Check:
    rises, series = [], 0
    for (label, backend), group in rows.groupby(["label", "backend"], sort=False):
        group = group.sort_values("eps")
        if len(group) < 2:
            continue
        series += 1
        accuracy = group["robust_accuracy"].to_numpy()
        eps = group["eps"].to_numpy()
        for i in range(1, len(group)):
            if accuracy[i] > accuracy[:i].min() + MONOTONE_TOLERANCE + ROUNDING:
                rises.append(f"{label}/{backend} rises to {_pct(accuracy[i])} at eps {eps[i]:g}")
    if series == 0:
        return Check("monotone-eps", model, Status.SKIP, "no attack at two or more eps")
    if rises:
        return Check("monotone-eps", model, Status.FLAG, "robust accuracy rises with eps: " + "; ".join(rises))
    return Check("monotone-eps", model, Status.PASS, f"robust accuracy non-increasing in eps in {series} series")


def check_large_eps(model: str, rows: pd.DataFrame) -> Check:
    """At a budget no defence should survive, the strongest attack must break (nearly) every image.

    That budget is L∞ 0.3 for a naturally trained MNIST model, and ``BEYOND_TRAINING`` above the training eps for an
    adversarially trained one (0.5 for Madry's 0.3): a model trained at 0.3 is meant to keep its accuracy there.
    """
    linf = rows[(rows["norm"] == "linf") & (rows["kind"] == "bounded")]
    trained = rows["train_linf_eps"].dropna() if "train_linf_eps" in rows else pd.Series(dtype=float)
    large = max(LARGE_LINF_EPS, round(float(trained.max()) + BEYOND_TRAINING, 6)) if len(trained) else LARGE_LINF_EPS
    why = f" (adversarially trained at L∞ {float(trained.max()):g})" if len(trained) else ""
    if linf.empty or linf["eps"].max() < large:
        largest = "none" if linf.empty else f"{linf['eps'].max():g}"
        return Check("large-eps", model, Status.SKIP,
                     f"largest L∞ eps is {largest}; add eps ≥ {large:g}{why} to test for gradient masking")
    largest = linf["eps"].max()
    at = linf[linf["eps"] == largest]
    best = at.loc[at["robust_accuracy"].idxmin()]
    detail = f"strongest attack at eps {largest:g}{why} ({_cell(best)}) leaves {_pct(best['robust_accuracy'])}"
    if best["robust_accuracy"] <= NEAR_ZERO:
        return Check("large-eps", model, Status.PASS, detail)
    return Check("large-eps", model, Status.FLAG,
                 f"{detail} > {_pct(NEAR_ZERO)}: gradient masking or too weak an attack")


def _spec(attack: str) -> AttackSpec | None:
    """The registered attack of a results row, or None for a name this version does not know (old tables)."""
    try:
        return get_attack(attack)
    except AttackError:
        return None


def _having(rows: pd.DataFrame, role: AttackRole, norm: Norm = Norm.LINF, surface: str = "model") -> pd.DataFrame:
    """The rows of attacks with ``role`` in ``norm`` that differentiate ``surface`` (the model, or the votes)."""
    def matches(attack: str) -> bool:
        spec = _spec(attack)
        return spec is not None and spec.role is role and spec.norm is norm and spec.surface == surface

    return rows[rows["attack"].map(matches).astype(bool)] if not rows.empty else rows


def _cascaded(rows: pd.DataFrame) -> bool:
    """Whether ``rows`` come from a cascade, where per-attack robust accuracies are cumulative."""
    return "mode" in rows.columns and bool((rows["mode"] == "cascade").any())


def _added(row: pd.Series) -> float:
    """The fraction of all n images a cascaded cell broke that every earlier attack in its chain had missed."""
    return float(row["n_success"]) / float(row["n"])


def _before(rows: pd.DataFrame, row_index: object, eps: float) -> pd.DataFrame:
    """The rows at ``eps`` that ran before row ``row_index`` in its cascade (rows are in plan order)."""
    position = rows.index.get_loc(row_index)
    earlier = rows.iloc[:position]
    return earlier[(earlier["eps"] - eps).abs() < ROUNDING]


def check_pgd_vs_fgsm(model: str, rows: pd.DataFrame) -> Check:
    if _cascaded(rows):
        return Check("pgd-vs-fgsm", model, Status.SKIP,
                     "cascade: PGD attacked only what FGSM left robust, so the two are not compared")
    attacks = rows[rows["role"] == "attack"]
    fgsm = _having(attacks, AttackRole.SINGLE_STEP)
    pgd = _having(attacks, AttackRole.ITERATIVE)
    pairs = fgsm.merge(pgd, on=["backend", "eps"], suffixes=("_fgsm", "_pgd"))
    if pairs.empty:
        return Check("pgd-vs-fgsm", model, Status.SKIP, "no FGSM and PGD L∞ cells at the same eps and backend")
    bad = pairs[pairs["robust_accuracy_pgd"] > pairs["robust_accuracy_fgsm"] + FGSM_TOLERANCE + ROUNDING]
    if bad.empty:
        return Check("pgd-vs-fgsm", model, Status.PASS, f"PGD at least as strong as FGSM in {len(pairs)} pairs")
    cells = ", ".join(f"{r['backend']}@{r['eps']:g}: PGD {_pct(r['robust_accuracy_pgd'])} vs FGSM "
                      f"{_pct(r['robust_accuracy_fgsm'])}" for _, r in bad.iterrows())
    return Check("pgd-vs-fgsm", model, Status.FLAG, f"FGSM beats PGD ({cells}): PGD is misconfigured")


def check_double_steps(model: str, rows: pd.DataFrame) -> Check:
    doubled = rows[rows["role"] == "check"]
    if doubled.empty:
        return Check("double-steps", model, Status.SKIP, "no 2×-steps PGD cell (suite double_steps_check = false)")
    base = rows[rows["role"] == "attack"]
    pairs = doubled.merge(base, left_on=["check_of", "backend", "eps"], right_on=["label", "backend", "eps"],
                          suffixes=("_2x", "_1x"))
    if pairs.empty:
        return Check("double-steps", model, Status.SKIP, "the 2×-steps cell has no base cell to compare with")
    if _cascaded(rows):
        drops = pairs["n_success_2x"] / pairs["n_2x"]
        detail = "; ".join(
            f"{r['label_1x']}/{r['backend']}@{r['eps']:g}: {int(r['steps_or_queries_2x'])} steps broke "
            f"{_pct(r['n_success_2x'] / r['n_2x'])} more than {int(r['steps_or_queries_1x'])} steps and the attacks "
            f"before (cascade)" for _, r in pairs.iterrows())
        if (drops > DOUBLE_STEPS_TOLERANCE + ROUNDING).any():
            return Check("double-steps", model, Status.FLAG, f"PGD has not converged, raise its steps ({detail})")
        return Check("double-steps", model, Status.PASS, detail)
    drops = pairs["robust_accuracy_1x"] - pairs["robust_accuracy_2x"]
    detail = "; ".join(
        f"{r['label_1x']}/{r['backend']}@{r['eps']:g}: {int(r['steps_or_queries_1x'])} steps "
        f"{_pct(r['robust_accuracy_1x'])}, {int(r['steps_or_queries_2x'])} steps {_pct(r['robust_accuracy_2x'])}"
        for _, r in pairs.iterrows()
    )
    if (drops > DOUBLE_STEPS_TOLERANCE + ROUNDING).any():
        return Check("double-steps", model, Status.FLAG, f"PGD has not converged, raise its steps ({detail})")
    return Check("double-steps", model, Status.PASS, detail)


def check_pgd_vs_apgd(model: str, rows: pd.DataFrame) -> Check:
    """PGD under-attacks when APGD or AutoAttack (Croce & Hein 2020) leaves markedly fewer images robust at its eps.

    Every cell of each side counts (restart entries, the 2×-steps check, both backends): the strongest PGD L∞ is
    compared with the strongest APGD (and AutoAttack) that differentiates the same surface, the model or the
    capsules' votes. A flag says the PGD rows overstate robustness; read the best-attack rows.
    """
    if _cascaded(rows):
        return _cascade_gain(
            "pgd-vs-apgd", model, rows, APGD_TOLERANCE,
            later=lambda spec: spec.role in (AttackRole.ADAPTIVE, AttackRole.ENSEMBLE),
            rival=lambda spec, later: spec.role is AttackRole.ITERATIVE and spec.surface == later.surface,
            flag="APGD found images PGD and every attack before it left robust, PGD under-attacks (read the "
                 "best-attack rows)", rivals_name="PGD")
    compared, bad = 0, []
    for surface in ("model", "votes"):
        iterative = _having(rows, AttackRole.ITERATIVE, surface=surface)
        pgd_name = ", ".join(sorted(set(iterative["attack"])))
        pgd = iterative.groupby("eps")["robust_accuracy"].min()
        apgd = pd.concat([_having(rows, AttackRole.ADAPTIVE, surface=surface),
                          _having(rows, AttackRole.ENSEMBLE, surface=surface)])
        for eps, group in apgd.groupby("eps"):
            if eps not in pgd.index:
                continue
            compared += 1
            best = group.loc[group["robust_accuracy"].idxmin()]
            if best["robust_accuracy"] < pgd[eps] - APGD_TOLERANCE - ROUNDING:
                bad.append(f"{_cell(best)} {_pct(best['robust_accuracy'])} < {pgd_name} {_pct(pgd[eps])}")
    if compared == 0:
        return Check("pgd-vs-apgd", model, Status.SKIP, "no APGD or AutoAttack cell at an eps PGD L∞ also ran")
    if bad:
        return Check("pgd-vs-apgd", model, Status.FLAG,
                     "APGD beats PGD, PGD under-attacks (use the best-attack rows, or more PGD steps/restarts): "
                     + "; ".join(bad))
    return Check("pgd-vs-apgd", model, Status.PASS,
                 f"PGD within {_pct(APGD_TOLERANCE)} of APGD / AutoAttack in {compared} budgets")


def _is_ensemble(attack: str) -> bool:
    """Whether ``attack`` mixes gradient and gradient-free attacks (AutoAttack); unknown names count as not."""
    spec = _spec(attack)
    return spec is not None and spec.ensemble


def check_gradient_free(model: str, rows: pd.DataFrame) -> Check:
    """A gradient-free attack must not beat the strongest gradient attack at its norm and eps.

    Gradient attacks are every bounded attack that is not gradient-free and not an ensemble (AutoAttack runs
    Square itself, so it cannot be beaten by Square and would hide the very masking this check looks for).
    """
    if _cascaded(rows):
        return _cascade_gain(
            "gradient-free", model, rows, GRADIENT_FREE_TOLERANCE,
            later=lambda spec: spec.gradient_free and not spec.ensemble and spec.kind is AttackKind.BOUNDED,
            rival=lambda spec, later: not spec.gradient_free and not spec.ensemble and spec.norm is later.norm,
            flag="a gradient-free attack broke images every gradient attack before it left robust, gradients are "
                 "masked", rivals_name="gradient attacks")
    bounded = rows[rows["kind"] == "bounded"]
    ensemble = bounded["attack"].map(_is_ensemble).astype(bool)
    gradient_free = bounded["gradient_free"].astype(bool)
    free = bounded[gradient_free & ~ensemble & (bounded["role"] == "attack")]
    gradient = bounded[~gradient_free & ~ensemble]
    if free.empty or gradient.empty:
        return Check("gradient-free", model, Status.SKIP, "needs a gradient-free and a gradient attack in the sweep")
    pairs, bad = 0, []
    for _, row in free.iterrows():
        rivals = gradient[(gradient["norm"] == row["norm"]) & (gradient["eps"] == row["eps"])]
        if rivals.empty:
            continue
        pairs += 1
        best = rivals.loc[rivals["robust_accuracy"].idxmin()]
        if row["robust_accuracy"] < best["robust_accuracy"] - GRADIENT_FREE_TOLERANCE - ROUNDING:
            bad.append(f"{_cell(row)} {_pct(row['robust_accuracy'])} < {_cell(best)} {_pct(best['robust_accuracy'])}")
    if pairs == 0:
        return Check("gradient-free", model, Status.SKIP, "no gradient-free and gradient attack cells at the same eps")
    if bad:
        return Check("gradient-free", model, Status.FLAG,
                     "a gradient-free attack beats every gradient attack, gradients are masked: " + "; ".join(bad))
    return Check("gradient-free", model, Status.PASS,
                 f"the strongest gradient attack at least as strong as gradient-free in {pairs} cells")


def _cascade_gain(
    name: str, model: str, rows: pd.DataFrame, tolerance: float, *, later: Callable[[AttackSpec], bool],
    rival: Callable[[AttackSpec, AttackSpec], bool], flag: str, rivals_name: str,
) -> Check:
    """A cascade's form of "attack B is not stronger than attack A": B, run after A at the same eps, broke at most
    ``tolerance`` of all images beyond what A and every attack before it broke.
    """
    compared, bad = 0, []
    cascaded = rows[rows["mode"] == "cascade"]
    for index, row in cascaded.iterrows():
        spec = _spec(str(row["attack"]))
        if spec is None or not later(spec) or row["role"] != "attack":
            continue
        rivals = [other for _, other in _before(cascaded, index, float(row["eps"])).iterrows()
                  if (other_spec := _spec(str(other["attack"]))) is not None and rival(other_spec, spec)]
        if not rivals:
            continue
        compared += 1
        if _added(row) > tolerance + ROUNDING:
            bad.append(f"{_cell(row)} broke {_pct(_added(row))} more")
    if compared == 0:
        return Check(name, model, Status.SKIP, f"no cascaded cell ran after {rivals_name} at its eps")
    if bad:
        return Check(name, model, Status.FLAG, f"{flag}: " + "; ".join(bad))
    return Check(name, model, Status.PASS,
                 f"after {rivals_name}, at most {_pct(tolerance)} more broken in {compared} cascaded cells")


def check_backends_agree(model: str, rows: pd.DataFrame) -> Check:
    if _cascaded(rows):
        return Check("backends-agree", model, Status.SKIP,
                     "cascade: the second library attacked only what the first left robust")
    bounded = rows[(rows["kind"] == "bounded")]
    art = bounded[bounded["backend"] == "art"]
    foolbox = bounded[bounded["backend"] == "foolbox"]
    # The same attack with the same parameters and objective at the same eps, whatever the suite entries' labels
    # (a suite may run Foolbox on fewer models or seeds, as a separate entry); old tables pair by label.
    key = ["attack", "params", "objective", "role", "eps"] if {"params", "objective"} <= set(rows) else \
        ["label", "role", "eps"]
    pairs = art.merge(foolbox, on=key, suffixes=("_art", "_fb"))
    if pairs.empty:
        return Check("backends-agree", model, Status.SKIP, "no cell run in both ART and Foolbox (--backend both)")
    gaps = (pairs["robust_accuracy_art"] - pairs["robust_accuracy_fb"]).abs()
    worst = pairs.loc[gaps.idxmax()]
    label = worst["label"] if "label" in worst else worst["label_art"]
    detail = (f"largest gap {_pct(gaps.max())} ({label}@{worst['eps']:g}: ART "
              f"{_pct(worst['robust_accuracy_art'])}, Foolbox {_pct(worst['robust_accuracy_fb'])}) over "
              f"{len(pairs)} pairs")
    if gaps.max() > BACKEND_TOLERANCE + ROUNDING:
        return Check("backends-agree", model, Status.FLAG, f"ART and Foolbox disagree: {detail}")
    return Check("backends-agree", model, Status.PASS, detail)


def check_model(
    model: str, target: AttackTarget, images: torch.Tensor, labels: torch.Tensor, device: torch.device | str = "cpu"
) -> list[Check]:
    """AutoAttack-style checks on the model itself: finite nonzero input gradients, deterministic forward."""
    images = images[:GRADIENT_EXAMPLES].to(device)
    labels = labels[:GRADIENT_EXAMPLES].to(device)
    view = target.view.to(device).eval()
    inputs = images.clone().requires_grad_(True)
    loss = loss_module(target.loss)(view(inputs), labels)
    (gradient,) = torch.autograd.grad(loss, inputs)
    norms = gradient.flatten(1).norm(dim=1)  # (B,)
    finite = torch.isfinite(gradient.flatten(1)).all(dim=1)
    zero = int((norms == 0).sum())
    infinite = int((~finite).sum())
    described = target.describe()
    if zero or infinite:
        gradients = Check("gradients", model, Status.FLAG,
                          f"{zero} zero and {infinite} non-finite input gradients of {described} "
                          f"among {len(labels)} examples: gradient attacks cannot work there")
    else:
        gradients = Check("gradients", model, Status.PASS,
                          f"input gradients of {described} finite and nonzero on {len(labels)} examples "
                          f"(median L2 {norms.median().item():.3g})")
    with torch.no_grad():
        first, second = view(images), view(images)
    gap = (first - second).abs().max().item()
    if gap <= TOLERANCE:
        deterministic = Check("deterministic", model, Status.PASS, f"two forward passes agree (max gap {gap:.1e})")
    else:
        deterministic = Check("deterministic", model, Status.FLAG,
                              f"two forward passes differ by {gap:.3g}: randomness defeats gradient attacks; "
                              f"use EOT or fix the model")
    return [gradients, deterministic]
