"""ROUGE as the summarization papers report it, the lead-1 baseline, and the predictions file.

ROUGE-1/2/L/Lsum are F-measures ×100 from Google's ``rouge-score`` package (the reference
implementation's Python port), with Porter stemming on, averaged over examples (the mean, not
``BootstrapAggregator``'s resampled mid-point, so the number is deterministic). ROUGE-Lsum is the
summary-level LCS over sentences, which ``rouge-score`` reads as newline-separated: every text is
split into sentences first (:func:`split_sentences`), as the Hugging Face summarization examples do
with NLTK's punkt before scoring. ROUGE-1/2/L ignore the line breaks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ...core.ownership import write_atomically

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) before whitespace and
# an upper-case letter, digit or opening quote. NLTK's punkt needs a data download; this rule is
# what matters for news text, and texts that already have one sentence per line are kept as they are.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
# ... except after a title or an initial ("Mr. Smith", "J. K. Rowling").
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|Gen|Col|Lt|Sgt|Capt|Rev|Gov|Sen|Rep|No|vs)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: its non-empty lines, each split further at sentence ends."""
    sentences = []
    for line in text.splitlines():
        sentences.extend(s.strip() for s in _split_line(line.strip()) if s.strip())
    return sentences


def _split_line(line: str) -> list[str]:
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(line):
        if _ABBREVIATION.search(line[start:match.start()]):
            continue
        pieces.append(line[start:match.end()])
        start = match.end()
    pieces.append(line[start:])
    return pieces


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure ×100 of ``predictions`` against ``references`` (pairwise)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}


def lead_1(document: str) -> str:
    """The lead-1 baseline summary: the document's first sentence (empty for an empty document)."""
    sentences = split_sentences(document)
    return sentences[0] if sentences else ""


def write_predictions(path: str | os.PathLike, predictions: Sequence[str], references: Sequence[str],
                      ids: Sequence[str | None] | None = None) -> Path:
    """``predictions.jsonl``: one object per example, ``{"id"?, "prediction", "reference"}``, in order.

    Written to a temporary file in the same directory and renamed, so a crash never leaves half a file.
    """
    if len(predictions) != len(references) or (ids is not None and len(ids) != len(predictions)):
        raise ValueError("predictions, references and ids must have one entry per example")
    lines = []
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        record = {} if ids is None or ids[i] is None else {"id": ids[i]}
        record.update(prediction=prediction, reference=reference)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path = Path(path)
    write_atomically(path, "".join(lines).encode("utf-8"))
    return path
