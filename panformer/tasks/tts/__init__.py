"""Text-to-speech on the core encoder-decoder (Transformer-TTS): characters → log-mel with a decoder pre-net,
mel + post-net, stop-token prediction and a guided attention loss; Griffin-Lim vocoder, wav output.

Metrics: teacher-forced ``mel_l1`` / ``loss``, free-running ``mel_l1_free`` (DTW-aligned) and, with
``--judge RUN`` (a speech run), the judge's ``cer`` / ``wer`` on the synthesised audio. See ``docs/tasks/tts.md``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import TransformerConfig
from panformer.core.checkpoint import atomic_write_json
from panformer.core.data import bucket_batches, seeded_split
from panformer.core.errors import DataError
from panformer.core.masks import lengths_to_padding_mask
from panformer.core.tokenizer import SPECIAL_TOKENS, TextTokenizer, train_tokenizer

from .. import register
from ..base import ListDataset, Task, split_flag
from .arguments import MODEL_FIELDS, TTSArguments
from .audio import MEL_FLOOR, GriffinLimVocoder, dtw_l1, mel_frontend, plot_mel_alignment, write_wav
from .data import check_vocabulary, normalize_text, read_source, tts_corpus
from .model import TransformerTTS, guided_attention_loss

__all__ = ["TTSTask", "TTSArguments", "TransformerTTS"]

Example = tuple[list[int], Tensor]  # (character ids + EOS, log-mel (T, n_mels) float32, not normalised)


@register
class TTSTask(Task):
    name = "tts"
    summary = "text-to-speech (Transformer-TTS): core encoder-decoder → log-mel, stop token, Griffin-Lim; mel L1, CER"
    Arguments = TTSArguments
    main_metric = "mel_l1"
    report_metrics = ("mel_l1", "cer", "cer_real")  # cer_real: the judge on the real audio, for scale
    model_fields = MODEL_FIELDS
    defaults = dict(epochs=200, batch_size=32, lr=1e-3, schedule="cosine", warmup_steps=200, weight_decay=0.01,
                    metric_for_best="mel_l1", greater_is_better=False, adam_beta2=0.98, grad_clip=1.0,
                    eval_every=250)
    quick = dict(max_time_minutes=0.5, schedule_clock="time", max_steps=100_000, builtin_size=120, builtin_kind="digits", d_model=64, n_heads=2,
                 n_layers=1, decoder_layers=1, d_ff=256, encoder_convs=1, prenet_dim=64, postnet_channels=64,
                 batch_size=16, lr=2e-3, warmup_steps=20, eval_every=75, log_every=25, eval_free_max=8,
                 griffin_lim_iters=16, dropout=0.0, threads=1)
    judged_by = "speech"  # compare passes its run as --judge
    predict_help = "TEXT... sentences to speak (wav + png files go to --out-dir, default RUN/predictions)"

    # -- data -------------------------------------------------------------------------------------
    def _frontend(self):
        a = self.args
        if not hasattr(self, "_fe"):
            self._fe = mel_frontend(a.sample_rate, a.n_mels, a.win_ms, a.hop_ms)
        return self._fe

    def load_data(self) -> None:
        a = self.args
        fracs = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        if a.data is None:
            utts = tts_corpus(a.builtin_size, a.builtin_seed, a.builtin_kind, a.sample_rate, a.builtin_voice,
                              a.builtin_rate)
            self.data_name = f"built-in espeak-ng {a.builtin_kind} ({a.builtin_voice}, {a.builtin_size} utterances)"
        else:
            utts = read_source(a.data, "--data", a.audio_column, a.text_column)
            self.data_name = Path(a.data).name
        parts = {name: [utts[i] for i in ids]
                 for name, ids in zip(("train", "valid", "test"), seeded_split(len(utts), fracs, a.seed))}
        for name, src in (("valid", a.valid_data), ("test", a.test_data)):
            if src:
                parts[name] = self.read_split(src, name)
        if a.max_examples:
            parts["train"] = parts["train"][: a.max_examples]
        if not parts.get("valid"):
            raise DataError("empty validation split; raise --valid-fraction or pass --valid-data")
        self.splits = {k: v for k, v in parts.items() if v}
        self.finish_splits()

    def read_split(self, source: str | None, split: str) -> list | None:
        a = self.args
        return read_source(source, split_flag(split), a.audio_column, a.text_column) if source else None

    def finish_splits(self) -> None:
        """Normalised texts and log-mel targets of every split."""
        self.texts = {k: [self._normalize(u.text, u.source) for u in v] for k, v in self.splits.items()}
        self.mels = {k: [self._featurize(u) for u in v] for k, v in self.splits.items()}

    def _normalize(self, text: str, source: str) -> str:
        out = normalize_text(text, self.args.lowercase, self.args.strip_punctuation)
        if not out:
            raise DataError(f"{source}: empty text after normalisation ({text!r})")
        return out

    def wave_of(self, u) -> np.ndarray:
        """An utterance's audio at ``--sample-rate``, float32 (N,)."""
        from panformer.tasks.speech.frontend import resample

        wave, sr = u.audio()
        return resample(wave, sr, self.args.sample_rate).numpy()

    def _featurize(self, u) -> Tensor:
        fe, a = self._frontend(), self.args
        wave = self.wave_of(u)
        seconds = len(wave) / a.sample_rate
        if seconds > a.max_seconds:
            raise DataError(f"{u.source}: {seconds:.1f} s of audio is longer than --max-seconds {a.max_seconds}")
        if len(wave) < fe.n_fft + 2 * fe.hop:
            raise DataError(f"{u.source}: {seconds * 1000:.0f} ms of audio is too short for a log-mel target")
        return fe.log_mel(torch.from_numpy(wave), MEL_FLOOR)  # (T, n_mels)

    def fit_assets(self) -> None:
        chars = sorted({c for t in self.texts["train"] for c in t})
        self.tokenizer = train_tokenizer(["".join(chars)], "char")
        frames = torch.cat(self.mels["train"])  # (sum T, n_mels)
        self.mel_mean, self.mel_std = frames.mean(0), frames.std(0).clamp(min=1e-3)
        self._check()

    def check_assets(self, splits: Sequence[str] | None = None) -> None:
        self._check(splits)  # a reloaded run's vocabulary must cover the new texts

    def vocabulary(self) -> set[str]:
        return set(self.tokenizer.tok.get_vocab()) - set(SPECIAL_TOKENS)

    def _check(self, splits: Sequence[str] | None = None) -> None:
        vocab = self.vocabulary()
        for split, texts in self.texts.items():
            if splits is None or split in splits:
                check_vocabulary(((u.source, t) for u, t in zip(self.splits[split], texts)), vocab)
        if splits is None:
            self._checked = True

    def save_assets(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        atomic_write_json(run_dir / "mel_stats.json", {"mean": self.mel_mean.tolist(), "std": self.mel_std.tolist()})

    def load_assets(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).parent
        self.tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
        stats = json.loads((run_dir / "mel_stats.json").read_text())
        self.mel_mean, self.mel_std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])

    def _examples(self, split: str) -> list[Example]:
        if split not in self.texts:
            raise DataError(f"no {split} split in this data")
        if not getattr(self, "_checked", False):
            self._check()  # evaluate on new data: the run's vocabulary must cover it
        ids = self.tokenizer.encode_batch(self.texts[split], add_eos=True)
        return list(zip(ids, self.mels[split]))

    def train_dataset(self) -> ListDataset:
        return ListDataset(self._examples("train"))

    def batch_sampler_fn(self):
        lengths = [m.size(0) for m in self.mels["train"]]
        bs = self.args.batch_size
        return lambda epoch, seed: bucket_batches(lengths, bs, seed, epoch)

    def collate(self, examples: list[Example]) -> dict[str, Tensor]:
        """→ text (B, S) ids + EOS padded with 0, text_lens (B,), mel (B, N*r, F) normalised log-mel (zero-padded
        to a multiple of r), mel_lens (B,) frames."""
        r, B = self.args.reduction, len(examples)
        S = max(len(y) for y, _ in examples)
        T = max(m.size(0) for _, m in examples)
        T = (T + r - 1) // r * r
        text = torch.zeros(B, S, dtype=torch.long)
        mel = torch.zeros(B, T, examples[0][1].size(1))
        for i, (y, m) in enumerate(examples):
            text[i, : len(y)] = torch.tensor(y)
            mel[i, : m.size(0)] = (m - self.mel_mean) / self.mel_std
        return {"text": text, "text_lens": torch.tensor([len(y) for y, _ in examples]), "mel": mel,
                "mel_lens": torch.tensor([m.size(0) for _, m in examples])}

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        a = self.args
        cfg = TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff,
                                n_decoder_layers=a.decoder_layers, dropout=a.dropout, activation="relu",
                                norm_first=True, positional="none", max_len=4096)
        return TransformerTTS(cfg, self.tokenizer.vocab_size, a.n_mels, a.reduction, a.encoder_convs, a.prenet_dim,
                              a.prenet_dropout, a.postnet_channels)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """L1(mel before post-net) + L1(after) + stop BCE (pos_weight on the last step) + guided attention."""
        return self._loss(model(batch["text"], batch["text_lens"], batch["mel"], batch["mel_lens"]), batch)

    def _loss(self, out: dict[str, Any], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        a, mel = self.args, batch["mel"]
        valid = (~lengths_to_padding_mask(batch["mel_lens"], mel.size(1)))[..., None].float()  # (B, T, 1)
        denom = valid.sum() * mel.size(2)
        l1 = sum(((out[k].float() - mel).abs() * valid).sum() for k in ("mel_before", "mel_after")) / denom
        steps = (batch["mel_lens"] + a.reduction - 1) // a.reduction
        step_valid = ~out["step_mask"]
        target = F.one_hot(steps - 1, out["stop_logits"].size(1)).float()  # (B, N): 1 at the last step
        stop = F.binary_cross_entropy_with_logits(out["stop_logits"].float(), target, reduction="none",
                                                  pos_weight=torch.tensor(a.stop_pos_weight, device=mel.device))
        stop = (stop * step_valid).sum() / step_valid.sum()
        total = l1 + a.stop_weight * stop
        parts = {"l1": l1.detach(), "stop": stop.detach()}
        if a.guided_attention_weight > 0:
            ga = guided_attention_loss(out["cross"], out["step_mask"], out["text_mask"], a.guided_attention_sigma)
            total = total + a.guided_attention_weight * ga
            parts["guided_attention"] = ga.detach()
        return total, parts

    # -- synthesis --------------------------------------------------------------------------------
    def max_steps(self, text_len: int) -> int:
        """Cap of free-running decoder steps: 12 frames per character + 40, at most --max-decoder-seconds."""
        a = self.args
        frames = min(12 * text_len + 40, int(a.max_decoder_seconds * 1000 / a.hop_ms))
        return max(1, frames // a.reduction)

    @torch.no_grad()
    def synthesize_ids(self, model: nn.Module, ids: list[list[int]], batch_size: int = 16) -> list[dict[str, Any]]:
        """Free-running synthesis of id sequences → per input ``{"mel" (T, F) log-mel (nat-log units),
        "alignment" (steps, S), "stopped" bool}``; batches of similar length, deterministic."""
        model.eval()
        device = next(model.parameters()).device
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[dict[str, Any]] = [{} for _ in ids]
        mean, std = self.mel_mean.to(device), self.mel_std.to(device)
        for s in range(0, len(order), batch_size):
            chunk = order[s: s + batch_size]
            lens = torch.tensor([len(ids[i]) for i in chunk], device=device)
            text = torch.zeros(len(chunk), int(lens.max()), dtype=torch.long, device=device)
            for j, i in enumerate(chunk):
                text[j, : len(ids[i])] = torch.tensor(ids[i])
            res = model.generate(text, lens, self.max_steps(int(lens.max())), self.args.stop_threshold)
            for j, i in enumerate(chunk):
                n = int(res["lengths"][j])
                out[i] = {"mel": (res["mel"][j, :n] * std + mean).cpu(), "stopped": bool(res["stopped"][j]),
                          "alignment": res["alignment"][j, : n // self.args.reduction, : len(ids[i])].cpu()}
        return out

    def vocoder(self) -> GriffinLimVocoder:
        if not hasattr(self, "_vocoder"):
            self._vocoder = GriffinLimVocoder(self._frontend(), self.args.griffin_lim_iters, self.args.griffin_lim_power)
        return self._vocoder

    def judge(self):
        if not self.args.judge:
            return None
        if getattr(self, "_judge", None) is None or self._judge.run_dir != Path(self.args.judge):
            from .judge import SpeechJudge

            self._judge = SpeechJudge(self.args.judge)
        return self._judge

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """``loss``, ``mel_l1`` (teacher-forced, post-net, nat-log mel units) on the whole split; on the first
        ``--eval-free-max`` utterances free-running ``mel_l1_free`` (DTW), ``stop_rate``, ``length_ratio`` and,
        with ``--judge``, the judge's ``cer`` / ``wer`` on the vocoded audio and ``cer_real`` on the real audio."""
        examples = self._examples(split)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        std = self.mel_std.to(device)
        loss_sum, l1_sum, n_frames = 0.0, 0.0, 0
        for s in range(0, len(examples), 32):
            batch = {k: v.to(device) for k, v in self.collate(examples[s: s + 32]).items()}
            out = model(batch["text"], batch["text_lens"], batch["mel"], batch["mel_lens"])
            loss, _ = self._loss(out, batch)
            valid = (~lengths_to_padding_mask(batch["mel_lens"], batch["mel"].size(1)))[..., None].float()
            l1_sum += float((((out["mel_after"].float() - batch["mel"]).abs() * std) * valid).sum())
            n_frames += int(valid.sum())
            loss_sum += float(loss) * len(batch["text"])
        metrics = {"loss": loss_sum / len(examples), "mel_l1": l1_sum / (n_frames * self.args.n_mels)}
        k = min(len(examples), self.args.eval_free_max)
        if k:
            synth = self.synthesize_ids(model, [y for y, _ in examples[:k]])
            metrics["mel_l1_free"] = float(np.mean([dtw_l1(o["mel"], m) for o, (_, m) in zip(synth, examples)]))
            metrics["stop_rate"] = float(np.mean([o["stopped"] for o in synth]))
            metrics["length_ratio"] = float(np.mean([o["mel"].size(0) / m.size(0) for o, (_, m) in zip(synth, examples)]))
            need_audio = self.judge() is not None or out_dir is not None
            waves = [self.vocoder()(o["mel"]) for o in synth] if need_audio else []
            if self.judge() is not None:
                texts = self.texts[split][:k]
                scores, hyps = self.judge().score(waves, self.args.sample_rate, texts)
                metrics.update(scores)
                real = [self.wave_of(u) for u in self.splits[split][:k]]
                metrics["cer_real"] = self.judge().score(real, self.args.sample_rate, texts)[0]["cer"]
            if out_dir is not None:
                self._write_samples(Path(out_dir) / f"samples_{split}", split, synth, waves, examples)
        model.train(was_training)
        return metrics

    def _write_samples(self, folder: Path, split: str, synth, waves, examples) -> None:
        for i in range(min(self.args.samples, len(synth))):
            stem = folder / f"{i:03d}_{_slug(self.texts[split][i])}"
            write_wav(stem.with_suffix(".wav"), waves[i], self.args.sample_rate)
            plot_mel_alignment(stem.with_suffix(".png"), synth[i]["mel"], synth[i]["alignment"],
                               self.texts[split][i], reference=examples[i][1])

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Speak each text: writes ``NNN_text.wav`` and ``NNN_text.png`` (mel + alignment) to ``--out-dir``
        (default RUN/predictions); returns ``{"text", "wav", "png", "seconds", "stopped"}`` per input."""
        texts = [self._normalize(t, f"input {i + 1}") for i, t in enumerate(inputs)]
        check_vocabulary(((f"input {i + 1}", t) for i, t in enumerate(texts)), self.vocabulary())
        folder = Path(self.args.out_dir) if self.args.out_dir else getattr(self, "run_dir", Path(".")) / "predictions"
        synth = self.synthesize_ids(model, self.tokenizer.encode_batch(texts, add_eos=True))
        results = []
        for i, (t, o) in enumerate(zip(texts, synth)):
            stem = folder / f"{i:03d}_{_slug(t)}"
            wave = self.vocoder()(o["mel"])
            write_wav(stem.with_suffix(".wav"), wave, self.args.sample_rate)
            plot_mel_alignment(stem.with_suffix(".png"), o["mel"], o["alignment"], t)
            results.append({"text": t, "wav": str(stem.with_suffix(".wav")), "png": str(stem.with_suffix(".png")),
                            "seconds": round(len(wave) / self.args.sample_rate, 3), "stopped": o["stopped"]})
        return results

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        return f"tts on {self.data_name}: {sizes}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower())[:40].strip("_") or "utt"
