"""Batched translation with the core decoders, teacher-forced sequence scores, checkpoint averaging and
cross-attention pictures. Token lists never include BOS; hypotheses end before EOS."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panformer.core import Seq2SeqTransformer, beam_search, greedy_search

__all__ = ["pad_batch", "translate_ids", "sequence_log_probs", "average_state_dicts", "cross_attention_png"]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """List of id lists → long (B, T_max) right-padded with ``pad_id``."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def _strip(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    out = []
    for t in row:
        if t == eos_id or t == pad_id:
            break
        out.append(t)
    return out


@torch.no_grad()
def translate_ids(model: Seq2SeqTransformer, sources: Sequence[Sequence[int]], bos_id: int, eos_id: int,
                  pad_id: int, beam_size: int = 1, length_penalty: float = 1.0, max_len_a: float = 1.2,
                  max_len_b: int = 10, batch_size: int = 64, use_cache: bool = True) -> tuple[list[list[int]], list[float]]:
    """Translate source id lists (sorted by length into batches of ``batch_size``).

    At most ``max_len_a * len(src) + max_len_b`` new tokens (EOS included), capped by the model's
    ``max_len``. Returns the hypotheses (ids without BOS/EOS) in input order and their scores: the
    length-normalised log-probability for beam search, the summed log-probability for greedy.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hyps: list[list[int]] = [[] for _ in sources]
    scores = [0.0] * len(sources)
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        src = pad_batch([sources[i] for i in chunk], pad_id).to(device)  # (B, S)
        max_new = min(int(max_len_a * src.size(1) + max_len_b), model.cfg.max_len - 1)
        prefix = torch.full((len(chunk), 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
        state = model.init_decode_state(src, use_cache=use_cache)
        if beam_size > 1:
            out, best = beam_search(model, state, prefix, beam_size, max_new, eos_id, pad_id, length_penalty)
            sc = best.tolist()
        else:
            out = greedy_search(model, state, prefix, max_new, eos_id, pad_id)  # (B, 1 + L)
            sc = sequence_log_probs(model, src, out[:, 1:], bos_id, eos_id, pad_id).tolist()
        for j, i in enumerate(chunk):
            hyps[i] = _strip(out[j, 1:].tolist(), eos_id, pad_id)
            scores[i] = sc[j]
    return hyps, scores


@torch.no_grad()
def sequence_log_probs(model: Seq2SeqTransformer, src: Tensor, tgt: Tensor, bos_id: int, eos_id: int,
                       pad_id: int) -> Tensor:
    """Summed log p(tgt | src) under teacher forcing. src (B, S); tgt (B, T) generated tokens without BOS,
    scored up to and including the first EOS (padding after it ignored). Returns (B,)."""
    B = tgt.size(0)
    tgt_in = torch.cat([torch.full((B, 1), bos_id, dtype=tgt.dtype, device=tgt.device), tgt[:, :-1]], 1)
    logp = F.log_softmax(model(src, tgt_in).float(), -1).gather(-1, tgt[..., None]).squeeze(-1)  # (B, T)
    after_eos = (tgt == eos_id).long().cumsum(1) - (tgt == eos_id).long() > 0  # positions after the first EOS
    valid = ~after_eos & (tgt != pad_id)
    return (logp * valid).sum(1)


def average_state_dicts(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of floating-point tensors (fairseq ``average_checkpoints``); others from the last."""
    if not states:
        raise ValueError("no state dicts to average")
    out = {}
    for k, v in states[-1].items():
        if v.is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


@torch.no_grad()
def cross_attention_png(model: nn.Module, src: list[int], hyp: list[int], src_tokens: list[str],
                        hyp_tokens: list[str], bos_id: int, eos_id: int, path: Path, title: str = "") -> Path:
    """Teacher-force ``hyp`` (+ EOS) and draw the last decoder layer's cross-attention, mean over heads:
    rows = target tokens, columns = source tokens."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from panformer.core.checkpoint import atomic_path

    device = next(model.parameters()).device
    s = torch.tensor([src], device=device)  # (1, S)
    t = torch.tensor([[bos_id] + hyp], device=device)  # (1, T)
    _, cross = model(s, t, output_attentions=True)
    attn = cross[-1][0].float().mean(0).cpu().numpy()  # (T, S)
    rows = hyp_tokens + ["</s>"]
    fig = Figure(figsize=(max(4.0, 0.35 * len(src_tokens) + 2), max(3.0, 0.3 * len(rows) + 1.5)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(attn, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path
