"""The Vision Transformer (Dosovitskiy et al. 2021) on the core pre-LN :class:`core.Encoder`.

Images (B, C, H, W) → convolutional patch embedding (B, N, d) → prepend a learned [CLS] token →
add learned position embeddings (bicubically interpolated when the patch grid differs from the
one they were trained for) → core Encoder → final LayerNorm → [CLS] → (pre-logits) → head → logits.
Parameter names follow timm (``cls_token``, ``pos_embed``) so AdamW spares them from weight decay.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Encoder, TransformerConfig
from panformer.core.errors import ConfigError

__all__ = ["ViTConfig", "PatchEmbedding", "VisionTransformer", "interpolate_pos_embed", "attention_rollout"]


@dataclass
class ViTConfig:
    """Shape of a :class:`VisionTransformer`. The defaults are ViT-B/16 at 224 px (86,567,656 parameters)."""

    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    num_classes: int = 1000
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-6
    representation_size: int | None = None  # a tanh pre-logits layer (ViT paper, ImageNet-21k heads)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {self.num_classes}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def encoder_config(self) -> TransformerConfig:
        """The core Transformer's configuration: pre-LN, GELU, final LayerNorm, no positions of its own."""
        return TransformerConfig(d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff,
                                 dropout=self.dropout, attention_dropout=self.attention_dropout, activation="gelu",
                                 norm_first=True, final_norm=True, positional="none",
                                 layer_norm_eps=self.layer_norm_eps, max_len=self.grid ** 2 + 1)

    def to_dict(self) -> dict:
        return asdict(self)


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch_size`` patches, linearly projected: a strided convolution.

    (B, C, H, W) → (B, N, d) with N = (H / p) * (W / p), patches in row-major order.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
        fan_in = in_channels * patch_size ** 2  # torchvision's init: LeCun normal on the projection
        nn.init.trunc_normal_(self.proj.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image of {H}x{W} pixels is not divisible into {p}x{p} patches")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, d, H/p, W/p) -> (B, N, d)


def interpolate_pos_embed(pos_embed: Tensor, grid_hw: tuple[int, int], mode: str = "bicubic") -> Tensor:
    """Resize (1, 1 + g*g, d) position embeddings to a (gh, gw) patch grid → (1, 1 + gh*gw, d).

    The [CLS] position is kept; the square grid is interpolated as an image (torchvision's
    ``interpolate_embeddings``: bicubic, ``align_corners=True``).
    """
    n = pos_embed.size(1) - 1
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"position embeddings of {n} patches are not a square grid")
    if (g, g) == tuple(grid_hw):
        return pos_embed
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    d = grid.size(-1)
    grid = grid.reshape(1, g, g, d).permute(0, 3, 1, 2)  # (1, d, g, g)
    grid = F.interpolate(grid, size=tuple(grid_hw), mode=mode, align_corners=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_hw[0] * grid_hw[1], d)  # (1, gh*gw, d)
    return torch.cat([cls_pos, grid], dim=1)


class VisionTransformer(nn.Module):
    """ViT image classifier on the core Encoder: images (B, C, H, W) → logits (B, num_classes).

    Any H, W divisible by ``patch_size`` work: position embeddings are interpolated to the grid.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbedding(cfg.in_channels, cfg.d_model, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.grid ** 2 + 1, cfg.d_model).normal_(std=0.02))
        self.encoder = Encoder(cfg.encoder_config())  # pre-LN layers + final LayerNorm
        if cfg.representation_size is None:
            self.pre_logits: nn.Module | None = None
            width = cfg.d_model
        else:
            self.pre_logits = nn.Sequential(nn.Linear(cfg.d_model, cfg.representation_size), nn.Tanh())
            width = cfg.representation_size
        self.head = nn.Linear(width, cfg.num_classes)
        nn.init.zeros_(self.head.weight)  # torchvision/timm: a zero head starts at uniform predictions
        nn.init.zeros_(self.head.bias)

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier for ``num_classes`` classes (fine-tuning on a new label set)."""
        self.cfg.num_classes = num_classes
        self.head = nn.Linear(self.head.in_features, num_classes).to(self.head.weight.device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → token sequence (B, 1 + N, d): [CLS] + patches, positions added."""
        B, _, H, W = images.shape
        x = self.patch_embed(images)  # (B, N, d)
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, d)
        p = self.cfg.patch_size
        return x + interpolate_pos_embed(self.pos_embed, (H // p, W // p)).to(x.dtype)

    def forward_features(self, images: Tensor, output_attentions: bool = False):
        """Encoder output (B, 1 + N, d) after the final LayerNorm; with ``output_attentions`` also the
        list of per-layer attention maps (B, nh, 1 + N, 1 + N)."""
        return self.encoder(self.embed(images), output_attentions=output_attentions)

    def forward(self, images: Tensor, output_attentions: bool = False):
        """images (B, C, H, W) → logits (B, num_classes) [, list of (B, nh, T, T) attention maps]."""
        out = self.forward_features(images, output_attentions)
        h, maps = out if output_attentions else (out, None)
        cls = h[:, 0]  # (B, d)
        if self.pre_logits is not None:
            cls = self.pre_logits(cls)
        logits = self.head(cls)
        return (logits, maps) if output_attentions else logits


def attention_rollout(maps: list[Tensor], residual_weight: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each patch flows into [CLS].

    maps: per-layer attention (B, nh, T, T) with T = 1 + N. Heads are averaged, the residual
    connection is modelled as ``residual_weight * I``, rows are renormalised and the layers multiplied.
    Returns (B, N): the [CLS] row over the patches, scaled to max 1 per image.
    """
    if not maps:
        raise ValueError("attention_rollout needs at least one attention map")
    B, _, T, _ = maps[0].shape
    eye = torch.eye(T, dtype=torch.float32, device=maps[0].device)
    rollout = eye.expand(B, T, T)
    for a in maps:
        a = a.float().mean(1)  # (B, T, T)
        a = residual_weight * eye + (1 - residual_weight) * a
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    cls_to_patches = rollout[:, 0, 1:]  # (B, N)
    return cls_to_patches / cls_to_patches.amax(-1, keepdim=True).clamp_min(1e-12)
