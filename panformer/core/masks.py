"""Masks: padding from lengths, causal, and BERT-style masked-token corruption (80/10/10)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lengths_to_padding_mask", "causal_mask", "mask_tokens", "IGNORE_INDEX"]

IGNORE_INDEX = -100  # label value that cross-entropy ignores


def lengths_to_padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """lengths (B,) → bool (B, T) with True at padded positions."""
    T = int(lengths.max().item()) if max_len is None else max_len
    return torch.arange(T, device=lengths.device)[None, :] >= lengths[:, None]


def causal_mask(size: int, device: torch.device | None = None) -> Tensor:
    """bool (T, T), True above the diagonal: position i may not attend to j > i."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)


def mask_tokens(
    ids: Tensor,
    mask_id: int,
    vocab_size: int,
    prob: float = 0.15,
    maskable: Tensor | None = None,
    random_low: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption.

    Each maskable position is selected with probability ``prob``; a selected token becomes ``mask_id``
    80% of the time, a random token from ``[random_low, vocab_size)`` 10%, and stays unchanged 10%.

    Args:
        ids: long (B, T).
        maskable: bool (B, T), False at padding and special tokens (default: everything).
    Returns:
        inputs (B, T) with the corruption, and labels (B, T) holding the original ids at selected
        positions and ``IGNORE_INDEX`` elsewhere.
    """
    def rand(shape):
        dev = generator.device if generator is not None else ids.device
        return torch.rand(shape, generator=generator, device=dev).to(ids.device)

    selected = rand(ids.shape) < prob
    if maskable is not None:
        selected &= maskable
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    r = rand(ids.shape)
    to_mask = selected & (r < 0.8)
    to_random = selected & (r >= 0.8) & (r < 0.9)
    random_ids = (rand(ids.shape) * (vocab_size - random_low)).long() + random_low
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels
