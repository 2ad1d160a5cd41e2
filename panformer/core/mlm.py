"""Masked-token pretraining of an embedding + encoder on the task's own training inputs.

Self-pretraining ("Never Train from Scratch", Amos et al., ICLR 2024): before a from-scratch encoder
is trained on labels, train it to reconstruct BERT-masked tokens (80/10/10, :func:`core.masks.mask_tokens`)
of the same training inputs. No external data or weights are involved; attention learns local and
syntactic patterns that label supervision alone finds slowly, which helps most on small data sets.

    stats = masked_lm_pretrain(model.embed, model.encoder, token_lists, pad_id=0, mask_id=4,
                               special_ids=[0, 1, 2, 3, 4], args=TrainingArguments(max_steps=2000))
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError
from .masks import IGNORE_INDEX, mask_tokens
from .trainer import Trainer, TrainingArguments

__all__ = ["MaskedLMHead", "MaskedLM", "masked_lm_pretrain"]


class MaskedLMHead(nn.Module):
    """h (B, T, d) → logits (B, T, V): dense + GELU + LayerNorm, then the token embedding's transpose (BERT)."""

    def __init__(self, embedding: nn.Embedding, eps: float = 1e-5) -> None:
        super().__init__()
        vocab_size, d = embedding.weight.shape
        self.transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=eps))
        self.embedding = embedding  # tied: no extra (V, d) matrix
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(self.transform(h), self.embedding.weight, self.bias)  # (B, T, V)


class MaskedLM(nn.Module):
    """ids (B, T) → logits (B, T, V) through ``embed``, ``encoder(x, padding_mask)`` and a tied MLM head.

    ``embed`` and ``encoder`` are the very modules of the downstream model: pretraining updates them in place.
    """

    def __init__(self, embed: nn.Embedding, encoder: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.embed, self.encoder, self.pad_id = embed, encoder, pad_id
        self.head = MaskedLMHead(embed)

    def forward(self, ids: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits (B, T, V); with ``labels`` (B, T) only at the selected positions: (N, V), N = #labels != -100."""
        padding_mask = ids.eq(self.pad_id)  # (B, T) True at padding
        h = self.encoder(self.embed(ids), padding_mask)  # (B, T, d)
        if labels is not None:
            h = h[labels.ne(IGNORE_INDEX)]  # (N, d): the vocabulary projection only where a token is predicted
        return self.head(h)


class _Collator:
    def __init__(self, pad_id: int, mask_id: int, vocab_size: int, special: Tensor, prob: float) -> None:
        self.pad_id, self.mask_id, self.vocab_size, self.special, self.prob = pad_id, mask_id, vocab_size, special, prob

    def __call__(self, seqs: list[list[int]]) -> dict[str, Tensor]:
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        maskable = ~torch.isin(ids, self.special)
        # random replacements are drawn from ordinary tokens only (ids above the highest special id)
        inputs, labels = mask_tokens(ids, self.mask_id, self.vocab_size, self.prob, maskable,
                                     random_low=int(self.special.max()) + 1)
        if not labels.ne(IGNORE_INDEX).any() and maskable.any():  # never an empty loss: mask one token
            b, t = maskable.nonzero()[0].tolist()
            labels[b, t], inputs[b, t] = ids[b, t], self.mask_id
        return {"ids": inputs, "labels": labels}


def _mlm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    labels = batch["labels"]
    logits = model(batch["ids"], labels)  # (N, V) at the masked positions
    return F.cross_entropy(logits.float(), labels[labels.ne(IGNORE_INDEX)])


def masked_lm_pretrain(embed: nn.Embedding, encoder: nn.Module, sequences: Sequence[list[int]], *, pad_id: int,
                       mask_id: int, special_ids: Sequence[int], args: TrainingArguments, prob: float = 0.15,
                       run_dir: Any = None) -> dict[str, Any]:
    """Train ``embed`` + ``encoder`` in place to predict masked tokens of ``sequences`` (token-id lists).

    ``args`` are ordinary :class:`TrainingArguments` (steps, batch, lr, schedule, precision, seed...);
    evaluation, early stopping and checkpoint selection are off. Returns the Trainer's summary plus
    ``first_loss`` and ``last_loss`` (mean masked-token cross-entropy of the first and last log windows).
    """
    seqs = [list(s) for s in sequences if len(s) > 0]
    if not seqs:
        raise ConfigError("masked-LM pretraining needs at least one non-empty sequence")
    vocab_size = embed.weight.shape[0]
    special = torch.tensor(sorted(set(special_ids) | {pad_id, mask_id}), dtype=torch.long)
    model = MaskedLM(embed, encoder, pad_id)
    losses: list[float] = []

    class _Record:  # keeps the logged training losses to report progress
        def on_step_end(self, trainer: Trainer, logs: dict[str, float] | None) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    log_every = max(1, min(args.log_every, (args.max_steps or args.log_every) // 10))  # >= 10 loss records
    targs = replace(args, log_every=log_every, metric_for_best="loss", early_stopping_patience=None, eval_every=None, resume=False)
    trainer = Trainer(model, targs, seqs, _Collator(pad_id, mask_id, vocab_size, special, prob), _mlm_loss,
                      run_dir=run_dir, callbacks=[_Record()])
    summary = trainer.train()
    summary.update(first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None)
    return summary
