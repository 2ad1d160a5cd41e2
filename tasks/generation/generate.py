"""Generation beyond the context window on top of :mod:`core.decoding`.

A cached decoder cannot slide its positions, so a continuation longer than ``max_len`` is produced in
chunks: when the window is full, decoding restarts from the last ``max_len // 2`` tokens (HF-style
sliding restarts). Cached and uncached decoding follow the same chunks, so they agree token for token.
"""
from __future__ import annotations

import torch
from torch import nn

from core import beam_search, greedy_search, sample
from core.errors import ConfigError

__all__ = ["generate"]


@torch.no_grad()
def generate(model: nn.Module, prompt: list[int], max_new_tokens: int, decoding: str = "sample", num_samples: int = 1,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, beam_size: int = 4,
             length_penalty: float = 1.0, eos_id: int | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """Continue ``prompt`` (token ids) with a model implementing the decoding protocol
    (``init_decode_state`` / ``decode_step``, e.g. :class:`core.CausalTransformerLM`).

    Returns ``num_samples`` id lists, each prompt + new tokens (beam: the best hypothesis only).
    ``eos_id`` stops a sequence early (None: always ``max_new_tokens``).
    """
    if not prompt:
        raise ConfigError("generation needs at least one prompt token")
    device = next(model.parameters()).device
    L = model.cfg.max_len
    ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T0)
    if decoding == "beam":
        if ids.size(1) + max_new_tokens > L:
            raise ConfigError(f"beam search needs prompt + --max-new-tokens <= the context ({L} tokens); "
                              f"got {ids.size(1)} + {max_new_tokens}")
        state = model.init_decode_state(1, use_cache=use_cache)
        out, _ = beam_search(model, state, ids, beam_size, max_new_tokens, -1 if eos_id is None else eos_id,
                             0, length_penalty)
        return [out[0].tolist()]
    if decoding not in ("greedy", "sample"):
        raise ConfigError(f"decoding must be greedy, sample or beam, got {decoding!r}")
    ids = ids.repeat(num_samples, 1)  # (N, T0)
    tokens = ids[:, -L // 2 :] if ids.size(1) >= L else ids
    done = [tokens]  # the prompt part that was cut off is restored below
    left = max_new_tokens
    while left > 0:
        ctx = done[-1] if len(done) == 1 else torch.cat(done, 1)[:, -L // 2 :]
        step = min(left, L - ctx.size(1))
        state = model.init_decode_state(ctx.size(0), use_cache=use_cache)
        if decoding == "greedy" or temperature <= 0:
            out = greedy_search(model, state, ctx, step, eos_id)
        else:
            out = sample(model, state, ctx, step, temperature, top_k, top_p, eos_id, generator=generator)
        new = out[:, ctx.size(1) :]  # (N, step')
        done.append(new)
        left -= step
        if eos_id is not None and bool((new == eos_id).any(1).all()):
            break
    full = torch.cat([ids] + done[1:], 1)
    result = []
    for row in full.tolist():
        if eos_id is not None and eos_id in row[len(prompt) :]:
            row = row[: len(prompt) + row[len(prompt) :].index(eos_id) + 1]
        result.append(row)
    return result
