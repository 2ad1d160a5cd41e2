"""Text larger than memory as a stream of pieces (``str`` chunks of a few MB): read, joined, cut and
encoded exactly as the in-memory string would be.

Each function reproduces an operation on the whole string: :func:`join_documents` is
``sep.join(d.strip("\\n") for d in docs if d.strip())``, :func:`cut_pieces` slices at character
positions, :func:`paragraphs` is ``text.split(sep)`` and :func:`encode_pieces` is ``tokenizer.encode(text)``:
a tokenizer's pre-tokenizers (Metaspace, GPT-2's byte-level regex, BERT's whitespace split) never join a
non-space character with the space after it, so text cut just before such a space encodes to the same ids
piece by piece (:func:`safe_chunks`). Pass a *factory* (a function returning a fresh iterator) where a
caller needs several passes.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import DataError
from .tokenizer import TextTokenizer

__all__ = ["read_text_pieces", "iter_lines", "join_documents", "count_chars", "cut_pieces", "safe_chunks", "paragraphs",
           "encode_pieces", "PIECE_CHARS"]

PIECE_CHARS = 1 << 23  # characters read at a time (8 Mi: 8-32 MB of str)
CHUNK_CHARS = 1 << 14  # characters per tokenizer call
CHUNKS_PER_BATCH = 64  # tokenizer calls per encode_batch (it spreads them over the CPU cores)


def read_text_pieces(path: str | Path, what: str, piece_chars: int | None = None) -> Iterator[str]:
    """A UTF-8 text file (``.gz`` accepted) in pieces of ``piece_chars`` (default ``PIECE_CHARS``), newlines
    universal as in ``open(path).read()``."""
    p, piece_chars = Path(path), piece_chars or PIECE_CHARS
    opener = gzip.open if p.suffix == ".gz" else open
    done = 0
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            while True:
                s = f.read(piece_chars)
                if not s:
                    return
                done += len(s)
                yield s
    except UnicodeDecodeError as e:
        raise DataError(f"{what}: {p} is not valid UTF-8 text (after character {done:,}: {e.reason})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{what}: cannot read {p} ({e})") from None


def iter_lines(path: str | Path, what: str) -> Iterator[str]:
    """The lines of :func:`core.data.read_lines`, one at a time (universal newlines, line ends dropped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: file not found: {p}")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{what}: {p} is not valid UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{what}: cannot read {p} ({e})") from None


def join_documents(docs: Iterable[Iterable[str]], sep: str = "\n\n") -> Iterator[str]:
    """Pieces of ``sep.join(d.strip("\\n") for d in docs if d.strip())``, each document given as pieces."""
    first = True
    for pieces in docs:
        started, pending = False, ""
        for piece in pieces:
            if not piece:
                continue
            if not started:
                pending += piece
                if pending.isspace():  # nothing but whitespace so far: maybe an empty document
                    continue
                started, text, pending = True, pending.lstrip("\n"), ""
                if not first:
                    yield sep
                first = False
            else:
                text, pending = pending + piece, ""
            body = text.rstrip("\n")  # trailing newlines wait: they belong to the text only if more follows
            pending = text[len(body):]
            if body:
                yield body


def count_chars(pieces: Iterable[str]) -> int:
    return sum(len(p) for p in pieces)


def cut_pieces(pieces: Iterable[str], bounds: Sequence[int]) -> Iterator[tuple[int, str]]:
    """``(segment, piece)``: segment k holds characters ``bounds[k-1] .. bounds[k]`` (segment 0 starts at 0,
    the last one, ``len(bounds)``, runs to the end). Empty segments yield nothing."""
    seg, pos = 0, 0
    for piece in pieces:
        while piece:
            if seg < len(bounds) and pos + len(piece) > bounds[seg]:
                k = max(bounds[seg] - pos, 0)
                if k:
                    yield seg, piece[:k]
                piece, pos, seg = piece[k:], pos + k, seg + 1
            else:
                yield seg, piece
                pos, piece = pos + len(piece), ""


def _next_safe_cut(s: str, start: int) -> int:
    """The first index >= start (and > 0) where ``s[i] == " "`` follows a non-space character, or -1."""
    i = s.find(" ", max(start, 1))
    while i != -1 and s[i - 1].isspace():
        i = s.find(" ", i + 1)
    return i


def _last_safe_cut(s: str) -> int:
    i = s.rfind(" ")
    while i > 0 and s[i - 1].isspace():
        i = s.rfind(" ", 0, i)
    return i if i > 0 else -1


def safe_chunks(pieces: Iterable[str], chunk_chars: int | None = None, max_chars: int | None = None) -> Iterator[str]:
    """The same text re-cut into chunks of about ``chunk_chars`` (default ``CHUNK_CHARS``) that each end just
    before a space that follows a non-space character (see the module docstring). A stretch of ``max_chars``
    (default 64 x chunk_chars) without such a space is cut where it is."""
    chunk_chars = chunk_chars or CHUNK_CHARS
    max_chars = max_chars or 64 * chunk_chars
    carry = ""
    for piece in pieces:
        buf, start = carry + piece, 0
        while len(buf) - start >= chunk_chars:
            cut = _next_safe_cut(buf, start + chunk_chars)
            if cut == -1:
                if len(buf) - start < max_chars:
                    break
                cut = start + max_chars
            yield buf[start:cut]
            start = cut
        carry = buf[start:]
    if carry:
        yield carry


def paragraphs(pieces: Iterable[str], sep: str = "\n\n", max_chars: int = 1 << 22) -> Iterator[str]:
    """``"".join(pieces).split(sep)``, streamed. A paragraph longer than ``max_chars`` comes in parts cut at
    safe points (the same words for a tokenizer trainer)."""
    carry = ""
    for piece in pieces:
        parts = (carry + piece).split(sep)
        carry = parts.pop()
        yield from parts
        if len(carry) > max_chars and (cut := _last_safe_cut(carry)) > 0:
            yield carry[:cut]
            carry = carry[cut:]
    yield carry


def encode_pieces(tok: TextTokenizer, pieces: Iterable[str], char_level: bool,
                  dtype: np.dtype | type = np.int64) -> Iterator[np.ndarray]:
    """Arrays of ids whose concatenation is the encoding of ``"".join(pieces)``: one id per character with a
    character vocabulary (:meth:`TextTokenizer.encode_chars`), else ``tokenizer.encode`` over safe chunks,
    ``CHUNKS_PER_BATCH`` per ``encode_batch`` call."""
    if char_level:
        for piece in pieces:
            yield tok.encode_chars(piece, dtype)
        return
    batch: list[str] = []
    for chunk in safe_chunks(pieces):
        batch.append(chunk)
        if len(batch) >= CHUNKS_PER_BATCH:
            yield _encode_batch(tok, batch, dtype)
            batch = []
    if batch:
        yield _encode_batch(tok, batch, dtype)


def _encode_batch(tok: TextTokenizer, chunks: list[str], dtype: np.dtype | type) -> np.ndarray:
    encs = tok.tok.encode_batch(chunks, add_special_tokens=False)
    return np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encs]) if encs else np.zeros(0, dtype)
