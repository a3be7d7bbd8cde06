"""Building blocks for end-to-end tests: a tiny model directory with its own tokenizer, and a small
synthetic sentiment task a tiny model can actually learn. No download."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import transformers

from conftest import tiny_config

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "sad", "boring", "weak"]
FILLER = ["the", "a", "movie", "film", "was", "is", "and", "plot", "actor", "story", "very", "quite"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(directory: Path) -> transformers.PreTrainedTokenizerBase:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL + POSITIVE + NEGATIVE + FILLER)}
    return transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True)


def make_model_dir(directory: Path, arch: str = "bert", seed: int = 0) -> Path:
    """A saved tiny model (2 layers, hidden 32) plus tokenizer, loadable by ``model.name=<dir>``."""
    import torch

    tokenizer = make_tokenizer(directory)
    torch.manual_seed(seed)
    config = tiny_config(arch)
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts whose label is the polarity of the sentiment words they contain (one polarity per text)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE if label == "positive" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def custom_task_args(tmp: Path, model_dir: Path, run_dir: Path, n_train: int = 64, n_eval: int = 32) -> list[str]:
    train = write_csv(tmp / "data" / "train.csv", sentiment_rows(n_train, seed=1))
    evaluation = write_csv(tmp / "data" / "eval.csv", sentiment_rows(n_eval, seed=2))
    return [f"model.name={model_dir}", "data.task=custom", f"data.train_file={train}", f"data.eval_file={evaluation}",
            "data.text_column=text", "data.label_column=label", "data.max_length=16", f"data.cache_dir={tmp / 'cache'}",
            "train.batch_size=8", "train.epochs=2", "train.learning_rate=5e-3", "train.progress=false",
            "train.logging_steps=1", "train.device=cpu", f"output_dir={run_dir}"]


def perturbed_as_if_trained(adapted):
    """``adapted`` with non-zero B factors and a perturbed head (seeded), as after training, so that an
    export or merge that dropped a part would change the logits."""
    import torch

    torch.manual_seed(1)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_B.normal_(std=0.2)
        for head in adapted.head_modules:
            for p in adapted.model.get_submodule(head).parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return adapted


def assert_adapter_gradients_match_peft(adapted, reference) -> None:
    """Every adapter's A and B gradients equal those of the same module in a stock PEFT model."""
    import torch

    for name, layer in adapted.adapters.items():
        module = reference.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, module.lora_A["default"].weight.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(layer.lora_B.grad, module.lora_B["default"].weight.grad, atol=1e-6, rtol=1e-5)


def copy_adapters_into_peft(adapted, reference) -> None:
    """Give a stock PEFT LoRA model ``reference`` the A, B and head weights of ``adapted``."""
    import torch

    with torch.no_grad():
        for name, layer in adapted.adapters.items():
            module = reference.base_model.model.get_submodule(name)
            module.lora_A["default"].weight.copy_(layer.lora_A)
            module.lora_B["default"].weight.copy_(layer.lora_B)
        for head in adapted.head_modules:
            theirs = reference.base_model.model.get_submodule(head).modules_to_save["default"]
            theirs.load_state_dict(adapted.model.get_submodule(head).state_dict())


def assert_resume_equals_straight_run(train_args, straight, interrupted, monkeypatch, stop_at: int) -> None:
    """Train ``straight`` uninterrupted; train ``interrupted`` with a Ctrl-C after optimizer step
    ``stop_at`` (exit 130), resume it, and require the same train / ranks / eval events as the
    straight run (timings left out). ``train_args(run_dir)`` gives the CLI arguments of a run."""
    import rankadapt.recipes.finetune as finetune
    from test_cli import events, invoke, train_ok

    train_ok(*train_args(straight))
    original = finetune._advance_bar

    def interrupt(run, loop, *args):
        original(run, loop, *args)
        if loop.step == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(finetune, "_advance_bar", interrupt)
    assert invoke("train", *train_args(interrupted)).exit_code == 130
    monkeypatch.setattr(finetune, "_advance_bar", original)
    train_ok(*train_args(interrupted), "train.resume=true")
    untimed = lambda d, kind: [{k: v for k, v in e.items() if k != "samples_per_second"} for e in events(d, kind)]
    for kind in ("train", "ranks", "eval"):
        assert untimed(interrupted, kind) == untimed(straight, kind), kind


# Settings that let each rank-adaptive method act within an 8-step CLI run (budgeting from step 2 to 4,
# rounds every 2 steps, a threshold that prunes): the image and summarization CLI tests use them.
EIGHT_STEP_METHOD_ARGS = {
    "adalora": ["method.lora_r=4", "method.target_rank=2", "method.init_warmup=2", "method.final_warmup=4",
                "method.mask_interval=1"],
    "elalora": ["method.lora_r=3", "method.max_rank=6", "method.b=2", "method.k=1", "method.init_warmup=2",
                "method.final_warmup=4", "method.mask_interval=2"],
    "sora": ["method.lora_r=4", "method.sparse_lambda_2=0.01"],
    "rmlora": ["method.lora_r=4", "method.random_rank=2"],
}
