"""A tokenised dataset on disk, memory-mapped: built once, reused while its sources and tokenizer are unchanged.

Data larger than memory is tokenised in one streaming pass into flat ``numpy`` arrays on disk (as nanoGPT
does for OpenWebText) and read back through ``numpy.memmap``: a training process holds only the pages it
touches. Layout of a cache folder::

    manifest.json                  {"version", "key", "tokenizer_recipe", "tokenizer_sha256", "fields", "meta",
                                    "builds", "build_seconds", "created"}; written last
    tokenizer.json (+ .special.json)   the tokenizer the ids come from
    NAME.bin                       a "stream" (e.g. a corpus as one token sequence) or an "array" (one value per record)
    NAME.bin + NAME.offsets.bin    a "ragged" field: record i is NAME.bin[offsets[i]:offsets[i + 1]] (offsets int64)

:func:`open_token_cache` reuses a folder whose manifest has the same ``key`` (the caller's description of the
sources -- :func:`source_fingerprint` gives paths, sizes and modification times -- and of the encoding) and the
same tokenizer: the recipe it was trained with (``tokenizer_recipe``, then the cached tokenizer is loaded) or
the exact tokenizer given (its SHA-256). Otherwise it calls ``build(writer)`` into a temporary folder next to
the cache and renames it into place: a crash leaves the old cache or none, never half of one. Token ids are
stored in the smallest unsigned type that holds the vocabulary (:func:`token_dtype`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write_json
from .errors import ConfigError, DataError
from .tokenizer import TextTokenizer

__all__ = ["TokenCacheArguments", "TokenCache", "CacheWriter", "TokenStream", "RaggedArray", "open_token_cache",
           "cache_folder", "cache_root", "cache_log", "source_fingerprint", "token_dtype", "tokenizer_sha256", "CACHE_VERSION"]

CACHE_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class TokenCacheArguments:
    """Options of the tasks that can train from a token cache (generation, sentiment, translation,
    recommendation); their ``Arguments`` inherit them."""

    cache_dir: str | None = field(default=None, metadata={
        "help": "tokenise --data once into a memory-mapped token cache under this folder and train from it (data "
                "larger than memory); later runs on the same data and tokenizer reuse it"})
    streaming: bool = field(default=False, metadata={
        "help": "read --data through datasets' streaming mode (a hub dataset is never downloaded whole), "
                "tokenising into --cache-dir (default: $PANFORMER_CACHE/tokens)"})


def cache_root(args: Any) -> Path | None:
    """The cache folder chosen by :class:`TokenCacheArguments` (None: train in memory, as without them)."""
    if getattr(args, "cache_dir", None):
        return Path(args.cache_dir).expanduser()
    if getattr(args, "streaming", False):
        return Path(os.environ.get("PANFORMER_CACHE", Path.home() / ".cache" / "panformer")) / "tokens"
    return None


def cache_folder(root: str | Path, task: str, identity: Any) -> Path:
    """``root/TASK-HASH``: one folder per task and data identity (e.g. the sources' paths, not their contents:
    a changed source rebuilds the same folder instead of leaving a stale one behind)."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(root) / f"{task}-{digest}"


def _stat(p: Path) -> list[Any]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def source_fingerprint(source: str | Path | None, **extra: Any) -> dict[str, Any]:
    """What identifies a source's contents without reading it: a file's resolved path, size and modification
    time; a folder's files (recursively); anything else (a hub name, built-in data) by its name and ``extra``."""
    if source is None:
        return {"builtin": True, **extra}
    p = Path(str(source)).expanduser()
    if p.is_file():
        return {"path": str(p.resolve()), "stat": _stat(p), **extra}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return {"path": str(p.resolve()), "files": [[str(f.relative_to(p)), *_stat(f)] for f in files], **extra}
    return {"name": str(source), **extra}


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.int64)


def tokenizer_sha256(tok: TextTokenizer) -> str:
    return hashlib.sha256((tok.tok.to_str() + json.dumps(tok.names, sort_keys=True)).encode()).hexdigest()


def _memmap(path: Path, dtype: str | np.dtype, length: int) -> np.ndarray:
    if length == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))


class _Lazy:
    """One field file. ``read(start, stop)`` copies a slice with ``os.pread`` -- random reads leave nothing
    mapped, so the process's resident memory does not grow with the pages it has touched (nanoGPT re-creates
    its memmap every batch for the same reason); ``array`` memory-maps the whole file for bulk operations.
    Pickles as (path, dtype, length): DataLoader workers re-open the file instead of copying it."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), int(length)
        self._array: np.ndarray | None = None
        self._fd: int | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = _memmap(self.path, self.dtype, self.length)
        return self._array

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, min(start, self.length)), max(0, min(stop, self.length))
        if stop <= start:
            return np.zeros(0, dtype=self.dtype)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = self.dtype.itemsize
        return np.frombuffer(os.pread(self._fd, (stop - start) * size, start * size), dtype=self.dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


class TokenStream(_Lazy):
    """One long sequence of token ids on disk. ``stream[i:j]`` is a ``torch.long`` copy of that slice (the
    rest stays on disk); ``len(stream) == stream.numel()``."""

    def __len__(self) -> int:
        return self.length

    def numel(self) -> int:
        return self.length

    def __getitem__(self, index: slice) -> Tensor:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("index a TokenStream with a slice, e.g. stream[i : i + n]")
        start, stop, _ = index.indices(self.length)
        return torch.from_numpy(self.read(start, stop).astype(np.int64))


class RaggedArray:
    """Records of different lengths: ``ragged[i]`` is record i's ids (a numpy array read from disk),
    ``ragged.lengths`` an int64 array of every record's length."""

    def __init__(self, values: _Lazy, offsets: _Lazy) -> None:
        self.values, self.offsets = values, offsets

    def __len__(self) -> int:
        return self.offsets.length - 1

    def __getitem__(self, i: int) -> np.ndarray:
        lo, hi = self.offsets.read(i, i + 2).tolist()
        return self.values.read(lo, hi)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets.array))


class _StreamWriter:
    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.length = path, np.dtype(dtype), 0
        self._f = open(path, "wb", buffering=1 << 22)
        self._limit = np.iinfo(self.dtype).max if self.dtype.kind in "ui" else None

    def append(self, ids: Sequence[int] | np.ndarray) -> None:
        arr = np.asarray(ids)
        if arr.size and self._limit is not None and (int(arr.max()) > self._limit or int(arr.min()) < 0):
            raise ValueError(f"{self.path.name}: value {int(arr.max())} does not fit {self.dtype}")
        self._f.write(np.ascontiguousarray(arr, dtype=self.dtype).data)
        self.length += int(arr.size)

    def close(self) -> None:
        self._f.close()


class _RaggedWriter:
    def __init__(self, folder: Path, name: str, dtype: np.dtype) -> None:
        self.values = _StreamWriter(folder / f"{name}.bin", dtype)
        self.offsets = _StreamWriter(folder / f"{name}.offsets.bin", np.dtype(np.int64))
        self.offsets.append([0])
        self.count = 0

    def extend(self, records: Iterable[Sequence[int]]) -> None:
        """Append records (lists or arrays of ids), one call per batch."""
        records = [np.asarray(r) for r in records]
        if not records:
            return
        self.values.append(np.concatenate(records))
        ends = self.values.length - sum(r.size for r in records) + np.cumsum([r.size for r in records])
        self.offsets.append(ends.astype(np.int64))
        self.count += len(records)

    def extend_flat(self, values: np.ndarray, lengths: np.ndarray) -> None:
        """Append ``len(lengths)`` records stored back to back in ``values``."""
        self.values.append(values)
        self.offsets.append(self.values.length - int(np.sum(lengths)) + np.cumsum(lengths, dtype=np.int64))
        self.count += len(lengths)

    def close(self) -> None:
        self.values.close()
        self.offsets.close()


class CacheWriter:
    """What a build function fills: ``stream(name, dtype)`` / ``ragged(name, dtype)`` return writers with
    ``append(ids)`` / ``extend(records)``; ``array(name, values)`` stores one value per record; ``meta`` is
    free JSON (e.g. label names, counts); ``tokenizer`` the tokenizer the ids come from."""

    def __init__(self, folder: Path, tokenizer: TextTokenizer | None = None) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.meta: dict[str, Any] = {}
        self._fields: dict[str, tuple[str, Any]] = {}

    def _new(self, name: str) -> None:
        if name in self._fields or not name.replace("_", "").isalnum():
            raise ValueError(f"bad or repeated cache field name {name!r}")

    def stream(self, name: str, dtype: np.dtype | str) -> _StreamWriter:
        self._new(name)
        w = _StreamWriter(self.folder / f"{name}.bin", np.dtype(dtype))
        self._fields[name] = ("stream", w)
        return w

    def ragged(self, name: str, dtype: np.dtype | str) -> _RaggedWriter:
        self._new(name)
        w = _RaggedWriter(self.folder, name, np.dtype(dtype))
        self._fields[name] = ("ragged", w)
        return w

    def array(self, name: str, values: np.ndarray | Sequence[Any]) -> None:
        self._new(name)
        w = _StreamWriter(self.folder / f"{name}.bin", np.asarray(values).dtype)
        w.append(np.asarray(values))
        self._fields[name] = ("array", w)

    def _close(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, (kind, w) in self._fields.items():
            w.close()
            if kind == "ragged":
                out[name] = {"kind": kind, "dtype": w.values.dtype.str, "length": w.count, "values": w.values.length}
            else:
                out[name] = {"kind": kind, "dtype": w.dtype.str, "length": w.length}
        return out


class TokenCache:
    """A finished cache folder (see the module docstring). ``reused`` tells whether this process found it
    built (True) or built it (False); ``tokenizer`` is the tokenizer its ids come from."""

    def __init__(self, folder: str | Path, reused: bool = True) -> None:
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        self.reused = reused
        self.tokenizer = TextTokenizer.load(self.folder / "tokenizer.json") \
            if (self.folder / "tokenizer.json").is_file() else None

    @property
    def meta(self) -> dict[str, Any]:
        return self.manifest["meta"]

    def _field(self, name: str, kind: str) -> dict[str, Any]:
        spec = self.manifest["fields"].get(name)
        if spec is None or spec["kind"] != kind:
            raise KeyError(f"token cache {self.folder} has no {kind} field {name!r}")
        return spec

    def has(self, name: str) -> bool:
        return name in self.manifest["fields"]

    def stream(self, name: str) -> TokenStream:
        spec = self._field(name, "stream")
        return TokenStream(self.folder / f"{name}.bin", spec["dtype"], spec["length"])

    def ragged(self, name: str) -> RaggedArray:
        spec = self._field(name, "ragged")
        return RaggedArray(_Lazy(self.folder / f"{name}.bin", spec["dtype"], spec["values"]),
                           _Lazy(self.folder / f"{name}.offsets.bin", "<i8", spec["length"] + 1))

    def array(self, name: str) -> np.ndarray:
        spec = self._field(name, "array")
        return _memmap(self.folder / f"{name}.bin", spec["dtype"], spec["length"])


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _matches(m: dict[str, Any] | None, key: Any, recipe: Any, tokenizer: TextTokenizer | None) -> bool:
    if m is None or m.get("version") != CACHE_VERSION or m.get("key") != json.loads(json.dumps(key, default=str)):
        return False
    if tokenizer is not None:
        return m.get("tokenizer_sha256") == tokenizer_sha256(tokenizer)
    return recipe is not None and m.get("tokenizer_recipe") == json.loads(json.dumps(recipe, default=str))


def cache_log(msg: str) -> None:
    """One ``[panformer] ...`` line on stderr (rank 0 only): the progress of a long build."""
    from .distributed import is_main_process

    if is_main_process():
        print(f"[panformer] {msg}", file=sys.stderr, flush=True)


def open_token_cache(folder: str | Path, key: Any, build: Callable[[CacheWriter], None], *,
                     tokenizer: TextTokenizer | None = None, tokenizer_recipe: Any = None) -> TokenCache:
    """The cache in ``folder`` if its manifest matches ``key`` and the tokenizer; otherwise ``build(writer)``
    fills a new one (see the module docstring).

    Give either ``tokenizer`` (the ids must come from exactly this one; ``writer.tokenizer`` is it) or
    ``tokenizer_recipe`` (JSON describing how ``build`` trains one -- a matching cache is reused with the
    tokenizer ``build`` stored in ``writer.tokenizer`` -- or any vocabulary it derives deterministically, e.g.
    an item catalogue kept in ``writer.meta``). ``key`` and the recipe must be JSON-serialisable.
    """
    folder = Path(folder).expanduser()
    if (tokenizer is None) == (tokenizer_recipe is None):
        raise ValueError("give exactly one of tokenizer or tokenizer_recipe")
    old = _read_manifest(folder)
    if _matches(old, key, tokenizer_recipe, tokenizer):
        cache = TokenCache(folder, reused=True)
        cache_log(f"token cache {folder}: reused (built {cache.manifest['created']} in {cache.manifest['build_seconds']:.0f} s)")
        return cache
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
    except OSError as e:
        raise ConfigError(f"--cache-dir: cannot create a folder in {folder.parent} ({e})") from None
    t0 = time.perf_counter()
    try:
        writer = CacheWriter(tmp, tokenizer)
        build(writer)
        fields = writer._close()
        if writer.tokenizer is not None:
            writer.tokenizer.save(tmp / "tokenizer.json")
        manifest = {"version": CACHE_VERSION, "key": key, "tokenizer_recipe": tokenizer_recipe,
                    "tokenizer_sha256": tokenizer_sha256(writer.tokenizer) if writer.tokenizer else None,
                    "fields": fields, "meta": writer.meta,
                    "builds": (old or {}).get("builds", 0) + 1, "build_seconds": round(time.perf_counter() - t0, 2),
                    "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        atomic_write_json(tmp / MANIFEST, manifest)
        _replace_folder(tmp, folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"token cache {folder}: cannot write ({e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cache = TokenCache(folder, reused=False)
    why = "" if old is None else "; the sources or the tokenizer had changed"
    sizes = ", ".join(f"{n} {s.get('values', s['length']):,}" for n, s in fields.items() if s["kind"] != "array")
    cache_log(f"token cache {folder}: built in {manifest['build_seconds']:.1f} s ({sizes} tokens){why}")
    return cache


def _replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``; an existing ``folder`` is renamed aside first, then deleted."""
    trash = None
    if folder.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, trash / "cache")
    os.replace(new, folder)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):  # persist the renames
        fd = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
