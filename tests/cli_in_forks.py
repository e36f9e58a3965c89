"""Run ``capsrobust`` once per argument list, each in a fresh process, for the price of one import of torch.

The test of every subcommand's bad values wants what a user meets: a process of its own, its exit status and its
raw stderr. Thirty interpreters each importing torch, ART and Foolbox cost half a minute; this script imports every
module of the package once (Ray excepted: importing it starts threads), then forks a child per argument list before
anything has run (no thread pool yet, so the fork is safe), and a child pays only for its own command. Each child
redirects its stdout and stderr to files, runs the command as ``capsrobust ARGS`` would and leaves with its exit
status. Reads a JSON list of argument lists on stdin; writes a JSON list of ``{"returncode", "stdout", "stderr"}``
on stdout, in the same order.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import tempfile
from pathlib import Path


def run_in_fork(main, args: list[str], folder: Path) -> dict[str, object]:
    """``main`` as ``capsrobust ARGS`` in a forked child; its exit status and output (kept in ``folder``)."""
    out, err = folder / "stdout", folder / "stderr"
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            with out.open("w") as stdout, err.open("w") as stderr:
                os.dup2(stdout.fileno(), 1)
                os.dup2(stderr.fileno(), 2)
                sys.argv = ["capsrobust", *args]
                try:
                    main()
                    code = 0
                except SystemExit as stop:
                    code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status), "stdout": out.read_text(), "stderr": err.read_text()}


RAY_MODULE = "capsrobust.execution.ray_executor"


def import_the_package() -> None:
    """Every ``capsrobust`` module, and with them torch, ART, Foolbox, pandas and matplotlib."""
    import capsrobust

    for module in pkgutil.walk_packages(capsrobust.__path__, "capsrobust."):
        if module.name != RAY_MODULE:
            importlib.import_module(module.name)


def main() -> None:
    import_the_package()
    from capsrobust.cli import main as cli

    commands = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as scratch:
        results = []
        for number, args in enumerate(commands):
            folder = Path(scratch) / str(number)
            folder.mkdir()
            results.append(run_in_fork(cli, args, folder))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
