"""Key/value cache for incremental decoding.

Self-attention keys and values live in buffers with spare capacity along the time axis that double when
full (:func:`append_kv`): a decoding step writes only its own position, so each position is copied O(1)
times on average and a step at context T costs O(T) (the attention itself), not the O(T) copy of the
whole cache on top that concatenating at every step costs.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "append_kv"]

_MIN_CAPACITY = 16


def append_kv(part: dict, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Append ``k``, ``v`` (B, nh, T, hs) to the buffers of ``part`` (one layer's self-attention dict).

    ``part["k"]``/``part["v"]`` are (B, nh, capacity, hs) buffers and ``part["len"]`` the positions filled;
    a buffer that is too small is replaced by one of ``max(2 * capacity, needed)`` positions.
    Returns views (B, nh, len, hs) of every position so far.
    """
    n = part.get("len", 0)
    need = n + k.size(2)
    buf = part.get("k")
    if buf is None or buf.size(2) < need or buf.dtype != k.dtype or buf.shape[:2] != k.shape[:2]:
        cap = max(need, _MIN_CAPACITY, 2 * buf.size(2) if buf is not None else 0)
        for name, new in (("k", k), ("v", v)):
            grown = new.new_empty(new.size(0), new.size(1), cap, new.size(3))
            if n:
                grown[:, :, :n] = part[name][:, :, :n]
            part[name] = grown
    part["k"][:, :, n:need] = k
    part["v"][:, :, n:need] = v
    part["len"] = need
    return part["k"][:, :, :need], part["v"][:, :, :need]


class KVCache:
    """Per-layer keys and values of the positions decoded so far.

    ``layers[i]`` is ``{"self": {"k", "v", "len"}, "cross": {"k", "v"}}``: self-attention buffers
    (B, nh, capacity, hs) of which the first ``len`` positions are filled (:func:`append_kv`), and the
    cross-attention keys/values of the encoder memory (B, nh, S, hs). ``offset`` counts the positions
    already processed (for positional encodings).
    """

    def __init__(self, n_layers: int) -> None:
        self.layers: list[dict[str, dict]] = [{"self": {}, "cross": {}} for _ in range(n_layers)]
        self.offset = 0

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search reordering / expansion): index (B',) into the batch dim."""
        for layer in self.layers:
            for part in layer.values():
                for name, t in part.items():
                    if isinstance(t, Tensor):
                        part[name] = t.index_select(0, index)

    def __len__(self) -> int:
        return self.offset

    @torch.no_grad()
    def nbytes(self) -> int:
        """Bytes held, spare capacity included."""
        return sum(t.numel() * t.element_size() for l in self.layers for p in l.values() for t in p.values()
                   if isinstance(t, Tensor))
