"""The tokenizer of a Hugging Face-format model directory as a :class:`core.tokenizer.TextTokenizer`."""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from ..errors import ConfigError
from ..tokenizer import TextTokenizer, _guess_specials
from .hub import resolve_pretrained

__all__ = ["load_tokenizer"]


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """``tokenizer.json``, else BERT's ``vocab.txt`` (honouring ``do_lower_case``), else GPT-2's
    ``vocab.json`` + ``merges.txt`` (byte-level BPE). ``path``: a folder or a Hub id (:func:`resolve_pretrained`).

    Padding and truncation baked into a ``tokenizer.json`` (sentence-transformers ships ``Fixed: 128``
    padding) are switched off: callers pad per batch and truncate with ``max_len``. Special tokens
    are the model's own ([CLS]/[SEP]/[PAD] for BERT, <s>/</s>/<pad> for RoBERTa, <|endoftext|> for GPT-2).
    """
    d = resolve_pretrained(path)
    if not d.is_dir():
        raise ConfigError(f"pretrained model directory not found: {d}")
    if (d / "tokenizer.json").is_file():
        tt = TextTokenizer.load(d / "tokenizer.json")
    elif (d / "vocab.txt").is_file():
        lower = True
        if (d / "tokenizer_config.json").is_file():
            lower = bool(json.loads((d / "tokenizer_config.json").read_text()).get("do_lower_case", True))
        tt = TextTokenizer._from_vocab_txt(d / "vocab.txt", lowercase=lower)
    elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        tok = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tt = TextTokenizer(tok, **_guess_specials(tok))
    else:
        raise ConfigError(f"{d}: no tokenizer.json, vocab.txt or vocab.json + merges.txt")
    tt.tok.no_padding()
    tt.tok.no_truncation()
    return tt
