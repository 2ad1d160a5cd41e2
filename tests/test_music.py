"""Music task: the event scheme, shapes, learning on the chorales, cached = uncached decoding, MIDI / PNG
outputs, the CLI (train / evaluate / predict), a folder of MIDI files and one-line errors."""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from panformer.core import generate
from panformer.tasks.cli import load_run, main
from panformer.tasks.music import EventVocab
from panformer.tasks.music.data import PieceWindows, chorale_files, read_pieces
from panformer.tasks.music.metrics import histogram_distance, in_key_share, key_normalised_histogram, music_statistics
from panformer.tasks.music.output import write_midi
from panformer.tasks.music.tokens import BOS, EOS, PAD

QUICK = ["--quick", "--progress", "false", "--max-new-tokens", "64", "--eval-samples", "3"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("music") / "run"
    assert main(["train", "music", *QUICK, "--max-steps", "60", "--block-size", "64", "--batch-size", "8",
                 "--eval-every", "30", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def chorales() -> list:
    return read_pieces(chorale_files(4), EventVocab(), "test")


def test_event_scheme_round_trip_and_transposition(chorales):
    v = EventVocab()
    assert v.size == 3 + 16 + 4 + 128 + 32 and v.token_name(v.pitch0 + 60) == "PITCH_60"
    for _, notes in chorales:
        assert {n[2] for n in notes} == {0, 1, 2, 3} and notes[0][0] == 0  # SATB, starting at 0
        ids = v.encode(notes)
        assert ids[0] == BOS and ids[-1] == EOS
        back, errors = v.decode(ids)
        assert errors == 0 and back == [(o, min(d, v.max_dur), vo, p) for o, d, vo, p in notes]
        up, _ = v.decode(v.transpose(torch.tensor(ids), 3).tolist())
        assert [n[3] for n in up] == [n[3] + 3 for n in back] and [n[:3] for n in up] == [n[:3] for n in back]
    # a long rest becomes repeated shifts; a bad grammar is counted, not fatal
    assert v.encode([(0, 4, 0, 60), (40, 4, 1, 64)], bos=False, eos=False)[3:6] == [v.shift0 + 15] * 2 + [v.shift0 + 7]
    notes, errors = v.decode([BOS, v.dur0, v.voice0, v.pitch0 + 60, v.pitch0 + 62, v.dur0 + 3, EOS, v.voice0])
    assert notes == [(0, 4, 0, 62)] and errors == 2


def test_windows_batches_and_model_shapes(chorales):
    v = EventVocab()
    pieces = [torch.tensor(v.encode(n)) for _, n in chorales]
    ds = PieceWindows(pieces, block_size=64, vocab=v, transpose=2)
    n_windows = sum(len(range(0, max(1, len(p) - 65 + 16), 16)) for p in pieces)
    assert len(ds) == n_windows * 5
    assert all(ds[i].shape == (65,) for i in range(0, len(ds), 37))
    assert torch.equal(ds[2], pieces[0][:65])  # window 0, shift index 2 = 0 semitones
    assert torch.equal(v.transpose(ds[0], 2), ds[2])  # window 0, -2 semitones
    last, (_, s) = pieces[-1], ds.starts[-1]  # the last window of a piece reaches its EOS, then PAD
    k = last.numel() - s
    tail = ds[len(ds) - 1]
    assert 0 < k <= 65 and last[-1] == EOS
    assert torch.equal(tail[:k], v.transpose(last[s:], 2)) and bool((tail[k:] == PAD).all())
    from panformer.core import CausalTransformerLM, TransformerConfig

    lm = CausalTransformerLM(TransformerConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, max_len=64,
                                               positional="learned", norm_first=True), v.size, PAD)
    batch = torch.stack([ds[i] for i in range(4)])  # (4, 65)
    assert lm(batch[:, :-1]).shape == (4, 64, v.size)


def unigram_entropy(pieces: list[torch.Tensor]) -> float:
    counts = collections.Counter(t for p in pieces for t in p[1:].tolist())
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def test_learns_and_reports_music_metrics(run):
    m = json.loads((run / "metrics.json").read_text())
    task, model = load_run(run, "cpu")
    task.load_data()
    ids = task.ids(m["split"])
    assert m["tokens"] == sum(p.numel() - 1 for p in ids)
    torch.manual_seed(0)
    fresh_loss, _ = task._nll(task.build_model().eval(), ids)
    assert fresh_loss > math.log(task.vocab.size) - 0.5  # the starting point: about uniform
    assert m["loss"] < fresh_loss - 2.0 and m["loss"] < unigram_entropy(ids) - 0.5, m
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert 0.85 < m["in_key_share_real"] <= 1.0 and 0 < m["pch_distance_real_halves"] < 0.3
    for k in ("pch_distance", "duration_distance", "in_key_share"):
        assert 0.0 <= m[k] <= 1.0, k
    log = (run / "log.csv").read_text()
    assert "valid" in log


def test_cached_generation_equals_uncached(run):
    task, model = load_run(run, "cpu")
    n = model.cfg.max_len + 30  # crosses the context window: chunked restarts
    for kw in (dict(decoding="greedy"), dict(decoding="sample", temperature=1.0, top_k=20, top_p=0.9)):
        a = generate(model, [BOS], n, generator=torch.Generator().manual_seed(1), use_cache=True, num_samples=2, **kw)
        b = generate(model, [BOS], n, generator=torch.Generator().manual_seed(1), use_cache=False, num_samples=2, **kw)
        assert a == b and len(a) == 2 and all(len(s) == n + 1 for s in a)


def test_grammar_constrained_sampling(run):
    task, _ = load_run(run, "cpu", {"max_new_tokens": 120, "temperature": 1.5})
    torch.manual_seed(0)
    fresh = task.build_model().eval()  # untrained: samples break the grammar unless constrained
    task.args.constrained = False
    assert sum(e for _, e, _ in task.generate_pieces(fresh, [BOS], 4)) > 20
    task.args.constrained = True
    task.args.generation_seed = 3
    pieces = task.generate_pieces(fresh, [BOS], 8)
    assert all(e == 0 for _, e, _ in pieces) and sum(len(notes) for notes, _, _ in pieces) > 20
    v = task.vocab
    ok = v.allowed_next(torch.tensor([BOS, v.voice0, v.pitch0 + 60, v.dur0, v.shift0]))  # (5, V)
    assert ok[0].sum() == v.max_shift + v.max_voices + 1 and not ok[:, PAD].any() and not ok[:, BOS].any()
    assert ok[1].nonzero().flatten().tolist() == list(range(v.pitch0, v.dur0))
    assert ok[2].nonzero().flatten().tolist() == list(range(v.dur0, v.size))
    assert torch.equal(ok[3], ok[0]) and torch.equal(ok[4], ok[0])


def test_outputs_parse_back(run, tmp_path, capsys):
    from music21 import converter
    from PIL import Image

    samples = sorted((run / "samples").glob("sample_*.mid"))
    assert len(samples) == 3 and all(p.with_suffix(".png").is_file() for p in samples)
    with Image.open(samples[0].with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] > 100
    # predict from a corpus prompt: the MIDI written holds exactly the decoded notes
    out = tmp_path / "pred"
    assert main(["predict", "music", "--run", str(run), "bach/bwv269", "--max-new-tokens", "48", "--num-samples", "2",
                 "--out-dir", str(out), "--prompt-quarters", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["midi"]).name for r in rows] == ["bwv269_0.mid", "bwv269_1.mid"]
    # music21 splits a note that crosses a barline into tied notes when it reads a MIDI file: join them first
    score = converter.parse(rows[0]["midi"]).stripTies()
    got = sorted(p.midi for n in score.recurse().notes for p in n.pitches)
    assert len(got) == rows[0]["notes"] > 0
    task, _ = load_run(run, "cpu", {"prompt_quarters": 2.0})
    prompt_notes, _ = task.vocab.decode(task._prompt_ids("bach/bwv269"))
    assert all(n[0] < 8 for n in prompt_notes) and len(prompt_notes) >= 8  # SATB over 2 quarters
    assert collections.Counter(n[3] for n in prompt_notes) <= collections.Counter(got)


def test_evaluate_cli(run, capsys):
    assert main(["evaluate", "music", "--run", str(run), "--split", "valid", "--max-new-tokens", "32",
                 "--eval-samples", "2"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"])) and "pch_distance" in m


def test_music_statistics():
    scale = [(i, 4, 0, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
    assert in_key_share(scale) == 1.0
    assert in_key_share([(i, 1, 0, 60 + i) for i in range(12)]) == pytest.approx(7 / 12)
    d_major = [(o, d, v, p + 2) for o, d, v, p in scale]  # key normalisation: D major looks like C major
    assert np.allclose(key_normalised_histogram(d_major), key_normalised_histogram(scale))
    a, b = np.eye(12)[0], np.eye(12)[1]
    assert histogram_distance(a, a) == 0 and histogram_distance(a, b) == 1.0
    s = music_statistics([d_major], [scale, scale], max_dur=32)
    assert s["pch_distance"] == 0 and s["pch_distance_real_halves"] == 0 and s["duration_distance"] == 0
    assert music_statistics([[]], [scale, scale], 32)["pch_distance"] == 1.0


def test_folder_of_midi_files_and_cache(chorales, tmp_path, monkeypatch):
    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "midi"
    for i, (_, notes) in enumerate(chorales):
        write_midi(notes, data / f"piece{i}.mid", 4)
    out = tmp_path / "run"
    assert main(["train", "music", *QUICK, "--data", str(data), "--valid-fraction", "0.25", "--test-fraction", "0",
                 "--max-steps", "3", "--eval-samples", "1", "--out", str(out)]) == 0
    assert len(list((tmp_path / "cache" / "music").rglob("*.json"))) == 4  # parsed once, cached per file
    back = read_pieces(sorted(data.glob("*.mid")), EventVocab(), "--data")
    assert [n for _, n in back] == [n for _, n in chorales]  # MIDI round trip (from the cache) is exact
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "valid" and m["tokens"] > 0


def test_bad_inputs_give_one_line_errors(tmp_path, monkeypatch, train_error):
    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    err = train_error("music", "--data", str(tmp_path / "empty"))
    assert f"folder {tmp_path / 'empty'} has no MIDI or MusicXML files" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mid").write_bytes(b"MThd not really a midi file")
    assert f"cannot read {bad / 'broken.mid'} as a score" in train_error("music", "--data", str(bad))
    assert "not found" in train_error("music", "--data", str(tmp_path / "missing"))
    (tmp_path / "notes.txt").write_text("C D E")
    assert "unsupported file type '.txt'" in train_error("music", "--data", str(tmp_path / "notes.txt"))
    assert "--max-voices must be positive" in train_error("music", "--max-voices", "0")
