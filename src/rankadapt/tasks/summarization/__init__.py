"""Summarization on encoder-decoder models (issue 18): the building blocks of the task family.

- :mod:`.data`: reading source/target files, tokenising with truncation counts, batching;
- :mod:`.architectures`: the q_proj/k_proj/v_proj/out_proj/fc1/fc2 module maps, loading BART, T5,
  mBART, Pegasus or a bert2bert EncoderDecoderModel;
- :mod:`.generation`: label-smoothed cross-entropy, beam-search generation;
- :mod:`.rouge`: ROUGE-1/2/L/Lsum, the lead-1 baseline, predictions.jsonl;
- :mod:`.family`: :class:`SummarizationFamily`, the TaskFamily of issue 15 over them.
"""

from .data import EncodedPairs, PairColumns, Seq2SeqCollator, SummaryPair, encode_pairs, read_pairs
from .rouge import lead_1, rouge_scores, split_sentences, write_predictions

__all__ = ["EncodedPairs", "PairColumns", "Seq2SeqCollator", "SummaryPair", "encode_pairs", "lead_1", "read_pairs",
           "rouge_scores", "split_sentences", "write_predictions"]
