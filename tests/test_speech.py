"""Speech task: front end, CTC decoding, espeak synthesis, data adapters, learning and bad input."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor

from panformer.core import TransformerConfig
from panformer.core.errors import ConfigError, DataError
from panformer.tasks.cli import load_run, main
from panformer.tasks.speech.arguments import normalize_transcript
from panformer.tasks.speech.ctc import (Lexicon, collapse_alignment, ctc_beam_decode, ctc_greedy_decode, ctc_prefix_beam_search,
                              ctc_scores)
from panformer.tasks.speech.data import connect_digits, espeak_corpus, load_source, read_fsdd
from panformer.tasks.speech.espeak import ESPEAK_RATE, espeak_synthesize
from panformer.tasks.speech.model import SpeechRecognizer
from panformer.tasks.speech.frontend import (Conv2dSubsampling, LogMelFrontend, MelWarp, read_audio, resample, spec_augment,
                                   speed_perturb, subsampled_lengths)

FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _wav(path: Path, text: str = "three one", sr: int = 16000, stereo: bool = False) -> Path:
    x = resample(espeak_synthesize(text).astype(np.float32) / 32768, ESPEAK_RATE, sr).numpy()
    sf.write(path, np.stack([x, 0.5 * x], 1) if stereo else x, sr)
    return path


# -- front end ----------------------------------------------------------------------------------------
def test_frontend_frames_and_subsampled_lengths_agree():
    fe = LogMelFrontend(16000, 40)
    sub = Conv2dSubsampling(40, 32, channels=8)
    lengths = [fe.min_samples - 1, fe.min_samples, 3000, 8000, 16000]
    feats = [fe(torch.randn(n)) if n >= fe.n_fft else None for n in lengths]
    for n, f in zip(lengths, feats):
        assert fe.num_frames(n) == (0 if f is None else f.shape[0])
        if f is not None:
            assert f.shape[1] == 40 and torch.allclose(f.mean(0), torch.zeros(40), atol=1e-4)  # per-utterance CMVN
    assert subsampled_lengths(torch.tensor(fe.num_frames(fe.min_samples - 1))) == 0
    assert subsampled_lengths(torch.tensor(fe.num_frames(fe.min_samples))) == 1
    valid = [f for f in feats if f is not None]
    T = max(f.shape[0] for f in valid)
    batch = torch.stack([F.pad(f, (0, 0, 0, T - f.shape[0])) for f in valid])
    lens = torch.tensor([f.shape[0] for f in valid])
    out, out_lens = sub(batch, lens)
    assert out.shape == (len(valid), int(subsampled_lengths(torch.tensor(T))), 32)
    for f, n in zip(valid, out_lens):  # each utterance alone has exactly the length CTC is told
        if n > 0:
            assert sub(f[None], torch.tensor([f.shape[0]]))[0].shape[1] == int(n)


def test_spec_augment_masks_within_lengths_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 60, 40) + 5.0
    lens = torch.tensor([60, 40, 20, 10])
    y = spec_augment(x, lens, freq_masks=0, time_masks=3, time_width=0.3, generator=g)
    zero_frames = (y == 0).all(-1)  # (B, T)
    assert zero_frames.any()
    for b, n in enumerate(lens):
        assert not zero_frames[b, n:].any() and zero_frames[b, :n].sum() <= 3 * int(0.3 * n)
    y = spec_augment(x, lens, freq_masks=2, freq_width=10, time_masks=0, generator=g)
    zero_bins = (y == 0).all(1)  # (B, F)
    assert (zero_bins.sum(1) <= 20).all() and zero_bins.any()


def test_mel_warp_moves_a_tone_to_alpha_times_its_frequency():
    sr, n_mels = 8000, 40
    fe, warp = LogMelFrontend(sr, n_mels), MelWarp(sr, n_mels, max_warp=0.2)
    t = torch.arange(sr // 2) / sr

    def tone(hz: float) -> Tensor:  # (1, T, F) log-mel of a pure tone
        return fe.log_mel(torch.sin(2 * math.pi * hz * t))[None]

    assert torch.allclose(warp.warp(tone(900.0), torch.tensor([1.0])), tone(900.0), atol=1e-4)  # 1 = identity
    for alpha in (0.85, 1.15):  # below the knee (0.6 x 4 kHz x min(a, 1) / a) f -> a f: the peak follows
        moved = warp.warp(tone(900.0), torch.tensor([alpha]))
        # the peak bin of the warped tone is that of a tone at a x 900 Hz; bins there are ~60 Hz wide, so
        # the linear interpolation between bins cannot move it by more than one
        assert abs(int(moved.mean(1).argmax()) - int(tone(alpha * 900.0).mean(1).argmax())) <= 1
        assert int(moved.mean(1).argmax()) != int(tone(900.0).mean(1).argmax())
    bins = warp.source_bins(torch.tensor([0.8, 0.9, 1.1, 1.2])).float()
    assert (bins.diff(dim=1) >= 0).all() and bins.min() >= 0 and bins.max() <= n_mels - 1  # monotone, in range
    assert torch.allclose(bins[:, -1], torch.full((4,), n_mels - 1.0), atol=0.5)  # the band edge stays put


def test_vtlp_only_in_training_and_not_in_the_checkpoint():
    cfg = TransformerConfig(d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, norm_first=True)
    plain = SpeechRecognizer(cfg, n_mels=40, vocab_size=12, spec_augment=None)
    warped = SpeechRecognizer(cfg, n_mels=40, vocab_size=12, spec_augment=None, freq_warp=MelWarp(8000, 40, 0.1))
    assert plain.state_dict().keys() == warped.state_dict().keys()
    warped.load_state_dict(plain.state_dict())
    x, lens = torch.randn(2, 50, 40), torch.tensor([50, 40])
    plain.eval(), warped.eval()
    assert torch.equal(plain(x, lens)["ctc_log_probs"], warped(x, lens)["ctc_log_probs"])  # eval: no warp
    warped.train()
    torch.manual_seed(0)
    assert not torch.allclose(warped.encode(x, lens)[0], plain.train().encode(x, lens)[0])


def test_read_audio_mixes_stereo_and_rejects_corrupt(tmp_path):
    p = _wav(tmp_path / "a.wav", stereo=True, sr=8000)
    wave, sr = read_audio(p)
    data, _ = sf.read(p, dtype="float32")
    assert sr == 8000 and wave.ndim == 1 and np.allclose(wave, data.mean(1))
    assert resample(wave, 8000, 16000).shape[0] == 2 * wave.shape[0]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wave file at all")
    with pytest.raises(DataError, match="bad.wav"):
        read_audio(bad)


# -- CTC ------------------------------------------------------------------------------------------
def test_decoding_a_known_alignment_gives_its_transcript():
    vocab = ["-", "h", "e", "l", "o"]
    path = "-hh-e-ll-l-oo-"  # the blank between the l's keeps both
    ids = [vocab.index(c) for c in path]
    assert "".join(vocab[i] for i in collapse_alignment(ids)) == "hello"
    lp = torch.log_softmax(10 * F.one_hot(torch.tensor(ids), 5).float(), -1)[None]
    assert ["".join(vocab[i] for i in s) for s in ctc_greedy_decode(lp)] == ["hello"]
    assert "".join(vocab[i] for i in ctc_beam_decode(lp, torch.tensor([len(ids)]), 4)[0]) == "hello"


def test_prefix_beam_search_beam1_equals_greedy_on_peaky_posteriors():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        T, V = 40, 7
        path = torch.randint(0, V, (T,), generator=g)
        lp = (torch.randn(T, V, generator=g) + 8 * F.one_hot(path, V)).log_softmax(-1)
        assert ctc_prefix_beam_search(lp, beam_size=1)[0][0] == ctc_greedy_decode(lp[None])[0]


def test_prefix_beam_scores_equal_exact_ctc_probabilities():
    torch.manual_seed(0)
    lp = torch.randn(7, 4).log_softmax(-1)
    hyps = ctc_prefix_beam_search(lp, beam_size=10_000, prune=-1e9)  # exhaustive: every prefix
    scores = torch.tensor([s for _, s in hyps])
    assert torch.logsumexp(scores, 0).item() == pytest.approx(0.0, abs=1e-5)  # a distribution over labellings
    ref = ctc_scores(lp, 7, [h for h, _ in hyps[:20]])  # torch's CTC forward algorithm
    assert torch.allclose(scores[:20], ref, atol=1e-4)
    assert torch.equal(scores, scores.sort(descending=True).values)  # best first


def test_lexicon_beam_search_spells_only_listed_words():
    vocab = ["-", " ", "e", "h", "r", "t", "o", "n"]
    lex = Lexicon([[vocab.index(c) for c in w] for w in ("three", "one", "ten")], space=1)
    # "thre" then a weak second "e" (0.4 against a 0.6 blank): best path drops it, the lexicon cannot
    rows = [("t", 0.9), ("h", 0.9), ("r", 0.9), ("e", 0.9), ("-", 0.9), ("e", 0.4), (" ", 0.9), ("o", 0.9),
            ("n", 0.9), ("e", 0.9)]
    probs = torch.full((len(rows), len(vocab)), 1e-3)
    for t, (c, p) in enumerate(rows):
        probs[t, vocab.index(c)] = p
        if p < 0.5:
            probs[t, 0] = 1 - p
    lp = (probs / probs.sum(-1, keepdim=True)).log()
    spell = lambda ids: "".join(vocab[i] for i in ids)  # noqa: E731
    assert spell(ctc_greedy_decode(lp[None])[0]) == "thre one"
    assert spell(ctc_prefix_beam_search(lp, 8)[0][0]) == "thre one"
    assert spell(ctc_prefix_beam_search(lp, 8, lexicon=lex)[0][0]) == "three one"
    # on noise, every hypothesis is a sequence of listed words joined by single spaces
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        noise = torch.randn(30, len(vocab), generator=g).log_softmax(-1)
        for ids, _ in ctc_prefix_beam_search(noise, 4, lexicon=lex):
            assert ids == [] or all(w in ("three", "one", "ten") for w in spell(ids).split(" "))


# -- data -----------------------------------------------------------------------------------------
def test_espeak_synthesis_is_deterministic():
    a = espeak_synthesize("seven two", "en-us+f3", rate=170, pitch=60, seed=3)
    espeak_synthesize("something else first", "en+m2", rate=200)
    b = espeak_synthesize("seven two", "en-us+f3", rate=170, pitch=60, seed=3)
    c = espeak_synthesize("seven two", "en-us+m1", rate=170, pitch=60, seed=3)
    assert a.dtype == np.int16 and len(a) > 0.3 * ESPEAK_RATE
    assert np.array_equal(a, b) and not np.array_equal(a[: len(c)], c[: len(a)])
    u1, u2 = espeak_corpus(6, seed=1, cache=False), espeak_corpus(6, seed=1)
    assert [u.text for u in u1] == [u.text for u in u2] and all(np.array_equal(x.wave, y.wave) for x, y in zip(u1, u2))
    assert {u.speaker for u in u1} and any(w.isalpha() for u in u1 for w in u.text.split())
    with pytest.raises(ConfigError, match="no voice"):
        espeak_synthesize("one", "xx-nope")


def test_audiofolder_manifest_and_saved_hf_dataset(tmp_path):
    import datasets

    folder = tmp_path / "af"
    folder.mkdir()
    _wav(folder / "a.wav", "one two")
    _wav(folder / "b.flac", "three", stereo=True)
    (folder / "metadata.csv").write_text("file_name,transcription,speaker_id\na.wav,One two.,s1\nb.flac,three,s2\n")
    utts = load_source(str(folder), "--data")
    assert [u.text for u in utts] == ["One two.", "three"] and [u.speaker for u in utts] == ["s1", "s2"]
    assert normalize_transcript(utts[0].text) == "one two"
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\ttext\naf/a.wav\thello\n")
    assert load_source(str(manifest), "--data")[0].audio()[1] == 16000
    ds = datasets.Dataset.from_dict({"audio": [str(folder / "a.wav")], "sentence": ["one two"]})
    ds.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))
    (u,) = load_source(str(tmp_path / "hf"), "--data")
    assert u.text == "one two" and u.audio()[0].ndim == 1


def test_speed_perturbation_changes_tempo_and_pitch_together():
    sr, n = 8000, 8000
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(n) / sr)
    for factor in (0.9, 1.1):
        y = speed_perturb(tone, factor)
        assert abs(y.numel() - n / factor) <= 2  # 1.1x faster: 1/1.1 of the samples
        peak_hz = np.abs(np.fft.rfft(y[200:-200].numpy())).argmax() * sr / (y.numel() - 400)
        assert abs(peak_hz - 440 * factor) < 5  # and 1.1x the pitch (FFT bins are ~1 Hz wide here)
    assert speed_perturb(tone, 1.0) is tone


def test_speed_perturbed_training_copies(tmp_path):
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    for d, spk, i in [(3, "ann", 0), (1, "ann", 1), (4, "ann", 2), (9, "ann", 3), (2, "ann", 4), (5, "ann", 5)]:
        _wav(tmp_path / f"{d}_{spk}_{i}.wav", ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                                "eight", "nine"][d], sr=8000)
    cls = get_task("speech")

    def task(*flags):
        args, _ = resolve_train_args(cls, ["--data", str(tmp_path), "--sample-rate", "8000", "--n-mels", "20",
                                           "--valid-fraction", "0.34", "--test-fraction", "0", *flags])
        t = cls(args)
        t.load_data()
        return t

    plain, fast = task(), task("--speed-perturb", "0.2", "--speed-copies", "3")
    n = len(plain.splits["train"])
    assert len(fast.splits["train"]) == len(fast.features["train"]) == len(fast.texts["train"]) == 3 * n
    assert fast.texts["train"] == plain.texts["train"] * 3
    frames = [[f.size(0) for f in t.features["train"]] for t in (plain, fast)]
    assert frames[1] != frames[0] * 3  # each copy at its own speed
    ratios = [b / a for a, b in zip(frames[0] * 3, frames[1])]
    assert min(ratios) > 1 / 1.2 - 0.05 and max(ratios) < 1 / 0.8 + 0.05
    assert [f.size(0) for f in fast.features["valid"]] == [f.size(0) for f in plain.features["valid"]]  # eval as is
    again = task("--speed-perturb", "0.2", "--speed-copies", "3")  # same seed, same speeds
    assert [f.size(0) for f in again.features["train"]] == frames[1]
    with pytest.raises(ConfigError, match="speed-perturb"):
        task("--speed-copies", "2")


def test_connected_digits_from_fsdd_named_folder(tmp_path):
    for d, spk, i in [(3, "ann", 0), (1, "ann", 1), (4, "ann", 2), (9, "bob", 0), (2, "bob", 1)]:
        _wav(tmp_path / f"{d}_{spk}_{i}.wav", ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                                "eight", "nine"][d], sr=8000)
    recs = read_fsdd(tmp_path)
    utts = connect_digits(recs, seed=0, repeats=2, max_digits=3)
    assert sum(len(u.text.split()) for u in utts) == 2 * len(recs)  # every recording used `repeats` times
    for u in utts:
        assert u.speaker in ("ann", "bob") and 1 <= len(u.text.split()) <= 3 and u.sample_rate == 8000
        digits = {"ann": {"three", "one", "four"}, "bob": {"nine", "two"}}[u.speaker]
        assert set(u.text.split()) <= digits  # one speaker per utterance


@pytest.mark.skipif(not FSDD.is_dir(), reason="FSDD not in ../shared/data/fsdd")
def test_fsdd_held_out_speaker_split():
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    cls = get_task("speech")
    args, _ = resolve_train_args(cls, ["--data", str(FSDD), "--fsdd-mode", "single", "--test-speakers", "theo",
                                       "--n-mels", "40", "--sample-rate", "8000"])
    task = cls(args)
    task.load_data()
    assert {u.speaker for u in task.splits["test"]} == {"theo"} and len(task.splits["test"]) == 500
    seen = {k: {u.source for u in v} for k, v in task.splits.items() if k != "test"}
    assert all(u.speaker != "theo" for k in seen for u in task.splits[k])
    assert not (seen["train"] & seen["valid"]) and not (seen["train"] & seen["test_seen"])
    assert sum(len(v) for v in task.splits.values()) == 3000


# -- training, evaluate, predict ------------------------------------------------------------------
def test_quick_run_learns_and_reloads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "speech", "--quick", "--max-steps", "300", "--builtin-size", "400", "--lr", "2e-3",
                 "--eval-every", "150", "--out", str(out), "--progress", "false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"wer", "cer", "exact_match", "loss"} <= set(metrics)
    task, trained = load_run(out, "cpu")
    task.load_data()
    # the same architecture untrained, on the same test split
    torch.manual_seed(0)
    start = task.evaluate(task.build_model(), "test")["cer"]
    end = task.evaluate(trained, "test")["cer"]
    assert end == pytest.approx(metrics["cer"]) and end < 0.65 * start, (start, end)
    assert (out / "predictions_test.tsv").is_file()
    # predict from the run directory: one transcript per clip, matching evaluate's decoding
    clip = tmp_path / "clip.wav"
    u = task.splits["test"][0]
    sf.write(clip, u.wave, u.sample_rate)
    capsys.readouterr()
    assert main(["predict", "speech", "--run", str(out), str(clip), "--decode", "beam", "--beam-size", "4"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    task.args.decode, task.args.beam_size = "beam", 4
    assert len(printed) == 1 and printed[0] == task.predict(trained, [str(clip)])[0]
    task.args.decode = "greedy"
    assert main(["evaluate", "speech", "--run", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["cer"] == pytest.approx(metrics["cer"], abs=1e-6)
    # --lexicon train: the run keeps the training words; every decoded word is one of them
    words = set((out / "assets" / "lexicon.txt").read_text().split())
    assert words == {w for t in task.texts["train"] for w in t.split()}
    assert main(["predict", "speech", "--run", str(out), str(clip), "--decode", "beam", "--lexicon", "train"]) == 0
    assert set(capsys.readouterr().out.split()) <= words
    task.args.decode, task.args.lexicon = "beam", "train"
    assert set(" ".join(task.transcribe(trained, task._encode("test"))[0]).split()) <= words
    task.args.decode = "greedy"
    with pytest.raises(ConfigError, match="--decode beam"):
        task.transcribe(trained, task._encode("test"))


def test_hybrid_ctc_attention_model_decodes(tmp_path):
    from panformer.tasks import get_task
    from panformer.tasks.cli import resolve_train_args

    cls = get_task("speech")
    args, _ = resolve_train_args(cls, ["--quick", "--builtin-size", "12", "--ctc-weight", "0.5", "--n-layers", "1",
                                       "--decoder-layers", "1", "--d-model", "32", "--d-ff", "64"])
    task = cls(args)
    task.load_data()
    task.fit_assets()
    model = task.build_model()
    batch = task.collate(task._encode("valid"))
    loss, parts = task.loss(model, batch)
    assert torch.isfinite(loss) and set(parts) == {"ctc", "att"}
    loss.backward()
    assert model.decoder.layers[0].parameters().__next__().grad is not None
    model.eval()
    for mode in ("greedy", "beam", "attention", "joint"):
        args.decode = mode
        hyps, _ = task.transcribe(model, task._encode("valid"))
        assert len(hyps) == len(task.splits["valid"]) and all(isinstance(h, str) for h in hyps)


def test_bpe_units_cover_the_alphabet_reload_and_refuse_a_lexicon(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "speech", "--quick", "--builtin-size", "40", "--units", "bpe", "--vocab-size", "64",
                 "--max-steps", "2", "--eval-every", "2", "--out", str(out), "--progress", "false"]) == 0
    task, model = load_run(out, "cpu")
    task.load_data()
    assert task.args.units == "bpe"  # a model field: the run is read back with its units
    tok = task.tokenizer
    assert 5 + 28 <= tok.vocab_size <= 64  # specials and every --alphabet character, then merges up to the cap
    assert task._model_alphabet() == set("abcdefghijklmnopqrstuvwxyz' ")  # even letters no transcript has
    texts = task.texts["train"]
    encoded = tok.encode_batch(texts)
    assert [tok.decode(ids) for ids in encoded] == texts  # exact round trip
    # merges learned from these texts shorten them: a unit per character plus the word marks would be
    # len(text) + 1; the 31 merges the cap leaves make each of the ten digit words at most a few units
    assert all(len(ids) <= len(t) for ids, t in zip(encoded, texts))
    assert sum(map(len, encoded)) < 0.7 * sum(map(len, texts)), (sum(map(len, encoded)), sum(map(len, texts)))
    assert tok.decode(tok.encode("quiz jqx")) == "quiz jqx"  # words never seen are still spelled
    hyps, loss = task.transcribe(model, task._encode("valid"))
    assert len(hyps) == len(task.splits["valid"]) and np.isfinite(loss)
    task.args.decode, task.args.lexicon = "beam", "train"
    with pytest.raises(ConfigError, match="--units char"):
        task.transcribe(model, task._encode("valid"))
    capsys.readouterr()
    assert main(["train", "speech", "--quick", "--units", "bpe", "--vocab-size", "20", "--out", str(tmp_path / "x")]) == 2
    assert "--vocab-size 20" in capsys.readouterr().err


# -- bad input → one clear line, exit 2, no run directory -----------------------------------------
def _fails(tmp_path, capsys, data_args: list[str], match: str) -> None:
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "speech", "--quick", "--out", str(out), *data_args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("panformer: error: ") and match in err, err
    assert not out.exists()


def _manifest(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    for name, _ in rows:
        if not (tmp_path / name).exists():
            _wav(tmp_path / name)
    p = tmp_path / "train.csv"
    p.write_text("path,text\n" + "".join(f"{n},{t}\n" for n, t in rows))
    return p


def test_bad_input_is_reported_clearly(tmp_path, capsys):
    good = [(f"g{i}.wav", "three one") for i in range(12)]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good + [("corrupt.wav", "one")]))], "corrupt.wav")
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good + [("g0.wav", " ")]))], "row 13")
    sf.write(tmp_path / "short.wav", np.zeros(800, np.float32), 16000)  # 50 ms
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good + [("short.wav", "one")]))], "shorter than")
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good + [("g1.wav", "call 911")]))], "'19'")
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good + [("g1.wav", "call 911")])), "--units", "bpe",
                              "--vocab-size", "64"], "'19'")  # checked before BPE would learn units from them
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good)), "--test-speakers", "zed"], "zed")
    _fails(tmp_path, capsys, ["--data", str(_manifest(tmp_path, good)), "--vtlp", "0.6"], "--vtlp")
    _fails(tmp_path, capsys, ["--data", str(tmp_path / "missing.csv")], "missing.csv")
