"""Text generation: a decoder-only (GPT) language model on the core decoder.

Character or BPE tokens, tied input/output embeddings, key/value cache, greedy / sampling (temperature,
top-k, top-p) / beam decoding. Metrics: validation ``loss``, ``perplexity`` and, for characters,
``bits_per_char``; generated samples go to ``samples.txt`` in the run directory. ``--pretrained DIR``
starts from a GPT-2-format Hugging Face directory (via :func:`core.pretrained.load_gpt2`).
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

from panformer.core import CausalTransformerLM, RecurrentLM, RNNConfig, SamplingArguments, TransformerConfig, sampling_kwargs
from panformer.core.checkpoint import atomic_write_text
from panformer.core.errors import ConfigError, DataError
from panformer.core.init import INIT_SCHEMES, init_weights_
from panformer.core.token_cache import TokenCache, TokenCacheArguments, TokenStream, cache_root
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

from .. import register
from ..base import Task, split_flag
from .corpus import CorpusCache
from .data import TokenWindows, contiguous_split, encode_stream, pydoc_topics, random_windows, read_documents
from .generate import generate

__all__ = ["GenerationTask", "GenerationArguments", "generate", "build_lm", "from_pretrained"]

MODEL_FIELDS = ("arch", "tokenizer", "vocab_size", "lowercase", "block_size", "d_model", "n_heads", "n_layers", "d_ff",
                "dropout", "bias", "pretrained", "text_column", "max_chars")


@dataclass
class GenerationArguments(SamplingArguments, TokenCacheArguments):
    text_column: str | None = field(default=None, metadata={"help": "text column of a table / hub dataset (default: text, content, ...)"})
    max_chars: int | None = field(default=None, metadata={"help": "use at most this many characters of the training text"})
    tokenizer: str = field(default="char", metadata={"help": "char | bpe, trained on the training text"})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary size"})
    lowercase: bool = field(default=False, metadata={"help": "lowercase the text (BPE only)"})
    block_size: int = field(default=128, metadata={"help": "context length in tokens"})
    arch: str = field(default="transformer", metadata={"help": "transformer (GPT) | lstm | gru (baseline: a recurrent "
                                                                "LM, d_model wide, n_layers deep, tied embeddings)"})
    d_model: int = field(default=192, metadata={"help": "model width"})
    n_heads: int = field(default=6, metadata={"help": "attention heads"})
    n_layers: int = field(default=6, metadata={"help": "decoder layers"})
    d_ff: int | None = field(default=None, metadata={"help": "feed-forward width (default: 4 * d_model)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on sublayer outputs and embeddings"})
    bias: bool = field(default=True, metadata={"help": "biases in linear layers"})
    init: str = field(default="torch", metadata={"help": "weight initialisation: torch (PyTorch's module defaults) | "
                                                         "gpt2 (N(0, 0.02), residual projections / sqrt(2 n_layers))",
                                                 "choices": list(INIT_SCHEMES)})
    pretrained: str | None = field(default=None, metadata={
        "help": "GPT-2-format Hugging Face directory or Hub id (org/name) to start from (its tokenizer is used)"})
    eval_max_tokens: int | None = field(default=None, metadata={"help": "validation tokens scored at each evaluation during training (default: all)"})
    prompt: str = field(default="", metadata={"help": "text to continue (predict, and the samples written after training)"})
    max_new_tokens: int = field(default=200, metadata={"help": "tokens to generate"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature (0: greedy)"})
    beam_size: int = field(default=4, metadata={"help": "beams for --decoding beam"})
    length_penalty: float = field(default=1.0, metadata={"help": "beam score = log p / length ** length_penalty"})
    num_samples: int = field(default=1, metadata={"help": "samples per prompt"})
    output_format: str = field(default="text", metadata={"help": "predict output: text | json"})


def build_lm(spec: dict[str, Any]) -> nn.Module:
    """A :class:`CausalTransformerLM` from ``{"config", "vocab_size", "pad_id", "tie_output", "scale_embeddings"}``;
    with ``"arch": "lstm" | "gru"`` a :class:`core.RecurrentLM` of the config's width, depth, dropout and context."""
    arch = spec.get("arch", "transformer")
    if arch != "transformer":
        c = spec["config"]
        rnn = RNNConfig(d_model=c["d_model"], n_layers=c["n_layers"], cell=arch, bidirectional=False,
                        dropout=c["dropout"], max_len=c["max_len"])
        return RecurrentLM(rnn, spec["vocab_size"], spec.get("pad_id"), tie_output=spec.get("tie_output", True))
    return CausalTransformerLM(TransformerConfig.from_dict(spec["config"]), spec["vocab_size"], spec.get("pad_id"),
                               tie_output=spec.get("tie_output", True), scale_embeddings=spec.get("scale_embeddings", False))


def _spec_of(model: CausalTransformerLM) -> dict[str, Any]:
    return {"config": model.cfg.to_dict(), "vocab_size": model.vocab_size, "pad_id": model.pad_id,
            "tie_output": model.output.weight is model.embed.weight, "scale_embeddings": model.embed.scale != 1.0}


@register
class GenerationTask(Task):
    name = "generation"
    summary = "text generation: decoder-only LM (GPT) on the core decoder; loss / perplexity / bits per char"
    Arguments = GenerationArguments
    main_metric = "loss"
    report_metrics = ("perplexity", "bits_per_char")  # shown by `panformer compare`
    model_fields = MODEL_FIELDS
    predict_without_inputs = True
    defaults = dict(epochs=1000, max_steps=5000, batch_size=64, lr=1e-3, schedule="cosine", warmup_steps=100,
                    min_lr_ratio=0.1, weight_decay=0.1, adam_beta2=0.99, metric_for_best="loss", eval_every=250,
                    valid_fraction=0.1, test_fraction=0.0, log_every=50)
    quick = dict(max_time_minutes=0.4, schedule_clock="time", max_steps=100_000, d_model=64, n_heads=2, n_layers=2,
                 block_size=64, batch_size=16, eval_every=300, dropout=0.0, init="torch",
                 max_chars=200_000, eval_max_tokens=8192, max_new_tokens=100, warmup_steps=5, lr=3e-3)
    predict_help = "PROMPT... texts to continue (or --prompt; nothing: unconditional)"
    baselines = {"lstm": {"arch": "lstm"}}

    # -- data -------------------------------------------------------------------------------------
    def _text(self, source: str | None, what: str) -> str:
        docs = pydoc_topics() if source is None else read_documents(source, what, self.args.text_column)
        return "\n\n".join(d.strip("\n") for d in docs)

    @property
    def memmap(self) -> bool:
        """Train from a memory-mapped token cache (``--cache-dir`` / ``--streaming``) instead of in memory."""
        return cache_root(self.args) is not None

    def load_data(self) -> None:
        a = self.args
        if a.tokenizer not in ("char", "bpe"):
            raise ConfigError(f"--tokenizer must be char or bpe, got {a.tokenizer!r}")
        self.data_name = "pydoc_data.topics (CPython help texts)" if a.data is None else Path(a.data).name
        if self.memmap:
            self._corpus = CorpusCache(a)  # checks the sources; fit_assets (or the run's tokenizer) opens the cache
            if self.__dict__.get("tokenizer") is not None:  # evaluate: the run's tokenizer is loaded already
                self._use_cache(self._corpus.open(self.tokenizer, self.char_level))
            return
        text = self._text(a.data, "--data")
        fracs = [0.0 if a.valid_data else a.valid_fraction, 0.0 if a.test_data else a.test_fraction]
        train, valid, test = contiguous_split(text, fracs)
        valid = self.read_split(a.valid_data, "valid") or valid
        test = self.read_split(a.test_data, "test") or test
        if a.max_chars:
            train = train[: a.max_chars]
        self.splits = {"train": train, "valid": valid or None, "test": test or None}
        if self.splits["valid"] is None:
            raise DataError("empty validation text; raise --valid-fraction or pass --valid-data")

    def _use_cache(self, cache: TokenCache) -> None:
        self._cache = cache
        self._ids_cache = {s: cache.stream(s) for s in ("train", "valid", "test")}
        self.splits = {s: ids if ids.numel() else None for s, ids in self._ids_cache.items()}
        if self.splits["valid"] is None:
            raise DataError("empty validation text; raise --valid-fraction or pass --valid-data")

    def read_split(self, source: str | None, split: str) -> str | None:
        return self._text(source, split_flag(split)) if source else None

    @property
    def char_level(self) -> bool:
        return self.args.tokenizer == "char" and not self.args.pretrained

    def fit_assets(self) -> None:
        a = self.args
        self._pretrained_model = None
        if getattr(a, "arch", "transformer") not in ("transformer", "lstm", "gru"):
            raise ConfigError(f"--arch must be transformer, lstm or gru, got {a.arch!r}")
        if a.pretrained and getattr(a, "arch", "transformer") != "transformer":
            raise ConfigError(f"--arch {a.arch} cannot load --pretrained GPT-2 weights; drop one of them")
        if a.pretrained:
            from panformer.core.pretrained import load_gpt2, load_tokenizer

            self.tokenizer = load_tokenizer(a.pretrained)
            self._pretrained_model = load_gpt2(a.pretrained)
            self.spec = _spec_of(self._pretrained_model)
            self.block_size = min(a.block_size, self.spec["config"]["max_len"])
            if self.memmap:
                self._use_cache(self._corpus.open(self.tokenizer, char_level=False))
        else:
            self._fit_tokenizer()
        TokenWindows(self._ids("train"), self.block_size)  # too little text: fail before the run starts

    def _fit_tokenizer(self) -> None:
        a = self.args
        if self.memmap:  # trained (or found) with the cache
            self._use_cache(self._corpus.open(None, self.char_level))
            self.tokenizer = self._cache.tokenizer
        else:
            text = self.splits["train"]
            self.tokenizer = train_tokenizer([text] if a.tokenizer == "char" else text.split("\n\n"), kind=a.tokenizer,
                                             vocab_size=a.vocab_size, lowercase=a.lowercase)
        cfg = TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff or 4 * a.d_model,
                                dropout=a.dropout, activation="gelu", norm_first=True, max_len=a.block_size,
                                positional="learned", bias=a.bias)
        self.spec = {"config": cfg.to_dict(), "vocab_size": self.tokenizer.vocab_size, "pad_id": None,
                     "tie_output": True, "scale_embeddings": False, "arch": getattr(a, "arch", "transformer")}
        self.block_size = a.block_size

    def save_assets(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        atomic_write_text(run_dir / "model.json", json.dumps({**self.spec, "block_size": self.block_size}, indent=2))

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
        spec = json.loads((run_dir / "model.json").read_text())
        self.block_size = spec.pop("block_size")
        self.spec, self._pretrained_model = spec, None

    def _ids(self, split: str) -> Tensor:
        cache = self.__dict__.setdefault("_ids_cache", {})
        if split not in cache:
            cache[split] = encode_stream(self.tokenizer, self.splits[split], self.char_level)
        return cache[split]

    def train_dataset(self) -> TokenWindows:
        self._train = TokenWindows(self._ids("train"), self.block_size)
        return self._train

    def batch_sampler_fn(self):
        n_off, n_tok, bs, blk = len(self._train), self._train.ids.numel(), self.args.batch_size, self.block_size
        return lambda epoch, seed: random_windows(n_off, n_tok, blk, bs, seed, epoch)

    def collate(self, windows: list[Tensor]) -> dict[str, Tensor]:
        """→ {"ids": (B, block_size + 1)}: inputs ids[:, :-1], targets ids[:, 1:]."""
        return {"ids": torch.stack(windows)}

    # -- model ------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        if getattr(self.args, "quick", False):
            torch.set_num_threads(1)  # a --quick model is tiny: one thread is fastest, and immune to a busy CPU
        if getattr(self, "_pretrained_model", None) is not None:
            model, self._pretrained_model = self._pretrained_model, None
            return model
        model = build_lm(self.spec)
        if self.spec.get("arch", "transformer") == "transformer":
            init_weights_(model, getattr(self.args, "init", "torch"), model.cfg.n_layers)
        return model

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        ids = batch["ids"]
        logits = model(ids[:, :-1]).float()  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _nll(self, model: nn.Module, ids: Tensor | TokenStream, max_tokens: int | None,
             batch_size: int = 32) -> tuple[float, int]:
        """Mean next-token NLL over non-overlapping windows of ``block_size`` (each scored from its start);
        windows are sliced batch by batch, so a memory-mapped stream is never read whole."""
        device = next(model.parameters()).device
        n = ids.numel() if not max_tokens else min(ids.numel(), max_tokens + 1)
        blk = self.block_size
        n_full = (n - 1) // blk
        n_windows = n_full + int(n - 1 - n_full * blk > 0)  # the last one may be shorter
        total, count = 0.0, 0
        for s in range(0, n_windows, batch_size):
            group = [ids[k * blk : min(k * blk + blk + 1, n)] for k in range(s, min(s + batch_size, n_windows))]
            for w in ([torch.stack(group)] if all(len(w) == len(group[0]) for w in group) else [g[None] for g in group]):
                w = w.to(device)
                logits = model(w[:, :-1]).float()
                total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
                count += w[:, 1:].numel()
        return total / max(count, 1), count

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        ids = self._ids(split)
        if ids.numel() < 2:
            raise DataError(f"the {split} text has fewer than 2 tokens; nothing to score")
        loss, n = self._nll(model, ids, None if out_dir is not None else self.args.eval_max_tokens)
        metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": n}
        if self.char_level:
            metrics["bits_per_char"] = loss / math.log(2)
        if out_dir is not None:
            texts = self.sample_texts(model, [self.args.prompt], max(self.args.num_samples, 3))
            atomic_write_text(Path(out_dir) / "samples.txt", "\n\n---\n\n".join(texts) + "\n")
        model.train(was_training)
        return metrics

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt) if prompt else []
        if not ids:  # unconditional: start at a document boundary
            nl = self.tokenizer.tok.token_to_id("\n")
            ids = [nl] if nl is not None and not self.args.pretrained else [self.tokenizer.bos_id or 0]
        return ids

    def sample_texts(self, model: nn.Module, prompts: list[str], num_samples: int) -> list[str]:
        """``num_samples`` continuations of each prompt (decoded prompt + new text)."""
        a = self.args
        sampling = sampling_kwargs(a, allowed=("greedy", "sample", "beam"))
        out = []
        for prompt in prompts:
            ids = self._prompt_ids(prompt)
            seqs = generate(model, ids, a.max_new_tokens, num_samples=num_samples, beam_size=a.beam_size,
                            length_penalty=a.length_penalty, **sampling)
            for seq in seqs:
                text = self.tokenizer.decode(seq)
                head = self.tokenizer.decode(ids)
                out.append(prompt + text[len(head):] if prompt and text.startswith(head) else text)
        return out

    def predict(self, model: nn.Module, inputs: list[str]) -> list[Any]:
        prompts = inputs or [self.args.prompt]
        texts = self.sample_texts(model, prompts, self.args.num_samples)
        if self.args.output_format == "json":
            k = self.args.num_samples
            return [{"prompt": prompts[i // k], "text": t} for i, t in enumerate(texts)]
        return texts

    @classmethod
    def load_published(cls, path: Path, options: dict[str, Any]) -> tuple["GenerationTask", nn.Module]:
        """``predict/evaluate generation --run DIR`` on a GPT-2-format directory (no `panformer train` run)."""
        from dataclasses import fields

        names = {f.name for f in fields(GenerationArguments)}
        return from_pretrained(str(path), **{k: v for k, v in options.items() if k in names})

    def describe_data(self) -> str:
        if self.memmap:
            chars = self._cache.meta.get("chars", {})
            sizes = ", ".join(f"{k} {v.numel():,} tokens ({chars.get(k, 0):,} chars)" for k, v in self.splits.items() if v)
            return f"generation on {self.data_name}: {sizes}; token cache {self._cache.folder}"
        sizes = ", ".join(f"{k} {len(v):,} chars" for k, v in self.splits.items() if v)
        return f"generation on {self.data_name}: {sizes}"


def from_pretrained(path: str, **options: Any) -> tuple[GenerationTask, nn.Module]:
    """(task, model) ready for :meth:`GenerationTask.predict` straight from a GPT-2-format directory."""
    from dataclasses import fields
    from types import SimpleNamespace

    from panformer.core.pretrained import load_gpt2, load_tokenizer

    args = {f.name: f.default for f in fields(GenerationArguments)}
    unknown = set(options) - set(args)
    if unknown:
        raise ConfigError(f"unknown generation options {sorted(unknown)}")
    args.update(options, pretrained=path)
    task = GenerationTask(SimpleNamespace(**args))
    task.tokenizer = load_tokenizer(path)
    model = load_gpt2(path).eval()
    task.spec, task.block_size = _spec_of(model), model.cfg.max_len
    return task, model
