"""Summarization on encoder-decoder models (issue 18): the building blocks of the task family.

- :mod:`.data`: reading source/target files, tokenising with truncation counts, batching;
- :mod:`.architectures`: the q_proj/k_proj/v_proj/out_proj/fc1/fc2 module maps, loading BART, T5,
  mBART, Pegasus or a bert2bert EncoderDecoderModel;
- :mod:`.generation`: label-smoothed cross-entropy, beam-search generation;
- :mod:`.rouge`: ROUGE-1/2/L/Lsum, the lead-1 baseline, predictions.jsonl;
- :mod:`.family`: :class:`SummarizationFamily`, the TaskFamily of issue 15 over them.
"""

from .architectures import SEQ2SEQ_MODULE_MAPS, SEQ2SEQ_MODULE_NAMES, load_seq2seq_model, target_patterns
from .data import EncodedPairs, PairColumns, Seq2SeqCollator, SummaryPair, encode_pairs, read_pairs
from .family import SummarizationFamily, SummarizationSettings, SummarizationTask
from .generation import GenerationSettings, generate_ids, generate_summaries, label_smoothed_loss
from .rouge import lead_1, rouge_scores, split_sentences, write_predictions

__all__ = [
    "SEQ2SEQ_MODULE_MAPS", "SEQ2SEQ_MODULE_NAMES", "EncodedPairs", "GenerationSettings", "PairColumns",
    "Seq2SeqCollator", "SummarizationFamily", "SummarizationSettings", "SummarizationTask", "SummaryPair",
    "encode_pairs", "generate_ids", "generate_summaries", "label_smoothed_loss", "lead_1", "load_seq2seq_model",
    "read_pairs", "rouge_scores", "split_sentences", "target_patterns", "write_predictions",
]
