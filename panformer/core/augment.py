"""Batched data augmentation on tensors: one random draw per example, one kernel call per batch.

Per-image transforms (torchvision's ``RandomAffine`` on each tensor) cost more than a small model's whole
training step; :func:`random_affine` builds every example's matrix at once and resamples the batch with
``affine_grid`` + ``grid_sample``. Random numbers come from ``generator`` (default: torch's global one,
which the Trainer seeds and checkpoints, so augmented runs resume exactly).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_affine"]


def random_affine(images: Tensor, degrees: float = 10.0, translate: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1), padding_mode: str = "border",
                  generator: torch.Generator | None = None) -> Tensor:
    """Rotate each image by U(-degrees, degrees), scale it by U(*scale) and shift it by up to ``translate`` of
    its width and height (as torchvision's ``RandomAffine(degrees, (translate, translate), scale)``).

    images (B, C, H, W) float → (B, C, H, W), bilinear; pixels from outside the image repeat its border
    (``padding_mode``: border | zeros | reflection).
    """
    if images.dim() != 4:
        raise ValueError(f"random_affine expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    B, dev = images.size(0), images.device
    u = torch.rand(4, B, generator=generator).to(dev)  # angle, scale, shift x, shift y
    angle = (2 * u[0] - 1) * math.radians(degrees)
    s = scale[0] + (scale[1] - scale[0]) * u[1]
    shift = (2 * u[2:] - 1) * 2 * translate  # normalised coordinates span 2 per side
    # grid_sample maps each output position to the input position it reads: the inverse transform
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
