"""The label-smoothed loss by hand, generation settings and batching, model loading, and the
summarization family end to end on a tiny bert2bert warm-started from a saved tiny BERT."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

from rankadapt.core.config import DataConfig, MethodConfig, ModelConfig, RunConfig
from rankadapt.core.errors import ModelError
from rankadapt.methods.adapting import prepare_model
from rankadapt.tasks.summarization import (GenerationSettings, SummarizationFamily, SummarizationSettings,
                                           generate_ids, label_smoothed_loss, load_seq2seq_model, target_patterns)
from rankadapt.tasks.summarization.family import decode_outputs
from rankadapt.tasks.summarization.generation import per_example_loss

from helpers import make_model_dir, sentiment_rows
from seq2seq_fixtures import one_thread, tiny_seq2seq  # noqa: F401 (the fixture, used by name)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_label_smoothed_loss_by_hand():
    # Token 1: logits (0, 1, 2), reference 2. With Z = 1 + e + e², -log p(2) = log Z - 2 and the mean
    # of -log p(v) over the 3 tokens is log Z - 1, so ℓ = (1-ε)(log Z - 2) + ε(log Z - 1) = log Z - 2 + ε.
    # Token 2: uniform logits, reference 0: ℓ = log 3 whatever ε. Token 3 is padding (-100), not counted.
    logits = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [5.0, -1.0, 0.0]]])
    labels = torch.tensor([[2, 0, -100]])
    log_z = math.log(1 + math.e + math.e**2)
    for epsilon in (0.0, 0.1, 0.5):
        expected = ((log_z - 2 + epsilon) + math.log(3)) / 2
        assert label_smoothed_loss(logits, labels, epsilon).item() == pytest.approx(expected, rel=1e-6)
    per_example = per_example_loss(logits, labels)
    assert per_example.tolist() == pytest.approx([((log_z - 2) + math.log(3)) / 2], rel=1e-6)


def test_generation_settings_defaults_and_validation():
    settings = GenerationSettings()
    assert (settings.num_beams, settings.length_penalty, settings.no_repeat_ngram_size) == (6, 1.0, 3)
    assert settings.generate_kwargs()["use_cache"] is True
    with pytest.raises(ValueError, match="min_new_tokens=9 exceeds max_new_tokens=4"):
        GenerationSettings(min_new_tokens=9, max_new_tokens=4)
    with pytest.raises(ValueError):
        GenerationSettings(num_beams=0)


SOURCES = [[7, 8, 9, 10, 11, 12, 13, 2], [20, 21, 2], [30, 31, 32, 33, 2], [40, 2]]


@pytest.mark.parametrize("beams", [1, 3])
def test_length_batched_generation_equals_one_by_one(beams):
    model = tiny_seq2seq("bart")
    settings = GenerationSettings(num_beams=beams, max_new_tokens=5, min_new_tokens=2, batch_size=3)
    batched = generate_ids(model, SOURCES, model.config.pad_token_id, settings)
    single = generate_ids(model, SOURCES, model.config.pad_token_id, settings.model_copy(update={"batch_size": 1}))
    assert batched == single
    assert all(3 <= len(ids) <= 6 and ids[0] == model.config.decoder_start_token_id for ids in batched)


def test_settings_reach_generate():
    model = tiny_seq2seq("t5")
    settings = GenerationSettings(num_beams=1, max_new_tokens=8, min_new_tokens=8, no_repeat_ngram_size=1)
    for ids in generate_ids(model, SOURCES, model.config.pad_token_id, settings):
        assert len(ids) == 9 and len(set(ids[1:])) == 8  # 8 new tokens, none repeated


def test_loading_native_and_warm_started_models(tmp_path):
    bart_dir = tmp_path / "bart"
    tiny_seq2seq("bart").save_pretrained(bart_dir)
    tokenizer = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])})
    assert isinstance(load_seq2seq_model(str(bart_dir), tokenizer), transformers.BartForConditionalGeneration)
    with pytest.raises(ModelError, match="cannot load .* as a sequence-to-sequence model"):
        load_seq2seq_model(str(tmp_path / "absent-model"), tokenizer)


def run_config(model_dir, tmp_path, **options):
    rows = [{"id": f"x{i}", "document": text, "summary": " ".join(w for w in text.split() if w in SUMMARY_WORDS)}
            for i, (text, _) in enumerate(sentiment_rows(24, seed=1))]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    target_length = options.pop("max_target_length", None)
    data = DataConfig(task="summarization", train_file=str(path), eval_file=str(path), eval_limit=8, split_seed=1,
                      max_length=16, max_target_length=target_length)
    return RunConfig(model=ModelConfig(name=str(model_dir)), data=data, task_options=SummarizationSettings(**options))


SUMMARY_WORDS = {"good", "great", "fine", "nice", "superb", "lovely", "bad", "awful", "poor", "sad", "boring", "weak"}


def test_family_end_to_end_on_a_warm_started_bert2bert(tmp_path):
    model_dir = make_model_dir(tmp_path / "tiny-bert")
    config = run_config(model_dir, tmp_path, num_beams=2, max_new_tokens=4, min_new_tokens=1, max_target_length=8)
    family = SummarizationFamily()
    data = family.load_data(config)
    tokenizer = family.load_processor(config.model.name)
    model = family.load_model(config, data.spec, tokenizer)
    assert isinstance(model, transformers.EncoderDecoderModel)
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.config.eos_token_id == tokenizer.sep_token_id
    encoded = family.encode("train", data.train, tokenizer, config, data.spec, False)
    assert all(ids[0] != tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in encoded.target_ids)

    adapted = prepare_model(model, MethodConfig(name="lora", lora_r=4, target_modules=target_patterns(model),
                                                modules_to_save=family.head_modules(model)))
    collate, objective = family.collator(tokenizer, config), family.objective(config, model)
    batch = collate([encoded[i] for i in range(8)])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(6):
        loss = objective(model.train(), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    evaluation = family.encode("validation", data.eval_splits["validation"], tokenizer, config, data.spec, False)
    batches = [collate([evaluation[i] for i in idx]) for idx in ([5, 6, 7], [0, 1, 2, 3, 4])]  # out of order
    with adapted.merged_for_evaluation(), torch.no_grad():
        outputs = [family.eval_step(model.eval(), b, data.spec, config) for b in batches]
    gathered = {key: [out[key] for out in outputs] for key in outputs[0]}
    references = [p.target for p in data.eval_splits["validation"]]
    predictions, ordered_references = decode_outputs(gathered, tokenizer, references)
    assert ordered_references == references and len(predictions) == 8
    metrics = family.compute_metrics(data.spec, gathered, tokenizer, data.eval_splits["validation"])
    assert set(data.spec.metrics) <= set(metrics) and all(0.0 <= metrics[k] <= 100.0 for k in data.spec.metrics)
    assert metrics["loss"] > 0 and 1 <= metrics["gen_len"] <= 4

    settings = json.loads(json.dumps(family.export_metadata(data.spec, config)))
    assert settings["generation"]["num_beams"] == 2 and settings["max_target_length"] == 8
    records = family.predict(model.eval(), tokenizer, ["the movie was good", "a sad plot"], settings)
    assert [r["text"] for r in records] == ["the movie was good", "a sad plot"]
    assert all(isinstance(r["summary"], str) for r in records)
