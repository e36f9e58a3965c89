"""Training: the one training loop every architecture shares, and adversarial training's inner maximisation.

``loop`` trains a recipe on a data set into a run directory (metrics, ``best`` and ``last`` checkpoints, exact
resume) and trains several runs through an executor; ``adversarial`` makes the batch a recipe's ``[adversarial]``
table asks for (Madry PGD or TRADES, in plain torch) and measures robust validation accuracy; ``runs`` trains one
recipe once or with several seeds, here or through an executor, and summarises each run.
"""

from capsrobust.training.adversarial import adversarial_examples, adversarial_loss, robust_accuracy
from capsrobust.training.loop import TrainJob, TrainSettings, selection_metric, train, train_runs
from capsrobust.training.runs import RunSummary, TrainedRuns, summarise_run, train_recipe

__all__ = [
    "RunSummary", "TrainJob", "TrainSettings", "TrainedRuns", "adversarial_examples", "adversarial_loss",
    "robust_accuracy", "selection_metric", "summarise_run", "train", "train_recipe", "train_runs",
]
