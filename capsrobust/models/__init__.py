"""Models: the architectures, what each can do (capabilities), recipes that name one, and safe checkpoints.

Importing this package registers every built-in architecture; a user's own registers through
``register_architecture`` (see ``capsrobust.plugins``).
"""

from capsrobust.models import capsnet, cnn, cnn_recon, efficient_capsnet, em_capsnet  # noqa: F401  (registration side effect)
from capsrobust.models.base import (
    Capability,
    CapsRobustModel,
    LossTerms,
    ModelOutput,
    capabilities_of,
)
from capsrobust.models.checkpoints import LoadedCheckpoint, load_checkpoint, save_checkpoint
from capsrobust.models.describe import describe_model
from capsrobust.models.foreign import ForeignModel, ForeignModelError, wrap_module
from capsrobust.models.inference import predict
from capsrobust.models.recipes import Recipe, TrainConfig, build_model, load_recipe
from capsrobust.models.registry import architecture_names, get_architecture, register_architecture

__all__ = [
    "Capability", "CapsRobustModel", "ForeignModel", "ForeignModelError", "LoadedCheckpoint", "LossTerms",
    "ModelOutput", "Recipe", "TrainConfig", "architecture_names", "build_model", "capabilities_of", "describe_model",
    "get_architecture", "load_checkpoint", "load_recipe", "predict", "register_architecture", "save_checkpoint",
    "wrap_module",
]
