"""Text for language modelling: the built-in CPython ``pydoc_data.topics``, a text file (``.gz``
accepted), a folder of ``.txt`` files, a table with a text column or a dataset (``NAME[:CONFIG][:SPLIT]``); plus
fast encoding to one token stream and contiguous train/valid/test cuts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from panformer.core.data import TABLE_SUFFIXES, cut_by_fractions, is_saved_dataset, load_table, read_lines
from panformer.core.errors import DataError
from panformer.core.rows import RowSource
from panformer.core.text_stream import read_text_pieces
from panformer.core.token_cache import TokenStream
from panformer.core.tokenizer import TextTokenizer

__all__ = ["pydoc_topics", "read_documents", "document_pieces", "contiguous_split", "encode_stream", "TokenWindows",
           "random_windows", "MAX_EPOCH_BATCHES"]

# An epoch of random windows holds at most this many batches: a corpus of billions of tokens is sampled, not
# swept, and the Trainer's plan of an epoch stays small (only corpora above ~80 M tokens at batch 64 x 128 meet it).
MAX_EPOCH_BATCHES = 10_000

TEXT_COLUMNS = ("text", "content", "document", "sentence", "story")


def pydoc_topics() -> list[str]:
    """The 79 help topics of CPython's ``pydoc_data.topics`` (about 465,000 characters of English
    technical prose and code, Python Software Foundation licence), sorted by topic name."""
    from pydoc_data.topics import topics

    return [topics[k].strip() for k in sorted(topics)]


def _read_text_file(path: Path, what: str) -> str:
    text = "\n".join(read_lines(path, what))
    if not text.strip():
        raise DataError(f"{what}: {path} contains no text")
    return text


def read_documents(source: str, what: str, text_column: str | None = None) -> list[str]:
    """Documents of ``source``: one per text file, one per table row; raises DataError when empty."""
    path = Path(source).expanduser()
    if path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz")))
        if not files:
            raise DataError(f"{what}: folder {path} has no .txt files")
        docs = [t for t in ("\n".join(read_lines(f, what)) for f in files) if t.strip()]
        if not docs:
            raise DataError(f"{what}: every .txt file in {path} is empty")
        return docs
    suffix = "".join(s for s in path.suffixes if s != ".gz").lower()
    if path.is_file() and not any(suffix.endswith(s) for s in TABLE_SUFFIXES):
        return [_read_text_file(path, what)]
    ds = load_table(source, what)
    col = _text_column(ds.column_names, text_column, source, what)
    docs = []
    for i, t in enumerate(ds[col]):
        if t is not None and not isinstance(t, str):
            raise DataError(f"{what} {source}: row {i + 1}: column {col!r} is not text ({type(t).__name__})")
        if t and t.strip():
            docs.append(t)
    if not docs:
        raise DataError(f"{what} {source}: column {col!r} has no text")
    return docs


def _text_column(names: list[str], text_column: str | None, source: str, what: str) -> str:
    col = text_column or next((c for c in TEXT_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise DataError(f"{what} {source}: no text column {col or TEXT_COLUMNS[0]!r} (columns: "
                        f"{', '.join(names)}); name it with --text-column")
    return col


def _row_texts(rows: RowSource, col: str) -> Iterator[list[str]]:
    """Each row's text as a one-piece document; None and empty rows are skipped, other types are errors."""
    i = 0
    for batch in rows.batches([col]):
        for t in batch[col]:
            i += 1
            if t is not None and not isinstance(t, str):
                raise DataError(f"{rows.what} {rows.source}: row {i}: column {col!r} is not text ({type(t).__name__})")
            if t:
                yield [t]


def _streamed_file(path: Path, what: str) -> Iterator[str]:
    rows = RowSource(str(path), what, streaming=True)
    for batch in rows.batches(["text"]):
        yield "".join(batch["text"])


def document_pieces(source: str | None, what: str, text_column: str | None = None,
                    streaming: bool = False) -> Callable[[], Iterator[Iterator[str]]]:
    """The documents of :func:`read_documents` without reading them into memory: a function that starts a
    pass and yields each document as pieces of text (a text file: chunks of the file; a table or hub dataset:
    one row). With ``streaming`` every source goes through ``datasets``' streaming mode (text files through
    its ``text`` builder, line breaks kept, so the same text comes out). Missing sources, folders without
    ``.txt`` files and tables without the text column fail here."""
    if source is None:
        return lambda: ([d] for d in pydoc_topics())
    path = Path(source).expanduser()
    read = (lambda f: _streamed_file(f, what)) if streaming else (lambda f: read_text_pieces(f, what))
    if path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz")))
        if not files:
            raise DataError(f"{what}: folder {path} has no .txt files")
        return lambda: (read(f) for f in files)
    suffix = "".join(s for s in path.suffixes if s != ".gz").lower()
    if path.is_file() and not any(suffix.endswith(s) for s in TABLE_SUFFIXES):
        if path.stat().st_size == 0:
            raise DataError(f"{what}: {path} contains no text")
        return lambda: iter([read(path)])
    rows = RowSource(source, what, streaming=streaming)
    col = _text_column(rows.column_names, text_column, source, what)
    return lambda: _row_texts(rows, col)


def contiguous_split(text: str, fractions: Sequence[float]) -> list[str]:
    """Cut ``text`` into len(fractions)+1 consecutive parts (train first), as nanoGPT does: the
    fractions give the sizes of the later parts. E.g. (0.1,) → first 90 % and last 10 %."""
    return cut_by_fractions(text, fractions, "training text")


def encode_stream(tok: TextTokenizer, text: str, char_level: bool) -> Tensor:
    """``text`` → long (N,) token ids. Character vocabularies use a dict lookup (much faster than the
    tokenizers pipeline on megabytes); unknown characters become ``<unk>``."""
    if char_level:
        return torch.from_numpy(tok.encode_chars(text, np.int64))
    return torch.tensor(tok.encode(text), dtype=torch.long)


class TokenWindows(Dataset):
    """Item ``i`` = ``ids[i : i + block_size + 1]`` (inputs and shifted targets, long), for every start offset;
    ``ids`` is a long tensor or a memory-mapped :class:`core.token_cache.TokenStream`."""

    def __init__(self, ids: Tensor | TokenStream, block_size: int) -> None:
        if ids.numel() < block_size + 1:
            raise DataError(f"the training text has {ids.numel():,} tokens; need more than --block-size "
                            f"({block_size}); pass more text or a smaller --block-size")
        self.ids, self.block_size = ids, block_size

    def __len__(self) -> int:
        return self.ids.numel() - self.block_size

    def __getitem__(self, i: int) -> Tensor:
        return self.ids[i : i + self.block_size + 1]


def random_windows(n_offsets: int, n_tokens: int, block_size: int, batch_size: int, seed: int, epoch: int,
                   max_batches: int = MAX_EPOCH_BATCHES) -> list[list[int]]:
    """One epoch = ``n_tokens / (block_size * batch_size)`` batches (at most ``max_batches``) of uniformly
    random start offsets (nanoGPT's sampling), a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n_batches = min(max(1, n_tokens // (block_size * batch_size)), max_batches)
    return torch.randint(0, n_offsets, (n_batches, batch_size), generator=g).tolist()
