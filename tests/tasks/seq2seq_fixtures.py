"""Tiny encoder-decoder models (2 + 2 layers, hidden 32) of every architecture the summarization family
maps, built from configs in code, and a matching tokenizer. No download."""

from __future__ import annotations

import pytest
import torch
import transformers

from helpers import make_tokenizer

VOCAB = 120
SEQ2SEQ_ARCHITECTURES = ("bart", "t5", "mbart", "pegasus", "bert2bert")
_SIZES = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two threads each can be
    50x slower (oversubscription). Import it into a test module with ``autouse`` wrapping."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert_config(vocab_size: int = VOCAB, decoder: bool = False) -> transformers.BertConfig:
    return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64, is_decoder=decoder,
                                   add_cross_attention=decoder)


def tiny_seq2seq(arch: str, seed: int = 0, vocab_size: int = VOCAB) -> torch.nn.Module:
    """A randomly initialised tiny model of ``arch`` in eval mode."""
    torch.manual_seed(seed)
    if arch == "bert2bert":
        model = transformers.EncoderDecoderModel(
            encoder=transformers.BertModel(tiny_bert_config(vocab_size)),
            decoder=transformers.BertLMHeadModel(tiny_bert_config(vocab_size, decoder=True)))
        for config in (model.config, model.generation_config):  # [CLS]=2 starts, [SEP]=3 ends, [PAD]=0 pads
            config.decoder_start_token_id, config.bos_token_id, config.eos_token_id, config.pad_token_id = 2, 2, 3, 0
        return model.eval()
    if arch == "t5":
        config = transformers.T5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                       num_decoder_layers=2, num_heads=2, decoder_start_token_id=0)
    else:
        cls = {"bart": transformers.BartConfig, "mbart": transformers.MBartConfig,
               "pegasus": transformers.PegasusConfig}[arch]
        config = cls(**{**_SIZES, "vocab_size": vocab_size})
    return transformers.AutoModelForSeq2SeqLM.from_config(config).eval()


def seq2seq_batch(batch: int = 3, source: int = 9, target: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids (5.. VOCAB) with a padded source row and a padded (-100) label row."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, source), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    labels = torch.randint(5, VOCAB, (batch, target), generator=gen)
    labels[1, -2:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny_tokenizer(tmp_path) -> transformers.PreTrainedTokenizerBase:
    return make_tokenizer(tmp_path / "tokenizer")
