"""Numeric precision of training, evaluation and benchmarks: fp32, tf32, bf16, or auto.

``fp32`` is IEEE single precision everywhere, convolutions included (PyTorch's own default quietly runs cuDNN
convolutions in TF32 on Ampere and later GPUs; inside ``precision_scope`` ``fp32`` means what it says).
``tf32`` keeps float32 tensors but lets CUDA matrix products and convolutions use the tensor cores' TF32 mode
(10-bit mantissa inputs, float32 accumulation). ``bf16`` runs matrix products and convolutions under
``torch.autocast`` in bfloat16; the model keeps its numerically delicate parts (squash, lengths, losses,
routing softmax) in float32. ``auto`` is what training runs fastest in without losing accuracy: tf32 on a CUDA
GPU that has it, bf16 on a CPU that multiplies bfloat16 in hardware (AVX-512 BF16 or AMX), fp32 elsewhere.
Evaluation and attacks differentiate in fp32 unless asked otherwise, because a coarser gradient can make a model
look more robust than it is (docs/precision.md says why).

Nothing here changes global state for good: ``precision_scope`` sets the CUDA flags it needs and restores the
previous values when it exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import torch

from capsrobust.errors import CapsRobustError, parse_choice

# TF32 tensor cores arrived with Ampere (compute capability 8.0).
TF32_MIN_CAPABILITY = (8, 0)


class PrecisionError(CapsRobustError):
    """A precision is unknown or cannot run on the chosen device."""


class Precision(str, Enum):
    """How float32 work is carried out; see the module docstring."""

    AUTO = "auto"
    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"

    def __str__(self) -> str:
        return self.value


PRECISION_CHOICES = tuple(member.value for member in Precision)


class HasDeviceType(Protocol):
    """Anything with a ``type`` like ``torch.device`` ("cpu", "cuda"); lets tests pass a fake CUDA device."""

    @property
    def type(self) -> str: ...


DeviceLike = torch.device | str | HasDeviceType


def _device_type(device: DeviceLike) -> str:
    return torch.device(device).type if isinstance(device, str) else device.type


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels for this CPU (AVX-512 BW/VL/DQ, AVX-512 BF16 or AMX on x86).

    Without them autocast still runs, but on slow reference kernels that emulate bf16: not a mode to benchmark
    or train in.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


#: CPU flags (Linux's /proc/cpuinfo) of instructions that multiply bfloat16 in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX-BF16), where bf16 training pays.

    oneDNN also runs bf16 on plain AVX-512 by widening to float32: correct, but no faster than fp32, so ``auto``
    only chooses bf16 where the flags say the hardware does it (measured on an AMD EPYC with AVX-512 BF16, 2
    cores: capsnet-paper trains 1.9× faster than in fp32, benchmarks/throughput.py). Where /proc/cpuinfo is not
    there (macOS, Windows) the answer is no and ``auto`` stays fp32.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(NATIVE_BF16_FLAGS.intersection(flags)) and cpu_supports_bf16()


def cuda_supports_bf16() -> bool:
    """Whether the current GPU computes in bfloat16 natively (Ampere or later), not by emulation."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation and counts only native support
        return bool(torch.cuda.is_bf16_supported())


def cuda_supports_tf32() -> bool:
    """Whether the current GPU has TF32 tensor cores; on older ones the TF32 flags change nothing."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= TF32_MIN_CAPABILITY


def check_supported(precision: Precision, device: DeviceLike) -> None:
    """Raise ``PrecisionError`` with the fix when ``device`` cannot run ``precision`` (``auto`` always can)."""
    kind = _device_type(device)
    if precision is Precision.TF32:
        if kind != "cuda":
            raise PrecisionError(
                f"tf32 is a CUDA tensor-core mode and cannot run on {kind}; use --precision fp32 or bf16"
            )
        if not cuda_supports_tf32():
            raise PrecisionError("this GPU has no TF32 tensor cores (needs compute capability 8.0+); use fp32")
    elif precision is Precision.BF16:
        if kind == "cuda" and not cuda_supports_bf16():
            raise PrecisionError("this GPU has no native bf16 (needs compute capability 8.0+); use fp32")
        if kind == "cpu" and not cpu_supports_bf16():
            raise PrecisionError(
                "this CPU has no bf16 kernels (oneDNN needs AVX-512 or AMX); use --precision fp32"
            )
        if kind not in ("cpu", "cuda"):
            raise PrecisionError(f"bf16 is supported here on cpu and cuda only, not {kind}; use fp32")


def resolve_precision(
    name: str | Precision, device: DeviceLike, *, training: bool, cpu_bf16: bool = True
) -> Precision:
    """The concrete precision (never ``auto``) that ``name`` means on ``device``, checked to run there.

    ``auto`` is, for training, tf32 on a GPU with TF32 tensor cores, bf16 on a CPU that multiplies bfloat16 in
    hardware (unless ``cpu_bf16`` is false: a model not measured to train well in bf16), and fp32 otherwise;
    evaluation and attacks stay in fp32 unless a caller asks for another precision by name.
    """
    precision = parse_choice(Precision, name, PrecisionError, "precision")
    if precision is Precision.AUTO:
        kind = _device_type(device)
        if training and kind == "cuda" and cuda_supports_tf32():
            return Precision.TF32
        if training and kind == "cpu" and cpu_bf16 and cpu_has_native_bf16():
            return Precision.BF16
        return Precision.FP32
    check_supported(precision, device)
    return precision


@dataclass(frozen=True)
class CudaFlags:
    """The process-wide CUDA switches a precision sets: TF32 for matmuls and cuDNN, and cuDNN autotuning."""

    matmul_tf32: bool
    cudnn_tf32: bool
    cudnn_benchmark: bool

    @classmethod
    def read(cls) -> CudaFlags:
        return cls(
            matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
            cudnn_tf32=bool(torch.backends.cudnn.allow_tf32),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        )

    def apply(self) -> None:
        # The legacy allow_tf32 switches, not torch ≥ 2.9's fp32_precision: they keep both APIs readable, while
        # setting the new one makes every legacy getter (which torch.compile and libraries call) raise.
        torch.backends.cuda.matmul.allow_tf32 = self.matmul_tf32
        torch.backends.cudnn.allow_tf32 = self.cudnn_tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark


def cuda_flags_for(precision: Precision, autotune: bool = True) -> CudaFlags:
    """TF32 only for ``tf32``: under ``bf16`` whatever autocast leaves in float32 stays exact float32.

    cuDNN autotuning (``autotune``) pays where shapes repeat batch after batch (training, evaluation); attacks
    that shrink their batch to the images still robust (APGD, Square, AutoAttack) meet a new shape at almost every
    step, and would search again each time.
    """
    tf32 = precision is Precision.TF32
    return CudaFlags(matmul_tf32=tf32, cudnn_tf32=tf32, cudnn_benchmark=autotune)


@contextmanager
def _cuda_flags(flags: CudaFlags) -> Iterator[None]:
    try:
        previous = CudaFlags.read()
    except RuntimeError as error:  # someone mixed the legacy and new TF32 APIs; torch refuses to say which holds
        raise PrecisionError(
            f"cannot read the TF32 switches ({str(error).split(',')[0]}); set them with one torch API only"
        ) from None
    flags.apply()
    try:
        yield
    finally:
        previous.apply()


@contextmanager
def precision_scope(precision: Precision, device: DeviceLike, *, autotune: bool = True) -> Iterator[None]:
    """Run the block in ``precision`` on ``device``: CUDA flags for fp32/tf32, autocast to bfloat16 for bf16.

    ``autotune`` switches cuDNN's algorithm search on (see ``cuda_flags_for``).
    Backward passes belong outside the scope (autocast's rule); the CUDA flags are restored on exit, so the
    scope leaves no global state behind. ``precision`` must be resolved (``resolve_precision``), not ``auto``.
    """
    if precision is Precision.AUTO:
        raise ValueError("resolve 'auto' with resolve_precision before entering a precision scope")
    check_supported(precision, device)
    kind = _device_type(device)
    with ExitStack() as stack:
        if kind == "cuda":
            stack.enter_context(_cuda_flags(cuda_flags_for(precision, autotune)))
        if precision is Precision.BF16:
            stack.enter_context(torch.autocast(device_type=kind, dtype=torch.bfloat16))
        yield
