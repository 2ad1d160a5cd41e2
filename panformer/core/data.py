"""Data plumbing shared by every task: tables from files or the Hugging Face hub, column checks,
seeded splits and length-bucketed batching. Errors name the file, column and what was expected."""
from __future__ import annotations

import contextlib
import gzip
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import DataError

__all__ = [
    "TABLE_SUFFIXES", "load_table", "require_columns", "seeded_split", "cut_by_fractions", "assemble_splits", "read_lines",
    "bucket_batches", "is_hub_name",
]

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_hub_name(source: str) -> bool:
    """A string that is no local path and looks like ``name`` or ``org/name`` on the Hugging Face hub."""
    p = Path(source)
    if p.exists() or p.suffix or source.startswith((".", "/", "~")):
        return False
    return source.count("/") <= 1 and all(part for part in source.split("/"))


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets`` while it reads: its progress bars, and the ERROR lines it logs before raising on
    a bad file (``load_table`` turns the exception into one DataError line of its own). The caller's
    verbosity and progress-bar setting come back afterwards."""
    import datasets

    verbosity, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 1)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def load_table(source: str | Path, what: str = "--data", split: str = "train", hub_config: str | None = None):
    """Read a CSV / TSV / JSON / JSONL / Parquet file (gzip accepted) or a hub dataset into a
    ``datasets.Dataset``. Raises :class:`DataError` for a missing, unreadable, empty or unknown source."""
    with _quiet_datasets():
        return _load_table(str(source), what, split, hub_config)


def _load_table(source: str, what: str, split: str, hub_config: str | None):
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        if not is_hub_name(source):
            raise DataError(f"{what}: file not found: {source}")
        try:
            ds = datasets.load_dataset(source, hub_config, split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown name, missing split ...
            raise DataError(f"{what}: cannot load Hugging Face dataset {source!r} split {split!r} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    else:
        if path.is_dir():
            raise DataError(f"{what}: {path} is a folder; expected a .csv, .tsv, .json, .jsonl or .parquet file")
        kind = TABLE_SUFFIXES.get(_suffix(path))
        if kind is None:
            raise DataError(f"{what}: {path}: unsupported file type {''.join(path.suffixes)!r}; "
                            f"expected one of {', '.join(TABLE_SUFFIXES)}")
        if path.stat().st_size == 0:
            raise DataError(f"{what}: {path} is empty")
        kw: dict[str, Any] = {}
        if kind == "csv":
            kw = {"delimiter": "\t" if _suffix(path) == ".tsv" else ",", "quoting": 3 if _suffix(path) == ".tsv" else 0}
        try:
            ds = datasets.load_dataset(kind, data_files=str(path), split="train", **kw)
        except UnicodeDecodeError as e:
            raise DataError(f"{what}: {path} is not valid UTF-8 text (byte {e.start}: {e.reason})") from None
        except Exception as e:  # noqa: BLE001 - parse errors from pandas / arrow
            if "corresponds to no data" in str(e):  # a header without rows
                raise DataError(f"{what}: {path} has no rows") from None
            cause = e
            while cause.__cause__ is not None or cause.__context__ is not None:
                if isinstance(cause, UnicodeDecodeError):
                    break
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, UnicodeDecodeError):
                raise DataError(f"{what}: {path} is not valid UTF-8 text (byte {cause.start}: {cause.reason})") from None
            raise DataError(f"{what}: cannot parse {path} as {kind.upper()} ({type(cause).__name__}: "
                            f"{str(cause).splitlines()[0][:200] if str(cause) else ''})") from None
    if len(ds) == 0:
        raise DataError(f"{what}: {source} has no rows")
    return ds


def require_columns(ds, columns: dict[str, str], source: str, what: str = "--data") -> None:
    """``columns`` maps a column name to the option that names it, e.g. {"text": "--text-column"}."""
    have = list(ds.column_names)
    for col, option in columns.items():
        if col not in have:
            raise DataError(f"{what} {source}: no column {col!r} (columns: {', '.join(have)}); "
                            f"name the right one with {option}")


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Shuffle range(n) with ``seed`` and cut it into len(fractions)+1 parts: the first part takes
    what the fractions leave. E.g. fractions (0.1, 0.1) → train 80 %, valid 10 %, test 10 %."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return cut_by_fractions(idx, fractions, f"training examples out of {n}")


def assemble_splits(n: int, take: Callable[[list[int]], Any], *, valid: Any = None, test: Any = None,
                    valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                    max_examples: int | None = None, indices: Sequence[list[int]] | None = None,
                    size: Callable[[Any], int] = len, valid_hint: str = "--valid-data") -> dict[str, Any]:
    """The ``{"train", "valid", "test"}`` splits of a dataset of ``n`` examples.

    A split given as already-read data (``valid`` / ``test``) is used as is; the others are cut from the
    dataset by :func:`seeded_split` (fraction 0 for a given split), or by ``indices`` (train, valid, test)
    when the data has a fixed split. ``take(ids)`` builds a split from example indices; the training split
    keeps its first ``max_examples``. Empty splits become None; a DataError names the flag to change when
    the training or validation split is empty (``valid_hint``: the flags that give validation data).
    """
    if indices is None:
        fracs = [0.0 if valid is not None else valid_fraction, 0.0 if test is not None else test_fraction]
        indices = seeded_split(n, fracs, seed)
    train_ids, valid_ids, test_ids = indices
    parts = {"train": take(list(train_ids)[:max_examples] if max_examples else list(train_ids)),
             "valid": valid if valid is not None else take(list(valid_ids)),
             "test": test if test is not None else take(list(test_ids))}
    if not size(parts["train"]):
        raise DataError("no training examples left after splitting; pass more --data")
    splits = {k: v if v is not None and size(v) else None for k, v in parts.items()}
    if splits["valid"] is None:
        raise DataError(f"empty validation split; raise --valid-fraction or pass {valid_hint}")
    return splits


def cut_by_fractions(seq: Sequence, fractions: Sequence[float], what: str = "training data") -> list:
    """Cut a list or string into len(fractions)+1 consecutive parts: the fractions give the sizes of the
    later parts, the first takes the rest. E.g. (0.1,) → first 90 % and last 10 %."""
    n = len(seq)
    sizes = [int(round(f * n)) for f in fractions]
    first = n - sum(sizes)
    if first <= 0:
        raise DataError(f"split fractions {list(fractions)} leave no {what}")
    parts, start = [seq[:first]], first
    for s in sizes:
        parts.append(seq[start : start + s])
        start += s
    return parts


def read_lines(path: str | Path, what: str) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` accepted), without trailing newlines."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: file not found: {p}")
    opener: Callable = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError as e:
        raise DataError(f"{what}: {p} is not valid UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{what}: cannot read {p} ({e})") from None
    return lines


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, max_tokens: int | None = None,
                   shuffle: bool = True) -> Iterable[list[int]]:
    """Batches of indices with similar lengths (less padding), order a pure function of (seed, epoch).

    Sorts within windows of 100 batches, cuts batches of ``batch_size`` (or of at most ``max_tokens``
    padded tokens), then shuffles the batch order.
    """
    rng = random.Random(seed * 100_003 + epoch)
    idx = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(idx)
    window = batch_size * 100
    batches: list[list[int]] = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w : w + window], key=lambda i: lengths[i])
        cur: list[int] = []
        longest = 0
        for i in chunk:
            longest_new = max(longest, lengths[i])
            full = len(cur) >= batch_size or (max_tokens is not None and cur and longest_new * (len(cur) + 1) > max_tokens)
            if full:
                batches.append(cur)
                cur, longest_new = [], lengths[i]
            cur.append(i)
            longest = longest_new
        if cur:
            batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches
