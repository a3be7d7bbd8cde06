"""The summarization task family: this package's building blocks behind the TaskFamily interface.

Run-config keys: ``data.task`` (``summarization`` with ``data.train_file``/``data.eval_file``, or
one of the datasets of :data:`HUB_TASKS`: ``xsum``, ``cnn_dailymail``, ``samsum``),
``data.text_column`` / ``data.target_column`` (default: the task's own columns, ``document`` /
``summary`` for ``summarization``), ``data.hub_dataset``, ``data.max_length`` (source tokens),
``data.max_target_length`` (default 64); the family's own keys are :class:`SummarizationSettings`
(``task_options:``: decoding, label smoothing, source prefix, id column).

Where the train and validation splits come from, in order (local files always win; :mod:`.sources`):

1. ``data.train_file`` / ``data.eval_file`` (JSONL/CSV/TSV);
2. for a task of :data:`HUB_TASKS`, ``<root>/<task>/{train,validation}.jsonl`` (or those files in
   ``<root>`` itself) under the local data root ``data.dir`` / ``$RANKADAPT_DATA_DIR``, when the
   train file is there;
3. the Hugging Face hub: the task's dataset (``xsum``; ``cnn_dailymail`` config ``3.0.0``;
   ``samsum``), or ``data.hub_dataset`` (``id`` or ``id:config``; for ``data.task=summarization``
   it is the only way to the hub), splits ``train`` and ``validation``; needs the ``datasets``
   package and a network (:mod:`rankadapt.tasks.hub`). Hub rows go through the same checks as
   file rows (text cells, no empty source or target).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from ...core.errors import ConfigError, ModelError
from ...core.models import resolve_model_path
from ...core.progress import phase
from ..base import TaskFamily
from .architectures import load_seq2seq_model, new_module_names, role_patterns, start_token_to_strip
from .data import LABEL_PAD_ID, EncodedPairs, Seq2SeqCollator, SummaryPair, encode_pairs
from .generation import GenerationSettings, generate_summaries, per_example_loss, seq2seq_loss, teacher_forced_logits
from .rouge import ROUGE_KEYS, rouge_scores, write_predictions
from .sources import DEFAULT_MAX_TARGET_LENGTH, HUB_TASKS, read_task_pairs


class SummarizationSettings(GenerationSettings):
    """The summarization family's keys (``task_options:``): loss, source prefix, ids, decoding.
    Columns and lengths are ``data.`` keys (data.text_column, data.target_column, data.max_length,
    data.max_target_length)."""

    id_column: str | None = "id"
    """Column holding an example id, copied to predictions.jsonl when present (optional)."""
    source_prefix: str = ""
    """Text put before every source (T5 checkpoints expect ``"summarize: "``)."""
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    """ε of the label-smoothed cross-entropy (the BART recipes: 0.1)."""


@dataclass(frozen=True)
class SummarizationTask:
    """The facts of a summarization task (rankadapt.tasks.base.TaskSpec)."""

    name: str
    metrics: tuple[str, ...] = ROUGE_KEYS
    main_metric: str = "rougeL"


@dataclass
class SummarizationData:
    """rankadapt.tasks.base.TaskData: the spec and the splits as :class:`SummaryPair` lists."""

    spec: SummarizationTask
    train: list[SummaryPair]
    eval_splits: dict[str, list[SummaryPair]]
    source: str


class SummarizationFamily(TaskFamily):
    name: ClassVar[str] = "summarization"
    tasks: ClassVar[tuple[str, ...]] = ("summarization", *HUB_TASKS)
    peft_task_type: ClassVar[str] = "SEQ_2_SEQ_LM"
    Settings: ClassVar[type[SummarizationSettings]] = SummarizationSettings

    # ---- reading ---------------------------------------------------------------------------------
    def load_data(self, config) -> SummarizationData:
        """Train and validation pairs from local files, else the hub (:mod:`.sources`), subset by the limits."""
        pairs, source = read_task_pairs(config.data, _options(config).id_column)
        return SummarizationData(SummarizationTask(config.data.task), pairs["train"], {"validation": pairs["validation"]},
                                 source=source)

    def check_config(self, config, spec) -> None:
        super().check_config(config, spec)
        if config.method.name == "head":
            raise ConfigError("method.name=head trains the classification head alone, and summarization models have "
                              "no classification head; use lora (or another adapter method) or full")

    # ---- model ----------------------------------------------------------------------------------
    def load_processor(self, model_name: str):
        from transformers import AutoTokenizer

        path = resolve_model_path(model_name)
        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelError(f"cannot load the tokenizer of {model_name!r} from {path} ({first}); summarization "
                             "needs a text model: set model.name to a seq2seq checkpoint (BART, T5 ...) or an "
                             "encoder for a bert2bert, e.g. sentence-transformers/all-MiniLM-L6-v2") from None

    def load_model(self, config, spec: SummarizationTask, processor) -> torch.nn.Module:
        return load_seq2seq_model(config.model.name, processor)

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        """Modules trained in full and saved with the adapter. A native seq2seq checkpoint: none (the
        LM head is tied to the frozen embeddings, as in the source systems). A warm-started
        EncoderDecoderModel (bert2bert): the weights the warm start creates at random, every
        cross-attention block and the decoder's LM-head transform, so that nothing random stays frozen
        (and an export reproduces the model without the random seed of its start)."""
        return new_module_names(model)

    def role_patterns(self, model: torch.nn.Module) -> dict[str, str]:
        return role_patterns(model)

    # ---- encoding and batching ------------------------------------------------------------------
    def encode(self, split: str, examples: Sequence[SummaryPair], processor, config, spec, show_progress: bool = False
               ) -> EncodedPairs:
        options = _options(config)
        with phase(f"tokenising {split}", show_progress and config.train.progress):
            return encode_pairs(examples, processor, config.data.max_length, max_target_length(config),
                                source_prefix=options.source_prefix,
                                decoder_start_token_id=start_token_to_strip(config.model.name, processor))

    def collator(self, processor, config) -> Seq2SeqCollator:
        return Seq2SeqCollator(processor.pad_token_id)

    # ---- training loss --------------------------------------------------------------------------
    def objective(self, config, model: torch.nn.Module) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
        epsilon = _options(config).label_smoothing
        return lambda model, batch: seq2seq_loss(model, batch, epsilon)

    # ---- evaluation -----------------------------------------------------------------------------
    def eval_step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], spec: SummarizationTask,
                  config) -> dict[str, torch.Tensor]:
        """Generated ids (padded with the pad id), labels, per-example loss and the example index.
        Call under ``merged_for_evaluation`` and ``torch.no_grad`` (the runtime does)."""
        options = _options(config)
        core = getattr(model, "module", model)  # generate() lives on the model, not on a DDP wrapper
        pad = core.config.pad_token_id if core.config.pad_token_id is not None else 0
        generated = core.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  pad_token_id=pad, **options.generate_kwargs())
        loss = per_example_loss(teacher_forced_logits(model, batch), batch["labels"])
        return {"generated": generated, "labels": batch["labels"], "loss": loss, "index": batch["index"]}

    def eval_padding(self, processor) -> dict[str, int]:
        return {"generated": processor.pad_token_id, "labels": LABEL_PAD_ID}

    def compute_metrics(self, spec: SummarizationTask, outputs: dict[str, list[torch.Tensor]], processor,
                        examples: Sequence[SummaryPair] | None = None) -> dict[str, float]:
        """ROUGE ×100 of the decoded generations against the split's raw summaries (decoding the token
        labels instead would lose case and spacing and keep the max_target_length cut), the mean eval
        loss, and the mean generated length in tokens."""
        references = [pair.target for pair in examples] if examples is not None else None
        predictions, gold = decode_outputs(outputs, processor, references)
        metrics = rouge_scores(predictions, gold)
        metrics["loss"] = float(torch.cat(outputs["loss"]).float().mean())
        pad = processor.pad_token_id
        # Tokens generated after the decoder start token, padding excluded (transformers' gen_len).
        metrics["gen_len"] = float(np.mean([sum(t != pad for t in row[1:])
                                            for batch in outputs["generated"] for row in batch.tolist()]))
        return metrics

    def write_predictions(self, directory: Path, split: str, spec, outputs, processor, examples) -> Path:
        """``predictions.jsonl`` (``predictions-<split>.jsonl`` beside a second split): id, prediction, reference."""
        predictions, references = decode_outputs(outputs, processor, [pair.target for pair in examples])
        order = sorted(torch.cat(outputs["index"]).tolist())
        ids = [examples[i].id for i in order]
        name = "predictions.jsonl" if split == "validation" else f"predictions-{split}.jsonl"
        return write_predictions(Path(directory) / name, predictions, references,
                                 ids if any(i is not None for i in ids) else None)

    # ---- predict and export ---------------------------------------------------------------------
    def predict(self, model: torch.nn.Module, processor, inputs: list[str], meta: dict[str, Any],
                show_progress: bool = False) -> list[dict[str, Any]]:
        generation = GenerationSettings(**meta.get("generation", {}))
        summaries = generate_summaries(model, processor, inputs, generation, meta.get("max_length", 512),
                                       source_prefix=meta.get("source_prefix", ""))
        return [{"text": text, "summary": summary} for text, summary in zip(inputs, summaries, strict=True)]

    def describe_prediction(self, meta: dict[str, Any]) -> str:
        generation = GenerationSettings(**meta.get("generation", {}))
        return (f"task {meta.get('task')}: documents truncated to {meta.get('max_length')} tokens, "
                f"{generation.num_beams} beams, at most {generation.max_new_tokens} new tokens")

    def export_metadata(self, spec: SummarizationTask, config) -> dict[str, Any]:
        options = _options(config)
        return {"task": spec.name, "family": self.name, "max_length": config.data.max_length,
                "max_target_length": max_target_length(config), "source_prefix": options.source_prefix,
                "generation": GenerationSettings(**options.model_dump(
                    include=set(GenerationSettings.model_fields))).model_dump()}

    def spec_from_metadata(self, meta: dict[str, Any], config) -> SummarizationTask:
        return SummarizationTask(meta.get("task") or config.data.task)

    def metadata_settings(self, meta: dict[str, Any]) -> dict[str, Any]:
        data = {k: meta[k] for k in ("task", "max_length", "max_target_length") if meta.get(k) is not None}
        options = dict(meta.get("generation") or {})
        if meta.get("source_prefix"):
            options["source_prefix"] = meta["source_prefix"]
        return {"data": data, "task_options": options}


def decode_outputs(outputs: dict[str, list[torch.Tensor]], processor, references: Sequence[str] | None = None
                   ) -> tuple[list[str], list[str]]:
    """(predictions, references) in example-index order from gathered eval outputs."""
    index = torch.cat(outputs["index"]).tolist()
    order = sorted(range(len(index)), key=lambda i: index[i])
    generated = [row for batch in outputs["generated"] for row in batch.tolist()]
    predictions = [t.strip() for t in processor.batch_decode([generated[i] for i in order], skip_special_tokens=True)]
    if references is not None:
        return predictions, [references[index[i]] for i in order]
    labels = [[t if t != LABEL_PAD_ID else processor.pad_token_id for t in row]
              for batch in outputs["labels"] for row in batch.tolist()]
    decoded = processor.batch_decode([labels[i] for i in order], skip_special_tokens=True)
    return predictions, [t.strip() for t in decoded]


def _options(config) -> SummarizationSettings:
    return getattr(config, "task_options", None) or SummarizationSettings()


def max_target_length(config) -> int:
    return config.data.max_target_length or DEFAULT_MAX_TARGET_LENGTH


