"""Symbolic music generation: a decoder-only Transformer (:class:`core.CausalTransformerLM`) over note events.

Built-in data: the 371 Bach chorales of music21's corpus; or any folder of MIDI / MusicXML files. Scores
become event tokens (:mod:`tasks.music.tokens`: VOICE, PITCH, DUR per note, SHIFT between onsets) with
random-transposition augmentation; generation (:func:`core.generate`, key/value cache, temperature /
top-k / top-p) writes MIDI files and piano-roll PNGs. Metrics: ``loss`` and ``perplexity`` per token, and
for generated pieces against held-out ones the statistics of :mod:`tasks.music.metrics`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import CausalTransformerLM, SamplingArguments, TransformerConfig, generate, sampling_kwargs
from panformer.core.checkpoint import atomic_write_text
from panformer.core.data import seeded_split
from panformer.core.errors import ConfigError, DataError

from .. import register
from ..base import Task, split_flag
from .data import PieceWindows, chorale_files, corpus_path, music_files, read_pieces
from .metrics import music_statistics
from .output import write_midi, write_piano_roll
from .tokens import BOS, EOS, PAD, EventVocab

__all__ = ["MusicTask", "MusicArguments", "EventVocab", "GrammarConstrained"]

MODEL_FIELDS = ("max_pieces", "steps_per_quarter", "max_shift", "max_dur", "max_voices", "block_size", "d_model",
                "n_heads", "n_layers", "d_ff", "dropout", "bias")


@dataclass
class MusicArguments(SamplingArguments):
    max_pieces: int | None = field(default=None, metadata={"help": "read at most this many scores (the first ones, before splitting)"})
    steps_per_quarter: int = field(default=4, metadata={"help": "time grid: steps per quarter note (4: sixteenths)"})
    max_shift: int = field(default=16, metadata={"help": "longest SHIFT token, in steps"})
    max_dur: int = field(default=32, metadata={"help": "longest DUR token, in steps (longer notes are cut)"})
    max_voices: int = field(default=4, metadata={"help": "parts kept per score (SATB when named so), one VOICE token each"})
    transpose: int = field(default=5, metadata={"help": "training augmentation: transpose windows by -N..+N semitones (0: off)"})
    block_size: int = field(default=256, metadata={"help": "context length in tokens"})
    d_model: int = field(default=192, metadata={"help": "model width"})
    n_heads: int = field(default=6, metadata={"help": "attention heads"})
    n_layers: int = field(default=4, metadata={"help": "decoder layers"})
    d_ff: int | None = field(default=None, metadata={"help": "feed-forward width (default: 4 * d_model)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on sublayer outputs and embeddings"})
    bias: bool = field(default=True, metadata={"help": "biases in linear layers"})
    prompt: str = field(default="", metadata={"help": "MIDI / MusicXML file or music21 corpus name (bach/bwv269) to continue; empty: from scratch"})
    prompt_quarters: float = field(default=4.0, metadata={"help": "keep the prompt's notes that start in its first N quarter notes"})
    max_new_tokens: int = field(default=1024, metadata={"help": "tokens to generate per piece (stops at EOS)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling: smallest set with this much probability (1: all)"})
    num_samples: int = field(default=1, metadata={"help": "pieces generated per prompt (predict)"})
    eval_samples: int = field(default=8, metadata={"help": "pieces generated for the musical statistics of the final evaluation (0: none)"})
    constrained: bool = field(default=True, metadata={"help": "decode only tokens the event grammar allows next"})
    tempo: float = field(default=80.0, metadata={"help": "quarter notes per minute of the MIDI files written"})
    out_dir: str | None = field(default=None, metadata={"help": "predict: folder for the MIDI and PNG files (default: RUN/predictions)"})


class GrammarConstrained(nn.Module):
    """Decoding wrapper: ``decode_step`` logits of tokens that cannot follow the last one under the event
    grammar (:meth:`EventVocab.allowed_next`) are set to -inf, so every sampled piece decodes cleanly."""

    def __init__(self, model: nn.Module, vocab: EventVocab) -> None:
        super().__init__()
        self.model, self.vocab, self.cfg = model, vocab, model.cfg

    def init_decode_state(self, *args: Any, **kwargs: Any):
        return self.model.init_decode_state(*args, **kwargs)

    def decode_step(self, tokens: Tensor, state) -> Tensor:
        logits = self.model.decode_step(tokens, state)  # (B, V)
        return logits.masked_fill(~self.vocab.allowed_next(tokens[:, -1]), float("-inf"))


@register
class MusicTask(Task):
    name = "music"
    summary = "symbolic music: decoder-only LM over note events (Bach chorales); MIDI + piano roll; perplexity, pitch-class statistics"
    Arguments = MusicArguments
    main_metric = "loss"
    report_metrics = ("perplexity", "pch_distance", "in_key_share", "in_key_share_real")
    model_fields = MODEL_FIELDS
    predict_without_inputs = True
    predict_help = "PROMPT... MIDI / MusicXML files or music21 corpus names to continue (nothing: from scratch)"
    defaults = dict(epochs=100, max_steps=4000, batch_size=32, lr=1e-3, schedule="cosine", warmup_steps=100,
                    min_lr_ratio=0.1, weight_decay=0.1, adam_beta2=0.99, metric_for_best="loss", eval_every=250,
                    valid_fraction=0.1, test_fraction=0.1, log_every=50)
    quick = dict(max_time_minutes=0.3, schedule_clock="time", max_steps=100_000, max_pieces=32, d_model=64, n_heads=2, n_layers=2, block_size=128, batch_size=16,
                 dropout=0.0, eval_every=50, eval_samples=4, max_new_tokens=192, warmup_steps=5, lr=3e-3)

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.run_dir: Path | None = None  # the run directory when restored by evaluate / predict

    # -- data -------------------------------------------------------------------------------------
    def _vocab_from_args(self) -> EventVocab:
        a = self.args
        for name in ("steps_per_quarter", "max_shift", "max_dur", "max_voices", "block_size"):
            if getattr(a, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
        return EventVocab(a.steps_per_quarter, a.max_shift, a.max_dur, a.max_voices)

    def _read(self, source: str | None, what: str) -> list:
        n = self.args.max_pieces or None
        files = chorale_files(n) if source is None else music_files(source, what)[:n]
        return read_pieces(files, self.vocab, what)

    def load_data(self) -> None:
        a = self.args
        if not hasattr(self, "vocab"):
            self.vocab = self._vocab_from_args()
        pieces = self._read(a.data, "--data")
        self.data_name = "Bach chorales (music21 corpus)" if a.data is None else Path(a.data).name
        fracs = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        train_i, valid_i, test_i = seeded_split(len(pieces), fracs, a.seed)
        splits = {"train": [pieces[i] for i in train_i], "valid": [pieces[i] for i in valid_i],
                  "test": [pieces[i] for i in test_i]}
        for split, source in (("valid", a.valid_data), ("test", a.test_data)):
            if source:
                splits[split] = self.read_split(source, split)
        if a.max_examples:
            splits["train"] = splits["train"][: a.max_examples]
        if not splits["valid"]:
            raise DataError(f"{'--data ' + a.data if a.data else 'the data'}: {len(pieces)} pieces leave no validation "
                            f"piece at --valid-fraction {a.valid_fraction}; add pieces, raise it or pass --valid-data")
        self.splits = {k: v or None for k, v in splits.items()}
        self.finish_splits()

    def read_split(self, source: str | None, split: str) -> list | None:
        if not hasattr(self, "vocab"):
            self.vocab = self._vocab_from_args()
        return self._read(source, split_flag(split)) if source else None

    def finish_splits(self) -> None:
        self._ids: dict[str, list[Tensor]] = {}  # token ids per split, encoded on first use

    def ids(self, split: str) -> list[Tensor]:
        """Token ids of every piece of ``split`` (BOS ... EOS), long (N_i,)."""
        if split not in self._ids:
            self._ids[split] = [torch.tensor(self.vocab.encode(notes), dtype=torch.long) for _, notes in self.splits[split]]
        return self._ids[split]

    def fit_assets(self) -> None:
        a = self.args
        cfg = TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff or 4 * a.d_model,
                                dropout=a.dropout, activation="gelu", norm_first=True, max_len=a.block_size,
                                positional="learned", bias=a.bias)
        self.spec = {"config": cfg.to_dict(), "vocab_size": self.vocab.size, "pad_id": PAD, "block_size": a.block_size}

    def save_assets(self, run_dir: Path) -> None:
        atomic_write_text(run_dir / "vocab.json", json.dumps(self.vocab.to_dict(), indent=2))
        atomic_write_text(run_dir / "model.json", json.dumps(self.spec, indent=2))

    def load_assets(self, run_dir: Path) -> None:
        self.vocab = EventVocab(**json.loads((run_dir / "vocab.json").read_text()))
        self.spec = json.loads((run_dir / "model.json").read_text())
        parent = Path(run_dir).parent  # a run directory when restored by evaluate / predict (not a temporary copy)
        self.run_dir = parent if (parent / "config.json").is_file() else None

    @property
    def block_size(self) -> int:
        return self.spec["block_size"]

    def train_dataset(self) -> PieceWindows:
        return PieceWindows(self.ids("train"), self.block_size, self.vocab, max(self.args.transpose, 0))

    def collate(self, windows: list[Tensor]) -> dict[str, Tensor]:
        """→ {"ids": (B, block_size + 1)}: inputs ids[:, :-1], targets ids[:, 1:] (PAD targets ignored)."""
        return {"ids": torch.stack(windows)}

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> CausalTransformerLM:
        return CausalTransformerLM(TransformerConfig.from_dict(self.spec["config"]), self.spec["vocab_size"],
                                   self.spec["pad_id"], tie_output=True, scale_embeddings=False)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        ids = batch["ids"]  # (B, T + 1)
        logits = model(ids[:, :-1]).float()  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), ignore_index=PAD,
                               label_smoothing=getattr(self.args, "label_smoothing", 0.0))

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _nll(self, model: nn.Module, pieces: list[Tensor], batch_size: int = 32) -> tuple[float, int]:
        """Summed-then-averaged next-token NLL over non-overlapping windows of ``block_size`` per piece
        (each window scored from its start); every token after BOS is a target once."""
        device = next(model.parameters()).device
        blk = self.block_size
        windows = [p[s : s + blk + 1] for p in pieces for s in range(0, p.numel() - 1, blk)]
        total, count = 0.0, 0
        for s in range(0, len(windows), batch_size):
            group = windows[s : s + batch_size]
            w = torch.full((len(group), max(g.numel() for g in group)), PAD, dtype=torch.long)
            for i, g in enumerate(group):
                w[i, : g.numel()] = g
            w = w.to(device)
            logits = model(w[:, :-1]).float()
            total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), ignore_index=PAD, reduction="sum"))
            count += int(w[:, 1:].ne(PAD).sum())
        return total / max(count, 1), count

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """{"loss", "perplexity", "tokens"} on ``split``; at the final evaluation (``out_dir`` given, or a
        run restored by ``panformer evaluate``) also the musical statistics of ``eval_samples`` generated
        pieces against the split's pieces, and with ``out_dir`` their MIDI / PNG files in ``out_dir/samples``."""
        was_training = model.training
        model.eval()
        loss, n = self._nll(model, self.ids(split))
        metrics: dict[str, float] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": n}
        if (out_dir is not None or self.run_dir is not None) and self.args.eval_samples > 0:
            pieces = self.generate_pieces(model, [BOS], self.args.eval_samples)
            metrics.update(music_statistics([p[0] for p in pieces], [notes for _, notes in self.splits[split]],
                                            self.vocab.max_dur))
            if not self.args.constrained:
                metrics["syntax_error_rate"] = sum(p[1] for p in pieces) / max(1, sum(p[2] for p in pieces))
            if out_dir is not None:
                for i, (notes, *_) in enumerate(pieces):
                    self._write(notes, Path(out_dir) / "samples" / f"sample_{i}", f"generated sample {i}")
        model.train(was_training)
        return metrics

    def generate_pieces(self, model: nn.Module, prompt: list[int], num: int) -> list[tuple[list, int, int]]:
        """``num`` continuations of the token ``prompt`` → [(notes, tokens out of grammar, tokens)]."""
        a = self.args
        decoder = GrammarConstrained(model, self.vocab) if a.constrained else model
        seqs = generate(decoder, prompt, a.max_new_tokens, num_samples=num, eos_id=EOS, **sampling_kwargs(a))
        return [(*self.vocab.decode(s), len(s)) for s in seqs]

    def _write(self, notes: list, stem: Path, title: str) -> tuple[Path, Path]:
        spq = self.vocab.steps_per_quarter
        return (write_midi(notes, stem.with_suffix(".mid"), spq, self.args.tempo),
                write_piano_roll(notes, stem.with_suffix(".png"), spq, title))

    def _prompt_ids(self, source: str) -> list[int]:
        """BOS + the events of the notes starting in the first ``prompt_quarters`` of ``source``."""
        path = Path(source).expanduser()
        if not path.exists():
            path = corpus_path(source)
        (_, notes), = read_pieces(music_files(str(path), "prompt"), self.vocab, "prompt")
        limit = self.args.prompt_quarters * self.vocab.steps_per_quarter
        return self.vocab.encode([n for n in notes if n[0] < limit], eos=False)

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        """Per generated piece {"prompt", "midi", "png", "notes", "quarters"}; files in ``--out-dir``."""
        a = self.args
        prompts = inputs or ([a.prompt] if a.prompt else [""])
        out = Path(a.out_dir) if a.out_dir else (self.run_dir or Path(".")) / "predictions"
        results = []
        for k, prompt in enumerate(prompts):
            ids = self._prompt_ids(prompt) if prompt else [BOS]
            stem = (Path(prompt).stem if prompt else "sample") + (f"_{k}" if len(prompts) > 1 else "")
            for j, (notes, *_) in enumerate(self.generate_pieces(model, ids, a.num_samples)):
                midi, png = self._write(notes, out / f"{stem}_{j}", f"{prompt or 'from scratch'}: sample {j}")
                end = max((n[0] + n[1] for n in notes), default=0) / self.vocab.steps_per_quarter
                results.append({"prompt": prompt, "midi": str(midi), "png": str(png), "notes": len(notes),
                                "quarters": end})
        return results

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,} pieces ({sum(t.numel() for t in self.ids(k)):,} tokens)"
                          for k, v in self.splits.items() if v)
        return f"music on {self.data_name}: {sizes}; vocabulary {self.vocab.size} events"
