"""Sequence pooling for classification heads."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["pool"]


def pool(x: Tensor, padding_mask: Tensor | None = None, mode: Literal["mean", "max", "cls", "last"] = "mean") -> Tensor:
    """Pool (B, T, d) over time → (B, d), ignoring padded positions (bool (B, T), True at padding).

    "cls" takes position 0; "last" the last non-padded position; "mean"/"max" over real positions.
    """
    if mode == "cls":
        return x[:, 0]
    if padding_mask is None:
        padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    if mode == "mean":
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    if mode == "max":
        return x.masked_fill(padding_mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)
    if mode == "last":
        idx = ((~padding_mask).sum(1) - 1).clamp_min(0)
        return x[torch.arange(x.size(0), device=x.device), idx]
    raise ValueError(f"unknown pooling mode {mode!r}; expected mean, max, cls or last")
