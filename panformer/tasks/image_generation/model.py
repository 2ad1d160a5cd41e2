"""The pixel model: a class-conditional ImageGPT on :class:`core.CausalTransformerLM`, its likelihood
and its samples (through :mod:`core.decoding`, with or without the key/value cache).

Sequence of an image of class ``c`` with pixels ``p_0 .. p_{n-1}`` (raster order, levels 0..L-1)::

    tokens   [L + c] p_0 p_1 ... p_{n-2}      (input, n tokens; class tokens follow the L pixel tokens)
    targets   p_0    p_1 p_2 ... p_{n-1}      (n pixel tokens)

The decoder's vocabulary is L + C; its output is restricted to the L pixel tokens, so the model is a
proper distribution over grey levels at every position (a uniform model scores log2(L) bits per dim).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import CausalTransformerLM, TransformerConfig, greedy_search, sample
from panformer.core.decoding import DecodeState
from panformer.core.errors import ConfigError

__all__ = ["PixelLM", "build_pixel_lm", "sequences", "nll_per_dim", "sample_pixels"]


class PixelLM(nn.Module):
    """A :class:`CausalTransformerLM` over ``levels + num_classes`` tokens whose logits are cut to the
    ``levels`` pixel tokens. Implements the decoding protocol of :mod:`core.decoding`."""

    def __init__(self, cfg: TransformerConfig, levels: int, num_classes: int) -> None:
        super().__init__()
        self.levels, self.num_classes = levels, num_classes
        self.lm = CausalTransformerLM(cfg, levels + num_classes, tie_output=True, scale_embeddings=False)

    @property
    def cfg(self) -> TransformerConfig:
        return self.lm.cfg

    def forward(self, ids: Tensor) -> Tensor:
        """ids (B, T) → pixel logits (B, T, levels)."""
        return self.lm(ids)[..., : self.levels]

    def init_decode_state(self, batch_size: int | None = None, use_cache: bool = True) -> DecodeState:
        return self.lm.init_decode_state(batch_size, use_cache=use_cache)

    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor:
        """tokens (B, T) so far → next-pixel logits (B, levels)."""
        return self.lm.decode_step(tokens, state)[:, : self.levels]


def build_pixel_lm(spec: dict) -> PixelLM:
    """From ``{"config": TransformerConfig dict, "levels", "classes": [...]}`` (assets/model.json)."""
    return PixelLM(TransformerConfig.from_dict(spec["config"]), spec["levels"], len(spec["classes"]))


def sequences(pixels: Tensor, labels: Tensor, levels: int) -> Tensor:
    """pixels long (B, n), labels long (B,) → ids (B, n + 1): class token then the pixels."""
    return torch.cat([(labels + levels)[:, None], pixels], dim=1)


@torch.no_grad()
def nll_per_dim(model: nn.Module, pixels: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Mean negative log-likelihood in nats per pixel of images ``pixels`` (N, n) given their classes
    ``labels`` (N,), under ``model`` (ids (B, T) → pixel logits (B, T, levels)). Divide by ln 2 for
    bits per dim."""
    device = next(model.parameters()).device
    levels = model.levels
    total, count = 0.0, 0
    for s in range(0, pixels.size(0), batch_size):
        ids = sequences(pixels[s : s + batch_size], labels[s : s + batch_size], levels).to(device)
        logits = model(ids[:, :-1]).float()  # (B, n, L)
        total += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return total / max(count, 1)


@torch.no_grad()
def sample_pixels(model: PixelLM, labels: Tensor, n_pixels: int, decoding: str = "sample", temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
                  use_cache: bool = True, batch_size: int = 512) -> Tensor:
    """Generate one image per class index in ``labels`` (B,) → long (B, n_pixels) levels.

    ``decoding``: ``greedy`` (argmax; temperature 0 too) or ``sample`` (temperature / top-k / top-p)."""
    if decoding not in ("greedy", "sample"):
        raise ConfigError(f"--decoding must be greedy or sample, got {decoding!r}")
    if n_pixels > model.cfg.max_len:
        raise ConfigError(f"{n_pixels} pixels need a context of {n_pixels} tokens; the model has {model.cfg.max_len}")
    device = next(model.parameters()).device
    out = []
    for s in range(0, labels.size(0), batch_size):
        prefix = (labels[s : s + batch_size] + model.levels)[:, None].to(device)  # (b, 1) class tokens
        state = model.init_decode_state(prefix.size(0), use_cache=use_cache)
        if decoding == "greedy" or temperature <= 0:
            ids = greedy_search(model, state, prefix, n_pixels)
        else:
            ids = sample(model, state, prefix, n_pixels, temperature, top_k, top_p, generator=generator)
        out.append(ids[:, 1:].cpu())
    return torch.cat(out)
