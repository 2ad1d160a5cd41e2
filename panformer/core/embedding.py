"""Token embeddings scaled by sqrt(d_model) and the (optionally tied) output projection."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TokenEmbedding", "OutputProjection"]


class TokenEmbedding(nn.Embedding):
    """ids (B, T) → (B, T, d) multiplied by sqrt(d) (section 3.4) when ``scale``."""

    def __init__(self, vocab_size: int, d_model: int, padding_idx: int | None = None, scale: bool = True) -> None:
        super().__init__(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale else 1.0
        nn.init.normal_(self.weight, mean=0.0, std=d_model**-0.5 if scale else 0.02)
        if padding_idx is not None:
            self.weight.data[padding_idx].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        out = super().forward(ids)
        return out * self.scale if self.scale != 1.0 else out


class OutputProjection(nn.Module):
    """(B, T, d) → logits (B, T, V). ``tied_to`` shares the weight of an embedding (no extra params)."""

    def __init__(self, d_model: int, vocab_size: int, tied_to: nn.Embedding | None = None, bias: bool = False) -> None:
        super().__init__()
        if tied_to is not None:
            self.weight = tied_to.weight
        else:
            self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
            nn.init.normal_(self.weight, std=d_model**-0.5)
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

