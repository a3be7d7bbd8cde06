"""The CUDA path, marked ``cuda``: skipped where no CUDA device is visible, run wherever one is.

    pytest -m cuda                                  # on a machine with a GPU (bench/device_check.sh)
    RANKADAPT_TEST_DEVICE=cpu pytest -m cuda        # dry run: the CPU plays the device

Every test takes its device from the ``device`` fixture. With ``RANKADAPT_TEST_DEVICE=cpu`` the same
tests run with the CPU as "the device", so their own logic (the comparisons, the tolerances, the
launch of two processes) is exercised on a machine without a GPU: the device-versus-CPU comparisons
are then CPU versus CPU, and the fp16 training run, which only CUDA supports, is skipped with a reason.

What is checked, each against the CPU or an exact reference:

- the fused adapter product (``rankadapt.core.layer._AdapterProduct``) on the device equals the composed
  operations and the CPU, and its gradients equal finite differences (float64 gradcheck; a float32
  directional difference); under bf16 and fp16 autocast it is as accurate as the composed path, and
  with a GradScaler an overflow in its backward pass is seen (the step is skipped);
- torch's dropout on the device keeps the adapter's mean (fast dropout is a CPU-only measure);
- every method's training loop on a tiny model (dropout off) gives the CPU's loss curve, weights and
  rank pattern (``LOSS_TOLERANCE``, ``WEIGHT_TOLERANCE``), bf16 within ``BF16_LOSS_TOLERANCE``;
  an fp16 run whose first steps overflow keeps finite importance estimates;
- merged evaluation on the device equals unmerged; the exported adapter of a device run loads in
  stock PEFT on the CPU with the same logits;
- a device run resumes on the CPU and a CPU run on the device, with the uninterrupted loss curve;
- two processes (NCCL where two GPUs are visible; gloo in the dry run) give one process's loss curve.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from test_distributed import DECISION_METHODS, SIX, base_args, losses, results, torchrun, workdir  # noqa: F401

DEVICE_VARIABLE = "RANKADAPT_TEST_DEVICE"

pytestmark = pytest.mark.cuda

FP32_TOLERANCE = dict(atol=1e-5, rtol=1e-4)
"""One fused product, device against CPU or fused against composed, in float32 (cuBLAS and the CPU's
BLAS sum in different orders; TF32 stays off, torch's default for matmuls)."""
LOSS_TOLERANCE = 1e-4
"""Largest |loss(device) − loss(CPU)| per step over a few float32 training steps of a tiny model."""
WEIGHT_TOLERANCE = 1e-3
"""Largest ‖θ(device) − θ(CPU)‖ / ‖θ(CPU)‖ per trained tensor after those steps. Not elementwise:
Adam's update g / (√v + ε) turns a gradient entry that rounds to the other sign into a full
learning-rate step of the other sign, so a few entries may differ by ~2·lr."""
BF16_LOSS_TOLERANCE = 3e-2
"""Largest |loss| difference per step under bf16 autocast (8-bit mantissa, kernels that differ)."""

METHODS = {**DECISION_METHODS, "full": [], "head": [],
           "rmlora": ["method.lora_r=4", "method.random_rank=2", "method.lora_type=v2"]}
"""Every method, with test_distributed's settings (ranks move within 6 steps); no dropout anywhere, since
the CPU and CUDA draw their masks from different random streams."""


@pytest.fixture(scope="module")
def device() -> torch.device:
    """The device under test: CUDA, or what ``RANKADAPT_TEST_DEVICE`` names (``cpu`` for a dry run)."""
    chosen = torch.device(os.environ.get(DEVICE_VARIABLE, "cuda"))
    if chosen.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"no CUDA device visible ({DEVICE_VARIABLE}=cpu runs these tests with the CPU as the device)")
    return chosen


def autocast_or_skip(device: torch.device, dtype: torch.dtype) -> None:
    """Skip unless this torch has ``dtype`` autocast on ``device`` (fp16 on CPU is recent)."""
    try:
        with torch.autocast(device.type, dtype=dtype):
            product = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
    except (RuntimeError, AssertionError) as err:
        pytest.skip(f"{dtype} autocast is not available on {device.type} in torch {torch.__version__}: {err}")
    if product.dtype != dtype:
        pytest.skip(f"{dtype} autocast does not apply to matmuls on {device.type} in torch {torch.__version__}")


# ==================================================================================================
# The fused adapter product
# ==================================================================================================

def make_layer(device: torch.device, gate_trainable: bool = True, bias: bool = True,
               dropout: float = 0.0):
    from rankadapt.core.layer import AdapterLinear

    torch.manual_seed(0)
    layer = AdapterLinear(nn.Linear(48, 40, bias=bias), capacity=8, scale=2.0, dropout=dropout,
                          gate_trainable=gate_trainable)
    nn.init.normal_(layer.lora_A, std=0.2)
    nn.init.normal_(layer.lora_B, std=0.2)
    with torch.no_grad():
        layer.lora_E.copy_(torch.linspace(-2.0, 2.0, 8))
        layer.rank_mask[3] = 0.0  # a masked slot, as ElaLoRA leaves them
    return layer.to(device).train()


def forward_backward(layer, x: torch.Tensor, fused: bool, precision: torch.dtype | None = None,
                     loss_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Output and gradients (x and the adapter's), on the CPU, in float32; gradients divided by
    ``loss_scale`` (what a GradScaler's unscale does)."""
    layer.fused_product = fused
    layer.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=precision or torch.bfloat16, enabled=precision is not None):
        y = layer(x)
    ((y.float() ** 2).mean() * loss_scale).backward()
    grads = {name: p.grad for name, p in layer.named_parameters() if p.grad is not None}
    return {name: t.detach().float().cpu() / (1.0 if name == "y" else loss_scale)
            for name, t in {"y": y, "x": x.grad, **grads}.items()}


def relative_errors(got: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float((got[name] - ref).abs().max() / ref.abs().max()) for name, ref in reference.items()}


@pytest.mark.parametrize("gate_trainable", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_product_on_the_device_equals_the_composed_operations_and_the_cpu(device, gate_trainable, bias):
    x = torch.randn(4, 33, 48, generator=torch.Generator().manual_seed(1))
    on_device = make_layer(device, gate_trainable, bias)
    fused, composed = forward_backward(on_device, x.to(device), True), forward_backward(on_device, x.to(device), False)
    on_cpu = forward_backward(make_layer(torch.device("cpu"), gate_trainable, bias), x, True)
    assert fused.keys() == composed.keys() == on_cpu.keys() and {"x", "lora_A", "lora_B"} <= fused.keys()
    assert ("lora_E" in fused) == gate_trainable
    for name in fused:
        torch.testing.assert_close(fused[name], composed[name], **FP32_TOLERANCE, msg=name)
        torch.testing.assert_close(fused[name], on_cpu[name], **FP32_TOLERANCE, msg=name)


def test_fused_product_gradients_equal_finite_differences_on_the_device(device):
    from rankadapt.core.dropout import keep_values
    from rankadapt.core.layer import _AdapterProduct

    gen = torch.Generator().manual_seed(2)
    f64 = dict(dtype=torch.float64, device=device)
    x = torch.randn(2, 3, 5, generator=gen).to(**f64).requires_grad_(True)
    W, b = torch.randn(4, 5, generator=gen).to(**f64), torch.randn(4, generator=gen).to(**f64)
    A = torch.randn(3, 5, generator=gen).to(**f64).requires_grad_(True)
    B = torch.randn(4, 3, generator=gen).to(**f64).requires_grad_(True)
    w = torch.tensor([0.5, -1.5, 0.0], **f64).requires_grad_(True)
    keep = keep_values(x.shape, 0.3, torch.float64, device)
    for mask in (None, keep):
        assert torch.autograd.gradcheck(lambda x, A, B, w: _AdapterProduct.apply(x, mask, W, b, A, B, w), (x, A, B, w))
    # float32, the dtype training runs in: a central difference along one random direction per input.
    inputs = [t.detach().float() for t in (x, A, B, w)]
    loss = lambda x, A, B, w: (_AdapterProduct.apply(x, None, W.float(), b.float(), A, B, w) ** 2).sum()
    grads = torch.autograd.grad(loss(*[t.requires_grad_(True) for t in inputs]), inputs)
    for i, (t, g) in enumerate(zip(inputs, grads)):
        direction = torch.randn(t.shape, generator=gen).to(device)
        step = 1e-2 / direction.norm()
        plus = [u.detach() + step * direction if j == i else u.detach() for j, u in enumerate(inputs)]
        minus = [u.detach() - step * direction if j == i else u.detach() for j, u in enumerate(inputs)]
        numeric = (loss(*plus) - loss(*minus)) / (2 * step)
        analytic = (g * direction).sum()
        assert abs(float(numeric - analytic)) <= 1e-2 * max(1.0, abs(float(analytic))), (i, numeric, analytic)


@pytest.mark.parametrize("precision", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_fused_product_under_autocast_is_as_accurate_as_the_composed_path(device, precision):
    """Against a float32 reference, the fused product under autocast errs no more than the composed
    operations under the same autocast (both compute every product in the autocast dtype); fp16 runs
    with a GradScaler's loss scale, as mixed_precision=fp16 trains."""
    autocast_or_skip(device, precision)
    layer = make_layer(device)
    x = torch.randn(8, 65, 48, generator=torch.Generator().manual_seed(3)).to(device)
    scale = 2.0 ** 12 if precision == torch.float16 else 1.0
    reference = forward_backward(layer, x, False)
    fused = forward_backward(layer, x, True, precision, scale)
    composed = forward_backward(layer, x, False, precision, scale)
    fused_errors, composed_errors = relative_errors(fused, reference), relative_errors(composed, reference)
    bound = 2e-2 if precision == torch.bfloat16 else 4e-3
    for name, error in fused_errors.items():
        assert error < bound and error <= 2 * composed_errors[name] + 1e-3, (name, error, composed_errors[name])


def test_an_overflow_in_the_fused_backward_makes_the_grad_scaler_skip_the_step(device):
    autocast_or_skip(device, torch.float16)
    layer = make_layer(device)
    optimizer = torch.optim.AdamW([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 40)  # scaled fp16 gradients overflow
    before = {name: p.detach().clone() for name, p in layer.named_parameters()}
    with torch.autocast(device.type, dtype=torch.float16):
        loss = (layer(torch.randn(4, 9, 48, device=device)).float() ** 2).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 39  # the overflow was found: scale halved, step skipped
    assert all(torch.equal(before[name], p) for name, p in layer.named_parameters())


def test_dropout_on_the_device_keeps_the_adapters_mean(device):
    """Torch's dropout on CUDA (fast dropout is a CPU-only measure; rankadapt.core.dropout): averaged over
    many draws, the training output equals the evaluation output."""
    from rankadapt.core.dropout import FastDropout

    layer = make_layer(device, dropout=0.3)
    layer.dropout = FastDropout(0.3)  # as the trainer swaps it in; on CUDA it defers to torch's dropout
    x = torch.randn(1, 48, device=device).expand(20000, 48)
    with torch.no_grad():
        trained = layer(x).mean(0)
        evaluated = layer.eval()(x[:1])[0]
    adapter_part = evaluated - layer.base(x[:1])[0]
    assert (trained - evaluated).abs().max() <= 0.05 * adapter_part.abs().max()


# ==================================================================================================
# Training on the device equals training on the CPU
# ==================================================================================================

def train_here(args: list[str]):
    """Build and train one run in this process; returns the ``Run`` (its model stays on its device)."""
    from rankadapt.core.config_files import load_config
    from rankadapt.recipes.finetune import _train, build_run

    run = build_run(load_config(None, args))
    try:
        _train(run)
    finally:
        run.logger.close()
    return run


def method_args(root: Path, run_dir: Path, method: str, device_type: str, *extra: str) -> list[str]:
    common = [a for a in base_args(root, run_dir, "train57.csv") if not a.startswith("method.lora_module=")]
    module = [f"method.lora_module={SIX}"] if method not in ("full", "head") else []
    return common + [f"method.name={method}", *module, *METHODS[method], "train.max_steps=6", "train.eval_strategy=no",
                     f"train.device={device_type}", *extra]


@pytest.fixture(scope="module")
def method_runs(workdir, device):  # noqa: F811 (workdir: the fixture imported from test_distributed)
    """Every method trained for 6 steps on the device and on the CPU (dropout off: the same function)."""
    out = workdir / "device-runs"
    return {(method, where): train_here(method_args(workdir, out / f"{method}-{where}", method, kind))
            for method in METHODS for where, kind in (("device", device.type), ("cpu", "cpu"))}


def trained_state(run) -> dict[str, torch.Tensor]:
    from rankadapt.methods.adapting import trainable_state_dict

    return {k: v.detach().float().cpu() for k, v in trainable_state_dict(run.adapted).items()}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_methods_training_on_the_device_equals_the_cpu(method, method_runs, device):
    on_device, on_cpu = method_runs[method, "device"], method_runs[method, "cpu"]
    assert next(on_device.model.parameters()).device.type == device.type
    curve_device, curve_cpu = losses(on_device.run_dir), losses(on_cpu.run_dir)
    assert len(curve_device) == 6 and [s for s, _ in curve_device] == [s for s, _ in curve_cpu]
    worst = max(abs(a - b) for (_, a), (_, b) in zip(curve_device, curve_cpu))
    assert worst <= LOSS_TOLERANCE, f"largest loss difference {worst:.3g}"
    state_device, state_cpu = trained_state(on_device), trained_state(on_cpu)
    assert state_device.keys() == state_cpu.keys()
    for key, reference in state_cpu.items():
        difference = (state_device[key] - reference).norm() / max(float(reference.norm()), 1e-12)
        assert difference <= WEIGHT_TOLERANCE, (key, float(difference))
    assert on_device.adapted.rank_pattern() == on_cpu.adapted.rank_pattern()


def test_bf16_training_on_the_device_follows_the_cpu(workdir, device):  # noqa: F811
    autocast_or_skip(device, torch.bfloat16)
    out = workdir / "device-bf16"
    curves = [losses(train_here(method_args(workdir, out / where, "lora", kind, "train.mixed_precision=bf16")).run_dir)
              for where, kind in (("device", device.type), ("cpu", "cpu"))]
    worst = max(abs(a - b) for (_, a), (_, b) in zip(*curves))
    assert len(curves[0]) == 6 and worst <= BF16_LOSS_TOLERANCE, f"largest loss difference {worst:.3g}"


def test_fp16_training_survives_overflowing_first_steps_with_finite_importance(workdir, device, monkeypatch):  # noqa: F811
    """mixed_precision=fp16 with a GradScaler started high enough that the first steps overflow: those
    steps are skipped by the scaler and by AdaLoRA's importance update, later steps train."""
    if device.type != "cuda":
        pytest.skip("mixed_precision=fp16 trains on CUDA only (Accelerate uses no GradScaler on the CPU)")
    import accelerate.accelerator

    original = accelerate.accelerator.get_grad_scaler
    monkeypatch.setattr(accelerate.accelerator, "get_grad_scaler",
                        lambda *args, **kwargs: original(*args, **{**kwargs, "init_scale": 2.0 ** 24}))
    run = train_here(method_args(workdir, workdir / "device-fp16", "adalora", "cuda", "train.mixed_precision=fp16",
                                 "train.max_steps=16"))
    assert run.accelerator.scaler.get_scale() < 2.0 ** 24, "no step overflowed: the test needs a higher init_scale"
    taken = {int(state["step"]) for state in run.optimizer.optimizer.state.values()}
    assert taken and 0 < max(taken) < 16, taken  # some steps skipped, some taken
    tracker = run.adapted.policy.tracker
    emas = [t for store in (tracker.ipt_avg, tracker.unc_avg) for factors in store.values() for t in factors.values()]
    assert emas and all(torch.isfinite(t).all() for t in emas)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


# ==================================================================================================
# Evaluation and export of a device run
# ==================================================================================================

def eval_batch(run, device: torch.device) -> dict[str, torch.Tensor]:
    encoded = run.processor(["the movie was great and fine", "a boring plot , sad and weak"], padding=True,
                            return_tensors="pt")
    return {k: v.to(device) for k, v in encoded.items()}


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_merged_evaluation_on_the_device_equals_unmerged(method, method_runs, device):
    run = method_runs[method, "device"]
    model, batch = run.adapted.model.eval(), eval_batch(run, device)
    with torch.no_grad():
        unmerged = model(**batch).logits
        with run.adapted.merged_for_evaluation():
            merged = model(**batch).logits
    torch.testing.assert_close(merged, unmerged, **FP32_TOLERANCE)


@pytest.mark.parametrize("method", ["lora", "adalora", "sora"])
def test_an_adapter_exported_from_a_device_run_loads_in_stock_peft_with_the_same_logits(method, method_runs, device,
                                                                                       workdir):  # noqa: F811
    import peft
    import transformers

    run = method_runs[method, "device"]
    adapter_dir = run.run_dir / "adapter"
    assert (adapter_dir / "adapter_config.json").is_file()
    batch = eval_batch(run, device)
    with torch.no_grad():
        expected = run.adapted.model.eval()(**batch).logits.float().cpu()
    base = transformers.AutoModelForSequenceClassification.from_pretrained(workdir / "model")
    loaded = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        got = loaded(**{k: v.cpu() for k, v in batch.items()}).logits
    torch.testing.assert_close(got, expected, **FP32_TOLERANCE)


# ==================================================================================================
# Resume across devices
# ==================================================================================================

@pytest.mark.parametrize("first, then", [("device", "cpu"), ("cpu", "device")])
def test_a_run_resumes_on_the_other_device_with_the_uninterrupted_loss_curve(first, then, workdir, device,  # noqa: F811
                                                                             monkeypatch):
    """AdaLoRA (importance EMAs and decisions in the checkpoint), 8 steps with a checkpoint at step 4,
    stopped at step 6 on one device and resumed on the other."""
    import rankadapt.recipes.finetune

    kinds = {"device": device.type, "cpu": "cpu"}
    out = workdir / f"resume-{first}-{then}"
    args = lambda run_dir, kind: method_args(workdir, run_dir, "adalora", kind, "train.max_steps=8",
                                             "train.eval_strategy=steps", "train.eval_steps=4")
    straight = train_here(args(out / "straight", kinds[first]))
    original = rankadapt.recipes.finetune._log_train

    def stop_at_step_6(run, loop, *rest, **kwargs):
        if loop.step == 6:
            raise KeyboardInterrupt
        return original(run, loop, *rest, **kwargs)

    monkeypatch.setattr(rankadapt.recipes.finetune, "_log_train", stop_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train_here(args(out / "stopped", kinds[first]))
    monkeypatch.setattr(rankadapt.recipes.finetune, "_log_train", original)
    assert json.loads((out / "stopped" / "checkpoint" / "loop.json").read_text())["step"] == 4
    resumed = train_here(args(out / "stopped", kinds[then]) + ["train.resume=true"])
    assert next(resumed.model.parameters()).device.type == kinds[then]
    assert results(resumed.run_dir)["steps"] == 8
    curve, reference = losses(resumed.run_dir), losses(straight.run_dir)
    assert [s for s, _ in curve] == [s for s, _ in reference] == list(range(1, 9))
    worst = max(abs(a - b) for (_, a), (_, b) in zip(curve, reference))
    assert worst <= LOSS_TOLERANCE, f"largest loss difference {worst:.3g}"
    assert resumed.adapted.rank_pattern() == straight.adapted.rank_pattern()


# ==================================================================================================
# Two processes: NCCL on two GPUs (gloo in the dry run)
# ==================================================================================================

def test_two_processes_on_two_devices_give_one_processs_loss_curve(workdir, device):  # noqa: F811
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip(f"two-process NCCL training needs two visible GPUs, {torch.cuda.device_count()} visible")
    out = workdir / f"two-processes-{device.type}"
    args = base_args(workdir, out / "double") + [f"train.device={device.type}"]
    output = torchrun("-m", "rankadapt", "train", *args)
    train_here(base_args(workdir, out / "single") + [f"train.device={device.type}"])
    assert results(out / "double")["num_processes"] == 2, output[-2000:]
    assert results(out / "double")["steps"] == results(out / "single")["steps"] == 16
    worst = max(abs(a - b) for (_, a), (_, b) in zip(losses(out / "double"), losses(out / "single")))
    assert worst <= LOSS_TOLERANCE, f"largest loss difference {worst:.3g}"
