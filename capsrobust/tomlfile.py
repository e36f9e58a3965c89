"""The TOML files people write (model recipes, attack suites): found by name or path, parsed, checked for stray keys.

Recipes (``capsrobust.models.recipes``) and suites (``capsrobust.attacks.suites``) validate their own tables; what
they share — where a bare name is looked up, how a file that is not TOML is refused, how an unknown key is named —
lives here once, each error raised as the caller's own ``CapsRobustError`` subclass so that it names the file.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from capsrobust.errors import CapsRobustError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def resolve_named_toml(
    name: str | Path, folders: Sequence[Path], kind: str, error: type[CapsRobustError]
) -> Path:
    """A path to a TOML file, or ``NAME.toml`` in the first of ``folders`` that has it (recipes, suites).

    The folders go from the working directory's (a user's own ``models/``) to the repository's, so a bare name
    also works when a command runs elsewhere. Not found: ``error`` listing the known names.
    """
    path = Path(name)
    if path.is_file():
        return path
    for folder in folders:
        if (folder / f"{name}.toml").is_file():
            return folder / f"{name}.toml"
    known = sorted({item.stem for folder in folders if folder.is_dir() for item in folder.glob("*.toml")})
    hint = f"; known {kind}s: {', '.join(known)}" if known else ""
    raise error(f"{kind} {name!s} not found: pass a TOML file or a name from {folders[0]}/{hint}")


def read_toml(path: Path, error: type[CapsRobustError]) -> dict[str, Any]:
    """The table in ``path``; a file that cannot be read, is not UTF-8 or is not TOML is ``error`` naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error_found:
        raise error(f"{path}: not valid TOML ({error_found}); fix the file") from None


def refuse_unknown_keys(
    table: Mapping[str, Any], allowed: Collection[str], error: type[CapsRobustError], place: str
) -> None:
    """``error`` naming the first key of ``table`` not in ``allowed``; ``place`` (file and table) starts the line."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise error(f"{place}unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
