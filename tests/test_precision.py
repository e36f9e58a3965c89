"""Precision: resolution rules, one-line refusals, a scope that leaves no global state, bf16 that stays safe in
CapsNet, the hand-written routing backward, and the throughput benchmark's table."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from capsrobust import precision as precision_module
from capsrobust.data import Split
from capsrobust.evaluation.accuracy import evaluate, predict
from capsrobust.models.capsnet import route_by_agreement, squash
from capsrobust.models.recipes import build_model
from capsrobust.precision import (
    PRECISION_CHOICES,
    CudaFlags,
    Precision,
    PrecisionError,
    cpu_has_native_bf16,  # bound at import, before conftest makes ``auto`` fp32 for the session
    precision_scope,
    resolve_precision,
)
from tests.conftest import REPO, recipe

FAKE_CUDA = SimpleNamespace(type="cuda")
needs_cpu_bf16 = pytest.mark.skipif(
    not precision_module.cpu_supports_bf16(), reason="this CPU has no oneDNN bf16 kernels (needs AVX-512 or AMX)"
)


@pytest.fixture
def cuda_flags_restored():
    """Whatever a test does to the process-wide CUDA switches, the next test sees them as they were."""
    before = CudaFlags.read()
    yield before
    before.apply()


def test_auto_is_fp32_on_the_cpu_for_training_and_evaluation():
    assert resolve_precision("auto", "cpu", training=True) is Precision.FP32
    assert resolve_precision(Precision.AUTO, torch.device("cpu"), training=False) is Precision.FP32


def test_auto_trains_in_bf16_on_a_cpu_with_bf16_hardware_and_evaluates_in_fp32(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    assert resolve_precision("auto", "cpu", training=True) is Precision.BF16
    assert resolve_precision("auto", "cpu", training=False) is Precision.FP32  # attacks and evaluation stay fp32


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse avx2 avx512f avx512bw", False),  # AVX-512 without BF16: oneDNN widens to fp32, no faster
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # Zen 4, Cooper Lake
    ("fpu avx512f amx_bf16 amx_tile", True),  # Sapphire Rapids
])
def test_bf16_hardware_is_read_from_the_cpu_flags(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpuinfo) is expected
    assert cpu_has_native_bf16(tmp_path / "missing") is False  # no /proc: macOS, Windows


def test_auto_trains_in_tf32_on_an_ampere_gpu_and_evaluates_in_fp32(monkeypatch):
    monkeypatch.setattr(precision_module, "cuda_supports_tf32", lambda: True)
    assert resolve_precision("auto", FAKE_CUDA, training=True) is Precision.TF32
    assert resolve_precision("auto", FAKE_CUDA, training=False) is Precision.FP32
    assert resolve_precision("tf32", FAKE_CUDA, training=False) is Precision.TF32  # asked for by name
    monkeypatch.setattr(precision_module, "cuda_supports_tf32", lambda: False)  # a pre-Ampere GPU
    assert resolve_precision("auto", FAKE_CUDA, training=True) is Precision.FP32


def _one_line_error(call, match: str) -> str:
    with pytest.raises(PrecisionError, match=match) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_precision_lists_the_choices():
    message = _one_line_error(lambda: resolve_precision("fp16", "cpu", training=True), "unknown precision 'fp16'")
    assert all(choice in message for choice in PRECISION_CHOICES)


def test_tf32_on_the_cpu_is_refused_with_the_fix():
    message = _one_line_error(lambda: resolve_precision("tf32", "cpu", training=True), "CUDA tensor-core mode")
    assert message.endswith("use --precision fp32 or bf16")


def test_bf16_is_refused_where_the_device_cannot_run_it(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: False)
    _one_line_error(lambda: resolve_precision("bf16", "cpu", training=True), "no bf16 kernels.*use --precision fp32")
    monkeypatch.setattr(precision_module, "cuda_supports_bf16", lambda: False)
    _one_line_error(lambda: resolve_precision("bf16", FAKE_CUDA, training=True), "no native bf16.*use fp32")
    monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("bf16", "cpu", training=False) is Precision.BF16


def test_tf32_is_refused_on_a_gpu_without_tf32_tensor_cores(monkeypatch):
    monkeypatch.setattr(precision_module, "cuda_supports_tf32", lambda: False)
    _one_line_error(lambda: resolve_precision("tf32", FAKE_CUDA, training=True), "no TF32 tensor cores")


def test_cli_offers_exactly_the_precisions_of_the_enum_and_refuses_in_one_line(tmp_path):
    from click.testing import CliRunner

    from capsrobust import cli

    assert cli.PRECISIONS.choices == PRECISION_CHOICES
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli.main, ["train", "cnn-tiny", "--device", "cpu", "--precision", "tf32", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: tf32 is a CUDA tensor-core mode and cannot run on cpu; use --precision fp32 or bf16"
    ]
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # bf16 without a GPU: torch.autocast turns itself off
@pytest.mark.parametrize(
    ("chosen", "tf32"), [(Precision.TF32, True), (Precision.FP32, False), (Precision.BF16, False)]
)
def test_cuda_scope_sets_tf32_and_autotuning_then_restores_them(monkeypatch, cuda_flags_restored, chosen, tf32):
    monkeypatch.setattr(precision_module, "cuda_supports_tf32", lambda: True)
    monkeypatch.setattr(precision_module, "cuda_supports_bf16", lambda: True)
    before = CudaFlags(matmul_tf32=not tf32, cudnn_tf32=not tf32, cudnn_benchmark=False)
    before.apply()
    with precision_scope(chosen, "cuda"):
        assert CudaFlags.read() == CudaFlags(matmul_tf32=tf32, cudnn_tf32=tf32, cudnn_benchmark=True)
    assert CudaFlags.read() == before
    with pytest.raises(RuntimeError, match="boom"), precision_scope(chosen, "cuda"):
        raise RuntimeError("boom")
    assert CudaFlags.read() == before


def test_cpu_scope_leaves_the_cuda_switches_alone_and_refuses_auto(cuda_flags_restored):
    with precision_scope(Precision.FP32, "cpu"):
        assert CudaFlags.read() == cuda_flags_restored
    with pytest.raises(ValueError, match="resolve 'auto'"), precision_scope(Precision.AUTO, "cpu"):
        pass


@needs_cpu_bf16
def test_bf16_scope_runs_matrix_products_in_bf16_on_the_cpu():
    a, b = torch.rand(8, 8), torch.rand(8, 8)
    with precision_scope(Precision.BF16, "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with precision_scope(Precision.FP32, "cpu"):
        assert (a @ b).dtype == torch.float32
    assert (a @ b).dtype == torch.float32  # autocast ends with the scope


def _capsnet(name: str = "capsnet-tiny", scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(recipe(name)).eval()
    with torch.no_grad():  # untrained capsules are almost zero vectors; give them some length
        model.weights.normal_(0.0, scale)
    return model


def test_votes_are_w_times_u_for_every_capsule_and_class_laid_out_for_routing():
    model = _capsnet()
    primary = torch.randn(3, model.weights.shape[0], model.weights.shape[3])  # (B, N_in, 8)
    votes = model.votes(primary)  # (B, N_in, C, D)
    expected = torch.einsum("ncdk,bnk->bncd", model.weights, primary)
    assert votes.shape == expected.shape
    assert torch.allclose(votes, expected, atol=1e-5)
    assert votes.transpose(1, 2).is_contiguous()  # (B, C, N_in, D) memory: routing reads it without copies


def papers_routing(votes: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedure 1 with einsum and autograd's own backward: the reference for the hand-written backward."""
    logits = votes.new_zeros(votes.shape[:3])  # (B, N_in, C)
    for iteration in range(iterations):
        coupling = logits.softmax(dim=2)
        outputs = squash(torch.einsum("bnc,bncd->bcd", coupling, votes))  # (B, C, D)
        if iteration < iterations - 1:
            logits = logits + torch.einsum("bncd,bcd->bnc", votes, outputs)
    return outputs, coupling


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_routing_backward_equals_autograd_of_the_papers_procedure(iterations):
    torch.manual_seed(iterations)
    votes = torch.randn(2, 7, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: route_by_agreement(v, iterations), (votes,), fast_mode=True)
    upstream = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 7, 3, dtype=torch.float64)

    def gradient(routing) -> torch.Tensor:
        outputs, coupling = routing(votes, iterations)
        objective = (outputs * upstream[0]).sum() + (coupling * upstream[1]).sum()
        return torch.autograd.grad(objective, votes)[0]

    assert torch.allclose(gradient(route_by_agreement), gradient(papers_routing), atol=1e-10)


def test_capsnet_forward_and_gradients_are_those_of_the_papers_routing(monkeypatch):
    model = _capsnet(scale=0.5)
    images = torch.rand(4, 1, 28, 28, requires_grad=True)
    labels = torch.tensor([0, 3, 5, 9])

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        images.grad = None
        output = model(images, labels)
        (model.loss(output, images, labels).total + output.logits.sum()).backward()
        return output.lengths.detach(), [images.grad.clone()] + [p.grad.clone() for p in model.parameters()]

    lengths, gradients = run()
    monkeypatch.setattr("capsrobust.models.capsnet.route_by_agreement", papers_routing)
    reference_lengths, reference_gradients = run()
    assert torch.allclose(lengths, reference_lengths, atol=1e-6)
    for ours, reference in zip(gradients, reference_gradients, strict=True):
        assert float((ours - reference).norm() / reference.norm()) < 1e-5


@needs_cpu_bf16
def test_bf16_capsnet_keeps_votes_bf16_and_everything_delicate_fp32():
    model = _capsnet()
    images = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        exact = model(images)
        with precision_scope(Precision.BF16, "cpu"):
            fast = model(images)
            votes = model.votes(model.primary_capsules(images))
    assert votes.dtype == torch.bfloat16
    for tensor in (fast.logits, fast.lengths, fast.poses, fast.reconstruction):
        assert tensor.dtype == torch.float32
    assert torch.allclose(fast.lengths, exact.lengths, rtol=0.05, atol=0.01)
    # Near-zero capsules: ε = 1e-8 would vanish next to 1 in bf16 arithmetic, and the length with it.
    assert float(model.loss(fast, images, exact.predictions).total) == pytest.approx(
        float(model.loss(exact, images, exact.predictions).total), rel=0.05
    )


def test_predict_and_evaluate_default_to_fp32_and_record_the_precision():
    model = _capsnet()
    split = Split(torch.rand(6, 1, 28, 28), torch.arange(6))
    positional = predict(model, split.images, "cpu", 4)  # the signature other modules call
    assert torch.equal(positional, model(split.images).logits.argmax(dim=1))
    classes = tuple(str(digit) for digit in range(10))
    assert evaluate(model, split, classes, "cpu").precision == "fp32"
    with pytest.raises(PrecisionError, match="tf32"):
        predict(model, split.images, "cpu", 4, precision="tf32")


@needs_cpu_bf16
def test_evaluate_in_bf16_says_so():
    split = Split(torch.rand(6, 1, 28, 28), torch.arange(6))
    result = evaluate(_capsnet(), split, tuple(str(digit) for digit in range(10)), "cpu", precision="bf16")
    assert result.precision == "bf16" and result.n == 6


@pytest.fixture
def throughput(monkeypatch):
    """benchmarks/throughput.py as a module (it imports its neighbour plain_capsnet as a script does)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import throughput

    return throughput


def test_throughput_writes_a_row_with_every_column_per_recipe_batch_and_precision(throughput, tmp_path):
    out = tmp_path / "rows.json"
    throughput.main([
        "--device", "cpu", "--recipes", "capsnet-tiny", "cnn-tiny", "--batch-sizes", "4", "--repeats", "1",
        "--precision", "fp32", "tf32", "--matmul-size", "32", "--json", str(out),
    ])
    written = json.loads(out.read_text())
    assert {"device", "torch", "command"} <= set(written["header"])
    rows = written["rows"]
    assert [(row["recipe"], row["precision"]) for row in rows] == [
        ("capsnet-tiny", "fp32"), ("capsnet-tiny", "tf32"), ("cnn-tiny", "fp32"), ("cnn-tiny", "tf32")
    ]
    assert all(list(row) == throughput.COLUMNS for row in rows)
    measured = [row for row in rows if row["precision"] == "fp32"]
    for row in measured:
        assert row["status"] == "ok" and row["batch"] == 4 and row["torch"] == torch.__version__
        for column in ("forward_img_s", "train_img_s", "pgd_image_steps_s", "train_gflop_per_image"):
            assert row[column] > 0
        assert row["peak_memory_mib"] is None  # no GPU memory to report on the CPU
    skipped = [row for row in rows if row["precision"] == "tf32"]
    assert all(row["status"] == "skipped" and "use --precision fp32" in row["reason"] for row in skipped)
    assert all(row["train_img_s"] is None for row in skipped)


def test_throughput_csv_has_the_same_columns(throughput, tmp_path):
    import pandas as pd

    rows = pd.DataFrame([{"recipe": "x", "batch": 1, "peak_memory_mib": math.nan}]).reindex(columns=throughput.COLUMNS)
    throughput.write_rows(tmp_path / "rows.csv", {}, rows)
    assert list(pd.read_csv(tmp_path / "rows.csv").columns) == throughput.COLUMNS


def test_the_before_after_table_gives_each_speed_then_now_and_the_ratio(throughput):
    import pandas as pd

    def row(code: str, model: str, train: float, startup: float, process: float, precision: str) -> dict:
        return {"code": code, "recipe": "capsnet-paper", "model": model, "precision": "fp32", "status": "ok",
                "train_img_s": train, "forward_img_s": 300.0, "pgd_image_steps_s": 2 * train, "startup_s": startup,
                "process_s": process, "process_precision": precision}

    rows = pd.DataFrame([row("old", "capsrobust", 100.0, 5.3, 40.0, "fp32"),
                         row("new", "capsrobust", 150.0, 2.65, 20.0, "bf16"),
                         row("reference", "plain", 75.0, math.nan, math.nan, "")])
    lines = throughput.before_after(rows, "old", "new").splitlines()
    assert lines[0].startswith("| recipe | precision | train img/s old → new")
    assert "100 → 150 (×1.50)" in lines[2] and "200 → 300 (×1.50)" in lines[2]  # train, PGD
    assert "5.30 → 2.65" in lines[2] and "40.0 → 20.0 (×2.00; fp32 → bf16)" in lines[2]  # start-up, process
    assert lines[3].startswith("| plain CapsNet (reference) | fp32 | 75; capsnet-paper now ×2.00 |")


def test_plain_capsnet_reference_has_the_papers_shape(throughput):
    from plain_capsnet import PlainCapsNet

    model = PlainCapsNet()
    assert sum(p.numel() for p in model.parameters()) == 8_215_568  # as capsnet-paper
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([1, 7])
    lengths, reconstruction = model(images, labels)
    assert lengths.shape == (2, 10) and reconstruction.shape == (2, 784)
    assert math.isfinite(PlainCapsNet.loss(lengths, reconstruction, images, labels).item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_real_gpu_tf32_and_bf16_run_and_flags_come_back(cuda_flags_restored):
    model = _capsnet().cuda()
    images = torch.rand(16, 1, 28, 28, device="cuda")
    labels = torch.arange(16, device="cuda") % 10
    for name in ("auto", "fp32", "tf32", "bf16"):
        chosen = resolve_precision(name, torch.device("cuda"), training=True)
        with precision_scope(chosen, "cuda"):
            loss = model.loss(model(images, labels), images, labels).total
        loss.backward()
        assert math.isfinite(loss.item())
        assert CudaFlags.read() == cuda_flags_restored


@needs_cpu_bf16
@pytest.mark.parametrize("name", ["cnn-tiny", "cnn-recon-tiny", "capsnet-tiny"])
def test_every_model_returns_float32_outputs_under_bf16_autocast(name):
    model = build_model(recipe(name)).eval()
    with precision_scope(Precision.BF16, "cpu"):
        output = model(torch.rand(3, 1, 28, 28))
    tensors = [t for t in (output.logits, output.lengths, output.poses, output.reconstruction) if t is not None]
    assert all(t.dtype == torch.float32 for t in tensors)
