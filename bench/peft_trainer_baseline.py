"""The end-to-end baseline: the same fine-tune written the way a user writes it with stock PEFT and
the Hugging Face Trainer.

    python bench/peft_trainer_baseline.py configs/imdb.yaml data.dir=../shared/data output_dir=DIR

It reads a rankadapt config only to take the *same* examples (rankadapt's loader: the same
stratified training subset and held-out reviews) and the same hyperparameters; everything after
that is the textbook recipe: tokenise every text with ``padding="max_length"``, wrap the tensors in
a ``Dataset``, ``get_peft_model`` with a ``LoraConfig`` on the same modules (classifier and pooler
trained in full through ``modules_to_save``, as rankadapt does), ``Trainer.train()`` with default
settings otherwise (fp32, shuffled fixed-length batches, AdamW, linear schedule) and one
``Trainer.evaluate()`` at the end, then ``save_pretrained`` of the adapter. Writes
``OUTPUT_DIR/baseline.json`` with the accuracy and the phase times.

Only LoRA on BERT-family models is mapped (the module names below); it is a benchmark baseline,
not a second trainer.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)

from rankadapt.core.config_files import load_config
from rankadapt.tasks.text_classification.loading import load_task_data
from rankadapt.core.models import resolve_model_path

# rankadapt's module names -> the BERT module-name suffixes PEFT matches ("output.dense" covers both
# attention.output.dense and the layer's output.dense).
BERT_TARGETS = {"query": "query", "key": "key", "value": "value", "attention.output": "output.dense",
                "intermediate": "intermediate.dense", "layer.output": "output.dense"}


class TokenizedDataset(torch.utils.data.Dataset):
    def __init__(self, encodings: dict, labels: list[int]):
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: torch.tensor(v[i]) for k, v in self.encodings.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


def accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    if config.method.name != "lora":
        raise SystemExit(f"the baseline is LoRA only; the config has method {config.method.name!r}")
    times, start = {}, time.perf_counter()
    data = load_task_data(config.data)
    evaluation = next(iter(data.eval_splits.values()))
    times["data_seconds"] = time.perf_counter() - start

    path = resolve_model_path(config.model.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=data.task.num_labels)
    targets = sorted({BERT_TARGETS[m] for m in config.method.lora_module})
    peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.method.lora_r,
                             lora_alpha=config.method.lora_alpha, lora_dropout=config.method.lora_dropout,
                             target_modules=targets, modules_to_save=["classifier", "pooler"])
    model = get_peft_model(model, peft_config)

    tick = time.perf_counter()

    def encode(split):
        enc = tokenizer(split.text, padding="max_length", truncation=True, max_length=config.data.max_length)
        return TokenizedDataset(dict(enc), list(split.labels))

    train_set, eval_set = encode(data.train), encode(evaluation)
    times["tokenize_seconds"] = time.perf_counter() - tick

    t = config.train  # transformers 5 reads a warmup_steps below 1 as a fraction of the steps
    args = TrainingArguments(output_dir=str(Path(config.output_dir) / "trainer"), num_train_epochs=t.epochs,
                             per_device_train_batch_size=t.batch_size, learning_rate=t.learning_rate,
                             weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio, seed=t.seed,
                             save_strategy="no", report_to="none", logging_steps=t.logging_steps,
                             bf16=t.mixed_precision == "bf16", use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      compute_metrics=accuracy)
    tick = time.perf_counter()
    trainer.train()
    times["train_seconds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    metrics = trainer.evaluate()
    times["eval_seconds"] = time.perf_counter() - tick
    model.save_pretrained(Path(config.output_dir) / "adapter")
    times["total_seconds"] = time.perf_counter() - start
    record = {"accuracy": metrics["eval_accuracy"], "train_examples": len(train_set),
              "trainable_parameters": model.get_nb_trainable_parameters()[0],
              "eval_examples": len(eval_set), **times}
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "baseline.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
