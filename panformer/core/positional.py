"""Positional encodings: the paper's sinusoids, learned positions and 2-D sines for image grids."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import TransformerConfig

__all__ = [
    "sinusoidal_table",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "sine_positional_2d",
    "build_positional",
]


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...). Returns (max_len, d_model)."""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return pe.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sinusoids to ``x`` of shape (B, T, d); ``offset`` shifts positions (decoding cache)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.size(1)
        if offset + T > self.pe.size(0):
            raise ValueError(f"sequence of {offset + T} positions exceeds max_len={self.pe.size(0)}")
        return x + self.pe[offset : offset + T].to(x.dtype)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned embedding per position (BERT, GPT-2, ViT)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.size(1)
        if offset + T > self.weight.size(0):
            raise ValueError(f"sequence of {offset + T} positions exceeds max_len={self.weight.size(0)}")
        return x + self.weight[offset : offset + T].to(x.dtype)


def sine_positional_2d(
    mask: Tensor, d_model: int, temperature: float = 10000.0, normalize: bool = True, scale: float = 2 * math.pi
) -> Tensor:
    """DETR's 2-D sine encoding for a feature map.

    Args:
        mask: bool (B, H, W), True at padded pixels (all False for unpadded images).
        d_model: channels of the encoding; half encode y, half encode x.
    Returns:
        (B, H, W, d_model) float positional encoding.
    """
    if d_model % 4:
        raise ValueError(f"2-D sine encoding needs d_model divisible by 4, got {d_model}")
    npf = d_model // 2
    not_mask = (~mask).float()
    y_embed = not_mask.cumsum(1)
    x_embed = not_mask.cumsum(2)
    if normalize:
        eps = 1e-6
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(npf, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    pos_x = x_embed[..., None] / dim_t  # (B, H, W, npf)
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3)


def build_positional(cfg: TransformerConfig) -> nn.Module | None:
    """The positional module a stack adds to its input, or None for ``positional="none"``."""
    if cfg.positional == "sinusoidal":
        return SinusoidalPositionalEncoding(cfg.d_model, cfg.max_len)
    if cfg.positional == "learned":
        return LearnedPositionalEmbedding(cfg.d_model, cfg.max_len)
    return None
