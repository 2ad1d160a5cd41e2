"""Decoding: cache equals recomputation, beam 1 equals greedy, beam beats greedy where it should."""
import math

import pytest
import torch

from panformer import core
from panformer.core.decoding import DecodeState, top_k_top_p_filter

BOS, EOS, PAD = 1, 2, 0


def small_cfg(**kw):
    base = dict(d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, max_len=64)
    base.update(kw)
    return core.TransformerConfig(**base)


@pytest.fixture
def seq2seq():
    torch.manual_seed(0)
    return core.Seq2SeqTransformer(small_cfg(), 20).eval()


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return core.CausalTransformerLM(small_cfg(norm_first=True, positional="learned"), 20).eval()


def src_batch():
    src = torch.randint(3, 20, (3, 6))
    src[2, 4:] = PAD
    return src


def test_cached_seq2seq_greedy_equals_uncached(seq2seq):
    src = src_batch()
    prefix = torch.full((3, 1), BOS)
    a = core.greedy_search(seq2seq, seq2seq.init_decode_state(src, use_cache=True), prefix, 12)
    b = core.greedy_search(seq2seq, seq2seq.init_decode_state(src, use_cache=False), prefix, 12)
    assert torch.equal(a, b)


def test_cached_step_logits_equal_full_forward(seq2seq):
    src = src_batch()
    tgt = torch.randint(3, 20, (3, 8))
    full = seq2seq(src, tgt)  # (B, T, V)
    state = seq2seq.init_decode_state(src)
    for t in range(1, 9):
        step = seq2seq.decode_step(tgt[:, :t], state)
        torch.testing.assert_close(step, full[:, t - 1], atol=1e-5, rtol=1e-5)


def test_cached_lm_equals_uncached(lm):
    prompt = torch.randint(3, 20, (2, 5))
    a = core.greedy_search(lm, lm.init_decode_state(use_cache=True), prompt, 15)
    b = core.greedy_search(lm, lm.init_decode_state(use_cache=False), prompt, 15)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = core.sample(lm, lm.init_decode_state(), prompt, 15, temperature=0.8, top_k=5, generator=g1)
    s2 = core.sample(lm, lm.init_decode_state(use_cache=False), prompt, 15, temperature=0.8, top_k=5, generator=g2)
    assert torch.equal(s1, s2)


def test_beam_one_equals_greedy(seq2seq):
    src = src_batch()
    prefix = torch.full((3, 1), BOS)
    greedy = core.greedy_search(seq2seq, seq2seq.init_decode_state(src), prefix, 10, eos_id=EOS)
    beam, _ = core.beam_search(seq2seq, seq2seq.init_decode_state(src), prefix, 1, 10, eos_id=EOS)
    n = min(greedy.size(1), beam.size(1))
    assert torch.equal(greedy[:, :n], beam[:, :n])
    assert (greedy[:, n:] == PAD).all() and (beam[:, n:] == PAD).all()


def test_beam_score_never_below_greedy(seq2seq):
    src = torch.randint(3, 20, (8, 6))
    prefix = torch.full((8, 1), BOS)
    greedy = core.greedy_search(seq2seq, seq2seq.init_decode_state(src), prefix, 8, eos_id=EOS)
    hyps = core.beam_search(seq2seq, seq2seq.init_decode_state(src), prefix, 4, 8, eos_id=EOS,
                            length_penalty=0.0, return_all=True)

    def score(i, seq):
        logp = seq2seq(src[i : i + 1], seq[None, :-1]).log_softmax(-1)[0]
        return logp.gather(1, seq[1:, None]).sum().item()

    for i in range(8):
        g = greedy[i]
        g = g[: int((g != PAD).sum())]
        best = max(score(i, torch.cat([torch.tensor([BOS]), h])) for _, h in hyps[i])
        assert best >= score(i, g) - 1e-4


class TwoPathModel:
    """First step: A (0.6) or B (0.4). After A every token is ~uniform; after B, EOS has 0.95."""

    V, A, B = 6, 3, 4

    def decode_step(self, tokens, state):
        rows = []
        for seq in tokens.tolist():
            p = torch.full((self.V,), 1e-6)
            if len(seq) == 1:
                p[self.A], p[self.B] = 0.6, 0.4
            elif seq[1] == self.A:
                p[2:] = 0.25
            else:
                p[EOS] = 0.95
                p[5] = 0.05
            rows.append(p.log())
        return torch.stack(rows)


def test_beam_finds_better_sequence_than_greedy():
    m = TwoPathModel()
    prefix = torch.full((1, 1), BOS)
    greedy = core.greedy_search(m, DecodeState(), prefix, 2, eos_id=EOS)
    beam, score = core.beam_search(m, DecodeState(), prefix, 2, 2, eos_id=EOS, length_penalty=0.0)
    assert greedy[0, 1].item() == m.A
    assert beam[0].tolist()[:3] == [BOS, m.B, EOS]
    assert score.item() == pytest.approx(math.log(0.4 * 0.95), abs=1e-4)


def test_top_k_top_p_filter():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(top_k_top_p_filter(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(top_k_top_p_filter(logits, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]


def test_mask_tokens_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 256))
    inputs, labels = core.mask_tokens(ids, mask_id=4, vocab_size=100, prob=0.15, random_low=5, generator=g)
    sel = labels != core.IGNORE_INDEX
    assert abs(sel.float().mean().item() - 0.15) < 0.01
    assert torch.equal(labels[sel], ids[sel])
    frac_mask = (inputs[sel] == 4).float().mean().item()
    frac_same = (inputs[sel] == ids[sel]).float().mean().item()
    assert abs(frac_mask - 0.8) < 0.02 and 0.08 < frac_same < 0.13
    assert torch.equal(inputs[~sel], ids[~sel])
