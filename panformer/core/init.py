"""Weight initialisation schemes for the core's models, applied after construction.

``torch`` (what the modules do when built): PyTorch's defaults for linear layers (Kaiming-uniform, std
``1 / sqrt(3 fan_in)``), Xavier-uniform for the attention projections, N(0, 0.02) or N(0, 1/d) embeddings.

``gpt2`` (Radford et al. 2019, and nanoGPT): every linear weight and embedding N(0, 0.02), biases 0, and the
projections that write into the residual stream (attention ``out_proj``, the FFN's ``linear2``) N(0,
0.02 / sqrt(2 n_layers)), so the residual sum's variance does not grow with depth. LayerNorms keep (1, 0).
"""
from __future__ import annotations

import math

from torch import nn

__all__ = ["INIT_SCHEMES", "init_weights_"]

INIT_SCHEMES = ("torch", "gpt2")
_RESIDUAL_OUTPUTS = ("out_proj", "linear2")  # core.MultiHeadAttention / core.FeedForward


def init_weights_(model: nn.Module, scheme: str, n_layers: int, std: float = 0.02) -> nn.Module:
    """Re-initialise ``model`` in place with ``scheme`` (one of :data:`INIT_SCHEMES`); returns it.
    ``n_layers``: the depth of the residual stream (the number of blocks the ``gpt2`` scaling counts)."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
    if scheme == "torch":
        return model
    residual_std = std / math.sqrt(2 * n_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name.rsplit(".", 1)[-1]
            nn.init.normal_(module.weight, 0.0, residual_std if last in _RESIDUAL_OUTPUTS else std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
    return model
