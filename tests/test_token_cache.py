"""Data larger than memory: the memory-mapped token cache (core.token_cache), the streamed text operations it is
built with (core.text_stream), and the tasks that train from it (--cache-dir / --streaming) taking the same
batches as in memory, reusing the cache and rebuilding it when a source changes."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import panformer.core.text_stream as ts
from panformer.core.errors import DataError
from panformer.core.token_cache import open_token_cache, token_dtype
from panformer.core.tokenizer import TextTokenizer, train_tokenizer
from panformer.tasks import get_task
from panformer.tasks.cli import main
from panformer.tasks.generation.data import pydoc_topics

pytestmark = pytest.mark.usefixtures("one_thread")

# Text that exercises every rule of the in-memory path: CRLF and lone CR line ends, leading and trailing
# blank lines, runs of spaces, tabs before spaces, curly quotes and a character outside the BMP.
ODD = "\r\n\n  Lead\u2019s  line\r\nnext\rline \t  tab\u00e9 \U0001d518nd   of  it.\n\n\n"


def pieces_of(text: str, rng: random.Random, most: int = 40) -> list[str]:
    out, i = [], 0
    while i < len(text):
        k = rng.randint(0, most)
        out.append(text[i : i + k])
        i += k
    return out


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return train_tokenizer([t for d in pydoc_topics()[:10] for t in d.split("\n\n")] + [ODD], "bpe", vocab_size=400)


def test_streamed_text_operations_equal_the_whole_string_ones(bpe):
    rng = random.Random(0)
    docs = [d[:3000] for d in pydoc_topics()[:6]] + [ODD, " \n\t ", "", "\n\nlast doc\n"]
    whole = "\n\n".join(d.strip("\n") for d in docs if d.strip())
    char = train_tokenizer([whole[:2000]], "char")  # characters missing from the vocabulary become <unk>
    for trial in range(20):
        joined = "".join(ts.join_documents(pieces_of(d, rng) for d in docs))
        assert joined == whole
        bounds = sorted(rng.sample(range(len(whole)), 3))
        cut = ["", "", "", ""]
        for seg, p in ts.cut_pieces(pieces_of(whole, rng), bounds):
            cut[seg] += p
        assert cut == [whole[:bounds[0]], whole[bounds[0]:bounds[1]], whole[bounds[1]:bounds[2]], whole[bounds[2]:]]
        assert list(ts.paragraphs(pieces_of(whole, rng))) == whole.split("\n\n")
        chunks = list(ts.safe_chunks(pieces_of(whole, rng), chunk_chars=rng.randint(5, 200)))
        assert "".join(chunks) == whole and all(c[0] == " " and not p[-1].isspace() for p, c in zip(chunks, chunks[1:]))
        ids = np.concatenate(list(ts.encode_pieces(bpe, pieces_of(whole, rng, 300), False)))
        assert ids.tolist() == bpe.encode(whole)  # BPE over safe chunks = BPE over the whole text
        ids = np.concatenate(list(ts.encode_pieces(char, pieces_of(whole, rng), True, np.uint8)))
        vocab = char.tok.get_vocab()
        assert ids.tolist() == [vocab.get(c, char.unk_id) for c in whole]
    assert bpe.unk_id not in bpe.encode(whole) and char.unk_id in ids  # both paths were exercised


def test_token_cache_is_reused_for_the_same_key_and_rebuilt_atomically(tmp_path, bpe):
    builds = []

    def build(w):
        builds.append(1)
        w.tokenizer = bpe
        s = w.stream("ids", token_dtype(bpe.vocab_size))
        s.append(bpe.encode("hello world"))
        r = w.ragged("rows", np.uint16)
        r.extend([[1, 2, 3], [], [4]])
        w.array("label", np.array([0, 1, 0], np.int32))
        w.meta["note"] = "x"

    folder = tmp_path / "cache" / "c"
    c = open_token_cache(folder, {"a": 1}, build, tokenizer_recipe={"kind": "bpe"})
    assert not c.reused and c.stream("ids")[0:100].tolist() == bpe.encode("hello world")
    assert c.stream("ids")[0:2].dtype == torch.long and c.stream("ids").array.dtype == np.uint16
    rows = c.ragged("rows")
    assert [rows[i].tolist() for i in range(len(rows))] == [[1, 2, 3], [], [4]] and rows.lengths.tolist() == [3, 0, 1]
    assert c.array("label").tolist() == [0, 1, 0] and c.meta == {"note": "x"} and c.manifest["builds"] == 1
    again = open_token_cache(folder, {"a": 1}, build, tokenizer_recipe={"kind": "bpe"})
    assert again.reused and len(builds) == 1
    assert again.tokenizer.encode("hello") == bpe.encode("hello")
    # the exact tokenizer (as a run directory saves and loads it) also matches; another one does not
    bpe.save(tmp_path / "tok.json")
    assert open_token_cache(folder, {"a": 1}, build, tokenizer=TextTokenizer.load(tmp_path / "tok.json")).reused
    other = train_tokenizer(["something else entirely"], "char")
    with pytest.raises(ValueError):  # build() sets bpe while `other` is required: nothing may be half-replaced
        open_token_cache(folder, {"a": 1}, lambda w: (_ for _ in ()).throw(ValueError("boom")), tokenizer=other)
    assert open_token_cache(folder, {"a": 1}, build, tokenizer_recipe={"kind": "bpe"}).reused  # old cache intact
    assert open_token_cache(folder, {"a": 2}, build, tokenizer_recipe={"kind": "bpe"}).manifest["builds"] == 2
    assert sorted(p.name for p in folder.parent.iterdir()) == ["c"]  # no temporary folders left behind


# -- tasks: memory-mapped batches equal in-memory batches -------------------------------------------------
@pytest.fixture
def small_pieces(monkeypatch):
    """Read files in pieces of 997 characters and tokenise BPE in chunks of ~113: every boundary rule is hit."""
    monkeypatch.setattr(ts, "PIECE_CHARS", 997)
    monkeypatch.setattr(ts, "CHUNK_CHARS", 113)
    monkeypatch.setattr(ts, "CHUNKS_PER_BATCH", 3)


def train_batches(monkeypatch, tmp_path, task: str, argv: list[str], n: int = 4) -> tuple[list[dict], dict, str]:
    """The first ``n`` batches the Trainer hands to the loss, the test metrics and the saved assets of a run."""
    cls = get_task(task)
    seen: list[dict] = []
    loss = cls.loss

    def spy(self, model, batch):
        if len(seen) < n:
            seen.append({k: v.clone() for k, v in batch.items()})
        return loss(self, model, batch)

    monkeypatch.setattr(cls, "loss", spy)
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    argv = [str(x) for x in argv]
    assert main(["train", task, "--quick", "--progress", "false", "--out", str(out), *argv]) == 0
    monkeypatch.setattr(cls, "loss", loss)
    if "--cache-dir" in argv:  # the memory-mapped path was taken
        assert list(Path(argv[argv.index("--cache-dir") + 1]).glob(f"{task}-*/manifest.json"))
    assets = "".join(p.read_text() for p in sorted((out / "assets").iterdir()))
    return seen, json.loads((out / "metrics.json").read_text()), assets


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


def write_corpus(folder: Path, n_docs: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(pydoc_topics()[:n_docs]):
        (folder / f"{i:02d}.txt").write_bytes((ODD + d[:6000] + ODD).encode())  # bytes: keep the \r
    (folder / "blank.txt").write_text(" \n \n")  # a whitespace-only document is dropped
    return folder


GEN = ["--max-steps", "3", "--eval-every", "1000", "--max-new-tokens", "4", "--block-size", "32"]


@pytest.mark.parametrize("case", ["char-file-max-chars", "bpe-folder", "table-valid-data"])
def test_generation_memmap_batches_equal_in_memory(case, tmp_path, monkeypatch, small_pieces):
    docs = write_corpus(tmp_path / "docs")
    if case == "char-file-max-chars":
        big = tmp_path / "big.txt"
        big.write_bytes(b"".join(p.read_bytes() for p in sorted(docs.iterdir())))
        argv = ["--data", big, "--max-chars", "40000", "--valid-fraction", "0.05", "--test-fraction", "0.05"]
    elif case == "bpe-folder":
        argv = ["--data", docs, "--tokenizer", "bpe", "--vocab-size", "300", "--max-chars", "0"]
    else:
        rows = [{"body": p.read_text()} for p in sorted(docs.iterdir())] + [{"body": None}]
        (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        argv = ["--data", tmp_path / "t.jsonl", "--text-column", "body", "--valid-data", docs / "00.txt"]
    base = train_batches(monkeypatch, tmp_path, "generation", [*GEN, *argv])
    mapped = train_batches(monkeypatch, tmp_path, "generation", [*GEN, *argv, "--cache-dir", tmp_path / "cache"])
    assert_same_batches(base[0], mapped[0])
    assert base[2] == mapped[2]  # the same tokenizer
    assert {k: base[1][k] for k in ("loss", "tokens")} == {k: mapped[1][k] for k in ("loss", "tokens")}


def test_generation_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    import panformer.tasks.generation.corpus as corpus

    calls = {"fit": 0, "encode": 0}
    fit, encode = corpus.train_tokenizer, TextTokenizer.encode_chars
    monkeypatch.setattr(corpus, "train_tokenizer", lambda *a, **k: (calls.__setitem__("fit", calls["fit"] + 1), fit(*a, **k))[1])
    monkeypatch.setattr(TextTokenizer, "encode_chars",
                        lambda self, *a: (calls.__setitem__("encode", calls["encode"] + 1), encode(self, *a))[1])
    data = tmp_path / "c.txt"
    data.write_text("\n\n".join(pydoc_topics()[:8]))
    argv = ["--data", data, "--cache-dir", tmp_path / "cache", "--max-steps", "1", "--max-new-tokens", "1"]
    manifest = lambda: json.loads(next((tmp_path / "cache").glob("generation-*/manifest.json")).read_text())  # noqa: E731
    train_batches(monkeypatch, tmp_path, "generation", argv)
    assert calls["fit"] == 1 and calls["encode"] > 0 and manifest()["builds"] == 1
    first = manifest()["fields"]["train"]["length"]
    calls.update(fit=0, encode=0)
    train_batches(monkeypatch, tmp_path, "generation", argv)
    assert calls == {"fit": 0, "encode": 0} and manifest()["builds"] == 1  # no second tokenisation
    with data.open("a") as f:
        f.write("\n\nMore text at the end, so the file's size and time change.")
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    train_batches(monkeypatch, tmp_path, "generation", argv)
    assert calls["fit"] == 1 and manifest()["builds"] == 2 and manifest()["fields"]["train"]["length"] > first
    assert len(list((tmp_path / "cache").iterdir())) == 1  # rebuilt in place


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_generation_streaming_reads_through_datasets_with_the_same_batches(kind, tmp_path, monkeypatch):
    import datasets

    text = ODD + "\n\n".join(d[:4000] for d in pydoc_topics()[:8]) + ODD
    if kind == "txt":
        data = tmp_path / "c.txt"
        data.write_bytes(text.encode())
    else:
        data = tmp_path / "c.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in text.split("\n\n")))
    streamed = []
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (streamed.append(k.get("streaming")), load(*a, **k))[1])
    base = train_batches(monkeypatch, tmp_path, "generation", [*GEN, "--data", data])
    mapped = train_batches(monkeypatch, tmp_path, "generation", [*GEN, "--data", data, "--streaming",
                                                                 "--cache-dir", tmp_path / "cache"])
    assert True in streamed  # the streaming path of datasets read the file
    assert_same_batches(base[0], mapped[0])
    assert base[1]["loss"] == mapped[1]["loss"]


def test_cache_options_give_one_line_errors(tmp_path, train_error):
    assert "file not found" in train_error("generation", "--data", tmp_path / "missing.txt", "--streaming")
    (tmp_path / "t.jsonl").write_text('{"title": "a"}\n')
    assert "--text-column" in train_error("generation", "--data", tmp_path / "t.jsonl", "--streaming",
                                          "--cache-dir", tmp_path / "cache")
    (tmp_path / "blank.txt").write_text("\n \n")
    assert "contains no text" in train_error("generation", "--data", tmp_path / "blank.txt", "--cache-dir", tmp_path / "c")
    (tmp_path / "file").write_text("x")
    assert "--cache-dir" in train_error("generation", "--cache-dir", tmp_path / "file" / "sub")


def sentiment_table(path: Path, n: int = 600) -> Path:
    rng = random.Random(1)
    words = "good bad great awful fine dull superb weak moving flat the a film plot actors was very not".split()
    rows = ["label\tsentence"] + [f"{rng.choice(['pos', 'neg', 7])}\t{' '.join(rng.choices(words, k=rng.randint(1, 30)))}"
                                  for _ in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("tokenizer", ["wordpiece", "char"])
def test_sentiment_memmap_batches_equal_in_memory(tokenizer, tmp_path, monkeypatch):
    data = sentiment_table(tmp_path / "train.tsv")
    argv = ["--data", data, "--tokenizer", tokenizer, "--max-steps", "3", "--max-examples", "400", "--max-len", "12",
            "--pooling", "cls", "--batch-size", "16", "--eval-every", "1000"]
    base = train_batches(monkeypatch, tmp_path, "sentiment", argv)
    mapped = train_batches(monkeypatch, tmp_path, "sentiment", [*argv, "--cache-dir", tmp_path / "cache"])
    assert_same_batches(base[0], mapped[0])
    assert base[2] == mapped[2]  # tokenizer and labels
    assert base[1]["accuracy"] == mapped[1]["accuracy"] and base[1]["loss"] == pytest.approx(mapped[1]["loss"], abs=1e-6)
    streamed = train_batches(monkeypatch, tmp_path, "sentiment", [*argv, "--streaming", "--cache-dir", tmp_path / "c2"])
    assert_same_batches(base[0], streamed[0])
    assert base[1]["accuracy"] == streamed[1]["accuracy"]
    assert list((tmp_path / "c2").glob("sentiment-*/rows-*.json"))  # the streamed validation/test rows are kept


@pytest.mark.parametrize("shared", ["true", "false"])
def test_translation_memmap_batches_equal_in_memory(shared, tmp_path, monkeypatch):
    from panformer.tasks.translation import number_expression_pairs

    src, tgt = number_expression_pairs(300, seed=3)
    (tmp_path / "p.de").write_text("\n".join(src) + "\n")
    (tmp_path / "p.en").write_text("\n".join(tgt) + "\n\n")  # one trailing blank line is tolerated
    argv = ["--data", tmp_path / "p", "--shared-vocab", shared, "--tie-embeddings", shared, "--vocab-size", "200",
            "--max-len", "10", "--max-steps", "3", "--eval-every", "1000", "--beam-size", "1", "--batch-size", "16",
            "--attention-examples", "0"]
    base = train_batches(monkeypatch, tmp_path, "translation", argv)
    mapped = train_batches(monkeypatch, tmp_path, "translation", [*argv, "--cache-dir", tmp_path / "cache"])
    assert_same_batches(base[0], mapped[0])
    assert base[2] == mapped[2] and base[1]["bleu"] == mapped[1]["bleu"]
    assert len(list((tmp_path / "cache").iterdir())) == (1 if shared == "true" else 2)  # one cache per vocabulary


@pytest.mark.parametrize("kind", ["sasrec-txt", "csv-stride", "jsonl-streaming"])
def test_recommendation_memmap_batches_equal_in_memory(kind, tmp_path, monkeypatch):
    from panformer.tasks.recommendation.data import markov_sequences

    seqs = markov_sequences(num_users=120, num_items=40, length=12, seed=2)
    rng = random.Random(0)
    rows = [(u, it, t) for u, s in seqs.items() for t, it in enumerate(s)]
    rng.shuffle(rows)  # file order is not time order; ties (same t) keep the file order
    argv = ["--max-steps", "3", "--eval-every", "1000", "--max-len", "8", "--batch-size", "16"]
    if kind == "sasrec-txt":
        rows.sort(key=lambda r: r[2])
        data = tmp_path / "inter.txt"
        data.write_text("".join(f"{u} {it}\n" for u, it, _ in rows))
    else:
        data = tmp_path / ("inter.csv" if kind == "csv-stride" else "inter.jsonl")
        ratings = [rng.randint(1, 5) for _ in rows]
        if kind == "csv-stride":
            data.write_text("user_id,item_id,timestamp,rating\n" + "".join(
                f"u{u},i{it},{1000 + t},{r}\n" for (u, it, t), r in zip(rows, ratings)))
            argv += ["--window-stride", "3", "--min-item-interactions", "5", "--model", "bert4rec"]
        else:
            data.write_text("".join(json.dumps({"user": int(u), "item": int(it), "time": f"2020-01-{1 + t:02d}T00:00:00",
                                                "rating": r}) + "\n" for (u, it, t), r in zip(rows, ratings)))
            argv += ["--min-rating", "2", "--loss", "bce"]
    argv += ["--data", data]
    base = train_batches(monkeypatch, tmp_path, "recommendation", argv)
    extra = ["--streaming"] if kind == "jsonl-streaming" else []
    mapped = train_batches(monkeypatch, tmp_path, "recommendation", [*argv, *extra, "--cache-dir", tmp_path / "cache"])
    assert_same_batches(base[0], mapped[0])
    assert base[2] == mapped[2]  # the item catalogue
    for k in ("sampled/ndcg@10", "full/ndcg@10", "users"):
        assert base[1][k] == mapped[1][k], k
