"""Encoder and decoder layers: attention and position-wise FFN sublayers with residual + LayerNorm."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiHeadAttention
from .config import TransformerConfig

__all__ = ["Dropout", "FeedForward", "EncoderLayer", "DecoderLayer", "on_real_tokens"]

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, applied to each position (section 3.3)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.act(self.linear1(x)))


class _KeepAndScale(torch.autograd.Function):
    """y = x * keep / (1 - p); the mask is saved as bool (1 byte/element)."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x * scale, 0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad * ctx.scale, 0), None, None


def _keep_mask(shape: torch.Size, drop_steps: int, device: torch.device) -> Tensor:
    """Bool keep mask, each element kept with probability 1 - drop_steps / 2^16, from 16-bit integers.

    Every 64-bit draw of the CPU generator yields four uniform 16-bit integers, so this costs a quarter
    of the generator calls of ``torch.rand`` (one 32-bit draw per float): 1.3 ms instead of 3.3-4.1 ms
    for a 1M-element mask with its comparison on this project's 2-core CPU (bench/dropout_speed.py).
    """
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits
    return bits.view(torch.int16)[:n].view(shape) >= drop_steps - 2**15


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster CPU path: the mask comes from 16-bit random integers (2.5-3x cheaper
    than ``torch.rand``, about 5x cheaper than the ``bernoulli_`` of ``F.dropout`` on CPU) and forward and
    backward are one fused select each. ``p`` is rounded to a multiple of 2^-16 there (an error below
    8e-6) and kept elements are scaled by the exact inverse of the rounded keep probability, so
    E[y] = x still holds. Other devices use ``F.dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        drop_steps = round(self.p * 2**16)
        if x.device.type != "cpu" or self.inplace or not 0 < drop_steps < 2**16:
            return F.dropout(x, self.p, True, self.inplace)
        keep = _keep_mask(x.shape, drop_steps, x.device)
        return _KeepAndScale.apply(x, keep, 2**16 / (2**16 - drop_steps))


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def on_real_tokens(fn, x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """``fn`` (position-wise) applied to the real tokens of x (B, T, d) only; zeros at padding.

    Position-wise sublayers need not run on padding: on CPU, where every FLOP costs, packing the real
    tokens (N, d) saves the padded share of the FFN (a quarter of it at lengths uniform in [T/2, T]).
    Outputs at real positions are unchanged. On other devices (the nonzero() sync costs more than it
    saves) and without padding, ``fn(x)``.
    """
    if padding_mask is None or x.device.type != "cpu" or not bool(padding_mask.any()):
        return fn(x)
    real = (~padding_mask).nonzero(as_tuple=True)  # (batch, position) indices, computed once for gather and scatter
    y = fn(x[real])  # (N, d_out)
    out = y.new_zeros(*x.shape[:-1], y.shape[-1])
    out[real] = y
    return out


class EncoderLayer(nn.Module):
    """Self-attention then FFN, each wrapped as ``LN(x + Dropout(sublayer(x)))`` (post-LN, the paper)
    or ``x + Dropout(sublayer(LN(x)))`` (pre-LN)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def _sa(self, x, padding_mask, attn_mask, pos, causal, need_weights):
        qk = _with_pos(x, pos)
        out, w = self.self_attn(qk, qk, x, key_padding_mask=padding_mask, attn_mask=attn_mask,
                                causal=causal, need_weights=need_weights)
        return self.dropout(out), w

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        pos: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, d); padding_mask bool (B, T) True at padding; pos (B or 1, T, d) added to queries
        and keys only (DETR). Returns (B, T, d) and optional attention (B, nh, T, T)."""
        if self.norm_first:
            out, w = self._sa(self.norm1(x), padding_mask, attn_mask, pos, causal, need_weights)
            x = x + out
            x = x + on_real_tokens(lambda h: self.dropout(self.ffn(self.norm2(h))), x, padding_mask)
        else:
            out, w = self._sa(x, padding_mask, attn_mask, pos, causal, need_weights)
            x = self.norm1(x + out)
            x = self.norm2(x + on_real_tokens(lambda h: self.dropout(self.ffn(h)), x, padding_mask))
        return x, w


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder memory (optional), then FFN."""

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = True) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias)
            self.norm2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        else:
            self.cross_attn = None
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
        self.norm3 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        causal: bool = True,
        attn_mask: Tensor | None = None,
        cache: dict | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x (B, T, d); memory (B, S, d). ``cache`` is this layer's dict {"self": {}, "cross": {}}.
        ``pos`` is added to memory keys and ``query_pos`` to queries/keys of x (DETR object queries).
        Returns (B, T, d), self-attention (B, nh, T, T') and cross-attention (B, nh, T, S) maps."""
        self_cache = cache["self"] if cache is not None else None
        cross_cache = cache["cross"] if cache is not None else None
        use_cross = self.cross_attn is not None and memory is not None

        def sa(h):
            qk = _with_pos(h, query_pos)
            out, w = self.self_attn(qk, qk, h, key_padding_mask=padding_mask, causal=causal, attn_mask=attn_mask,
                                    need_weights=need_weights, cache=self_cache)
            return self.dropout(out), w

        def ca(h):
            out, w = self.cross_attn(_with_pos(h, query_pos), _with_pos(memory, pos), memory,
                                     key_padding_mask=memory_padding_mask, need_weights=need_weights,
                                     cache=cross_cache, static_kv=True)
            return self.dropout(out), w

        cw = None
        if self.norm_first:
            out, sw = sa(self.norm1(x))
            x = x + out
            if use_cross:
                out, cw = ca(self.norm2(x))
                x = x + out
            x = x + self.dropout(self.ffn(self.norm3(x)))
        else:
            out, sw = sa(x)
            x = self.norm1(x + out)
            if use_cross:
                out, cw = ca(x)
                x = self.norm2(x + out)
            x = self.norm3(x + self.dropout(self.ffn(x)))
        return x, sw, cw
