"""Summarization through the command line (``data.task=summarization``) on a tiny BART and a tiny
bert2bert: every method trains, the final evaluation writes ROUGE to results.json and predictions.jsonl,
exports load in stock PEFT (``SEQ_2_SEQ_LM``) with the same greedy tokens, resume is exact, and
``predict`` prints summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from helpers import EIGHT_STEP_METHOD_ARGS, assert_resume_equals_straight_run, make_model_dir, make_tokenizer, sentiment_rows
from seq2seq_fixtures import one_thread  # noqa: F401  (fixture)
from test_cli import invoke, train_ok

pytestmark = pytest.mark.usefixtures("one_thread")

SUMMARY_WORDS = {"good", "great", "fine", "nice", "superb", "lovely", "bad", "awful", "poor", "sad", "boring", "weak"}
METHOD_ARGS = {
    "full": ["train.learning_rate=1e-3"],
    "lora": ["method.lora_r=4", "method.lora_module=[q_proj,v_proj,fc1]"],
    **EIGHT_STEP_METHOD_ARGS,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny BART (BERT word pieces: [PAD]=0 pads, [CLS]=2 starts, [SEP]=3 ends), a tiny BERT for
    bert2bert, and train / validation JSONL files whose summaries are the sentiment words of the text."""
    tmp = tmp_path_factory.mktemp("seq2seq")
    tokenizer = make_tokenizer(tmp / "bart")
    torch.manual_seed(0)
    config = transformers.BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=2,
                                     eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None)
    transformers.BartForConditionalGeneration(config).save_pretrained(tmp / "bart")
    tokenizer.save_pretrained(tmp / "bart")
    files = {}
    for split, (n, seed) in {"train": (32, 1), "validation": (6, 2)}.items():
        rows = [{"id": f"{split}-{i}", "document": text,
                 "summary": " ".join(w for w in text.split() if w in SUMMARY_WORDS)}
                for i, (text, _) in enumerate(sentiment_rows(n, seed=seed))]
        files[split] = tmp / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"bart": tmp / "bart", "bert": make_model_dir(tmp / "bert"), "tmp": tmp, **files}


def seq2seq_args(corpus: dict[str, Path], run_dir: Path, method: str = "lora", model: str = "bart") -> list[str]:
    return [f"model.name={corpus[model]}", "data.task=summarization", f"data.train_file={corpus['train']}",
            f"data.eval_file={corpus['validation']}", "data.max_length=16", "data.max_target_length=8",
            f"data.cache_dir={corpus['tmp'] / 'cache'}", f"method.name={method}", "task_options.num_beams=1",
            "task_options.max_new_tokens=4", "task_options.min_new_tokens=1", "train.batch_size=8",
            "train.max_steps=8", "train.eval_strategy=steps", "train.eval_steps=4", "train.learning_rate=1e-2",
            "train.progress=false", "train.logging_steps=1", "train.device=cpu", f"output_dir={run_dir}",
            *METHOD_ARGS[method]]


def _greedy(model, tokenizer, texts: list[str]) -> list[list[int]]:
    batch = tokenizer(texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=1, max_new_tokens=4, min_new_tokens=1, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out.tolist()


@pytest.mark.parametrize("model", ["bart", "bert2bert"])
def test_lora_summarization_writes_the_contract_and_loads_in_stock_peft(corpus, tmp_path, model):
    import peft

    from rankadapt.recipes.trained import load_trained, run_config_for

    run_dir = tmp_path / "run"
    train_ok(*seq2seq_args(corpus, run_dir, model="bart" if model == "bart" else "bert"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["family"] == "summarization"
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "gen_len"} == set(results["final_metrics"])
    assert results["metric_for_best"] == "rougeL"
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    references = [json.loads(line) for line in corpus["validation"].read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["id"] for r in references]
    assert [p["reference"] for p in predictions] == [r["summary"] for r in references]
    adapter = run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert json.loads((adapter / "rankadapt.json").read_text())["step"] == results["best_step"]

    ours = load_trained(run_dir, run_config_for(run_dir))
    if model == "bart":
        assert config["modules_to_save"] == []
        assert {name.rsplit(".", 1)[-1] for name in config["target_modules"]} == {"q_proj", "v_proj", "fc1"}
        assert any(".encoder_attn." in name for name in config["target_modules"]), "cross-attention adapted"
        base = transformers.AutoModelForSeq2SeqLM.from_pretrained(corpus["bart"])
    else:
        # bert2bert: the weights the warm start draws at random are trained in full and saved with the adapter
        assert config["modules_to_save"] and all("crossattention" in m or "cls.predictions.transform" in m
                                                 for m in config["modules_to_save"])
        base = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(str(corpus["bert"]), str(corpus["bert"]))
        base.config.decoder_start_token_id = ours.model.config.decoder_start_token_id
        base.config.eos_token_id, base.config.pad_token_id = ours.model.config.eos_token_id, 0
        base.generation_config = ours.model.generation_config
    stock = peft.PeftModel.from_pretrained(base, adapter).eval()
    texts = ["the movie was good and nice", "a sad and boring plot"]
    assert _greedy(stock, ours.processor, texts) == _greedy(ours.model, ours.processor, texts)

    result = invoke("predict", run_dir, *texts)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["text"] for r in records] == texts and all(isinstance(r["summary"], str) for r in records)
    assert "documents truncated to 16 tokens, 1 beams" in result.stderr
    evaluated = json.loads(invoke("eval", run_dir).stdout)
    # adapter/ holds the best model (train.export=best), so eval on it gives the best evaluation's figures
    assert evaluated["metrics"]["rougeL"] == pytest.approx(results["best_metrics"]["rougeL"])


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_every_method_trains_and_resumes_exactly_on_summarization(method, corpus, tmp_path, monkeypatch):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert_resume_equals_straight_run(lambda run_dir: seq2seq_args(corpus, run_dir, method), straight, interrupted,
                                      monkeypatch, stop_at=6)
    results = json.loads((straight / "results.json").read_text())
    assert results["method"] == method and results["steps"] == 8
    assert (interrupted / "predictions.jsonl").read_text() == (straight / "predictions.jsonl").read_text()


def test_summarization_settings_errors_are_clear(corpus, tmp_path):
    args = seq2seq_args(corpus, tmp_path / "run", "full")
    for extra, message in [(["method.name=head"], "summarization models have no classification head"),
                           (["train.aug_type=span_cutoff"], "is for text classification"),
                           (["data.target_column=abstract"], "no target column 'abstract'"),
                           (["task_options.num_beam=2"], "num_beam")]:
        result = invoke("train", *args, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_budget_sets_the_ranks_on_summarization(corpus, tmp_path):
    # q_proj and v_proj of the encoder's and the decoder's self-attention and of the cross-attention:
    # 2 layers x 3 attention blocks x 2 maps = 12 matrices of 32 x 32, one rank of all of them costs 768
    args = [a for a in seq2seq_args(corpus, tmp_path / "run", "lora") if not a.startswith("method.lora_")]
    train_ok(*args, "method.lora_module=[q_proj,v_proj]", "method.budget=1536")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["rank_pattern"]) == 12 and set(results["rank_pattern"].values()) == {2}
    assert results["budget"] == results["adapter_parameters"] == 1536
