"""Speech-to-text on the core encoder: log-mel front end, 4x conv subsampling, CTC over characters or
BPE units (greedy / prefix beam search), optionally a jointly trained attention decoder; WER / CER / exact match.

Data: built-in espeak-ng speech, FSDD folders (connected digits or single digits), Hugging Face
``audiofolder`` folders, CSV/TSV/JSONL manifests and Hugging Face datasets; see ``docs/tasks/speech.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import RNNConfig, RNNEncoder, TransformerConfig
from panformer.core.data import bucket_batches, seeded_split
from panformer.core.errors import ConfigError, DataError
from panformer.core.tokenizer import SPECIAL_TOKENS, TextTokenizer, train_tokenizer

from .. import register
from ..base import ListDataset, Task, split_flag
from .arguments import MODEL_FIELDS, SpeechArguments, normalize_transcript
from .data import Utterance, connect_digits, espeak_corpus, is_fsdd_folder, load_source, read_fsdd
from .ctc import Lexicon
from .decode import decode_batch, speech_metrics, write_predictions
from .frontend import LogMelFrontend, MelWarp, read_audio, resample, speed_perturb, subsampled_lengths
from .model import SpeechRecognizer

__all__ = ["SpeechTask", "SpeechArguments", "SpeechRecognizer"]

Example = tuple[Tensor, list[int]]  # (features (T, n_mels) float16, label ids)
LEXICON_FILE = "lexicon.txt"  # the training transcripts' words, one per line (for --lexicon train)


def _words(texts: list[str]) -> list[str]:
    """The distinct words of normalised transcripts, sorted."""
    return sorted({w for t in texts for w in t.split()})


@register
class SpeechTask(Task):
    name = "speech"
    summary = "speech recognition: log-mel + conv subsampling + core Encoder, CTC (+ attention); WER / CER"
    Arguments = SpeechArguments
    main_metric = "cer"
    report_metrics = ("wer", "cer")  # shown by `panformer compare`
    eval_splits = ("train", "valid", "test", "test_seen")
    model_fields = MODEL_FIELDS
    defaults = dict(epochs=40, batch_size=32, lr=1.5e-3, schedule="cosine", warmup_steps=300, weight_decay=0.01,
                    metric_for_best="cer", adam_beta2=0.98, grad_clip=5.0)
    # --quick: tiny model, no SpecAugment / dropout, one intra-op thread (a d_model-96 model's matmuls
    # are too small to split across threads; on a busy CPU spinning OpenMP workers cost 10x)
    # 1,000 espeak utterances (5 s to synthesise): 800 steps reach WER 0.34 (400 utterances: 0.44)
    quick = dict(max_time_minutes=0.7, schedule_clock="time", max_steps=100_000, builtin_size=1000, builtin_kind="digits",
                 d_model=96, n_heads=4, n_layers=2, d_ff=384, n_mels=40, conv_channels=32, batch_size=16, lr=3e-3,
                 warmup_steps=20, eval_every=400,
                 log_every=25, spec_freq_masks=0, spec_time_masks=0, dropout=0.0, threads=1)
    predict_help = "AUDIO... wav / flac files to transcribe"
    baselines = {"lstm": {"arch": "lstm"}}  # a bidirectional LSTM encoder before the same CTC head

    # -- data -------------------------------------------------------------------------------------
    def _frontend(self) -> LogMelFrontend:
        a = self.args
        if not hasattr(self, "_fe"):
            self._fe = LogMelFrontend(a.sample_rate, a.n_mels, a.win_ms, a.hop_ms)
        return self._fe

    def _speakers(self) -> set[str]:
        return {s.strip() for s in (self.args.test_speakers or "").split(",") if s.strip()}

    def _read(self, source: str, what: str, role: str) -> list[Utterance]:
        """All utterances of ``source`` for one split (``role`` train or eval)."""
        a = self.args
        if Path(source).is_dir() and is_fsdd_folder(Path(source)):
            return self._fsdd(read_fsdd(source, what), role, what)
        return load_source(source, what, a.audio_column, a.text_column, a.speaker_column)

    def _fsdd(self, recs: list, role: str, what: str, salt: int = 0) -> list[Utterance]:
        a = self.args
        if a.fsdd_mode == "single":
            return connect_digits(recs, 0, 1, 1, what=what)
        if a.fsdd_mode != "connected":
            raise DataError(f"--fsdd-mode must be connected or single, got {a.fsdd_mode!r}")
        repeats = a.connected_repeats if role == "train" else 1
        return connect_digits(recs, a.builtin_seed * 7 + salt, repeats, a.connected_max_digits, what=what)

    def load_data(self) -> None:
        a = self.args
        if getattr(a, "threads", 0):
            torch.set_num_threads(a.threads)
        held = self._speakers()
        fracs = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        parts: dict[str, list[Utterance]] = {}
        if a.data is not None and Path(a.data).is_dir() and is_fsdd_folder(Path(a.data)):
            # split recordings first, so no recording is heard in two splits, then compose utterances
            recs = read_fsdd(a.data)
            self.data_name = f"FSDD {a.fsdd_mode} digits ({Path(a.data).name})"
            self._check_speakers(held, {r.speaker for r in recs})
            seen = [r for r in recs if r.speaker not in held]
            idx = seeded_split(len(seen), fracs, a.seed)
            names = ("train", "valid", "test_seen" if held else "test")
            for k, (name, ids) in enumerate(zip(names, idx)):
                parts[name] = self._fsdd([seen[i] for i in ids], "train" if name == "train" else "eval", "--data", k)
            if held:
                parts["test"] = self._fsdd([r for r in recs if r.speaker in held], "eval", "--data", 3)
        else:
            if a.data is None:
                utts = espeak_corpus(a.builtin_size, a.builtin_seed, a.builtin_kind, a.sample_rate)
                self.data_name = f"built-in espeak-ng {a.builtin_kind} ({a.builtin_size} utterances)"
            else:
                utts = self._read(a.data, "--data", "train")
                self.data_name = Path(a.data).name
            if held:
                self._check_speakers(held, {u.speaker for u in utts if u.speaker is not None})
                parts["test"] = [u for u in utts if u.speaker in held]
                utts = [u for u in utts if u.speaker not in held]
            idx = seeded_split(len(utts), fracs, a.seed)
            for name, ids in zip(("train", "valid", "test_seen" if held else "test"), idx):
                parts[name] = [utts[i] for i in ids]
        for name, src in (("valid", a.valid_data), ("test", a.test_data)):
            if src:
                parts[name] = self.read_split(src, name)
        if a.max_examples:
            parts["train"] = parts["train"][: a.max_examples]
        if not parts.get("train"):
            raise DataError("no training utterances left after splitting; pass more --data")
        if not parts.get("valid"):
            raise DataError("empty validation split; raise --valid-fraction or pass --valid-data")
        self.splits = {k: v for k, v in parts.items() if v}
        self.finish_splits()

    def read_split(self, source: str | None, split: str) -> list[Utterance] | None:
        return self._read(source, split_flag(split), "eval") if source else None

    def finish_splits(self) -> None:
        """Normalised transcripts and log-mel features of every split."""
        a = self.args
        if a.speed_copies < 1:
            raise ConfigError(f"--speed-copies must be >= 1, got {a.speed_copies}")
        if a.speed_copies > 1 and a.speed_perturb <= 0:
            raise ConfigError("--speed-copies makes copies at new speeds: it needs --speed-perturb above 0")
        if not 0.0 <= a.speed_perturb < 0.5:
            raise ConfigError(f"--speed-perturb must be in [0, 0.5), got {a.speed_perturb}")
        if not 0.0 <= a.vtlp < 0.5:
            raise ConfigError(f"--vtlp must be in [0, 0.5), got {a.vtlp}")
        if a.speed_perturb > 0 and a.speed_copies > 1:
            self.splits["train"] = self.splits["train"] * a.speed_copies
        self.texts = {k: [self._normalize(u) for u in v] for k, v in self.splits.items()}
        n_train = len(self.splits.get("train", []))
        rng = np.random.default_rng([a.seed, 0x5EED])  # one speed per training utterance (and copy)
        speeds = 1.0 + rng.uniform(-a.speed_perturb, a.speed_perturb, n_train) if a.speed_perturb > 0 else None
        self.features = {k: [self._featurize(u, float(speeds[i]) if k == "train" and speeds is not None else 1.0)
                             for i, u in enumerate(v)] for k, v in self.splits.items()}

    def _check_speakers(self, held: set[str], known: set[str]) -> None:
        missing = held - known
        if missing:
            raise DataError(f"--test-speakers: unknown speaker(s) {', '.join(sorted(missing))}; the data has "
                            f"{', '.join(sorted(known)[:20]) or 'no speaker information'}")

    def _normalize(self, u: Utterance) -> str:
        text = normalize_transcript(u.text, self.args.lowercase, self.args.strip_punctuation)
        if not text:
            raise DataError(f"{u.source}: empty transcript after normalisation ({u.text!r})")
        return text

    def _featurize(self, u: Utterance, speed: float = 1.0) -> Tensor:
        """Read, resample and featurise one utterance (played ``speed`` times faster) → (T, n_mels) float16;
        errors name its source."""
        wave, sr = u.audio()
        return self.features_from_wave(wave, sr, u.source, speed)

    def features_from_wave(self, wave: Any, sr: int, source: str, speed: float = 1.0) -> Tensor:
        fe, a = self._frontend(), self.args
        seconds = len(wave) / sr
        if seconds > a.max_seconds:
            raise DataError(f"{source}: {seconds:.1f} s of audio is longer than --max-seconds {a.max_seconds}")
        x = speed_perturb(resample(wave, sr, a.sample_rate), speed)
        if x.numel() < fe.min_samples:
            raise DataError(f"{source}: {seconds * 1000:.0f} ms of audio is shorter than the "
                            f"{fe.min_samples / a.sample_rate * 1000:.0f} ms that one output frame of the 4x "
                            f"subsampling needs")
        return fe(x).half()

    def fit_assets(self) -> None:
        a = self.args
        if a.alphabet == "auto":
            chars = sorted({c for t in self.texts["train"] for c in t})
        else:
            chars = sorted(set(a.alphabet))
        units = getattr(a, "units", "char")
        if units == "char":
            self.tokenizer = train_tokenizer(["".join(chars)], "char")
        elif units == "bpe":
            if a.vocab_size < len(SPECIAL_TOKENS) + len(chars):
                raise ConfigError(f"--vocab-size {a.vocab_size} is below the {len(SPECIAL_TOKENS)} special tokens "
                                  f"and {len(chars)} characters that --units bpe keeps; raise it")
            self._check_alphabet(["train"], set(chars))  # before BPE learns units from characters outside it
            self.tokenizer = train_tokenizer(self.texts["train"], "bpe", a.vocab_size, initial_alphabet=chars)
        else:
            raise ConfigError(f"--units must be char or bpe, got {units!r}")
        self.train_words = _words(self.texts["train"])
        self._check_alphabet()
        self._checked = True
        self._train = self._trainable()

    def check_assets(self, splits: Sequence[str] | None = None) -> None:
        self._check_alphabet(splits)  # a reloaded run's alphabet must cover the new transcripts
        if splits is None:
            self._checked = True

    def _model_alphabet(self) -> set[str]:
        """The characters the model can write: its one-character units (BPE's word mark "▁" is the space)."""
        vocab = set(self.tokenizer.tok.get_vocab()) - set(SPECIAL_TOKENS)
        return {" " if t == "\u2581" else t for t in vocab if len(t) == 1}

    def _check_alphabet(self, splits: Sequence[str] | None = None, vocab: set[str] | None = None) -> None:
        vocab = self._model_alphabet() if vocab is None else vocab
        for split, texts in self.texts.items():
            if splits is not None and split not in splits:
                continue
            for u, t in zip(self.splits[split], texts):
                bad = sorted({c for c in t if c not in vocab})
                if bad:
                    raise DataError(f"{u.source}: transcript {t!r} has characters {''.join(bad)!r} outside the "
                                    f"alphabet {''.join(sorted(vocab))!r}; spell them out or pass --alphabet")

    def save_assets(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        (run_dir / LEXICON_FILE).write_text("".join(w + "\n" for w in self.train_words), encoding="utf-8")

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
        path = run_dir / LEXICON_FILE
        self.train_words = path.read_text(encoding="utf-8").split() if path.is_file() else []

    def lexicon(self) -> Lexicon | None:
        """The word list of ``--lexicon`` as label ids, or None (``--lexicon none``)."""
        choice = self.args.lexicon
        if choice == "none":
            return None
        units = getattr(self.args, "units", "char")
        if units != "char":
            raise ConfigError(f"--lexicon spells words character by character: it needs a model trained with "
                              f"--units char, and this one writes {units} units")
        if choice == "train":
            words, what = getattr(self, "train_words", []), f"the run's {LEXICON_FILE}"
            if not words and "train" in getattr(self, "texts", {}):  # a run saved before lexicon.txt existed
                words = _words(self.texts["train"])
        else:
            path = Path(choice)
            if not path.is_file():
                raise ConfigError(f"--lexicon: no such file {choice!r} (or use none / train)")
            words = normalize_transcript(path.read_text(encoding="utf-8"), self.args.lowercase,
                                         self.args.strip_punctuation).split()
            what = str(path)
        if not words:
            raise ConfigError(f"--lexicon {choice}: {what} has no words")
        vocab = set(self.tokenizer.tok.get_vocab())
        bad = sorted({w for w in words if any(c not in vocab for c in w)})
        if bad:
            raise ConfigError(f"--lexicon {choice}: words outside the model's alphabet: {', '.join(bad[:5])}")
        if " " not in vocab:
            raise ConfigError("--lexicon needs a model whose alphabet has the space character")
        space = self.tokenizer.tok.token_to_id(" ")
        return Lexicon([[self.tokenizer.tok.token_to_id(c) for c in w] for w in words], space)

    def _encode(self, split: str) -> list[Example]:
        if split not in self.texts:
            raise DataError(f"no {split} split in this data")
        if not hasattr(self, "_checked"):
            self._check_alphabet()  # evaluate on new data: the run's alphabet must cover it
            self._checked = True
        ids = self.tokenizer.encode_batch(self.texts[split])
        return list(zip(self.features[split], ids))

    def _trainable(self) -> list[Example]:
        """Training examples whose transcript fits the CTC lattice; a few that do not are dropped (as ESPnet
        does), many mean the front end or data is wrong → DataError."""
        kept, dropped = [], []
        for u, (f, y) in zip(self.splits["train"], self._encode("train")):
            T = int(subsampled_lengths(torch.tensor(f.size(0))))
            need = len(y) + sum(1 for p, q in zip(y, y[1:]) if p == q)  # CTC needs blanks between repeats
            (kept if T >= need else dropped).append((f, y) if T >= need else (u, T, need))
        if len(dropped) > 0.1 * len(self.splits["train"]):
            u, T, need = dropped[0]
            raise DataError(f"{len(dropped)} of {len(self.splits['train'])} training transcripts are too long for "
                            f"their audio, e.g. {u.source}: {need} units/blanks but {T} encoder frames "
                            f"(one per {4 * self.args.hop_ms:.0f} ms); lower --hop-ms or check the transcripts")
        if dropped:
            import sys

            print(f"[speech] dropped {len(dropped)} training utterance(s) too short for their transcript, "
                  f"e.g. {dropped[0][0].source}", file=sys.stderr)
        return kept

    def train_dataset(self) -> ListDataset:
        if not hasattr(self, "_train"):  # assets from --init-from instead of fit_assets
            self._train = self._trainable()
        return ListDataset(self._train)

    def batch_sampler_fn(self):
        lengths = [f.size(0) for f, _ in self._train]
        bs = self.args.batch_size
        return lambda epoch, seed: bucket_batches(lengths, bs, seed, epoch)

    def collate(self, examples: list[Example]) -> dict[str, Tensor]:
        """→ feats (B, T, F) float32, feat_lens (B,), labels (B, L) padded with 0, label_lens (B,), and for
        the attention decoder tgt_in (B, L+1) = BOS + labels and tgt_out (B, L+1) = labels + EOS (-100 pad)."""
        B, T = len(examples), max(f.size(0) for f, _ in examples)
        L = max(1, max(len(y) for _, y in examples))
        feats = torch.zeros(B, T, examples[0][0].size(1))
        labels = torch.zeros(B, L, dtype=torch.long)
        tgt_in = torch.zeros(B, L + 1, dtype=torch.long)
        tgt_out = torch.full((B, L + 1), -100, dtype=torch.long)
        for i, (f, y) in enumerate(examples):
            feats[i, : f.size(0)] = f.float()
            labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
            tgt_in[i, : len(y) + 1] = torch.tensor([self.tokenizer.bos_id] + y)
            tgt_out[i, : len(y) + 1] = torch.tensor(y + [self.tokenizer.eos_id])
        return {"feats": feats, "feat_lens": torch.tensor([f.size(0) for f, _ in examples]), "labels": labels,
                "label_lens": torch.tensor([len(y) for _, y in examples]), "tgt_in": tgt_in, "tgt_out": tgt_out}

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        a = self.args
        cfg = TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff,
                                n_decoder_layers=a.decoder_layers, dropout=a.dropout, activation="gelu",
                                norm_first=True, max_len=4096, positional="sinusoidal")
        aug = (a.spec_freq_masks, a.spec_freq_width, a.spec_time_masks, a.spec_time_width)
        arch = getattr(a, "arch", "transformer")
        if arch not in ("transformer", "lstm", "gru"):
            raise ConfigError(f"--arch must be transformer, lstm or gru, got {arch!r}")
        encoder = None if arch == "transformer" else RNNEncoder(
            RNNConfig(d_model=a.d_model, n_layers=a.n_layers, cell=arch, bidirectional=True, dropout=a.dropout))
        vtlp = getattr(a, "vtlp", 0.0)  # runs saved before --vtlp existed have none
        warp = MelWarp(a.sample_rate, a.n_mels, vtlp) if vtlp > 0 else None
        return SpeechRecognizer(cfg, a.n_mels, self.tokenizer.vocab_size, self.tokenizer.pad_id, a.conv_channels,
                                attention_decoder=a.ctc_weight < 1.0, spec_augment=aug, encoder=encoder,
                                freq_warp=warp)

    def _losses(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        a = self.args
        hybrid = a.ctc_weight < 1.0
        out = model(batch["feats"], batch["feat_lens"], batch["tgt_in"] if hybrid else None)
        ctc = F.ctc_loss(out["ctc_log_probs"].transpose(0, 1), batch["labels"], out["enc_lens"], batch["label_lens"],
                         blank=self.tokenizer.pad_id, reduction="mean", zero_infinity=True)
        if not hybrid:
            return ctc, {"ctc": ctc.detach()}
        att = F.cross_entropy(out["att_logits"].float().flatten(0, 1), batch["tgt_out"].flatten(),
                              ignore_index=-100, label_smoothing=a.label_smoothing)
        return a.ctc_weight * ctc + (1 - a.ctc_weight) * att, {"ctc": ctc.detach(), "att": att.detach()}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self._losses(model, batch)

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, model: nn.Module, examples: list[Example], batch_size: int = 32) -> tuple[list[str], float]:
        """Decode ``examples`` with ``--decode``; returns (transcripts, mean loss)."""
        device = next(model.parameters()).device
        order = sorted(range(len(examples)), key=lambda i: examples[i][0].size(0))
        hyps: list[str] = [""] * len(examples)
        total, n = 0.0, 0
        lexicon = self.lexicon()
        for s in range(0, len(order), batch_size):
            chunk = order[s: s + batch_size]
            batch = {k: v.to(device) for k, v in self.collate([examples[i] for i in chunk]).items()}
            if any(len(examples[i][1]) for i in chunk):
                loss, _ = self._losses(model, batch)
                total, n = total + float(loss) * len(chunk), n + len(chunk)
            ids = decode_batch(model, batch, self.args, self.tokenizer, lexicon)
            for i, seq in zip(chunk, ids):
                hyps[i] = self.tokenizer.decode(seq)
        return hyps, total / max(n, 1)

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        examples = self._encode(split)
        was_training = model.training
        model.eval()
        hyps, loss = self.transcribe(model, examples)
        model.train(was_training)
        refs = self.texts[split]
        metrics = speech_metrics(refs, hyps)
        metrics["loss"] = loss
        if out_dir is not None:
            write_predictions(Path(out_dir) / f"predictions_{split}.tsv", [u.source for u in self.splits[split]],
                              refs, hyps)
        return metrics

    def predict(self, model: nn.Module, inputs: list[str]) -> list[str]:
        """Transcribe audio files; one transcript per input."""
        if getattr(self.args, "threads", 0):
            torch.set_num_threads(self.args.threads)
        examples = []
        for path in inputs:
            wave, sr = read_audio(path, "predict")
            examples.append((self.features_from_wave(wave, sr, str(path)), []))
        model.eval()
        return self.transcribe(model, examples)[0]

    def baseline(self, out_dir: Path | None = None) -> dict[str, Any] | None:
        from .decode import mfcc_svm_baseline

        split = "test" if "test" in self.texts else "valid"
        return mfcc_svm_baseline(self.splits["train"], self.texts["train"], self.splits[split], self.texts[split],
                                 self.args.sample_rate, split)

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        return f"speech on {self.data_name}: {sizes}"
