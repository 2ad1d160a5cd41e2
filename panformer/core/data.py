"""Data plumbing shared by every task: tables from files, datasets from the Hugging Face hub or local
dataset folders (``NAME[:CONFIG][:SPLIT]``), column checks, seeded splits and length-bucketed batching.
Errors name the file, column and what was expected."""
from __future__ import annotations

import contextlib
import gzip
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import DataError

__all__ = [
    "TABLE_SUFFIXES", "load_table", "require_columns", "seeded_split", "cut_by_fractions", "assemble_splits", "read_lines",
    "bucket_batches", "is_hub_name", "HubSpec", "parse_hub_spec", "default_split", "load_hf_dataset", "is_saved_dataset",
    "ROLE_SPLITS",
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
    if p.exists() or p.suffix or source.startswith((".", "/", "~")) or ":" in source or "\\" in source:
        return False
    return source.count("/") <= 1 and all(part for part in source.split("/"))


# the split each data flag reads when its NAME names none (Hugging Face's names), and what else may stand for it
ROLE_SPLITS = {"--data": "train", "--valid-data": "validation", "--test-data": "test"}
SPLIT_ALIASES = {"validation": ("validation", "valid", "dev", "val"), "test": ("test",), "train": ("train",)}
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\data or C:/data: a Windows path, never NAME:CONFIG
_COLON = re.compile(r":(?![^\[]*\])")
_SPLIT_LIKE = re.compile(r"(train|validation|valid|dev|val|test)([_-]\w+)?(\[.*\])?|.*[\[+].*")


@dataclass(frozen=True)
class HubSpec:
    """``NAME[:CONFIG][:SPLIT]``: a hub dataset (``name`` / ``org/name``) or a local dataset folder (data
    files, a ``README.md`` with ``configs:``, or a ``save_to_disk`` folder); None fields were not given."""

    name: str
    config: str | None = None
    split: str | None = None

    @property
    def local(self) -> bool:
        return Path(self.name).expanduser().is_dir()


def default_split(what: str) -> str:
    """The split a data flag reads by default: ``--data`` train, ``--valid-data`` validation, ``--test-data`` test."""
    return ROLE_SPLITS.get(what.split()[0] if what.strip() else what, "train")


def parse_hub_spec(source: str | Path) -> HubSpec | None:
    """Parse ``NAME[:CONFIG][:SPLIT]``, or None when ``source`` is a file path.

    A path that exists wins (also one containing ':'); so do ``C:\\...`` Windows paths and names with a file
    suffix. ``NAME:X`` reads X as a split when it looks like one (train, validation, test, dev, valid, with
    an optional suffix such as ``_matched`` or a slice ``[:10%]``), otherwise as a config;
    ``NAME:CONFIG:SPLIT`` and ``NAME::SPLIT`` say it explicitly. E.g. ``glue:sst2:validation``.
    """
    s = str(source)
    if not s.strip():
        return None
    path = Path(s).expanduser()
    if path.is_dir():
        return HubSpec(s)
    if path.exists() or _DRIVE.match(s):
        return None
    parts = _COLON.split(s)  # a ':' inside a slice such as train[:10%] separates nothing
    for k in (1, 2):  # a local folder whose own name may hold ':', then :CONFIG / :SPLIT
        head = ":".join(parts[:-k])
        if len(parts) > k and head and Path(head).expanduser().is_dir():
            return _spec(head, parts[-k:])
    name, *tail = parts
    if len(tail) > 2 or not is_hub_name(name):
        return None
    return _spec(name, tail)


def _spec(name: str, tail: list[str]) -> HubSpec:
    if len(tail) == 2:
        return HubSpec(name, tail[0] or None, tail[1] or None)
    if len(tail) == 1 and tail[0]:
        return HubSpec(name, split=tail[0]) if _SPLIT_LIKE.fullmatch(tail[0]) else HubSpec(name, config=tail[0])
    return HubSpec(name)


def is_saved_dataset(path: str | Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    p = Path(path).expanduser()
    return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()


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


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}" if str(e).strip() else type(e).__name__


def load_hf_dataset(source: str | HubSpec, what: str = "--data", split: str | None = None):
    """One split of a hub dataset, a local dataset folder or a ``save_to_disk`` folder, as a ``datasets.Dataset``.

    ``source``: ``NAME[:CONFIG][:SPLIT]`` (see :func:`parse_hub_spec`). Without a SPLIT it reads ``split``, by
    default the flag's own (:func:`default_split` of ``what``), or an alias of it (``valid``/``dev`` for
    validation); a local folder with a single split is read whole, a single saved Dataset is itself. A
    missing split is a DataError naming the splits that exist.
    """
    spec = source if isinstance(source, HubSpec) else parse_hub_spec(source)
    if spec is None:
        raise DataError(f"{what}: not a dataset name or folder: {source}")
    shown = source if isinstance(source, str) else spec.name
    with _quiet_datasets():
        return _load_hf(spec, str(shown), what, spec.split or split or default_split(what), spec.split is not None)


def _load_hf(spec: HubSpec, shown: str, what: str, want: str, explicit: bool):
    import datasets

    path = Path(spec.name).expanduser()
    try:
        if path.is_dir() and is_saved_dataset(path):
            if spec.config:
                raise DataError(f"{what} {shown}: a folder saved by save_to_disk has no configs; drop :{spec.config}")
            found = datasets.load_from_disk(str(path))
        elif "[" in want or "+" in want:  # a slice or a sum of splits: datasets reads it as is
            found = datasets.load_dataset(str(path) if path.is_dir() else spec.name, spec.config, split=want)
        else:
            found = datasets.load_dataset(str(path) if path.is_dir() else spec.name, spec.config)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, unknown name, a config is missing, a bad file ...
        hint = "; name one as NAME:CONFIG" if "onfig" in str(e) else ""
        kind = "the dataset folder" if path.is_dir() else "Hugging Face dataset"
        raise DataError(f"{what}: cannot load {kind} {shown!r} "
                        f"{'config ' + repr(spec.config) + ' ' if spec.config else ''}split {want!r} "
                        f"({_first_line(e)}){hint}") from None
    if isinstance(found, datasets.DatasetDict):
        names = list(found)
        pick = want if want in found else None
        if pick is None and not explicit:
            pick = next((s for s in SPLIT_ALIASES.get(want, ()) if s in found), None)
            if pick is None and spec.local and len(names) == 1:
                pick = names[0]
        if pick is None:
            raise DataError(f"{what} {shown}: no split {want!r} (splits: {', '.join(names)}); name one as "
                            f"{spec.name}{':' + spec.config if spec.config else ''}:SPLIT")
        found = found[pick]
    if len(found) == 0:
        raise DataError(f"{what}: {shown} has no rows")
    return found


def load_table(source: str | Path, what: str = "--data", split: str | None = None):
    """Read a CSV / TSV / JSON / JSONL / Parquet file (gzip accepted), or a dataset (:func:`load_hf_dataset`:
    ``NAME[:CONFIG][:SPLIT]`` on the hub, a local dataset folder or a ``save_to_disk`` folder), into a
    ``datasets.Dataset``. Raises :class:`DataError` for a missing, unreadable, empty or unknown source."""
    path = Path(str(source)).expanduser()
    if not path.is_file():
        spec = parse_hub_spec(str(source))
        if spec is None:
            raise DataError(f"{what}: file not found: {source}")
        return load_hf_dataset(str(source), what, split)
    with _quiet_datasets():
        return _load_file(path, what)


def _load_file(path: Path, what: str):
    import datasets

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
        raise DataError(f"{what}: {path} has no rows")
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
