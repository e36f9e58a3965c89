"""Attack suites: ``attacks/*.toml`` → frozen dataclasses, validated once at load.

A suite is a list of attacks, each with its budgets (eps), the libraries to run it in and its parameters::

    [suite]
    name = "quick"
    description = "FGSM and PGD L∞ in minutes on a CPU"
    n = 200                      # test images when the caller does not say (CLI --n)
    double_steps_check = true    # add a PGD cell with twice the steps (a self-check, see capsrobust.evaluation.checks)
    cascade = false              # attack only what earlier attacks left robust (capsrobust.evaluation.cascade)
    min_clean_accuracy = 0.975   # optional: reports leave out the robustness of models below it on the attacked
                                 # images (a weak model is trivially "not robust"); default 0, no floor
    routing_baselines = ["capsnet-routing-1"]  # optional: no-routing ablations (recipe groups); the report pairs
                                 # every model of each one's architecture against it (capsrobust.evaluation.routing)

    [[attack]]
    name = "pgd-linf"            # an attack of the registry (capsrobust.attacks)
    label = "pgd-linf"           # optional, unique in the suite; tells apart two entries of one attack
    eps = [0.1, 0.3]             # L∞ budgets on [0, 1] pixels (for cw-l2: L2 thresholds)
    backends = ["art", "foolbox"]  # optional; default: every library that has the attack
    models = ["capsnet-paper"]   # optional; default: every model of the sweep (names as the sweep labels them)
    seeds = [0]                  # optional; default: models of every training seed (a multi-seed profile spends
                                 # its expensive attacks on one seed and its cheap ones on all)
    objective = "ce-lengths"     # optional; default: the sweep's (each model's own); see capsrobust.attacks.objectives
    [attack.params]              # optional; the attack's parameters, defaults from the registry
    steps = 10

Unknown attacks, keys, parameters and backends, and bad budgets (not a number, negative, above 1 for L∞) are
refused with one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsrobust.attacks.objectives import AttackObjective, ObjectiveError
from capsrobust.attacks.registry import AttackError, AttackKind, AttackSpec, Backend, ParamValue, get_attack
from capsrobust.errors import CapsRobustError
from capsrobust.tomlfile import read_toml, refuse_unknown_keys, resolve_named_toml

SUITE_DIR = Path("attacks")
# The suites shipped with the repository, found also when the working directory is elsewhere.
REPOSITORY_SUITE_DIR = Path(__file__).resolve().parents[2] / "attacks"
SUITE_KEYS = {"name", "description", "n", "double_steps_check", "cascade", "min_clean_accuracy",
              "routing_baselines"}
ATTACK_KEYS = {"name", "label", "eps", "backends", "models", "seeds", "objective", "params", "n", "transfer_from"}


def model_group(model: str, train_seed: object) -> str:
    """The recipe-level name of a run: ``capsnet-paper-s1`` trained with seed 1 → ``capsnet-paper``.

    Multi-seed benchmarks label their runs ``RECIPE-sK``; a label without that suffix is its own group.
    """
    if not isinstance(train_seed, int) or isinstance(train_seed, bool):
        try:
            train_seed = int(train_seed)  # type: ignore[call-overload]  # a float from a CSV column
        except (TypeError, ValueError, OverflowError):
            return model
    suffix = f"-s{train_seed}"
    return model[: -len(suffix)] if model.endswith(suffix) and len(model) > len(suffix) else model


class SuiteError(CapsRobustError):
    """An attack suite (``attacks/*.toml``) is missing, malformed, or names unknown attacks, keys or backends."""


@dataclass(frozen=True)
class AttackEntry:
    """One attack of a suite with its budgets, backends and fully resolved parameters."""

    label: str
    attack: str
    eps: tuple[float, ...]
    backends: tuple[Backend, ...]
    params: tuple[tuple[str, ParamValue], ...]  # every parameter of the attack, sorted by name
    # The models it runs on, by sweep label; empty: all. Lets a CPU suite spend an expensive attack where it
    # answers the question (CW on the small models) without dropping the model from the cheaper attacks.
    models: tuple[str, ...] = ()
    # What its gradient attacks differentiate, overriding the sweep's: one suite can then run PGD with two
    # objectives and the report take the per-image worst case (no single CapsNet objective wins every budget).
    objective: AttackObjective | None = None
    # The training seeds of the models it runs on; empty: all. A checkpoint's seed comes from its metadata.
    seeds: tuple[int, ...] = ()
    # In a cascade, the attack runs on what is still robust among the sweep's first ``n`` images only (None: all):
    # an expensive query attack (Square) can then check a verdict's 1,000 images on its first 200.
    n: int | None = None
    # A transfer attack: the attack runs on each of these models (sweep labels or recipe groups) and its
    # adversarials are judged on every other model of the sweep; empty: the attack runs on the attacked model.
    # How much of a capsule network's robustness survives adversarials crafted on its one-iteration twin or on a
    # CNN says whether its own gradients were hiding anything.
    transfer_from: tuple[str, ...] = ()

    def applies_to(self, model: str, train_seed: int | None = None) -> bool:
        """Whether this entry runs on ``model`` trained with ``train_seed`` (an unknown seed matches ``seeds = []``).

        ``models`` may name a run (``cnn-small-s1``) or its recipe group (``cnn-small``, every seed of it).
        """
        named = not self.models or model in self.models or model_group(model, train_seed) in self.models
        seeded = not self.seeds or train_seed in self.seeds
        return named and seeded

    @property
    def spec(self) -> AttackSpec:
        return get_attack(self.attack)

    @property
    def params_dict(self) -> dict[str, ParamValue]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        table = {"name": self.attack, "label": self.label, "eps": list(self.eps),
                 "backends": [b.value for b in self.backends], "params": self.params_dict}
        if self.models:  # only when set, so the digests of suites without it (and their resumable sweeps) stay
            table["models"] = list(self.models)
        if self.objective is not None:
            table["objective"] = self.objective.value
        if self.seeds:
            table["seeds"] = list(self.seeds)
        if self.n is not None:
            table["n"] = self.n
        if self.transfer_from:
            table["transfer_from"] = list(self.transfer_from)
        return table


@dataclass(frozen=True)
class Suite:
    """A validated attack suite; ``source`` names the file it came from."""

    name: str
    attacks: tuple[AttackEntry, ...]
    n: int = 1000
    description: str = ""
    double_steps_check: bool = True
    cascade: bool = False
    min_clean_accuracy: float = 0.0
    routing_baselines: tuple[str, ...] = ()
    source: str = "<suite>"

    def to_dict(self) -> dict[str, Any]:
        header: dict[str, Any] = {"name": self.name, "description": self.description, "n": self.n,
                                  "double_steps_check": self.double_steps_check}
        if self.cascade:  # only when set, so the digests of suites without it (and their resumable sweeps) stay
            header["cascade"] = True
        if self.min_clean_accuracy:  # likewise
            header["min_clean_accuracy"] = self.min_clean_accuracy
        if self.routing_baselines:  # likewise
            header["routing_baselines"] = list(self.routing_baselines)
        return {"suite": header, "attack": [entry.to_dict() for entry in self.attacks]}

    def digest(self) -> str:
        """SHA-256 of the resolved suite: what a resumed sweep must match (the file's comments may change)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def resolve_suite_path(suite: str | Path) -> Path:
    """A path to a TOML file, or a bare suite name looked up in ``attacks/`` (the working directory's, then the
    repository's)."""
    return resolve_named_toml(suite, (SUITE_DIR, REPOSITORY_SUITE_DIR), "suite", SuiteError)


def load_suite(suite: str | Path) -> Suite:
    """Read and validate a suite file (or bare name)."""
    path = resolve_suite_path(suite)
    return suite_from_dict(read_toml(path, SuiteError), source=str(path), default_name=path.stem)


def suite_from_dict(table: Mapping[str, Any], source: str = "<suite>", default_name: str = "suite") -> Suite:
    """Validate a parsed suite table; ``source`` names it in errors."""
    _refuse_unknown(table, {"suite", "attack"}, source, "top level")
    header = table.get("suite", {})
    if not isinstance(header, Mapping):
        raise SuiteError(f"{source}: [suite] must be a table")
    _refuse_unknown(header, SUITE_KEYS, source, "[suite]")
    name = _typed(header.get("name", default_name), str, source, "suite.name", "a string")
    description = _typed(header.get("description", ""), str, source, "suite.description", "a string")
    n = _typed(header.get("n", 1000), int, source, "suite.n", "an integer")
    if n < 1:
        raise SuiteError(f"{source}: key 'suite.n' must be ≥ 1, got {n}")
    double = _typed(header.get("double_steps_check", True), bool, source, "suite.double_steps_check",
                    "true or false")
    cascade = _typed(header.get("cascade", False), bool, source, "suite.cascade", "true or false")
    floor = header.get("min_clean_accuracy", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor < 1:
        raise SuiteError(f"{source}: key 'suite.min_clean_accuracy' must be a fraction in [0, 1), e.g. 0.975, got "
                         f"{floor!r}")
    baselines = header.get("routing_baselines", [])
    if not isinstance(baselines, list) or not all(isinstance(b, str) and b.strip() for b in baselines) \
            or len(set(baselines)) != len(baselines):
        raise SuiteError(f"{source}: key 'suite.routing_baselines' must be a list of distinct recipe groups, e.g. "
                         f'["capsnet-routing-1"], got {baselines!r}')
    entries = table.get("attack")
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{source}: no attacks; add at least one [[attack]] table with name and eps")
    attacks = tuple(_entry(entry, index, source, cascade) for index, entry in enumerate(entries, start=1))
    labels = [entry.label for entry in attacks]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SuiteError(
            f"{source}: two [[attack]] entries share the label {duplicates[0]!r}; give one a distinct 'label'"
        )
    return Suite(name=name, attacks=attacks, n=n, description=description, double_steps_check=double,
                 cascade=cascade, min_clean_accuracy=float(floor),
                 routing_baselines=tuple(baseline.strip() for baseline in baselines), source=source)


def _entry(entry: Any, index: int, source: str, cascade: bool) -> AttackEntry:
    where = f"[[attack]] #{index}"
    if not isinstance(entry, Mapping):
        raise SuiteError(f"{source}: {where} must be a table")
    if "name" not in entry:
        raise SuiteError(f"{source}: {where}: missing key 'name' (the attack, e.g. \"pgd-linf\")")
    name = _typed(entry["name"], str, source, f"{where} name", "a string")
    where = f"[[attack]] #{index} ({name})"
    _refuse_unknown(entry, ATTACK_KEYS, source, where)
    try:
        spec = get_attack(name)
    except AttackError as error:
        raise SuiteError(f"{source}: {where}: key 'name': {error}") from None
    label = _typed(entry.get("label", name), str, source, f"{where} label", "a string")
    if "eps" not in entry:
        raise SuiteError(f"{source}: {where}: missing key 'eps' (a list of budgets, e.g. [0.1, 0.3])")
    raw_eps = entry["eps"]
    if not isinstance(raw_eps, list) or not raw_eps:
        raise SuiteError(f"{source}: {where}: key 'eps' must be a non-empty list of numbers, got {raw_eps!r}")
    eps: list[float] = []
    for value in raw_eps:
        try:
            eps.append(spec.check_eps(value))
        except ValueError as error:
            raise SuiteError(f"{source}: {where}: key 'eps': {error}") from None
    if len(set(eps)) != len(eps):
        raise SuiteError(f"{source}: {where}: key 'eps' lists a budget twice: {raw_eps!r}")
    backends = _backends(entry.get("backends"), spec, source, where)
    models = entry.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models) \
            or len(set(models)) != len(models):
        raise SuiteError(f"{source}: {where}: key 'models' must be a list of distinct model names, got {models!r}")
    seeds = entry.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds) \
            or len(set(seeds)) != len(seeds):
        raise SuiteError(f"{source}: {where}: key 'seeds' must be a list of distinct integer training seeds, "
                         f"got {seeds!r}")
    objective = None
    if "objective" in entry:
        try:
            objective = AttackObjective.parse(entry["objective"])
        except ObjectiveError as error:
            raise SuiteError(f"{source}: {where}: key 'objective': {error}") from None
    limit = entry.get("n")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise SuiteError(f"{source}: {where}: key 'n' must be an integer ≥ 1 (images this attack sees), got {limit!r}")
    if limit is not None and not cascade:
        raise SuiteError(f"{source}: {where}: key 'n' needs the cascade (set cascade = true under [suite]); a full "
                         f"sweep attacks every image with every attack")
    transfer_from = entry.get("transfer_from", [])
    if not isinstance(transfer_from, list) or not all(isinstance(m, str) and m for m in transfer_from) \
            or len(set(transfer_from)) != len(transfer_from):
        raise SuiteError(f"{source}: {where}: key 'transfer_from' must be a list of distinct model names, "
                         f"got {transfer_from!r}")
    if transfer_from and spec.kind is not AttackKind.BOUNDED:
        raise SuiteError(f"{source}: {where}: key 'transfer_from': only a bounded attack transfers (its "
                         f"adversarials are judged at its own eps); {name} is not one")
    params = entry.get("params", {})
    if not isinstance(params, Mapping):
        raise SuiteError(f"{source}: {where}: key 'params' must be a table")
    try:
        resolved = spec.resolve_params(params)
    except ValueError as error:
        raise SuiteError(f"{source}: {where}: key 'params': {error}") from None
    return AttackEntry(label=label, attack=name, eps=tuple(eps), backends=backends,
                       params=tuple(sorted(resolved.items())), models=tuple(models),
                       objective=objective, seeds=tuple(seeds), n=limit, transfer_from=tuple(transfer_from))


def _backends(raw: Any, spec: AttackSpec, source: str, where: str) -> tuple[Backend, ...]:
    if raw is None:
        return spec.backends
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{source}: {where}: key 'backends' must be a non-empty list, got {raw!r}")
    chosen: list[Backend] = []
    for value in raw:
        try:
            backend = Backend(value)
        except ValueError:
            known = ", ".join(b.value for b in Backend)
            raise SuiteError(f"{source}: {where}: key 'backends': unknown backend {value!r}; choose from {known}") \
                from None
        if backend not in spec.backends:
            supported = ", ".join(b.value for b in spec.backends)
            raise SuiteError(
                f"{source}: {where}: key 'backends': {spec.name} has no {backend.value} implementation "
                f"(it runs in: {supported})"
            )
        if backend not in chosen:
            chosen.append(backend)
    return tuple(chosen)


def _typed(value: Any, kind: type, source: str, key: str, what: str) -> Any:
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise SuiteError(f"{source}: key {key!r} must be {what}, got {value!r}")
    return value


def _refuse_unknown(table: Mapping[str, Any], allowed: set[str], source: str, where: str) -> None:
    refuse_unknown_keys(table, allowed, SuiteError, f"{source}: {where}: ")
