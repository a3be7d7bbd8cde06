"""Shared fixtures: tiny encoders (2 layers, hidden 32) of every supported architecture, built from a
config in code, and a tiny tokenizer. No download."""

from __future__ import annotations

import os
from pathlib import Path

# The tests never reach the hub (no network here or in CI): a data or model name that falls through to
# it fails at once instead of after the hub client's retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

ARCHITECTURES = ("bert", "roberta", "distilbert", "deberta-v2", "mpnet")
VOCAB = 120


def tiny_config(arch: str, num_labels: int = 2) -> transformers.PretrainedConfig:
    common = dict(vocab_size=VOCAB, num_labels=num_labels)
    if arch == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "deberta-v2": transformers.DebertaV2Config, "mpnet": transformers.MPNetConfig}[arch]
    extra = {"pad_token_id": 1} if arch in ("roberta", "mpnet") else {}
    return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64, **common, **extra)


def tiny_model(arch: str = "bert", num_labels: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_config(tiny_config(arch, num_labels))
    return model.eval()


def tiny_batch(batch: int = 3, length: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


def assert_stock_peft_matches(adapted, directory: Path, arch: str = "bert") -> None:
    """Export ``adapted`` and check stock PEFT reproduces its logits on a fresh base model (1e-5)."""
    import peft

    from rankadapt.methods.export import export_peft

    batch = tiny_batch(batch=4, seed=7)
    with torch.no_grad():
        expected = adapted.model.eval()(**batch).logits
    export_peft(adapted, directory)
    loaded = peft.PeftModel.from_pretrained(tiny_model(arch), directory).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, expected, atol=1e-5, rtol=0)


def checkpoint_round_trip(model, optimizer, scheduler, policy) -> dict:
    """What a training checkpoint holds, passed through torch.save / torch.load."""
    import io

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "policy": policy.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def restore_round_trip(saved: dict, model, optimizer, scheduler, policy) -> None:
    """Load what :func:`checkpoint_round_trip` returned into a freshly built run."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    policy.load_state_dict(saved["policy"])


@pytest.fixture(autouse=True)
def _messages_as_a_library_user_finds_them():
    """Every CLI invocation sets up the ``rankadapt`` logger (rankadapt.core.messages); undo it after
    each test, so that a later test (caplog, a library call) sees the package as a library user does."""
    yield
    from rankadapt.core.messages import reset_messages

    reset_messages()
