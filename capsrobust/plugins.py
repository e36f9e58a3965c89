"""Plugins: a user's own architectures (or attacks), registered from a Python file or an installed package.

A plugin is ordinary Python that calls ``capsrobust.models.registry.register_architecture`` (or
``capsrobust.attacks.register_attack``) when imported. It reaches capsrobust in one of two ways:

* a file, ``capsrobust --plugin path/to/my_models.py train recipe.toml ...`` (any command; repeat the option for
  several files), or ``load_plugins([...])`` from Python;
* an installed package that declares an entry point in the group ``capsrobust.architectures``, loaded by every
  ``capsrobust`` command (``load_entry_points()``).

A recipe then names the new architecture (``architecture = "my-caps"``), and training, sweeps, detection, figures
and reports treat it by what its class declares (``CapsRobustModel.capabilities``), never by its name. Every
command that loads a checkpoint of it needs the plugin again: checkpoints hold weights and a recipe, not code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from capsrobust.errors import CapsRobustError

ENTRY_POINT_GROUP = "capsrobust.architectures"
MODULE_PREFIX = "capsrobust_plugin_"


class PluginError(CapsRobustError):
    """A plugin file is missing or fails to import."""


def load_plugins(paths: Sequence[str | Path]) -> list[ModuleType]:
    """Import each plugin file once per process (loading one twice would register its classes twice)."""
    return [_load_file(Path(path)) for path in paths]


def load_entry_points() -> list[str]:
    """Load the installed packages' plugins (entry-point group ``capsrobust.architectures``); returns their names."""
    loaded = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as error:  # a broken third-party plugin must name itself, not crash with a traceback
            raise PluginError(f"plugin {point.name!r} ({point.value}) failed to load: {error}; fix or uninstall "
                              f"it") from None
        loaded.append(point.name)
    return loaded


def _load_file(path: Path) -> ModuleType:
    if not path.is_file() or path.suffix != ".py":
        raise PluginError(f"plugin {path} is not a Python file; pass --plugin path/to/file.py")
    resolved = path.resolve()
    name = f"{MODULE_PREFIX}{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path} cannot be imported; pass a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exit_:  # sys.exit(0) in a plugin must not make the command look as if it succeeded
        del sys.modules[name]
        raise PluginError(f"plugin {path} called sys.exit({exit_.code!r}) while loading; a plugin should only "
                          f"register architectures or attacks") from None
    except Exception as error:  # whatever the user's file raises, say which file and why, in one line
        del sys.modules[name]
        raise PluginError(f"plugin {path} failed to import: {type(error).__name__}: {error}") from None
    return module


@dataclass(frozen=True)
class PluginSource:
    """A loaded plugin file as a remote worker needs it: the module name its classes pickle under, and its code.

    Ray workers on other machines may not have the file; shipping its text (a few kB) lets them register the same
    architectures under the same module name, so that models pickled here unpickle there.
    """

    module: str
    path: str
    source: str


def loaded_plugin_sources() -> tuple[PluginSource, ...]:
    """Every plugin file this process loaded (``load_plugins``), in the order it loaded them."""
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith(MODULE_PREFIX) and path:
            found.append(PluginSource(name, path, Path(path).read_text(encoding="utf-8")))
    return tuple(found)


def install_plugin_source(plugin: PluginSource) -> ModuleType:
    """Import a shipped plugin under its original module name, once per process."""
    if plugin.module in sys.modules:
        return sys.modules[plugin.module]
    module = ModuleType(plugin.module)
    module.__file__ = plugin.path
    sys.modules[plugin.module] = module
    try:
        exec(compile(plugin.source, plugin.path, "exec"), module.__dict__)
    except Exception as error:  # e.g. a library it imports is not installed on this worker
        del sys.modules[plugin.module]
        raise PluginError(f"plugin {plugin.path} failed to import: {type(error).__name__}: {error}") from None
    return module
