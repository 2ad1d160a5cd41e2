"""recommendation's data through a token cache (``--cache-dir`` / ``--streaming``): interactions larger than
memory are read in chunks, grouped into per-user item sequences (time order, ties in file order), filtered
and encoded with the item vocabulary, and stored as one ragged field (users in the order the in-memory
``{user: items}`` dict has them); training windows and evaluation histories are read back from the
memory-mapped cache.

The build holds the interactions as numpy codes while it groups them (about 24 bytes each, against a few
hundred for the in-memory path's frames and lists of strings); item and user ids are kept once each.
Table and ``.inter`` sources take two passes (the first decides, as the in-memory path does over the whole
column, whether ids are integers and times numbers); SASRec ``.txt`` takes one.
"""
from __future__ import annotations

import collections.abc
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from panformer.core.errors import DataError
from panformer.core.records import CachedRecords
from panformer.core.rows import RowSource
from panformer.core.text_stream import iter_lines
from panformer.core.token_cache import (CacheWriter, RaggedArray, TokenCache, cache_folder, cache_root,
                                        open_token_cache, source_fingerprint, token_dtype)

from .data import Columns, ItemVocab, _clean_ids, _columns, _ids, _rated, _times, sasrec_pair, window_ends

__all__ = ["SequenceCache", "LeaveOneOut", "cached_windows"]

CHUNK_ROWS = 1 << 16

Chunk = tuple[list[str], list[str], np.ndarray]  # users, items (canonical strings), times


def _sasrec_chunks(path: Path, what: str) -> Iterator[Chunk]:
    """SASRec ``user item`` lines (the checks of :func:`.data.read_sasrec_txt`); time = line number."""
    users: list[str] = []
    items: list[str] = []
    n = 0
    for n, line in enumerate(iter_lines(path, what), 1):
        pair = sasrec_pair(line, n, path, what)
        if pair is None:
            continue
        users.append(pair[0])
        items.append(pair[1])
        if len(users) == CHUNK_ROWS:
            yield users, items, np.arange(n - len(users), n, dtype=np.float64)
            users, items = [], []
    if users:
        yield users, items, np.arange(n - len(users), n, dtype=np.float64)


def _frames(source: str, kind: str, what: str, streaming: bool) -> Iterator[Any]:
    """Pandas frames of ``CHUNK_ROWS`` rows: a RecBole ``.inter`` file (read as in memory: strings), or a table."""
    import pandas as pd

    if kind == "inter":
        try:
            for df in pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False, quoting=3, chunksize=CHUNK_ROWS):
                df.columns = [c.split(":")[0] for c in df.columns]
                yield df
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise DataError(f"{what}: cannot parse {source} as a RecBole .inter file ({type(e).__name__}: {e})") from None
        return
    rows = RowSource(source, what, streaming=streaming)
    for batch in rows.batches(rows.column_names, CHUNK_ROWS):
        yield pd.DataFrame(batch)


def _table_chunks(source: str, kind: str, cols: Columns, what: str, streaming: bool) -> Iterator[Chunk]:
    """Two passes over the frames: the first decides the id types and whether times are numbers (over every
    rated row, as in memory), the second converts."""
    n_rows = n_kept = 0
    ints = {"user": 0, "item": 0}
    numeric = True
    names = None
    for df in _frames(source, kind, what, streaming):
        names = names or _columns(df, cols, source, what)
        ucol, icol, tcol, rcol = names
        n_rows += len(df)
        df = _rated(df, rcol, cols.min_rating, source, what, n_rows - len(df))
        for key, col in (("user", ucol), ("item", icol)):
            ints[key] += sum(_clean_ids(df[col].tolist(), col, source, what, n_kept)[1])
        if numeric:
            import pandas as pd

            numeric = bool(pd.to_numeric(pd.Series(df[tcol].tolist()), errors="coerce").notna().all())
        n_kept += len(df)
    if names is None or n_rows == 0:
        raise DataError(f"{what} {source}: no rows")
    if n_kept == 0:
        raise DataError(f"{what} {source}: no interaction has {names[3]} >= {cols.min_rating} (--min-rating)")
    modes = {k: cols.id_type if cols.id_type != "auto" else ("int" if v >= 0.9 * n_kept else "token")
             for k, v in ints.items()}
    ucol, icol, tcol, rcol = names
    seen = done = 0
    for df in _frames(source, kind, what, streaming):
        seen += len(df)
        df = _rated(df, rcol, cols.min_rating, source, what, seen - len(df))
        yield (_ids(df[ucol].tolist(), ucol, modes["user"], source, what, done),
               _ids(df[icol].tolist(), icol, modes["item"], source, what, done),
               _times(df[tcol].tolist(), tcol, source, what, done, numeric))
        done += len(df)


def interaction_chunks(source: str | None, cols: Columns, what: str, streaming: bool) -> Callable[[], Iterator[Chunk]]:
    """A function starting a pass over the interactions of :func:`.data.read_interactions`'s sources."""
    if source is None:  # built-in MovieLens-100K (tasks.builtin_data)
        from panformer.tasks.builtin_data import MOVIELENS, builtin_file

        path = builtin_file(MOVIELENS)
        return lambda: _table_chunks(str(path), "inter", cols, "built-in MovieLens-100K", False)
    p = Path(source).expanduser()
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if len(inters) != 1:
            raise DataError(f"{what}: folder {p} must hold exactly one RecBole .inter file (found {len(inters)})")
        p = inters[0]
    suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if p.exists() and p.stat().st_size == 0:
        raise DataError(f"{what} {p}: the file is empty")
    if suffix == ".txt":
        if not p.is_file():
            raise DataError(f"{what}: file not found: {source}")
        return lambda: _sasrec_chunks(p, what)
    if suffix == ".inter":
        return lambda: _table_chunks(str(p), "inter", cols, what, False)
    RowSource(source, what, streaming=streaming)  # a missing file, an unknown type: fail now
    return lambda: _table_chunks(source, "table", cols, what, streaming)


def _group(chunks: Iterator[Chunk]) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(item codes grouped by user in first-seen-in-time order, each user's count, item names by code, n)."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u_parts, i_parts, t_parts = [], [], []
    for us, its, ts in chunks:
        u_parts.append(np.fromiter((users.setdefault(u, len(users)) for u in us), np.int32, len(us)))
        i_parts.append(np.fromiter((items.setdefault(i, len(items)) for i in its), np.int32, len(its)))
        t_parts.append(np.asarray(ts, np.float64))
    if not u_parts:
        raise DataError("--data: no interactions")
    u, it, t = np.concatenate(u_parts), np.concatenate(i_parts), np.concatenate(t_parts)
    del u_parts, i_parts, t_parts
    order = np.argsort(t, kind="stable")  # time order; ties keep the file order
    del t
    u_sorted = u[order]
    first = np.full(len(users), len(order), dtype=np.int64)
    np.minimum.at(first, u_sorted, np.arange(len(order)))
    rank = np.empty(len(users), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(users))  # the dict order of the in-memory path
    by_user = order[np.argsort(rank[u_sorted], kind="stable")]
    return it[by_user], np.bincount(rank[u], minlength=len(users)), list(items), len(order)


class LeaveOneOut(collections.abc.Sequence):
    """One leave-one-out split over the cached sequences: entry k = (user index, history ids, target id) of the
    k-th user with enough items; ``drop`` = 1 (test: the last item), 2 (valid) or 3 (train, users with >= 4)."""

    def __init__(self, seqs: RaggedArray, drop: int) -> None:
        self.seqs, self.drop = seqs, drop
        self.users = np.flatnonzero(seqs.lengths >= (4 if drop == 3 else 1))

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, k):  # type: ignore[override]
        u = int(self.users[k])
        s = self.seqs[u]
        return u, s[: len(s) - self.drop].tolist(), int(s[len(s) - self.drop])


def cached_windows(seqs: RaggedArray, length: int, stride: int | None) -> tuple[CachedRecords, list[int]]:
    """The training windows (the last ``length`` items up to each of :func:`.data.window_ends`) of every user's
    validation history (all but the last two items) with two or more items, sliced from the cache when asked;
    and their lengths."""
    hist = seqs.lengths - 2
    users = np.flatnonzero(hist >= 2)
    if not len(users):
        raise DataError("no user has two or more training interactions (besides the validation and test items)")
    if stride:  # several windows per user
        spans = [(u, max(0, e - length), e) for u in users.tolist() for e in window_ends(int(hist[u]), stride)]
        wu, ws, we = (np.array(x, dtype=np.int64) for x in zip(*spans))
    else:
        wu, we = users, hist[users]
        ws = np.maximum(we - length, 0)
    return CachedRecords(np.arange(len(wu)), lambda k: seqs[int(wu[k])][int(ws[k]) : int(we[k])].tolist()), \
        (we - ws).tolist()


class SequenceCache:
    """``args``' interactions as cached per-user sequences (see the module docstring)."""

    def __init__(self, args: Any, cols: Columns) -> None:
        a = self.args = args
        self.chunks = interaction_chunks(a.data, cols, "--data", a.streaming)
        resolved = str(Path(a.data).expanduser().resolve()) if a.data and Path(a.data).expanduser().exists() else a.data
        self.folder = cache_folder(cache_root(a), "recommendation", {"source": resolved, "streaming": a.streaming})
        self.key = {"source": source_fingerprint(a.data), "columns": vars(cols).copy(), "streaming": a.streaming}
        self.recipe = {"min_user": a.min_user_interactions, "min_item": a.min_item_interactions,
                       "max_examples": a.max_examples}

    def open(self) -> TokenCache:
        return open_token_cache(self.folder, self.key, self._build, tokenizer_recipe=self.recipe)

    def _build(self, w: CacheWriter) -> None:
        a = self.args
        items, lengths, names, n0 = _group(self.chunks())
        user_of = np.repeat(np.arange(len(lengths)), lengths)
        keep = np.ones(len(items), dtype=bool)
        items_dropped = 0
        if a.min_item_interactions > 1:  # filter_interactions: rare items first, then short users
            counts = np.bincount(items, minlength=len(names))
            items_dropped = int((counts > 0).sum() - (counts >= a.min_item_interactions).sum())
            keep = counts[items] >= a.min_item_interactions
        kept_len = np.bincount(user_of[keep], minlength=len(lengths))
        keep_user = kept_len >= a.min_user_interactions
        users_kept = np.flatnonzero(keep_user)
        stats = {"users_dropped": int(len(lengths) - len(users_kept)), "items_dropped": items_dropped,
                 "interactions_dropped": int(n0 - kept_len[keep_user].sum())}
        if a.max_examples:
            keep_user[users_kept[a.max_examples:]] = False
        keep &= keep_user[user_of]
        if not keep.any():
            raise DataError(f"--data: no user has {a.min_user_interactions} or more interactions "
                            f"({stats['users_dropped']} users dropped); lower --min-user-interactions "
                            f"(>= 3) or --min-item-interactions")
        vocab = ItemVocab.of({names[c] for c in np.unique(items[keep]).tolist()})
        code_to_id = np.zeros(len(names), dtype=np.int64)
        for c, name in enumerate(names):
            code_to_id[c] = vocab.index.get(name, 0)
        seqs = w.ragged("sequences", token_dtype(vocab.num_items + 2))
        seqs.extend_flat(code_to_id[items[keep]], np.bincount(user_of[keep], minlength=len(lengths))[keep_user])
        w.meta.update(items=vocab.items, filter_stats=stats)
