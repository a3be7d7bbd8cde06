"""Summarization data: reading source/target files, bad input, tokenising with truncation counts,
batching, and the real XSum files."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from rankadapt.core.errors import DataError
from rankadapt.tasks.summarization import PairColumns, Seq2SeqCollator, SummaryPair, encode_pairs, read_pairs
from rankadapt.tasks.summarization.data import length_sorted_batches, truncate
from rankadapt.core.config import DataConfig, RunConfig
from rankadapt.tasks.summarization.family import SummarizationFamily

from conftest import SHARED_DATA
from seq2seq_fixtures import tiny_tokenizer

ROWS = [{"id": "7", "document": "the movie was good.\nthe actor was great.", "summary": "a good movie."},
        {"id": "8", "document": "the plot was bad", "summary": "a bad plot, a sad story"}]
EXPECTED = [SummaryPair("the movie was good.\nthe actor was great.", "a good movie.", "7"),
            SummaryPair("the plot was bad", "a bad plot, a sad story", "8")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_delimited(path, rows, delimiter):
    with path.open("w", newline="") as f:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter, quoting=quoting, escapechar="\\")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_jsonl_and_csv_give_the_same_pairs_and_ids_are_optional(tmp_path):
    assert read_pairs(write_jsonl(tmp_path / "a.jsonl", ROWS)) == EXPECTED
    assert read_pairs(write_delimited(tmp_path / "a.csv", ROWS, ",")) == EXPECTED
    one_line = [{**row, "document": row["document"].replace("\n", " ")} for row in ROWS]
    assert [p.source for p in read_pairs(write_delimited(tmp_path / "a.tsv", one_line, "\t"))] == \
        [row["document"] for row in one_line]
    without_id = read_pairs(write_jsonl(tmp_path / "b.jsonl", [{"text": "x y", "highlights": "x"}]),
                            PairColumns(source="text", target="highlights"))
    assert without_id == [SummaryPair("x y", "x", None)]


@pytest.mark.parametrize("rows, message", [
    ([{"document": "a text"}], "no target column 'summary' (set data.target_column); found columns: 'document'"),
    ([{"summary": "s"}], "no source column 'document' (set data.text_column)"),
    ([{"document": "a", "summary": "s"}, {"document": "b", "summary": "  "}],
     "1 empty target text(s) in column 'summary' (first at record 2)"),
    ([{"document": "a", "summary": 42}], "record 1: column 'summary' holds a int (42), not text"),
    ([{"document": None, "summary": "s"}], "record 1: column 'document' holds null, not text"),
    ([{"document": ["a", "b"], "summary": "s"}], "column 'document' holds a list"),
    ([{"document": "a", "summary": "s"}, {"document": "b"}], "record 2: no value for column 'summary'"),
    ([["a", "s"]], "record 1: expected a JSON object"),
])
def test_bad_rows_get_a_clear_error(tmp_path, rows, message):
    with pytest.raises(DataError) as err:
        read_pairs(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert message in str(err.value)


def test_bad_files_get_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="missing; check data.train_file"):
        read_pairs(tmp_path / "absent.jsonl")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown extension '.txt'"):
        read_pairs(tmp_path / "a.txt")
    (tmp_path / "bad.csv").write_text("document,summary\na,b,c\n")
    with pytest.raises(DataError, match="line 2: 3 fields where the header has 2"):
        read_pairs(tmp_path / "bad.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no data rows"):
        read_pairs(tmp_path / "empty.jsonl")


def test_truncation_keeps_the_closing_special_token():
    assert truncate([2, 10, 11, 12, 3], 4, {2, 3}) == [2, 10, 11, 3]
    assert truncate([10, 11, 12], 2, {2, 3}) == [10, 11]
    assert truncate([2, 10, 3], 5, {2, 3}) == [2, 10, 3]


def test_encoding_counts_and_reports_truncated_targets(tmp_path, caplog):
    tokenizer = tiny_tokenizer(tmp_path)
    with caplog.at_level(logging.WARNING):
        encoded = encode_pairs(EXPECTED, tokenizer, max_length=5, max_target_length=6)
    # "a bad plot, a sad story" is 7 tokens + [CLS] [SEP]; "a good movie." fits in 6 with its specials.
    assert encoded.truncated_targets == 1 and encoded.truncated_sources == 2
    assert [len(ids) for ids in encoded.target_ids] == [6, 6]
    assert all(ids[-1] == tokenizer.sep_token_id for ids in encoded.target_ids + encoded.source_ids)
    assert "1 of 2 targets to data.max_target_length=6" in caplog.text
    assert encoded.lengths == [5, 5] and encoded[1]["index"] == 1


def test_the_decoder_start_token_is_removed_from_targets_only(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    plain = encode_pairs(EXPECTED, tokenizer, 32, 32)
    stripped = encode_pairs(EXPECTED, tokenizer, 32, 32, decoder_start_token_id=tokenizer.cls_token_id)
    assert [ids[0] for ids in plain.target_ids] == [tokenizer.cls_token_id] * 2
    assert stripped.target_ids == [ids[1:] for ids in plain.target_ids]
    assert stripped.source_ids == plain.source_ids


def test_collator_pads_sources_with_pad_and_labels_with_minus_100():
    items = [{"input_ids": [5, 6, 7], "labels": [8], "index": 4}, {"input_ids": [5], "labels": [8, 9, 3], "index": 0}]
    batch = Seq2SeqCollator(pad_token_id=1)(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[8, -100, -100], [8, 9, 3]]
    assert batch["index"].tolist() == [4, 0]
    assert Seq2SeqCollator(1, pad_to_multiple_of=4)(items)["input_ids"].shape == torch.Size([2, 4])


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [3, 9, 1, 7, 7, 2, 5]
    batches = length_sorted_batches(lengths, batch_size=3)
    assert batches == [[1, 3, 4], [6, 0, 5], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches(lengths, 0)


def data_config(**values) -> RunConfig:
    """A run config of a summarization task with these data keys (the family reads config.data)."""
    return RunConfig(data=DataConfig(**{"task": "summarization", **values}))


def test_family_reads_the_users_files_with_seeded_limits(tmp_path):
    rows = [{"id": str(i), "document": f"text {i}", "summary": f"sum {i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    family = SummarizationFamily()
    data = family.load_data(data_config(train_file=str(path), eval_file=str(path), train_limit=4))
    again = family.load_data(data_config(train_file=str(path), eval_file=str(path), train_limit=4))
    assert len(data.train) == 4 and data.train == again.train
    assert [p.id for p in data.train] == sorted((p.id for p in data.train), key=int)
    assert len(data.eval_splits["validation"]) == 10 and data.spec.metrics[-1] == "rougeLsum"
    with pytest.raises(DataError, match="data.task=summarization needs data.train_file and data.eval_file"):
        family.load_data(data_config())


@pytest.mark.skipif(not (SHARED_DATA / "xsum" / "train.jsonl").is_file(), reason="shared XSum files absent")
def test_the_real_xsum_files_load():
    data = SummarizationFamily().load_data(data_config(task="xsum", dir=str(SHARED_DATA)))
    assert len(data.train) == 800 and len(data.eval_splits["validation"]) == 200
    everything = data.train + data.eval_splits["validation"]
    assert all(p.source.strip() and p.target.strip() and p.id for p in everything)
    assert len({p.id for p in everything}) == 1000
