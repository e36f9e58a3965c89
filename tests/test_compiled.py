"""Compiled routing (``compile_routing``): the same mathematics as eager, a fallback that keeps results right where
torch.compile fails, and models that still pickle."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import shutil

import pytest
import torch

from capsrobust.models import compiled as compiled_module
from capsrobust.models.compiled import CompiledOrEager
from capsrobust.models.em_capsnet import em_routing
from capsrobust.models.recipes import build_model
from tests.conftest import recipe


def _em_tiny(compile_routing: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    chosen = recipe("em-capsnet-tiny")
    return build_model(dataclasses.replace(chosen, model=dataclasses.replace(chosen.model,
                                                                             compile_routing=compile_routing)))


def _logits_and_gradients(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    output = model(images)
    model.loss(output, images, labels).total.backward()
    return output.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_a_failing_compiler_falls_back_to_eager_once_and_for_all(monkeypatch, caplog):
    tries = []

    def broken_compile(function):
        def run(*args, **kwargs):
            tries.append(1)
            raise RuntimeError("no C++ compiler found\nmore detail")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    routing = CompiledOrEager(em_routing)
    votes, activations = torch.rand(2, 5, 3, 4), torch.rand(2, 5)
    beta = torch.zeros(3)
    with caplog.at_level(logging.WARNING, logger="capsrobust.models.compiled"):
        first = routing(votes, activations, beta, beta, 2, 0.5)
        second = routing(votes, activations, beta, beta, 2, 0.5)
    expected = em_routing(votes, activations, beta, beta, 2, 0.5)
    assert torch.equal(first.logits, expected.logits) and torch.equal(second.poses, expected.poses)
    assert len(tries) == 1 and not routing.compiled
    assert routing.failed == "RuntimeError: no C++ compiler found"
    assert sum("runs eagerly" in record.message for record in caplog.records) == 1


def test_errors_of_the_function_itself_still_reach_the_caller(monkeypatch):
    monkeypatch.setattr(compiled_module.torch, "compile", lambda function: function)
    routing = CompiledOrEager(em_routing)
    with pytest.raises(ValueError, match="at least one iteration"):
        routing(torch.rand(1, 2, 2, 1), torch.rand(1, 2), torch.zeros(2), torch.zeros(2), 0)


def test_a_model_with_compiled_routing_pickles_without_its_compiled_code():
    model = _em_tiny(compile_routing=True)
    model.route._compiled = lambda *args: None  # what a compiled model holds after its first call
    copy = pickle.loads(pickle.dumps(model))
    assert copy.route.function is em_routing and copy.route._compiled is None and copy.route.compiled
    assert copy.convcaps1.route is copy.route and copy.convcaps2.route is copy.route


def test_compile_routing_is_off_unless_the_recipe_asks():
    assert _em_tiny(compile_routing=False).route is em_routing
    assert isinstance(_em_tiny(compile_routing=True).route, CompiledOrEager)
    assert recipe("em-capsnet-small").model.compile_routing and not recipe("em-capsnet-tiny").model.compile_routing


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
def test_compiled_routing_computes_what_eager_routing_does():
    """One real compile (~10-20 s): logits and every parameter's gradient as eager computes them."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (6,), generator=generator)
    eager_logits, eager_gradients = _logits_and_gradients(_em_tiny(False), images, labels)
    compiled_model = _em_tiny(True)
    compiled_logits, compiled_gradients = _logits_and_gradients(compiled_model, images, labels)
    assert compiled_model.route.compiled, compiled_model.route.failed  # it really ran compiled
    torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-4, atol=1e-5)
    assert eager_gradients.keys() == compiled_gradients.keys()
    for name, gradient in eager_gradients.items():  # float32 sums reassociated: ~1e-5 of each gradient's norm
        assert (compiled_gradients[name] - gradient).norm() <= 1e-4 * gradient.norm(), name
