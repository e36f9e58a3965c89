"""Transfer adversarials crafted once per source and budget, then judged on every target.

A transfer cell runs an attack on a *source* model and judges the adversarials on its *target*. What the attack
returns depends on the source, the attack and its settings, the budget, the seed and the images, never on the
target, so a sweep that judges one source's adversarials on k targets would otherwise craft them k times. In the
routing profile that is PGD-40 through a capsule network, repeated for 13 targets at every budget: more compute than
all the other attacks of the sweep together. ``TransferCache`` crafts them once, on every image the entry may attack
(the first ``limit`` test images), keeps them in the sweep folder, and gives each target cell the rows of the
images it attacks. A cascaded target attacks only the images still robust on it, so its cell reads a subset of rows;
the adversarial of one image is the same whichever target judges it, as a transfer evaluation should be.

The plan derives a transfer cell's seed from the source, entry and budget without the target
(``plan._transfer_cells``), so every target asks for the same adversarials. The file name carries a digest of
everything the adversarials depend on (source weights, attack, settings, budget, seed, precision, the images); a
changed input is a new file, never a stale one. Files are written atomically; a lock file makes a second worker on
this machine wait for the first to finish crafting rather than craft the same images again. Workers on other hosts
of a Ray cluster that do not share the folder craft their own copy: as valid (same attack, seed and images), though
not necessarily bit-identical across hosts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from capsrobust.attacks.registry import AttackResult
from capsrobust.evaluation.plan import Cell, eps_text, slug
from capsrobust.runtime import atomic_write

try:  # POSIX; elsewhere two workers may craft the same file, which costs time but never mixes results
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "capsrobust-transfer/1"


@dataclass(frozen=True)
class TransferKey:
    """What a source's adversarials depend on; two target cells with equal keys read the same file."""

    source: str
    source_sha256: str
    label: str
    attack: str
    backend: str
    objective: str
    eps: float
    params: str  # JSON, sorted keys
    seed: int
    precision: str
    images_sha256: str

    @classmethod
    def of(cls, cell: Cell, source_sha256: str, precision: str, images: torch.Tensor) -> TransferKey:
        """The key of transfer ``cell`` crafting on ``images`` (the first ``limit`` test images)."""
        pixels = images.detach().cpu().contiguous().to(torch.float32).numpy().tobytes()
        return cls(cell.source, source_sha256, cell.label, cell.attack, cell.backend.value, cell.objective.value,
                   cell.eps, json.dumps(dict(cell.params), sort_keys=True), cell.seed, precision,
                   hashlib.sha256(pixels).hexdigest())

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]
        return f"{slug(self.label)}__{self.backend}__{self.objective}__eps{eps_text(self.eps)}__{digest}.safetensors"


Craft = Callable[[], AttackResult]


@dataclass(frozen=True)
class TransferCache:
    """The folder of a sweep's crafted transfer adversarials (``SWEEP/transfer``, ``store.TRANSFER_DIR``)."""

    folder: Path

    def adversarials(self, key: TransferKey, craft: Craft) -> tuple[AttackResult, float]:
        """The adversarials of ``key`` for every image it covers, and the seconds this call spent crafting them
        (0 when another cell had already crafted them). ``craft`` runs the attack on the source."""
        path = self.folder / key.file_name()
        with self._locked(path):
            stored = _read(path, key)
            if stored is not None:
                return stored, 0.0
            started = time.perf_counter()
            result = craft()
            seconds = time.perf_counter() - started
            metadata = {"format": FORMAT, "key": json.dumps(key.__dict__, sort_keys=True),
                        "steps_or_queries": str(result.steps_or_queries), "objective_used": result.objective_used,
                        "seconds": f"{seconds:.3f}"}
            tensors = {"adversarials": result.adversarials.detach().cpu().to(torch.float32).contiguous()}
            atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))
            return result, seconds

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
            yield


def _read(path: Path, key: TransferKey) -> AttackResult | None:
    """The stored result of ``key``, or None when there is none or the file is unreadable or holds another key
    (a digest collision or a damaged file: crafting again is always safe)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT or metadata.get("key") != json.dumps(key.__dict__, sort_keys=True):
                return None
            return AttackResult(handle.get_tensor("adversarials"), int(metadata["steps_or_queries"]),
                                metadata["objective_used"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
