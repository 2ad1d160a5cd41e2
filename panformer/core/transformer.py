"""The core Transformer: encoder stack, decoder stack and the encoder-decoder that combines them.

All three work on float inputs (B, T, d_model): the caller embeds tokens, patches, frames or items;
the stacks add positional encodings (``cfg.positional``), apply dropout to the sum, and run the layers.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .cache import KVCache
from .config import TransformerConfig
from .layers import DecoderLayer, Dropout, EncoderLayer
from .positional import build_positional

__all__ = ["Encoder", "Decoder", "EncoderDecoder"]


def _stack(layer: nn.Module, n: int, shared: bool) -> nn.ModuleList:
    if shared:  # one set of weights applied n times (ALBERT-style cross-layer sharing)
        return nn.ModuleList([layer] * n)
    return nn.ModuleList([layer] + [copy.deepcopy(layer) for _ in range(n - 1)])


class Encoder(nn.Module):
    """N encoder layers over ``x`` (B, T, d_model); ``padding_mask`` bool (B, T), True at padding."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos = build_positional(cfg)
        self.dropout = Dropout(cfg.dropout)
        self.layers = _stack(EncoderLayer(cfg), cfg.n_layers, cfg.share_layers)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.use_final_norm else None

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        pos: Tensor | None = None,
        causal: bool = False,
        output_attentions: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Returns (B, T, d_model); with ``output_attentions`` also a list of (B, nh, T, T) per layer.

        ``pos`` (B or 1, T, d) is added to queries and keys in every layer (DETR); ``causal`` makes the
        stack unidirectional (SASRec); ``attn_mask`` bool (T, T) or (B, T, T), True = masked.
        """
        if self.pos is not None:
            x = self.pos(x)
        x = self.dropout(x)
        maps = []
        for layer in self.layers:
            x, w = layer(x, padding_mask, attn_mask, pos, causal, output_attentions)
            if output_attentions:
                maps.append(w)
        if self.norm is not None:
            x = self.norm(x)
        return (x, maps) if output_attentions else x


class Decoder(nn.Module):
    """N decoder layers over ``x`` (B, T, d_model); with ``memory`` (B, S, d_model) they cross-attend.

    ``cross_attention=False`` builds a decoder-only stack (GPT) without cross-attention weights.
    With a :class:`KVCache`, ``x`` holds only the new positions and earlier ones come from the cache.
    """

    def __init__(self, cfg: TransformerConfig, cross_attention: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos = build_positional(cfg)
        self.dropout = Dropout(cfg.dropout)
        n = cfg.num_decoder_layers
        self.layers = _stack(DecoderLayer(cfg, cross_attention), n, cfg.share_layers)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.use_final_norm else None

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers))

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        causal: bool = True,
        cache: KVCache | None = None,
        attn_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
        output_attentions: bool = False,
        return_intermediate: bool = False,
    ) -> Tensor | tuple:
        """Returns (B, T, d_model).

        output_attentions: also return (self_maps, cross_maps), lists of (B, nh, T, T') and (B, nh, T, S).
        return_intermediate: return (n_layers, B, T, d) with every layer's (normed) output (DETR aux loss).
        padding_mask bool (B, T) marks padded positions of x (with a cache: of all positions so far).
        """
        offset = cache.offset if cache is not None else 0
        if self.pos is not None:
            x = self.pos(x, offset)
        x = self.dropout(x)
        self_maps, cross_maps, inter = [], [], []
        for i, layer in enumerate(self.layers):
            x, sw, cw = layer(x, memory, memory_padding_mask, padding_mask, causal, attn_mask,
                              cache.layers[i] if cache is not None else None, pos, query_pos, output_attentions)
            if output_attentions:
                self_maps.append(sw)
                cross_maps.append(cw)
            if return_intermediate:
                inter.append(self.norm(x) if self.norm is not None else x)
        if cache is not None:
            cache.offset += x.size(1)
        if self.norm is not None:
            x = self.norm(x)
        if return_intermediate:
            x = torch.stack(inter)
        return (x, self_maps, cross_maps) if output_attentions else x


class EncoderDecoder(nn.Module):
    """Encoder + decoder (the paper's Figure 1) on float inputs."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cross_attention=True)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """src (B, S, d), tgt (B, T, d) → (B, T, d); the decoder is causal over tgt."""
        memory = self.encoder(src, src_padding_mask)
        return self.decoder(tgt, memory, memory_padding_mask=src_padding_mask, padding_mask=tgt_padding_mask)
