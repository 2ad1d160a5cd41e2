"""Long sequences: attention memory linear in T, the kernels' equivalence, the choice by length, and the
growing key/value cache (panformer/core/attention.py, cache.py; BENCHMARKS.md "Long sequences")."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from panformer import core
from panformer.core import attention as A
from panformer.core.attention import choose_kernel, set_attention_impl

LONG = 8192


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any ATen op returns (kernel-internal scratch stays invisible: the flash
    kernel's per-block buffers are not tensors); checkpoint recomputations and the backward pass included."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), func
        return out


@pytest.fixture(autouse=True)
def auto_impl():
    set_attention_impl("auto")
    yield
    set_attention_impl("auto")


def tiny(T: int, **kw) -> core.TransformerConfig:
    return core.TransformerConfig(**{**dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0, max_len=T), **kw})


def _train_step_largest(model, x, precision, **kw) -> tuple[LargestTensor, torch.Tensor]:
    with LargestTensor() as seen, torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        out = model(x, **kw)
        out.float().square().mean().backward()
    return seen, out


# (stack, padding, config): the encoder with right padding, a decoder-only stack (sinusoidal and learned
# positions reach 8k), and a causal stack with left padding (no SDPA mask form is linear: "blocked")
CASES = {
    "encoder_padded": ("encoder", "right", {}),
    "decoder_causal": ("decoder", None, dict(positional="learned", norm_first=True)),
    "decoder_left_padded": ("decoder", "left", {}),
}


@pytest.mark.parametrize("case,precision", [(c, p) for c in CASES for p in ("fp32", "bf16")
                                            if (c, p) != ("decoder_left_padded", "bf16")])  # the slowest
def test_8k_forward_backward_holds_no_length_squared_tensor(case, precision):
    stack, padding, kw = CASES[case]
    torch.manual_seed(0)
    cfg = tiny(LONG, **kw)
    model = core.Encoder(cfg) if stack == "encoder" else core.Decoder(cfg, cross_attention=False)
    x = torch.randn(1, LONG, 16, requires_grad=True)
    pad = torch.zeros(1, LONG, dtype=torch.bool)
    if padding == "right":
        pad[:, -1000:] = True
    elif padding == "left":
        pad[:, :1000] = True
    kwargs = {"padding_mask": pad if padding else None}
    seen, out = _train_step_largest(model, x, precision, **kwargs)
    assert out.shape == (1, LONG, 16) and torch.isfinite(out).all()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # The explicit kernel builds (B, nh, T, T) scores: 2 * 8192^2 = 134M elements (it did so in bf16 before);
    # an SDPA mask of the causal + padding case is T^2 = 67M. The largest tensors that must exist are the
    # FFN's (T, d_ff) = 262k and a blocked query block's 4.2M scores (BLOCK_SCORE_ELEMENTS).
    assert seen.numel <= A.BLOCK_SCORE_ELEMENTS < LONG * LONG // 8, (seen.numel, seen.op)


def test_attention_dropout_at_long_length_stays_blocked(monkeypatch):
    """Dropout on the probabilities takes SDPA off its fused kernel; beyond MAX_SCORE_ELEMENTS the blocked
    kernel keeps memory linear. Here at 1k with the thresholds lowered 64x (at 8k the explicit kernel
    inside the blocks takes 10 s on this CPU)."""
    T = 1024
    monkeypatch.setattr(A, "MAX_SCORE_ELEMENTS", A.MAX_SCORE_ELEMENTS // 64)
    monkeypatch.setattr(A, "BLOCK_SCORE_ELEMENTS", A.BLOCK_SCORE_ELEMENTS // 64)
    torch.manual_seed(0)
    model = core.Decoder(tiny(T, attention_dropout=0.1), cross_attention=False)
    x = torch.randn(2, T, 16, requires_grad=True)
    seen, out = _train_step_largest(model, x, "fp32")
    assert torch.isfinite(x.grad).all()
    # the whole (2, 2, T, T) scores would be 4.2M elements; with the thresholds lowered 64x the largest
    # tensor may also be an activation linear in T: the fused q/k/v projection (2, T, 3 x 16)
    linear = 2 * T * max(3 * 16, 32)
    assert seen.numel <= max(A.BLOCK_SCORE_ELEMENTS, linear) < 2 * 2 * T * T // 8, (seen.numel, seen.op)


# --- the memory-linear kernels compute what the explicit one computes ------------------------------

def _setups():
    """(name, Tq, Tk, key padding mask (B, Tk) or None, causal, attn_mask or None, self-attention)"""
    B, T = 3, 13
    right = core.lengths_to_padding_mask(torch.tensor([13, 9, 4]), T)
    left = right.flip(1)
    am = torch.rand(T, T, generator=torch.Generator().manual_seed(1)) < 0.3
    am.fill_diagonal_(False)
    return B, [
        ("none", T, T, None, False, None, True),
        ("padding", T, T, right, False, None, True),
        ("causal", T, T, None, True, None, True),
        ("causal_right_padding", T, T, right, True, None, True),
        ("causal_left_padding", T, T, left, True, None, True),
        ("attn_mask_and_padding", T, T, right, False, am, True),
        ("cross_padded", 5, T, right, False, None, False),
        ("causal_chunk_after_cache", 4, T, None, True, None, True),  # Tq < Tk: the last 4 positions
    ]


def _visible(Tq, Tk, kpm, causal, am, B):
    """(B, Tq) True for queries that may see at least one key (the others are padding: any output goes)."""
    mask = A.build_attention_mask(Tq, Tk, kpm, causal, am)
    if mask is None:
        return torch.ones(B, Tq, dtype=torch.bool)
    return (~mask).any(-1)[:, 0].expand(B, Tq)


@pytest.mark.parametrize("impl", ["sdpa", "blocked", "auto_large"])
def test_memory_linear_paths_equal_the_explicit_path(impl, monkeypatch):
    """Forward and every gradient equal the explicit kernel's in fp32, at the real queries that may see a
    key (outputs at padded queries are unspecified, and SDPA's causal mask serving right padding changes
    them). The kernels sum the same terms in another order: each output is a softmax-weighted mean of
    <= 13 values of size ~1 and each gradient a sum of <= 13 * 3 such products, so their rounding
    differences are a few ulps of O(1) numbers (~1e-7 each); 1e-5 absolute is 100x that and far below any
    error of the masks (O(0.1))."""
    B, setups = _setups()
    # tiny blocks: every kernel path runs over several query blocks (3 rows for Tk = 13, 2 heads)
    monkeypatch.setattr(A, "BLOCK_SCORE_ELEMENTS", 3 * B * 2 * 13)
    if impl == "auto_large":  # "auto" as for inputs beyond MAX_SCORE_ELEMENTS: SDPA's own causal mask on right
        monkeypatch.setattr(A, "MAX_SCORE_ELEMENTS", 0)  # padding, "blocked" on dense masks
    for name, Tq, Tk, kpm, causal, am, self_attn in setups:
        torch.manual_seed(0)
        mha = core.MultiHeadAttention(16, 2)
        src = torch.randn(B, Tk, 16)
        x = (src[:, Tk - Tq:] if self_attn else torch.randn(B, Tq, 16)).clone().requires_grad_(True)
        mem = src.clone().requires_grad_(True)
        keep = _visible(Tq, Tk, kpm, causal, am, B)
        if self_attn and kpm is not None:
            keep = keep & ~kpm[:, Tk - Tq:]  # real query positions
        keep = keep[..., None].float()
        w = torch.randn(B, Tq, 16)

        def outputs(kernel: str):
            set_attention_impl(kernel if kernel != "auto_large" else "auto")
            for t in (x, mem, *mha.parameters()):
                t.grad = None
            if self_attn and Tq < Tk:  # the queries are the last positions of mem
                out = mha(mem[:, Tk - Tq:], mem, mem, key_padding_mask=kpm, causal=causal, attn_mask=am)[0]
            elif self_attn:
                out = mha(x, x, x, key_padding_mask=kpm, causal=causal, attn_mask=am)[0]
            else:
                out = mha(x, mem, mem, key_padding_mask=kpm, causal=causal, attn_mask=am)[0]
            (out * w * keep).sum().backward()
            grads = {"x": x.grad, "mem": mem.grad, **{n: p.grad for n, p in mha.named_parameters()}}
            return out * keep, {k: g.clone() for k, g in grads.items() if g is not None}

        ref_out, ref_grads = outputs("math")
        out, grads = outputs(impl)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0, msg=f"{name}: outputs")
        assert grads.keys() == ref_grads.keys(), name
        for k in ref_grads:
            torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=0, msg=f"{name}: grad of {k}")


def test_blocked_dropout_backward_recomputes_the_same_masks():
    """With dropout each block is recomputed in the backward pass: its dropout mask must be the forward's
    (checkpoint restores the random state), else the gradient is that of another function. gradcheck
    compares the analytic gradient with finite differences of the same seeded function (float64)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kpm = core.lengths_to_padding_mask(torch.tensor([6]), 7)

    def f(q, k, v):
        torch.manual_seed(123)
        return A._blocked(q, k, v, kpm, True, None, 0.3)
    old = A.BLOCK_SCORE_ELEMENTS
    A.BLOCK_SCORE_ELEMENTS = 2 * 2 * 7  # blocks of two queries
    try:
        out = f(q, k, v)
        assert (out != f(q, k, v).detach()).sum() == 0  # the seed fixes every mask
        torch.manual_seed(7)
        assert not torch.equal(out, A._blocked(q, k, v, kpm, True, None, 0.3))  # dropout is on
        assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)
    finally:
        A.BLOCK_SCORE_ELEMENTS = old


# --- the kernel choice by length ------------------------------------------------------------------

def test_kernel_choice_by_device_dtype_and_length():
    n = A.BF16_EXPLICIT_MAX_KEYS
    assert n == 512  # the crossover recorded in BENCHMARKS.md "Long sequences"
    cpu = "cpu"
    # bf16 on the CPU: explicit up to the crossover, fused beyond (decoding steps too: Tq = 1)
    assert choose_kernel(cpu, True, 32, 4, n, n) == "math"
    assert choose_kernel(cpu, True, 32, 4, n + 1, n + 1) == "sdpa"
    assert choose_kernel(cpu, True, 1, 4, 1, 8192) == "sdpa"
    assert choose_kernel(cpu, True, 1, 4, 1, n) == "math"
    # ... but never a score tensor above MAX_SCORE_ELEMENTS, even when short
    big_batch = A.MAX_SCORE_ELEMENTS // (4 * n * n) + 1
    assert choose_kernel(cpu, True, big_batch, 4, n, n) == "sdpa"
    # fp32: fused at every length
    for T in (16, 512, 8192):
        assert choose_kernel(cpu, False, 1, 4, T, T) == "sdpa"
    # what SDPA cannot do in linear memory: fused while small (as before), blocked when large
    assert choose_kernel(cpu, False, 1, 4, 1024, 1024, dropout=True) == "sdpa"
    assert choose_kernel(cpu, False, 1, 4, 8192, 8192, dropout=True) == "blocked"
    assert choose_kernel(cpu, True, 1, 4, 8192, 8192, dense_mask=True) == "blocked"
    # attention maps: explicit; GPUs: SDPA's flash / memory-efficient kernels
    assert choose_kernel(cpu, False, 1, 4, 8192, 8192, need_weights=True) == "math"
    assert choose_kernel("cuda", True, 1, 4, 128, 128) == "sdpa"
    set_attention_impl("math")
    assert choose_kernel(cpu, False, 1, 4, 8192, 8192) == "math"
    with pytest.raises(ValueError, match="auto|sdpa|math|blocked"):
        set_attention_impl("flash")


@pytest.mark.parametrize("T,causal,padding,expected", [
    (512, False, None, "math"), (1024, False, None, "sdpa"), (1024, False, "right", "sdpa"),
    (8192, True, "right", "sdpa"),  # SDPA's own causal mask serves right padding
    (8192, True, "left", "blocked"),
])
def test_attention_runs_the_chosen_kernel(T, causal, padding, expected, monkeypatch):
    calls = []
    for name in ("_explicit", "_blocked", "_sdpa"):
        fn = getattr(A, name)
        monkeypatch.setattr(A, name, lambda *a, _fn=fn, _name=name, **k: (calls.append(_name), _fn(*a, **k))[1])
    mha = core.MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, T, 16)
    kpm = None
    if padding:
        kpm = torch.zeros(1, T, dtype=torch.bool)
        kpm[:, -3:] = True
        kpm = kpm.flip(1) if padding == "left" else kpm
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        mha(x, key_padding_mask=kpm, causal=causal)
    assert calls[0] == {"math": "_explicit", "sdpa": "_sdpa", "blocked": "_blocked"}[expected], calls


# --- decoding with the key/value cache -------------------------------------------------------------

def test_cache_buffers_grow_geometrically_and_hold_the_same_values():
    """One position per step: the buffer is reallocated O(log T) times (concatenating at every step copies
    the whole cache each time: T reallocations), and every step's output equals attention over the full
    prefix without a cache."""
    torch.manual_seed(0)
    mha = core.MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 300, 16)
    cache: dict = {}
    sizes = set()
    with torch.no_grad():
        full = mha(x, causal=True)[0]
        for t in range(300):
            out = mha(x[:, t:t + 1], causal=True, cache=cache)[0]
            sizes.add(cache["k"].untyped_storage().nbytes())
            torch.testing.assert_close(out[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
    assert cache["len"] == 300 and cache["k"].size(2) >= 300
    assert len(sizes) <= 6, sorted(sizes)  # 16, 32, ..., 512 positions


def test_cached_decoding_at_long_context_equals_uncached():
    """A decoder-only LM at an 8k context: greedy tokens with the cache equal those recomputed from the
    whole sequence, and so do the step logits (fp32; the two sum the same terms in other orders)."""
    torch.manual_seed(0)
    lm = core.CausalTransformerLM(tiny(LONG, norm_first=True), 50).eval()
    prompt = torch.randint(3, 50, (1, LONG - 4))
    cached = core.greedy_search(lm, lm.init_decode_state(use_cache=True), prompt, 4)
    uncached = core.greedy_search(lm, lm.init_decode_state(use_cache=False), prompt, 4)
    assert torch.equal(cached, uncached) and cached.shape == (1, LONG)
    state = lm.init_decode_state()
    with torch.no_grad():
        full = lm(cached)  # (1, LONG, V)
        for t in range(LONG - 4, LONG):
            step = lm.decode_step(cached[:, :t], state)
            torch.testing.assert_close(step, full[:, t - 1], atol=1e-4, rtol=1e-4)
    assert state.cache.layers[0]["self"]["len"] == LONG - 1
