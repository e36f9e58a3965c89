"""A model's hot spot through ``torch.compile``, with the eager function as the fallback.

Why: some routing algorithms are dozens of small passes over a large tensor. EM routing in em-capsnet-small makes,
per layer and iteration, a few batched matrix-vector products over ~30M vote entries and the elementwise (V − μ)²
between them; eager PyTorch runs each as its own pass (and its backward as several more), and its tiny batched
GEMMs run far below the CPU's peak. Inductor fuses them into a few loops: a training step of em-capsnet-small at
batch 50 on one CPU thread takes 1.7 s compiled against 5.0 s eager (benchmarks/compiled_routing.py), with the same
mathematics. Compiling costs ~20 s the first time a shape is seen (and once more when a second shape makes the
batch size dynamic), so it pays for trainings and sweeps, not for the tests' tiny models: recipes opt in.

Where ``torch.compile`` cannot work (no C++ compiler, an unsupported platform) the first call logs one warning and
every call runs eagerly from then on: slower, never wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


class CompiledOrEager:
    """``function`` compiled on first use; eager for good once compiling or running the compiled code fails.

    Picklable (the compiled code is not kept: a copy compiles again where it runs), so models holding one travel to
    worker processes as they are.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self._compiled: Callable[..., Any] | None = None
        self.failed: str | None = None  # why compiling failed, once it has

    @property
    def compiled(self) -> bool:
        """True while calls go through compiled code (or will, at the first call)."""
        return self.failed is None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            if self._compiled is None:
                self._compiled = torch.compile(self.function)
            try:
                return self._compiled(*args, **kwargs)
            except Exception as error:  # any compiler failure falls back; the eager call re-raises real errors
                self.failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                log.warning("torch.compile could not run %s (%s); it runs eagerly from now on",
                            getattr(self.function, "__name__", self.function), self.failed)
        return self.function(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"function": self.function, "_compiled": None, "failed": self.failed}
