"""Machine translation with the core encoder-decoder (Vaswani et al. 2017).

Shared or separate BPE vocabularies, tied source/target/output embeddings, label smoothing, the
warm-up + inverse-square-root schedule, greedy and beam search with a length penalty, averaging of the
last k evaluated checkpoints, sacreBLEU / chrF on detokenised text and cross-attention pictures.

Data: built-in German→English number and date expressions rendered by num2words
(:func:`tasks.translation.data.number_expression_pairs`), two line-aligned text files, a fairseq-style
``PREFIX`` (``PREFIX.de``/``PREFIX.en``, gzip accepted), CSV / TSV / JSON / JSONL / Parquet tables or
Hugging Face datasets.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Seq2SeqTransformer, TransformerConfig
from panformer.core.checkpoint import atomic_write_text, save_weights
from panformer.core.data import assemble_splits, bucket_batches
from panformer.core.errors import ConfigError, DataError
from panformer.core.rows import ListRows
from panformer.core.token_cache import TokenCacheArguments, cache_root
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

from .. import register
from ..base import ListDataset, Task, split_flag
from .cache import TranslationCache
from .data import ParallelLines, number_expression_pairs, parallel_rows, read_parallel_files, read_source
from .decode import average_state_dicts, cross_attention_png, pad_batch, sequence_log_probs, translate_ids

__all__ = ["TranslationTask", "TranslationArguments", "translate_ids", "sequence_log_probs", "average_state_dicts",
           "number_expression_pairs"]

MODEL_FIELDS = ("tokenizer", "vocab_size", "shared_vocab", "lowercase", "max_len", "d_model", "n_heads", "n_layers",
                "n_decoder_layers", "d_ff", "dropout", "attention_dropout", "activation", "norm_first", "positional",
                "tie_embeddings", "tie_output", "source_lang", "target_lang")


@dataclass
class TranslationArguments(TokenCacheArguments):
    source_file: str | None = field(default=None, metadata={"help": "training source sentences, one per line (.gz accepted)"})
    target_file: str | None = field(default=None, metadata={"help": "training target sentences, line-aligned with --source-file"})
    valid_source_file: str | None = field(default=None, metadata={"help": "validation source sentences (with --valid-target-file)"})
    valid_target_file: str | None = field(default=None, metadata={"help": "validation target sentences"})
    test_source_file: str | None = field(default=None, metadata={"help": "test source sentences (with --test-target-file)"})
    test_target_file: str | None = field(default=None, metadata={"help": "test target sentences"})
    source_column: str | None = field(default=None, metadata={"help": "source column of a table (default: --source-lang, 'source' or 'src')"})
    target_column: str | None = field(default=None, metadata={"help": "target column of a table (default: --target-lang, 'target' or 'tgt')"})
    source_lang: str = field(default="de", metadata={"help": "source language code (PREFIX.<lang> files, hub 'translation' dicts)"})
    target_lang: str = field(default="en", metadata={"help": "target language code"})
    builtin_size: int = field(default=20000, metadata={"help": "pairs generated for the built-in num2words data"})
    tokenizer: str = field(default="bpe", metadata={"help": "bpe | char | word, trained on the training split"})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary size (per side when --shared-vocab false)"})
    shared_vocab: bool = field(default=True, metadata={"help": "one joint vocabulary for source and target"})
    lowercase: bool = field(default=False, metadata={"help": "lowercase text (BLEU is then case-insensitive too)"})
    max_len: int = field(default=128, metadata={"help": "truncate sentences to this many tokens (BOS/EOS included)"})
    max_tokens: int | None = field(default=None, metadata={"help": "cap on padded tokens per batch (fairseq --max-tokens); batches also hold at most --batch-size pairs"})
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=3, metadata={"help": "encoder layers"})
    n_decoder_layers: int | None = field(default=None, metadata={"help": "decoder layers (default: --n-layers)"})
    d_ff: int = field(default=1024, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on sublayer outputs and embeddings"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    activation: str = field(default="relu", metadata={"help": "relu | gelu"})
    norm_first: bool = field(default=True, metadata={"help": "pre-LN (true; robust on small data) or the paper's post-LN (false)"})
    positional: str = field(default="sinusoidal", metadata={"help": "sinusoidal | learned"})
    tie_embeddings: bool = field(default=True, metadata={"help": "share source and target embeddings (needs --shared-vocab)"})
    tie_output: bool = field(default=True, metadata={"help": "tie the output projection to the target embedding"})
    beam_size: int = field(default=5, metadata={"help": "beam size of the final evaluation and predict (1: greedy)"})
    length_penalty: float = field(default=1.0, metadata={"help": "beam score = log p / length ** length_penalty"})
    max_len_a: float = field(default=1.2, metadata={"help": "generate at most a * source_length + b tokens: a"})
    max_len_b: int = field(default=10, metadata={"help": "generate at most a * source_length + b tokens: b"})
    average_last: int = field(default=1, metadata={"help": "average the weights of the last k evaluations after training (1: off)"})
    eval_max_examples: int | None = field(default=1000, metadata={"help": "validation pairs decoded (greedy) at each evaluation during training"})
    attention_examples: int = field(default=3, metadata={"help": "cross-attention PNGs written to the run directory"})
    bleu_tokenize: str = field(default="13a", metadata={"help": "sacreBLEU tokenizer: 13a | intl | zh | ja-mecab | char | none"})


@register
class TranslationTask(Task):
    name = "translation"
    summary = "machine translation: core encoder-decoder, BPE, beam search; sacreBLEU / chrF / exact match"
    Arguments = TranslationArguments
    main_metric = "bleu"
    report_metrics = ("bleu", "chrf")  # shown by `panformer compare`
    model_fields = MODEL_FIELDS
    defaults = dict(epochs=30, batch_size=128, lr=7e-4, schedule="inverse_sqrt", warmup_steps=1000, weight_decay=0.0001,
                    label_smoothing=0.1, metric_for_best="bleu", adam_beta2=0.98)
    quick = dict(max_time_minutes=0.5, schedule_clock="time", max_steps=100_000, schedule="cosine", d_model=96,
                 n_heads=2, n_layers=2, d_ff=256, vocab_size=600, builtin_size=20000, batch_size=64, warmup_steps=30,
                 eval_every=400, eval_max_examples=64, beam_size=2, lr=2e-3, label_smoothing=0.0, dropout=0.0,
                 attention_examples=1)
    predict_help = "SENTENCE... source sentences to translate"
    split_options = {"valid": ("valid_data", "valid_source_file", "valid_target_file"),
                     "test": ("test_data", "test_source_file", "test_target_file")}

    # -- data -------------------------------------------------------------------------------------
    def _file_pair(self, prefix: str) -> tuple[str, str, str] | None:
        """(source file, target file, their flags) of ``--{prefix}source-file`` / ``--{prefix}target-file``."""
        a = self.args
        s, t = getattr(a, f"{prefix}source_file"), getattr(a, f"{prefix}target_file")
        flag = "--" + prefix.replace("_", "-")
        if (s is None) != (t is None):
            given, missing = ("source", "target") if s else ("target", "source")
            raise DataError(f"{flag}{given}-file needs {flag}{missing}-file (line-aligned parallel files)")
        return (s, t, f"{flag}source-file/{flag}target-file") if s else None

    def _files(self, prefix: str) -> tuple[list[str], list[str]] | None:
        pair = self._file_pair(prefix)
        return read_parallel_files(*pair) if pair else None

    @property
    def memmap(self) -> bool:
        """Train from a memory-mapped token cache (``--cache-dir`` / ``--streaming``) instead of in memory."""
        return cache_root(self.args) is not None

    def _train_pairs(self, cached: bool):
        """The training pairs: in memory ``(sources, targets)``; ``cached``: rows read in batches
        (:class:`.data.ParallelLines`, :class:`.data.ParallelTable`, :class:`core.rows.ListRows`)."""
        a = self.args
        pair = self._file_pair("")
        if pair is not None and a.data:
            raise ConfigError("give either --data or --source-file/--target-file, not both")
        if pair is not None:
            self.data_name = Path(a.source_file).name
            return ParallelLines(*pair) if cached else read_parallel_files(*pair)
        if a.data:
            self.data_name = Path(a.data).name
            return parallel_rows(a.data, "--data", a) if cached else read_source(a.data, "--data", a)
        self.data_name = f"num2words {a.source_lang}→{a.target_lang} number and date expressions"
        src, tgt = number_expression_pairs(a.builtin_size, seed=0, source_lang=a.source_lang, target_lang=a.target_lang)
        return ListRows({"source": src, "target": tgt}) if cached else (src, tgt)

    def load_data(self) -> None:
        a = self.args
        if a.tie_embeddings and not a.shared_vocab:
            raise ConfigError("--tie-embeddings needs --shared-vocab true (one vocabulary); or pass --tie-embeddings false")
        train = self._train_pairs(cached=self.memmap)
        valid, test = self.read_split(a.valid_data, "valid"), self.read_split(a.test_data, "test")
        if self.memmap:
            self._table = TranslationCache(a, train, valid, test)
            if self.__dict__.get("src_tok") is not None:  # evaluate: the run's tokenizers are loaded
                self._use_cache(self._table.open(self.src_tok, self.tgt_tok))
            return
        self.splits = assemble_splits(
            len(train[0]), lambda ids: ([train[0][i] for i in ids], [train[1][i] for i in ids]), valid=valid, test=test,
            valid_fraction=a.valid_fraction, test_fraction=a.test_fraction, seed=a.seed,
            max_examples=a.max_examples, size=lambda part: len(part[0]), valid_hint="--valid-data / --valid-source-file")

    def read_split(self, source: str | None, split: str) -> tuple[list[str], list[str]] | None:
        """``--{split}-source-file``/``--{split}-target-file``, else ``--{split}-data``."""
        files = self._files(f"{split}_")
        if files is None and source:
            files = read_source(source, split_flag(split), self.args)
        return files or None

    def fit_assets(self) -> None:
        a = self.args
        if self.memmap:  # trained (or found) with the cache
            caches = self._table.open(None, None)
            self.src_tok, self.tgt_tok = caches[0].tokenizer, caches[1].tokenizer
            if a.shared_vocab:
                self.tgt_tok = self.src_tok
            self._use_cache(caches)
            return
        src, tgt = self.splits["train"]
        kw = dict(kind=a.tokenizer, vocab_size=a.vocab_size, lowercase=a.lowercase)
        if a.shared_vocab:
            self.src_tok = self.tgt_tok = train_tokenizer(src + tgt, **kw)
        else:
            self.src_tok, self.tgt_tok = train_tokenizer(src, **kw), train_tokenizer(tgt, **kw)

    def save_assets(self, run_dir: Path) -> None:
        if self.src_tok is self.tgt_tok:
            self.src_tok.save(run_dir / "tokenizer.json")
        else:
            self.src_tok.save(run_dir / "source_tokenizer.json")
            self.tgt_tok.save(run_dir / "target_tokenizer.json")

    def load_assets(self, run_dir: Path) -> None:
        if (run_dir / "tokenizer.json").is_file():
            self.src_tok = self.tgt_tok = TextTokenizer.load(run_dir / "tokenizer.json")
        else:
            self.src_tok = TextTokenizer.load(run_dir / "source_tokenizer.json")
            self.tgt_tok = TextTokenizer.load(run_dir / "target_tokenizer.json")

    def _use_cache(self, caches) -> None:
        src_tok, tgt_tok, max_len = self.src_tok, self.tgt_tok, self.args.max_len

        def make(src, tgt) -> tuple[list[int], list[int]]:
            s = src_tok.wrap(src, add_eos=True, max_len=max_len)
            return (s if len(s) > 1 else [src_tok.unk_id, src_tok.eos_id]), tgt_tok.wrap(tgt, True, True, max_len)

        self.splits, self._train_lengths = self._table.splits(caches, make, lambda s, t: np.maximum(
            np.maximum(src_tok.wrapped_lengths(s, add_eos=True, max_len=max_len), 2),
            tgt_tok.wrapped_lengths(t, True, True, max_len)))

    def _encode_src(self, texts: list[str]) -> list[list[int]]:
        ids = self.src_tok.encode_batch(texts, add_eos=True, max_len=self.args.max_len)
        return [x if len(x) > 1 else [self.src_tok.unk_id, self.src_tok.eos_id] for x in ids]

    def _encode(self, split: str) -> list[tuple[list[int], list[int]]]:
        src, tgt = self.splits[split]
        tgt_ids = self.tgt_tok.encode_batch(tgt, add_bos=True, add_eos=True, max_len=self.args.max_len)
        return list(zip(self._encode_src(src), tgt_ids))

    def train_dataset(self):
        self._snapshots: deque[dict[str, Tensor]] = deque(maxlen=max(self.args.average_last, 1))
        self._collect = self.args.average_last > 1
        if self.memmap:
            return self.splits["train"]
        self._train = self._encode("train")
        self._train_lengths = [max(len(s), len(t)) for s, t in self._train]
        return ListDataset(self._train)

    def batch_sampler_fn(self):
        lengths = self._train_lengths
        bs, mt = self.args.batch_size, self.args.max_tokens
        return lambda epoch, seed: bucket_batches(lengths, bs, seed, epoch, max_tokens=mt)

    def collate(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
        """→ {"src": (B, S), "tgt": (B, T) BOS ... EOS}, right-padded with the pad id."""
        return {"src": pad_batch([s for s, _ in examples], self.src_tok.pad_id),
                "tgt": pad_batch([t for _, t in examples], self.tgt_tok.pad_id)}

    # -- model ------------------------------------------------------------------------------------
    def model_config(self) -> TransformerConfig:
        a = self.args
        return TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers,
                                 n_decoder_layers=a.n_decoder_layers, d_ff=a.d_ff, dropout=a.dropout,
                                 attention_dropout=a.attention_dropout, activation=a.activation,
                                 norm_first=a.norm_first, max_len=max(a.max_len, int(a.max_len_a * a.max_len + a.max_len_b) + 1),
                                 positional=a.positional)

    def build_model(self) -> Seq2SeqTransformer:
        a = self.args
        if getattr(a, "quick", False):
            torch.set_num_threads(1)  # a --quick model is tiny: one thread is fastest, and immune to a busy CPU
        return Seq2SeqTransformer(self.model_config(), self.src_tok.vocab_size, self.tgt_tok.vocab_size,
                                  pad_id=self.tgt_tok.pad_id, share_embeddings=a.tie_embeddings and a.shared_vocab,
                                  tie_output=a.tie_output)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Label-smoothed cross-entropy per target token (padding ignored)."""
        tgt = batch["tgt"]
        logits = model(batch["src"], tgt[:, :-1]).float()  # (B, T-1, V)
        return F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=self.tgt_tok.pad_id,
                               label_smoothing=self.args.label_smoothing)

    # -- results ----------------------------------------------------------------------------------
    def _decode_kwargs(self, beam_size: int) -> dict[str, Any]:
        a, t = self.args, self.tgt_tok
        return dict(bos_id=t.bos_id, eos_id=t.eos_id, pad_id=t.pad_id, beam_size=beam_size,
                    length_penalty=a.length_penalty, max_len_a=a.max_len_a, max_len_b=a.max_len_b)

    @torch.no_grad()
    def _nll(self, model: nn.Module, examples: list[tuple[list[int], list[int]]], batch_size: int = 128) -> float:
        device = next(model.parameters()).device
        total, count = 0.0, 0
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        for s in range(0, len(order), batch_size):
            b = self.collate([examples[i] for i in order[s : s + batch_size]])
            src, tgt = b["src"].to(device), b["tgt"].to(device)
            logits = model(src, tgt[:, :-1]).float()
            total += float(F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(),
                                           ignore_index=self.tgt_tok.pad_id, reduction="sum"))
            count += int((tgt[:, 1:] != self.tgt_tok.pad_id).sum())
        return total / max(count, 1)

    def _scores(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        import sacrebleu

        lc = self.args.lowercase
        return {"bleu": float(sacrebleu.corpus_bleu(hyps, [refs], tokenize=self.args.bleu_tokenize, lowercase=lc).score),
                "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score) if not lc else
                float(sacrebleu.corpus_chrf([h.lower() for h in hyps], [[r.lower() for r in refs]]).score),
                "exact_match": sum((h.strip().lower() if lc else h.strip()) == (r.strip().lower() if lc else r.strip())
                                   for h, r in zip(hyps, refs)) / max(len(refs), 1)}

    def _average(self, model: nn.Module, out_dir: Path) -> int:
        """Load the mean of the last ``average_last`` evaluated weights into ``model`` and save it."""
        snaps = list(getattr(self, "_snapshots", []))
        if len(snaps) < 2:
            return 1
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in average_state_dicts(snaps).items()})
        save_weights(model, out_dir / "model.safetensors", metadata={"averaged_checkpoints": len(snaps)})
        self._snapshots.clear()
        return len(snaps)

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        """During training (no ``out_dir``): loss and greedy BLEU / chrF / exact match on up to
        ``eval_max_examples`` pairs. Final (``out_dir``): averaging if asked, then beam and greedy scores
        on the whole split, ``translations.tsv`` and cross-attention PNGs."""
        a = self.args
        was_training = model.training
        model.eval()
        final = out_dir is not None
        averaged = 1
        if not final and getattr(self, "_collect", False):
            self._snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if final and getattr(self, "_collect", False):
            averaged = self._average(model, Path(out_dir))
        src, refs = self.splits[split]
        if not final and a.eval_max_examples:
            src, refs = src[: a.eval_max_examples], refs[: a.eval_max_examples]
        examples = self._encode(split)[: len(src)]
        metrics: dict[str, float] = {"loss": self._nll(model, examples)}
        src_ids = [s for s, _ in examples]
        greedy, _ = translate_ids(model, src_ids, **self._decode_kwargs(1))
        greedy_txt = self.tgt_tok.decode_batch(greedy)
        if not final or a.beam_size <= 1:
            metrics.update(self._scores(greedy_txt, refs))
            hyps_txt, hyps = greedy_txt, greedy
        else:
            hyps, _ = translate_ids(model, src_ids, **self._decode_kwargs(a.beam_size))
            hyps_txt = self.tgt_tok.decode_batch(hyps)
            metrics.update(self._scores(hyps_txt, refs))
            metrics.update({f"{k}_greedy": v for k, v in self._scores(greedy_txt, refs).items()})
        if final:
            metrics.update(beam_size=a.beam_size, checkpoints_averaged=averaged)
            self._write_outputs(model, Path(out_dir), split, src, refs, src_ids, hyps, hyps_txt)
        model.train(was_training)
        return metrics

    def _write_outputs(self, model, out_dir: Path, split, src, refs, src_ids, hyps, hyps_txt) -> None:
        rows = ["source\treference\ttranslation"] + [f"{s}\t{r}\t{h}" for s, r, h in zip(src, refs, hyps_txt)]
        atomic_write_text(out_dir / f"translations_{split}.tsv", "\n".join(rows) + "\n")
        tok_s, tok_t = self.src_tok.tok, self.tgt_tok.tok
        for i in range(min(self.args.attention_examples, len(src_ids))):
            cross_attention_png(model, src_ids[i], hyps[i], [tok_s.id_to_token(t) for t in src_ids[i]],
                                [tok_t.id_to_token(t) for t in hyps[i]], self.tgt_tok.bos_id, self.tgt_tok.eos_id,
                                out_dir / f"cross_attention_{i}.png", title=src[i][:80])

    def predict(self, model: nn.Module, inputs: list[str]) -> list[str]:
        if any(not s.strip() for s in inputs):
            raise DataError("predict: an input sentence is empty")
        hyps, _ = translate_ids(model, self._encode_src(inputs), **self._decode_kwargs(self.args.beam_size))
        return self.tgt_tok.decode_batch(hyps)

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v if k == 'train' and self.memmap else v[0]):,}" for k, v in self.splits.items()
                          if v is not None)
        return f"translation on {self.data_name}: {sizes} pairs"

