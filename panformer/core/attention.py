"""Multi-head attention with key-padding / causal masks, attention maps and a key/value cache.

One interface, two kernels: ``F.scaled_dot_product_attention`` (fused; the default) and an explicit
``matmul + softmax`` path, which is faster for bf16 training on CPU (the fused CPU backward is slow in
bf16) and is the path that returns attention weights. ``set_attention_impl`` overrides the choice.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention", "build_attention_mask", "set_attention_impl", "get_attention_impl"]

_IMPL: str = "auto"


def set_attention_impl(impl: Literal["auto", "sdpa", "math"]) -> None:
    """Force the attention kernel: "sdpa" (fused), "math" (explicit matmul + softmax) or "auto"."""
    global _IMPL
    if impl not in ("auto", "sdpa", "math"):
        raise ValueError(f"attention impl must be auto|sdpa|math, got {impl!r}")
    _IMPL = impl


def get_attention_impl() -> str:
    return _IMPL


def _use_math(q: Tensor, need_weights: bool) -> bool:
    if need_weights or _IMPL == "math":
        return True
    if _IMPL == "sdpa":
        return False
    # Measured on this project's 2-core CPU (bench/core_speed.py, BENCHMARKS.md): under bf16 the fused
    # CPU kernel is slower than explicit matmuls (backward ~1.5x, some inference shapes much more); in
    # fp32 the fused kernel is as fast or faster.
    if q.device.type == "cpu":
        return q.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    return False


def build_attention_mask(
    q_len: int,
    k_len: int,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Combine masks into one boolean mask, True where attention is NOT allowed.

    Args:
        key_padding_mask: bool (B, Tk), True at padded keys.
        causal: query i (at absolute position Tk - Tq + i) may see keys <= its own position.
        attn_mask: bool (Tq, Tk) or (B, Tq, Tk), True = masked; or a float additive mask.
    Returns:
        bool (B or 1, 1, Tq, Tk) or None when nothing is masked.
    """
    mask = None
    if causal:
        # Offset diagonal so that cached decoding (Tq < Tk) keeps the right alignment.
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(k_len - q_len + 1)
        mask = mask[None, None]
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            attn_mask = torch.isneginf(attn_mask)
        am = attn_mask[None, None] if attn_mask.dim() == 2 else attn_mask[:, None]
        mask = am if mask is None else (mask | am)
    if key_padding_mask is not None:
        kpm = key_padding_mask[:, None, None, :]
        mask = kpm if mask is None else (mask | kpm)
    return mask


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``n_heads`` heads (Vaswani et al. 2017, section 3.2.2).

    Separate q/k/v/out projections (so cross-attention and caches are simple and weights from
    ``nn.MultiheadAttention``, BERT or GPT-2 map onto it directly).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
        if bias:
            for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
                nn.init.zeros_(lin.bias)

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
        cache: dict | None = None,
        static_kv: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` (B, Tq, d) to ``key``/``value`` (B, Tk, d); self-attention when omitted.

        cache: a dict owned by the caller. Self-attention (``static_kv=False``) appends this call's keys
            and values to ``cache["k"]``/``cache["v"]``; cross-attention (``static_kv=True``) computes
            them from ``key``/``value`` once and reuses them afterwards.
        Returns:
            output (B, Tq, d) and, when ``need_weights``, attention probabilities (B, nh, Tq, Tk).
        """
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.q_proj(query))
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k = self._heads(self.k_proj(key))
            v = self._heads(self.v_proj(value))
            if cache is not None:
                if not static_kv and "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        Tq, Tk = q.size(2), k.size(2)
        if causal and Tq == 1:
            causal = False  # one new query at the end sees every cached key
        dropout_p = self.dropout if self.training else 0.0

        if _use_math(q, need_weights):
            mask = build_attention_mask(Tq, Tk, key_padding_mask, causal, attn_mask, q.device)
            scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, nh, Tq, Tk)
            if mask is not None:
                scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
            probs = torch.softmax(scores, dim=-1)
            weights = probs if need_weights else None
            if dropout_p > 0:
                probs = F.dropout(probs, dropout_p)
            out = torch.matmul(probs, v)  # (B, nh, Tq, hs)
        else:
            weights = None
            simple_causal = causal and Tq == Tk and key_padding_mask is None and attn_mask is None
            mask = None if simple_causal else build_attention_mask(Tq, Tk, key_padding_mask, causal, attn_mask, q.device)
            if mask is not None:
                mask = ~mask  # SDPA: True = may attend
                # A query whose every key is masked would give NaN; let it attend everywhere instead
                # (its output is padding and ignored), matching the explicit path.
                mask = mask | ~mask.any(-1, keepdim=True)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=simple_causal)
        out = out.transpose(1, 2).reshape(query.size(0), Tq, self.d_model)  # (B, Tq, d)
        return self.out_proj(out), weights
