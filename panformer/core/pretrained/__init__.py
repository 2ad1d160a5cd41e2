"""Published pretrained weights loaded into the core, without the transformers library.

* :func:`load_bert` — BERT / MiniLM / RoBERTa encoders → :class:`BertEncoder` (``core.Encoder`` inside);
  ``model(input_ids, attention_mask)`` → last hidden state (B, T, hidden).
* :func:`load_gpt2` — GPT-2 decoders → :class:`core.CausalTransformerLM`; ``model(input_ids)`` → logits
  (B, T, vocab), cached decoding via :func:`core.greedy_search` / :func:`core.sample` / :func:`core.beam_search`.
* :func:`load_tokenizer` — the directory's tokenizer as a :class:`core.tokenizer.TextTokenizer`.
* :func:`load_pretrained` — dispatch on ``config.json``'s ``model_type``.
* :func:`resolve_pretrained` — a local folder, or a Hub id ``org/name`` fetched with ``snapshot_download``
  (every loader accepts either).
* :func:`bert_to_hf` / :func:`as_bert_encoder` / :func:`gpt2_to_hf` + :func:`save_hf` — the other way:
  core models exported as folders that transformers' ``from_pretrained`` loads.

Weights come from ``model.safetensors`` or ``pytorch_model.bin`` (read with ``weights_only=True`` only).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import ConfigError
from .bert import (BERT_MODEL_TYPES, BertEmbeddings, BertEncoder, BertPooler, bert_config, load_bert, load_bert_pooler,
                   model_type_of)
from .export import as_bert_encoder, bert_to_hf, gpt2_to_hf
from .gpt2 import GPT2_MODEL_TYPES, gpt2_config, load_gpt2
from .hf import read_config, read_state_dict
from .hub import resolve_pretrained
from .save import hf_tokenizer_files, save_hf
from .tokenizer import load_tokenizer

__all__ = ["load_bert", "load_bert_pooler", "load_gpt2", "load_pretrained", "load_tokenizer", "resolve_pretrained",
           "BertEncoder", "BertEmbeddings", "BertPooler", "bert_config", "gpt2_config", "read_config", "read_state_dict",
           "bert_to_hf", "as_bert_encoder", "gpt2_to_hf", "save_hf", "hf_tokenizer_files",
           "BERT_MODEL_TYPES", "GPT2_MODEL_TYPES"]


def load_pretrained(path: str | Path) -> nn.Module:
    """:func:`load_bert` or :func:`load_gpt2`, whichever ``config.json``'s ``model_type`` names."""
    cfg = read_config(path)
    mt = model_type_of(cfg)
    if mt in BERT_MODEL_TYPES:
        return load_bert(path)
    if mt in GPT2_MODEL_TYPES:
        return load_gpt2(path)
    raise ConfigError(f"{path}/config.json: model_type {mt!r} is not supported; "
                      f"supported: {', '.join(BERT_MODEL_TYPES + GPT2_MODEL_TYPES)}")
