"""Text for language modelling: the built-in CPython ``pydoc_data.topics``, a text file (``.gz``
accepted), a folder of ``.txt`` files, a table with a text column or a dataset (``NAME[:CONFIG][:SPLIT]``); plus
fast encoding to one token stream and contiguous train/valid/test cuts."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from panformer.core.data import TABLE_SUFFIXES, cut_by_fractions, is_saved_dataset, load_table, read_lines
from panformer.core.errors import DataError
from panformer.core.tokenizer import TextTokenizer

__all__ = ["pydoc_topics", "read_documents", "contiguous_split", "encode_stream", "TokenWindows", "random_windows"]

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
    col = text_column or next((c for c in TEXT_COLUMNS if c in ds.column_names), None)
    if col is None or col not in ds.column_names:
        raise DataError(f"{what} {source}: no text column {col or TEXT_COLUMNS[0]!r} (columns: "
                        f"{', '.join(ds.column_names)}); name it with --text-column")
    docs = []
    for i, t in enumerate(ds[col]):
        if t is not None and not isinstance(t, str):
            raise DataError(f"{what} {source}: row {i + 1}: column {col!r} is not text ({type(t).__name__})")
        if t and t.strip():
            docs.append(t)
    if not docs:
        raise DataError(f"{what} {source}: column {col!r} has no text")
    return docs


def contiguous_split(text: str, fractions: Sequence[float]) -> list[str]:
    """Cut ``text`` into len(fractions)+1 consecutive parts (train first), as nanoGPT does: the
    fractions give the sizes of the later parts. E.g. (0.1,) → first 90 % and last 10 %."""
    return cut_by_fractions(text, fractions, "training text")


def encode_stream(tok: TextTokenizer, text: str, char_level: bool) -> Tensor:
    """``text`` → long (N,) token ids. Character vocabularies use a dict lookup (much faster than the
    tokenizers pipeline on megabytes); unknown characters become ``<unk>``."""
    if char_level:
        vocab, unk = tok.tok.get_vocab(), tok.unk_id
        return torch.tensor([vocab.get(c, unk) for c in text], dtype=torch.long)
    return torch.tensor(tok.encode(text), dtype=torch.long)


class TokenWindows(Dataset):
    """Item ``i`` = ``ids[i : i + block_size + 1]`` (inputs and shifted targets), for every start offset."""

    def __init__(self, ids: Tensor, block_size: int) -> None:
        if ids.numel() < block_size + 1:
            raise DataError(f"the training text has {ids.numel():,} tokens; need more than --block-size "
                            f"({block_size}); pass more text or a smaller --block-size")
        self.ids, self.block_size = ids, block_size

    def __len__(self) -> int:
        return self.ids.numel() - self.block_size

    def __getitem__(self, i: int) -> Tensor:
        return self.ids[i : i + self.block_size + 1]


def random_windows(n_offsets: int, n_tokens: int, block_size: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch = ``n_tokens / (block_size * batch_size)`` batches of uniformly random start offsets
    (nanoGPT's sampling), a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n_batches = max(1, n_tokens // (block_size * batch_size))
    return torch.randint(0, n_offsets, (n_batches, batch_size), generator=g).tolist()
