"""ROUGE against hand-computed values, sentence splitting, the lead-1 baseline and predictions.jsonl."""

from __future__ import annotations

import json

import pytest

from rankadapt.tasks.summarization.rouge import lead_1, rouge_scores, split_sentences, write_predictions


def test_rouge_matches_hand_counts():
    # Unigrams: the x2, cat, on, mat match (5 of 6 each side); bigrams: "the cat", "on the", "the mat"
    # (3 of 5); the LCS is "the cat on the mat" (5 of 6).
    scores = rouge_scores(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert scores == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6, "rougeLsum": 500 / 6})


def test_rouge_stems_words():
    # Porter stems (tokens over 3 letters): cats -> cat, running/runs -> run; "were" matches nothing.
    # P = 3/4, R = 3/3, F = 2PR / (P + R) = 6/7.
    scores = rouge_scores(["The cats were running."], ["the cat runs"])
    assert scores["rouge1"] == pytest.approx(600 / 7)


def test_rouge_lsum_is_summary_level_over_sentences():
    # Swapped sentences: the whole-text LCS is one sentence (3 of 6 tokens), while ROUGE-Lsum's union
    # LCS per reference sentence finds both; bigrams lose only the one across the boundary (6 of 7).
    scores = rouge_scores(["The dog ran off. The cat sat down."], ["The cat sat down.\nThe dog ran off."])
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 600 / 7, "rougeL": 50.0, "rougeLsum": 100.0})


def test_rouge_averages_over_examples_and_checks_lengths():
    scores = rouge_scores(["a b c", "x y z"], ["a b c", "p q r"])
    assert scores["rouge1"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_sentences_split_at_lines_and_sentence_ends_but_not_titles():
    text = 'He said "Hi." Then 3 left! Mr. Smith met J. K. Rowling.\nSecond line'
    assert split_sentences(text) == ['He said "Hi."', "Then 3 left!", "Mr. Smith met J. K. Rowling.", "Second line"]
    assert split_sentences("  \n") == []


def test_lead_1_is_the_first_sentence():
    assert lead_1("\nFirst one here. Second one.\nThird.") == "First one here."
    assert lead_1("") == ""


def test_predictions_file_has_one_object_per_example(tmp_path):
    path = write_predictions(tmp_path / "run" / "predictions.jsonl", ["p1", "p2"], ["r1", "r2"], ids=["a", None])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"id": "a", "prediction": "p1", "reference": "r1"}, {"prediction": "p2", "reference": "r2"}]
    write_predictions(path, ["q"], ["s"])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"prediction": "q", "reference": "s"}]
    assert [p.name for p in path.parent.iterdir()] == ["predictions.jsonl"]
    with pytest.raises(ValueError):
        write_predictions(path, ["p"], ["r1", "r2"])
