"""Benchmark profiles: what one ``capsrobust benchmark --profile NAME`` trains, attacks and reports, by name.

A profile is a frozen dataclass in a registry; adding one is one ``register_profile`` call here. The estimates are
for people choosing a profile and come from measurements (``benchmarks/estimate_profile.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from capsrobust.errors import CapsRobustError


class BenchmarkError(CapsRobustError):
    """A benchmark cannot start or resume: unknown profile or stage, or a directory holding another benchmark."""


@dataclass(frozen=True)
class BenchmarkProfile:
    """What one benchmark trains and how it attacks: recipes with their epochs, a suite, n images, a backend."""

    name: str
    description: str
    recipes: tuple[tuple[str, int], ...]  # (recipe name, epochs)
    suite: str  # a name from attacks/ or a TOML file
    n: int  # first n test images, the same for every model
    backend: str  # art, foolbox or both
    data: str  # the default data set
    report: str  # the report's folder name under reports/
    estimate: str  # expected wall time, for people choosing a profile
    gallery_labels: tuple[str, ...] = ()  # attack labels the gallery shows (one figure row per model and label); all
    gallery_per_row: int = 3  # examples per gallery row
    # Training seeds of every recipe; empty: the benchmark's one seed. With several, run RECIPE-sK is trained with
    # seed K and the report adds per-seed numbers and intervals over seeds and images (capsrobust.evaluation.seeds).
    seeds: tuple[int, ...] = ()
    # capsrobust.precision: auto is tf32 on a GPU, bf16 on a CPU with bf16 hardware, else fp32. The CPU profiles
    # whose reports are committed say fp32: that is what they were trained in, so their printed commands
    # reproduce them on any CPU.
    train_precision: str = "auto"
    # What the attacks compute gradients in. fp32 unless a profile says otherwise; tf32 means fp32 on a CPU (which
    # has no TF32). Robustness is always judged by fp32 predictions, whatever the attack computed in.
    attack_precision: str = "fp32"


PROFILES: dict[str, BenchmarkProfile] = {}


def register_profile(profile: BenchmarkProfile) -> BenchmarkProfile:
    """Add a profile to the registry; adding a profile is one call here, nothing else changes."""
    if profile.name in PROFILES:
        raise BenchmarkError(f"profile {profile.name!r} is registered twice")
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str | BenchmarkProfile) -> BenchmarkProfile:
    """A registered profile by name; an unknown name is refused with the list of known ones."""
    if isinstance(name, BenchmarkProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise BenchmarkError(f"unknown benchmark profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


register_profile(BenchmarkProfile(
    name="tiny",
    description="tiny models and the tiny suite on 20 images: every stage in seconds (tests, smoke runs)",
    recipes=(("capsnet-tiny", 1), ("cnn-tiny", 1), ("cnn-recon-tiny", 1)),
    suite="tiny", n=20, backend="foolbox", data="mnist-5k", report="benchmark-tiny", train_precision="fp32",
    estimate="about half a minute on 2 CPU cores", gallery_labels=("pgd-linf",), gallery_per_row=1,
))
register_profile(BenchmarkProfile(
    name="quick",
    description="capsnet-paper, cnn-small and cnn-recon for 5 epochs each, the quick suite on 200 images",
    recipes=(("capsnet-paper", 5), ("cnn-small", 5), ("cnn-recon", 5)),
    suite="quick", n=200, backend="art", data="mnist-5k", report="benchmark-quick", train_precision="fp32",
    estimate="10-15 minutes on 2 idle CPU cores (training ~7 min, sweep ~4 min)",
))
register_profile(BenchmarkProfile(
    name="standard",
    description="the CPU reference run (reports/mnist-5k): the recipes' own epochs, cnn-baseline included, the "
                "cpu-standard suite on 100 images",
    recipes=(("capsnet-paper", 15), ("cnn-small", 15), ("cnn-recon", 15), ("cnn-baseline", 6)),
    suite="cpu-standard", n=100, backend="both", data="mnist-5k", report="mnist-5k", train_precision="fp32",
    estimate="about 2 hours on 2 CPU cores: training ~70 min (cnn-baseline ~40), attacks 63 min (measured; "
             "--reuse skips the training)",
    gallery_labels=("pgd-linf", "pgd-linf-recon"),
))
register_profile(BenchmarkProfile(
    name="gpu",
    description="one GPU in minutes: the four paper models with three training seeds each on mnist-5k, the gpu "
                "suite (the standard suite's attacks and AutoAttack; the expensive ones on seed 0) on all 1,000 "
                "test images, both libraries on the main PGD cells",
    recipes=(("capsnet-paper", 15), ("cnn-small", 15), ("cnn-recon", 15), ("cnn-baseline", 6)),
    seeds=(0, 1, 2), suite="gpu", n=1000, backend="both", data="mnist-5k", report="gpu-mnist-5k",
    attack_precision="tf32",
    estimate="7.3-8 minutes on one H100, estimated from measured costs (benchmarks/estimate_profile.py gpu; "
             "training measured at 91 s, the whole profile not yet timed end to end: docs/gpu.md); many hours on "
             "a CPU",
    gallery_labels=("pgd-linf", "pgd-linf-recon"), gallery_per_row=2,
))
register_profile(BenchmarkProfile(
    name="full",
    description="full MNIST (--data-dir) on one GPU: the full-MNIST recipes, the full suite in both libraries",
    recipes=(("capsnet-paper-mnist", 30), ("cnn-small-mnist", 20), ("cnn-recon-mnist", 20),
             ("cnn-baseline-mnist", 20)),
    suite="full", n=1000, backend="both", data="mnist", report="benchmark-full",
    estimate="up to about 10.5 hours on one H100, estimated from measured per-cell costs (benchmarks/"
             "estimate_profile.py full --train-images 55000): cnn-baseline's fp32 attacks and ART's Carlini-Wagner "
             "dominate; adaptive attacks are priced as upper bounds",
))
register_profile(BenchmarkProfile(
    name="mnist",
    description="the full-MNIST verdict (reports/mnist): capsnet-paper, cnn-small and cnn-recon trained on 55,000 "
                "digits, the mnist suite as a cascade on the first 1,000 test digits",
    recipes=(("capsnet-paper-mnist", 30), ("cnn-small-mnist", 12), ("cnn-recon-mnist", 12)),
    suite="mnist", n=1000, backend="art", data="mnist", report="mnist", train_precision="fp32",
    estimate="training ~6 h on 2 idle CPU cores (capsnet-paper 30 epochs of ~10 min, ~22 min on one busy core; "
             "the CNNs ~1 min an epoch); then 71 min measured for sweep, detector, figures and report (reports/mnist, "
             "2 busy cores; --reuse skips the training)",
    gallery_labels=("pgd-linf", "pgd-linf-recon"),
))
register_profile(BenchmarkProfile(
    name="gpu-mnist",
    description="one GPU: the four paper models with three training seeds each on full MNIST, the mnist suite as a "
                "cascade on the first 1,000 test digits",
    recipes=(("capsnet-paper-mnist", 15), ("cnn-small-mnist", 12), ("cnn-recon-mnist", 12),
             ("cnn-baseline-mnist", 8)),
    seeds=(0, 1, 2), suite="mnist", n=1000, backend="art", data="mnist", report="gpu-mnist",
    attack_precision="tf32",
    estimate="not yet timed on a GPU: training priced at ~5 min on one H100 from the mnist-5k rates of docs/gpu.md "
             "(tf32), the cascade at ~1-2 min; many hours on a CPU",
    gallery_labels=("pgd-linf", "pgd-linf-recon"), gallery_per_row=2,
))
register_profile(BenchmarkProfile(
    name="mnist-robust",
    description="robust against robust on full MNIST: cnn-small-at trained on 55,000 digits (Madry PGD L∞ 0.3), "
                "the mnist-robust suite (PGD-100, PGD × 10 restarts, AutoAttack, standalone) on 1,000 test digits",
    recipes=(("cnn-small-at-mnist", 20),),
    suite="mnist-robust", n=1000, backend="art", data="mnist", report="robust-mnist", train_precision="fp32",
    estimate="minutes on one GPU; on a CPU 7-15 min an epoch of 10-step PGD training on one of 2 busy cores "
             "(measured: 10 epochs in 5,520 s; train it with --train-steps 10 and --reuse it), then about 30 min of "
             "attacks",
))
register_profile(BenchmarkProfile(
    name="robust",
    description="robust capsules vs robust CNNs: capsnet-paper-at and cnn-small-at (Madry PGD L∞ 0.3, 40 steps), "
                "the robust suite (PGD 100 steps with its 2×-steps check, restarts, vote attacks, APGD-CE, "
                "AutoAttack, Square) on all 1,000 test images at L∞ 0.1-0.4",
    recipes=(("capsnet-paper-at", 10), ("cnn-small-at", 20)),
    suite="robust", n=1000, backend="art", data="mnist-5k", report="robust-mnist-5k",
    attack_precision="tf32",
    estimate="about 7.5 minutes on one H100, estimated from measured costs (benchmarks/estimate_profile.py robust; "
             "not yet timed end to end); about a day on 2 idle CPU cores: ~5 h of training, up to ~20 h of attacks "
             "(docs/adversarial-training.md)",
))
#: The routing comparison's models (issue 20) with their CPU epochs; the GPU profile trains the same for 10. Each
#: routing's no-routing twin stands before it: capsnet-routing-1 (dynamic routing with one iteration, couplings 1/K)
#: and efficient-capsnet-uniform (self-attention routing replaced by uniform coupling), then the CNNs.
ROUTING_RECIPES_15 = (("capsnet-routing-1", 15), ("capsnet-paper", 15), ("capsnet-routing-5", 15),
                      ("efficient-capsnet-uniform", 15), ("efficient-capsnet", 15), ("cnn-small", 15),
                      ("cnn-efficient-match", 15), ("cnn-em-match", 15))
register_profile(BenchmarkProfile(
    name="routing",
    description="does routing buy robustness? dynamic routing with 1 (no routing), 3 and 5 iterations, "
                "self-attention routing (Efficient-CapsNet) and its uniform-coupling twin, CNNs of matching sizes, "
                "two training seeds, the routing suite (through the routing, around it: vote and transfer attacks) "
                "as a cascade on 500 test images",
    # EM routing stays out: with 2 iterations em-capsnet-small learns, but 15 epochs leave it near 94% validation
    # accuracy (96.8% after 30, test 96.2%) and its one-iteration twin near 65%, below the 97.5% every variant must
    # reach before its robustness is reported (models/em-capsnet-small.toml). When a recipe reaches it, add both
    # here: a resumed benchmark trains them and its sweep grows by their cells. cnn-em-match stays as one more CNN
    # and transfer source.
    recipes=ROUTING_RECIPES_15,
    seeds=(0, 1), suite="routing", n=500, backend="art", data="mnist-5k", report="routing-cpu-mnist-5k",
    estimate="training measured at 10-15 min a run for the dynamic-routing variants in bf16 on one of 2 busy CPU "
             "cores (auto on a CPU with bf16 hardware; ~2x that in fp32), efficient-capsnet and the CNNs a few "
             "minutes (2.5 h for all 16 runs); then about 15 core-hours of cascaded attacks, 7-8 h with two Ray "
             "workers (measured: 21,000 s of cell time for the 208 cells of L∞ 0 and 0.05, 3,800 s of it per "
             "dynamic-routing model and seed: APGD-CE and vote APGD-CE 1,250-1,500 s each, PGD-40 ~360 s; 0.1 and "
             "0.2 estimated at 0.021 s per image and PGD step through capsnet-paper's routing on one core); "
             "split it with --stop-after and resume by running the same command again",
    gallery_labels=("pgd-linf", "vote-pgd-linf"),
))
register_profile(BenchmarkProfile(
    name="gpu-routing",
    description="does routing buy robustness, on one GPU: the routing profile's variants and CNNs trained on full "
                "MNIST (55,000 digits) with three seeds, the routing suite as a cascade on the first 1,000 test "
                "digits",
    recipes=tuple((name, 10) for name, _ in ROUTING_RECIPES_15),
    seeds=(0, 1, 2), suite="routing", n=1000, backend="art", data="mnist", report="gpu-routing-mnist",
    attack_precision="tf32",
    estimate="not yet timed on a GPU: the dynamic-routing trainings priced at 20-35 s each on one H100 from "
             "capsnet-paper's measured tf32 rates (docs/gpu.md); expect more than one 15-minute session: split it "
             "with --stop-after and resume",
    gallery_labels=("pgd-linf", "vote-pgd-linf"),
))
