"""The attacks capsrobust knows, one registry entry each.

Every entry names its threat model, the libraries that implement it and its parameters with defaults; its run
function builds the ``AttackTarget`` (what is differentiated: the objective's scores and loss, see
``capsrobust.attacks.objectives``) and hands it to the chosen backend. Step sizes are relative to eps (``rel_step ·
eps``), so one setting serves every budget.
"""

from __future__ import annotations

from types import ModuleType

from capsrobust.attacks import art_backend, foolbox_backend
from capsrobust.attacks.objectives import AttackObjective, attack_target
from capsrobust.attacks.params import (
    ApgdParams,
    ApgdTargetedParams,
    AutoAttackParams,
    CwParams,
    PgdParams,
    ReconPgdParams,
    SquareParams,
)
from capsrobust.attacks.reconstructive import reconstructive_pgd
from capsrobust.attacks.registry import (
    AttackCall,
    AttackKind,
    AttackResult,
    AttackRole,
    Backend,
    Norm,
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

@register_attack("fgsm", norm=Norm.LINF, backends=BOTH, role=AttackRole.SINGLE_STEP)
def fgsm(call: AttackCall) -> AttackResult:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of eps · sign(∇loss)."""
    return BACKENDS[call.backend].fgsm(attack_target(call.model, call.objective), call)


@register_attack("pgd-linf", norm=Norm.LINF, backends=BOTH, params=PgdParams, role=ITERATIVE)
def pgd_linf(call: AttackCall) -> AttackResult:
    """Projected gradient descent in the L∞ ball (Madry et al. 2018)."""
    return BACKENDS[call.backend].pgd(attack_target(call.model, call.objective), call, Norm.LINF)


@register_attack("pgd-l2", norm=Norm.L2, backends=BOTH, params=PgdParams, role=ITERATIVE)
def pgd_l2(call: AttackCall) -> AttackResult:
    """Projected gradient descent in the L2 ball (Madry et al. 2018)."""
    return BACKENDS[call.backend].pgd(attack_target(call.model, call.objective), call, Norm.L2)


@register_attack(
    "cw-l2",
    norm=Norm.L2,
    backends=BOTH,
    kind=AttackKind.MINIMIZATION,
    role=AttackRole.MINIMIZATION,
    params=CwParams,
)
def cw_l2(call: AttackCall) -> AttackResult:
    """Carlini–Wagner L2 (2017): the smallest L2 perturbation it can find; eps is a threshold on it.

    The libraries search c differently on failure (ART doubles it, Foolbox multiplies it by 10), so the
    default starts at c = 1, where both find adversarials within a few binary-search steps. ART's version is
    also far slower per iteration (a line search on every step); prefer Foolbox on a CPU.
    """
    return BACKENDS[call.backend].cw_l2(attack_target(call.model, call.objective), call)


#: APGD-CE always differentiates cross-entropy on the model's logits (log-lengths for a CapsNet, whatever the
#: sweep's objective), as AutoAttack defines it; ``apgd-ce-lengths`` adds the raw lengths for capsule models.
CE_OBJECTIVE = AttackObjective.CE_LOG_LENGTHS
#: What DLR (APGD-T, APGD-DLR) and AutoAttack's Square read on a CapsNet. DLR is invariant to shifting and scaling
#: the scores but not to the log; on capsnet-tiny lengths and log-lengths were within a point (docs/attacks.md), and
#: the log-lengths are the model's logits, which AutoAttack's DLR was designed for.
DLR_OBJECTIVE = AttackObjective.CE_LOG_LENGTHS


@register_attack("apgd-ce", norm=Norm.LINF, backends=ART_ONLY, params=ApgdParams, needs_positive_eps=True,
                 role=ADAPTIVE)
def apgd_ce(call: AttackCall) -> AttackResult:
    """APGD-CE (Croce & Hein 2020): step-size-free PGD on cross-entropy of the logits (log-lengths for capsules)."""
    return art_backend.apgd_ce(attack_target(call.model, CE_OBJECTIVE), call)


@register_attack("apgd-ce-lengths", norm=Norm.LINF, backends=ART_ONLY, params=ApgdParams, requires=LENGTHS,
                 needs_positive_eps=True, role=ADAPTIVE)
def apgd_ce_lengths(call: AttackCall) -> AttackResult:
    """APGD-CE on raw capsule lengths (capsule models only): measured stronger than on log-lengths under L∞.

    Cross-entropy on lengths in [0, 1) has small gradients, but L∞ APGD steps along their sign; on capsnet-tiny
    (APGD) and capsnet-paper (PGD) the raw lengths broke more images (docs/attack-objectives.md, docs/attacks.md).
    Run beside ``apgd-ce`` and let the best-attack rows take the per-image worst case.
    """
    return art_backend.apgd_ce(attack_target(call.model, AttackObjective.CE_LENGTHS), call)


@register_attack("apgd-dlr", norm=Norm.LINF, backends=ART_ONLY, params=ApgdParams, needs_positive_eps=True,
                 role=ADAPTIVE)
def apgd_dlr(call: AttackCall) -> AttackResult:
    """APGD on the untargeted DLR loss (Croce & Hein 2020), invariant to the scale of the scores."""
    return art_backend.apgd_dlr(attack_target(call.model, DLR_OBJECTIVE), call)


@register_attack("apgd-t", norm=Norm.LINF, backends=ART_ONLY, params=ApgdTargetedParams,
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
    params=AutoAttackParams,
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
    params=SquareParams,
)
def square(call: AttackCall) -> AttackResult:
    """Square Attack (Andriushchenko et al. 2020), score-based and gradient-free: a gradient-masking check."""
    return art_backend.square(attack_target(call.model, call.objective), call)


@register_attack(
    "vote-pgd-linf", norm=Norm.LINF, backends=BOTH, params=PgdParams, requires=VOTES,
    role=ITERATIVE,
)
def vote_pgd_linf(call: AttackCall) -> AttackResult:
    """Vote attack (Gu & Tresp 2021): PGD L∞ on the scores of the averaged votes, skipping routing."""
    return BACKENDS[call.backend].pgd(vote_target(call.model, call.objective), call, Norm.LINF)


@register_attack(
    "vote-pgd-l2", norm=Norm.L2, backends=BOTH, params=PgdParams, requires=VOTES,
    role=ITERATIVE,
)
def vote_pgd_l2(call: AttackCall) -> AttackResult:
    """The vote attack in the L2 ball: without it, L2 robustness of a CapsNet rests on gradients through routing."""
    return BACKENDS[call.backend].pgd(vote_target(call.model, call.objective), call, Norm.L2)


@register_attack("vote-apgd-ce", norm=Norm.LINF, backends=ART_ONLY, params=ApgdParams, requires=VOTES,
                 needs_positive_eps=True, role=ADAPTIVE)
def vote_apgd_ce(call: AttackCall) -> AttackResult:
    """APGD-CE along the vote gradient: cross-entropy on the averaged votes' log-lengths, routing skipped backward.

    APGD judges success and progress on the routed model (capsrobust.attacks.vote: straight-through view).
    """
    return art_backend.apgd_ce(vote_target(call.model, CE_OBJECTIVE, values="routed"), call)


@register_attack("vote-apgd-t", norm=Norm.LINF, backends=ART_ONLY, params=ApgdTargetedParams,
                 requires=VOTES, needs_positive_eps=True, role=ADAPTIVE)
def vote_apgd_t(call: AttackCall) -> AttackResult:
    """APGD-T along the vote gradient: targeted DLR on the averaged votes, targets and success on the routed model."""
    return art_backend.apgd_t(vote_target(call.model, DLR_OBJECTIVE, values="routed"), call)


@register_attack(
    "pgd-linf-recon", norm=Norm.LINF, backends=BOTH, params=ReconPgdParams, requires=DECODER,
    role=AttackRole.DEFENSE_AWARE,
)
def pgd_linf_recon(call: AttackCall) -> AttackResult:
    """Reconstructive attack (Qin et al. 2020): PGD L∞ on min(margin, κ) − λ · reconstruction distance.

    Needs a model with a class-conditional decoder (capsnet, cnn-recon); see docs/detection.md for what it proves.
    """
    return reconstructive_pgd(call, Norm.LINF, "pgd-linf-recon")


@register_attack(
    "pgd-l2-recon", norm=Norm.L2, backends=BOTH, params=ReconPgdParams, requires=DECODER,
    role=AttackRole.DEFENSE_AWARE,
)
def pgd_l2_recon(call: AttackCall) -> AttackResult:
    """Reconstructive attack (Qin et al. 2020) in the L2 ball: PGD L2 on min(margin, κ) − λ · recon. distance."""
    return reconstructive_pgd(call, Norm.L2, "pgd-l2-recon")
