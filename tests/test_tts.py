"""TTS task: model shapes, guided attention, cached vs uncached decoding, learning, vocoder, CLI and bad input."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from panformer.core import TransformerConfig
from panformer.core.errors import DataError
from panformer.tasks.tts import TTSTask
from panformer.tasks.tts.arguments import TTSArguments
from panformer.tasks.tts.audio import MEL_FLOOR, GriffinLimVocoder, dtw_l1, mel_frontend
from panformer.tasks.tts.data import tts_corpus
from panformer.tasks.tts.model import TransformerTTS, guided_attention_loss


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PANFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _model(vocab: int = 12, n_mels: int = 8, r: int = 2, seed: int = 0) -> TransformerTTS:
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_model=32, n_heads=2, n_layers=1, n_decoder_layers=2, d_ff=64, dropout=0.0,
                            norm_first=True, positional="none", max_len=512)
    return TransformerTTS(cfg, vocab, n_mels, r, encoder_convs=1, prenet_dim=16, postnet_channels=16).eval()


def _task(**over) -> TTSTask:
    a = {**{f: getattr(TTSArguments(), f) for f in TTSArguments.__dataclass_fields__}, "data": None, "valid_data": None,
         "test_data": None, "valid_fraction": 0.2, "test_fraction": 0.0, "max_examples": None, "seed": 0, "threads": 0,
         "builtin_kind": "phrases", "batch_size": 8}
    a.update(over)
    return TTSTask(SimpleNamespace(**a))


# -- model ----------------------------------------------------------------------------------------
def test_teacher_forced_shapes_and_decoder_inputs():
    m = _model(r=3)
    text = torch.tensor([[5, 6, 7, 3, 0], [5, 6, 7, 8, 3]])
    mel = torch.randn(2, 12, 8)
    out = m(text, torch.tensor([4, 5]), mel, torch.tensor([10, 12]))
    assert out["mel_before"].shape == out["mel_after"].shape == (2, 12, 8)
    assert out["stop_logits"].shape == (2, 4)
    assert len(out["cross"]) == 2 and out["cross"][0].shape == (2, 2, 4, 5)
    assert torch.allclose(out["cross"][0].sum(-1), torch.ones(2, 2, 4), atol=1e-5)
    assert out["cross"][0][0, :, :, 4].abs().max() < 1e-6  # the padded character gets no attention
    assert out["step_mask"].tolist() == [[False] * 4, [False] * 4]
    dec_in = TransformerTTS.decoder_inputs(mel, 3)  # go frame, then the last frame of each group of r
    assert dec_in.shape == (2, 4, 8) and dec_in[:, 0].abs().max() == 0
    assert torch.equal(dec_in[:, 1:], mel[:, [2, 5, 8]])


def test_guided_attention_loss_prefers_the_diagonal():
    N, S = 12, 6
    diag = torch.zeros(1, 1, N, S)
    diag[0, 0, torch.arange(N), (torch.arange(N) * S) // N] = 1.0
    anti = diag.flip(-1)
    uniform = torch.full((1, 1, N, S), 1.0 / S)
    no_pad = (torch.zeros(1, N, dtype=torch.bool), torch.zeros(1, S, dtype=torch.bool))
    losses = [float(guided_attention_loss([a], *no_pad, sigma=0.2)) for a in (diag, uniform, anti)]
    assert losses[0] < 0.01 < losses[1] < losses[2]
    # padding is ignored: extra padded steps/characters with arbitrary attention change nothing
    big = torch.rand(1, 1, N + 3, S + 2)
    big[:, :, :N, :S] = diag
    masks = (torch.arange(N + 3)[None] >= N, torch.arange(S + 2)[None] >= S)
    assert float(guided_attention_loss([big], *masks)) == pytest.approx(losses[0], abs=1e-6)


def test_cached_decoding_equals_uncached_and_does_not_depend_on_the_batch():
    m = _model(r=2)
    text = torch.tensor([[5, 6, 7, 8, 9, 3], [9, 8, 3, 0, 0, 0]])
    lens = torch.tensor([6, 3])
    a = m.generate(text, lens, max_steps=15, stop_threshold=2.0, use_cache=True)  # never stops: 15 full steps
    b = m.generate(text, lens, max_steps=15, stop_threshold=2.0, use_cache=False)
    assert a["mel"].shape == (2, 30, 8) and a["lengths"].tolist() == [30, 30] and not a["stopped"].any()
    assert torch.allclose(a["mel"], b["mel"], atol=1e-5) and torch.allclose(a["alignment"], b["alignment"], atol=1e-5)
    single = m.generate(text[1:, :3], lens[1:], max_steps=15, stop_threshold=2.0)
    assert torch.allclose(single["mel"][0], a["mel"][1], atol=1e-5)  # text padding is invisible
    # with a reachable threshold each utterance stops on its own; frames after its end are zero
    with torch.no_grad():
        m.stop_out.bias.fill_(-0.2)
    s1, s2 = (m.generate(text, lens, 15, stop_threshold=0.45, use_cache=c) for c in (True, False))
    assert torch.equal(s1["lengths"], s2["lengths"]) and torch.allclose(s1["mel"], s2["mel"], atol=1e-5)
    for i, n in enumerate(s1["lengths"].tolist()):
        assert n % 2 == 0 and s1["mel"][i, n:].abs().max() == 0 if n < s1["mel"].size(1) else True


# -- audio ------------------------------------------------------------------------------------------
def test_griffin_lim_resynthesis_and_dtw():
    utt = tts_corpus(1, seed=3, kind="phrases")[0]
    fe = mel_frontend(16000, 80, 50.0, 12.5)
    mel = fe.log_mel(torch.from_numpy(utt.wave), MEL_FLOOR)  # (T, 80)
    wave = GriffinLimVocoder(fe, n_iter=32)(mel)
    assert wave.dtype == np.float32 and abs(len(wave) - len(utt.wave)) < fe.hop
    again = fe.log_mel(torch.from_numpy(wave), MEL_FLOOR)
    assert again.shape == mel.shape  # time-aligned: the same frames again
    noise = fe.log_mel(torch.randn(len(wave)) * 0.1, MEL_FLOOR)
    speech = mel.max(1).values > -6  # frames with sound
    err = (again - mel).abs()[speech].mean()
    assert err < 0.4 * (noise - mel).abs()[speech].mean() and err < 2.0, float(err)
    assert dtw_l1(mel, mel) == 0.0 and dtw_l1(again, mel) <= float((again - mel).abs().mean()) + 1e-6
    stretched = mel.repeat_interleave(2, dim=0)  # same content, twice as slow: DTW aligns it exactly
    assert dtw_l1(stretched, mel) == pytest.approx(0.0, abs=1e-6)


# -- learning ---------------------------------------------------------------------------------------
def test_short_training_run_beats_its_starting_loss():
    task = _task(builtin_size=24, d_model=48, n_heads=2, n_layers=1, decoder_layers=1, d_ff=96, encoder_convs=1,
                 prenet_dim=32, postnet_channels=32, reduction=3, dropout=0.0)
    task.load_data()
    task.fit_assets()
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.collate(task.train_dataset().items[:8])
    model.eval()
    with torch.no_grad():
        start, _ = task.loss(model, batch)
    start_eval = task.evaluate(model, "valid")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    data = task.train_dataset().items
    for step in range(60):
        loss, parts = task.loss(model, task.collate(data[(step * 8) % len(data):][:8] or data[:8]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        end, parts = task.loss(model, batch)
    end_eval = task.evaluate(model, "valid")
    assert float(end) < 0.5 * float(start), (float(start), float(end))
    assert end_eval["mel_l1"] < 0.75 * start_eval["mel_l1"] and end_eval["loss"] < start_eval["loss"]
    assert {"mel_l1", "mel_l1_free", "stop_rate", "length_ratio", "loss"} <= set(end_eval)


# -- CLI: custom data, predict, evaluate with a judge, bad input ----------------------------------------
def _audiofolder(folder: Path, n: int = 30) -> Path:
    folder.mkdir()
    rows = ["file_name,transcription"]
    for i, u in enumerate(tts_corpus(n, seed=1, kind="phrases")):
        sf.write(folder / f"{i}.wav", u.wave, 16000)
        rows.append(f"{i}.wav,{u.text.capitalize()}.")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_cli_train_predict_evaluate_on_an_audiofolder(tmp_path, cli):
    data = _audiofolder(tmp_path / "clips")
    run, judge = tmp_path / "run", tmp_path / "judge"
    code, _, err = cli("train", "tts", "--quick", "--data", data, "--out", run, "--max-steps", "12",
                       "--eval-every", "12", "--progress", "false", "--eval-free-max", "2", "--samples", "1")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"mel_l1", "loss", "mel_l1_free"} <= set(metrics) and "cer" not in metrics  # no judge: no CER
    assert sorted(p.suffix for p in (run / "samples_test").iterdir()) == [".png", ".wav"]
    code, out, err = cli("predict", "tts", "--run", run, "turn on the light!", "Open the box", "--out-dir",
                         tmp_path / "pred")
    assert code == 0, err
    preds = [json.loads(line) for line in out.strip().splitlines()]
    assert [p["text"] for p in preds] == ["turn on the light", "open the box"]
    for p in preds:
        wave, sr = sf.read(p["wav"])
        assert sr == 16000 and wave.ndim == 1 and len(wave) > 0 and np.isfinite(wave).all()
        from PIL import Image

        with Image.open(p["png"]) as im:
            assert im.format == "PNG" and im.size[0] > 100
    # a (barely trained) speech run as the judge: CER of the synthesis and of the real audio
    assert cli("train", "speech", "--quick", "--builtin-size", "30", "--max-steps", "2", "--out", judge,
               "--progress", "false")[0] == 0
    code, out, err = cli("evaluate", "tts", "--run", run, "--judge", judge, "--eval-free-max", "3")
    assert code == 0, err
    m = json.loads(out)
    assert m["cer"] >= 0 and m["cer_real"] >= 0 and "wer" in m


def test_bad_input_gives_one_line_exit_2_and_no_run_dir(tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("train", "tts", "--quick", "--data", empty, "--out", tmp_path / "r1")
    assert code == 2 and err.count("\n") == 1 and "empty folder" in err and "metadata.csv" in err
    assert not (tmp_path / "r1").exists()
    (empty / "a.wav").write_bytes(b"")
    code, _, err = cli("train", "tts", "--quick", "--data", empty, "--out", tmp_path / "r1")
    assert code == 2 and err.count("\n") == 1 and "no metadata.csv" in err and not (tmp_path / "r1").exists()
    task = _task(builtin_size=12)
    task.load_data()
    task.fit_assets()
    with pytest.raises(DataError, match=r"input 2: .*characters '17' that the TTS vocabulary lacks"):
        task.predict(_model(task.tokenizer.vocab_size, 80), ["the lamp", "call 71"])
    with pytest.raises(DataError, match="input 1: empty text"):
        task.predict(_model(task.tokenizer.vocab_size, 80), ["?!"])
