"""The attacks capsrobust knows, one registry entry each.

Every entry names its threat model, the libraries that implement it and its parameters with defaults; its run
function builds the ``AttackTarget`` (what is differentiated: the objective's scores and loss, see
``capsrobust.attacks.objectives``) and hands it to the chosen backend. Step sizes are relative to eps (``rel_step ·
eps``), so one setting serves every budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

from capsrobust.attacks import art_backend, foolbox_backend
from capsrobust.attacks.objectives import NUM_CLASSES, AttackObjective, attack_target
from capsrobust.attacks.reconstructive import RECON_CONFIDENCE, RECON_WEIGHT, reconstructive_pgd
from capsrobust.attacks.registry import (
    AttackCall,
    AttackKind,
    AttackResult,
    AttackRole,
    Backend,
    Norm,
    Param,
    ParamValue,
    register_attack,
)
from capsrobust.attacks.vote import vote_target
from capsrobust.models import Capability

BOTH = (Backend.ART, Backend.FOOLBOX)
ITERATIVE, ADAPTIVE = AttackRole.ITERATIVE, AttackRole.ADAPTIVE
# What a model must declare to take an attack (capsrobust.models.Capability)
VOTES = frozenset({Capability.VOTES})
LENGTHS = frozenset({Capability.CAPSULE_LENGTHS})
DECODER = frozenset({Capability.CLASS_DECODER})
ART_ONLY = (Backend.ART,)  # Foolbox 3.3 has neither APGD nor Square
BACKENDS: dict[Backend, ModuleType] = {Backend.ART: art_backend, Backend.FOOLBOX: foolbox_backend}

PGD_PARAMS = (
    Param("steps", int, 40, "gradient steps per start", minimum=1),
    Param("rel_step", float, 0.1, "step size as a fraction of eps", minimum=0.0),
    Param("random_start", bool, True, "start from a uniform random point in the eps ball"),
    Param("restarts", int, 1, "independent random starts; an example counts as broken if any start breaks it",
          minimum=1),
)


def _check_pgd(params: Mapping[str, ParamValue]) -> None:
    if params["restarts"] > 1 and not params["random_start"]:
        raise ValueError("parameter 'restarts' > 1 needs random_start = true (every start would be the same)")


@register_attack("fgsm", norm=Norm.LINF, backends=BOTH, role=AttackRole.SINGLE_STEP)
def fgsm(call: AttackCall) -> AttackResult:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of eps · sign(∇loss)."""
    return BACKENDS[call.backend].fgsm(attack_target(call.model, call.objective), call)


@register_attack("pgd-linf", norm=Norm.LINF, backends=BOTH, params=PGD_PARAMS, check=_check_pgd, role=ITERATIVE)
def pgd_linf(call: AttackCall) -> AttackResult:
    """Projected gradient descent in the L∞ ball (Madry et al. 2018)."""
    return BACKENDS[call.backend].pgd(attack_target(call.model, call.objective), call, Norm.LINF)


@register_attack("pgd-l2", norm=Norm.L2, backends=BOTH, params=PGD_PARAMS, check=_check_pgd, role=ITERATIVE)
def pgd_l2(call: AttackCall) -> AttackResult:
    """Projected gradient descent in the L2 ball (Madry et al. 2018)."""
    return BACKENDS[call.backend].pgd(attack_target(call.model, call.objective), call, Norm.L2)


@register_attack(
    "cw-l2",
    norm=Norm.L2,
    backends=BOTH,
    kind=AttackKind.MINIMIZATION,
    role=AttackRole.MINIMIZATION,
    params=(
        Param("binary_search_steps", int, 5, "binary-search steps over the trade-off constant c", minimum=1),
        Param("max_iter", int, 100, "optimiser iterations per binary-search step", minimum=1),
        Param("confidence", float, 0.0, "margin κ the adversarial class must win by", minimum=0.0),
        Param("learning_rate", float, 0.1, "optimiser step size (0.1 suits ~100 iterations)", minimum=0.0),
        Param("initial_const", float, 1.0, "first value of c", minimum=0.0),
    ),
)
def cw_l2(call: AttackCall) -> AttackResult:
    """Carlini–Wagner L2 (2017): the smallest L2 perturbation it can find; eps is a threshold on it.

    The libraries search c differently on failure (ART doubles it, Foolbox multiplies it by 10), so the
    default starts at c = 1, where both find adversarials within a few binary-search steps. ART's version is
    also far slower per iteration (a line search on every step); prefer Foolbox on a CPU.
    """
    return BACKENDS[call.backend].cw_l2(attack_target(call.model, call.objective), call)


APGD_PARAMS = (
    Param("steps", int, 100, "iterations per restart (100 in AutoAttack)", minimum=1),
    Param("restarts", int, 1, "random starts; each attacks only the images earlier ones left robust", minimum=1),
    Param("rel_step", float, 2.0, "first step as a fraction of eps (2 in Croce & Hein); APGD then adapts it",
          minimum=0.0),
)
TARGETS = Param("targets", int, NUM_CLASSES - 1, "runner-up classes aimed at in turn, by the model's clean scores",
                minimum=1)


def _check_targets(params: Mapping[str, ParamValue]) -> None:
    if params["targets"] > NUM_CLASSES - 1:
        raise ValueError(f"parameter 'targets' must be ≤ {NUM_CLASSES - 1} (the classes other than the true one), "
                         f"got {params['targets']}")


#: APGD-CE always differentiates cross-entropy on the model's logits (log-lengths for a CapsNet, whatever the
#: sweep's objective), as AutoAttack defines it; ``apgd-ce-lengths`` adds the raw lengths for capsule models.
CE_OBJECTIVE = AttackObjective.CE_LOG_LENGTHS
#: What DLR (APGD-T, APGD-DLR) and AutoAttack's Square read on a CapsNet. DLR is invariant to shifting and scaling
#: the scores but not to the log; on capsnet-tiny lengths and log-lengths were within a point (docs/attacks.md), and
#: the log-lengths are the model's logits, which AutoAttack's DLR was designed for.
DLR_OBJECTIVE = AttackObjective.CE_LOG_LENGTHS


@register_attack("apgd-ce", norm=Norm.LINF, backends=ART_ONLY, params=APGD_PARAMS, needs_positive_eps=True,
                 role=ADAPTIVE)
def apgd_ce(call: AttackCall) -> AttackResult:
    """APGD-CE (Croce & Hein 2020): step-size-free PGD on cross-entropy of the logits (log-lengths for capsules)."""
    return art_backend.apgd_ce(attack_target(call.model, CE_OBJECTIVE), call)


@register_attack("apgd-ce-lengths", norm=Norm.LINF, backends=ART_ONLY, params=APGD_PARAMS, requires=LENGTHS,
                 needs_positive_eps=True, role=ADAPTIVE)
def apgd_ce_lengths(call: AttackCall) -> AttackResult:
    """APGD-CE on raw capsule lengths (capsule models only): measured stronger than on log-lengths under L∞.

    Cross-entropy on lengths in [0, 1) has small gradients, but L∞ APGD steps along their sign; on capsnet-tiny
    (APGD) and capsnet-paper (PGD) the raw lengths broke more images (docs/attack-objectives.md, docs/attacks.md).
    Run beside ``apgd-ce`` and let the best-attack rows take the per-image worst case.
    """
    return art_backend.apgd_ce(attack_target(call.model, AttackObjective.CE_LENGTHS), call)


@register_attack("apgd-dlr", norm=Norm.LINF, backends=ART_ONLY, params=APGD_PARAMS, needs_positive_eps=True,
                 role=ADAPTIVE)
def apgd_dlr(call: AttackCall) -> AttackResult:
    """APGD on the untargeted DLR loss (Croce & Hein 2020), invariant to the scale of the scores."""
    return art_backend.apgd_dlr(attack_target(call.model, DLR_OBJECTIVE), call)


@register_attack("apgd-t", norm=Norm.LINF, backends=ART_ONLY, params=(*APGD_PARAMS, TARGETS), check=_check_targets,
                 needs_positive_eps=True, role=ADAPTIVE)
def apgd_t(call: AttackCall) -> AttackResult:
    """APGD-T (Croce & Hein 2020): targeted DLR towards each of the 9 runner-up classes in turn (by clean score).

    An image counts as broken when it is misclassified into any class; later targets attack only the images
    earlier ones left robust.
    """
    return art_backend.apgd_t(attack_target(call.model, DLR_OBJECTIVE), call)


@register_attack(
    "autoattack",
    norm=Norm.LINF,
    backends=ART_ONLY,
    needs_positive_eps=True,
    role=AttackRole.ENSEMBLE,
    check=_check_targets,
    params=(
        Param("apgd_steps", int, 100, "iterations of APGD-CE and of each APGD-T target", minimum=1),
        Param("restarts", int, 1, "random starts of APGD-CE and of each APGD-T target (1 in the standard version)",
              minimum=1),
        TARGETS,
        Param("square_queries", int, 5000, "queries of Square (one restart)", minimum=1),
        Param("rel_step", float, 2.0, "APGD's first step as a fraction of eps (2 as in Croce & Hein)", minimum=0.0),
        Param("p_init", float, 0.8, "Square's initial fraction of pixels in a square", minimum=0.0),
    ),
)
def autoattack(call: AttackCall) -> AttackResult:
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, Square; no FAB-T (in neither library).

    Each image keeps the first adversarial that breaks it; each attack sees only the images earlier ones left
    robust. APGD-CE reads the logits (log-lengths for capsules) whatever the sweep's objective, as do APGD-T's DLR
    and Square's margin.
    """
    return art_backend.autoattack(attack_target(call.model, CE_OBJECTIVE), attack_target(call.model, DLR_OBJECTIVE),
                                  call)


@register_attack(
    "square",
    norm=Norm.LINF,
    backends=(Backend.ART,),
    role=AttackRole.GRADIENT_FREE,
    needs_positive_eps=True,
    params=(
        Param("queries", int, 1000, "iterations (one model query each) per restart", minimum=1),
        Param("p_init", float, 0.8, "initial fraction of pixels in a square", minimum=0.0),
        Param("restarts", int, 1, "independent restarts", minimum=1),
    ),
)
def square(call: AttackCall) -> AttackResult:
    """Square Attack (Andriushchenko et al. 2020), score-based and gradient-free: a gradient-masking check."""
    return art_backend.square(attack_target(call.model, call.objective), call)


@register_attack(
    "vote-pgd-linf", norm=Norm.LINF, backends=BOTH, params=PGD_PARAMS, check=_check_pgd, requires=VOTES,
    role=ITERATIVE,
)
def vote_pgd_linf(call: AttackCall) -> AttackResult:
    """Vote attack (Gu & Tresp 2021): PGD L∞ on the scores of the averaged votes, skipping routing."""
    return BACKENDS[call.backend].pgd(vote_target(call.model, call.objective), call, Norm.LINF)


@register_attack(
    "vote-pgd-l2", norm=Norm.L2, backends=BOTH, params=PGD_PARAMS, check=_check_pgd, requires=VOTES,
    role=ITERATIVE,
)
def vote_pgd_l2(call: AttackCall) -> AttackResult:
    """The vote attack in the L2 ball: without it, L2 robustness of a CapsNet rests on gradients through routing."""
    return BACKENDS[call.backend].pgd(vote_target(call.model, call.objective), call, Norm.L2)


@register_attack("vote-apgd-ce", norm=Norm.LINF, backends=ART_ONLY, params=APGD_PARAMS, requires=VOTES,
                 needs_positive_eps=True, role=ADAPTIVE)
def vote_apgd_ce(call: AttackCall) -> AttackResult:
    """APGD-CE along the vote gradient: cross-entropy on the averaged votes' log-lengths, routing skipped backward.

    APGD judges success and progress on the routed model (capsrobust.attacks.vote: straight-through view).
    """
    return art_backend.apgd_ce(vote_target(call.model, CE_OBJECTIVE, values="routed"), call)


@register_attack("vote-apgd-t", norm=Norm.LINF, backends=ART_ONLY, params=(*APGD_PARAMS, TARGETS),
                 check=_check_targets, requires=VOTES, needs_positive_eps=True, role=ADAPTIVE)
def vote_apgd_t(call: AttackCall) -> AttackResult:
    """APGD-T along the vote gradient: targeted DLR on the averaged votes, targets and success on the routed model."""
    return art_backend.apgd_t(vote_target(call.model, DLR_OBJECTIVE, values="routed"), call)


RECON_PARAMS = (
    *PGD_PARAMS,
    Param("recon_weight", float, RECON_WEIGHT, "λ: weight of the L2 reconstruction distance, in log-odds per unit",
          minimum=0.0),
    Param("confidence", float, RECON_CONFIDENCE, "κ: log-odds margin beyond which only the distance is pushed down",
          minimum=0.0),
)


@register_attack(
    "pgd-linf-recon", norm=Norm.LINF, backends=BOTH, params=RECON_PARAMS, check=_check_pgd, requires=DECODER,
    role=AttackRole.DEFENSE_AWARE,
)
def pgd_linf_recon(call: AttackCall) -> AttackResult:
    """Reconstructive attack (Qin et al. 2020): PGD L∞ on min(margin, κ) − λ · reconstruction distance.

    Needs a model with a class-conditional decoder (capsnet, cnn-recon); see docs/detection.md for what it proves.
    """
    return reconstructive_pgd(call, Norm.LINF, "pgd-linf-recon")


@register_attack(
    "pgd-l2-recon", norm=Norm.L2, backends=BOTH, params=RECON_PARAMS, check=_check_pgd, requires=DECODER,
    role=AttackRole.DEFENSE_AWARE,
)
def pgd_l2_recon(call: AttackCall) -> AttackResult:
    """Reconstructive attack (Qin et al. 2020) in the L2 ball: PGD L2 on min(margin, κ) − λ · recon. distance."""
    return reconstructive_pgd(call, Norm.L2, "pgd-l2-recon")
