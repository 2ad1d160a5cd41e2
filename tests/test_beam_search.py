"""Beam search against exhaustive search on tiny models small enough to enumerate every hypothesis.

A tree of possible continuations narrow enough that a beam of K = (the most finite candidates of any
step) never prunes anything: then beam search must return exactly the best hypothesis of the whole tree,
whatever the length penalty. Many seeds, so no single model's last bits decide the outcome. Stopping
when K hypotheses have finished (the old rule) fails here: in a narrow tree K hypotheses finish long
before the longer, better ones are reached.
"""
import itertools
import math

import pytest
import torch

from panformer import core
from panformer.core.decoding import DecodeState

EOS = 0


class TableLM(torch.nn.Module):
    """next-token logits drawn from a generator seeded by the whole prefix (stable across processes);
    each prefix allows EOS plus one or two continuation tokens (the rest have probability 0)."""

    def __init__(self, seed: int, vocab: int = 5, branch2: float = 0.3, scale: float = 2.0):
        super().__init__()
        self.seed, self.V, self.branch2, self.scale = seed, vocab, branch2, scale
        self.calls = 0

    def logits_for(self, row: tuple[int, ...]) -> torch.Tensor:
        h = self.seed + 12345
        for t in row:
            h = (h * 1_000_003 + t + 1) % (2**61 - 1)
        g = torch.Generator().manual_seed(h)
        logits = torch.randn(self.V, generator=g) * self.scale
        n_cont = 2 if float(torch.rand((), generator=g)) < self.branch2 else 1
        allowed = 1 + torch.randperm(self.V - 1, generator=g)[:n_cont]
        mask = torch.full((self.V,), float("-inf"))
        mask[EOS] = 0.0
        mask[allowed] = 0.0
        return logits + mask

    def decode_step(self, tokens: torch.Tensor, state: DecodeState) -> torch.Tensor:
        self.calls += 1
        return torch.stack([self.logits_for(tuple(r)) for r in tokens.tolist()])


def exhaustive(logp_of, prefix: tuple[int, ...], max_new: int, lp: float) -> list[tuple[float, tuple[int, ...]]]:
    """Every hypothesis of up to ``max_new`` new tokens (ending at EOS, or cut at max_new), scored as
    beam_search scores them, best first. ``logp_of(row) -> list of V log-probabilities``."""
    out = []

    def walk(seq: tuple[int, ...], raw: float) -> None:
        n = len(seq)
        if n == max_new or (seq and seq[-1] == EOS):
            out.append((raw / n**lp if lp else raw, seq))
            return
        for tok, lpv in enumerate(logp_of(prefix + seq)):
            if lpv > -math.inf:
                walk(seq + (tok,), raw + lpv)
    walk((), 0.0)
    return sorted(out, key=lambda h: -h[0])


def widest_step(logp_of, prefix, max_new) -> int:
    """The most finite candidates (live hypotheses x allowed tokens) of any step: a beam this wide
    keeps every candidate, so beam search is an exhaustive search."""
    live, widest = [()], 0
    for _ in range(max_new):
        cands = [s + (t,) for s in live for t, v in enumerate(logp_of(prefix + s)) if v > -math.inf]
        widest = max(widest, len(cands))
        live = [c for c in cands if c[-1] != EOS]
    return widest


def table_logp(model):
    cache = {}

    def logp_of(row):
        if row not in cache:
            cache[row] = torch.log_softmax(model.logits_for(row).double(), -1).tolist()
        return cache[row]
    return logp_of


def assert_same_best(beam_score, beam_seq, ranked, where):
    best_score, best_seq = ranked[0]
    assert beam_score == pytest.approx(best_score, abs=1e-4), f"{where}: beam {beam_score} vs exhaustive {best_score}"
    if len(ranked) == 1 or ranked[0][0] - ranked[1][0] > 1e-3:  # a unique best (float32 vs float64 sums)
        assert beam_seq == best_seq, f"{where}: beam {beam_seq} vs exhaustive {best_seq}"


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 0.6, -0.5])
def test_wide_beam_equals_exhaustive_search_on_narrow_trees(length_penalty):
    prefix, max_new, early = (7,), 7, 0
    for seed in range(60):
        model = TableLM(seed, vocab=8)
        logp_of = table_logp(model)
        ranked = exhaustive(logp_of, prefix, max_new, length_penalty)
        K = widest_step(logp_of, prefix, max_new)
        model.calls = 0
        out, score = core.beam_search(model, DecodeState(), torch.tensor([prefix]), K, max_new, EOS, pad_id=EOS,
                                      length_penalty=length_penalty)
        seq = tuple(out[0, 1:].tolist())
        seq = seq[: seq.index(EOS) + 1] if EOS in seq else seq
        assert_same_best(float(score[0]), seq, ranked, f"seed {seed}, K {K}, lp {length_penalty}")
        early += model.calls < max_new
        nbest = core.beam_search(model, DecodeState(), torch.tensor([prefix]), K, max_new, EOS,
                                 length_penalty=length_penalty, return_all=True)[0]
        # return_all: the K best of the tree (or all of them), in order
        expected = [s for s, _ in ranked[:K]]
        assert [s for s, _ in nbest] == pytest.approx(expected, abs=1e-4)
    if length_penalty <= 0:  # the rule also stops early where it may: some of these searches end before max_new
        assert early > 0


def test_batched_beam_search_finishes_each_input_at_its_own_time():
    """Six inputs with other trees in one batch: each gets its own exhaustive best, though their searches
    become final at different steps (the done inputs' beams must stay out of the others' way)."""
    model, max_new = TableLM(3, vocab=8), 7
    logp_of = table_logp(model)
    prefixes = [(p,) for p in range(1, 7)]
    K = max(widest_step(logp_of, p, max_new) for p in prefixes)
    for lp in (0.0, 1.0):
        out, scores = core.beam_search(model, DecodeState(), torch.tensor(prefixes), K, max_new, EOS, pad_id=EOS,
                                       length_penalty=lp)
        for b, p in enumerate(prefixes):
            seq = tuple(out[b, 1:].tolist())
            seq = seq[: seq.index(EOS) + 1] if EOS in seq else seq
            assert_same_best(float(scores[b]), seq, exhaustive(logp_of, p, max_new, lp), f"input {b}, lp {lp}")


@pytest.mark.parametrize("seed", range(4))
def test_full_tree_of_a_tiny_transformer(seed):
    """A real (cached) decoder with 3 tokens + EOS and 4 new tokens: 121 hypotheses, all kept by a beam of
    4 * 27; the KV cache follows every reorder."""
    torch.manual_seed(seed)
    cfg = core.TransformerConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0, max_len=16)
    lm = core.CausalTransformerLM(cfg, vocab_size=4).eval()
    with torch.no_grad():  # a spread of probabilities rather than a near-uniform random init
        lm.embed.weight.mul_(4.0)
    prefix, max_new = (1,), 4

    def logp_of(row):
        with torch.no_grad():
            return torch.log_softmax(lm(torch.tensor([row]))[0, -1].double(), -1).tolist()
    for lp in (0.0, 1.0):
        ranked = exhaustive(logp_of, prefix, max_new, lp)
        assert len(ranked) == 1 + 3 + 9 + 27 + 81
        out, score = core.beam_search(lm, lm.init_decode_state(1), torch.tensor([prefix]), 4 * 27, max_new, EOS,
                                      pad_id=EOS, length_penalty=lp)
        seq = tuple(out[0, 1:].tolist())
        seq = seq[: seq.index(EOS) + 1] if EOS in seq else seq
        assert_same_best(float(score[0]), seq, ranked, f"seed {seed}, lp {lp}")
