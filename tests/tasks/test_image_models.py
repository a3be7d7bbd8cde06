"""ViT-family classifiers under rankadapt's methods: the module-name map (installed and 4.x names),
output unchanged at init, parity with stock PEFT (outputs and gradients), export to stock PEFT and to a
merged transformers model, every method's policy for a few optimizer steps, and the real dinov2-small."""

from __future__ import annotations

import peft
import pytest
import torch
from torch import nn
from transformers import AutoModelForImageClassification

from rankadapt.core.config import MODULE_NAMES, MethodConfig, ModelConfig, method_names
from rankadapt.methods.export import export_merged, export_peft, load_peft_adapter
from rankadapt.core.layer import AdapterLinear
from rankadapt.methods import StepContext
from rankadapt.methods.adapting import prepare_model
from rankadapt.core.targets import find_targets
from rankadapt.tasks.image_classification import load_image_model, load_image_processor, load_rgb

from helpers import assert_adapter_gradients_match_peft, copy_adapters_into_peft, perturbed_as_if_trained
from image_helpers import CIFAR10, DINOV2_SMALL, VISION_ARCHITECTURES, tiny_pixels, tiny_vision_model

# Written out by hand (not derived from the map) so the test can catch a wrong map.
_NEW = {"query": "attention.q_proj", "key": "attention.k_proj", "value": "attention.v_proj",
        "attention.output": "attention.o_proj", "intermediate": "mlp.fc1", "layer.output": "mlp.fc2"}
BLOCKS = {"vit": "vit.layers.{i}", "deit": "deit.layers.{i}", "beit": "beit.layers.{i}",
          "dinov2": "dinov2.encoder.layer.{i}"}
HEADS = {"vit": {"classifier"}, "deit": {"classifier"}, "beit": {"beit.pooler", "classifier"},
         "dinov2": {"classifier"}}
# transformers 4.x spelled the same maps BERT's way (DINOv2 already had mlp.fc1/fc2).
_OLD = {"query": "attention.attention.query", "key": "attention.attention.key", "value": "attention.attention.value",
        "attention.output": "attention.output.dense", "intermediate": "intermediate.dense",
        "layer.output": "output.dense"}
OLD_NAMES = {"vit": _OLD, "deit": _OLD, "beit": _OLD,
             "dinov2": {**_OLD, "intermediate": "mlp.fc1", "layer.output": "mlp.fc2"}}
SIX = list(MODULE_NAMES)


@pytest.fixture(params=VISION_ARCHITECTURES)
def arch(request) -> str:
    return request.param


def logits(model, pixels):
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def trained_lora(arch: str, r: int = 4) -> object:
    """LoRA on all six roles with non-zero B and a perturbed head, as after training."""
    adapted = prepare_model(tiny_vision_model(arch), MethodConfig(name="lora", lora_r=r, lora_alpha=8,
                                                                   lora_module=SIX))
    return perturbed_as_if_trained(adapted)


# -- module names -------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", MODULE_NAMES)
def test_injection_finds_exactly_the_expected_modules(arch, role):
    adapted = prepare_model(tiny_vision_model(arch), MethodConfig(name="lora", lora_r=2, lora_module=[role]))
    expected = {f"{BLOCKS[arch].format(i=i)}.{_NEW[role]}" for i in range(2)}
    assert set(adapted.adapters) == expected
    assert all(isinstance(adapted.model.get_submodule(n), AdapterLinear) for n in expected)
    assert set(adapted.head_modules) == HEADS[arch]


def _old_release_model(arch: str, swiglu: bool = False) -> nn.Module:
    """A module tree with a transformers 4.x model's linear names (two blocks) and its model_type."""
    names = dict(OLD_NAMES[arch])
    if swiglu:
        names.update({"intermediate": "mlp.weights_in", "layer.output": "mlp.weights_out"})
    model = nn.Module()
    model.config = type("Config", (), {"model_type": arch})()
    for i in range(2):
        for leaf in names.values():
            _add(model, f"{arch}.encoder.layer.{i}.{leaf}")
    _add(model, "classifier")
    return model


def _add(root: nn.Module, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(leaf, nn.Linear(4, 4))


@pytest.mark.parametrize("swiglu", [False, True])
def test_older_transformers_names_map_to_the_same_roles(arch, swiglu):
    if swiglu and arch != "dinov2":
        pytest.skip("SwiGLU is a DINOv2 option")
    model = _old_release_model(arch, swiglu)
    leaves = {**OLD_NAMES[arch], **({"intermediate": "mlp.weights_in", "layer.output": "mlp.weights_out"}
                                    if swiglu else {})}
    for role in MODULE_NAMES:
        assert set(find_targets(model, [role])) == {f"{arch}.encoder.layer.{i}.{leaves[role]}" for i in range(2)}


def test_dinov2_swiglu_maps_gate_and_up_in_down_out():
    import transformers

    from image_helpers import tiny_vision_config
    from rankadapt.tasks.image_classification import image_model_from_config

    config = tiny_vision_config("dinov2")
    config.use_swiglu_ffn = True
    model = image_model_from_config(config)
    block = "dinov2.encoder.layer.0.mlp"
    assert {n for n in find_targets(model, ["intermediate"]) if n.startswith(block)} == \
        {f"{block}.gate_proj", f"{block}.up_proj"}
    assert {n for n in find_targets(model, ["layer.output"]) if n.startswith(block)} == {f"{block}.down_proj"}
    assert isinstance(model, transformers.Dinov2ForImageClassification)


# -- outputs, parity, export --------------------------------------------------------------------------
def test_output_unchanged_at_init(arch):
    base = tiny_vision_model(arch)
    pixels = tiny_pixels()
    before = logits(base, pixels)
    adapted = prepare_model(base, MethodConfig(name="lora", lora_r=4, lora_module=SIX))
    assert len(adapted.adapters) == 12
    assert torch.equal(logits(adapted.model, pixels), before)


def test_parity_with_peft_lora_outputs_and_gradients(arch):
    """Same A, B and head copied into stock PEFT on the same model: logits and gradients match."""
    adapted = trained_lora(arch)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(adapted.adapters),
                             modules_to_save=[h.split(".")[-1] for h in adapted.head_modules])
    reference = peft.get_peft_model(tiny_vision_model(arch), config)
    copy_adapters_into_peft(adapted, reference)
    pixels, labels = tiny_pixels(), torch.tensor([0, 2, 1])
    assert all(layer.fused_product for layer in adapted.adapters.values())  # the fused product serves ViTs too
    adapted.model.eval(), reference.eval()
    ours, theirs = adapted.model(pixel_values=pixels, labels=labels), reference(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-6, rtol=0)
    ours.loss.backward()
    theirs.loss.backward()
    assert_adapter_gradients_match_peft(adapted, reference)


def assert_exports_reproduce_logits(adapted, arch: str, directory, merged: bool = True) -> None:
    """Stock PEFT on AutoModelForImageClassification, rankadapt's own loader (and the merged plain model)
    give the same logits."""
    pixels = tiny_pixels(batch=4, seed=7)
    expected = logits(adapted.model.eval(), pixels)
    export_peft(adapted, directory / "adapter")
    loaded = peft.PeftModel.from_pretrained(tiny_vision_model(arch), directory / "adapter").eval()
    torch.testing.assert_close(logits(loaded, pixels), expected, atol=1e-5, rtol=0)
    back = load_peft_adapter(tiny_vision_model(arch), directory / "adapter")  # what predict/eval load
    torch.testing.assert_close(logits(back.model.eval(), pixels), expected, atol=1e-5, rtol=0)
    if not merged:
        return
    export_merged(adapted, directory / "merged")
    merged = AutoModelForImageClassification.from_pretrained(directory / "merged").eval()
    assert not any("lora" in key for key in merged.state_dict())
    torch.testing.assert_close(logits(merged, pixels), expected, atol=1e-5, rtol=0)


def test_export_to_stock_peft_and_merged_transformers_gives_the_same_logits(arch, tmp_path):
    assert_exports_reproduce_logits(trained_lora(arch), arch, tmp_path)


# -- every method's policy ----------------------------------------------------------------------------
T = 8
POLICY_SETTINGS = {
    "adalora": dict(lora_r=4, target_rank=2, init_warmup=2, final_warmup=2, mask_interval=1),
    "elalora": dict(lora_r=3, max_rank=6, b=4, k=2, init_warmup=1, final_warmup=1, mask_interval=2),
    "sora": dict(lora_r=4, sparse_lambda_2=0.2),  # per-step threshold: 10 under the old eta*xi reading at lr 2e-2
    "rmlora": dict(lora_r=4, random_rank=2, lora_type="v2"),
    "lora": dict(lora_r=4),
}


def run_policy(method: str):
    """T optimizer steps on random images in the hook order of ALGORITHMS.md §7; returns the handle."""
    settings = POLICY_SETTINGS.get(method, {})
    module = {"lora_module": SIX} if method in POLICY_SETTINGS else {}
    torch.manual_seed(0)
    adapted = prepare_model(tiny_vision_model("vit", num_labels=3), MethodConfig(name=method, **settings, **module))
    params = [p for p in adapted.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / T)
    policy, adapters = adapted.policy, adapted.adapters
    policy.setup(adapters, T)
    adapted.model.train()
    for step in range(T):
        loss = adapted.model(pixel_values=tiny_pixels(4, seed=step), labels=torch.tensor([0, 1, 2, step % 3])).loss
        regularization = policy.regularization(adapters)
        (loss if regularization is None else loss + regularization).backward()
        assert torch.isfinite(loss)
        ctx = StepContext(step=step, total_steps=T, lr=scheduler.get_last_lr()[0], optimizer=optimizer)
        policy.before_optimizer_step(adapters, ctx)
        optimizer.step()
        policy.after_optimizer_step(adapters, ctx)
        scheduler.step()
        policy.after_scheduler_step(adapters, ctx)
        optimizer.zero_grad(set_to_none=True)
    return adapted.model.eval() and adapted


@pytest.mark.parametrize("method", [m for m in method_names() if m != "none"])
def test_every_method_trains_on_images_and_adapters_export(method, tmp_path):
    before = tiny_vision_model("vit").state_dict()
    adapted = run_policy(method)
    after = {k.replace(".base.", "."): v for k, v in adapted.model.state_dict().items()}  # adapted: <name>.base.weight
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if method == "full":
        assert any(k.startswith("vit.layers.0.attention.q_proj") for k in changed)
    else:  # adapters and head only: the backbone's own weights stay as loaded
        assert changed and all(k.startswith("classifier.") for k in changed), sorted(changed)
    pattern = adapted.rank_pattern()
    if method == "adalora":
        assert sum(pattern.values()) == 2 * 12                     # the final budget b(T)
    elif method == "elalora":
        assert sum(pattern.values()) == 3 * 12 and set(pattern.values()) != {3}  # conserved, moved
    elif method == "sora":
        assert sum(pattern.values()) < 4 * 12                      # a large xi prunes gates
    if adapted.adapters:
        assert_exports_reproduce_logits(adapted, "vit", tmp_path, merged=False)  # merged: tested per architecture


def test_method_none_trains_nothing():
    adapted = prepare_model(tiny_vision_model("vit"), MethodConfig(name="none"))
    assert adapted.trainable_parameters() == 0


# -- the real dinov2-small ----------------------------------------------------------------------------
@pytest.mark.skipif(not (DINOV2_SMALL / "config.json").is_file(), reason="../shared/models/dinov2-small is absent")
@pytest.mark.skipif(not (CIFAR10 / "train").is_dir(), reason="../shared/data/cifar10 is absent")
def test_real_dinov2_small_loads_with_ten_labels_its_processor_and_every_role():
    names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    model = load_image_model(ModelConfig(name=str(DINOV2_SMALL)), names).eval()
    processor = load_image_processor(str(DINOV2_SMALL))
    assert model.config.id2label[3] == "cat" and model.classifier.out_features == 10
    images = [load_rgb(p) for p in sorted((CIFAR10 / "train" / "cat").iterdir())[:2]]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 224, 224)
    before = logits(model, pixels)
    adapted = prepare_model(model, MethodConfig(name="lora", lora_r=4, lora_module=SIX))
    assert len(adapted.adapters) == 12 * 6
    assert before.shape == (2, 10) and torch.equal(logits(adapted.model, pixels), before)
