"""Multi-head attention with key-padding / causal masks, attention maps and a key/value cache.

One interface, three kernels, chosen per call by :func:`choose_kernel` (``set_attention_impl`` forces one):

* ``"sdpa"``: ``F.scaled_dot_product_attention``. On the CPU its fused (flash) kernel keeps attention
  memory linear in the length, for no mask, a causal mask or key padding; with dropout on the
  probabilities, or a mask that needs a (Tq x Tk) tensor, it falls back to a math path that is not.
* ``"math"``: explicit ``matmul + softmax``: builds (B, nh, Tq, Tk) scores. The fastest kernel for short
  bf16 sequences on the CPU (the fused CPU backward is slow in bf16), and the one that returns weights.
* ``"blocked"``: one block of queries at a time, each with its own small mask (the fused kernel
  without dropout, the explicit one with it), each block recomputed in the backward pass (activation
  checkpointing): never holds more than one block's scores, whatever the masks and dropout. Used where
  neither of the others is both possible and linear in memory.

The thresholds below were measured on this project's 2-core CPU (``bench/long_context.py``,
BENCHMARKS.md "Long sequences").
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .cache import append_kv

__all__ = ["MultiHeadAttention", "build_attention_mask", "set_attention_impl", "get_attention_impl",
           "choose_kernel", "BF16_EXPLICIT_MAX_KEYS", "MAX_SCORE_ELEMENTS", "BLOCK_SCORE_ELEMENTS"]

_IMPLS = ("auto", "sdpa", "math", "blocked")
_IMPL: str = "auto"

# bf16 on the CPU: the explicit kernel up to this many keys, the fused one beyond. Training steps of the
# benchmark model (BENCHMARKS.md "Long sequences"): explicit 1.4x faster at 64-128 keys, 1.1x at 256, as
# fast at 512 with 8 sequences a batch (1.2x with one), the fused kernel 1.5x faster from 1024 on
BF16_EXPLICIT_MAX_KEYS = 512
# "auto" never builds a (B, nh, Tq, Tk) tensor larger than this (256 MiB in fp32 per copy; a backward
# holds several): beyond it only memory-linear kernels run
MAX_SCORE_ELEMENTS = 2**26
# the blocked kernel's query block holds about this many scores (16 MiB in fp32)
BLOCK_SCORE_ELEMENTS = 2**22


def set_attention_impl(impl: Literal["auto", "sdpa", "math", "blocked"]) -> None:
    """Force the attention kernel: "sdpa" (fused), "math" (explicit matmul + softmax), "blocked" (a block
    of queries at a time) or "auto" (:func:`choose_kernel`, the default). Attention maps (``need_weights``)
    always come from "math"."""
    global _IMPL
    if impl not in _IMPLS:
        raise ValueError(f"attention impl must be {'|'.join(_IMPLS)}, got {impl!r}")
    _IMPL = impl


def get_attention_impl() -> str:
    return _IMPL


def _is_bf16(q: Tensor) -> bool:
    if q.dtype == torch.bfloat16:
        return True
    dev = q.device.type
    return torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16


def choose_kernel(
    device: torch.device | str,
    bf16: bool,
    batch: int,
    heads: int,
    q_len: int,
    k_len: int,
    need_weights: bool = False,
    dropout: bool = False,
    dense_mask: bool = False,
) -> str:
    """The kernel ("math" | "sdpa" | "blocked") one attention call runs under the current impl.

    ``bf16``: the inputs are bf16 (or bf16 autocast is on); ``dropout``: dropout on the probabilities;
    ``dense_mask``: the mask needs a (Tq x Tk) tensor (causal with padding that is not a suffix of every
    row, causal with Tq < Tk, or an explicit ``attn_mask``). Under "auto":

    =====================================================  ==========================================
    need_weights                                           math (it returns the probabilities)
    not on the CPU                                         sdpa (flash / memory-efficient kernels)
    CPU, bf16, ``k_len <= BF16_EXPLICIT_MAX_KEYS``, small  math (faster than the fused bf16 backward)
    CPU, small, or no dropout and no dense mask            sdpa
    CPU, large, with dropout or a dense mask               blocked
    =====================================================  ==========================================

    "small": ``batch * heads * q_len * k_len <= MAX_SCORE_ELEMENTS``.
    """
    if need_weights:
        return "math"
    if _IMPL != "auto":
        return _IMPL
    if torch.device(device).type != "cpu":
        return "sdpa"
    small = batch * heads * q_len * k_len <= MAX_SCORE_ELEMENTS
    if bf16 and k_len <= BF16_EXPLICIT_MAX_KEYS and small:
        return "math"
    if small or not (dropout or dense_mask):
        return "sdpa"
    return "blocked"


def build_attention_mask(
    q_len: int,
    k_len: int,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    attn_mask: Tensor | None = None,
    device: torch.device | None = None,
    q_start: int | None = None,
) -> Tensor | None:
    """Combine masks into one boolean mask, True where attention is NOT allowed.

    Args:
        key_padding_mask: bool (B, Tk), True at padded keys.
        causal: query i (at absolute position ``q_start + i``) may see keys <= its own position;
            ``q_start`` defaults to Tk - Tq (the queries are the last positions: cached decoding).
        attn_mask: bool (Tq, Tk) or (B, Tq, Tk), True = masked; or a float additive mask.
    Returns:
        bool (B or 1, 1, Tq, Tk) or None when nothing is masked.
    """
    mask = None
    if causal:
        start = k_len - q_len if q_start is None else q_start
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(start + 1)
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


def _mask_bias(mask: Tensor, q: Tensor, n_heads: int) -> Tensor:
    """bool mask (B or 1, 1 or nh, Tq or 1, Tk), True = masked → additive bias for the scores of
    ``baddbmm``: (Tq or 1, Tk) when the batch shares it, else (B * nh, Tq or 1, Tk). Masked entries get the
    most negative value of the dtype the product runs in (autocast's, where it is on), so they stay finite."""
    device = q.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else q.dtype
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(mask, torch.finfo(compute).min)
    if mask.size(0) == 1 and mask.size(1) == 1:
        return bias[0, 0]
    B, Tq, Tk = q.size(0), mask.size(-2), mask.size(-1)
    return bias.expand(B, n_heads, Tq, Tk).reshape(B * n_heads, Tq, Tk)


def _explicit(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float,
              need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T / sqrt(hs) masked) v: q (B, nh, Tq, hs), k/v (B, nh, Tk, hs), mask bool True = masked
    (broadcastable to (B, nh, Tq, Tk)) → (B, nh, Tq, hs) and, with ``need_weights``, the probabilities.

    Where the keys outnumber the head size, the mask is added as a bias inside the scores' matrix product,
    which scales them too (``baddbmm``): no separate scaling and masking passes over the (B, nh, Tq, Tk)
    scores, forward or backward: with a mask, 0.67-0.74x the time of this function's forward + backward in
    bf16 and 0.80-0.85x in fp32 at B 32, 6 heads, T 128 (bench/attention_mask_bias.py, BENCHMARKS.md)."""
    B, nh, Tq, hs = q.shape
    Tk = k.size(-2)
    scale = 1.0 / math.sqrt(hs)
    # The product's alpha moves the scaling onto the gradients of q and k (B, nh, T, hs) in the backward pass:
    # a gain only where the scores' rows are longer than the head (SASRec's T 50, hs 64: 1.15x slower in bf16).
    # Mixed dtypes (baddbmm takes one) go through matmul's promotion.
    if Tk <= hs or q.dtype != k.dtype:
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, nh, Tq, Tk)
        if mask is not None:
            scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    else:
        bias = q.new_zeros(()) if mask is None else _mask_bias(mask, q, nh)
        scores = torch.baddbmm(bias, q.reshape(B * nh, Tq, hs), k.reshape(B * nh, Tk, hs).transpose(1, 2),
                               beta=0.0 if mask is None else 1.0, alpha=scale).view(B, nh, Tq, Tk)
    probs = torch.softmax(scores, dim=-1)
    weights = probs if need_weights else None
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v), weights


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0, is_causal: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` with our mask convention (bool, True = masked)."""
    if mask is not None:
        mask = ~mask  # SDPA: True = may attend
        # A query whose every key is masked would give NaN; let it attend everywhere instead
        # (its output is padding and ignored), matching the explicit path.
        mask = mask | ~mask.any(-1, keepdim=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


def _block(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float) -> Tensor:
    # without dropout the fused kernel (its flash CPU kernel takes a block's mask); with dropout SDPA would
    # run its math path, which is the explicit computation
    return _explicit(q, k, v, mask, dropout_p)[0] if dropout_p > 0 else _sdpa(q, k, v, mask)


def _blocked(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, causal: bool,
             attn_mask: Tensor | None, dropout_p: float) -> Tensor:
    """Attention over blocks of queries: q (B, nh, Tq, hs), k/v (B, nh, Tk, hs) → (B, nh, Tq, hs).

    Each block's mask is built from the parts (never a (Tq x Tk) mask), a causal block attends only to
    the keys it may see, and under autograd each block is recomputed in the backward pass (its dropout
    mask too: ``checkpoint`` restores the random state), so at most one block's scores and mask are
    alive. A query that may see no key gets a finite, meaningless output (it is padding), as in "math".
    """
    B, nh, Tq, _ = q.shape
    Tk = k.size(2)
    rows = max(1, min(Tq, BLOCK_SCORE_ELEMENTS // max(B * nh * Tk, 1)))
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    outs = []
    for q0 in range(0, Tq, rows):
        q1 = min(q0 + rows, Tq)
        end = Tk - Tq + q1 if causal else Tk  # the last key a causal block's queries may see
        am = attn_mask[..., q0:q1, :end] if attn_mask is not None else None
        kpm = key_padding_mask[:, :end] if key_padding_mask is not None else None
        mask = build_attention_mask(q1 - q0, end, kpm, causal, am, q.device, q_start=Tk - Tq + q0)
        args = (q[:, :, q0:q1], k[:, :, :end], v[:, :, :end], mask, dropout_p)
        outs.append(checkpoint(_block, *args, use_reentrant=False) if grad else _block(*args))
    return torch.cat(outs, dim=2)


def _suffix_padding(key_padding_mask: Tensor) -> bool:
    """True when every row's padding (True) comes after all its real keys (right padding)."""
    return bool((key_padding_mask[:, 1:] >= key_padding_mask[:, :-1]).all())


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

    def _qkv(self, x: Tensor) -> Tensor:
        """x (B, T, d) -> (B, T, 3d): the three projections as one matrix product (fewer, larger GEMMs and
        one weight cast under autocast instead of three; the parameters stay q_proj / k_proj / v_proj)."""
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        b = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        return F.linear(x, w, b)

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
            and values to it (:func:`core.cache.append_kv`: buffers that grow geometrically, so a decoding
            step copies only its own position); cross-attention (``static_kv=True``) computes them from
            ``key``/``value`` once and reuses them afterwards.
        Returns:
            output (B, Tq, d) and, when ``need_weights``, attention probabilities (B, nh, Tq, Tk).
        Outputs at queries that may see no key (padding) are finite and meaningless.
        """
        key = query if key is None else key
        value = key if value is None else value
        if key is query and value is query and not static_kv:  # self-attention: one (d x 3d) projection
            q, k, v = (self._heads(t) for t in self._qkv(query).split(self.d_model, dim=-1))
            if cache is not None:
                k, v = append_kv(cache, k, v)
        else:
            q = self._heads(self.q_proj(query))
            if cache is not None and static_kv and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k = self._heads(self.k_proj(key))
                v = self._heads(self.v_proj(value))
                if cache is not None and static_kv:
                    cache["k"], cache["v"] = k, v
                elif cache is not None:
                    k, v = append_kv(cache, k, v)
        B, Tq, Tk = q.size(0), q.size(2), k.size(2)
        if causal and Tq == 1:
            causal = False  # one new query at the end sees every cached key
        dropout_p = self.dropout if self.training else 0.0
        small = B * self.n_heads * Tq * Tk <= MAX_SCORE_ELEMENTS
        # SDPA's own causal mask (top-left aligned: Tq == Tk) needs no (Tq x Tk) tensor. With right padding
        # it gives every real query what the padded mask gives (its visible keys are all real); used for
        # long inputs only, so that short ones keep their exact outputs at padded positions.
        is_causal = causal and Tq == Tk and attn_mask is None and (
            key_padding_mask is None or (not small and _suffix_padding(key_padding_mask)))
        dense = attn_mask is not None or (causal and not is_causal)
        kernel = choose_kernel(q.device, _is_bf16(q), B, self.n_heads, Tq, Tk, need_weights, dropout_p > 0, dense)

        weights = None
        if kernel == "math":
            mask = build_attention_mask(Tq, Tk, key_padding_mask, causal, attn_mask, q.device)
            out, weights = _explicit(q, k, v, mask, dropout_p, need_weights)
        elif kernel == "blocked":
            out = _blocked(q, k, v, key_padding_mask, causal, attn_mask, dropout_p)
        else:
            mask = None if is_causal else build_attention_mask(Tq, Tk, key_padding_mask, causal, attn_mask, q.device)
            out = _sdpa(q, k, v, mask, dropout_p, is_causal)
        out = out.transpose(1, 2).reshape(query.size(0), Tq, self.d_model)  # (B, Tq, d)
        return self.out_proj(out), weights
