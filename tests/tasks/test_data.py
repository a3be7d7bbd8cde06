"""Data loading (real GLUE/IMDB files, synthetic layouts, the user's files, the hub), subsets,
error messages, tokenisation with its cache, padding and length-grouped sampling."""

from __future__ import annotations

import csv
import json
import statistics
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch
import transformers

from rankadapt.core.config import DATA_DIR_ENV, DataConfig
from rankadapt.tasks.text_classification import (TASKS, EncodedDataset, Examples, PaddingCollator, encode, get_task,
                                                 load_task_data, read_table, resolve_data_dir, sample_indices)
from rankadapt.runtime.sampling import LengthGroupedSampler
from rankadapt.core.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_real_data = pytest.mark.skipif(not (SHARED_DATA / "glue").is_dir(),
                                     reason=f"real data not found at {SHARED_DATA} (see shared/data/README.md)")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    """Tests choose their data root explicitly; a developer's $RANKADAPT_DATA_DIR must not leak in."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def cfg(**kwargs) -> DataConfig:
    return DataConfig(**kwargs)


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ==================================================================================================
# Real data
# ==================================================================================================

REAL_GLUE = {  # task: (train rows, dev rows, train label counts by id)
    "sst2": (67349, 872, {0: 29780, 1: 37569}),
    "cola": (8551, 1043, {0: 2528, 1: 6023}),
    "mrpc": (3668, 408, {0: 1194, 1: 2474}),
    "rte": (2490, 277, {0: 1249, 1: 1241}),
}


@needs_real_data
@pytest.mark.parametrize("task", sorted(REAL_GLUE))
def test_real_glue(task):
    n_train, n_dev, counts = REAL_GLUE[task]
    data = load_task_data(cfg(task=task, dir=str(SHARED_DATA)))
    assert len(data.train) == n_train and len(data.eval_splits["validation"]) == n_dev
    assert dict(Counter(data.train.labels)) == counts
    assert set(data.eval_splits["validation"].labels) == {0, 1}
    assert (data.train.text_pair is not None) == data.task.is_pair
    assert data.source == f"local: {SHARED_DATA / 'glue' / {'sst2': 'SST-2', 'cola': 'CoLA', 'mrpc': 'MRPC', 'rte': 'RTE'}[task]}"
    assert all(isinstance(t, str) and t for t in data.train.text[:100])


@needs_real_data
def test_real_mrpc_columns_and_bom():
    data = load_task_data(cfg(task="mrpc", dir=str(SHARED_DATA)))
    assert data.train.text[0].startswith("Amrozi accused his brother")
    assert data.train.text_pair[0].startswith("Referring to him as only")
    assert data.train.labels[0] == 1


@needs_real_data
def test_real_rte_labels_and_glue_dir_as_root(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(SHARED_DATA / "glue"))
    data = load_task_data(cfg(task="rte"))
    first = data.train
    assert first.text[0] == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert first.labels[0] == data.task.label_names.index("not_entailment") == 1


@needs_real_data
def test_real_imdb():
    data = load_task_data(cfg(task="imdb", dir=str(SHARED_DATA)))
    train, val = data.train, data.eval_splits["validation"]
    assert len(train) + len(val) == 25000 and len(val) == 2500
    assert Counter(train.labels) == {0: 11250, 1: 11250} and Counter(val.labels) == {0: 1250, 1: 1250}
    assert not any("<br" in t for t in train.text[:2000])
    again = load_task_data(cfg(task="imdb", dir=str(SHARED_DATA / "imdb")))
    assert again.eval_splits["validation"].text == val.text


# ==================================================================================================
# Synthetic GLUE layouts
# ==================================================================================================

def test_qqp_layout(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(tmp_path / "glue/QQP/train.tsv", header, [[i, 1, 2, f'How do "I" {i}?', f"q{i}", i % 2] for i in range(6)])
    write_tsv(tmp_path / "glue/QQP/dev.tsv", header, [[9, 1, 2, "a", "b", 1]])
    data = load_task_data(cfg(task="qqp", dir=str(tmp_path)))
    assert data.train.text[1] == 'How do "I" 1?' and data.train.text_pair[1] == "q1"
    assert data.train.labels == [0, 1, 0, 1, 0, 1] and data.eval_splits["validation"].labels == [1]
    assert data.task.metrics == ("accuracy", "f1")


def test_stsb_layout_is_regression(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    rows = [[i, "main-news", "f", "2012", i, "none", "none", f"s{i}", f"t{i}", f"{i * 0.5:.3f}"] for i in range(4)]
    write_tsv(tmp_path / "glue/STS-B/train.tsv", header, rows)
    write_tsv(tmp_path / "glue/STS-B/dev.tsv", header, rows[:2])
    data = load_task_data(cfg(task="stsb", dir=str(tmp_path)))
    assert data.task.is_regression and data.task.num_labels == 1
    assert data.train.labels == [0.0, 0.5, 1.0, 1.5] and data.train.text_pair == ["t0", "t1", "t2", "t3"]


def _mnli_rows(n: int, extra_labels: int) -> tuple[list[str], list[list]]:
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    header += [f"label{i + 1}" for i in range(extra_labels)] + ["gold_label"]
    golds = ["neutral", "contradiction", "entailment"]
    rows = [[i, i, f"{i}n", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", f"premise {i}", f"hypo {i}"]
            + [golds[i % 3]] * extra_labels + [golds[i % 3]] for i in range(n)]
    return header, rows


def test_mnli_layout_has_matched_and_mismatched(tmp_path):
    root = tmp_path / "glue"  # the glue directory itself as the root
    write_tsv(root / "MNLI/train.tsv", *_mnli_rows(6, 1))
    write_tsv(root / "MNLI/dev_matched.tsv", *_mnli_rows(3, 5))
    write_tsv(root / "MNLI/dev_mismatched.tsv", *_mnli_rows(4, 5))
    data = load_task_data(cfg(task="mnli", dir=str(root)))
    assert set(data.eval_splits) == {"validation_matched", "validation_mismatched"}
    assert len(data.eval_splits["validation_mismatched"]) == 4
    assert data.train.text[0] == "premise 0" and data.train.text_pair[0] == "hypo 0"
    names = data.task.label_names
    assert names == ("contradiction", "entailment", "neutral")
    assert data.train.labels[:3] == [names.index("neutral"), names.index("contradiction"), names.index("entailment")]


@pytest.mark.parametrize("task, subdir, header, labels", [
    ("qnli", "QNLI", ["index", "question", "sentence", "label"], ["entailment", "not_entailment"]),
    ("wnli", "WNLI", ["index", "sentence1", "sentence2", "label"], ["0", "1"]),
])
def test_qnli_wnli_layouts(tmp_path, task, subdir, header, labels):
    rows = [[i, f"first {i}", f"second {i}", labels[i % 2]] for i in range(4)]
    write_tsv(tmp_path / "glue" / subdir / "train.tsv", header, rows)
    write_tsv(tmp_path / "glue" / subdir / "dev.tsv", header, rows[:2])
    data = load_task_data(cfg(task=task, dir=str(tmp_path)))
    assert data.train.labels == [0, 1, 0, 1]
    assert data.train.text == [f"first {i}" for i in range(4)] and data.train.text_pair[3] == "second 3"


def test_cola_headerless(tmp_path):
    rows = [["gj04", i % 2, "*" if i % 2 == 0 else "", f"sentence {i}"] for i in range(5)]
    write_tsv(tmp_path / "glue/CoLA/train.tsv", None, rows)
    write_tsv(tmp_path / "glue/CoLA/dev.tsv", None, rows[:2])
    data = load_task_data(cfg(task="cola", dir=str(tmp_path)))
    assert len(data.train) == 5 and data.train.text[0] == "sentence 0" and data.train.labels == [0, 1, 0, 1, 0]


# ==================================================================================================
# IMDB carve, limits
# ==================================================================================================

def _imdb(tmp_path: Path, n_pos: int = 60, n_neg: int = 40) -> Path:
    rows = [[f"great film {i}<br /><br />loved it", "positive"] for i in range(n_pos)]
    rows += [[f"bad film {i}<br/>hated it", "negative"] for i in range(n_neg)]
    write_csv(tmp_path / "imdb" / "train.csv", ["review", "sentiment"], rows)
    return tmp_path


def test_imdb_carve_is_stratified_and_fixed(tmp_path):
    root = _imdb(tmp_path)
    data = load_task_data(cfg(task="imdb", dir=str(root), validation_size=0.2))
    val = data.eval_splits["validation"]
    assert Counter(val.labels) == {1: 12, 0: 8} and Counter(data.train.labels) == {1: 48, 0: 32}
    assert not set(val.text) & set(data.train.text)
    assert val.text[0].startswith("great film") and "<br" not in val.text[0] and "  loved it" in val.text[0]
    again = load_task_data(cfg(task="imdb", dir=str(root / "imdb"), validation_size=0.2))
    assert again.eval_splits["validation"].text == val.text
    other = load_task_data(cfg(task="imdb", dir=str(root), validation_size=0.2, split_seed=7))
    assert other.eval_splits["validation"].text != val.text
    assert "held out" in data.source


def test_limits_are_stratified_seeded_and_deterministic(tmp_path):
    root = _imdb(tmp_path, n_pos=300, n_neg=100)
    base = dict(task="imdb", dir=str(root), train_limit=40, eval_limit=8)
    first, second = load_task_data(cfg(**base)), load_task_data(cfg(**base))
    assert Counter(first.train.labels) == {1: 30, 0: 10}
    assert Counter(first.eval_splits["validation"].labels) == {1: 6, 0: 2}
    assert first.train.text == second.train.text
    other = load_task_data(cfg(**base, split_seed=99))
    assert other.train.text != first.train.text and Counter(other.train.labels) == {1: 30, 0: 10}


def test_sample_indices_exact_size_and_regression():
    labels = [0] * 7 + [1] * 3 + [2] * 1
    idx = sample_indices(labels, 5, seed=0)
    assert len(idx) == 5 and len(set(idx.tolist())) == 5 and list(idx) == sorted(idx)
    # quotas 3.18, 1.36, 0.45: floors 3, 1, 0 and the last slot to the largest remainder (class 2)
    assert Counter(labels[i] for i in idx) == {0: 3, 1: 1, 2: 1}
    scores = [0.1 * i for i in range(20)]
    assert list(sample_indices(scores, 6, 3, stratify=False)) == list(sample_indices(scores, 6, 3, stratify=False))


# ==================================================================================================
# The user's files
# ==================================================================================================

def test_custom_csv_tsv_jsonl(tmp_path):
    rows = [[f"text {i}", f"other {i}", ["spam", "ham", "eggs"][i % 3]] for i in range(9)]
    write_csv(tmp_path / "train.csv", ["body", "context", "kind"], rows)
    write_tsv(tmp_path / "eval.tsv", ["body", "context", "kind"], rows[:3])
    (tmp_path / "eval.jsonl").write_text("\n".join(json.dumps({"body": r[0], "context": r[1], "kind": r[2]})
                                                   for r in rows[:4]) + "\n")
    columns = dict(text_column="body", text_pair_column="context", label_column="kind")
    data = load_task_data(cfg(task="custom", train_file=str(tmp_path / "train.csv"),
                              eval_file=str(tmp_path / "eval.tsv"), **columns))
    assert data.task.label_names == ("eggs", "ham", "spam") and data.task.metrics == ("accuracy",)
    assert data.task.is_pair and data.train.text_pair[0] == "other 0"
    assert data.train.labels[:3] == [2, 1, 0] and data.eval_splits["validation"].labels == [2, 1, 0]
    jsonl = load_task_data(cfg(task="custom", train_file=str(tmp_path / "train.csv"),
                               eval_file=str(tmp_path / "eval.jsonl"), **columns))
    assert jsonl.eval_splits["validation"].text == ["text 0", "text 1", "text 2", "text 3"]


def test_custom_binary_named_labels_ids_and_carve(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = load_task_data(cfg(task="custom", train_file=str(tmp_path / "train.jsonl"),
                              label_names=["negative", "positive"], validation_size=0.25))
    assert data.task.label_names == ("negative", "positive") and data.task.metrics == ("accuracy", "f1")
    assert Counter(data.eval_splits["validation"].labels) == {0: 3, 1: 2} or \
        Counter(data.eval_splits["validation"].labels) == {0: 2, 1: 3}
    assert len(data.train) == 15 and data.train.text_pair is None


def test_numeric_labels_sort_numerically(tmp_path):
    write_csv(tmp_path / "t.csv", ["text", "label"], [["a", 10], ["b", 9], ["c", 2], ["d", 10]])
    write_csv(tmp_path / "e.csv", ["text", "label"], [["a", 10]])
    data = load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.csv"), eval_file=str(tmp_path / "e.csv")))
    assert data.task.label_names == ("2", "9", "10") and data.train.labels == [2, 1, 0, 2]


def test_eval_file_overrides_glue_split_with_hub_style_columns(tmp_path):
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(tmp_path / "glue/RTE/train.tsv", header, [[0, "a", "b", "entailment"], [1, "c", "d", "not_entailment"]])
    write_csv(tmp_path / "mine.csv", ["sentence1", "sentence2", "label"], [["x", "y", 1]])
    data = load_task_data(cfg(task="rte", dir=str(tmp_path), eval_file=str(tmp_path / "mine.csv")))
    assert data.eval_splits["validation"].labels == [1] and len(data.train) == 2
    assert data.source == f"train: local: {tmp_path / 'glue/RTE'}; eval: file: {tmp_path / 'mine.csv'}"


def test_train_and_eval_files_need_no_data_root(tmp_path):
    write_csv(tmp_path / "t.csv", ["sentence", "label"], [["good", 1], ["bad", 0]])
    data = load_task_data(cfg(task="sst2", train_file=str(tmp_path / "t.csv"), eval_file=str(tmp_path / "t.csv")))
    assert data.train.labels == [1, 0] and data.source == f"file: {tmp_path / 't.csv'}"


def test_read_table_candidates_and_headerless(tmp_path):
    path = write_tsv(tmp_path / "x.tsv", None, [["src", "1", "", "hello"]])
    table = read_table(path, "sentence", None, "label", fieldnames=["source", "label", "mark", "sentence"])
    assert table.text == ["hello"] and table.labels == ["1"] and table.text_pair is None
    path = write_csv(tmp_path / "y.csv", ["premise", "hypothesis", "label"], [["p", "h", "0"]])
    table = read_table(path, ("sentence1", "premise"), ("sentence2", "hypothesis"), "label")
    assert table.text == ["p"] and table.text_pair == ["h"]


def test_resolve_data_dir(monkeypatch, tmp_path):
    assert resolve_data_dir(cfg()) is None
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert resolve_data_dir(cfg()) == tmp_path
    assert resolve_data_dir(cfg(dir="/elsewhere")) == Path("/elsewhere")


# ==================================================================================================
# Hub
# ==================================================================================================

class _FakeSplit:
    def __init__(self, columns: dict[str, list], label_names: list[str] | None):
        self._columns = columns
        self.column_names = list(columns)
        self.features = {"label": types.SimpleNamespace(names=label_names)} if label_names else {}

    def __getitem__(self, name):
        return self._columns[name]


def test_hub_maps_class_label_names(monkeypatch):
    calls = []
    hub_names = ["entailment", "neutral", "contradiction"]  # the hub's MNLI order differs from GLUE's

    def load_dataset(hub_id, config):
        calls.append((hub_id, config))
        split = _FakeSplit({"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"], "label": [0, 1, 2]},
                           hub_names)
        return {"train": split, "validation_matched": split, "validation_mismatched": split}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_task_data(cfg(task="mnli"))
    assert calls == [("glue", "mnli")] and data.source == "hub: glue/mnli"
    names = data.task.label_names
    assert data.train.labels == [names.index("entailment"), names.index("neutral"), names.index("contradiction")]
    load_task_data(cfg(task="mnli", hub_dataset="nyu-mll/glue"))
    assert calls[-1] == ("nyu-mll/glue", "mnli")


def test_hub_without_datasets_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"data\.dir .*RANKADAPT_DATA_DIR.*glue/MRPC.*install `datasets`"):
        load_task_data(cfg(task="mrpc"))


def test_hub_failure_offline(monkeypatch):
    def load_dataset(hub_id, config):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match="ConnectionError: no network.*go online"):
        load_task_data(cfg(task="imdb"))


# ==================================================================================================
# Errors
# ==================================================================================================

def test_unknown_task_lists_known_ones():
    with pytest.raises(DataError, match="unknown data.task 'sst-5'.*imdb.*wnli, custom"):
        get_task("sst-5")
    with pytest.raises(DataError, match="custom has no fixed label set"):
        get_task("custom")
    assert set(TASKS) == {"imdb", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}


def test_missing_data_root(tmp_path):
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nope'} .*data.dir="):
        load_task_data(cfg(task="rte", dir=str(tmp_path / "nope")))


def test_missing_task_files_say_where_they_were_looked_for(tmp_path, monkeypatch):
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError) as err:
        load_task_data(cfg(task="rte"))
    message = str(err.value)
    assert str(tmp_path / "glue/RTE/train.tsv") in message and str(tmp_path / "RTE/train.tsv") in message
    assert DATA_DIR_ENV in message


def test_missing_train_file(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'absent.csv'} is missing"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "absent.csv")))


def test_missing_columns_lists_found_and_expected(tmp_path):
    write_csv(tmp_path / "t.csv", ["review", "stars"], [["fine", 5]])
    with pytest.raises(DataError) as err:
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.csv")))
    message = str(err.value)
    assert "'text'" in message and "'label'" in message and "found columns: 'review', 'stars'" in message
    assert "data.text_column" in message and "data.label_column" in message


def test_labels_outside_the_label_set(tmp_path):
    header = ["sentence", "label"]
    write_tsv(tmp_path / "glue/SST-2/train.tsv", header, [["a", "0"], ["b", "2"], ["c", "positive"], ["d", "meh"]])
    write_tsv(tmp_path / "glue/SST-2/dev.tsv", header, [["a", "0"]])
    with pytest.raises(DataError) as err:
        load_task_data(cfg(task="sst2", dir=str(tmp_path)))
    message = str(err.value)
    assert "2 label(s) outside" in message and "'2', 'meh'" in message and "allowed: negative, positive" in message
    assert "train.tsv" in message


def test_regression_labels_must_be_numbers(tmp_path):
    header = ["index", "sentence1", "sentence2", "score"]
    write_tsv(tmp_path / "glue/STS-B/train.tsv", header, [[0, "a", "b", "high"]])
    write_tsv(tmp_path / "glue/STS-B/dev.tsv", header, [[0, "a", "b", "1.0"]])
    with pytest.raises(DataError, match="not finite numbers: 'high'"):
        load_task_data(cfg(task="stsb", dir=str(tmp_path)))


@pytest.mark.parametrize("content, match", [
    ("", "is empty"),
    ("text,label\n", "has no data rows"),
])
def test_empty_files(tmp_path, content, match):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DataError, match=match):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.csv")))


def test_unreadable_and_unknown_format(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"text,label\n\xff\xfe bad bytes,1\n")
    with pytest.raises(DataError, match=r"cannot read .*t\.csv.*UTF-8"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.csv")))
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown extension '\.xlsx'; use one of \.csv"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.xlsx")))
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 1}\n{broken\n')
    with pytest.raises(DataError, match="invalid JSON"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.jsonl")))
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 1}\n{"label": 0}\n')
    with pytest.raises(DataError, match=r"t\.jsonl, record 2: no value for column 'text'"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.jsonl")))


def test_malformed_rows(tmp_path, caplog):
    header = ["sentence", "label"]
    rows = [["ok", "1"]] * 200 + [["bad", "1", "extra"]]
    write_tsv(tmp_path / "few.tsv", header, rows)
    assert len(read_table(tmp_path / "few.tsv", "sentence", None, "label")) == 200
    assert "1 of 201 rows do not have 2 fields" in caplog.text
    write_tsv(tmp_path / "many.tsv", header, rows[:5] + [["bad", "1", "x"]] * 3)
    with pytest.raises(DataError, match="3 of 8 rows .*first at line 7.*not in the expected format"):
        read_table(tmp_path / "many.tsv", "sentence", None, "label")


def test_impossible_carve_and_bad_options(tmp_path):
    write_csv(tmp_path / "t.csv", ["text", "label"], [["a", "x"], ["b", "y"], ["c", "x"]])
    with pytest.raises(DataError, match="cannot hold out data.validation_size=0.1 of the 3 examples"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "t.csv")))
    write_csv(tmp_path / "one.csv", ["text", "label"], [["a", "x"], ["b", "x"]])
    with pytest.raises(DataError, match="at least two classes"):
        load_task_data(cfg(task="custom", train_file=str(tmp_path / "one.csv")))
    with pytest.raises(DataError, match="label_names only applies to data.task=custom"):
        load_task_data(cfg(task="sst2", label_names=["a", "b"]))
    with pytest.raises(DataError, match="sst2 classifies single texts"):
        load_task_data(cfg(task="sst2", text_pair_column="other"))


# ==================================================================================================
# Encoding, padding, sampling
# ==================================================================================================

WORDS = ["the", "a", "movie", "film", "was", "good", "bad", "great", "awful", "plot", "actor", "story", "very"]


@pytest.fixture
def tokenizer(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    # transformers 5 takes the vocabulary as ``vocab`` (``vocab_file`` is silently ignored there)
    tok = transformers.BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
    assert tok("the film")["input_ids"] == [2, 5, 8, 3], "the tiny vocabulary must be in use, not [UNK]"
    return tok


def test_encode_truncates_and_caches(tmp_path, tokenizer, monkeypatch):
    examples = Examples(text=["the movie was good", "bad " * 30, "great"], text_pair=None, labels=[1, 0, 1])
    dataset = encode(examples, tokenizer, max_length=8, cache_dir=tmp_path / "cache", cache_key="k")
    assert len(dataset) == 3 and dataset.lengths == [6, 8, 3]
    assert dataset[0]["input_ids"] == tokenizer("the movie was good")["input_ids"]
    assert dataset[1]["input_ids"][-1] == tokenizer.sep_token_id and dataset[0]["labels"] == 1
    assert dataset[0]["token_type_ids"] == [0] * 6
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1 and not list((tmp_path / "cache").glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("tokenizer called despite a cache hit")

    monkeypatch.setattr(type(tokenizer), "__call__", fail)
    cached = encode(examples, tokenizer, max_length=8, cache_dir=tmp_path / "cache", cache_key="k")
    assert [cached[i] for i in range(3)] == [dataset[i] for i in range(3)] and cached.lengths == dataset.lengths
    with pytest.raises(AssertionError, match="despite"):  # another max_length is another entry
        encode(examples, tokenizer, max_length=9, cache_dir=tmp_path / "cache", cache_key="k")


def test_encode_pairs_and_regression(tmp_path, tokenizer):
    examples = Examples(text=["the movie", "a plot"], text_pair=["was good", "very bad"], labels=[0.5, 4.0])
    dataset = encode(examples, tokenizer, max_length=16, cache_dir=tmp_path, cache_key="pairs")
    item = dataset[0]
    assert item["labels"] == 0.5 and isinstance(item["labels"], float)
    assert item["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]
    batch = PaddingCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert batch["labels"].dtype == torch.float32


def test_collator_pads_dynamically():
    items = [{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": 1},
             {"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": 0}]
    batch = PaddingCollator(pad_token_id=9)(items)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    wide = PaddingCollator(pad_token_id=0, pad_to_multiple_of=8)([{"input_ids": [1, 2, 3], "labels": 0}])
    assert wide["input_ids"].shape == (1, 8) and "token_type_ids" not in wide


def test_fixed_padding_pads_every_batch_to_max_length(tmp_path, tokenizer):
    items = [{"input_ids": [2, 5, 3], "labels": 1}, {"input_ids": [2, 3], "labels": 0}]
    fixed = PaddingCollator(pad_token_id=9, pad_to_length=5)(items)
    assert fixed["input_ids"].tolist() == [[2, 5, 3, 9, 9], [2, 3, 9, 9, 9]]
    assert fixed["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    # data.padding picks it in the trainer's loaders (the default pads to the longest in the batch)
    from rankadapt.core.config import RunConfig
    from rankadapt.runtime.loaders import make_loaders
    from rankadapt.tasks.text_classification import text_collator

    examples = Examples(text=["the movie", "a plot was very good"], text_pair=None, labels=[0, 1])
    dataset = encode(examples, tokenizer, max_length=12, cache_dir=tmp_path, cache_key="fixed")
    for padding, width in (("max_length", 12), ("longest", max(dataset.lengths))):
        config = RunConfig.model_validate({"data": {"max_length": 12, "padding": padding}, "train": {"batch_size": 2}})
        train_loader, _ = make_loaders(config, dataset, {}, text_collator(config, tokenizer), num_processes=1)
        assert next(iter(train_loader))["input_ids"].shape == (2, width)


def test_length_grouped_sampler():
    lengths = [(i * 37) % 101 + 1 for i in range(500)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(500)) and len(sampler) == 500
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=3)) == first
    assert lengths[first[0]] == max(lengths)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(second) == list(range(500)) and second != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=4)) != first


def _batches(order: list[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(order[k:k + size]) for k in range(0, len(order), size)]


def test_length_grouped_batches_are_transformers_batches_in_a_shuffled_order():
    """The same batches as transformers' length grouping (same permutation, mega-batches, longest-first
    swap), so the padding is the same; but their order is shuffled: transformers' long-to-short sweep
    through each mega-batch is gone, while the first batch (the longest example) and the last, smaller
    batch keep their places."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = [(i * 37) % 101 + 1 for i in range(500)]   # 62 batches of 8 and one of 4; mega-batches of 15
    ours = _batches(LengthGroupedSampler(lengths, batch_size=8, seed=3).order(), 8)
    theirs = _batches(get_length_grouped_indices(lengths, 8, generator=torch.Generator().manual_seed(3)), 8)
    assert sorted(ours) == sorted(theirs)
    assert ours[0] == theirs[0] and ours[-1] == theirs[-1] and len(ours[-1]) == 4
    assert ours != theirs

    def sweep(batches):  # correlation of a batch's place in its mega-batch with its longest example
        middle = batches[1:-1]
        place = [(k + 1) % 15 for k in range(len(middle))]
        return statistics.correlation(place, [max(lengths[i] for i in b) for b in middle])

    assert sweep(theirs) < -0.9
    assert abs(sweep(ours)) < 0.3


def test_length_grouping_reduces_padding():
    lengths = [(i * 37) % 101 + 1 for i in range(512)]

    def padded(order):
        return sum(max(lengths[i] for i in order[k:k + 8]) * 8 for k in range(0, len(order), 8))

    grouped = padded(list(LengthGroupedSampler(lengths, batch_size=8, seed=0)))
    shuffled = padded(torch.randperm(512, generator=torch.Generator().manual_seed(0)).tolist())
    assert grouped < 0.7 * shuffled


def test_encoded_dataset_feeds_a_dataloader(tmp_path, tokenizer):
    examples = Examples(text=["good film", "the plot was awful and very bad", "great"] * 4, text_pair=None,
                        labels=[1, 0, 1] * 4)
    dataset = encode(examples, tokenizer, 12, tmp_path, "loader")
    assert isinstance(dataset, EncodedDataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=PaddingCollator(0),
                                         sampler=LengthGroupedSampler(dataset.lengths, 4, seed=0))
    batches = list(loader)
    assert sum(len(b["labels"]) for b in batches) == 12
    assert all(b["input_ids"].shape == b["attention_mask"].shape for b in batches)
