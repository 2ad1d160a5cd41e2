"""CTC decoding (Graves et al. 2006): best-path (greedy) and prefix beam search, plus exact CTC scores
of given label sequences (for N-best rescoring).

Conventions: ``log_probs`` are log-softmax outputs (B, T, V) or (T, V) with the blank at ``blank``;
``lengths`` (B,) count the valid frames; decoded sequences are lists of label ids without blanks.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Lexicon", "collapse_alignment", "ctc_greedy_decode", "ctc_prefix_beam_search", "ctc_beam_decode",
           "ctc_scores"]

_NEG_INF = float("-inf")


def collapse_alignment(path: Sequence[int], blank: int = 0) -> list[int]:
    """The CTC many-to-one map B: merge repeated labels, then drop blanks ("aa-ab-" → "aab")."""
    out: list[int] = []
    prev = None
    for p in path:
        if p != prev and p != blank:
            out.append(int(p))
        prev = p
    return out


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, then :func:`collapse_alignment`. (B, T, V) → B label lists."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    T = best.size(1)
    lens = [T] * best.size(0) if lengths is None else lengths.tolist()
    return [collapse_alignment(best[b, : int(lens[b])].tolist(), blank) for b in range(best.size(0))]


def _logaddexp(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class Lexicon:
    """A closed word list for lexicon-constrained CTC decoding (as torchaudio's ``ctc_decoder(lexicon=...)``):
    a hypothesis may only spell words of the list, separated by single ``space`` labels.

    ``words``: label-id tuples of the words; ``space``: the id of the word separator.
    """

    def __init__(self, words: Sequence[Sequence[int]], space: int) -> None:
        self.space = int(space)
        self.words = {tuple(int(c) for c in w) for w in words if len(w)}
        if not self.words:
            raise ValueError("a lexicon needs at least one non-empty word")
        if any(self.space in w for w in self.words):
            raise ValueError("lexicon words must not contain the word separator")
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}

    def partial_word(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """The labels after the last separator of ``prefix`` (the word being spelt)."""
        for i in range(len(prefix) - 1, -1, -1):
            if prefix[i] == self.space:
                return tuple(prefix[i + 1:])
        return tuple(prefix)

    def allows(self, word: tuple[int, ...], c: int) -> bool:
        """Whether a prefix whose unfinished last word is ``word`` (:meth:`partial_word`) may be
        extended by label ``c`` and still become a sequence of lexicon words."""
        if c == self.space:
            return word in self.words  # no leading, double or mid-word separators
        return word + (c,) in self.prefixes

    def complete(self, prefix: Sequence[int]) -> bool:
        """Whether ``prefix`` is empty or ends with a whole lexicon word (not with a separator)."""
        return not prefix or self.partial_word(prefix) in self.words


def ctc_prefix_beam_search(log_probs: Tensor, beam_size: int = 8, blank: int = 0, prune: float = -12.0,
                           top_k: int | None = None, lexicon: Lexicon | None = None) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance's (T, V) log-probabilities.

    Each prefix keeps two log-probabilities: of all alignments of it ending in a blank (``pb``) and
    ending in its last label (``pnb``); prefixes reached by different alignments are merged, which
    greedy best-path decoding cannot do. Labels with log-probability below ``prune`` at a frame (and
    outside the frame's ``top_k`` when given) are not tried. With a ``lexicon``, a prefix is only
    extended by labels that keep every word in it, and finished hypotheses must end on a whole word
    (when none does, the best loses its unfinished last word).

    Returns up to ``beam_size`` (labels, log p(labels | x)) pairs, best first.
    """
    lp = log_probs.detach().float().cpu()
    V = lp.size(-1)
    k = min(top_k or V, V)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}  # prefix -> (pb, pnb)
    for t in range(lp.size(0)):
        frame = lp[t]
        vals, idx = frame.topk(k)
        cands = [(int(c), float(v)) for c, v in zip(idx.tolist(), vals.tolist()) if v >= prune or c == blank]
        p_blank = float(frame[blank])
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], pb: float = _NEG_INF, pnb: float = _NEG_INF) -> None:
            cur = nxt.setdefault(prefix, [_NEG_INF, _NEG_INF])
            cur[0], cur[1] = _logaddexp(cur[0], pb), _logaddexp(cur[1], pnb)

        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            add(prefix, pb=total + p_blank)  # blank: the prefix stays, now ending in blank
            last = prefix[-1] if prefix else None
            word = lexicon.partial_word(prefix) if lexicon is not None else ()  # once per prefix, not per label
            for c, p in cands:
                if c == blank:
                    continue
                if c == last:
                    add(prefix, pnb=pnb + p)  # repeat without a blank in between collapses
                if lexicon is not None and not lexicon.allows(word, c):
                    continue
                if c == last:
                    add(prefix + (c,), pnb=pb + p)  # repeat after a blank is a new label
                else:
                    add(prefix + (c,), pnb=total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam_size]
        beams = {p: (v[0], v[1]) for p, v in ranked}
    out = [(list(p), _logaddexp(pb, pnb)) for p, (pb, pnb) in beams.items()]
    if lexicon is not None:
        whole = [h for h in out if lexicon.complete(h[0])]
        if not whole:  # no beam ends on a word boundary: drop the unfinished last word of the best
            best, score = max(out, key=lambda h: h[1])
            cut = len(best) - len(lexicon.partial_word(best))
            whole = [(best[: max(cut - 1, 0)], score)]
        out = whole
    out.sort(key=lambda h: -h[1])
    return out


def ctc_beam_decode(log_probs: Tensor, lengths: Tensor, beam_size: int = 8, blank: int = 0,
                    lexicon: Lexicon | None = None) -> list[list[int]]:
    """Batched wrapper: (B, T, V) and lengths (B,) → the best prefix per utterance."""
    out = []
    for b in range(log_probs.size(0)):
        hyps = ctc_prefix_beam_search(log_probs[b, : int(lengths[b])], beam_size, blank, lexicon=lexicon)
        out.append(hyps[0][0] if hyps else [])
    return out


def ctc_scores(log_probs: Tensor, length: int, hyps: list[list[int]], blank: int = 0) -> Tensor:
    """Exact log p_ctc(y | x) of each hypothesis y for one utterance: log_probs (T, V) → (N,).

    Impossible hypotheses (longer than the frames allow) score -inf.
    """
    n = len(hyps)
    lp = log_probs[:length].float().unsqueeze(1).expand(length, n, -1)  # (T, N, V)
    lens = torch.tensor([len(h) for h in hyps])
    flat = torch.tensor([c for h in hyps for c in h], dtype=torch.long)
    if flat.numel() == 0:
        flat = torch.zeros(0, dtype=torch.long)
    nll = F.ctc_loss(lp, flat, torch.full((n,), length, dtype=torch.long), lens, blank=blank, reduction="none",
                     zero_infinity=False)
    return -nll
