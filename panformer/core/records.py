"""Tables of records (one row per example) through a token cache: the seeded split by row number, the passes
a build makes over the rows (count, texts of the training rows), and a map-style dataset that reads the
training examples back from the cache's memory-mapped fields.

A build keeps every row in file order (the cache does not depend on the split); the split picks row
numbers exactly as :func:`core.data.assemble_splits` picks list positions in memory, so the same seed gives
the same examples in the same order.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset

from .checkpoint import atomic_write_json
from .data import assemble_splits
from .errors import DataError
from .token_cache import CacheWriter, TokenCache, open_token_cache, token_dtype
from .tokenizer import TextTokenizer

__all__ = ["CachedRecords", "split_rows", "count_rows", "masked_texts", "row_mask", "open_table_cache", "take_rows"]

Batches = Callable[[], Iterator[dict[str, list]]]  # a fresh pass over the rows, in batches of columns


class CachedRecords(Dataset):
    """Item ``i`` = ``make(index[i])``: the example of row ``index[i]``, read from the cache when asked."""

    def __init__(self, index: np.ndarray, make: Callable[[int], Any]) -> None:
        self.index, self.make = np.asarray(index, dtype=np.int64), make

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Any:
        return self.make(int(self.index[i]))


def split_rows(n: int, *, valid: Any = None, test: Any = None, valid_fraction: float, test_fraction: float,
               seed: int, max_examples: int | None, valid_hint: str = "--valid-data",
               size: Callable[[Any], int] = len) -> dict[str, Any]:
    """:func:`core.data.assemble_splits` over row numbers: ``{"train", "valid", "test"}`` int64 arrays of rows
    (or the given ``valid`` / ``test`` data itself, ``size`` measuring it), None for an empty split."""
    def measure(part: Any) -> int:
        return len(part) if isinstance(part, np.ndarray) else size(part)

    return assemble_splits(n, lambda ids: np.asarray(ids, dtype=np.int64), valid=valid, test=test,
                           valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed,
                           max_examples=max_examples, size=measure, valid_hint=valid_hint)


def count_rows(batches: Iterable[dict[str, list]]) -> int:
    return sum(len(next(iter(b.values()))) for b in batches)


def row_mask(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def masked_texts(batches: Iterable[dict[str, list]], mask: np.ndarray, columns: Sequence[str]) -> Iterator[str]:
    """The texts of ``columns`` in the rows where ``mask`` is true, in file order (a tokenizer trainer's
    result does not depend on the order)."""
    start = 0
    for batch in batches:
        n = len(batch[columns[0]])
        keep = np.flatnonzero(mask[start : start + n]).tolist()
        for col in columns:
            values = batch[col]
            for i in keep:
                yield values[i]
        start += n


def open_table_cache(folder: Any, key: Any, rows: Any, text_columns: Sequence[str], *,
                     train_rows: Callable[[int], np.ndarray], tokenizer: TextTokenizer | None = None,
                     recipe: Any = None, fit: Callable[[Iterator[str]], TextTokenizer] | None = None,
                     value_columns: dict[str, Callable[[Any], int]] | None = None,
                     check: Callable[[int, dict[str, Any]], None] | None = None,
                     meta: Callable[[], dict[str, Any]] | None = None) -> TokenCache:
    """A token cache of a table: every row of ``rows`` (a :class:`core.rows.RowSource`-like object) in file
    order, each of ``text_columns`` tokenised into a ragged field of plain ids (no BOS/EOS, not truncated:
    those are applied when reading, :meth:`TextTokenizer.wrap`), each of ``value_columns`` mapped to an int
    array by its function; ``meta["rows"]`` = the number of rows.

    ``check(row_number, row)`` validates a row (raise DataError), in every pass. With ``recipe`` the build
    calls ``fit(texts)`` on the texts of ``text_columns`` in the rows ``train_rows(n)`` (one pass; a first
    pass counts the rows of a stream); then one pass encodes. See :func:`core.token_cache.open_token_cache`.
    """
    columns = list(text_columns) + list(value_columns or {})

    def checked() -> Iterator[dict[str, list]]:
        start = 0
        for batch in rows.batches(columns):
            if check is not None:
                for i in range(len(batch[columns[0]])):
                    check(start + i + 1, {c: batch[c][i] for c in columns})
            start += len(batch[columns[0]])
            yield batch

    def build(w: CacheWriter) -> None:
        n = rows.num_rows if rows.num_rows is not None else count_rows(checked())
        if n == 0:
            raise DataError(f"{rows.what}: {rows.source} has no rows")
        if w.tokenizer is None:
            w.tokenizer = fit(masked_texts(checked(), row_mask(n, train_rows(n)), list(text_columns)))
        tok = w.tokenizer
        fields = {c: w.ragged(c, token_dtype(tok.vocab_size)) for c in text_columns}
        values: dict[str, list[np.ndarray]] = {c: [] for c in value_columns or {}}
        for batch in checked():
            for c in text_columns:
                fields[c].extend(e.ids for e in tok.tok.encode_batch(batch[c], add_special_tokens=False))
            for c, fn in (value_columns or {}).items():
                values[c].append(np.fromiter((fn(v) for v in batch[c]), dtype=np.int32, count=len(batch[c])))
        for c, v in values.items():
            w.array(c, np.concatenate(v) if v else np.zeros(0, np.int32))
        w.meta.update(rows=n, **(meta() if meta else {}))

    return open_token_cache(folder, key, build, tokenizer=tokenizer, tokenizer_recipe=recipe)


def take_rows(cache: TokenCache, rows: Any, indices: np.ndarray, columns: Sequence[str]) -> dict[str, list]:
    """``rows.take(indices, columns)`` (e.g. the validation texts); for a stream, which needs a pass over the
    whole source, the result is kept in the cache folder beside the tokens and reused while the cache is."""
    if not getattr(rows, "streaming", False):
        return rows.take(indices, columns)
    digest = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes() + json.dumps(list(columns)).encode())
    path = cache.folder / f"rows-{digest.hexdigest()[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    got = rows.take(indices, columns)
    atomic_write_json(path, got, indent=None)
    return got
