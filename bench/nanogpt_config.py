"""The peer model of the character-LM benchmark: nanoGPT's GPT *configuration*, written out here from its
published description (Karpathy, nanoGPT ``model.py``: pre-LN blocks, learned positions, GELU MLP of 4 x width,
biases, tied token embedding / output, explicit ``q @ k^T`` + causal mask + softmax attention when flash
attention is off, AdamW with weight decay on matrices only). Not nanoGPT's code, and not a product module:
only ``bench/generation_tinyshakespeare.py`` uses it, to time a training step beside panformer's.

    python bench/generation_tinyshakespeare.py --step-time-only    # both step times, in one process
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PeerConfig", "PeerGPT", "peer_optimizer"]


@dataclass
class PeerConfig:
    vocab_size: int = 65
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 192
    dropout: float = 0.0
    bias: bool = True


class _Attention(nn.Module):
    def __init__(self, c: PeerConfig) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.register_buffer("causal", torch.tril(torch.ones(c.block_size, c.block_size)).bool()[None, None])

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, T)
        att = att.masked_fill(~self.causal[:, :, :T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class _Block(nn.Module):
    def __init__(self, c: PeerConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.n_embd, bias=c.bias), nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = _Attention(c)
        self.fc, self.out = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias), nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PeerGPT(nn.Module):
    """ids (B, T) -> logits (B, T, V), and the mean cross-entropy when ``targets`` (B, T) are given."""

    def __init__(self, c: PeerConfig) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: Tensor, targets: Tensor | None = None):
        x = self.wte(ids) + self.wpe(torch.arange(ids.size(1), device=ids.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def peer_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1) -> torch.optim.Optimizer:
    """AdamW, decay on parameters of 2+ dimensions only, betas (0.9, 0.99) as nanoGPT's character config."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.99))
