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
    """One real compile of one routing call (seconds with a warm cache, ~30 s cold, half of it inductor probing the
    CPU's vector instructions): every output and the gradient of every input as eager computes them. The model
    calls this very object (``test_compile_routing_is_off_unless_the_recipe_asks``), so one layer's shapes suffice.
    """
    generator = torch.Generator().manual_seed(1)
    votes = torch.randn(3, 18, 4, 16, generator=generator)  # (B, N_in, K, D)
    activations = torch.rand(3, 18, generator=generator)
    beta_u, beta_a = torch.randn(4, generator=generator), torch.randn(4, generator=generator)
    weights = [torch.randn(shape, generator=generator) for shape in ((3, 4, 16), (3, 4), (3, 18, 4), (3, 4))]

    def outputs_and_gradients(route):
        inputs = [tensor.clone().requires_grad_() for tensor in (votes, activations, beta_u, beta_a)]
        routed = route(*inputs, 3, 0.5)
        sum((output * weight).sum() for output, weight in zip(routed, weights, strict=True)).backward()
        return [output.detach() for output in routed], [tensor.grad for tensor in inputs]

    eager_outputs, eager_gradients = outputs_and_gradients(em_routing)
    compiled = CompiledOrEager(em_routing)
    compiled_outputs, compiled_gradients = outputs_and_gradients(compiled)
    assert compiled.compiled, compiled.failed  # it really ran compiled
    for compiled_output, eager_output in zip(compiled_outputs, eager_outputs, strict=True):
        torch.testing.assert_close(compiled_output, eager_output, rtol=1e-4, atol=1e-5)
    for compiled_gradient, gradient in zip(compiled_gradients, eager_gradients, strict=True):
        # float32 sums reassociated: ~1e-5 of each gradient's norm
        assert (compiled_gradient - gradient).norm() <= 1e-4 * gradient.norm()
