"""Devices, seeds and the provenance record every output carries (versions, device, command line)."""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import shlex
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import capsrobust
from capsrobust.errors import DeviceError, TableError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error, never a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_CHOICES)}")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    """Seed the global generators torch, numpy and Python's ``random`` draw from (dropout, initialisation)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Library versions recorded beside every result."""
    found = {
        "capsrobust": capsrobust.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    for module in ("torchvision", "art", "foolbox", "pandas"):
        imported = sys.modules.get(module)
        if imported is not None:
            found[module] = getattr(imported, "__version__", "unknown")
    return found


def command_line() -> str:
    """The command that is running, quoted so that it can be pasted back into a shell."""
    program = Path(sys.argv[0]).name if sys.argv else "python"
    return shlex.join([program, *sys.argv[1:]])


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (checkpoints and sweep inputs are fingerprinted with it)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Have ``write`` fill a temporary file beside ``path``, then rename it into place.

    Readers see either the old file or the complete new one, never a half-written file, even when the process
    is killed in between.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        # mkstemp makes the file owner-only (0600); what the user gets from any other tool is 0666 less the umask
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_folder_can_be_made(path: Path) -> None:
    """Raise the ``OSError`` that making ``path`` would raise (a file or a symlink loop on the way, no permission),
    without making anything: a command checks its ``--out`` before seconds of loading data, and a refused
    command leaves no empty folder behind."""
    for existing in (path, *path.parents):
        try:
            status = existing.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # missing (made later with its parents), or below a file: the loop reaches the culprit
        if not stat.S_ISDIR(status.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
        return


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def read_table(path: Path, columns: Sequence[str] = (), required: Sequence[str] = (), fix: str = "") -> pd.DataFrame:
    """A CSV table written by capsrobust, or an empty one with ``columns`` when the file is absent or empty.

    An empty table is written as nothing or a lone newline (pandas writes no header for a frame without columns),
    and ``pd.read_csv`` refuses both, so any file of at most one byte counts as empty. A file that is not CSV, or
    lacks one of the ``required`` columns (damaged, truncated, or another program's), raises ``TableError`` naming
    the file and ``fix``: read as it is, it would turn into a traceback, or into numbers about nothing.
    """
    if not (path.is_file() and path.stat().st_size > 1):
        return pd.DataFrame(columns=list(columns))
    fix = fix or "restore it or rerun the command that wrote it"
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"{path} is damaged (not a CSV table: {reason}); {fix}") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise TableError(f"{path} is damaged (no column {missing[0]!r}); {fix}")
    return table
