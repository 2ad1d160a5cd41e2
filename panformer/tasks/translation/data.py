"""Parallel data for translation: the built-in num2words generator, line-aligned text files, tables and
Hugging Face datasets. Every reader returns ``(sources, targets)`` lists of non-empty strings or raises a
:class:`core.errors.DataError` naming the file, line/row and what was expected."""
from __future__ import annotations

import random
from itertools import zip_longest
from pathlib import Path
from typing import Any, Iterator, Sequence

from panformer.core.data import is_saved_dataset, load_table, read_lines, require_columns
from panformer.core.errors import DataError
from panformer.core.rows import BATCH_ROWS, RowSource, take_by_pass
from panformer.core.text_stream import iter_lines

__all__ = ["number_expression_pairs", "read_parallel_files", "read_parallel_table", "resolve_prefix", "read_source",
           "ParallelLines", "ParallelTable", "parallel_rows", "check_pair"]

Pairs = tuple[list[str], list[str]]

# Calendar month names (German, English): a fixed fact table for the date template.
_MONTHS_DE = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
              "November", "Dezember"]
_MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]


def _log_uniform_int(rng: random.Random, high: int) -> int:
    """Integers spread evenly over orders of magnitude in [0, high)."""
    return min(int(10 ** rng.uniform(0, len(str(high)) - 1)) + rng.randrange(10) - 1, high - 1)


def number_expression_pairs(n: int = 20000, seed: int = 0, source_lang: str = "de",
                            target_lang: str = "en") -> Pairs:
    """``n`` distinct (source, target) expressions rendered by num2words in two languages.

    Templates, in equal parts: cardinals ("vierhundertzweiundsechzig" → "four hundred and sixty-two"),
    ordinals, years ("im Jahr neunzehnhundertvierundachtzig" → "in the year nineteen eighty-four"),
    dates ("der dritte Mai zweitausendsieben" → "the third of May two thousand and seven"), amounts of
    euros ("zwölf Euro und fünfzig Cent" → "twelve euro, fifty cents") and decimals ("drei Komma zwei
    fünf" → "three point two five"). German↔English only (the date/year frames are written for them).
    """
    try:
        from num2words import num2words
    except ImportError:
        raise DataError("built-in translation data needs the num2words package: pip install num2words, "
                        "or pass --source-file/--target-file or --data") from None
    langs = {source_lang, target_lang}
    if langs != {"de", "en"}:
        raise DataError(f"built-in data is German/English; got --source-lang {source_lang} --target-lang "
                        f"{target_lang}; pass your own --data for other languages")
    rng = random.Random(seed)

    def render(kind: str) -> dict[str, str]:
        if kind == "cardinal":
            x = _log_uniform_int(rng, 10_000_000)
            return {l: num2words(x, lang=l) for l in langs}
        if kind == "ordinal":
            x = _log_uniform_int(rng, 100_000) + 1
            return {"de": "der " + num2words(x, lang="de", to="ordinal"),
                    "en": "the " + num2words(x, lang="en", to="ordinal")}
        if kind == "year":
            y = rng.randrange(1000, 2100)
            return {"de": "im Jahr " + num2words(y, lang="de", to="year"),
                    "en": "in the year " + num2words(y, lang="en", to="year")}
        if kind == "date":
            d, m, y = rng.randrange(1, 32), rng.randrange(12), rng.randrange(1800, 2100)
            return {"de": f"der {num2words(d, lang='de', to='ordinal')} {_MONTHS_DE[m]} {num2words(y, lang='de', to='year')}",
                    "en": f"the {num2words(d, lang='en', to='ordinal')} of {_MONTHS_EN[m]} {num2words(y, lang='en', to='year')}"}
        if kind == "currency":
            x = round(_log_uniform_int(rng, 100_000) + rng.randrange(100) / 100, 2)
            return {l: num2words(x, lang=l, to="currency", currency="EUR") for l in langs}
        x = round(_log_uniform_int(rng, 10_000) + rng.randrange(1, 100) / 100, 2)  # decimal
        return {l: num2words(x, lang=l) for l in langs}

    cache = _cache_file(n, seed, source_lang, target_lang)
    if cache is not None and cache.is_file():
        rows = [line.split("\t") for line in cache.read_text(encoding="utf-8").splitlines()]
        if len(rows) == n and all(len(r) == 2 for r in rows):
            return [r[0] for r in rows], [r[1] for r in rows]
    kinds = ["cardinal", "ordinal", "year", "date", "currency", "decimal"]
    seen: set[str] = set()
    src, tgt = [], []
    attempts = 0
    while len(src) < n and attempts < 20 * n:
        attempts += 1
        pair = render(kinds[attempts % len(kinds)])
        if pair[source_lang] in seen:
            continue
        seen.add(pair[source_lang])
        src.append(pair[source_lang])
        tgt.append(pair[target_lang])
    if cache is not None and len(src) == n:
        from panformer.core.checkpoint import atomic_write_text

        atomic_write_text(cache, "".join(f"{s}\t{t}\n" for s, t in zip(src, tgt)))
    return src, tgt


def _cache_file(n: int, seed: int, source_lang: str, target_lang: str) -> Path | None:
    import num2words

    try:
        from panformer.tasks.builtin_data import cache_dir

        d = cache_dir() / "translation"
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d / f"numbers-v1-{num2words.__version__ if hasattr(num2words, '__version__') else '0'}-{n}-{seed}-{source_lang}-{target_lang}.tsv"


def _check_pairs(src: list[str], tgt: list[str], src_name: str, tgt_name: str, unit: str) -> Pairs:
    if not src:
        raise DataError(f"{src_name} is empty; expected one sentence per {unit}")
    if len(src) != len(tgt):
        raise DataError(f"{src_name} has {len(src):,} {unit}s but {tgt_name} has {len(tgt):,}; "
                        f"source and target must be aligned one sentence per {unit}")
    for i, (s, t) in enumerate(zip(src, tgt)):
        check_pair(i + 1, s, t, src_name, tgt_name, unit)
    return list(src), list(tgt)


def check_pair(row: int, s: Any, t: Any, src_name: str, tgt_name: str, unit: str) -> None:
    for text, name in ((s, src_name), (t, tgt_name)):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name}: {unit} {row} is empty or not text ({text!r}); every {unit} needs a "
                            f"sentence (remove the pair from both sides)")


def read_parallel_files(source_file: str, target_file: str, what: str = "--source-file/--target-file") -> Pairs:
    """Two line-aligned UTF-8 text files (``.gz`` accepted)."""
    so, to = what.split("/") if "/" in what else (what, what)
    src = read_lines(source_file, so)
    tgt = read_lines(target_file, to)
    if src and src[-1] == "" and len(src) == len(tgt) + 1:  # tolerate one trailing blank line
        src = src[:-1]
    if tgt and tgt[-1] == "" and len(tgt) == len(src) + 1:
        tgt = tgt[:-1]
    return _check_pairs(src, tgt, f"{so} {source_file}", f"{to} {target_file}", "line")


def read_parallel_table(source: str, what: str, source_column: str | None, target_column: str | None,
                        source_lang: str, target_lang: str, split: str | None = None) -> Pairs:
    """A CSV / TSV / JSON / JSONL / Parquet file or a hub dataset with a source and a target column,
    or a ``translation`` column of ``{lang: text}`` dicts (the WMT / OPUS layout on the hub). Columns
    default to the first present of (language code, ``source``/``target``, ``src``/``tgt``)."""
    ds = load_table(source, what, split=split)
    cols = ds.column_names
    source_column, target_column, nested = _pair_columns(cols, source_column, target_column, source_lang, target_lang)
    if nested:
        rows = ds["translation"]
        _check_translation_row(rows[0] if len(rows) else None, source, what, source_lang, target_lang)
        src = [r.get(source_lang) if isinstance(r, dict) else None for r in rows]
        tgt = [r.get(target_lang) if isinstance(r, dict) else None for r in rows]
    else:
        require_columns(ds, {source_column: "--source-column", target_column: "--target-column"}, source, what)
        src, tgt = ds[source_column], ds[target_column]
    return _check_pairs(list(src), list(tgt), f"{what} {source} column {source_column!r}",
                        f"{what} {source} column {target_column!r}", "row")


def _pair_columns(cols: Sequence[str], source_column: str | None, target_column: str | None, source_lang: str,
                  target_lang: str) -> tuple[str, str, bool]:
    """(source column, target column, whether they are instead the ``{lang: text}`` dicts of a ``translation``
    column)."""
    source_column = source_column or next((c for c in (source_lang, "source", "src") if c in cols), source_lang)
    target_column = target_column or next((c for c in (target_lang, "target", "tgt") if c in cols), target_lang)
    nested = source_column not in cols and target_column not in cols and "translation" in cols
    return source_column, target_column, nested


def _check_translation_row(r: Any, source: str, what: str, source_lang: str, target_lang: str) -> None:
    if r is not None and (not isinstance(r, dict) or source_lang not in r or target_lang not in r):
        raise DataError(f"{what} {source}: row 1: column 'translation' has no {source_lang!r}/"
                        f"{target_lang!r} keys ({sorted(r) if isinstance(r, dict) else type(r).__name__}); "
                        f"set --source-lang/--target-lang")


class ParallelLines:
    """Two line-aligned text files as rows ``{"source", "target"}`` read in batches, never whole
    (:class:`core.rows.RowSource`'s interface; ``num_rows`` is None: a pass counts them). The checks of
    :func:`read_parallel_files`: one trailing blank line tolerated, aligned lengths."""

    streaming, num_rows, column_names = True, None, ["source", "target"]

    def __init__(self, source_file: str, target_file: str, what: str = "--source-file/--target-file") -> None:
        so, to = what.split("/") if "/" in what else (what, what)
        self.files, self.whats = (source_file, target_file), (so, to)
        self.names = (f"{so} {source_file}", f"{to} {target_file}")
        self.source, self.what = source_file, so
        for f, w in zip(self.files, self.whats):
            if not Path(f).is_file():
                raise DataError(f"{w}: file not found: {f}")

    def batches(self, columns: Sequence[str] = ("source", "target"), batch_size: int = BATCH_ROWS) -> Iterator[dict[str, list]]:
        src, tgt = (iter_lines(f, w) for f, w in zip(self.files, self.whats))
        batch: dict[str, list] = {"source": [], "target": []}
        n = 0
        for s, t in zip_longest(src, tgt):
            if s is None or t is None:  # one file ended: the other may only hold one trailing blank line
                rest = 1 + sum(1 for _ in (tgt if s is None else src))
                if rest > 1 or (s if t is None else t) != "":
                    ns, nt = (n + rest, n) if t is None else (n, n + rest)
                    raise DataError(f"{self.names[0]} has {ns:,} lines but {self.names[1]} has {nt:,}; source and "
                                    f"target must be aligned one sentence per line")
                break
            batch["source"].append(s)
            batch["target"].append(t)
            n += 1
            if n % batch_size == 0:
                yield {c: batch[c] for c in columns}
                batch = {"source": [], "target": []}
        if batch["source"]:
            yield {c: batch[c] for c in columns}

    def take(self, indices: Sequence[int], columns: Sequence[str]) -> dict[str, list]:
        return take_by_pass(self.batches(columns), indices, columns)


class ParallelTable:
    """A table or hub dataset with source and target columns (or a ``translation`` column) as rows
    ``{"source", "target"}``, read in batches through :class:`core.rows.RowSource`."""

    column_names = ["source", "target"]

    def __init__(self, source: str, what: str, a: Any) -> None:
        self.rows = RowSource(source, what, streaming=a.streaming)
        self.source, self.what, self.langs = source, what, (a.source_lang, a.target_lang)
        sc, tc, self.nested = _pair_columns(self.rows.column_names, a.source_column, a.target_column, *self.langs)
        if self.nested:
            first = next(self.rows.batches(["translation"], 1), {"translation": [None]})["translation"][0]
            _check_translation_row(first, source, what, *self.langs)
        else:
            self.rows.require({sc: "--source-column", tc: "--target-column"})
        self.cols = (sc, tc)
        self.names = (f"{what} {source} column {sc!r}", f"{what} {source} column {tc!r}")
        self.streaming, self.num_rows = self.rows.streaming, self.rows.num_rows

    def _pairs(self, batch: dict[str, list]) -> dict[str, list]:
        if self.nested:
            rows = batch["translation"]
            return {"source": [r.get(self.langs[0]) if isinstance(r, dict) else None for r in rows],
                    "target": [r.get(self.langs[1]) if isinstance(r, dict) else None for r in rows]}
        return {"source": batch[self.cols[0]], "target": batch[self.cols[1]]}

    def batches(self, columns: Sequence[str] = ("source", "target"), batch_size: int = BATCH_ROWS) -> Iterator[dict[str, list]]:
        cols = ["translation"] if self.nested else list(self.cols)
        for batch in self.rows.batches(cols, batch_size):
            yield self._pairs(batch)

    def take(self, indices: Sequence[int], columns: Sequence[str]) -> dict[str, list]:
        return self._pairs(self.rows.take(indices, ["translation"] if self.nested else list(self.cols)))


def resolve_prefix(prefix: str, source_lang: str, target_lang: str) -> tuple[Path, Path] | None:
    """fairseq-style ``PREFIX`` → (``PREFIX.src[.gz]``, ``PREFIX.tgt[.gz]``) when both exist."""
    found = []
    for lang in (source_lang, target_lang):
        cands = [Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def read_source(source: str, what: str, a: Any) -> Pairs:
    """``--data``/``--valid-data``/``--test-data``: a ``PREFIX`` of line-aligned files, a table or a hub name."""
    pair = resolve_prefix(source, a.source_lang, a.target_lang)
    if pair is not None:
        return read_parallel_files(str(pair[0]), str(pair[1]), f"{what} (source)/{what} (target)")
    if Path(source).is_dir() and not is_saved_dataset(source):
        raise DataError(f"{what}: {source} is a folder; pass a file PREFIX so that PREFIX.{a.source_lang} and "
                        f"PREFIX.{a.target_lang} (or .gz) exist, a .csv/.tsv/.jsonl/.parquet table or a dataset "
                        f"NAME[:CONFIG][:SPLIT]")
    return read_parallel_table(source, what, a.source_column, a.target_column, a.source_lang, a.target_lang)


def parallel_rows(source: str, what: str, a: Any) -> ParallelLines | ParallelTable:
    """:func:`read_source` without reading: ``--data`` as rows ``{"source", "target"}`` read in batches."""
    pair = resolve_prefix(source, a.source_lang, a.target_lang)
    if pair is not None:
        return ParallelLines(str(pair[0]), str(pair[1]), f"{what} (source)/{what} (target)")
    if Path(source).is_dir() and not is_saved_dataset(source):
        read_source(source, what, a)  # raises the folder error
    return ParallelTable(source, what, a)
