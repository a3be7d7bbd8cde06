"""Hub datasets by name (issues 18 and 21): summarization (xsum, cnn_dailymail, samsum, data.hub_dataset)
and image classification (data.task=imagefolder data.hub_dataset=...). No network: ``datasets.load_dataset``
is replaced by a function returning small in-memory datasets built by ``datasets`` itself (ClassLabel and
Image features included), and records which id and config were asked for."""

from __future__ import annotations

import json
import sys

import pytest

from rankadapt.core.config import DATA_DIR_ENV, DataConfig, RunConfig
from rankadapt.core.errors import DataError
from rankadapt.tasks import family_for_task
from rankadapt.tasks.summarization import SummaryPair
from rankadapt.tasks.summarization.family import HUB_TASKS, SummarizationFamily

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def no_data_root(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def fake_hub(monkeypatch, splits: dict[str, datasets.Dataset]) -> list[tuple[str, str | None]]:
    """``datasets.load_dataset`` answering every id with ``splits``; returns the (id, config) asked for."""
    calls = []

    def load_dataset(hub_id, config=None, **kwargs):
        calls.append((hub_id, config))
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def run_config(**data) -> RunConfig:
    return RunConfig(data=DataConfig(**data))


# ==================================================================================================
# Summarization
# ==================================================================================================

def summaries(source: str, target: str, n: int, start: int = 0, **extra) -> datasets.Dataset:
    rows = {source: [f"document {i}. more text" for i in range(start, start + n)],
            target: [f"summary {i}" for i in range(start, start + n)],
            "id": [str(i) for i in range(start, start + n)]}
    rows.update(extra)
    return datasets.Dataset.from_dict(rows)


def load_summaries(**data):
    return SummarizationFamily().load_data(run_config(**data))


@pytest.mark.parametrize("task, hub, source, target", [
    ("xsum", ("xsum", None), "document", "summary"),
    ("cnn_dailymail", ("cnn_dailymail", "3.0.0"), "article", "highlights"),
    ("samsum", ("samsum", None), "dialogue", "summary"),
])
def test_named_summarization_tasks_read_their_hub_dataset(monkeypatch, task, hub, source, target):
    calls = fake_hub(monkeypatch, {"train": summaries(source, target, 3), "validation": summaries(source, target, 2, 10),
                                   "test": summaries(source, target, 1, 20)})
    data = load_summaries(task=task)
    assert calls == [hub]
    assert data.train == [SummaryPair(f"document {i}. more text", f"summary {i}", str(i)) for i in range(3)]
    assert [p.id for p in data.eval_splits["validation"]] == ["10", "11"] and list(data.eval_splits) == ["validation"]
    assert data.source == f"hub: {'/'.join(x for x in hub if x)} (train, validation)"
    assert data.spec.name == task and family_for_task(task) is family_for_task("summarization")
    assert HUB_TASKS[task].source == source


def test_hub_summaries_honour_columns_hub_dataset_and_limits(monkeypatch):
    splits = {"train": summaries("text", "abstract", 10, key=[f"k{i}" for i in range(10)]),
              "validation": summaries("text", "abstract", 4, 10, key=[f"k{i}" for i in range(10, 14)])}
    calls = fake_hub(monkeypatch, splits)
    data = load_summaries(task="summarization", hub_dataset="someone/papers:v2", text_column="text",
                          target_column="abstract", train_limit=4, eval_limit=2)
    assert calls == [("someone/papers", "v2")] and data.source == "hub: someone/papers/v2 (train, validation)"
    assert len(data.train) == 4 and len(data.eval_splits["validation"]) == 2
    assert [p.id for p in data.train] == sorted((p.id for p in data.train), key=int)  # hub order kept
    # the subset is the one the same rows written to a file give
    again = load_summaries(task="summarization", hub_dataset="someone/papers:v2", text_column="text",
                           target_column="abstract", train_limit=4, eval_limit=2)
    assert again.train == data.train
    load_summaries(task="cnn_dailymail", hub_dataset="abisee/cnn_dailymail", text_column="text",
                   target_column="abstract")
    assert calls[-1] == ("abisee/cnn_dailymail", "3.0.0")                # the id alone keeps the task's config
    load_summaries(task="cnn_dailymail", hub_dataset="mirror:", text_column="text", target_column="abstract")
    assert calls[-1] == ("mirror", None)
    options = RunConfig(data=DataConfig(task="summarization", hub_dataset="x", text_column="text",
                                        target_column="abstract"), task_options={"id_column": "key"})
    assert SummarizationFamily().load_data(options).train[0].id == "k0"


def test_hub_summaries_subset_equals_the_file_subset(monkeypatch, tmp_path):
    train, validation = summaries("document", "summary", 12), summaries("document", "summary", 3, 50)
    fake_hub(monkeypatch, {"train": train, "validation": validation})
    for name, split in (("train", train), ("validation", validation)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in split))
    from_hub = load_summaries(task="xsum", train_limit=5)
    from_files = load_summaries(task="xsum", train_file=str(tmp_path / "train.jsonl"),
                                eval_file=str(tmp_path / "validation.jsonl"), train_limit=5)
    assert from_hub.train == from_files.train and from_hub.eval_splits == from_files.eval_splits


@pytest.mark.parametrize("rows, message", [
    (dict(document=["a", "b"], summary=["s", "  "]),
     r"hub: xsum\[train\]: 1 empty target text\(s\) in column 'summary' \(first at row 2\)"),
    (dict(document=["a", None], summary=["s", "t"]), r"hub: xsum\[train\], row 2: column 'document' holds null, not text"),
    (dict(document=["a"], summary=[3]), r"hub: xsum\[train\], row 1: column 'summary' holds a int \(3\), not text"),
    (dict(text=["a"], summary=["s"]), r"hub: xsum\[train\] has no source column 'document' \(set data.text_column\); "
                                      r"found columns: 'text', 'summary'"),
])
def test_bad_hub_rows_get_the_errors_of_bad_file_rows(monkeypatch, rows, message):
    fake_hub(monkeypatch, {"train": datasets.Dataset.from_dict(rows),
                           "validation": summaries("document", "summary", 1)})
    with pytest.raises(DataError, match=message):
        load_summaries(task="xsum")


def test_missing_hub_split_names_what_to_pass(monkeypatch):
    fake_hub(monkeypatch, {"train": summaries("document", "summary", 2), "test": summaries("document", "summary", 1)})
    with pytest.raises(DataError, match=r"hub dataset 'xsum' has no split 'validation' \(it has train, test\); "
                                        r"pass data.eval_file"):
        load_summaries(task="xsum")


def test_local_summaries_win_over_the_hub(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, {"train": summaries("document", "summary", 2, 100),
                                   "validation": summaries("document", "summary", 2, 200)})
    local = tmp_path / "root" / "xsum"
    local.mkdir(parents=True)
    for name, start in (("train", 0), ("validation", 10)):
        (local / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n"
                                                     for row in summaries("document", "summary", 2, start)))
    data = load_summaries(task="xsum", dir=str(tmp_path / "root"))                    # <root>/xsum/
    assert calls == [] and data.source == f"file: {local / 'train.jsonl'}, {local / 'validation.jsonl'}"
    monkeypatch.setenv(DATA_DIR_ENV, str(local))                                      # $RANKADAPT_DATA_DIR=<root>/xsum
    assert load_summaries(task="xsum").train == data.train and calls == []
    monkeypatch.delenv(DATA_DIR_ENV)
    mixed = load_summaries(task="xsum", train_file=str(local / "train.jsonl"))        # eval from the hub
    assert calls == [("xsum", None)] and [p.id for p in mixed.train] == ["0", "1"]
    assert [p.id for p in mixed.eval_splits["validation"]] == ["200", "201"]
    assert mixed.source == f"file: {local / 'train.jsonl'}; hub: xsum (validation)"
    empty_root = tmp_path / "glue-only"
    empty_root.mkdir()
    assert [p.id for p in load_summaries(task="xsum", dir=str(empty_root)).train] == ["100", "101"]


@pytest.mark.parametrize("failure", ["missing", "offline"])
def test_no_datasets_or_no_network_says_to_pass_local_files(monkeypatch, failure):
    if failure == "missing":
        monkeypatch.setitem(sys.modules, "datasets", None)
        reason = r"the `datasets` package needed to fetch 'cnn_dailymail/3.0.0' from the Hugging Face hub is not installed"
    else:
        def load_dataset(hub_id, config=None, **kwargs):
            raise ConnectionError("no network")
        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
        reason = r"loading 'cnn_dailymail/3.0.0' from the hub failed \(ConnectionError: no network\)"
    with pytest.raises(DataError, match=r"no local data for data.task=cnn_dailymail: " + reason +
                       r"\. Pass local files with data.train_file and data.eval_file .*under <root>/cnn_dailymail/"):
        load_summaries(task="cnn_dailymail")


def test_plain_summarization_needs_files_or_a_hub_dataset(monkeypatch):
    calls = fake_hub(monkeypatch, {})
    with pytest.raises(DataError, match=r"data.task=summarization needs data.train_file and data.eval_file .*"
                                        r"or data.hub_dataset=<id>\[:config\]"):
        load_summaries(task="summarization")
    assert calls == []
