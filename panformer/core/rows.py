"""Rows of a table file or a Hugging Face dataset, read in batches so that no column is ever held whole in
memory: the Arrow-backed ``datasets.Dataset`` of :func:`core.data.load_table` (memory-mapped from the
``datasets`` cache), or with ``streaming=True`` an ``IterableDataset`` (``load_dataset(..., streaming=True)``:
a hub dataset is read over the network as it is consumed, a local file from disk; nothing is converted
or downloaded whole). Sources are files or ``NAME[:CONFIG][:SPLIT]`` (:func:`core.data.parse_hub_spec`). Plain text files stream through the ``text`` builder with their line breaks kept,
so that a file's rows concatenate back to its text."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .data import (TABLE_SUFFIXES, HubSpec, _quiet_datasets, _suffix, default_split, is_saved_dataset, load_table,
                   parse_hub_spec)
from .errors import DataError

__all__ = ["RowSource", "ListRows", "take_by_pass", "BATCH_ROWS"]

BATCH_ROWS = 4096


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


class RowSource:
    """``batches(columns)`` yields ``{column: list}`` of up to ``BATCH_ROWS`` rows in file order, a fresh pass
    per call; ``take(indices, columns)`` picks rows by position; ``num_rows`` is None while streaming (a pass
    counts them)."""

    def __init__(self, source: str, what: str = "--data", *, streaming: bool = False, split: str | None = None) -> None:
        self.source, self.what, self.streaming = str(source), what, streaming
        spec = None if Path(self.source).expanduser().is_file() else parse_hub_spec(self.source)
        if streaming and spec is not None and spec.local and is_saved_dataset(spec.name):
            self.streaming = False  # a save_to_disk folder is Arrow already: memory-mapped, nothing to stream
        if self.streaming:
            self.ds = self._open_stream(spec, split)
            self.column_names = list(self.ds.column_names or [])
            if not self.column_names:  # features unknown until the first row
                first = next(iter(self._rows(self.ds)), None)
                if first is None:
                    raise DataError(f"{what}: {source} has no rows")
                self.column_names = list(first)
        else:
            self.ds = load_table(source, what, split=split)
            self.column_names = list(self.ds.column_names)

    def _open_stream(self, spec: HubSpec | None, split: str | None):
        import datasets

        path = Path(self.source).expanduser()
        kw: dict[str, Any] = {}
        if path.is_file():
            kind = TABLE_SUFFIXES.get(_suffix(path))
            if kind is None:  # a text file: one row per line, line breaks kept
                kind, kw = "text", {"keep_linebreaks": True}
            elif kind == "csv":
                tsv = _suffix(path) == ".tsv"
                kw = {"delimiter": "\t" if tsv else ",", "quoting": 3 if tsv else 0}
            args: tuple[Any, ...] = (kind,)
            kw.update(data_files=[str(path)], split="train")
        elif spec is not None:  # NAME[:CONFIG][:SPLIT] on the hub, or a local dataset folder
            args = (str(Path(spec.name).expanduser()) if spec.local else spec.name, spec.config)
            kw = {"split": spec.split or split or default_split(self.what)}
        else:
            raise DataError(f"{self.what}: file not found: {self.source}")
        try:
            with _quiet_datasets():
                return datasets.load_dataset(*args, streaming=True, **kw)
        except Exception as e:  # noqa: BLE001 - offline, unknown name, missing split ...
            raise DataError(f"{self.what}: cannot stream {self.source!r} ({_one_line(e)})") from None

    @property
    def num_rows(self) -> int | None:
        return None if self.streaming else len(self.ds)

    def _rows(self, ds) -> Iterator[dict[str, Any]]:
        try:
            yield from ds
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - a parse error met while streaming
            raise DataError(f"{self.what}: cannot read {self.source} ({_one_line(e)})") from None

    def require(self, columns: dict[str, str]) -> None:
        """``columns`` maps a column to the option that names it; a DataError names a missing one."""
        for col, option in columns.items():
            if col not in self.column_names:
                raise DataError(f"{self.what} {self.source}: no column {col!r} (columns: "
                                f"{', '.join(self.column_names)}); name the right one with {option}")

    def batches(self, columns: Sequence[str], batch_size: int = BATCH_ROWS) -> Iterator[dict[str, list]]:
        ds = self.ds.select_columns(list(columns))
        if not self.streaming:
            for start in range(0, len(ds), batch_size):
                yield ds[start : start + batch_size]
            return
        batch: dict[str, list] = {c: [] for c in columns}
        for row in self._rows(ds):
            for c in columns:
                batch[c].append(row[c])
            if len(batch[columns[0]]) == batch_size:
                yield batch
                batch = {c: [] for c in columns}
        if batch[columns[0]]:
            yield batch

    def take(self, indices: Sequence[int] | np.ndarray, columns: Sequence[str]) -> dict[str, list]:
        """The rows at ``indices`` (in that order); one pass over the data while streaming."""
        indices = np.asarray(indices, dtype=np.int64)
        if not self.streaming:
            sub = self.ds.select_columns(list(columns)).select(indices.tolist())
            return {c: sub[c] for c in columns}
        return take_by_pass(self.batches(columns), indices, columns)


def take_by_pass(batches: Iterator[dict[str, list]], indices: Sequence[int] | np.ndarray,
                 columns: Sequence[str]) -> dict[str, list]:
    """The rows at ``indices`` (in that order) picked from one pass over ``batches``."""
    indices = np.asarray(indices, dtype=np.int64)
    wanted = np.unique(indices)
    found: dict[int, dict[str, Any]] = {}
    start = 0
    for batch in batches:
        n = len(batch[columns[0]])
        for i in wanted[(wanted >= start) & (wanted < start + n)].tolist():
            found[i] = {c: batch[c][i - start] for c in columns}
        start += n
        if len(found) == wanted.size:
            break
    return {c: [found[int(i)][c] for i in indices] for c in columns}


class ListRows:
    """Columns already in memory (built-in data) behind :class:`RowSource`'s interface."""

    streaming = False

    def __init__(self, columns: dict[str, list], source: str = "built-in data", what: str = "--data") -> None:
        self.columns, self.source, self.what = columns, source, what
        self.column_names = list(columns)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    def batches(self, columns: Sequence[str], batch_size: int = BATCH_ROWS) -> Iterator[dict[str, list]]:
        for start in range(0, self.num_rows, batch_size):
            yield {c: self.columns[c][start : start + batch_size] for c in columns}

    def take(self, indices: Sequence[int] | np.ndarray, columns: Sequence[str]) -> dict[str, list]:
        return {c: [self.columns[c][int(i)] for i in indices] for c in columns}
