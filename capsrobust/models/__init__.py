"""Models by architecture name. Importing this package registers every architecture."""

from capsrobust.models import capsnet, cnn, cnn_recon  # noqa: F401  (registration side effect)
from capsrobust.models.base import Capability, CapsRobustModel, LossTerms, ModelOutput
from capsrobust.models.registry import architecture_names, get_architecture

__all__ = ["Capability", "CapsRobustModel", "LossTerms", "ModelOutput", "architecture_names", "get_architecture"]
