"""Forward, train-step and PGD-step throughput of the models, per batch size and precision.

Not a test: it measures wall-clock speed. Run it on an idle machine:

    .venv/bin/python benchmarks/throughput.py                      # CPU (or CUDA when present), batch 100
    .venv/bin/python benchmarks/throughput.py --device cuda --precision fp32 tf32 bf16 \\
        --batch-sizes 100 1000 --plain --json throughput.json

One row per (recipe, batch size, precision): images/s for inference (eval mode, no gradients), for a full
training step (forward and loss in the precision, backward, Adam update, as ``capsrobust train`` does it) and
image-steps/s of PGD (one step: forward in eval mode, CW margin loss on the model's class scores, gradient to
the input, signed step, projection onto the ε-ball and [0, 1]); the FLOPs of each counted by torch's FLOP
counter, the FLOP/s that achieves, that as a fraction of a large matrix product in the same precision on the
same device (a practical ceiling for dense work there), and the peak GPU memory of the row. ``--plain`` adds
rows for ``plain_capsnet.PlainCapsNet``, a straightforward CapsNet of the paper's shape that capsnet-paper must
never be slower than. A precision the device cannot run gives a row marked skipped, with the reason.

``--process`` adds what a user waits for: seconds from launching ``capsrobust train RECIPE --epochs 1`` on mnist-5k
to its first training batch (start-up: imports, data, model), and for the whole process, in the default
precision (``auto``; the column ``process_precision`` says what it became).

``--baseline REF`` compares this checkout with the code at git commit REF, measured interleaved in one run: for
each recipe, a subprocess on today's package, then one on REF's (a temporary git worktree put first on
PYTHONPATH), alternating which goes first; the plain CapsNet is measured once, as the reference of both. It
prints the before/after table with the ratios (issue 21's targets):

    .venv/bin/python benchmarks/throughput.py --baseline 3cd130c --plain --process --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from plain_capsnet import PlainCapsNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from capsrobust.models import CapsRobustModel
from capsrobust.models.recipes import build_model, load_recipe
from capsrobust.precision import Precision, PrecisionError, precision_scope, resolve_precision
from capsrobust.runtime import command_line, device_description, resolve_device, versions

PRECISIONS = ("fp32", "tf32", "bf16")
PLAIN_OF = "capsnet-paper"  # the recipe whose shape PlainCapsNet has
PGD_EPS, PGD_STEP = 0.3, 0.01
COMPILED_WARMUP = 5  # torch.compile compiles again for eval, input gradients, training and autocast
COLUMNS = [
    "recipe", "model", "batch", "precision", "status", "reason", "forward_img_s", "train_img_s",
    "pgd_image_steps_s", "peak_memory_mib", "forward_gflop_per_image", "train_gflop_per_image",
    "forward_tflop_s", "train_tflop_s", "matmul_tflop_s", "train_fraction_of_matmul", "channels_last",
    "compiled", "warmup_s", "device", "torch", "startup_s", "process_s", "process_precision", "code",
]
PLAIN = "plain"  # the pseudo-recipe of PlainCapsNet in --recipes
# Reached through the CLI exactly as a user runs it; the first training batch ends the process.
STARTUP_PROBE = """
import os, sys, time
launched = float(sys.argv[1])
import capsrobust.training.loop as loop
def first_batch(*args, **kwargs):
    print(f"STARTUP {time.time() - launched:.3f}", flush=True)
    os._exit(0)
loop._train_epoch = first_batch
from capsrobust.cli import main
sys.argv = ["capsrobust", *sys.argv[2:]]
main()
"""


@dataclass(frozen=True)
class Subject:
    """What is measured, whatever its class: class scores for attacks, and the training loss."""

    module: nn.Module  # the eager model: parameters, train/eval mode, FLOP counting
    run: Callable[..., Any]  # the module itself, or torch.compile of it

    @property
    def name(self) -> str:
        return "plain" if isinstance(self.module, PlainCapsNet) else "capsrobust"

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, PlainCapsNet):
            return torch.log(self.run(images)[0].clamp_min(1e-12))
        return self.run(images).logits

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, PlainCapsNet):
            lengths, reconstruction = self.run(images, labels)
            return PlainCapsNet.loss(lengths, reconstruction, images, labels)
        assert isinstance(self.module, CapsRobustModel)
        return self.module.loss(self.run(images, labels), images, labels).total

    def eager(self) -> Subject:
        return replace(self, run=self.module)


def convolutions_channels_last(model: nn.Module) -> nn.Module:
    """Only the convolutions: ``Module.to(memory_format=...)`` would also restride 4-D parameters such as W."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model


def make_subject(recipe: str, plain: bool, device: torch.device, channels_last: bool, compiled: bool) -> Subject:
    model = PlainCapsNet() if plain else build_model(load_recipe(recipe))
    model = model.to(device)
    if channels_last:
        convolutions_channels_last(model)
    return Subject(model, torch.compile(model) if compiled else model)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(step: Callable[[], None], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def matmul_flops_per_second(device: torch.device, precision: Precision, size: int, repeats: int) -> float:
    """The best of ``repeats`` large matrix products in ``precision``: a ceiling, so the fastest run is fair."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)

    def product() -> None:
        with precision_scope(precision, device):
            torch.mm(a, b)

    return 2 * size**3 / min(timed_runs(product, device, max(repeats, 10)))


def counted_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def cw_margin(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of (best other class's score − true class's score): what PGD ascends."""
    scores = scores.float()
    true = scores.gather(1, labels[:, None]).squeeze(1)  # (B,)
    others = scores.masked_fill(F.one_hot(labels, scores.shape[1]).bool(), float("-inf"))  # (B, C)
    return (others.amax(dim=1) - true).sum()


def measure(
    subject: Subject,
    device: torch.device,
    precision: Precision,
    batch: int,
    repeats: int,
    channels_last: bool,
    warmup: int = 2,
) -> dict[str, float]:
    """Images/s of ``subject``'s forward, train step and PGD step at ``batch``, and the FLOPs of each.

    FLOPs are counted on the eager model: torch.compile'd code hides its operations from the counter.
    """
    images = torch.rand(batch, 1, 28, 28, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.Adam(subject.module.parameters(), lr=1e-3)
    adversarial = [images.clone()]

    def forward(measured: Subject) -> None:
        with torch.no_grad(), precision_scope(precision, device):
            measured.scores(images)

    def train_step(measured: Subject) -> None:
        with precision_scope(precision, device):
            loss = measured.loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def pgd_step(measured: Subject) -> None:
        current = adversarial[0].detach().requires_grad_(True)
        with precision_scope(precision, device):
            objective = cw_margin(measured.scores(current), labels)
        (gradient,) = torch.autograd.grad(objective, current)
        stepped = current.detach() + PGD_STEP * gradient.sign()
        adversarial[0] = torch.min(torch.max(stepped, images - PGD_EPS), images + PGD_EPS).clamp(0.0, 1.0)

    warmup_seconds = [0.0]  # the warm-up steps' wall time: torch.compile's compilations when compiled

    def seconds(step: Callable[[Subject], None]) -> float:
        started = time.perf_counter()
        times = timed_runs(lambda: step(subject), device, repeats, warmup)
        warmup_seconds[0] += time.perf_counter() - started - sum(times)
        return statistics.median(times)

    subject.module.eval()
    forward_seconds = seconds(forward)
    pgd_seconds = seconds(pgd_step)
    forward_flops = counted_flops(lambda: forward(subject.eager()))
    subject.module.train()
    train_seconds = seconds(train_step)
    train_flops = counted_flops(lambda: train_step(subject.eager()))
    return {
        "forward_img_s": batch / forward_seconds,
        "train_img_s": batch / train_seconds,
        "pgd_image_steps_s": batch / pgd_seconds,
        "forward_gflop_per_image": forward_flops / batch / 1e9,
        "train_gflop_per_image": train_flops / batch / 1e9,
        "forward_tflop_s": forward_flops / forward_seconds / 1e12,
        "train_tflop_s": train_flops / train_seconds / 1e12,
        "warmup_s": warmup_seconds[0],
    }


def measure_row(
    recipe: str,
    plain: bool,
    batch: int,
    precision_name: str,
    device: torch.device,
    arguments: argparse.Namespace,
    matmul_peaks: dict[Precision, float],
) -> dict[str, Any]:
    """One table row; a precision the device cannot run, or a batch that does not fit, is a skipped row."""
    row: dict[str, Any] = {
        "recipe": recipe, "model": "plain" if plain else "capsrobust", "batch": batch, "precision": precision_name,
        "status": "ok", "reason": "", "channels_last": arguments.channels_last, "compiled": arguments.compile,
        "device": device_description(device), "torch": torch.__version__,
    }
    try:
        precision = resolve_precision(precision_name, device, training=True)
    except PrecisionError as error:
        return {**row, "status": "skipped", "reason": str(error)}
    torch.manual_seed(0)
    subject = make_subject(recipe, plain, device, arguments.channels_last, arguments.compile)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        warmup = COMPILED_WARMUP if arguments.compile else 2
        row.update(measure(subject, device, precision, batch, arguments.repeats, arguments.channels_last, warmup))
    except torch.cuda.OutOfMemoryError:
        return {**row, "status": "skipped", "reason": f"out of GPU memory at batch {batch}"}
    row["peak_memory_mib"] = (
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    )
    if precision not in matmul_peaks and arguments.matmul_size > 0:
        matmul_peaks[precision] = matmul_flops_per_second(device, precision, arguments.matmul_size, arguments.repeats)
    peak = matmul_peaks.get(precision, float("nan"))
    row["matmul_tflop_s"] = peak / 1e12
    row["train_fraction_of_matmul"] = row["train_tflop_s"] * 1e12 / peak
    return row


def process_seconds(recipe: str, environment: dict[str, str]) -> dict[str, Any]:
    """Start-up to the first batch, and the whole ``capsrobust train RECIPE --epochs 1`` process, on mnist-5k.

    Both in new processes with ``environment`` (its PYTHONPATH picks the code), in the default precision; the
    start-up is the median of three launches, the whole process one run (its epoch dominates, and repeats little).
    """
    with tempfile.TemporaryDirectory() as folder:
        arguments = ["train", recipe, "--epochs", "1", "--no-progress", "--device", "cpu"]
        startups = []
        for attempt in range(3):
            launched = time.time()
            done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, repr(launched), *arguments, "--out",
                                   f"{folder}/probe-{attempt}"], env=environment, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("STARTUP ")]
            if not lines:
                raise RuntimeError(f"the start-up probe of {recipe} failed: {done.stderr.strip()[-500:]}")
            startups.append(float(lines[-1].split()[1]))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from capsrobust.cli import main; main()", *arguments, "--out",
                        f"{folder}/run"], env=environment, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        precision = json.loads(Path(folder, "run", "run.json").read_text(encoding="utf-8")).get("precision", "")
    return {"startup_s": statistics.median(startups), "process_s": seconds, "process_precision": precision}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                        help="one or more of fp32, tf32, bf16 (default: all; the device's impossible ones skip)")
    parser.add_argument("--batch-sizes", "--batch-size", dest="batch_sizes", nargs="+", type=int, default=[100])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median counts)")
    parser.add_argument("--recipes", nargs="+", default=["capsnet-paper", "cnn-small", "cnn-recon"],
                        help=f"recipes to measure ({PLAIN!r}: the plain CapsNet alone); cnn-baseline takes minutes")
    parser.add_argument("--plain", action="store_true", help=f"also measure the plain CapsNet ({PLAIN_OF}'s shape)")
    parser.add_argument("--process", action="store_true",
                        help="also time `capsrobust train RECIPE --epochs 1` on mnist-5k: start-up and whole process")
    parser.add_argument("--baseline", metavar="REF",
                        help="compare with the code at git commit REF, interleaved (subprocesses; see above)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="side of the reference matmul; 0: none")
    parser.add_argument("--channels-last", action="store_true", help="convolutions in channels-last layout")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (warm-up compiles)")
    parser.add_argument("--json", type=Path, help="write the rows to this file: .csv as a table, else JSON")
    arguments = parser.parse_args(argv)
    if min(arguments.batch_sizes) < 1 or arguments.repeats < 1:
        parser.error("batch sizes and --repeats must be positive")
    return arguments


def run(arguments: argparse.Namespace) -> tuple[dict[str, Any], pd.DataFrame]:
    """The header (device, versions, command) and one row per (recipe or plain model, batch, precision)."""
    device = resolve_device(arguments.device)
    header = {
        "device": device_description(device), "torch": versions()["torch"], "command": command_line(),
        "load_average": os.getloadavg()[0], "repeats": arguments.repeats,
    }
    subjects = [(PLAIN_OF, True) if recipe == PLAIN else (recipe, False) for recipe in arguments.recipes]
    if arguments.plain and PLAIN not in arguments.recipes:
        subjects.append((PLAIN_OF, True))
    matmul_peaks: dict[Precision, float] = {}
    rows = [
        measure_row(recipe, plain, batch, precision, device, arguments, matmul_peaks)
        for recipe, plain in subjects
        for batch in arguments.batch_sizes
        for precision in arguments.precision
    ]
    if arguments.process:
        for recipe in {recipe for recipe, plain in subjects if not plain}:
            timing = process_seconds(recipe, dict(os.environ))
            for row in rows:
                if row["recipe"] == recipe and row["model"] == "capsrobust":
                    row.update(timing)
    return header, pd.DataFrame(rows).reindex(columns=COLUMNS)


def measure_in_subprocess(recipe: str, arguments: argparse.Namespace, code: str, python_path: str | None
                          ) -> list[dict[str, Any]]:
    """This script's rows for one recipe, measured by a fresh process on the package at ``python_path`` (None: the
    installed one), labelled ``code``."""
    environment = dict(os.environ)
    if python_path is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [python_path, environment.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder, "rows.json")
        command = [sys.executable, str(Path(__file__).resolve()), "--recipes", recipe, "--device", arguments.device,
                   "--precision", *arguments.precision, "--batch-sizes", *map(str, arguments.batch_sizes),
                   "--repeats", str(arguments.repeats), "--matmul-size", str(arguments.matmul_size), "--json", str(out)]
        command += ["--process"] if arguments.process and recipe != PLAIN else []
        command += ["--channels-last"] if arguments.channels_last else []
        command += ["--compile"] if arguments.compile else []
        subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL)
        rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    return [{**row, "code": code} for row in rows]


def compare_with_baseline(arguments: argparse.Namespace) -> tuple[dict[str, Any], pd.DataFrame]:
    """Rows of today's code and of ``arguments.baseline``'s, interleaved recipe by recipe (see the docstring)."""
    repository = Path(__file__).resolve().parents[1]
    found = subprocess.run(["git", "-C", str(repository), "rev-parse", "--short", "--verify",
                            f"{arguments.baseline}^{{commit}}"], capture_output=True, text=True)
    if found.returncode != 0:
        raise SystemExit(f"error: --baseline {arguments.baseline!r} is not a commit of {repository}; give a hash, "
                         f"tag or branch (git log --oneline)")
    reference = found.stdout.strip()
    current = subprocess.run(["git", "-C", str(repository), "describe", "--always", "--dirty"],
                             check=True, capture_output=True, text=True).stdout.strip()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder, "baseline")
        subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach", str(worktree), reference],
                       check=True, capture_output=True)
        try:
            for index, recipe in enumerate(arguments.recipes):
                sides = [(current, None), (reference, str(worktree))]
                for code, path in sides if index % 2 == 0 else sides[::-1]:
                    rows += measure_in_subprocess(recipe, arguments, code, path)
            if arguments.plain:
                rows += measure_in_subprocess(PLAIN, arguments, "reference", None)
        finally:
            subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force", str(worktree)],
                           check=False, capture_output=True)
    header = {
        "device": device_description(resolve_device(arguments.device)), "torch": versions()["torch"],
        "command": command_line(), "load_average": os.getloadavg()[0], "repeats": arguments.repeats,
        "current": current, "baseline": reference,
    }
    return header, pd.DataFrame(rows).reindex(columns=COLUMNS)


def before_after(rows: pd.DataFrame, before: str, after: str) -> str:
    """The Markdown before/after table: per recipe and precision, each speed then, now, and now ÷ then."""
    metrics = [("train_img_s", "train img/s"), ("forward_img_s", "forward img/s"),
               ("pgd_image_steps_s", "PGD image-steps/s")]
    lines = ["| recipe | precision | " + " | ".join(f"{name} {before} → {after}" for _, name in metrics)
             + f" | start-up s {before} → {after} | train --epochs 1 s {before} → {after} |",
             "|---|---|" + "---|" * (len(metrics) + 2)]
    ok = rows[rows["status"] == "ok"]
    plain = ok[ok["model"] == "plain"].set_index("precision")
    for (recipe, precision), group in ok[ok["model"] == "capsrobust"].groupby(["recipe", "precision"], sort=False):
        then, now = group[group["code"] == before], group[group["code"] == after]
        if then.empty or now.empty:
            continue
        then, now = then.iloc[0], now.iloc[0]
        cells = [f"{then[key]:,.0f} → {now[key]:,.0f} (×{now[key] / then[key]:.2f})" for key, _ in metrics]
        for key in ("startup_s", "process_s"):
            known = not (pd.isna(then[key]) or pd.isna(now[key]))
            cells.append(f"{then[key]:.1f} → {now[key]:.1f} (×{then[key] / now[key]:.2f}; "
                         f"{then['process_precision']} → {now['process_precision']})" if known and key == "process_s"
                         else f"{then[key]:.2f} → {now[key]:.2f}" if known else "")
        lines.append(f"| {recipe} | {precision} | " + " | ".join(cells) + " |")
        if recipe == PLAIN_OF and precision in plain.index:
            reference = plain.loc[precision]
            lines.append(f"| plain CapsNet (reference) | {precision} | {reference['train_img_s']:,.0f}; "
                         f"{recipe} now ×{now['train_img_s'] / reference['train_img_s']:.2f} | "
                         f"{reference['forward_img_s']:,.0f} | {reference['pgd_image_steps_s']:,.0f} | | |")
    return "\n".join(lines)


def write_rows(path: Path, header: dict[str, Any], rows: pd.DataFrame) -> None:
    """CSV for spreadsheets (device and torch are columns), JSON with the header for reports; NaN as empty/null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        rows.to_csv(path, index=False)
        return
    records = [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in rows.to_dict("records")
    ]
    path.write_text(json.dumps({"header": header, "rows": records}, indent=2) + "\n", encoding="utf-8")


def markdown(rows: pd.DataFrame) -> str:
    """The rows as a Markdown table of the numbers people compare."""
    shown = [
        ("recipe", "{}"), ("model", "{}"), ("batch", "{}"), ("precision", "{}"), ("forward_img_s", "{:,.0f}"),
        ("train_img_s", "{:,.0f}"), ("pgd_image_steps_s", "{:,.0f}"), ("peak_memory_mib", "{:,.0f}"),
        ("train_tflop_s", "{:.2f}"), ("train_fraction_of_matmul", "{:.0%}"),
    ]
    shown = [*([("code", "{}")] if rows["code"].notna().any() else []), *shown,
             *([("warmup_s", "{:.1f}")] if rows["compiled"].fillna(False).astype(bool).any() else []),
             *([("startup_s", "{:.2f}"), ("process_s", "{:.1f}"), ("process_precision", "{}")]
               if rows["startup_s"].notna().any() else [])]
    lines = ["| " + " | ".join(name for name, _ in shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for _, row in rows.iterrows():
        if row["status"] != "ok":
            cells = [str(row[name]) for name, _ in shown[:4]] + [f"skipped: {row['reason']}"]  # a short row
            lines.append("| " + " | ".join(cells) + " |" + " |" * (len(shown) - 5))
            continue
        cells = [
            "" if pd.isna(row[name]) else form.format(row[name])
            for name, form in shown
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    header, rows = compare_with_baseline(arguments) if arguments.baseline else run(arguments)
    print(f"device: {header['device']}; torch {header['torch']}; load average {header['load_average']:.2f}"
          f" (want < 0.5); median of {arguments.repeats}")
    print(markdown(rows))
    if arguments.baseline:
        print()
        print(before_after(rows, header["baseline"], header["current"]))
    if arguments.json:
        write_rows(arguments.json, header, rows)
        print(f"rows in {arguments.json}")


if __name__ == "__main__":
    main()
