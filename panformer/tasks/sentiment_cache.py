"""sentiment's data through a token cache (``--cache-dir`` / ``--streaming``): a table larger than memory is
tokenised once (every row, file order; labels as codes) and the training examples are read back from the
memory-mapped cache. The split, the tokenizer (trained on the training rows) and the examples are those of
the in-memory path: same seed, same batches. Validation and test rows are read into memory as texts (the
evaluation and ``predict`` code paths are unchanged)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from panformer.core.records import CachedRecords, open_table_cache, split_rows, take_rows
from panformer.core.rows import ListRows, RowSource
from panformer.core.token_cache import TokenCache, cache_folder, cache_root, source_fingerprint
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

__all__ = ["SentimentCache", "label_key"]


def label_key(v: Any) -> tuple[str, Any]:
    """Sort order of labels (strings and numbers apart)."""
    return (str(type(v)), v)


class SentimentCache:
    """``args.data`` as a cached table; ``read_split(source, split)`` reads a given validation or test source
    into memory and ``check(what, source, row, text, label, text_col, label_col)`` validates a row (both the
    task's)."""

    def __init__(self, args: Any, text_columns: tuple[str, ...], builtin: Callable[[], tuple[list, list]],
                 read_split: Callable[[str | None, str], tuple[list, list] | None], check: Callable[..., None]) -> None:
        a = self.args = args
        if a.data is None:
            texts, labels = builtin()
            self.rows: Any = ListRows({"text": texts, "label": labels})
            self.text_col, self.label_col = "text", "label"
        else:
            self.rows = RowSource(a.data, "--data", streaming=a.streaming)
            names = self.rows.column_names
            self.text_col = a.text_column or next((c for c in text_columns if c in names), text_columns[0])
            self.label_col = a.label_column
            self.rows.require({self.text_col: "--text-column", self.label_col: "--label-column"})
        self.valid, self.test = read_split(a.valid_data, "valid"), read_split(a.test_data, "test")
        self._check = lambda i, row: check("--data", self.rows.source, i, row[self.text_col], row[self.label_col],
                                           self.text_col, self.label_col)
        resolved = str(Path(a.data).expanduser().resolve()) if a.data and Path(a.data).expanduser().exists() else a.data
        self.folder = cache_folder(cache_root(a), "sentiment", {"source": resolved, "streaming": a.streaming})
        self.key = {"source": source_fingerprint(a.data), "columns": [self.text_col, self.label_col],
                    "streaming": a.streaming}

    def split(self, n: int) -> dict[str, Any]:
        a = self.args
        return split_rows(n, valid=self.valid, test=self.test, valid_fraction=a.valid_fraction,
                          test_fraction=a.test_fraction, seed=a.seed, max_examples=a.max_examples,
                          size=lambda part: len(part[0]))

    def open(self, tokenizer: TextTokenizer | None) -> TokenCache:
        """Build or reuse the cache; ``tokenizer=None``: trained on the training rows (``cache.tokenizer``)."""
        a = self.args
        codes: dict[Any, int] = {}
        recipe = {"kind": a.tokenizer, "vocab_size": a.vocab_size, "lowercase": a.lowercase,
                  "split": [a.seed, a.valid_fraction if self.valid is None else 0.0,
                            a.test_fraction if self.test is None else 0.0, a.max_examples]}
        return open_table_cache(
            self.folder, self.key, self.rows, [self.text_col], train_rows=lambda n: self.split(n)["train"],
            tokenizer=tokenizer, recipe=None if tokenizer else recipe,
            fit=lambda texts: train_tokenizer(texts, a.tokenizer, a.vocab_size, lowercase=a.lowercase),
            value_columns={self.label_col: lambda y: codes.setdefault(y.item() if hasattr(y, "item") else y, len(codes))},
            check=self._check, meta=lambda: {"label_values": list(codes)})

    def train_labels(self, cache: TokenCache) -> list[Any]:
        """The labels of the training rows, sorted (the classes, as in memory)."""
        values = cache.meta["label_values"]
        rows = self.split(cache.meta["rows"])["train"]
        return sorted({values[c] for c in np.unique(cache.array(self.label_col)[rows]).tolist()}, key=label_key)

    def splits(self, cache: TokenCache, labels: list[Any], encode: Callable[[np.ndarray], list[int]],
               lengths: Callable[[np.ndarray], np.ndarray]) -> tuple[dict[str, Any], list[int]]:
        """``({"train": CachedRecords of (ids, label index), "valid"/"test": (texts, labels) or None}``, the
        training examples' lengths). ``encode(plain ids)`` gives a text's model ids, ``lengths`` their lengths."""
        parts = self.split(cache.meta["rows"])
        ids, codes = cache.ragged(self.text_col), cache.array(self.label_col)
        index = {v: i for i, v in enumerate(labels)}
        lut = np.array([index.get(v, -1) for v in cache.meta["label_values"]], dtype=np.int64)
        train = CachedRecords(parts["train"], lambda r: (encode(ids[r]), int(lut[codes[r]])))
        out: dict[str, Any] = {"train": train}
        values = cache.meta["label_values"]
        for split in ("valid", "test"):
            part = parts[split]
            if isinstance(part, np.ndarray):  # rows of --data: their texts, read back from the source
                got = take_rows(cache, self.rows, part, [self.text_col])
                part = (got[self.text_col], [values[codes[r]] for r in part.tolist()])
            out[split] = part
        return out, lengths(ids.lengths[parts["train"]]).tolist()
