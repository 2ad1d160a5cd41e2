"""generation's data through a token cache (``--cache-dir`` / ``--streaming``): a corpus larger than memory is
tokenised once into memory-mapped token streams (``train``, ``valid``, ``test``) and windows are sampled
from them, as nanoGPT does with OpenWebText.

The streams hold exactly the ids of the in-memory path (same seed: same batches): documents joined with a
blank line, cut at the same character positions, the tokenizer trained on the same training text. The
build reads the sources in passes, never whole: (1) count the characters, when a fraction of ``--data``
is cut off for validation or testing; (2) train the tokenizer on the training part (characters, or BPE over
its paragraphs), unless one is given; (3) encode every split into the cache.
"""
from __future__ import annotations

import itertools
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from panformer.core.data import cut_by_fractions
from panformer.core.errors import DataError
from panformer.core.text_stream import count_chars, cut_pieces, encode_pieces, join_documents, paragraphs
from panformer.core.token_cache import (CacheWriter, TokenCache, cache_folder, cache_log, cache_root,
                                        open_token_cache, source_fingerprint, token_dtype)
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

from .data import document_pieces

__all__ = ["CorpusCache"]

SPLITS = ("train", "valid", "test")


class CorpusCache:
    """The splits of ``args`` (``data``/``valid_data``/``test_data``, fractions, ``max_chars``, ``text_column``,
    ``streaming``, ``cache_dir``) as token streams. The constructor checks the sources (cheap); :meth:`open`
    builds or reuses the cache."""

    def __init__(self, args: Any) -> None:
        a = self.args = args
        given = {"train": a.data, "valid": a.valid_data, "test": a.test_data}
        flags = {"train": "--data", "valid": "--valid-data", "test": "--test-data"}
        self.sources = {s: src for s, src in given.items() if s == "train" or src}
        self.docs = {s: document_pieces(src, flags[s], a.text_column, a.streaming) for s, src in self.sources.items()}
        self.fractions = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        resolved = {s: str(Path(src).expanduser().resolve()) if src and Path(src).expanduser().exists() else src
                    for s, src in self.sources.items()}
        self.folder = cache_folder(cache_root(a), "generation", {"sources": resolved, "streaming": a.streaming})
        self.key = {"sources": {s: source_fingerprint(src, python=platform.python_version() if src is None else None)
                                for s, src in self.sources.items()},
                    "text_column": a.text_column, "streaming": a.streaming, "fractions": self.fractions,
                    "max_chars": a.max_chars}

    def recipe(self) -> dict[str, Any]:
        a = self.args
        if a.tokenizer == "char":
            return {"kind": "char"}
        return {"kind": a.tokenizer, "vocab_size": a.vocab_size, "lowercase": a.lowercase}

    def open(self, tokenizer: TextTokenizer | None, char_level: bool) -> TokenCache:
        """The cache; with ``tokenizer=None`` the build trains one by :meth:`recipe` (``cache.tokenizer``)."""
        return open_token_cache(self.folder, self.key, lambda w: self._build(w, char_level),
                                tokenizer=tokenizer, tokenizer_recipe=None if tokenizer else self.recipe())

    def _text(self, split: str) -> Callable[[], Iterator[str]]:
        return lambda: join_documents(self.docs[split]())

    def _segments(self) -> tuple[list[int], dict[int, str | None]]:
        """Cut points of ``--data`` (pass 1 counts its characters) and the split each segment goes to."""
        bounds: list[int] = []
        if any(self.fractions):
            t0 = time.perf_counter()
            n = count_chars(self._text("train")())
            if n == 0:
                raise DataError(f"--data: {self.sources['train']} contains no text")
            cache_log(f"token cache {self.folder.name}: counted {n:,} characters in {time.perf_counter() - t0:.1f} s")
            parts = cut_by_fractions(range(n), self.fractions, "training text")
            bounds = [len(parts[0]), len(parts[0]) + len(parts[1])]
        names: dict[int, str | None] = dict(enumerate(SPLITS))
        limit = self.args.max_chars
        if limit and (not bounds or limit < bounds[0]):  # --max-chars: the training text stops early
            bounds = [limit] + bounds
            names = {0: "train", 1: None, 2: "valid", 3: "test"}
        return bounds, names

    def _build(self, w: CacheWriter, char_level: bool) -> None:
        a = self.args
        bounds, names = self._segments()

        def train_text() -> Iterator[str]:
            for seg, piece in cut_pieces(self._text("train")(), bounds):
                if names.get(seg) != "train":
                    return  # the training text is the first segment: stop reading there
                yield piece

        if w.tokenizer is None:  # pass 2: train the tokenizer on the training text
            t0 = time.perf_counter()
            if a.tokenizer == "char":
                w.tokenizer = train_tokenizer(train_text(), kind="char")
            else:
                w.tokenizer = train_tokenizer(paragraphs(train_text()), kind=a.tokenizer, vocab_size=a.vocab_size,
                                              lowercase=a.lowercase)
            cache_log(f"token cache {self.folder.name}: trained the {a.tokenizer} tokenizer ({w.tokenizer.vocab_size:,} "
                      f"tokens) in {time.perf_counter() - t0:.1f} s")
        tok = w.tokenizer
        dtype = token_dtype(tok.vocab_size)
        streams = {s: w.stream(s, dtype) for s in SPLITS if s in self.sources or s in names.values()}
        chars = dict.fromkeys(streams, 0)

        def counted(pieces: Iterator[str], split: str) -> Iterator[str]:
            for p in pieces:
                chars[split] += len(p)
                yield p

        # pass 3: encode; the segments of --data come in order, each encoded on its own as in memory
        for seg, group in itertools.groupby(cut_pieces(self._text("train")(), bounds), key=lambda x: x[0]):
            name = names.get(seg)
            if name is None:
                for _ in group:  # text past --max-chars
                    pass
                continue
            for ids in encode_pieces(tok, counted((p for _, p in group), name), char_level, dtype):
                streams[name].append(ids)
        for split in ("valid", "test"):
            if split in self.sources:
                for ids in encode_pieces(tok, counted(self._text(split)(), split), char_level, dtype):
                    streams[split].append(ids)
        w.meta["chars"] = chars
