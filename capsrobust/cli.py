"""The ``capsrobust`` command: argument handling and printing over the Python API, nothing more."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from capsrobust.errors import CapsRobustError, DataError, RunError

if TYPE_CHECKING:  # torch and the data loaders are imported by the commands that need them, not by --help
    import torch

    from capsrobust.data.base import Dataset
    from capsrobust.models.checkpoints import LoadedCheckpoint

DATA_HELP = ("data set: mnist-5k (embedded default); mnist, fashion-mnist, svhn or cifar10 (official files in "
             "--data-dir, fetched only with --download); npz:PATH (Keras-style x_train, y_train, x_test, y_test); "
             "folder:DIR (one sub-folder of images per class); see docs/data.md")


MAX_SEED = 2**63 - 1


class OneLineError(click.ClickException):
    """A bad value caught while click parses arguments, shown as one line (click's own errors add usage lines)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file, err=True)  # as the library's errors are shown


class SeedType(click.ParamType):
    """A seed as people type one: ASCII digits only, 0 to 2^63 - 1.

    click's ``int`` takes whatever Python's ``int`` does, Arabic-Indic digits included, and a seed too large for
    torch would then fail deep inside a run with a traceback.
    """

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED:
            return value
        text = str(value).strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEED:
            name = param.opts[0] if param is not None and param.opts else "seed"
            raise OneLineError(f"{name}: {value!r} is not a seed; use a plain integer from 0 to {MAX_SEED}")
        return int(text)


SEED = SeedType()


class LibraryChoice(click.Choice):
    """One of the values the library defines at ``where`` ("module:NAME", an ``Enum`` or a tuple of strings).

    The CLI never keeps its own copy of a choice list; the module is imported only when click needs the list
    (parsing that option, or help), so ``capsrobust --help`` does not import torch.
    """

    def __init__(self, where: str) -> None:  # not click.Choice.__init__, which would read the list now
        self.where = where
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        import importlib

        module, name = self.where.split(":")
        found = getattr(importlib.import_module(module), name)
        return tuple(str(member.value) for member in found) if isinstance(found, type) else tuple(found)


PRECISIONS = LibraryChoice("capsrobust.precision:Precision")
SPLITS = LibraryChoice("capsrobust.data:SPLITS")


class Terminated(KeyboardInterrupt):
    """SIGTERM, how nohup'd jobs and schedulers are stopped, raised where Ctrl-C would be: the same clean stop."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _os_error_text(error: OSError) -> str:
    """One line for an I/O failure: what, where, and what to do (writes are atomic, so nothing was half-written)."""
    where = f" {error.filename}" if error.filename else ""
    reason = error.strerror or str(error)
    return (f"cannot read or write{where}: {reason}; choose another --out (or free disk space) and run the command "
            f"again (earlier results are intact)")


class CapsRobustGroup(click.Group):
    """Turns the library's own errors into one line on stderr and exit code 2, Ctrl-C into exit code 130 and SIGTERM
    into 143, after the same clean stop (finished epochs and cells kept, ``--resume`` continues)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:  # an unknown option or command before the command's name
            raise _one_line_usage(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a command's own arguments: a bad choice, a missing option...
            raise _one_line_usage(error) from None
        except CapsRobustError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except OSError as error:  # an output folder that cannot be written, a full disk, a symlink loop...
            click.echo(f"error: {_os_error_text(error)}", err=True)
            sys.exit(2)
        except Terminated:
            click.echo("terminated (SIGTERM); finished work is kept, --resume continues", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _one_line_usage(error: click.UsageError) -> click.ClickException:
    """click's usage error (three lines: usage, hint, error) as one line that says where the options are listed.

    ``NoArgsIsHelpError`` (a bare ``capsrobust``) stays as click shows it: the help text.
    """
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        return error
    path = error.ctx.command_path if error.ctx is not None else "capsrobust"
    return OneLineError(f"{error.format_message()} (see `{path} --help`)")


def folder_safe(name: str) -> str:
    """A data set's name as part of a default folder name: ``npz:mine`` → ``npz-mine`` (no colon on Windows)."""
    return name.replace(":", "-").replace("/", "-")


def data_options(function: Any) -> Any:
    function = click.option("--download", is_flag=True,
                            help="fetch a named data set (mnist, fashion-mnist, svhn, cifar10) into --data-dir"
                            )(function)
    function = click.option("--data-dir", type=click.Path(file_okay=False),
                            help="folder with a named data set's files (docs/data.md)")(function)
    return click.option("--data", "data_name", default="mnist-5k", show_default=True, help=DATA_HELP)(function)


def load_model_for_data(
    checkpoint: str, data_name: str, data_dir: str | None, download: bool, device: str
) -> tuple[LoadedCheckpoint, Dataset, torch.device]:
    """The checkpoint, the data and the device of a command that runs a model on data; a model built for other
    images or classes is refused in one line."""
    from capsrobust.data import load_dataset
    from capsrobust.models.base import refuse_other_data
    from capsrobust.models.checkpoints import load_checkpoint
    from capsrobust.runtime import resolve_device

    torch_device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, torch_device)
    dataset = load_dataset(data_name, data_dir, download)
    refuse_other_data(loaded.model, dataset.input_shape, dataset.num_classes, str(loaded.path))
    return loaded, dataset, torch_device


def executor_options(function: Any) -> Any:
    """--executor and the Ray settings, shared by sweep, train and benchmark (docs/ray.md)."""
    function = click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
                            help="tries after the first for a job (cell, training run) that fails")(function)
    function = click.option("--task-gpus", type=click.FloatRange(min=0),
                            help="GPUs per Ray task, e.g. 0.25 shares a GPU four ways [0.25 on CUDA, else 0]"
                            )(function)
    function = click.option("--task-cpus", type=click.FloatRange(min=0), default=1.0, show_default=True,
                            help="CPUs per Ray task")(function)
    function = click.option("--ray-address", metavar="HOST:PORT",
                            help="Ray cluster to join (or auto) [default: start a Ray instance here]")(function)
    return click.option("--executor", "executor_name", default="local", show_default=True,
                        type=LibraryChoice("capsrobust.execution.choose:EXECUTOR_CHOICES"),
                        help="where jobs run: here one after another, or as Ray tasks (pip install "
                             "'capsrobust[ray]')")(function)


def make_cli_executor(name: str, address: str | None, task_cpus: float, task_gpus: float | None, retries: int) -> Any:
    from capsrobust.execution import make_executor

    return make_executor(name, address=address, retries=retries, task_cpus=task_cpus, task_gpus=task_gpus)


@click.group(cls=CapsRobustGroup)
@click.option("-v", "--verbose", is_flag=True, help="log debug messages")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="a Python file registering your own architectures (or attacks); repeat for several")
@click.version_option(package_name="capsrobust")
def main(verbose: bool, plugins: tuple[str, ...]) -> None:
    """Are capsule networks more robust than CNNs? Train, evaluate and attack them."""
    from capsrobust.plugins import load_entry_points, load_plugins

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    load_entry_points()
    load_plugins(plugins)


@main.command()
@click.argument("recipe")
@data_options
@click.option("--epochs", type=click.IntRange(min=1), help="default: the recipe's")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="run directory [runs/RECIPE-DATA]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--seeds", "seeds_text", metavar="LIST",
              help="one run per seed, comma-separated (e.g. 0,1,2), into OUT-sK; side by side with --executor ray")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--batch-size", type=click.IntRange(min=1), help="default: the recipe's (100)")
@click.option("--resume", is_flag=True, help="continue the run in --out after its last finished epoch")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@click.option("--precision", default="auto", show_default=True, type=PRECISIONS,
              help="auto: tf32 on a GPU, bf16 on a CPU with bf16 hardware (AVX-512 BF16, AMX), else fp32; a "
                   "resumed run keeps its own (see docs/precision.md)")
@executor_options
@click.option("--adversarial", "train_attack", metavar="ATTACK",
              help="adversarial training: pgd-linf, pgd-l2 (Madry), trades-linf, trades-l2 [default: the recipe's]")
@click.option("--train-eps", type=float, help="the training attack's budget [default: the recipe's, else 0.3]")
@click.option("--train-steps", type=int, help="PGD steps of the training attack [default: the recipe's, else 40]")
@click.option("--train-step-size", type=float, help="PGD step at the full eps [default: the recipe's, else 0.01]")
@click.option("--warmup-epochs", type=int, help="epochs over which eps ramps up from 0 [default: the recipe's]")
@click.option("--trades-beta", type=float, help="TRADES' weight of the KL term [default: the recipe's, else 6]")
@click.option("--train-objective", help="what the Madry attack maximises: auto, margin, ce-log-lengths, vote-margin…")
@click.option("--val-steps", type=int, help="PGD steps of the per-epoch robust validation [default: 10]")
def train(
    recipe: str,
    data_name: str,
    data_dir: str | None,
    download: bool,
    epochs: int | None,
    out_dir: str | None,
    seed: int,
    seeds_text: str | None,
    device: str,
    batch_size: int | None,
    resume: bool,
    no_progress: bool,
    precision: str,
    executor_name: str,
    ray_address: str | None,
    task_cpus: float,
    task_gpus: float | None,
    retries: int,
    train_attack: str | None,
    train_eps: float | None,
    train_steps: int | None,
    train_step_size: float | None,
    warmup_epochs: int | None,
    trades_beta: float | None,
    train_objective: str | None,
    val_steps: int | None,
) -> None:
    """Train RECIPE (a models/*.toml file or its name) and save checkpoints and metrics.

    With --adversarial (or a recipe with an [adversarial] table) every batch is attacked first: Madry's PGD or
    TRADES, see docs/adversarial-training.md.
    """
    from capsrobust.data import load_dataset
    from capsrobust.models.recipes import load_recipe, with_adversarial
    from capsrobust.runtime import check_folder_can_be_made
    from capsrobust.training import TrainSettings, summarise_run, train_recipe
    from capsrobust.training.runs import parse_seeds  # not capsrobust.benchmark: it loads figures and detection

    loaded = with_adversarial(
        load_recipe(recipe), attack=train_attack, eps=train_eps, steps=train_steps, step_size=train_step_size,
        warmup_epochs=warmup_epochs, trades_beta=trades_beta, objective=train_objective, val_steps=val_steps,
    )
    if out_dir:
        check_folder_can_be_made(Path(out_dir))
    dataset = load_dataset(data_name, data_dir, download)
    out = Path(out_dir) if out_dir else Path("runs") / f"{loaded.name}-{folder_safe(dataset.name)}"
    settings = TrainSettings(epochs, batch_size, seed, device, resume, progress=not no_progress, precision=precision)
    seeds = parse_seeds(seeds_text) if seeds_text is not None else None
    with make_cli_executor(executor_name, ray_address, task_cpus, task_gpus, retries) as executor:
        trained = train_recipe(loaded, dataset, out, settings, seeds=seeds, executor=executor)
    for failure in trained.failures:
        click.echo(f"{failure.job.key}: failed {failure.attempts} time(s), last with {failure.error}", err=True)
    for run_dir, metrics in trained.finished.items():
        summary = summarise_run(loaded, dataset, run_dir, metrics)
        click.echo(summary.line)
        if summary.warning:
            click.echo(f"warning: {summary.warning}", err=True)
    if trained.failures:
        raise RunError(f"{len(trained.failures)} of {len(trained.failures) + len(trained.finished)} runs failed on "
                       f"every try; run again with --resume to retry them")


@main.command()
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option("--split", default="test", show_default=True, type=SPLITS)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of tables")
@click.option("--precision", default="fp32", show_default=True, type=PRECISIONS,
              help="auto means fp32 here; bf16 is faster but not what attacks use (see docs/precision.md)")
def evaluate(
    checkpoint: str,
    data_name: str,
    data_dir: str | None,
    download: bool,
    split: str,
    device: str,
    as_json: bool,
    precision: str,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of CHECKPOINT (a run directory or checkpoint file)."""
    from capsrobust.evaluation.accuracy import evaluate as run_evaluation
    from capsrobust.precision import resolve_precision
    from capsrobust.runtime import resolve_device

    resolved = resolve_precision(precision, resolve_device(device), training=False)  # before the data is read
    loaded, dataset, torch_device = load_model_for_data(checkpoint, data_name, data_dir, download, device)
    result = run_evaluation(loaded.model, dataset.split(split), dataset.classes, torch_device, precision=resolved)
    trained_on = str(loaded.metadata.get("dataset", "unknown data"))
    if as_json:
        record = {
            "checkpoint": str(loaded.path),
            "model": loaded.recipe.name,
            "data": dataset.name,
            "trained_on": trained_on,
            "split": split,
            **result.to_dict(),
        }
        click.echo(json.dumps(record, indent=2))
        return
    click.echo(
        f"{loaded.recipe.name} ({loaded.path}), trained on {trained_on}, evaluated on {dataset.name}/{split}: "
        f"accuracy {result.accuracy:.4f} over {result.n} images ({result.precision})"
    )
    if trained_on != dataset.name:
        click.echo(f"note: this model was trained on {trained_on}, not on {dataset.name}")
    click.echo("\nper-class accuracy:")
    click.echo(result.per_class.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo("\nconfusion matrix (rows: true class, columns: predicted):")
    click.echo(result.confusion_frame().to_string())


@main.command()
@click.argument("names", nargs=-1)
def attacks(names: tuple[str, ...]) -> None:
    """Every attack (or NAMES): threat model, backends, role, what a model needs, parameters with defaults."""
    from capsrobust.attacks import attack_names, get_attack

    for name in names or attack_names():
        spec = get_attack(name)
        needs = ", ".join(sorted(capability.value for capability in spec.requires)) or "logits"
        click.echo(f"{spec.name}: {spec.description}")
        click.echo(f"  {spec.norm.value}, {spec.kind.value}, {spec.role.value}; backends "
                   f"{', '.join(backend.value for backend in spec.backends)}; model needs {needs}")
        for item in spec.schema:
            bound = f", ≥ {item.minimum:g}" if item.minimum is not None else ""
            click.echo(f"  {item.name} = {str(item.default).lower() if item.type is bool else item.default} "
                       f"({item.type.__name__}{bound}): {item.help}")


@main.command()
@click.argument("recipe")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
def describe(recipe: str, as_json: bool) -> None:
    """Layers, parameter counts and FLOPs of RECIPE (built, not trained)."""
    from capsrobust.models.describe import describe_model
    from capsrobust.models.recipes import load_recipe

    description = describe_model(load_recipe(recipe))
    if as_json:
        click.echo(json.dumps(description, indent=2))
        return
    click.echo(f"{description['name']} ({description['architecture']}): {description['description']}")
    for layer in description["layers"]:
        click.echo(f"  {layer['name']:<12} {layer['type']:<32} {layer['parameters']:>12,}")
    click.echo(f"  {'total':<12} {'':<32} {description['parameters']:>12,}")
    if "parameters_without_decoder" in description:
        click.echo(f"  {'w/o decoder':<12} {'':<32} {description['parameters_without_decoder']:>12,}")
    click.echo(f"  forward cost: {description['forward_flops_per_image'] / 1e9:.3f} GFLOP per image")


@main.command()
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option("--n", "count", type=click.IntRange(1, 50), default=10, show_default=True, help="images to show")
@click.option("--split", default="test", show_default=True, type=SPLITS)
@click.option("--seed", type=SEED, default=0, show_default=True, help="chooses which images")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, help="PNG file to write")
@click.option("--device", default="auto", show_default=True)
def reconstruct(
    checkpoint: str,
    data_name: str,
    data_dir: str | None,
    download: bool,
    count: int,
    split: str,
    seed: int,
    out_file: str,
    device: str,
) -> None:
    """Inputs over their reconstructions from the winning capsule, with the 10 capsule lengths."""
    from capsrobust.figures.capsules import choose_examples, reconstruction_figure, save_figure

    loaded, dataset, torch_device = load_model_for_data(checkpoint, data_name, data_dir, download, device)
    chosen = dataset.split(split)
    indices = choose_examples(len(chosen), count, seed)
    figure = reconstruction_figure(loaded.model, chosen, indices, dataset.classes, str(torch_device))
    click.echo(f"wrote {save_figure(figure, out_file)}: {split} images {', '.join(map(str, indices))}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="test image to tweak")
@click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True)
@click.option("--step", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, help="PNG file to write")
@click.option("--device", default="auto", show_default=True)
def tweak(
    checkpoint: str,
    data_name: str,
    data_dir: str | None,
    download: bool,
    index: int,
    radius: float,
    step: float,
    out_file: str,
    device: str,
) -> None:
    """Move each dimension of the winning capsule over [-radius, radius] and decode: one grid row per dimension."""
    from capsrobust.figures.capsules import capsule_tweaks, save_figure, tweak_deltas, tweak_figure

    loaded, test, torch_device = load_model_for_data(checkpoint, data_name, data_dir, download, device)
    if index >= len(test.test):
        raise DataError(f"--index {index} is past the {len(test.test)} test images of {test.name}")
    deltas = tweak_deltas(radius, step)
    predicted, _, images = capsule_tweaks(loaded.model, test.test.images[index], deltas, str(torch_device))
    path = save_figure(tweak_figure(predicted, images, deltas, test.classes), out_file)
    click.echo(
        f"wrote {path}: test image {index} (label {test.classes[int(test.test.labels[index])]}, "
        f"predicted {test.classes[predicted]}), {images.shape[0]} dimensions × {len(deltas)} offsets"
    )


OBJECTIVE_HELP = (
    "what gradient attacks differentiate: ce-lengths, ce-log-lengths, margin, margin-log-lengths "
    "[default: each model's own, see docs/attack-objectives.md]"
)
RESULT_SUMMARY = [
    "model", "label", "backend", "eps", "objective_used", "clean_accuracy", "robust_accuracy",
    "attack_success_rate", "l2_median", "linf_median", "steps_or_queries", "n_attacked", "seconds",
]


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--suite", "suite_name", required=True, help="attack suite: a TOML file or a name from attacks/")
@data_options
@click.option("--n", type=click.IntRange(min=1), help="first N test images [default: the suite's n]")
@click.option("--backend", default="art", show_default=True,
              type=LibraryChoice("capsrobust.evaluation.plan:BACKEND_CHOICES"))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="output directory [sweeps/SUITE-DATA]")
@click.option("--resume", is_flag=True,
              help="continue the sweep in --out, skipping its finished cells; models, attacks or budgets "
                   "added since grow it")
@click.option("--save-adversarials", is_flag=True, help="store every cell's adversarials as .npz")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--objective", help=OBJECTIVE_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), help="images per attack batch [1,000 on a GPU, 100 on a CPU]")
@click.option("--precision", default="fp32", show_default=True, type=PRECISIONS,
              help="what attacks compute gradients in (robustness is always judged in fp32; docs/precision.md)")
@click.option("--cascade/--no-cascade", default=None,
              help="attack only what earlier attacks left robust: exact best-attack numbers, cumulative per-attack "
                   "ones [default: the suite's cascade]")
@click.option("--max-cells", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="refuse a suite that expands to more cells (a typo in an eps list, usually)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@executor_options
def sweep(
    runs: tuple[str, ...], suite_name: str, data_name: str, data_dir: str | None, download: bool, n: int | None,
    backend: str, out_dir: str | None, resume: bool, save_adversarials: bool, device: str, seed: int,
    objective: str | None, batch_size: int | None, precision: str, cascade: bool | None, max_cells: int,
    no_progress: bool,
    executor_name: str,
    ray_address: str | None, task_cpus: float, task_gpus: float | None, retries: int,
) -> None:
    """Attack RUNS (run directories or checkpoints) with every attack of --suite; print results and checks."""
    from capsrobust.attacks.objectives import AttackObjective
    from capsrobust.attacks.suites import load_suite
    from capsrobust.data import load_dataset
    from capsrobust.evaluation.plan import SweepError
    from capsrobust.evaluation.store import load_sweep
    from capsrobust.evaluation.sweep import run_sweep

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's success rate at INFO
    suite = load_suite(suite_name)
    chosen_objective = AttackObjective.parse(objective) if objective is not None else None
    dataset = load_dataset(data_name, data_dir, download)
    out = Path(out_dir) if out_dir else Path("sweeps") / f"{suite.name}-{folder_safe(dataset.name)}"
    with make_cli_executor(executor_name, ray_address, task_cpus, task_gpus, retries) as executor:
        run_sweep(
            list(runs), suite, dataset, out_dir=out, n=n, backend=backend, resume=resume,
            save_adversarials=save_adversarials, device=device, seed=seed, objective=chosen_objective,
            batch_size=batch_size, data_dir=data_dir, precision=precision, progress=not no_progress,
            executor=executor, cascade=cascade, max_cells=max_cells,
        )
    tables = load_sweep(out)
    cascaded = (tables.results["mode"] == "cascade").any()
    click.echo(f"results ({len(tables.results)} cells, {suite.name} suite, {dataset.name}"
               f"{', cascade: robust accuracy is cumulative along each chain' if cascaded else ''}):")
    click.echo(tables.results[RESULT_SUMMARY].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    flags = int((tables.checks["status"] == "flag").sum())
    click.echo(f"\nchecks ({flags} flagged):")
    with pd_display_width():
        click.echo(tables.checks.to_string(index=False))
    click.echo(f"\ntables in {out}: results.csv, examples.csv, checks.csv")
    failed = int((tables.checks["status"] == "failed").sum())
    if failed:
        raise SweepError(f"{failed} job(s) failed on every try (the failed checks above); rerun with --resume to "
                         f"retry them")


def pd_display_width() -> Any:
    """Let pandas print long check details on one line."""
    import pandas as pd

    return pd.option_context("display.max_colwidth", None, "display.width", None)


@main.command()
@click.argument("result_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="report directory, e.g. reports/NAME (replaced atomically)")
@click.option("--format", "formats", default="md,html", show_default=True, help="comma-separated: md, html")
@click.option("--title", help="report title [default: from the suites and data sets]")
@click.option("--n-resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="bootstrap resamples for the paired comparison")
@click.option("--seed", type=SEED, default=0, show_default=True, help="seed of the bootstrap")
def report(
    result_dirs: tuple[str, ...], out_dir: str, formats: str, title: str | None, n_resamples: int, seed: int
) -> None:
    """Markdown and self-contained HTML report of RESULT_DIRS (sweep directories), from their tables on disk."""
    from capsrobust.reporting.report import build_report, parse_formats

    chosen = parse_formats(formats)
    path = build_report(list(result_dirs), out_dir, formats=chosen, title=title, n_resamples=n_resamples, seed=seed)
    files = ", ".join(f"report.{name}" for name in chosen)
    click.echo(f"report in {path}: {files}, tables/*.csv, figures/*.png")


@main.command()
@click.argument("result_dir", type=click.Path())
@click.option("--baseline", required=True, help="model name as in the sweep (its run directory's name), or a recipe "
              "trained with several seeds (capsnet-paper for capsnet-paper-s0, -s1, ...)")
@click.option("--candidate", required=True, help="model name or multi-seed recipe, as --baseline")
@click.option("--n-resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="bootstrap resamples")
@click.option("--seed", type=SEED, default=0, show_default=True, help="seed of the bootstrap")
@click.option("--paired-seeds", is_flag=True, help="resample seed k of both recipes together: for twins one "
              "training seed starts alike (a routing variant and its no-routing twin: the same initial weights "
              "and batches), as the report's routing section does")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="also write the table as CSV")
def compare(
    result_dir: str, baseline: str, candidate: str, n_resamples: int, seed: int, paired_seeds: bool,
    out_file: str | None,
) -> None:
    """Candidate minus baseline robust accuracy per cell of a sweep, with bootstrap 95% CI and McNemar's p.

    Given two recipes trained with several seeds, the best-attack difference averaged over seeds, with an interval
    over seeds and images, and seed-by-seed differences.
    """
    from capsrobust.evaluation.comparison import compare as run_comparison
    from capsrobust.evaluation.store import load_sweep
    from capsrobust.reporting.report import resolve_result_dir
    from capsrobust.runtime import atomic_write

    tables = load_sweep(resolve_result_dir(result_dir))
    comparison = run_comparison(tables, baseline, candidate, n_resamples=n_resamples, seed=seed,
                                paired_seeds=paired_seeds)
    if out_file:
        atomic_write(Path(out_file), lambda path: comparison.table.to_csv(path, index=False))
    click.echo(comparison.heading)
    with pd_display_width():
        click.echo(comparison.display().to_string(index=False))
    click.echo(comparison.footnote)
    if out_file:
        click.echo(f"table in {out_file}")


@main.command()
@click.option("--profile", "profile_name", default="quick", show_default=True,
              help="tiny (tests), quick (make demo, ~15 min on 2 CPU cores), standard (CPU reference "
                   "report reports/mnist-5k, ~1 h with --reuse), mnist (the full-MNIST verdict, reports/mnist; "
                   "needs --data-dir), mnist-robust (cnn-small-at on full MNIST against the leaderboard), gpu and "
                   "gpu-mnist (one GPU, 3 seeds), full (one GPU, the full suite), robust, routing (issue 20) and "
                   "gpu-routing (the same on full MNIST, one GPU); estimates in capsrobust/profiles.py and the README")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="benchmark directory for runs and sweep [runs/benchmark/PROFILE-DATA]")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="report directory [reports/benchmark-PROFILE; standard: reports/mnist-5k]")
@click.option("--data", "data_name", help=f"{DATA_HELP} [default: the profile's]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="folder with a named data set's files")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--reuse", is_flag=True, help="use finished runs in --reuse-dir/RECIPE as they are instead of training")
@click.option("--reuse-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", type=SEED, default=0, show_default=True, help="seeds the attacks and figures (and the training "
              "of a one-seed profile)")
@click.option("--seeds", "seeds_text", metavar="LIST",
              help="training seeds, comma-separated, e.g. 0,1,2 [default: the profile's, else --seed]")
@click.option("--n", type=click.IntRange(min=1), help="test images to attack [default: the profile's]")
@click.option("--stop-after", type=LibraryChoice("capsrobust.benchmark:Stage"),
              help="end after this stage; run again without it to continue")
@click.option("--precision", type=PRECISIONS,
              help="what attacks compute gradients in [default: the profile's; a GPU profile's tf32 needs CUDA]")
@click.option("--no-progress", is_flag=True, help="no progress bars")
@executor_options
def benchmark(
    profile_name: str, out_dir: str | None, report_dir: str | None, data_name: str | None, data_dir: str | None,
    device: str, reuse: bool, reuse_dir: str, seed: int, seeds_text: str | None, n: int | None,
    stop_after: str | None, precision: str | None, no_progress: bool, executor_name: str, ray_address: str | None,
    task_cpus: float, task_gpus: float | None, retries: int,
) -> None:
    """Train, attack, detect, draw and report in one command; run it again to resume where it stopped."""
    from capsrobust.benchmark import parse_seeds, run_benchmark
    from capsrobust.profiles import get_profile

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's success rate at INFO
    profile = get_profile(profile_name)
    click.echo(f"benchmark {profile.name}: {profile.description} (expect {profile.estimate})")
    with make_cli_executor(executor_name, ray_address, task_cpus, task_gpus, retries) as executor:
        result = run_benchmark(profile, out_dir=out_dir, report_dir=report_dir, data=data_name, data_dir=data_dir,
                               device=device, reuse=reuse, reuse_dir=reuse_dir, seed=seed,
                               seeds=parse_seeds(seeds_text) if seeds_text is not None else None, n=n,
                               stop_after=stop_after, progress=not no_progress, executor=executor,
                               precision=precision)
    for stage, status in result.stages.items():
        click.echo(f"  {stage:<8} {status:<34} {result.seconds[stage]:>8.1f} s")
    if result.finished:
        click.echo(f"report: {result.report_dir / 'report.html'} (also report.md, tables/, figures/)")
    else:
        click.echo(f"stopped after {stop_after}; run the same command without --stop-after to continue")


DETECTION_SUMMARY = [
    "model", "label", "backend", "eps", "n", "auc", "false_positive_rate", "true_positive_rate",
    "attack_success_rate", "undetected_success_rate",
]


@main.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--percentile", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=95.0,
              show_default=True, help="threshold: this percentile of the clean validation scores")
@click.option("--distance", default="l2", show_default=True,
              type=LibraryChoice("capsrobust.detection.detector:Distance"),
              help="distance between an input and its reconstruction")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="output directory [SWEEP_DIR/detection]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="folder with the data files the sweep used")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--force", is_flag=True, help="recompute even when the tables are up to date")
def detect(
    sweep_dir: str, percentile: float, distance: str, out_dir: str | None, data_dir: str | None, device: str,
    batch_size: int, force: bool,
) -> None:
    """Reconstruction-error detector on the saved adversarials of SWEEP_DIR: tables, score histograms, ROC curves."""
    from capsrobust.detection.pipeline import DETECTION_DIR, load_detection, run_detection
    from capsrobust.figures.detection import write_detection_figures

    out = Path(out_dir) if out_dir else Path(sweep_dir) / DETECTION_DIR
    run_detection(sweep_dir, out_dir=out, percentile=percentile, distance=distance, device=device,
                  data_dir=data_dir, batch_size=batch_size, force=force)
    tables = load_detection(out)
    click.echo(f"detection ({len(tables.detection)} cells; threshold: the {percentile:g}th percentile of the clean "
               f"validation {distance} distances; rates over the clean-correct attacked images):")
    click.echo(tables.detection[DETECTION_SUMMARY].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo("\nthresholds (clean_test_fpr: share of the sweep's clean test images flagged):")
    click.echo(tables.thresholds.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for _, skipped in tables.skipped.iterrows():
        click.echo(f"skipped {skipped['model']}: {skipped['reason']}")
    figures = write_detection_figures(out)
    shown = ", ".join(path.name for path in figures) or "none (no cell with eps > 0)"
    click.echo(f"\ntables in {out}: detection.csv, detection_examples.csv, thresholds.csv; figures: {shown}")


@main.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="PNG file to write")
@click.option("--n-per-row", type=click.IntRange(1, 10), default=3, show_default=True, help="examples per row")
@click.option("--seed", type=SEED, default=0, show_default=True, help="chooses which examples")
@click.option("--attack", "labels", multiple=True, help="attack label of the suite, repeatable [default: all]")
@click.option("--eps", type=float, help="budget of the cells shown [default: each attack's largest]")
@click.option("--backend", type=LibraryChoice("capsrobust.attacks.registry:Backend"),
              help="[default: each attack's first]")
@click.option("--data-dir", type=click.Path(file_okay=False), help="folder with the data files the sweep used")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
def gallery(
    sweep_dir: str, out_file: str, n_per_row: int, seed: int, labels: tuple[str, ...], eps: float | None,
    backend: str | None, data_dir: str | None, device: str,
) -> None:
    """Clean, adversarial, scaled perturbation and reconstruction side by side: one row per model and attack."""
    from capsrobust.figures.gallery import write_gallery

    path = write_gallery(sweep_dir, out_file, n_per_row=n_per_row, seed=seed, labels=list(labels) or None, eps=eps,
                         backend=backend, device=device, data_dir=data_dir)
    tables = Path(sweep_dir) / "detection" / "thresholds.csv"
    note = f"detector thresholds from {tables}" if tables.is_file() else (
        f"no detector thresholds yet: run `capsrobust detect {sweep_dir}` first to mark flagged examples")
    click.echo(f"wrote {path} ({note})")
