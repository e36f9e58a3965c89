"""The model an attack runs on must come out of it exactly as it went in.

An attack library that steps an optimiser on the wrong tensors, runs the model in training mode (moving BatchNorm's
running statistics) or leaves it there would make this cell, and every later one, measure another model than the
checkpoint the row names. Nothing in the row would show it, so the cell is refused instead: the weights and modes
are put back and ``ModelOutputError`` stops the sweep with one line, keeping the cells finished before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from capsrobust.errors import ModelOutputError


@contextmanager
def unchanged_model(model: nn.Module, what: str) -> Iterator[None]:
    """Run the body, then refuse (``ModelOutputError``) if it changed any weight or buffer of ``model``, or its mode.

    ``what`` names the body in the message ("pgd-linf at eps 0.1 on capsnet"). Costs one copy of the state (32 MB
    for capsnet-paper) and one comparison per call, negligible beside an attack.
    """
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    modes = [module.training for module in model.modules()]
    yield
    after = model.state_dict()
    changed = [name for name, tensor in before.items()
               if name not in after or not torch.equal(after[name].detach(), tensor)]
    changed += [name for name in after if name not in before]
    mode_changed = [module.training for module in model.modules()] != modes
    if not changed and not mode_changed:
        return
    model.load_state_dict(before, strict=False)
    for module, training in zip(model.modules(), modes, strict=True):
        module.training = training
    if changed:
        raise ModelOutputError(f"{what} changed {len(changed)} weight tensor(s) of the model (first: {changed[0]}); "
                               f"the cell is not counted: an attack must not train the model it attacks")
    raise ModelOutputError(f"{what} changed the training/eval mode of the model; the cell is not counted: an "
                           f"attack must leave the model's mode as it found it")
