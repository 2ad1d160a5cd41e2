"""translation's data through a token cache (``--cache-dir`` / ``--streaming``): parallel text larger than
memory (line-aligned files, a table, a hub dataset) is tokenised once, every pair in file order, and the
training pairs are read back from the memory-mapped cache; one cache for a shared vocabulary, one per
side otherwise. The split, the tokenizers (trained on the training pairs) and the examples are those of the
in-memory path. Validation and test pairs are read into memory as texts (BLEU needs the references)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from panformer.core.records import CachedRecords, open_table_cache, split_rows, take_rows
from panformer.core.token_cache import TokenCache, cache_folder, cache_root, source_fingerprint
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

from .data import check_pair

__all__ = ["TranslationCache"]


def _resolved(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


class TranslationCache:
    """``rows`` (a :class:`.data.ParallelLines`, :class:`.data.ParallelTable` or built-in
    :class:`core.rows.ListRows` with columns ``source``, ``target``) as one or two cached tables; ``valid`` /
    ``test``: pairs given apart (in memory) or None."""

    def __init__(self, args: Any, rows: Any, valid: Any, test: Any) -> None:
        self.args, self.rows, self.valid, self.test = args, rows, valid, test
        a = args
        files = list(getattr(rows, "files", None) or ([rows.source] if hasattr(rows, "rows") else []))
        prints = [source_fingerprint(f) for f in files] or [source_fingerprint(None, builtin_size=a.builtin_size)]
        self.identity = {"sources": [_resolved(f) for f in files], "streaming": a.streaming,
                         "langs": [a.source_lang, a.target_lang]}
        self.key = {"sources": prints, "columns": [a.source_column, a.target_column], "streaming": a.streaming,
                    "langs": [a.source_lang, a.target_lang]}
        names = getattr(rows, "names", ("source", "target"))
        unit = "line" if type(rows).__name__ == "ParallelLines" else "row"
        self.check = lambda i, row: check_pair(i, row.get("source", "-"), row.get("target", "-"), *names, unit)

    def split(self, n: int) -> dict[str, Any]:
        a = self.args
        return split_rows(n, valid=self.valid, test=self.test, valid_fraction=a.valid_fraction,
                          test_fraction=a.test_fraction, seed=a.seed, max_examples=a.max_examples,
                          size=lambda part: len(part[0]), valid_hint="--valid-data / --valid-source-file")

    def _open(self, side: str, columns: list[str], tokenizer: TextTokenizer | None) -> TokenCache:
        a = self.args
        recipe = {"kind": a.tokenizer, "vocab_size": a.vocab_size, "lowercase": a.lowercase, "side": side,
                  "split": [a.seed, a.valid_fraction if self.valid is None else 0.0,
                            a.test_fraction if self.test is None else 0.0, a.max_examples]}
        return open_table_cache(
            cache_folder(cache_root(a), "translation", {**self.identity, "side": side}), {**self.key, "side": side},
            self.rows, columns, train_rows=lambda n: self.split(n)["train"], tokenizer=tokenizer,
            recipe=None if tokenizer else recipe, check=self.check,
            fit=lambda texts: train_tokenizer(texts, kind=a.tokenizer, vocab_size=a.vocab_size, lowercase=a.lowercase))

    def open(self, src_tok: TextTokenizer | None, tgt_tok: TextTokenizer | None) -> tuple[TokenCache, TokenCache]:
        """(source cache, target cache): the same one with a shared vocabulary. Tokenizers None: trained."""
        if self.args.shared_vocab:
            cache = self._open("both", ["source", "target"], src_tok)
            return cache, cache
        return self._open("source", ["source"], src_tok), self._open("target", ["target"], tgt_tok)

    def splits(self, caches: tuple[TokenCache, TokenCache], make: Callable[[np.ndarray, np.ndarray], Any],
               lengths: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[dict[str, Any], list[int]]:
        """``({"train": CachedRecords of make(source ids, target ids), "valid"/"test": (sources, targets) or
        None}``, the training examples' lengths from ``lengths(source lengths, target lengths)``)."""
        parts = self.split(caches[0].meta["rows"])
        src, tgt = caches[0].ragged("source"), caches[1].ragged("target")
        rows = parts["train"]
        out: dict[str, Any] = {"train": CachedRecords(rows, lambda r: make(src[r], tgt[r]))}
        for split in ("valid", "test"):
            part = parts[split]
            if isinstance(part, np.ndarray):  # pairs of --data: their texts, read back from the source
                got = take_rows(caches[0], self.rows, part, ["source", "target"])
                part = (got["source"], got["target"])
            out[split] = part
        return out, lengths(src.lengths[rows], tgt.lengths[rows]).tolist()
