"""Sentiment (text) classification: core Encoder + pooled classification head.

Data: built-in movie-review snippets with human ratings (:func:`tasks.builtin_data.movie_review_snippets`),
SST-2 TSV, any CSV / TSV / JSON / JSONL / Parquet table or Hugging Face dataset with a text and a
label column. Labels may be strings or integers, two or more classes.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Encoder, RNNConfig, RNNEncoder, TokenEmbedding, TransformerConfig, pool
from panformer.core.data import assemble_splits, bucket_batches, load_table, require_columns
from panformer.core.errors import ConfigError, DataError
from panformer.core.metrics import classification_metrics, confusion_matrix_png
from panformer.core.pretrained import BertPooler, load_tokenizer
from panformer.core.token_cache import TokenCacheArguments, cache_root
from panformer.core.tokenizer import TextTokenizer, train_tokenizer

from . import register
from .base import ListDataset, Task, split_flag
from .builtin_data import movie_review_snippets
from .sentiment_cache import SentimentCache, label_key

__all__ = ["SentimentTask", "SentimentArguments", "TextClassifier", "TextClassifierEnsemble"]

TEXT_COLUMNS = ("text", "sentence", "content", "review", "document")
ARCHS = ("transformer", "lstm", "gru")


@dataclass
class SentimentArguments(TokenCacheArguments):
    text_column: str | None = field(default=None, metadata={"help": f"text column (default: first of {', '.join(TEXT_COLUMNS)})"})
    label_column: str = field(default="label", metadata={"help": "label column (strings or integers)"})
    tokenizer: str = field(default="wordpiece", metadata={"help": "wordpiece | bpe | word | char, trained on the training split"})
    vocab_size: int = field(default=16000, metadata={"help": "tokenizer vocabulary size"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase text before tokenizing"})
    max_len: int = field(default=128, metadata={"help": "truncate texts to this many tokens"})
    d_model: int = field(default=256, metadata={"help": "model width"})
    n_heads: int = field(default=4, metadata={"help": "attention heads"})
    n_layers: int = field(default=4, metadata={"help": "encoder layers"})
    d_ff: int = field(default=1024, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on sublayer outputs and embeddings"})
    norm_first: bool = field(default=True, metadata={"help": "pre-LN (true) or post-LN as in the paper (false)"})
    positional: str = field(default="learned", metadata={"help": "sinusoidal | learned | none"})
    pooling: str = field(default="mean", metadata={
        "help": "mean | max | cls pooling of the encoder output, or pooler: BERT's tanh(dense([CLS])) (exportable to "
                "transformers, see `panformer export`)"})
    arch: str = field(default="transformer", metadata={
        "help": "encoder: transformer | lstm | gru (baselines: bidirectional, d_model wide, n_layers deep, same head)"})
    baseline: bool = field(default=False, metadata={"help": "also fit TF-IDF + logistic regression on the same split"})
    pretrained: str | None = field(default=None, metadata={
        "help": "Hugging Face-format BERT directory or Hub id (org/name) to fine-tune (its tokenizer is used)"})
    token_dropout: float = field(default=0.0, metadata={
        "help": "training only: probability of replacing each token by <unk> (word dropout, a strong regulariser)"})
    mlm_pretrain_steps: int = field(default=0, metadata={
        "help": "self-pretraining: masked-token steps on the training texts before fine-tuning (no external data; 0: off)"})
    mlm_pretrain_lr: float | None = field(default=None, metadata={"help": "peak lr of self-pretraining (default: --lr)"})


class TextClassifier(nn.Module):
    """ids (B, T) → logits (B, C): token embedding, core Encoder (or a recurrent encoder), pooling, linear head.

    ``pooling="pooler"``: BERT's pooler ``tanh(dense(h[:, 0]))`` (``pooler``, default a fresh one) instead of
    :func:`core.pool`."""

    def __init__(self, cfg: TransformerConfig, vocab_size: int, num_classes: int, pad_id: int = 0,
                 pooling: str = "mean", encoder: nn.Module | None = None, pooler: nn.Module | None = None) -> None:
        super().__init__()
        self.pad_id, self.pooling = pad_id, pooling
        recurrent = isinstance(encoder, RNNEncoder)
        self.embed = TokenEmbedding(vocab_size, cfg.d_model, pad_id) if encoder is None or recurrent else None
        self.encoder = encoder if encoder is not None else Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.d_model, num_classes)
        self.pooler = None if pooling != "pooler" else pooler if pooler is not None else BertPooler(cfg.d_model)

    def forward(self, ids: Tensor, output_attentions: bool = False):
        mask = ids.eq(self.pad_id)  # (B, T) True at padding
        if self.embed is None:  # a pretrained encoder embeds its own ids
            h = self.encoder(ids, ~mask)
            maps = None
        elif isinstance(self.encoder, RNNEncoder):  # an LSTM / GRU baseline has no attention maps
            h, maps = self.encoder(self.embed(ids), mask), None
        else:
            out = self.encoder(self.embed(ids), mask, output_attentions=output_attentions)
            h, maps = out if output_attentions else (out, None)
        pooled = self.pooler(h) if self.pooler is not None else pool(h, mask, self.pooling)
        logits = self.head(self.dropout(pooled))
        return (logits, maps) if output_attentions else logits


class TextClassifierEnsemble(nn.Module):
    """Several sentiment runs as one classifier (``--run A --run B``): the mean of the members'
    log-probabilities. Each member reads the text with its own run's tokenizer."""

    def __init__(self, members: list[tuple["SentimentTask", nn.Module]]) -> None:
        super().__init__()
        self.tasks = [t for t, _ in members]
        self.members = nn.ModuleList([m for _, m in members])

    def log_probs(self, texts: list[str]) -> Tensor:
        """(N, C) mean over members of log_softmax(logits)."""
        return torch.stack([t.text_logits(m, texts).log_softmax(-1)
                            for t, m in zip(self.tasks, self.members)]).mean(0)


@register
class SentimentTask(Task):
    name = "sentiment"
    summary = "text classification (sentiment): core Encoder + pooled head; accuracy / precision / recall / F1"
    Arguments = SentimentArguments
    main_metric = "accuracy"
    report_metrics = ("accuracy", "f1")  # shown by `panformer compare`
    defaults = dict(epochs=10, batch_size=64, lr=5e-4, schedule="cosine", warmup_steps=200, weight_decay=0.05,
                    metric_for_best="accuracy", label_smoothing=0.0)
    quick = dict(max_time_minutes=0.5, schedule_clock="time", max_steps=100_000, d_model=64, n_heads=4, n_layers=1,
                 d_ff=128, vocab_size=8000, dropout=0.2, batch_size=32, lr=2e-3, warmup_steps=30,
                 eval_every=300)  # 900 steps: 76.7 % (2,000 word pieces: 73.4 %)
    predict_help = "TEXT... sentences to classify"
    baselines = {"lstm": {"arch": "lstm"}, "gru": {"arch": "gru"}}

    # -- data -------------------------------------------------------------------------------------
    def _read(self, source: str, what: str) -> tuple[list[str], list[Any]]:
        a = self.args
        ds = load_table(source, what)
        text_col = a.text_column or next((c for c in TEXT_COLUMNS if c in ds.column_names), TEXT_COLUMNS[0])
        require_columns(ds, {text_col: "--text-column", a.label_column: "--label-column"}, source, what)
        texts, labels = ds[text_col], ds[a.label_column]
        for i, (t, y) in enumerate(zip(texts, labels)):
            self._check_row(what, source, i + 1, t, y, text_col, a.label_column)
        return list(texts), [y.item() if hasattr(y, "item") else y for y in labels]

    @staticmethod
    def _check_row(what: str, source: str, row: int, t: Any, y: Any, text_col: str, label_col: str) -> None:
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"{what} {source}: row {row}: column {text_col!r} is empty or not text ({t!r})")
        if y is None or (isinstance(y, float) and y != y):
            raise DataError(f"{what} {source}: row {row}: column {label_col!r} has no label")

    @property
    def memmap(self) -> bool:
        """Train from a memory-mapped token cache (``--cache-dir`` / ``--streaming``) instead of in memory."""
        return cache_root(self.args) is not None

    def load_data(self) -> None:
        a = self.args
        self.data_name = "movie-review snippets (Hutto & Gilbert 2014)" if a.data is None else Path(a.data).name
        if self.memmap:
            if getattr(a, "baseline", False) or a.mlm_pretrain_steps:
                raise ConfigError("--baseline and --mlm-pretrain-steps read every training text into memory; "
                                  "not with --cache-dir / --streaming")
            self._table = SentimentCache(a, TEXT_COLUMNS, movie_review_snippets, self.read_split, self._check_row)
            if self.__dict__.get("tokenizer") is not None:  # evaluate: the run's tokenizer and labels are loaded
                self._use_cache(self._table.open(self.tokenizer))
            return
        if a.data is None:
            texts, labels = movie_review_snippets()
        else:
            texts, labels = self._read(a.data, "--data")
        self.splits = assemble_splits(
            len(texts), lambda ids: ([texts[i] for i in ids], [labels[i] for i in ids]),
            valid=self.read_split(a.valid_data, "valid"), test=self.read_split(a.test_data, "test"),
            valid_fraction=a.valid_fraction, test_fraction=a.test_fraction, seed=a.seed,
            max_examples=a.max_examples, size=lambda part: len(part[0]))

    def read_split(self, source: str | None, split: str) -> tuple[list[str], list[Any]] | None:
        return self._read(source, split_flag(split)) if source else None

    def fit_assets(self) -> None:
        a = self.args
        if self.memmap:  # the tokenizer is trained (or found) with the cache, the labels read from it
            cache = self._table.open(load_tokenizer(a.pretrained) if a.pretrained else None)
            self.tokenizer, self.labels = cache.tokenizer, self._table.train_labels(cache)
            self._single_label_check()
            self._use_cache(cache)
        else:
            train_texts, train_labels = self.splits["train"]
            self.labels = sorted(set(train_labels), key=label_key)
            self._single_label_check()
            if a.pretrained:
                self.tokenizer = load_tokenizer(a.pretrained)
            else:
                self.tokenizer = train_tokenizer(train_texts, a.tokenizer, a.vocab_size, lowercase=a.lowercase)
        self._check_labels()

    def _single_label_check(self) -> None:
        if len(self.labels) < 2:
            raise DataError(f"training data has a single label ({self.labels[0]!r}); need at least two classes")

    def _use_cache(self, cache) -> None:
        add_bos, add_eos, max_len = self._wrapping()
        tok = self.tokenizer
        self.splits, self._train_lengths = self._table.splits(
            cache, self.labels, lambda ids: tok.wrap(ids, add_bos, add_eos, max_len) or [tok.unk_id],
            lambda n: np.maximum(tok.wrapped_lengths(n, add_bos, add_eos, max_len), 1))

    def check_assets(self, splits: Sequence[str] | None = None) -> None:
        self._check_labels(list(self.splits) if splits is None else splits)

    def _check_labels(self, splits: Sequence[str] = ("valid", "test")) -> None:
        index = {v: i for i, v in enumerate(self.labels)}
        for split in splits:
            if self.splits.get(split) is None:
                continue
            for i, y in enumerate(self.splits[split][1]):
                if y not in index:
                    raise DataError(f"{split} data, row {i + 1}: unknown label {y!r}; training labels are {self.labels}")

    def save_assets(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / "tokenizer.json")
        (run_dir / "labels.json").write_text(json.dumps(self.labels))

    def load_assets(self, run_dir: Path) -> None:
        self.tokenizer = TextTokenizer.load(run_dir / "tokenizer.json")
        self.labels = json.loads((run_dir / "labels.json").read_text())

    def _wrapping(self) -> tuple[bool, bool, int]:
        """(add BOS, add EOS, max length) of the model's input ids."""
        a = self.args
        return a.pooling in ("cls", "pooler") or bool(a.pretrained), bool(a.pretrained), a.max_len

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids as the model reads them (an empty text becomes ``<unk>``)."""
        add_bos, add_eos, max_len = self._wrapping()
        ids = self.tokenizer.encode_batch(texts, add_bos=add_bos, add_eos=add_eos, max_len=max_len)
        return [x if x else [self.tokenizer.unk_id] for x in ids]

    def _label_ids(self, labels: list[Any]) -> list[int]:
        index = {v: i for i, v in enumerate(self.labels)}
        return [index[y] for y in labels]

    def _encode(self, split: str) -> list[tuple[list[int], int]]:
        texts, labels = self.splits[split]
        return list(zip(self._encode_texts(texts), self._label_ids(labels)))

    def train_dataset(self):
        if self.memmap:
            return self.splits["train"]
        self._train = self._encode("train")
        self._train_lengths = [len(x) for x, _ in self._train]
        return ListDataset(self._train)

    def batch_sampler_fn(self):
        lengths = self._train_lengths
        bs = self.args.batch_size
        return lambda epoch, seed: bucket_batches(lengths, bs, seed, epoch)

    def collate(self, examples: list[tuple[list[int], int]]) -> dict[str, Tensor]:
        T = max(len(x) for x, _ in examples)
        ids = torch.full((len(examples), T), self.tokenizer.pad_id, dtype=torch.long)
        for i, (x, _) in enumerate(examples):
            ids[i, : len(x)] = torch.tensor(x)
        return {"ids": ids, "labels": torch.tensor([y for _, y in examples])}

    # -- model ------------------------------------------------------------------------------------
    def model_config(self) -> TransformerConfig:
        a = self.args
        return TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff, dropout=a.dropout,
                                 activation="gelu", norm_first=a.norm_first, max_len=a.max_len + 2, positional=a.positional)

    def build_model(self) -> nn.Module:
        arch = getattr(self.args, "arch", "transformer")
        if not 0.0 <= self.args.token_dropout < 1.0:
            raise ConfigError(f"--token-dropout must be in [0, 1), got {self.args.token_dropout}")
        if arch not in ARCHS:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        if arch != "transformer":
            if self.args.pretrained:
                raise ConfigError(f"--arch {arch} cannot load --pretrained BERT weights; drop one of them")
            a = self.args
            rnn = RNNEncoder(RNNConfig(d_model=a.d_model, n_layers=a.n_layers, cell=arch, bidirectional=True,
                                       dropout=a.dropout))
            return TextClassifier(self.model_config(), self.tokenizer.vocab_size, len(self.labels), self.tokenizer.pad_id,
                                  a.pooling, encoder=rnn)
        if self.args.pretrained:
            from panformer.core.pretrained import load_bert, load_bert_pooler

            bert = load_bert(self.args.pretrained)
            cfg = TransformerConfig(d_model=bert.config.d_model, n_heads=bert.config.n_heads, n_layers=1,
                                    d_ff=bert.config.d_ff, dropout=self.args.dropout)
            pooler = load_bert_pooler(self.args.pretrained, cfg.d_model) if self.args.pooling == "pooler" else None
            return TextClassifier(cfg, self.tokenizer.vocab_size, len(self.labels), self.tokenizer.pad_id,
                                  self.args.pooling, encoder=bert, pooler=pooler)
        return TextClassifier(self.model_config(), self.tokenizer.vocab_size, len(self.labels), self.tokenizer.pad_id,
                              self.args.pooling)

    def _special_ids(self) -> list[int]:
        """Ids that masking and word dropout leave alone: pad, unk, bos, eos, mask (those the tokenizer has)."""
        tok = self.tokenizer
        return [i for i in (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) if i is not None]

    def load_pretrained(self, model: nn.Module) -> None:
        """``--mlm-pretrain-steps N``: masked-token self-pretraining of the embedding + encoder (core.mlm)."""
        steps = self.args.mlm_pretrain_steps
        if not steps or self.args.resume:  # a resumed run restores the fine-tuning checkpoint instead
            return
        if not isinstance(model.encoder, Encoder) or model.embed is None:
            raise ConfigError("--mlm-pretrain-steps needs the Transformer encoder trained from scratch "
                              "(not --arch lstm/gru, not --pretrained)")
        if self.tokenizer.mask_id is None:
            raise ConfigError("--mlm-pretrain-steps: the tokenizer has no mask token")
        from panformer.core.mlm import masked_lm_pretrain
        from panformer.core.trainer import TrainingArguments

        targs = TrainingArguments(**{f.name: getattr(self.args, f.name) for f in fields(TrainingArguments)})
        targs = replace(targs, max_steps=steps, lr=self.args.mlm_pretrain_lr or targs.lr, schedule="cosine",
                        warmup_steps=min(targs.warmup_steps or steps // 10, steps // 2), max_time_minutes=None)
        texts = sorted(set(self.splits["train"][0]))
        seqs = self.tokenizer.encode_batch(texts, add_bos=self.args.pooling in ("cls", "pooler"), max_len=self.args.max_len)
        tok = self.tokenizer
        special = self._special_ids()
        s = masked_lm_pretrain(model.embed, model.encoder, seqs, pad_id=tok.pad_id, mask_id=tok.mask_id,
                               special_ids=special, args=targs)
        print(f"[panformer] self-pretraining: {s['steps']} masked-token steps on {len(seqs):,} training texts, "
              f"loss {s['first_loss']:.3f} -> {s['last_loss']:.3f} in {s['train_time_s']:.0f} s", file=sys.stderr, flush=True)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        ids = batch["ids"]
        p = self.args.token_dropout
        if p > 0 and model.training:  # word dropout (Iyyer et al. 2015): hide whole tokens behind <unk>
            special = torch.isin(ids, torch.tensor(self._special_ids(), device=ids.device))
            hide = (torch.rand(ids.shape, device=ids.device) < p) & ~special
            ids = ids.masked_fill(hide, self.tokenizer.unk_id)
        return F.cross_entropy(model(ids).float(), batch["labels"], label_smoothing=self.args.label_smoothing)

    # -- results ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, model: nn.Module, examples: list[tuple[list[int], int]], batch_size: int = 128) -> Tensor:
        device = next(model.parameters()).device
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
        out = torch.empty(len(examples), len(self.labels))
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            batch = self.collate([examples[i] for i in chunk])
            out[chunk] = model(batch["ids"].to(device)).float().cpu()
        return out

    def text_logits(self, model: nn.Module, texts: list[str]) -> Tensor:
        """(N, C) logits for raw texts (an ensemble's mean log-probabilities), in eval mode."""
        was_training = model.training
        model.eval()
        try:
            if isinstance(model, TextClassifierEnsemble):
                return model.log_probs(texts)
            return self._logits(model, [(x, 0) for x in self._encode_texts(texts)])
        finally:
            model.train(was_training)

    def ensemble(self, model: nn.Module, others: list[tuple["SentimentTask", nn.Module]],
                 runs: list[str]) -> nn.Module:
        """Several runs with the same labels → one :class:`TextClassifierEnsemble` (``--run A --run B``)."""
        for (task, _), run in zip(others, runs[1:]):
            if task.labels != self.labels:
                raise ConfigError(f"--run {run}: its labels {task.labels} differ from {runs[0]}'s {self.labels}; an "
                                  f"ensemble needs runs trained on the same labels")
        return TextClassifierEnsemble([(self, model), *others])

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        texts, labels = self.splits[split]
        logits = self.text_logits(model, texts)
        y = torch.tensor(self._label_ids(labels))
        pred = logits.argmax(-1)
        metrics = classification_metrics(y.numpy(), pred.numpy(), labels=list(range(len(self.labels))))
        metrics["loss"] = float(F.cross_entropy(logits, y))
        if out_dir is not None:
            confusion_matrix_png(y.numpy(), pred.numpy(), [str(v) for v in self.labels], Path(out_dir) / "confusion_matrix.png",
                                 title=f"sentiment: {split}")
        return metrics

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        probs = self.text_logits(model, inputs).softmax(-1)
        return [{"text": t, "label": self.labels[int(p.argmax())], "probability": round(float(p.max()), 4)}
                for t, p in zip(inputs, probs)]

    def baseline(self, out_dir: Path | None = None) -> dict[str, Any]:
        """TF-IDF (word 1-2 grams) + logistic regression, fitted on the same training split."""
        import time

        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        t0 = time.time()
        split = "test" if self.splits.get("test") is not None else "valid"
        (xtr, ytr), (xte, yte) = self.splits["train"], self.splits[split]
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)
        clf = LogisticRegression(C=4.0, max_iter=2000)
        clf.fit(vec.fit_transform(xtr), [str(v) for v in ytr])
        pred = clf.predict(vec.transform(xte))
        m = classification_metrics([str(v) for v in yte], pred, labels=[str(v) for v in self.labels])
        m.update(model="tfidf-logreg", split=split, train_time_s=round(time.time() - t0, 2))
        return m

    def describe_data(self) -> str:
        sizes = ", ".join(f"{k} {len(v if k == 'train' and self.memmap else v[0]):,}" for k, v in self.splits.items()
                          if v is not None)
        return f"sentiment on {self.data_name}: {sizes}; labels {self.labels}"
