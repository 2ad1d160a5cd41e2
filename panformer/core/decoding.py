"""Decoding shared by every generating task: greedy, sampling (temperature / top-k / top-p) and beam search.

A model that generates implements two methods (see :class:`core.models.Seq2SeqTransformer`):

* ``init_decode_state(..., use_cache=True) -> DecodeState`` computes what is fixed per input once (the
  encoder memory) and an empty :class:`KVCache`;
* ``decode_step(tokens, state) -> logits``: ``tokens`` (B, T) is the whole sequence so far; the model
  feeds only the positions the cache has not seen (or everything when ``state.cache`` is None) and
  returns next-token logits (B, V).

:func:`generate` continues a prompt of a decoder-only model beyond its context window: a cached decoder
cannot slide its positions, so when the window is full decoding restarts from the last ``max_len // 2``
tokens (HF-style sliding restarts). Cached and uncached decoding follow the same chunks, so they agree
token for token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import KVCache
from .errors import ConfigError

__all__ = ["DecodeState", "Decodable", "greedy_search", "sample", "beam_search", "top_k_top_p_filter", "generate",
           "SamplingArguments", "sampling_kwargs"]


@dataclass
class SamplingArguments:
    """Decoding options of every generating task (text, music, images), turned into CLI flags by the task's
    ``Arguments`` dataclass inheriting them. A task changes a default by declaring the field again."""

    decoding: str = field(default="sample", metadata={"help": "greedy | sample (| beam where the task has beam search)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0: greedy)"})
    top_k: int = field(default=0, metadata={"help": "sample from the k most likely tokens (0: all)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling: smallest set with this much probability (1: all)"})
    generation_seed: int = field(default=0, metadata={"help": "random seed of sampling"})
    use_cache: bool = field(default=True, metadata={"help": "key/value cache during generation"})


def sampling_kwargs(args: Any, allowed: tuple[str, ...] = ("greedy", "sample")) -> dict[str, Any]:
    """:func:`generate` keyword arguments from resolved :class:`SamplingArguments` (0 / 1 mean "off"), with a
    fresh generator seeded by ``generation_seed``; ``allowed`` names the decodings the task supports."""
    if args.decoding not in allowed:
        names = ", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]
        raise ConfigError(f"--decoding must be {names}, got {args.decoding!r}")
    return dict(decoding=args.decoding, temperature=args.temperature, top_k=args.top_k or None,
                top_p=args.top_p if args.top_p < 1 else None, use_cache=args.use_cache,
                generator=torch.Generator().manual_seed(args.generation_seed))


@dataclass
class DecodeState:
    """What a decoder needs across steps. Tensors have the batch (or batch x beam) as dim 0."""

    cache: KVCache | None = None
    memory: Tensor | None = None  # (B, S, d) encoder output
    memory_padding_mask: Tensor | None = None  # (B, S) True at padding
    extras: dict[str, Any] = field(default_factory=dict)

    def reorder(self, index: Tensor) -> None:
        """Keep/duplicate batch rows: index (B',) — used to expand to beams and to follow beam choices."""
        if self.cache is not None:
            self.cache.reorder(index)
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.memory_padding_mask is not None:
            self.memory_padding_mask = self.memory_padding_mask.index_select(0, index)
        for k, v in self.extras.items():
            if isinstance(v, Tensor):
                self.extras[k] = v.index_select(0, index)


class Decodable(Protocol):
    def decode_step(self, tokens: Tensor, state: DecodeState) -> Tensor: ...


def top_k_top_p_filter(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits outside the top-k and outside the smallest set with cumulative prob >= top_p to -inf."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        remove = remove.scatter(-1, sorted_idx, remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@torch.no_grad()
def _generate(model, state, prefix, max_new_tokens, eos_id, pad_id, choose) -> Tensor:
    tokens = prefix
    finished = torch.zeros(prefix.size(0), dtype=torch.bool, device=prefix.device)
    for _ in range(max_new_tokens):
        logits = model.decode_step(tokens, state).float()  # (B, V)
        nxt = choose(logits)  # (B,)
        if eos_id is not None:
            nxt = nxt.masked_fill(finished, pad_id)
            finished |= nxt == eos_id
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
    return tokens


def greedy_search(
    model: Decodable, state: DecodeState, prefix: Tensor, max_new_tokens: int, eos_id: int | None = None, pad_id: int = 0
) -> Tensor:
    """Argmax decoding. prefix (B, T0) long → (B, T0 + n); positions after EOS hold ``pad_id``."""
    return _generate(model, state, prefix, max_new_tokens, eos_id, pad_id, lambda lg: lg.argmax(-1))


def sample(
    model: Decodable,
    state: DecodeState,
    prefix: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ancestral sampling with temperature, top-k and nucleus (top-p) filtering. Shapes as greedy."""
    if temperature <= 0:
        return greedy_search(model, state, prefix, max_new_tokens, eos_id, pad_id)

    def choose(logits: Tensor) -> Tensor:
        probs = top_k_top_p_filter(logits / temperature, top_k, top_p).softmax(-1)
        if generator is not None and generator.device != probs.device:
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    return _generate(model, state, prefix, max_new_tokens, eos_id, pad_id, choose)


def _best_reachable(raw: Tensor, n_tokens: int, max_new_tokens: int, length_penalty: float) -> Tensor:
    """The highest normalised score a live hypothesis with summed log-probability ``raw`` over ``n_tokens``
    new tokens can still reach. Its sum only falls (log p <= 0) and it ends after ``m`` tokens,
    ``n_tokens < m <= max_new_tokens``, scoring ``sum / m ** length_penalty``: with a positive penalty the
    best case is the longest (dividing a negative sum by more), with a negative one the shortest."""
    if length_penalty > 0:
        return raw / max_new_tokens ** length_penalty
    if length_penalty < 0:
        return raw / min(n_tokens + 1, max_new_tokens) ** length_penalty
    return raw


@torch.no_grad()
def beam_search(
    model: Decodable,
    state: DecodeState,
    prefix: Tensor,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int = 0,
    length_penalty: float = 1.0,
    return_all: bool = False,
) -> tuple[Tensor, Tensor] | list[list[tuple[float, Tensor]]]:
    """Batched beam search over B x K hypotheses, each finishing at its own EOS.

    ``state`` is for the B inputs (memory computed once per input); it is expanded to B*K here.
    A hypothesis of n new tokens (EOS included) scores ``sum log p / n ** length_penalty``
    (length_penalty 0: raw model score); one still running at ``max_new_tokens`` is scored as it is.
    Each step the K best candidates that end in EOS finish and the K best others stay live.

    Stopping rule: an input is done only when none of its live hypotheses can still beat its best
    finished one (with ``return_all``: its K-th best) under the length penalty in force, since a
    hypothesis's summed log-probability never rises (:func:`_best_reachable`). So stopping early returns
    exactly what running every input to ``max_new_tokens`` would (tests/test_beam_search.py checks this
    against an exhaustive search). Stopping once K hypotheses have finished (fairseq's rule) does not:
    it can return a finished hypothesis while a live one that ends better is still in the beam.

    Returns:
        tokens (B, T0 + L) — the best hypothesis per input, padded with ``pad_id`` — and its score (B,);
        or with ``return_all`` per input up to K (score, new_tokens) sorted best first.
    """
    B, T0 = prefix.shape
    K = beam_size
    if K < 1 or max_new_tokens < 1:
        raise ConfigError(f"beam search needs beam_size >= 1 and max_new_tokens >= 1, got {K} and {max_new_tokens}")
    dev = prefix.device
    state.reorder(torch.arange(B, device=dev).repeat_interleave(K))
    tokens = prefix.repeat_interleave(K, dim=0)  # (B*K, T0)
    scores = torch.zeros(B, K, device=dev)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
    finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(B)]
    need = K if return_all else 1  # finished hypotheses that must be final before an input is done
    final_bar = torch.full((B,), float("-inf"))  # the need-th best finished score per input
    done = torch.zeros(B, dtype=torch.bool)
    base = torch.arange(B, device=dev)[:, None] * K
    ranks = torch.arange(2 * K, device=dev)

    def finish(b: int, score: float, seq: Tensor) -> None:
        hyps = finished[b]
        hyps.append((score, seq))
        hyps.sort(key=lambda h: -h[0])
        del hyps[K:]
        if len(hyps) >= need:
            final_bar[b] = hyps[need - 1][0]

    for t in range(max_new_tokens):
        n_new = t + 1
        logp = F.log_softmax(model.decode_step(tokens, state).float(), dim=-1)  # (B*K, V)
        V = logp.size(-1)
        cand = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (B, 2K), best first
        top_beam, top_tok = top_idx // V, top_idx % V
        is_eos = top_tok == eos_id
        # EOS candidates ranked within the top K finish their hypothesis.
        eos_hits = (is_eos[:, :K] & torch.isfinite(top_scores[:, :K])).nonzero().tolist()
        for b, j in eos_hits:
            if done[b]:
                continue
            src = int(base[b, 0] + top_beam[b, j])
            raw = float(top_scores[b, j])
            seq = torch.cat([tokens[src, T0:], top_tok[b, j : j + 1]])
            finish(b, raw / (n_new**length_penalty) if length_penalty else raw, seq)
        # The K best non-EOS candidates continue.
        order = torch.where(is_eos, top_scores.size(1) + ranks[: top_scores.size(1)], ranks[: top_scores.size(1)])
        keep = order.argsort(dim=1)[:, :K]  # (B, K)
        sel_beam, sel_tok = top_beam.gather(1, keep), top_tok.gather(1, keep)
        scores = top_scores.gather(1, keep).masked_fill(is_eos.gather(1, keep), float("-inf"))
        if n_new < max_new_tokens:  # (at the last step the live ones are scored as they are, below)
            reachable = _best_reachable(scores.max(1).values, n_new, max_new_tokens, length_penalty).cpu()
            done |= (final_bar > float("-inf")) & (final_bar >= reachable)  # no live one can overtake: final
            if bool(done.all()):
                break
        scores = scores.masked_fill(done.to(dev)[:, None], float("-inf"))
        flat = (base + sel_beam).view(-1)
        state.reorder(flat)
        tokens = torch.cat([tokens.index_select(0, flat), sel_tok.view(-1, 1)], dim=1)
    else:
        for b in range(B):
            if done[b]:
                continue
            for k in range(K):
                raw = float(scores[b, k])
                if raw != float("-inf"):
                    finish(b, raw / (max_new_tokens**length_penalty) if length_penalty else raw,
                           tokens[b * K + k, T0:])

    if return_all:
        return finished
    empty = (float("-inf"), tokens.new_empty(0))  # only when the model gave every token probability 0
    L = max(len(h[0][1]) if h else 0 for h in finished)
    out = torch.full((B, T0 + L), pad_id, dtype=prefix.dtype, device=dev)
    out[:, :T0] = prefix
    best = torch.empty(B, device=dev)
    for b, hyps in enumerate(finished):
        s, seq = hyps[0] if hyps else empty
        out[b, T0 : T0 + len(seq)] = seq
        best[b] = s
    return out, best


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
