"""Text tokenizers trained with the ``tokenizers`` library (BPE, WordPiece, characters) or loaded
from a Hugging Face ``tokenizer.json`` / ``vocab.txt``. One class for every text task."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .errors import ConfigError

__all__ = ["TextTokenizer", "train_tokenizer", "char_set", "SPECIAL_TOKENS"]

# Fixed ids for every tokenizer trained here: <pad>=0, <unk>=1, <s>=2 (BOS/CLS), </s>=3 (EOS/SEP), <mask>=4.
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids of its special tokens."""

    def __init__(self, tok: Tokenizer, pad: str = "<pad>", unk: str = "<unk>", bos: str = "<s>", eos: str = "</s>",
                 mask: str = "<mask>") -> None:
        self.tok = tok
        self.names = {"pad": pad, "unk": unk, "bos": bos, "eos": eos, "mask": mask}

    def _id(self, key: str) -> int | None:
        return self.tok.token_to_id(self.names[key])

    pad_id = property(lambda self: self._id("pad") or 0)
    unk_id = property(lambda self: self._id("unk"))
    bos_id = property(lambda self: self._id("bos"))
    eos_id = property(lambda self: self._id("eos"))
    mask_id = property(lambda self: self._id("mask"))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False, max_len: int | None = None) -> list[int]:
        return self.encode_batch([text], add_bos, add_eos, max_len)[0]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False,
                     max_len: int | None = None) -> list[list[int]]:
        """Token ids per text, optionally wrapped in BOS/EOS and truncated to ``max_len`` (EOS kept)."""
        return [self.wrap(enc.ids, add_bos, add_eos, max_len)
                for enc in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def wrap(self, ids: Sequence[int], add_bos: bool = False, add_eos: bool = False,
             max_len: int | None = None) -> list[int]:
        """Plain ids (e.g. read from a token cache) as :meth:`encode_batch` returns them: truncated so that
        BOS/EOS fit in ``max_len``, then wrapped."""
        ids = list(ids)
        if max_len is not None:
            ids = ids[: max(max_len - int(add_bos) - int(add_eos), 0)]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def wrapped_lengths(self, lengths, add_bos: bool = False, add_eos: bool = False, max_len: int | None = None):
        """:meth:`wrap`'s output lengths for plain lengths (a numpy array)."""
        specials = int(add_bos) + int(add_eos)
        if max_len is not None:
            lengths = np.minimum(lengths, max(max_len - specials, 0))
        return lengths + specials

    def encode_chars(self, text: str, dtype: np.dtype | type = np.int64) -> np.ndarray:
        """(len(text),) ids of a character vocabulary, one per character (unknown ones: ``<unk>``): the same as
        ``[vocab.get(c, unk) for c in text]``, vectorised (hundreds of MB/s) through a table of the BMP."""
        dtype = np.dtype(dtype)
        luts = self.__dict__.setdefault("_char_luts", {})
        vocab, unk = self.tok.get_vocab(), self.unk_id or 0
        if dtype not in luts:
            lut = np.full(0x10000, unk, dtype=dtype)
            for t, i in vocab.items():
                if len(t) == 1 and ord(t) < 0x10000:
                    lut[ord(t)] = i
            luts[dtype] = lut
        try:
            codes = np.frombuffer(text.encode("utf-16-le"), np.uint16)
        except UnicodeEncodeError:  # a lone surrogate
            return np.array([vocab.get(c, unk) for c in text], dtype=dtype)
        if codes.size == len(text):  # no character outside the BMP
            return luts[dtype][codes]
        cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        out = luts[dtype][np.minimum(cps, 0xFFFF)]
        astral = cps > 0xFFFF
        for c in np.unique(cps[astral]):
            out[cps == c] = vocab.get(chr(int(c)), unk)
        return out

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
        return self.tok.decode_batch([list(x) for x in batch], skip_special_tokens=skip_special)

    def save(self, path: str | Path) -> None:
        from .checkpoint import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.tok.to_str())
        atomic_write_text(path.with_suffix(".special.json"), json.dumps(self.names))

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        """Load a ``tokenizer.json`` (ours or a Hugging Face one) or a BERT ``vocab.txt``."""
        path = Path(path)
        if path.is_dir():
            for name in ("tokenizer.json", "vocab.txt"):
                if (path / name).is_file():
                    return cls.load(path / name)
            raise ConfigError(f"no tokenizer.json or vocab.txt in {path}")
        if not path.is_file():
            raise ConfigError(f"tokenizer file not found: {path}")
        if path.suffix == ".txt":
            return cls._from_vocab_txt(path)
        tok = Tokenizer.from_file(str(path))
        tok.no_padding()  # Hugging Face files often pad/truncate to a fixed length; batching is ours
        tok.no_truncation()
        special = path.with_suffix(".special.json")
        if special.is_file():
            return cls(tok, **json.loads(special.read_text()))
        return cls(tok, **_guess_specials(tok))

    @classmethod
    def _from_vocab_txt(cls, path: Path, lowercase: bool = True) -> "TextTokenizer":
        vocab = {w: i for i, w in enumerate(path.read_text(encoding="utf-8").splitlines())}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return cls(tok, **_guess_specials(tok))


def _guess_specials(tok: Tokenizer) -> dict[str, str]:
    vocab = tok.get_vocab()
    pick = lambda *c: next((x for x in c if x in vocab), c[0])  # noqa: E731
    return {"pad": pick("[PAD]", "<pad>", "<|endoftext|>"), "unk": pick("[UNK]", "<unk>", "<|endoftext|>"),
            "bos": pick("[CLS]", "<s>", "<|endoftext|>"), "eos": pick("[SEP]", "</s>", "<|endoftext|>"),
            "mask": pick("[MASK]", "<mask>")}


def char_set(text: str) -> set[str]:
    """The distinct characters of ``text`` (``set(text)``, counted with numpy for long texts)."""
    if len(text) < 1 << 16:
        return set(text)
    try:
        codes = np.frombuffer(text.encode("utf-16-le"), np.uint16)
    except UnicodeEncodeError:
        return set(text)
    present = np.flatnonzero(np.bincount(codes))
    if ((present >= 0xD800) & (present < 0xE000)).any():  # characters outside the BMP
        return set(text)
    return {chr(int(c)) for c in present}


def train_tokenizer(
    texts: Iterable[str],
    kind: Literal["bpe", "wordpiece", "char", "word"] = "bpe",
    vocab_size: int = 8000,
    lowercase: bool = False,
    min_frequency: int = 2,
    initial_alphabet: Iterable[str] = (),
) -> TextTokenizer:
    """Train a tokenizer on ``texts``: a list, or any iterable read once (e.g. a generator over files larger
    than memory; the result does not depend on the texts' order).

    bpe: SentencePiece-style BPE (Metaspace), exact round trip, for translation and generation.
    wordpiece: BERT-style (punctuation split, ## continuations), for classification.
    char: one token per character (vocab = every character seen). word: whole words.
    ``initial_alphabet`` (bpe): characters that get a token even if ``texts`` lack them (a space is "▁").
    """
    length = len(texts) if isinstance(texts, Sequence) else None  # only for progress reporting
    if kind == "char":
        seen: set[str] = set()
        for t in texts:
            seen |= char_set(t)
        chars = sorted(seen)
        vocab = {s: i for i, s in enumerate(SPECIAL_TOKENS)}
        for c in chars:
            vocab.setdefault(c, len(vocab))
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens(SPECIAL_TOKENS)
        return TextTokenizer(tok)
    norm = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = sorted({"\u2581" if c == " " else c for c in initial_alphabet})
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=alphabet, show_progress=False)
    elif kind == "wordpiece":
        # WordPieceTrainer (and BPE with a "##" prefix) break count ties by ids handed out in hash order:
        # a different vocabulary each process. Train plain BPE over words marked with "▁" (deterministic:
        # its alphabet is sorted), then read "▁piece" as a word start and "piece" as "##piece".
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.normalizer = norm
        bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Metaspace()])
        bpe.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False),
            length=length)
        pieces: set[str] = set()
        for t in set(bpe.get_vocab()) - set(SPECIAL_TOKENS):
            if t.startswith("\u2581"):
                if len(t) > 1:
                    pieces.add(t[1:])
            else:
                pieces.add("##" + t)
                if len(t) == 1:
                    pieces.add(t)  # every character can also start a word
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + sorted(pieces))}
        tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="##"))
        tok.normalizer = norm
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return TextTokenizer(tok)
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                            show_progress=False)
    else:
        raise ConfigError(f"tokenizer kind must be bpe, wordpiece, char or word, got {kind!r}")
    tok.normalizer = norm
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return TextTokenizer(tok)
