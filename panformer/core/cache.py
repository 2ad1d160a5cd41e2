"""Key/value cache for incremental decoding."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Per-layer keys and values of the positions decoded so far.

    ``layers[i]`` is ``{"self": {"k", "v"}, "cross": {"k", "v"}}`` with tensors (B, nh, T, hs);
    ``offset`` counts the positions already processed (for positional encodings).
    """

    def __init__(self, n_layers: int) -> None:
        self.layers: list[dict[str, dict[str, Tensor]]] = [{"self": {}, "cross": {}} for _ in range(n_layers)]
        self.offset = 0

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search reordering / expansion): index (B',) into the batch dim."""
        for layer in self.layers:
            for part in layer.values():
                for name, t in part.items():
                    part[name] = t.index_select(0, index)

    def __len__(self) -> int:
        return self.offset

    @torch.no_grad()
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for l in self.layers for p in l.values() for t in p.values())
