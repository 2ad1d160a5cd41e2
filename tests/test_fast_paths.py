"""CPU fast paths of the core layers: they must compute exactly what the plain paths compute."""
import pytest
import torch

from panformer import core
from panformer.core.layers import Dropout, EncoderLayer, on_real_tokens


def test_dropout_keeps_the_distribution_and_scaling():
    torch.manual_seed(0)
    d = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    zeros = (y == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.005)
    p_used = round(0.3 * 2**16) / 2**16  # p on a 2^-16 grid; the scale inverts exactly that keep rate
    assert abs(p_used - 0.3) < 2**-17
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p_used)))  # inverted dropout: E[y] = x
    lanes = (y == 0).float().reshape(-1, 4).mean(0)  # four masks come from each 64-bit draw: all fair
    assert torch.allclose(lanes, torch.full((4,), 0.3), atol=0.01), lanes
    for shape in [(7,), (3, 5, 7)]:  # sizes that are not a multiple of four
        z = Dropout(0.5)(torch.ones(shape))
        assert z.shape == shape and set(z.unique().tolist()) <= {0.0, 2.0}
    torch.manual_seed(1)
    a = Dropout(0.3)(torch.ones(1000))
    torch.manual_seed(1)
    assert torch.equal(a, Dropout(0.3)(torch.ones(1000)))  # the seed decides the mask
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x = keep / (1 - p)
    d.eval()
    assert d(x) is x
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_in_bf16_keeps_dtype():
    y = Dropout(0.5)(torch.ones(64, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, 2.0}


def test_real_token_packing_equals_the_padded_computation():
    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = core.lengths_to_padding_mask(torch.tensor([5, 2, 4]), 5)
    packed = on_real_tokens(ffn, x, mask)
    full = ffn(x)
    keep = ~mask
    torch.testing.assert_close(packed[keep], full[keep])
    assert (packed[mask] == 0).all()
    g_packed = torch.autograd.grad(packed[keep].sum(), ffn[0].weight)[0]
    g_full = torch.autograd.grad(full[keep].sum(), ffn[0].weight)[0]
    torch.testing.assert_close(g_packed, g_full)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_real_positions_do_not_depend_on_packing(norm_first):
    torch.manual_seed(0)
    cfg = core.TransformerConfig(d_model=16, n_heads=2, d_ff=32, dropout=0.0, norm_first=norm_first)
    layer = EncoderLayer(cfg).double().eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    mask = core.lengths_to_padding_mask(torch.tensor([6, 3, 1]), 6)
    out, _ = layer(x, mask)
    # the same layer on each sequence alone, without padding
    for b, n in enumerate([6, 3, 1]):
        alone, _ = layer(x[b : b + 1, :n])
        torch.testing.assert_close(out[b, :n], alone[0], atol=1e-10, rtol=0)


def _attention_reference(q, k, v, mask):
    """float64 softmax(q k^T / sqrt(hs), masked) v and its gradients."""
    q, k, v = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    s = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return q, k, v, torch.softmax(s, -1) @ v


@pytest.mark.parametrize("hs", [4, 8])  # 7 keys: longer than a head of 4 (mask in the product), not of 8 (after)
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "causal+padding", "per-example"])
def test_explicit_attention_adds_the_mask_inside_the_product(masks, hs):
    """The "math" kernel adds the mask as a bias inside ``baddbmm`` (where the keys outnumber the head size)
    or masks the scores afterwards: both give the float64 reference's outputs and gradients for every mask
    shape the layers build, in fp32 and under bf16 autocast."""
    from panformer.core.attention import _explicit, build_attention_mask

    torch.manual_seed(0)
    B, nh, T = 3, 2, 7
    padding = core.lengths_to_padding_mask(torch.tensor([7, 5, 2]), T)
    mask = {"none": None, "causal": build_attention_mask(T, T, causal=True),
            "padding": build_attention_mask(T, T, padding),
            "causal+padding": build_attention_mask(T, T, padding, causal=True),
            "per-example": build_attention_mask(T, T, attn_mask=(torch.arange(T)[None, None, :] < torch.tensor(
                [0, 3, 6])[:, None, None]).expand(B, T, T))}[masks]  # (B, Tq, Tk): keys hidden per example
    q, k, v = (torch.randn(B, nh, T, hs, requires_grad=True) for _ in range(3))
    rq, rk, rv, ref = _attention_reference(q, k, v, mask)
    ref.pow(2).sum().backward()
    out, _ = _explicit(q, k, v, mask, 0.0)
    out.pow(2).sum().backward()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)  # fp32 rounding of O(1) values
    for ours, theirs in ((q, rq), (k, rk), (v, rv)):
        torch.testing.assert_close(ours.grad.double(), theirs.grad, atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs, as the layers' projections give them
        low, _ = _explicit(q, k, v, mask, 0.0)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # bf16 keeps 8 significant bits (relative error 2^-8 per rounding): outputs are averages of values of
    # size <= ~4 through a few roundings, so 0.06 is ~4 roundings at the largest value, far below a wrong mask
    assert (low.double() - ref).abs().max() < 0.06


@pytest.mark.parametrize("hs", [2, 8])  # 4 keys: the mask in the product (head 2) and after it (head 8)
def test_explicit_attention_keeps_fully_masked_queries_finite(hs):
    """A query that may see no key (padding) gets a finite output in fp32 and bf16, no NaN to propagate."""
    from panformer.core.attention import _explicit

    q, k, v = (torch.randn(2, 2, 4, hs) for _ in range(3))
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[1, 0, 2:] = True  # example 1: its last two queries see nothing
    for dtype in (torch.float32, torch.bfloat16):
        out, _ = _explicit(q.to(dtype), k.to(dtype), v.to(dtype), mask, 0.0)
        assert torch.isfinite(out).all()
